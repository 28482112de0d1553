// Glass-to-glass WebRTC latency on loopback, Tidecast against a direct
// browser-to-browser connection in the same run (the peer every WebRTC server
// is measured against: the server's share is the difference).
//
//   node bench/webrtc-latency.mjs <origin> <seconds>
//
// One headless Chromium page draws the current time (performance.now(), in
// milliseconds, 16 bits) as a row of black and white cells into a canvas
// every 5 ms, captures it at 30 fps and sends it as H.264. A <video> element
// plays what comes back; for every frame it presents
// (requestVideoFrameCallback) the page reads the cells back and takes the
// difference between the frame's expected display time and the time drawn
// into it. Same page, same clock: no clock sync is needed. The draw interval
// bounds the error (up to 5 ms early). Runs:
//   direct:   RTCPeerConnection to RTCPeerConnection in the page;
//   tidecast: WHIP to the server, WHEP back from it.
// The two alternate for three rounds (the phase between drawing, capture and
// the display clock shifts between connections by up to a frame, so one
// connection each would be noise). Prints one JSON object per connection,
// then a summary over all frames of each kind, with the ratio.
//
// With a third argument `hls,dash` the same WHIP publisher is played back
// over LL-HLS (hls.js, lowLatencyMode) and LL-DASH (dash.js, low-latency
// mode from the MPD) instead (`hls-catchup`: hls.js allowed to play 4 %
// fast to catch up): the clock in the picture measures the HTTP
// formats' glass-to-glass latency. Their warm-up is longer (8 s), so each
// player's start-up and catch-up have settled before frames count.
import { launch, pageAt } from '../tests/browser/chromium.mjs';

const [origin, secondsArg, runsArg] = process.argv.slice(2);
if (!origin) {
  console.error('usage: node bench/webrtc-latency.mjs <origin> [seconds] [runs: direct,tidecast | hls,dash]');
  process.exit(2);
}
const seconds = Number(secondsArg || 20);
const runs = (runsArg || 'direct,tidecast').split(',');

const browser = await launch();
const page = await pageAt(browser, origin, '/tidecast-latency-bench');
await page.addScriptTag({ path: new URL('../tests/browser/signaling.js', import.meta.url).pathname });
if (runs.some((r) => r.startsWith('hls'))) {
  await page.addScriptTag({ path: new URL('../tests/browser/node_modules/hls.js/dist/hls.min.js', import.meta.url).pathname });
}
if (runs.includes('dash')) {
  await page.addScriptTag({
    path: new URL('../tests/browser/node_modules/dashjs/dist/modern/umd/dash.mediaplayer.min.js', import.meta.url).pathname,
  });
}

function percentiles(values) {
  const v = [...values].sort((a, b) => a - b);
  const pct = (p) => v[Math.min(v.length - 1, Math.floor((p / 100) * v.length))];
  return { p50: pct(50), p90: pct(90), p99: pct(99), max: v[v.length - 1] };
}

