// Plays an LL-DASH MPD with dash.js (the DASH-IF reference player) in
// headless Chromium and prints what the player saw as JSON: position,
// decoded frames, whether low-latency mode was on, live latency, stalls,
// errors, and every URL the page asked for (the test checks that none left
// loopback: dash.js's default clock is on the internet).
// Usage: node dashjs.mjs MPD_URL SECONDS
import { launch, playerPage } from './chromium.mjs';

const [, , src, secondsArg] = process.argv;
const seconds = Number(secondsArg || 10);

const browser = await launch();
try {
  const { page, requests, origin } = await playerPage(browser, src, 'dashjs/dist/modern/umd/dash.mediaplayer.min.js');
  const result = await page.evaluate(
    async ({ src, seconds }) => {
      const video = document.getElementById('v');
      const player = dashjs.MediaPlayer().create();
      const errors = [];
      let stalls = 0;
      let startedAt = null;
      const latencies = [];
      player.on(dashjs.MediaPlayer.events.ERROR, (e) => errors.push(JSON.stringify(e.error || e).slice(0, 300)));
      player.on(dashjs.MediaPlayer.events.PLAYBACK_PLAYING, () => (startedAt ??= performance.now()));
      // A stall after start-up (the first two seconds of playing, while the
      // player settles on its target latency, do not count): the buffer ran dry.
      player.on(dashjs.MediaPlayer.events.BUFFER_EMPTY, (e) => {
        if (startedAt !== null && performance.now() - startedAt > 2000 && e.mediaType === 'video') stalls++;
      });
      player.initialize(video, src, true);
      const start = performance.now();
      let firstTime = null;
      while (performance.now() - start < seconds * 1000) {
        await new Promise((r) => setTimeout(r, 250));
        if (firstTime === null && video.currentTime > 0) firstTime = video.currentTime;
        const l = player.getCurrentLiveLatency();
        if (Number.isFinite(l) && l > 0) latencies.push(l);
      }
      const q = video.getVideoPlaybackQuality();
      return {
        currentTime: video.currentTime,
        firstTime,
        decodedFrames: q.totalVideoFrames,
        width: video.videoWidth,
        height: video.videoHeight,
        lowLatency: player.getLowLatencyModeEnabled(),
        targetDelay: player.getTargetLiveDelay(),
        latency: latencies.length ? latencies[latencies.length - 1] : null,
        latencyMedian: latencies.length ? latencies.sort((a, b) => a - b)[Math.floor(latencies.length / 2)] : null,
        audioTracks: player.getTracksFor('audio').length,
        videoRepresentations: player.getRepresentationsByType('video').map((r) => `${r.width}x${r.height}`),
        stalls,
        errors,
      };
    },
    { src, seconds },
  );
  result.requests = requests;
  console.log(JSON.stringify(result));
} finally {
  await browser.close();
}
