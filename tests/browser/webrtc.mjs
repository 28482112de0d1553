// WHIP publisher and WHEP player in headless Chromium (Debian's
// /usr/bin/chromium), for Tidecast's end-to-end tests.
//
//   node webrtc.mjs caps <origin>
//   node webrtc.mjs publish <origin> <stream> <token|-> <seconds> <codec> [--tcp]
//   node webrtc.mjs play <origin> <stream> <token|-> <seconds>
//
// `origin` is the server's HTTP origin (the page is loaded from it, so it is
// a secure context and same-origin with the WHIP/WHEP endpoints). Prints one
// JSON object on stdout. The publisher uses Chromium's fake camera and
// microphone. `publish` runs until killed when seconds is 0 (the test stops
// it), after printing a `connected` line.
import { launch, pageAt } from './chromium.mjs';

const [mode, origin, stream, token, seconds, codec, ...flags] = process.argv.slice(2);

// The test stops a publisher with SIGTERM; it then reports and DELETEs.
const browser = await launch(['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'], {
  handleSIGTERM: false,
});
const page = await pageAt(browser, origin, '/tidecast-webrtc-test');
await page.addScriptTag({ path: new URL('./signaling.js', import.meta.url).pathname });

async function finish(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
  await browser.close();
  // A publisher's hold timer would keep node alive.
  process.exit(0);
}

if (mode === 'caps') {
  const caps = await page.evaluate(() => ({
    send: RTCRtpSender.getCapabilities('video').codecs.map((c) => c.mimeType),
    recv: RTCRtpReceiver.getCapabilities('video').codecs.map((c) => c.mimeType),
  }));
  await finish(caps);
} else if (mode === 'publish') {
  const tcpOnly = flags.includes('--tcp');
  const result = await page.evaluate(
    async ({ stream, token, codec, tcpOnly }) => {
      const pc = new RTCPeerConnection();
      window.pc = pc;
      const media = await navigator.mediaDevices.getUserMedia({
        video: { width: 320, height: 240, frameRate: 30 },
        audio: true,
      });
      for (const track of media.getTracks()) {
        const t = pc.addTransceiver(track, { direction: 'sendonly' });
        if (track.kind === 'video' && codec !== 'any') {
          const prefs = RTCRtpSender.getCapabilities('video').codecs.filter(
            (c) => c.mimeType.toLowerCase() === `video/${codec}`,
          );
          if (prefs.length === 0) return { error: `chromium cannot send ${codec}` };
          t.setCodecPreferences(prefs);
        }
      }
      const offered = await window.tidecast.offer(pc, `/whip/${stream}`, token);
      if (offered.status !== 201) return offered;
      const { location } = offered;
      let answer = offered.answer;
      if (tcpOnly) {
        // Keep only the server's ICE-TCP candidates, as if UDP were blocked.
        answer = answer
          .split('\r\n')
          .filter((l) => !(l.startsWith('a=candidate:') && / udp /i.test(l)))
          .join('\r\n');
      }
      await pc.setRemoteDescription({ type: 'answer', sdp: answer });
      const ok = await window.tidecast.connected(pc, 20000);
      window.whip = { location, token };
      return { status: 201, location, connected: ok, answerSdp: answer };
    },
    { stream, token, codec, tcpOnly },
  );
  if (!result.connected) {
    await finish(result);
    process.exit(0);
  }
  process.stdout.write(JSON.stringify({ connected: true, location: result.location }) + '\n');
  const hold = Number(seconds) > 0 ? Number(seconds) * 1000 : 24 * 3600 * 1000;
  const stop = new Promise((resolve) => {
    setTimeout(resolve, hold);
    process.on('SIGTERM', resolve);
  });
  await stop;
  const stats = await page.evaluate(async () => {
    const out = { framesEncoded: 0, packetsSent: 0, codec: null, candidateType: null, protocol: null };
    const report = await window.pc.getStats();
    report.forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        out.framesEncoded = s.framesEncoded;
        out.packetsSent = s.packetsSent;
        const c = report.get(s.codecId);
        out.codec = c && c.mimeType;
      }
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded' && !out.protocol) {
        const remote = report.get(s.remoteCandidateId);
        out.protocol = remote && remote.protocol;
        out.candidateType = remote && remote.candidateType;
      }
    });
    // The pair in use, as the transport names it (a busy machine may not
    // have flagged any pair nominated yet when the stats are read).
    report.forEach((s) => {
      const pair = s.type === 'transport' && s.selectedCandidatePairId && report.get(s.selectedCandidatePairId);
      const remote = pair && report.get(pair.remoteCandidateId);
      if (remote) {
        out.protocol = remote.protocol;
        out.candidateType = remote.candidateType;
      }
    });
    out.deleteStatus = await window.tidecast.remove(window.whip.location, window.whip.token);
    return out;
  });
  await finish(stats);
} else if (mode === 'play') {
  const result = await page.evaluate(
    async ({ stream, token, seconds }) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.addTransceiver('audio', { direction: 'recvonly' });
      const video = document.createElement('video');
      video.muted = true;
      video.autoplay = true;
      document.body.appendChild(video);
      // The received audio, measured through WebAudio: headless Chromium
      // has no output device, so the inbound-rtp audio level stays 0.
      let analyser = null;
      pc.ontrack = (e) => {
        video.srcObject = e.streams[0] || new MediaStream([e.track]);
        if (e.track.kind === 'audio') {
          const ctx = new AudioContext();
          analyser = ctx.createAnalyser();
          ctx.createMediaStreamSource(new MediaStream([e.track])).connect(analyser);
        }
      };
      const started = performance.now();
      const offered = await window.tidecast.offer(pc, `/whep/${stream}`, token);
      if (offered.status !== 201) return offered;
      const { location, notes } = offered;
      await pc.setRemoteDescription({ type: 'answer', sdp: offered.answer });
      const out = { status: 201, location, notes, framesDecoded: 0, audioPackets: 0, firstFrameMs: null };
      const deadline = started + Number(seconds) * 1000;
      while (performance.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        const report = await pc.getStats();
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video') {
            out.framesDecoded = s.framesDecoded || 0;
            out.width = s.frameWidth;
            out.height = s.frameHeight;
            out.nackCount = s.nackCount;
            out.pliCount = s.pliCount;
            const c = report.get(s.codecId);
            out.codec = c && c.mimeType;
          }
          if (s.type === 'inbound-rtp' && s.kind === 'audio') {
            out.audioPackets = s.packetsReceived || 0;
            out.audioEnergy = s.totalAudioEnergy || 0;
            out.audioLevel = Math.max(out.audioLevel || 0, s.audioLevel || 0);
            const c = report.get(s.codecId);
            out.audioCodec = c && c.mimeType;
          }
        });
        if (analyser) {
          const buf = new Float32Array(analyser.fftSize);
          analyser.getFloatTimeDomainData(buf);
          const rms = Math.sqrt(buf.reduce((a, v) => a + v * v, 0) / buf.length);
          out.audioRms = Math.max(out.audioRms || 0, rms);
        }
        if (out.framesDecoded > 0 && out.firstFrameMs === null) out.firstFrameMs = performance.now() - started;
        const heard = out.audioPackets >= 50 && (out.audioEnergy > 0 || out.audioRms > 0.01);
        if (out.framesDecoded >= 30 && (heard || (notes && out.audioPackets === 0 && performance.now() - started > 5000))) break;
      }
      out.connectionState = pc.connectionState;
      out.deleteStatus = await window.tidecast.remove(location, token);
      pc.close();
      return out;
    },
    { stream, token, seconds },
  );
  await finish(result);
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
