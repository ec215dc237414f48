// A real WebRTC call in Debian's Chromium through geoturn, relay only. Started by
// tests/tests/browser_call.rs inside a network namespace whose only interface is `lo` (with
// 198.18.x addresses on it), where the relays, Redis and the credential API also run.
//
//   GEOTURN_API_URL    http://198.18.0.2:PORT  (the page is opened on it: same origin)
//   GEOTURN_APP_KEY    an API key (the page plays the web app's backend and passes client_ip)
//   GEOTURN_CLIENT_IP  the address the API should place the caller at
//   GEOTURN_COUNT      how many relays to ask the API for (default 3)
//   GEOTURN_ONLY_URLS  optional JSON array of TURN URLs: use only these (with the API's
//                      credential) instead of the API's relays, e.g. the anycast URL
//   GEOTURN_OPEN_TIMEOUT_MS  how long the data channel may take to open (default 20000)
//   HOME               Chromium's certificate database is $HOME/.pki/nssdb (a test CA there
//                      is trusted for turns: URLs)
//   CHROMIUM           the browser (default /usr/bin/chromium)
//
// Prints one JSON object: the ranked relay URLs, and the selected candidate pair of each peer
// connection (types, addresses, relay protocol), plus whether data went both ways.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const log = (line) => process.stderr.write(`[call.mjs] ${line}\n`);

const userDataDir = mkdtempSync(join(tmpdir(), 'geoturn-call-'));
const timer = setTimeout(() => {
  log('overall timeout');
  process.exit(3);
}, 60_000);

let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => log(`console ${m.type()}: ${m.text()}`));
  const api = need('GEOTURN_API_URL');
  await page.goto(`${api}/healthz`);
  const result = await page.evaluate(async ({ key, clientIp, count, onlyUrls, openTimeoutMs }) => {
    const r = await fetch(`/v1/ice-servers?client_ip=${clientIp}&count=${count}`, {
      headers: { Authorization: `Bearer ${key}` },
    });
    if (!r.ok) throw new Error(`ice-servers: ${r.status} ${await r.text()}`);
    const answer = await r.json();
    const turn = answer.iceServers.filter((s) => s.username);
    let iceServers = answer.iceServers;
    if (onlyUrls) {
      iceServers = [{ urls: onlyUrls, username: turn[0].username, credential: turn[0].credential }];
    }
    const config = { iceServers, iceTransportPolicy: 'relay' };
    const a = new RTCPeerConnection(config);
    const b = new RTCPeerConnection(config);
    const errors = [];
    for (const [pc, other, name] of [[a, b, 'a'], [b, a, 'b']]) {
      pc.onicecandidate = (e) => e.candidate && other.addIceCandidate(e.candidate);
      pc.onicecandidateerror = (e) => errors.push(`${name} ${e.url} ${e.errorCode} ${e.errorText}`);
    }
    const channel = a.createDataChannel('chat');
    const received = new Promise((resolve) => {
      b.ondatachannel = (e) => {
        e.channel.onmessage = (m) => {
          e.channel.send(`echo:${m.data}`);
          resolve(m.data);
        };
      };
    });
    const echoed = new Promise((resolve) => {
      channel.onmessage = (m) => resolve(m.data);
    });
    const opened = new Promise((resolve) => { channel.onopen = resolve; });
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    const deadline = (ms, what) => new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`${what} within ${ms} ms; candidate errors: ${errors.join('; ')}`)), ms));
    const t0 = performance.now();
    await Promise.race([opened, deadline(openTimeoutMs, 'no data channel')]);
    const openMs = Math.round(performance.now() - t0);
    channel.send('hello through the relay');
    const got = await Promise.race([received, deadline(5_000, 'no message')]);
    const echo = await Promise.race([echoed, deadline(5_000, 'no echo')]);
    const pair = async (pc) => {
      const stats = await pc.getStats();
      let selected;
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) selected = stats.get(s.selectedCandidatePairId);
      });
      if (!selected) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') selected = s; });
      const local = stats.get(selected.localCandidateId);
      const remote = stats.get(selected.remoteCandidateId);
      return {
        localType: local.candidateType, localAddress: local.address, relayProtocol: local.relayProtocol,
        url: local.url, remoteType: remote.candidateType, remoteAddress: remote.address,
      };
    };
    // Which relay pair ICE nominates among several TURN servers is the browser's choice (it
    // usually settles on the first server's, but not always under load): report what it chose.
    const sa = await pair(a);
    const sb = await pair(b);
    const out = {
      rankedUrls: turn.map((s) => s.urls[0]), openMs, got, echo, errors, a: sa, b: sb,
    };
    a.close();
    b.close();
    return out;
  }, {
    key: need('GEOTURN_APP_KEY'),
    clientIp: need('GEOTURN_CLIENT_IP'),
    count: Number(process.env.GEOTURN_COUNT || 3),
    onlyUrls: process.env.GEOTURN_ONLY_URLS ? JSON.parse(process.env.GEOTURN_ONLY_URLS) : null,
    openTimeoutMs: Number(process.env.GEOTURN_OPEN_TIMEOUT_MS || 20_000),
  });
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await context.close();
  clearTimeout(timer);
  rmSync(userDataDir, { recursive: true, force: true });
} catch (e) {
  log(`FAILED: ${e.message}`);
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}
