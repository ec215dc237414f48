// A page check of the browser client (run by browser.mjs): one async function expression, on the
// API's origin with ({ key, clientIp }). It imports the API's /v1/client.js and checks what a
// web app relies on: an RTCConfiguration from the API, the ranking, credentials refreshed into
// a live RTCPeerConnection before they expire, a 429 retried after its Retry-After, and a
// refused key reported with the API's problem code and no retry.
async ({ key, clientIp }) => {
  const { IceServers } = await import('/v1/client.js');
  const turnUser = (pc) => pc.getConfiguration().iceServers.find((s) => s.username).username;

  // 1. The real API, with credentials of 60 s refreshed 58 s before they expire (2 s in).
  const ice = new IceServers({ apiKey: key, query: { clientIp: clientIp, ttl: 60 }, refreshMarginSec: 58 });
  const config = await ice.configuration({ iceTransportPolicy: 'relay' });
  const pc = new RTCPeerConnection(config);
  const firstUser = turnUser(pc);
  const ranking = ice.ranking();
  const refreshed = new Promise((resolve, reject) => {
    const off = ice.onAnswer(() => { off(); resolve(); });
    setTimeout(() => reject(new Error('no refresh within 10 s')), 10_000);
  });
  ice.keepFresh(pc);
  await refreshed;
  await new Promise((r) => setTimeout(r, 200));
  const secondUser = turnUser(pc);
  ice.stop();
  pc.close();

  // 2. A 429 with Retry-After: 1, then the real API.
  let calls = 0;
  const flaky = async (url, init) => {
    calls += 1;
    if (calls === 1) {
      const problem = { type: 'tag:geoturn,2026:problem:rate_limited', title: 'Too Many Requests', status: 429, detail: 'slow down', code: 'rate_limited' };
      return new Response(JSON.stringify(problem), { status: 429, headers: { 'Retry-After': '1', 'Content-Type': 'application/problem+json' } });
    }
    return fetch(url, init);
  };
  const t0 = performance.now();
  const retried = await new IceServers({ apiKey: key, query: { clientIp: clientIp }, fetch: flaky }).fetch();
  const waitedMs = Math.round(performance.now() - t0);

  // 3. A refused key: the API's problem code, thrown at once.
  let refused = null;
  let refusedCalls = 0;
  const counting = async (url, init) => { refusedCalls += 1; return fetch(url, init); };
  try {
    await new IceServers({ apiKey: 'not-a-key-0123456789', fetch: counting }).fetch();
  } catch (e) {
    refused = { name: e.name, status: e.status, code: e.code };
  }
  return {
    firstUser, secondUser, ranking, calls, waitedMs,
    retriedServers: retried.iceServers.length, refused, refusedCalls,
  };
}
