// Drives the operator dashboard (the admin listener's `/`) in headless
// Chromium as an operator would, printing one JSON line per step:
//   act: sign in with KEY, create stream NAME and a key for it ("key", with
//        the secret the page showed once), wait for it to go live ("live"),
//        wait for an HLS viewer ("viewer"), kick it and see it go ("kicked");
//   look: sign in with KEY and report what the page lists ("seen").
// Usage: node dashboard.mjs ADMIN_ORIGIN KEY act NAME | look [SCREENSHOT]
import { launch } from './chromium.mjs';

const [, , origin, key, mode, name, screenshot] = process.argv;
const line = (o) => console.log(JSON.stringify(o));

const browser = await launch();
try {
  const page = await browser.newPage();
  const refused = [];
  const elsewhere = [];
  page.on('console', (m) => m.text().includes('Content Security Policy') && refused.push(m.text()));
  page.on('request', (r) => !r.url().startsWith(origin) && !r.url().startsWith('data:') && elsewhere.push(r.url()));
  await page.goto(`${origin}/`);
  await page.fill('#key', key);
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])', { timeout: 10000 });
  const role = await page.evaluate(() => document.body.dataset.role);
  const stored = await page.evaluate(() => ({ session: !!sessionStorage.getItem('tidecast-key'), cookie: document.cookie }));
  line({ event: 'signed-in', role, stored });
  if (mode === 'look') {
    // Two refreshes, so that everything the key may see is listed.
    await page.waitForTimeout(4500);
    const seen = await page.evaluate(() => ({
      streams: [...document.querySelectorAll('#streams-table tr[data-stream]')].map((r) => r.dataset.stream),
      sessions: [...document.querySelectorAll('#sessions-table tr[data-session]')].map((r) => r.dataset.session),
      node: !document.querySelector('#node').hidden,
      status: document.querySelector('#status').textContent,
    }));
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    line({ event: 'seen', ...seen, refused, elsewhere });
  } else {
    await page.fill('#new-stream-name', name);
    await page.click('#new-stream button[type=submit]');
    const row = `#streams-table tr[data-stream="${name}"]`;
    await page.waitForSelector(row, { timeout: 10000 });
    await page.click(`${row} button.new-key`);
    const secret = await (await page.waitForSelector('#secret-value', { timeout: 10000 })).textContent();
    line({ event: 'key', secret });
    await page.waitForSelector(`${row}[data-live="true"]`, { timeout: 60000 });
    await page.waitForFunction((r) => document.querySelector(`${r} td.tracks`)?.textContent.includes('·'), row, { timeout: 20000 });
    line({ event: 'live', tracks: await page.textContent(`${row} td.tracks`) });
    const viewer = `#sessions-table tr[data-protocol="hls"]`;
    const id = await (await page.waitForSelector(viewer, { timeout: 60000 })).getAttribute('data-session');
    line({ event: 'viewer', id });
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    page.on('dialog', (d) => d.accept());
    await page.click(`#sessions-table tr[data-session="${id}"] button.kick`);
    await page.waitForSelector(`#sessions-table tr[data-session="${id}"]`, { state: 'detached', timeout: 20000 });
    line({ event: 'kicked', id, refused, elsewhere });
  }
} catch (e) {
  line({ event: 'failed', error: String(e) });
} finally {
  await browser.close();
}
