// Plays an LL-HLS URL with hls.js in headless Chromium and prints what the
// player saw as JSON: position, decoded frames, errors, which LL-HLS
// features it used. Usage: node hlsjs.mjs URL SECONDS [switch]
// With `switch`, it asks for the next level (hls.nextLevel) every 1.5 s
// once playing, at the end of a segment, and reports the levels it
// switched to and any stall.
import { launch, playerPage } from './chromium.mjs';

const [, , src, secondsArg, mode] = process.argv;
const seconds = Number(secondsArg || 8);

const browser = await launch();
try {
  const { page, requests, origin } = await playerPage(browser, src, 'hls.js/dist/hls.min.js');
  const result = await page.evaluate(
    async ({ src, seconds, mode }) => {
      const video = document.getElementById('v');
      const ranges = (r) => Array.from({ length: r.length }, (_, i) => [r.start(i), r.end(i)]);
      const hls = new Hls({ lowLatencyMode: true });
      const errors = [];
      let parts = 0;
      let fragments = 0;
      // A hole skip's size, from hls.js's own message ("seeking from A to B"
      // or "hole: A -> B"), so the test can tell a start-up nudge from lost media.
      const jump = (reason) => {
        const m = /(?:from|hole:) ([\d.]+) (?:to|->) ([\d.]+)/.exec(reason || '');
        return m ? Number(m[2]) - Number(m[1]) : null;
      };
      hls.on(Hls.Events.ERROR, (_, d) =>
        errors.push({
          type: d.type,
          details: d.details,
          fatal: d.fatal,
          reason: d.reason,
          jump: jump(d.reason),
          at: video.currentTime,
          buffered: ranges(video.buffered),
        }),
      );
      hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
        if (d.part) parts++;
        else fragments++;
      });
      const switched = [];
      hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => switched.push(d.level));
      // A switch is asked for once the last part of a segment is buffered,
      // so the next level starts at its next segment, whose first part is
      // independent. Asked for mid-segment, hls.js (1.6) skips the new
      // level's remaining parts of that segment, which cannot be decoded
      // alone, and leaves a hole whatever the server does.
      // The segment at the live edge is still forming: its end, as hls.js
      // knows it, is the end of its parts so far, so its "last" part may
      // not be; only a segment of about a target duration has really
      // ended (seen in CI: a switch at 4.6 s of a segment ending at 5 s).
      let wantSwitch = false;
      hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => {
        if (!wantSwitch || (d.part && d.part.end < d.frag.end - 0.01)) return;
        const target = hls.levels[d.frag.level]?.details?.targetduration || 1;
        if (d.part && d.frag.duration < 0.9 * target) return;
        wantSwitch = false;
        hls.nextLevel = (hls.currentLevel + 1) % hls.levels.length;
      });
      // A stall: playback waited after it had started; a dry one had
      // nothing buffered ahead of the playhead.
      let stalls = 0;
      let dryStalls = 0;
      video.addEventListener('waiting', () => {
        if (firstTime === null) return;
        stalls++;
        const t = video.currentTime;
        const ahead = ranges(video.buffered).reduce((a, [s, e]) => (s <= t + 0.05 && e > t ? Math.max(a, e - t) : a), 0);
        if (ahead < 0.1) dryStalls++;
      });
      hls.loadSource(src);
      hls.attachMedia(video);
      video.play().catch(() => {});
      const start = performance.now();
      let firstTime = null;
      let lastSwitch = 0;
      while (performance.now() - start < seconds * 1000) {
        await new Promise((r) => setTimeout(r, 250));
        if (firstTime === null && video.currentTime > 0) firstTime = video.currentTime;
        if (mode === 'switch' && firstTime !== null && hls.levels.length > 1 && performance.now() - lastSwitch > 1500) {
          lastSwitch = performance.now();
          wantSwitch = true;
        }
      }
      const q = video.getVideoPlaybackQuality();
      return {
        currentTime: video.currentTime,
        firstTime,
        decodedFrames: q.totalVideoFrames,
        droppedFrames: q.droppedVideoFrames,
        width: video.videoWidth,
        height: video.videoHeight,
        latency: hls.latency,
        levels: hls.levels.map((l) => `${l.width}x${l.height}`),
        parts,
        fragments,
        errors,
        buffered: ranges(video.buffered),
        switched,
        stalls,
        dryStalls,
      };
    },
    { src, seconds, mode },
  );
  result.blockingReloads = requests.filter((u) => u.includes('_HLS_msn=')).length;
  result.deltaUpdates = requests.filter((u) => u.includes('_HLS_skip=')).length;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
