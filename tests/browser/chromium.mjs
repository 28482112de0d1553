// Headless Debian Chromium as every browser peer of the tests and benchmarks
// launches it, and a page at a given origin served by Playwright itself (so
// it is same-origin with the server's endpoints and a secure context on
// loopback).
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--autoplay-policy=no-user-gesture-required'];

// Launches Chromium with the common flags plus `extraArgs`; `options` go to
// playwright's launch (e.g. handleSIGTERM).
export function launch(extraArgs = [], options = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [...FLAGS, ...extraArgs],
    ...options,
  });
}

// A new page showing `html` at `${origin}${path}`, its console forwarded to stderr.
export async function pageAt(browser, origin, path, html = '<!doctype html><html><body></body></html>') {
  const page = await browser.newPage();
  page.on('console', (m) => process.stderr.write(`[page] ${m.text()}\n`));
  await page.route(`${origin}${path}`, (r) => r.fulfill({ status: 200, contentType: 'text/html', body: html }));
  await page.goto(`${origin}${path}`);
  return page;
}

// The tests' player page: a muted, autoplaying <video id="v"> and a
// player's script (`library`, a path under node_modules), at `/__player` of
// `src`'s origin. Every URL the page asks for is recorded in `requests`.
export async function playerPage(browser, src, library) {
  const script = readFileSync(new URL(`./node_modules/${library}`, import.meta.url), 'utf8');
  const page = await browser.newPage();
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  const origin = new URL(src).origin;
  await page.route(`${origin}/__player`, (route) =>
    route.fulfill({
      contentType: 'text/html',
      body: `<!doctype html><html><body><video id="v" muted autoplay playsinline></video><script>${script}</script></body></html>`,
    }),
  );
  await page.goto(`${origin}/__player`);
  return { page, requests, origin };
}
