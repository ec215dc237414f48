// How many TURN allocations one RTCPeerConnection makes with the credential API's answer:
// Debian's Chromium fetches ICE servers, creates one relay-only peer connection with a data
// channel, and gathers until ICE gathering completes. Started by tests/tests/browser_call.rs
// in its client namespace; the test counts the allocations on the relays themselves.
//
//   GEOTURN_API_URL    http://ADDR:PORT of the API (the page is opened on it: same origin)
//   GEOTURN_APP_KEY    an API key
//   GEOTURN_CLIENT_IP  the address the API should place the caller at
//   CHROMIUM           the browser (default /usr/bin/chromium)
//
// Prints one JSON object: the answer's TURN URLs, and the relay candidates gathered by URL.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const log = (line) => process.stderr.write(`[gather.mjs] ${line}\n`);

const userDataDir = mkdtempSync(join(tmpdir(), 'geoturn-gather-'));
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
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => log(`console ${m.type()}: ${m.text()}`));
  const api = need('GEOTURN_API_URL');
  await page.goto(`${api}/healthz`);
  const result = await page.evaluate(async ({ key, clientIp }) => {
    const r = await fetch(`/v1/ice-servers?client_ip=${clientIp}`, {
      headers: { Authorization: `Bearer ${key}` },
    });
    if (!r.ok) throw new Error(`ice-servers: ${r.status} ${await r.text()}`);
    const { iceServers } = await r.json();
    const pc = new RTCPeerConnection({ iceServers, iceTransportPolicy: 'relay' });
    const candidates = {};
    const done = new Promise((resolve) => {
      pc.onicecandidate = (e) => {
        if (!e.candidate) {
          resolve();
          return;
        }
        const url = e.url || e.candidate.url || 'unknown';
        candidates[url] = (candidates[url] || 0) + 1;
      };
    });
    pc.createDataChannel('probe');
    await pc.setLocalDescription(await pc.createOffer());
    await Promise.race([
      done,
      new Promise((_, reject) => setTimeout(() => reject(new Error('gathering did not complete in 30 s')), 30_000)),
    ]);
    pc.close();
    const turnUrls = iceServers.filter((s) => s.username).flatMap((s) => s.urls);
    return { turnUrls, relayCandidates: candidates };
  }, { key: need('GEOTURN_APP_KEY'), clientIp: need('GEOTURN_CLIENT_IP') });
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