async function measure(run, seconds) {
  return page.evaluate(
    async ({ run, seconds }) => {
      const W = 640;
      const H = 360;
      const BITS = 16;
      const CELL = 24;
      const X0 = (W - BITS * CELL) / 2;
      const Y0 = 24;
      const http = run.startsWith('hls') || run === 'dash';
      const WARMUP_MS = http ? 8000 : 3000;

      // The source: a moving box (so the encoder has work) and the time.
      const src = document.createElement('canvas');
      src.width = W;
      src.height = H;
      const ctx = src.getContext('2d');
      let n = 0;
      const draw = () => {
        const t = Math.round(performance.now()) & 0xffff;
        ctx.fillStyle = '#246';
        ctx.fillRect(0, 0, W, H);
        ctx.fillStyle = '#e94';
        ctx.fillRect((n * 4) % (W - 80), 120 + ((n * 3) % (H - 200)), 80, 80);
        n += 1;
        for (let i = 0; i < BITS; i += 1) {
          ctx.fillStyle = (t >> i) & 1 ? '#fff' : '#000';
          ctx.fillRect(X0 + i * CELL, Y0, CELL, CELL);
        }
      };
      draw();
      const timer = setInterval(draw, 5);
      const track = src.captureStream(30).getVideoTracks()[0];

      // Constrained baseline, packetization-mode 1: what WHEP sends back.
      const h264 = RTCRtpSender.getCapabilities('video').codecs.filter(
        (c) =>
          c.mimeType === 'video/H264' &&
          /packetization-mode=1/.test(c.sdpFmtpLine || '') &&
          /profile-level-id=42e0/.test(c.sdpFmtpLine || ''),
      );
      const sender = new RTCPeerConnection();
      sender.addTransceiver(track, { direction: 'sendonly' }).setCodecPreferences(h264);
      const receiver = new RTCPeerConnection();
      receiver.addTransceiver('video', { direction: 'recvonly' });
      const video = document.createElement('video');
      video.muted = true;
      video.autoplay = true;
      video.playsInline = true;
      document.body.appendChild(video);
      receiver.ontrack = (e) => {
        video.srcObject = new MediaStream([e.track]);
      };
      const resources = [];
      let player = null;
      if (run === 'direct') {
        sender.onicecandidate = (e) => e.candidate && receiver.addIceCandidate(e.candidate);
        receiver.onicecandidate = (e) => e.candidate && sender.addIceCandidate(e.candidate);
        await sender.setLocalDescription(await sender.createOffer());
        await receiver.setRemoteDescription(sender.localDescription);
        await receiver.setLocalDescription(await receiver.createAnswer());
        await sender.setRemoteDescription(receiver.localDescription);
      } else {
        const stream = `latency-${run}-${Date.now()}`;
        const pub = await window.tidecast.offer(sender, `/whip/${stream}`, '-');
        if (pub.status !== 201) return { run, error: `WHIP ${pub.status}: ${pub.error}` };
        await sender.setRemoteDescription({ type: 'answer', sdp: pub.answer });
        resources.push(pub.location);
        if (!(await window.tidecast.connected(sender, 15000))) return { run, error: 'WHIP did not connect' };
        if (run.startsWith('hls')) {
          // `hls-catchup`: what a player page would set to let hls.js play
          // up to 4 % fast until it is back at its target latency.
          const catchup = run === 'hls-catchup' ? { maxLiveSyncPlaybackRate: 1.04 } : {};
          const hls = new Hls({ lowLatencyMode: true, ...catchup });
          hls.loadSource(`/hls/${stream}/index.m3u8`);
          hls.attachMedia(video);
          player = () => hls.destroy();
        } else if (run === 'dash') {
          const dash = dashjs.MediaPlayer().create();
          dash.initialize(video, `/dash/${stream}/index.mpd`, true);
          player = () => dash.reset();
        } else {
          // WHEP needs the stream live: retry until the tracks are announced.
          let play;
          for (let i = 0; i < 50; i += 1) {
            play = await window.tidecast.offer(receiver, `/whep/${stream}`, '-');
            if (play.status === 201) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          if (play.status !== 201) return { run, error: `WHEP ${play.status}: ${play.error}` };
          await receiver.setRemoteDescription({ type: 'answer', sdp: play.answer });
          resources.push(play.location);
        }
      }
      if (!http && !(await window.tidecast.connected(receiver, 15000))) return { run, error: 'receiver did not connect' };

      // The sink: read the cells of every presented frame.
      const probe = document.createElement('canvas');
      probe.width = W;
      probe.height = H;
      const pctx = probe.getContext('2d', { willReadFrequently: true });
      const delays = [];
      let misreads = 0;
      const started = performance.now();
      await new Promise((resolve) => {
        const onFrame = (now, meta) => {
          const shown = meta.expectedDisplayTime || now;
          pctx.drawImage(video, 0, 0, W, H);
          const row = pctx.getImageData(X0, Y0 + CELL / 2, BITS * CELL, 1).data;
          let t = 0;
          for (let i = 0; i < BITS; i += 1) {
            if (row[(i * CELL + CELL / 2) * 4] > 128) t |= 1 << i;
          }
          const delay = (Math.round(shown) - t + 0x10000) & 0xffff;
          const elapsed = performance.now() - started;
          if (elapsed > WARMUP_MS) {
            if (delay < (http ? 20000 : 5000)) delays.push(delay);
            else misreads += 1;
          }
          if (elapsed > WARMUP_MS + seconds * 1000) resolve();
          else video.requestVideoFrameCallback(onFrame);
        };
        video.requestVideoFrameCallback(onFrame);
      });
      clearInterval(timer);

      // Where the time goes, from both ends' stats.
      const out = { run, frames: delays.length, misreads };
      (await sender.getStats()).forEach((s) => {
        if (s.type === 'outbound-rtp' && s.kind === 'video' && s.framesEncoded) {
          out.encodeMs = (1000 * s.totalEncodeTime) / s.framesEncoded;
          out.framesEncoded = s.framesEncoded;
        }
      });
      (await receiver.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded) {
          out.decodeMs = (1000 * s.totalDecodeTime) / s.framesDecoded;
          out.jitterBufferMs = (1000 * s.jitterBufferDelay) / Math.max(1, s.jitterBufferEmittedCount);
          out.framesDropped = s.framesDropped;
          out.width = s.frameWidth;
          out.height = s.frameHeight;
        }
      });
      out.delays = delays;
      if (player) player();
      for (const location of resources) await window.tidecast.remove(location, '-');
      sender.close();
      receiver.close();
      video.remove();
      return out;
    },
    { run, seconds },
  );
}

const ROUNDS = 3;
const all = Object.fromEntries(runs.map((r) => [r, []]));
for (let round = 0; round < ROUNDS; round += 1) {
  for (const run of runs) {
    const r = await measure(run, seconds / ROUNDS);
    if (r.error || !r.frames) {
      console.error(`${run}: ${r.error || 'no frames'}`);
      await browser.close();
      process.exit(1);
    }
    all[run].push(...r.delays);
    const { delays, ...rest } = r;
    process.stdout.write(JSON.stringify({ round, ...rest, ...percentiles(delays) }) + '\n');
  }
}
await browser.close();
const summary = { frames: Object.fromEntries(runs.map((r) => [r, all[r].length])) };
for (const run of runs) summary[`${run}_ms`] = percentiles(all[run]);
if (all.direct && all.tidecast) {
  summary.added_by_server_p50_ms = summary.tidecast_ms.p50 - summary.direct_ms.p50;
  summary.ratio_p50 = Number((summary.tidecast_ms.p50 / summary.direct_ms.p50).toFixed(2));
}
process.stdout.write(JSON.stringify(summary) + '\n');
