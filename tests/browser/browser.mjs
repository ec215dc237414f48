// Runs one page check in Debian's Chromium (playwright-core) or Firefox ESR (puppeteer-core
// over WebDriver BiDi), never a downloaded browser. Started by tests/tests/browser_call.rs in
// its client namespace:
//
//   node browser.mjs PAGE_SCRIPT
//
//   PAGE_SCRIPT        a file of this folder holding one async function expression, evaluated
//                      in the page with the arguments below (call-page.js, gather-page.js,
//                      client-check.js)
//   BROWSER            `chromium` (default) or `firefox`
//   GEOTURN_API_URL    http://ADDR:PORT of the credential API (the page is opened on it: same
//                      origin)
//   GEOTURN_APP_KEY    an API key
//   GEOTURN_CLIENT_IP  the address the API should place the caller at
//   GEOTURN_COUNT      relays to ask the API for (default: the API's)
//   GEOTURN_ONLY_URLS  optional JSON array of TURN URLs to use, with the API's credential,
//                      instead of the API's relays (e.g. the anycast URL)
//   GEOTURN_OPEN_TIMEOUT_MS  how long a data channel may take to open (default 30000)
//   HOME               Chromium's certificate database is $HOME/.pki/nssdb (a test CA there is
//                      trusted for turns: URLs)
//   FIREFOX_PROFILE    a Firefox profile to use and keep (its cert9.db may trust a test CA);
//                      otherwise a fresh one, removed
//   CHROMIUM, FIREFOX  the browsers (default /usr/bin/chromium, /usr/bin/firefox-esr)
//
// Prints the page function's result as one line of JSON; exits 1 when it throws.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const script = process.argv[2];
const log = (line) => process.stderr.write(`[${script}] ${line}\n`);
const pageFunction = readFileSync(join(dirname(fileURLToPath(import.meta.url)), script), 'utf8');
const firefox = (process.env.BROWSER || 'chromium') === 'firefox';
const ownProfile = !(firefox && process.env.FIREFOX_PROFILE);
const userDataDir = ownProfile
  ? mkdtempSync(join(tmpdir(), 'geoturn-browser-'))
  : process.env.FIREFOX_PROFILE;
const timer = setTimeout(() => {
  log('overall timeout');
  process.exit(3);
}, 90_000);

/** Launches the browser; returns a page and a function that closes everything. */
async function open() {
  if (firefox) {
    const { default: puppeteer } = await import('puppeteer-core');
    const browser = await puppeteer.launch({
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
    return { page: await browser.newPage(), close: () => browser.close() };
  }
  const { chromium } = await import('playwright-core');
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--allow-loopback-in-peer-connection',
      '--disable-features=WebRtcHideLocalIpsWithMdns',
    ],
  });
  return {
    page: context.pages()[0] ?? (await context.newPage()),
    close: () => context.close(),
  };
}

let close = async () => {};
const cleanUp = () => { if (ownProfile) rmSync(userDataDir, { recursive: true, force: true }); };
try {
  const opened = await open();
  close = opened.close;
  const { page } = opened;
  page.on('console', (m) => log(`console ${m.type()}: ${m.text()}`));
  await page.goto(`${need('GEOTURN_API_URL')}/healthz`);
  const args = {
    key: need('GEOTURN_APP_KEY'),
    clientIp: need('GEOTURN_CLIENT_IP'),
    count: process.env.GEOTURN_COUNT ? Number(process.env.GEOTURN_COUNT) : null,
    onlyUrls: process.env.GEOTURN_ONLY_URLS ? JSON.parse(process.env.GEOTURN_ONLY_URLS) : null,
    openTimeoutMs: Number(process.env.GEOTURN_OPEN_TIMEOUT_MS || 30_000),
  };
  const result = await page.evaluate(`(${pageFunction})(${JSON.stringify(args)})`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await close();
  clearTimeout(timer);
  cleanUp();
} catch (e) {
  log(`FAILED: ${e.message}`);
  await close().catch(() => {});
  cleanUp();
  process.exit(1);
}
