// Opens a Tidecast player page (/{stream}.html) in headless Chromium and
// reports, one JSON line at a time, what its <tidecast-player> does:
//   {"event":"live", ...}     it played 2 s on end (no seek) over the protocol it says;
//   {"event":"state", ...}    the element's state changed (offline, denied...);
//   {"event":"resumed", ...}  with `resume`: it went offline, then played again;
//   {"event":"done", ...}     the end (timeout, or what was asked happened).
// Usage: node player.mjs PAGE_URL SECONDS [resume | preview | quality]
import { launch } from './chromium.mjs';

const [, , url, secondsArg, mode] = process.argv;
const seconds = Number(secondsArg || 20);
const line = (o) => console.log(JSON.stringify(o));

const browser = await launch();
try {
  const page = await browser.newPage();
  const requests = [];
  const refused = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('console', (m) => {
    if (m.text().includes('Content Security Policy')) refused.push(m.text());
  });
  await page.goto(url);
  const look = () =>
    page.evaluate(() => {
      const el = document.querySelector('tidecast-player');
      const video = el && el.shadowRoot && el.shadowRoot.querySelector('video');
      const media = video && video.srcObject;
      return {
        state: el ? el.dataset.state : null,
        protocol: el ? el.dataset.protocol || null : null,
        latency: el && el.dataset.latency ? Number(el.dataset.latency) : null,
        message: el ? el.shadowRoot.querySelector('.msg').textContent : '',
        bar: el ? el.shadowRoot.querySelector('.bar').textContent.replace(/\s+/g, ' ').trim() : '',
        currentTime: video ? video.currentTime : 0,
        // Playing, not seeking: hls.js and dash.js move currentTime to
        // their start position by a seek, which is not playback.
        playing: Boolean(video && !video.paused && !video.seeking && video.readyState >= 3),
        width: video ? video.videoWidth : 0,
        height: video ? video.videoHeight : 0,
        frames: video ? video.getVideoPlaybackQuality().totalVideoFrames : 0,
        audioBytes: video && video.webkitAudioDecodedByteCount ? video.webkitAudioDecodedByteCount : 0,
        audioTracks: media ? media.getAudioTracks().length : null,
        videoTracks: media ? media.getVideoTracks().length : null,
      };
    });
  // With `preview`: the seek bar over the rewind window, and the sprite
  // thumbnail shown when the pointer is over it (tried for up to 15 s: the
  // player fetches the sprite index every 10 s).
  const preview = async () => {
    const until = Date.now() + 15000;
    let got = null;
    while (Date.now() < until) {
      const box = await page.locator('tidecast-player .seek input').boundingBox();
      if (box && box.width > 0) {
        await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
        await page.mouse.move(box.x + box.width * 0.31, box.y + box.height / 2);
        got = await page.evaluate(() => {
          const el = document.querySelector('tidecast-player');
          const p = el.shadowRoot.querySelector('.preview');
          return { dvr: Number(el.dataset.dvr || 0), shown: p.style.display === 'block', image: p.style.backgroundImage, position: p.style.backgroundPosition, width: p.style.width, label: p.textContent };
        });
        if (got.shown) {
          const url = got.image.replace(/^url\("?/, '').replace(/"?\)$/, '');
          got.status = (await page.request.get(url)).status();
          break;
        }
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    return got;
  };
  // With `quality`: the quality menu's choices, and the rendition shown
  // after picking the first after `auto` (hls.js lists the lowest first).
  const quality = async () => {
    const options = await page.evaluate(() =>
      [...document.querySelector('tidecast-player').shadowRoot.querySelectorAll('.quality option')].map((o) => [o.value, o.textContent]),
    );
    const pick = options[1] || options[0];
    await page.locator('tidecast-player .quality').selectOption(pick[0]);
    const until = Date.now() + 20000;
    let bar = '';
    while (Date.now() < until) {
      bar = await page.evaluate(() => document.querySelector('tidecast-player').shadowRoot.querySelector('.latency').textContent);
      if (bar.includes(pick[1])) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    return { options: options.map((o) => o[1]), picked: pick[1], bar };
  };
  const start = Date.now();
  let last = null;
  // Phase: 'live' (waiting for playback), then with `resume`: 'gone'
  // (waiting for it to stop), 'back' (waiting for it to play again).
  let phase = 'live';
  // Seconds played: the sum of currentTime's steps between two samples
  // that were both playing, so a seek (a jump, or a sample while seeking)
  // adds nothing and a short wait at the live edge only pauses the count.
  let played = 0;
  let prev = null;
  let seen = await look();
  while (Date.now() - start < seconds * 1000) {
    await new Promise((r) => setTimeout(r, 250));
    seen = await look();
    if (seen.state !== last) {
      line({ event: 'state', ...seen });
      last = seen.state;
    }
    if (seen.state !== 'live') {
      played = 0;
      prev = null;
    }
    if (phase === 'gone') {
      if (seen.state !== 'live') phase = 'back';
      continue;
    }
    if (seen.state === 'denied' && phase === 'live') break;
    if (seen.state !== 'live') continue;
    const step = seen.playing && prev !== null ? seen.currentTime - prev : 0;
    prev = seen.playing ? seen.currentTime : null;
    if (step > 0 && step < 1) played += step;
    if (played < 2) continue;
    // The latency figure comes with the player's next tick (once a second).
    if (seen.latency === null && played < 8) continue;
    if (phase === 'live') {
      seen.preview = mode === 'preview' ? await preview() : null;
      seen.quality = mode === 'quality' ? await quality() : null;
      if (process.env.PLAYER_SCREENSHOT) await page.screenshot({ path: process.env.PLAYER_SCREENSHOT });
      line({ event: 'live', ...seen });
      if (mode !== 'resume') break;
      phase = 'gone';
    } else {
      line({ event: 'resumed', ...seen });
      break;
    }
  }
  const outside = requests.filter((u) => !u.startsWith(new URL(url).origin) && !u.startsWith('data:') && !u.startsWith('blob:'));
  line({ event: 'done', ...seen, outside, refused });
} finally {
  await browser.close();
}
