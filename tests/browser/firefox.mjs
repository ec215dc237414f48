// Debian's Firefox ESR (driven by puppeteer-core over WebDriver BiDi, never a downloaded
// browser) against geoturn: the same page work as call.mjs and gather.mjs do in Chromium.
// Started by tests/tests/browser_call.rs in its client namespace.
//
//   GEOTURN_MODE       `call` (two relay-only peer connections and a data channel, as
//                      call.mjs) or `gather` (one peer connection gathering, as gather.mjs)
//   GEOTURN_API_URL    http://ADDR:PORT of the API (the page is opened on it: same origin)
//   GEOTURN_APP_KEY    an API key
//   GEOTURN_CLIENT_IP  the address the API should place the caller at
//   GEOTURN_COUNT      relays to ask for (call; default: the API's)
//   GEOTURN_ONLY_URLS  optional JSON array of TURN URLs to use instead of the API's relays
//   GEOTURN_OPEN_TIMEOUT_MS  how long the data channel may take to open (default 30000)
//   FIREFOX_PROFILE    a profile directory to use and keep (its cert9.db may trust a test CA)
//   FIREFOX            the browser (default /usr/bin/firefox-esr)
//
// Prints one JSON object (see call.mjs and gather.mjs).

import puppeteer from 'puppeteer-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const log = (line) => process.stderr.write(`[firefox.mjs] ${line}\n`);

// FIREFOX_PROFILE: a profile prepared by the test (e.g. a certificate database trusting a
// test CA); kept afterwards. Otherwise a fresh one, removed.
const ownProfile = !process.env.FIREFOX_PROFILE;
const userDataDir = process.env.FIREFOX_PROFILE || mkdtempSync(join(tmpdir(), 'geoturn-firefox-'));
const removeProfile = () => { if (ownProfile) rmSync(userDataDir, { recursive: true, force: true }); };
const timer = setTimeout(() => {
  log('overall timeout');
  process.exit(3);
}, 90_000);

let browser;
try {
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    headless: true,
    userDataDir,
    extraPrefsFirefox: {
      // The client namespace's one interface has no default route: gather on it anyway.
      'media.peerconnection.ice.default_address_only': false,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      'media.peerconnection.ice.loopback': true,
    },
  });
  const page = await browser.newPage();
  page.on('console', (m) => log(`console ${m.type()}: ${m.text()}`));
  const api = need('GEOTURN_API_URL');
  await page.goto(`${api}/healthz`);
  const args = {
    mode: process.env.GEOTURN_MODE || 'call',
    key: need('GEOTURN_APP_KEY'),
    clientIp: need('GEOTURN_CLIENT_IP'),
    count: process.env.GEOTURN_COUNT ? Number(process.env.GEOTURN_COUNT) : null,
    onlyUrls: process.env.GEOTURN_ONLY_URLS ? JSON.parse(process.env.GEOTURN_ONLY_URLS) : null,
    openTimeoutMs: Number(process.env.GEOTURN_OPEN_TIMEOUT_MS || 30_000),
  };
  const result = await page.evaluate(async ({ mode, key, clientIp, count, onlyUrls, openTimeoutMs }) => {
    const query = `client_ip=${clientIp}${count ? `&count=${count}` : ''}`;
    const r = await fetch(`/v1/ice-servers?${query}`, { headers: { Authorization: `Bearer ${key}` } });
    if (!r.ok) throw new Error(`ice-servers: ${r.status} ${await r.text()}`);
    const answer = await r.json();
    const turn = answer.iceServers.filter((s) => s.username);
    let iceServers = answer.iceServers;
    if (onlyUrls) {
      iceServers = [{ urls: onlyUrls, username: turn[0].username, credential: turn[0].credential }];
    }
    const config = { iceServers, iceTransportPolicy: 'relay' };
    const deadline = (ms, what, errors) => new Promise((_, reject) =>
      setTimeout(() => reject(new Error(`${what} within ${ms} ms; candidate errors: ${errors.join('; ')}`)), ms));

    if (mode === 'gather') {
      const pc = new RTCPeerConnection(config);
      const relay = [];
      // Firefox ends gathering with a null candidate (or an empty candidate string).
      const done = new Promise((resolve) => {
        pc.onicecandidate = (e) => {
          if (!e.candidate || !e.candidate.candidate) {
            resolve();
            return;
          }
          if (e.candidate.type === 'relay') relay.push(`${e.candidate.protocol} ${e.candidate.address}`);
        };
      });
      pc.createDataChannel('probe');
      await pc.setLocalDescription(await pc.createOffer());
      await Promise.race([done, deadline(40_000, 'gathering did not complete', [])]);
      pc.close();
      return { turnUrls: turn.flatMap((s) => s.urls), relayCandidates: relay };
    }

    const a = new RTCPeerConnection(config);
    const b = new RTCPeerConnection(config);
    const errors = [];
    for (const [pc, other, name] of [[a, b, 'a'], [b, a, 'b']]) {
      pc.onicecandidate = (e) => e.candidate && e.candidate.candidate && other.addIceCandidate(e.candidate);
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
    const echoed = new Promise((resolve) => { channel.onmessage = (m) => resolve(m.data); });
    const opened = new Promise((resolve) => { channel.onopen = resolve; });
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    const t0 = performance.now();
    await Promise.race([opened, deadline(openTimeoutMs, 'no data channel', errors)]);
    const openMs = Math.round(performance.now() - t0);
    channel.send('hello through the relay');
    const got = await Promise.race([received, deadline(5_000, 'no message', errors)]);
    const echo = await Promise.race([echoed, deadline(5_000, 'no echo', errors)]);
    const pair = async (pc) => {
      const stats = await pc.getStats();
      let selected;
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && (s.selected || s.nominated) && s.state === 'succeeded') selected = s;
      });
      const local = stats.get(selected.localCandidateId);
      const remote = stats.get(selected.remoteCandidateId);
      return {
        localType: local.candidateType, localAddress: local.address, relayProtocol: local.relayProtocol,
        remoteType: remote.candidateType, remoteAddress: remote.address,
      };
    };
    const sa = await pair(a);
    const sb = await pair(b);
    a.close();
    b.close();
    return { rankedUrls: turn.map((s) => s.urls[0]), openMs, got, echo, errors, a: sa, b: sb };
  }, args);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await browser.close();
  clearTimeout(timer);
  removeProfile();
} catch (e) {
  log(`FAILED: ${e.message}`);
  if (browser) await browser.close().catch(() => {});
  removeProfile();
  process.exit(1);
}
