// Runs client-check.js (the browser client /v1/client.js, checked in a page) in Debian's
// Chromium (playwright-core) or Firefox ESR (puppeteer-core over WebDriver BiDi). Started by
// tests/tests/browser_call.rs in its client namespace.
//
//   BROWSER            `chromium` or `firefox`
//   GEOTURN_API_URL    http://ADDR:PORT of the API (the page is opened on it)
//   GEOTURN_APP_KEY    an API key
//   GEOTURN_CLIENT_IP  the address the API should place the caller at
//
// Prints client-check.js's JSON result.

import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const log = (line) => process.stderr.write(`[client.mjs] ${line}\n`);
const check = readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'client-check.js'), 'utf8');
const userDataDir = mkdtempSync(join(tmpdir(), 'geoturn-client-'));
const timer = setTimeout(() => {
  log('overall timeout');
  process.exit(3);
}, 90_000);

let close = async () => {};
try {
  let page;
  if (need('BROWSER') === 'firefox') {
    const { default: puppeteer } = await import('puppeteer-core');
    const browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
      headless: true,
      userDataDir,
    });
    close = () => browser.close();
    page = await browser.newPage();
  } else {
    const { chromium } = await import('playwright-core');
    const context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    });
    close = () => context.close();
    page = context.pages()[0] ?? (await context.newPage());
  }
  page.on('console', (m) => log(`console ${m.type()}: ${m.text()}`));
  await page.goto(`${need('GEOTURN_API_URL')}/healthz`);
  const args = JSON.stringify({ key: need('GEOTURN_APP_KEY'), clientIp: need('GEOTURN_CLIENT_IP') });
  const result = await page.evaluate(`(${check})(${args})`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  await close();
  clearTimeout(timer);
  rmSync(userDataDir, { recursive: true, force: true });
} catch (e) {
  log(`FAILED: ${e.message}`);
  await close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(1);
}
