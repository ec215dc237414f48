// geoturn's browser client: ICE servers from the credential API for RTCPeerConnection, kept
// fresh. Served by the API at /v1/client.js (and in the repository at
// credential-api/src/client/geoturn-client.js); an ES module with no dependencies.
//
//   import { IceServers } from 'https://api.example.com/v1/client.js';
//   const ice = new IceServers({ url: 'https://api.example.com', token: () => myJwt() });
//   const pc = new RTCPeerConnection(await ice.configuration());
//   ice.keepFresh(pc);          // setConfiguration() with new credentials before they expire
//   ...
//   ice.stop();
//
// Authentication: `token` (a JWT, or a function returning one, possibly async: what a web page
// should use) or `apiKey` (for servers and tests: an API key in a web page is anyone's).
// 429 and 503 answers are retried after their Retry-After (else an exponential backoff with
// jitter), a bounded number of times; other errors throw an Error carrying the API's problem
// details (`status`, `code`, `detail`).

const DEFAULTS = {
  url: '',
  path: '/v1/ice-servers',
  refreshMarginSec: 300,
  maxAttempts: 5,
  baseDelayMs: 500,
  maxDelayMs: 30_000,
};

/** An error answer of the API (RFC 9457 problem details). */
export class IceServersError extends Error {
  constructor(status, problem) {
    const detail = (problem && (problem.detail || (problem.error && problem.error.message))) || `HTTP ${status}`;
    super(detail);
    this.name = 'IceServersError';
    this.status = status;
    this.code = (problem && (problem.code || (problem.error && problem.error.code))) || null;
    this.detail = detail;
  }
}

/** ICE servers from a geoturn credential API, refreshed before they expire. */
export class IceServers {
  /**
   * @param {object} options
   * @param {string} [options.url] the API's origin ('' = the page's own)
   * @param {string|(() => string|Promise<string>)} [options.token] a JWT, or a function for one
   * @param {string} [options.apiKey] an API key (servers and tests only)
   * @param {object} [options.query] extra query parameters (`count`, `ttl`, ...)
   * @param {number} [options.refreshMarginSec] refresh this long before `expiresAt` (300)
   * @param {number} [options.maxAttempts] tries per fetch on 429/503/network errors (5)
   * @param {typeof fetch} [options.fetch] the fetch to use (tests)
   */
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.fetchImpl = options.fetch || globalThis.fetch.bind(globalThis);
    this.answer = null;
    this.timer = null;
    this.connections = new Set();
    this.listeners = new Set();
  }

  async authorization() {
    const { token, apiKey } = this.options;
    if (typeof token === 'function') return `Bearer ${await token()}`;
    if (token) return `Bearer ${token}`;
    if (apiKey) return `Bearer ${apiKey}`;
    return null;
  }

  /** Fetches a new answer (with retries); returns `{iceServers, ttl, expiresAt}`. */
  async fetch() {
    const { url, path, query, maxAttempts, baseDelayMs, maxDelayMs } = this.options;
    const qs = new URLSearchParams(query || {}).toString();
    const target = `${url}${path}${qs ? `?${qs}` : ''}`;
    let lastError = null;
    for (let attempt = 1; attempt <= maxAttempts; attempt += 1) {
      let wait = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
      try {
        const headers = { Accept: 'application/json' };
        const auth = await this.authorization();
        if (auth) headers.Authorization = auth;
        const res = await this.fetchImpl(target, { headers, cache: 'no-store' });
        if (res.ok) {
          const answer = await res.json();
          this.answer = answer;
          for (const listener of this.listeners) listener(answer);
          return answer;
        }
        let problem = null;
        try { problem = await res.json(); } catch (_) { /* not JSON */ }
        lastError = new IceServersError(res.status, problem);
        if (res.status !== 429 && res.status !== 503) throw lastError;
        const after = Number(res.headers.get('Retry-After'));
        if (Number.isFinite(after) && after > 0) wait = Math.min(maxDelayMs, after * 1000);
      } catch (e) {
        if (e instanceof IceServersError && e.status !== 429 && e.status !== 503) throw e;
        if (!(e instanceof IceServersError)) lastError = e;
      }
      if (attempt < maxAttempts) await new Promise((r) => setTimeout(r, wait));
    }
    throw lastError;
  }

  /** An RTCConfiguration with the current (or freshly fetched) ICE servers. */
  async configuration(extra = {}) {
    if (!this.answer || this.secondsLeft() <= this.options.refreshMarginSec) await this.fetch();
    return { ...extra, iceServers: this.answer.iceServers };
  }

  /** Seconds until the current answer's credentials expire (0 without one). */
  secondsLeft() {
    if (!this.answer) return 0;
    return Math.max(0, (Date.parse(this.answer.expiresAt) - Date.now()) / 1000);
  }

  /**
   * The relays of the current answer, best first, as the API ranked them: each TURN entry's
   * URLs (the first is the best relay's).
   */
  ranking() {
    if (!this.answer) return [];
    return this.answer.iceServers.filter((s) => s.username).map((s) => s.urls);
  }

  /** Calls `listener(answer)` on every new answer. */
  onAnswer(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Keeps `pc`'s ICE servers fresh: before the credentials expire, fetches new ones and
   * applies them with `setConfiguration` (ICE restarts then use them). Stops for a closed
   * connection.
   */
  keepFresh(pc) {
    this.connections.add(pc);
    this.schedule();
    return () => this.connections.delete(pc);
  }

  schedule() {
    if (this.timer !== null || !this.answer) return;
    const delayMs = Math.max(1000, (this.secondsLeft() - this.options.refreshMarginSec) * 1000);
    this.timer = setTimeout(async () => {
      this.timer = null;
      for (const pc of this.connections) if (pc.connectionState === 'closed') this.connections.delete(pc);
      if (this.connections.size === 0) return;
      try {
        await this.fetch();
        for (const pc of this.connections) {
          pc.setConfiguration({ ...pc.getConfiguration(), iceServers: this.answer.iceServers });
        }
      } catch (e) {
        console.warn('geoturn: refreshing ICE servers failed:', e.message);
      }
      this.schedule();
    }, delayMs);
  }

  /** Stops refreshing. */
  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.connections.clear();
  }
}
