// Rewinds a live LL-DASH stream with dash.js in headless Chromium: plays at
// the live edge, seeks BACK seconds behind it, plays on, and asks dash.js
// for thumbnails (provideThumbnail) across the DVR window, fetching each
// image it names. Prints what it saw as JSON.
// Usage: node dashjs-dvr.mjs MPD_URL BACK_SECONDS PLAY_SECONDS
import { launch, playerPage } from './chromium.mjs';

const [, , src, backArg, playArg] = process.argv;
const back = Number(backArg || 40);
const play = Number(playArg || 6);

const browser = await launch();
try {
  const { page, requests, origin } = await playerPage(browser, src, 'dashjs/dist/modern/umd/dash.mediaplayer.min.js');
  const result = await page.evaluate(
    async ({ src, back, play }) => {
      const video = document.getElementById('v');
      const player = dashjs.MediaPlayer().create();
      // A viewer who rewinds stays where they went: no catching up.
      player.updateSettings({ streaming: { liveCatchup: { enabled: false } } });
      const errors = [];
      player.on(dashjs.MediaPlayer.events.ERROR, (e) => errors.push(JSON.stringify(e.error || e).slice(0, 300)));
      player.initialize(video, src, true);
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const until = async (what, ok, seconds) => {
        const start = performance.now();
        while (!ok()) {
          if (performance.now() - start > seconds * 1000) throw new Error(`timed out waiting for ${what}`);
          await sleep(100);
        }
      };
      try {
        await until('playback at the live edge', () => video.currentTime > 0 && !video.paused, 30);
        await sleep(2000);
        const window = player.getDvrWindow();
        const liveTime = video.currentTime;
        const framesBefore = video.getVideoPlaybackQuality().totalVideoFrames;
        player.seekToPresentationTime(liveTime - back);
        await until('the seek', () => Math.abs(video.currentTime - (liveTime - back)) < 5 && !video.seeking, 20);
        const landed = video.currentTime;
        await until('playback after the seek', () => video.currentTime > landed + 0.5, 20);
        const resumed = video.currentTime;
        await sleep(play * 1000);
        const played = video.currentTime - resumed;
        const behind = player.getCurrentLiveLatency();
        const frames = video.getVideoPlaybackQuality().totalVideoFrames - framesBefore;
        // Thumbnails over the window, on dash.js's own time axis (seconds
        // from the window's start).
        const size = player.duration();
        const thumbs = [];
        for (const at of [2, size / 2, size - 8]) {
          const t = await new Promise((resolve) => player.provideThumbnail(at, resolve));
          if (!t) {
            thumbs.push({ at, missing: true });
            continue;
          }
          const r = await fetch(t.url);
          const type = r.headers.get('content-type');
          const bitmap = r.ok ? await createImageBitmap(await r.blob()) : null;
          thumbs.push({
            at,
            url: t.url,
            x: t.x,
            y: t.y,
            width: t.width,
            height: t.height,
            status: r.status,
            type,
            imageWidth: bitmap ? bitmap.width : 0,
            imageHeight: bitmap ? bitmap.height : 0,
          });
        }
        return { window, liveTime, landed, played, behind, frames, thumbs, errors };
      } catch (e) {
        return { failure: String(e), currentTime: video.currentTime, window: player.getDvrWindow(), errors };
      }
    },
    { src, back, play },
  );
  result.requests = requests.filter((u) => !u.startsWith(origin));
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
