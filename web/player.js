// <tidecast-player stream="NAME">: Tidecast's embeddable player.
//
// It plays a live stream over the best protocol the browser and the stream
// allow, in order WebRTC (WHEP), LL-HLS (hls.js), LL-DASH (dash.js), or the
// one its `protocol` attribute (or the page's `?protocol=`) forces; a menu
// switches by hand. It shows the live state, the protocol, the live latency
// and the rendition (with a quality menu when the stream has several), and
// reconnects by itself when the stream ends and comes back. A playback
// token (`token` attribute, or the page's `?token=`) goes with every
// request; a protected stream without one says so.
//
// Attributes: stream (required), protocol (auto | webrtc | hls | dash),
// token, server (the playback origin; default: where this script came from).
// The players' libraries are loaded from the same server, on first use.
// State for scripts and tests: the element's data-state (connecting, live,
// offline, denied, error) and data-protocol attributes.

const here = new URL(import.meta.url);
const PROTOCOLS = ['webrtc', 'hls', 'dash'];
const RETRY_MS = 2000;
// How long a protocol whose server says "starting" is waited for before
// the next one is tried.
const STARTING_MS = 10000;

const STYLE = `
:host { display: flex; flex-direction: column; position: relative; background: #000; color: #eee; font: 13px/1.4 system-ui, sans-serif; min-height: 12em; }
video { display: block; flex: 1; min-height: 0; width: 100%; object-fit: contain; background: #000; }
.bar { display: flex; gap: .8em; align-items: center; padding: .35em .6em; background: #111; flex-wrap: wrap; }
.dot { width: .6em; height: .6em; border-radius: 50%; background: #666; display: inline-block; }
:host([data-state="live"]) .dot { background: #e33; }
.msg { position: absolute; inset: 0 0 2.4em 0; display: none; align-items: center; justify-content: center; text-align: center; padding: 1em; background: rgba(0,0,0,.7); }
:host([data-state="offline"]) .msg, :host([data-state="denied"]) .msg, :host([data-state="error"]) .msg, :host([data-state="connecting"]) .msg { display: flex; }
select { background: #222; color: #eee; border: 1px solid #444; border-radius: 3px; }
.seek { position: relative; padding: 0 .6em; background: #111; display: none; }
:host([data-dvr]) .seek { display: block; }
.seek input { width: 100%; margin: .3em 0 0; }
.preview { position: absolute; bottom: 2em; display: none; border: 1px solid #fff; background-repeat: no-repeat; pointer-events: none; }
.preview span { position: absolute; bottom: -1.5em; left: 0; right: 0; text-align: center; text-shadow: 0 0 2px #000; }
.grow { flex: 1; }
`;

function loadScript(path, global) {
  if (window[global]) return Promise.resolve(window[global]);
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = new URL(path, here).href;
    s.onload = () => (window[global] ? resolve(window[global]) : reject(new Error(`${path} did not load`)));
    s.onerror = () => reject(new Error(`${path} did not load`));
    document.head.appendChild(s);
  });
}

// The cues of a WebVTT sprite index (`URL#xywh=x,y,w,h` per cue), with
// their URLs resolved against the index's and carrying `token`.
function parseThumbnails(text, base, token) {
  const seconds = (s) => s.split(':').reduce((acc, v) => acc * 60 + Number(v), 0);
  const cues = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = lines[i].match(/^([\d:.]+) --> ([\d:.]+)/);
    if (!m || i + 1 >= lines.length) continue;
    const [ref, frag] = lines[i + 1].trim().split('#xywh=');
    const xywh = (frag || '').split(',').map(Number);
    if (xywh.length !== 4 || xywh.some((v) => !Number.isFinite(v))) continue;
    const url = new URL(ref, base);
    if (token) url.searchParams.set('token', token);
    cues.push({ from: seconds(m[1]), to: seconds(m[2]), url: url.href, x: xywh[0], y: xywh[1], w: xywh[2], h: xywh[3] });
  }
  return cues;
}

class Denied extends Error {}
class Offline extends Error {}
// The stream is live but not ready for this protocol yet: ask again after
// `seconds` (a WHEP 503 with Retry-After), do not fall back.
class Starting extends Error {
  constructor(message, seconds) {
    super(message);
    this.seconds = seconds;
  }
}

class TidecastPlayer extends HTMLElement {
  static get observedAttributes() {
    return ['stream', 'protocol', 'token'];
  }

  constructor() {
    super();
    const root = this.attachShadow({ mode: 'open' });
    // A constructed style sheet: no inline <style> for a page's CSP to refuse.
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLE);
    root.adoptedStyleSheets = [sheet];
    root.innerHTML = `
      <video playsinline controls muted autoplay></video>
      <div class="msg"></div>
      <div class="seek"><input type="range" min="0" max="1000" value="1000" aria-label="position in the rewind window"><div class="preview"><span></span></div></div>
      <div class="bar">
        <span class="dot"></span><span class="state">connecting</span>
        <span class="latency"></span>
        <span class="grow"></span>
        <label>quality <select class="quality"><option value="auto">auto</option></select></label>
        <label>protocol <select class="protocol">
          <option value="auto">auto</option><option value="webrtc">WebRTC</option>
          <option value="hls">LL-HLS</option><option value="dash">LL-DASH</option>
        </select></label>
      </div>`;
    this.video = root.querySelector('video');
    this.ui = {
      msg: root.querySelector('.msg'),
      state: root.querySelector('.state'),
      latency: root.querySelector('.latency'),
      quality: root.querySelector('.quality'),
      protocol: root.querySelector('.protocol'),
      seek: root.querySelector('.seek input'),
      preview: root.querySelector('.preview'),
    };
    this.ui.seek.addEventListener('input', () => this.seekTo(Number(this.ui.seek.value) / 1000));
    this.ui.seek.addEventListener('pointermove', (e) => this.showPreview(e));
    this.ui.seek.addEventListener('pointerleave', () => (this.ui.preview.style.display = 'none'));
    this.cues = [];
    this.cuesAt = 0;
    this.ui.protocol.addEventListener('change', () => this.setAttribute('protocol', this.ui.protocol.value));
    this.ui.quality.addEventListener('change', () => this.chooseQuality(this.ui.quality.value));
    this.session = null;
    this.generation = 0;
  }

  connectedCallback() {
    this.timer = setInterval(() => this.tick(), 1000);
    this.start();
  }

  disconnectedCallback() {
    clearInterval(this.timer);
    this.generation++;
    this.stopSession();
  }

  attributeChangedCallback(_name, old, value) {
    if (old !== value && this.isConnected && this.timer) this.start();
  }

  get base() {
    return (this.getAttribute('server') || here.origin).replace(/\/$/, '');
  }
  get stream() {
    return this.getAttribute('stream') || '';
  }
  get token() {
    return this.getAttribute('token') || new URLSearchParams(location.search).get('token') || '';
  }
  get forced() {
    const p = this.getAttribute('protocol') || new URLSearchParams(location.search).get('protocol') || 'auto';
    return PROTOCOLS.includes(p) ? p : 'auto';
  }

  setState(state, message = '') {
    this.dataset.state = state;
    this.ui.state.textContent = state;
    this.ui.msg.textContent = message;
  }

  // Protocols to try, best first.
  candidates() {
    if (this.forced !== 'auto') return [this.forced];
    const list = [];
    if (window.RTCPeerConnection) list.push('webrtc');
    if (window.MediaSource || window.ManagedMediaSource) list.push('hls', 'dash');
    else if (this.video.canPlayType('application/vnd.apple.mpegurl')) list.push('hls');
    return list;
  }

  // (Re)starts playback: each protocol in turn, best first. The first that
  // finds the stream offline ends the round: the stream is not live, even
  // where a lesser protocol still answers (an HLS playlist lingers through
  // the reconnect grace), and trying that one next could win the race with
  // the stream's return. An offline stream is tried again every RETRY_MS;
  // a starting one when the server says, for up to STARTING_MS, then the
  // next protocol is tried; a refused token stops with a message.
  async start() {
    const generation = ++this.generation;
    this.stopSession();
    this.ui.protocol.value = this.forced;
    this.setState('connecting', 'Connecting…');
    if (!this.stream) return this.setState('error', 'No stream named.');
    let startingSince = null;
    while (generation === this.generation) {
      let offline = false;
      let starting = null;
      for (const protocol of this.candidates()) {
        if (generation !== this.generation) return;
        try {
          this.session = await this.open(protocol, generation);
          if (generation !== this.generation) return this.stopSession();
          this.dataset.protocol = protocol;
          this.setState('live');
          this.fillQualities();
          return;
        } catch (e) {
          this.stopSession();
          if (e instanceof Denied) {
            const how = this.token ? 'The playback token was refused.' : 'This stream needs a playback token: add ?token=… to the address.';
            return this.setState('denied', how);
          }
          console.warn(`tidecast-player: ${protocol}: ${e.message}`);
          if (e instanceof Offline) {
            offline = true;
            break;
          }
          if (e instanceof Starting && Date.now() - (startingSince ??= Date.now()) < STARTING_MS) {
            starting = e;
            break;
          }
        }
      }
      if (starting) {
        this.setState('connecting', 'The stream is starting…');
        await new Promise((r) => setTimeout(r, starting.seconds * 1000));
        continue;
      }
      this.setState(offline ? 'offline' : 'error', offline ? 'The stream is offline; waiting for it…' : 'This browser cannot play the stream.');
      await new Promise((r) => setTimeout(r, RETRY_MS));
    }
  }

  // Called by a session when its playback broke: start again.
  lost(generation) {
    if (generation === this.generation) this.start();
  }

  stopSession() {
    const s = this.session;
    this.session = null;
    this.stuckSince = null;
    if (s) s.stop();
    this.video.removeAttribute('src');
    this.video.srcObject = null;
  }

  url(path) {
    const u = new URL(`${this.base}${path}`);
    if (this.token) u.searchParams.set('token', this.token);
    return u.href;
  }

  async check(path) {
    const r = await fetch(this.url(path), { cache: 'no-store' });
    if (r.status === 401 || r.status === 403) throw new Denied(await r.text());
    if (r.status === 404) throw new Offline('not live');
    if (!r.ok) throw new Error(`${path}: ${r.status}`);
  }

  async open(protocol, generation) {
    const name = encodeURIComponent(this.stream);
    if (protocol === 'webrtc') return this.openWhep(`/whep/${name}`, generation);
    if (protocol === 'hls') {
      await this.check(`/hls/${name}/index.m3u8`);
      return this.openHls(this.url(`/hls/${name}/index.m3u8`), generation);
    }
    await this.check(`/dash/${name}/index.mpd`);
    return this.openDash(this.url(`/dash/${name}/index.mpd`), generation);
  }

  async openWhep(path, generation) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    const media = new MediaStream();
    pc.ontrack = (e) => media.addTrack(e.track);
    await pc.setLocalDescription(await pc.createOffer());
    const headers = { 'Content-Type': 'application/sdp' };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    const res = await fetch(`${this.base}${path}`, { method: 'POST', headers, body: pc.localDescription.sdp });
    if (res.status === 401 || res.status === 403) {
      pc.close();
      throw new Denied(await res.text());
    }
    if (res.status === 404) {
      pc.close();
      throw new Offline('not live');
    }
    const retry = Number(res.headers.get('Retry-After'));
    if (res.status === 503 && retry > 0) {
      pc.close();
      throw new Starting(await res.text(), Math.min(retry, 10));
    }
    if (res.status !== 201) {
      pc.close();
      throw new Error(`WHEP: ${res.status} ${await res.text()}`);
    }
    const location = new URL(res.headers.get('Location') || path, this.base).href;
    await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
    const up = await new Promise((resolve) => {
      const check = () => {
        if (pc.connectionState === 'connected') resolve(true);
        if (pc.connectionState === 'failed') resolve(false);
      };
      pc.addEventListener('connectionstatechange', check);
      setTimeout(() => resolve(pc.connectionState === 'connected'), 8000);
    });
    const end = () => {
      pc.close();
      fetch(location, { method: 'DELETE', headers: this.token ? { Authorization: `Bearer ${this.token}` } : {} }).catch(() => {});
    };
    if (!up) {
      end();
      throw new Error('WebRTC did not connect');
    }
    this.video.srcObject = media;
    this.video.play().catch(() => {});
    pc.addEventListener('connectionstatechange', () => {
      if (['failed', 'closed', 'disconnected'].includes(pc.connectionState)) this.lost(generation);
    });
    return {
      stop: end,
      async latency() {
        const stats = await pc.getStats();
        let ms = null;
        stats.forEach((s) => {
          if (s.type === 'inbound-rtp' && s.kind === 'video' && s.jitterBufferEmittedCount > 0) {
            ms = (s.jitterBufferDelay / s.jitterBufferEmittedCount) * 1000;
          }
          if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime) ms = (ms || 0) + s.currentRoundTripTime * 500;
        });
        return ms === null ? null : ms / 1000;
      },
      qualities: () => [],
      rendition: () => (this.video.videoHeight ? `${this.video.videoHeight}p` : ''),
      choose() {},
    };
  }

  async openHls(src, generation) {
    const Hls = await loadScript('player/hls.min.js', 'Hls');
    if (!Hls.isSupported()) {
      if (this.video.canPlayType('application/vnd.apple.mpegurl')) {
        this.video.src = src;
        this.video.play().catch(() => {});
        return { stop() {}, latency: async () => null, qualities: () => [], rendition: () => '', choose() {} };
      }
      throw new Error('no MediaSource for hls.js');
    }
    const hls = new Hls({ lowLatencyMode: true });
    const live = await new Promise((resolve, reject) => {
      // An ended stream's playlists linger with an end tag: not live.
      hls.on(Hls.Events.LEVEL_LOADED, (_e, d) => resolve(d.details.live));
      hls.on(Hls.Events.ERROR, (_e, d) => d.fatal && reject(new Error(`hls.js: ${d.details}`)));
      hls.loadSource(src);
      hls.attachMedia(this.video);
    }).catch((e) => {
      hls.destroy();
      throw e;
    });
    if (!live) {
      hls.destroy();
      throw new Offline('the stream has ended');
    }
    hls.on(Hls.Events.ERROR, (_e, d) => {
      if (d.fatal) this.lost(generation);
    });
    this.video.play().catch(() => {});
    return {
      stop: () => hls.destroy(),
      latency: async () => (Number.isFinite(hls.latency) ? hls.latency : null),
      qualities: () => hls.levels.map((l, i) => ({ value: String(i), label: l.height ? `${l.height}p` : `${Math.round(l.bitrate / 1000)}k` })),
      rendition: () => {
        const l = hls.levels[hls.currentLevel];
        return l && l.height ? `${l.height}p` : '';
      },
      choose: (v) => (hls.currentLevel = v === 'auto' ? -1 : Number(v)),
    };
  }

  async openDash(src, generation) {
    const dashjs = await loadScript('player/dash.mediaplayer.min.js', 'dashjs');
    const player = dashjs.MediaPlayer().create();
    await new Promise((resolve, reject) => {
      player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, resolve);
      player.on(dashjs.MediaPlayer.events.ERROR, (e) => reject(new Error(`dash.js: ${JSON.stringify(e.error || e).slice(0, 200)}`)));
      player.initialize(this.video, src, true);
    }).catch((e) => {
      player.destroy();
      throw e;
    });
    if (!player.isDynamic()) {
      // An ended stream's MPD lingers as a static one: not live.
      player.destroy();
      throw new Offline('the stream has ended');
    }
    player.on(dashjs.MediaPlayer.events.ERROR, () => this.lost(generation));
    player.on(dashjs.MediaPlayer.events.PLAYBACK_ENDED, () => this.lost(generation));
    const reps = () => player.getRepresentationsByType('video');
    return {
      stop: () => player.destroy(),
      latency: async () => {
        const l = player.getCurrentLiveLatency();
        return Number.isFinite(l) && l > 0 ? l : null;
      },
      qualities: () => reps().map((r, i) => ({ value: String(i), label: r.height ? `${r.height}p` : r.id })),
      rendition: () => (this.video.videoHeight ? `${this.video.videoHeight}p` : ''),
      choose: (v) => {
        const auto = v === 'auto';
        player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: auto } } } });
        if (!auto) player.setRepresentationForTypeByIndex('video', Number(v), true);
      },
    };
  }

  fillQualities() {
    const list = this.session ? this.session.qualities() : [];
    const select = this.ui.quality;
    select.replaceChildren(new Option('auto', 'auto'), ...list.map((q) => new Option(q.label, q.value)));
    select.parentElement.style.display = list.length > 1 ? '' : 'none';
  }

  chooseQuality(v) {
    if (this.session) this.session.choose(v);
  }

  // The window the player can seek in (seconds of video time), or null.
  window() {
    const r = this.video.seekable;
    if (!r || !r.length || this.dataset.protocol === 'webrtc') return null;
    const start = r.start(0);
    const end = r.end(r.length - 1);
    return end - start >= 5 ? { start, end } : null;
  }

  seekTo(fraction) {
    const w = this.window();
    if (w) this.video.currentTime = w.start + fraction * (w.end - w.start);
  }

  // The seek bar follows playback; the sprite sheet's cues (the window's
  // thumbnails, /{stream}.thumbvtt) are fetched again every 10 s.
  async updateSeek() {
    const w = this.window();
    if (!w) {
      delete this.dataset.dvr;
      return;
    }
    this.dataset.dvr = `${Math.round(w.end - w.start)}`;
    if (document.activeElement !== this && !this.ui.seek.matches(':active')) {
      this.ui.seek.value = String(Math.round(((this.video.currentTime - w.start) / (w.end - w.start)) * 1000));
    }
    if (Date.now() - this.cuesAt < 10000) return;
    this.cuesAt = Date.now();
    try {
      const vttUrl = this.url(`/${encodeURIComponent(this.stream)}.thumbvtt`);
      const r = await fetch(vttUrl, { cache: 'no-store' });
      if (r.ok) this.cues = parseThumbnails(await r.text(), vttUrl, this.token);
    } catch {
      // No thumbnails (a node without a decoder, audio only): no previews.
    }
  }

  showPreview(e) {
    const p = this.ui.preview;
    if (!this.cues.length) return;
    const box = this.ui.seek.getBoundingClientRect();
    const f = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
    const first = this.cues[0].from;
    const t = first + f * (this.cues[this.cues.length - 1].to - first);
    const cue = this.cues.find((c) => t >= c.from && t < c.to) || this.cues[this.cues.length - 1];
    p.style.width = `${cue.w}px`;
    p.style.height = `${cue.h}px`;
    p.style.backgroundImage = `url("${cue.url}")`;
    p.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
    p.style.left = `${Math.min(box.width - cue.w, Math.max(0, e.clientX - box.left - cue.w / 2))}px`;
    const w = this.window();
    p.firstElementChild.textContent = w ? `-${Math.round((1 - f) * (w.end - w.start))} s` : '';
    p.style.display = 'block';
  }

  async tick() {
    const s = this.session;
    if (!s) {
      this.ui.latency.textContent = '';
      delete this.dataset.dvr;
      return;
    }
    this.updateSeek();
    // Playback that stopped moving (the stream ended, the connection went
    // quiet) starts over; a viewer's own pause does not count.
    const t = this.video.currentTime;
    if (this.video.paused && !this.video.ended) this.stuckSince = null;
    else if (t !== this.lastTime) this.stuckSince = null;
    else if (this.stuckSince == null) this.stuckSince = Date.now();
    else if (Date.now() - this.stuckSince > 6000 || this.video.ended) {
      this.stuckSince = null;
      this.start();
      return;
    }
    this.lastTime = t;
    const latency = await s.latency().catch(() => null);
    const rendition = s.rendition();
    const name = { webrtc: 'WebRTC', hls: 'LL-HLS', dash: 'LL-DASH' }[this.dataset.protocol] || '';
    // WebRTC's figure is what the browser holds back (jitter buffer and
    // half the round trip), not the whole glass-to-glass delay.
    const amount = latency === null ? '' : latency < 1 ? `${Math.round(latency * 1000)} ms` : `${latency.toFixed(1)} s`;
    const said = latency === null ? '' : this.dataset.protocol === 'webrtc' ? `${amount} buffered` : `${amount} behind live`;
    this.ui.latency.textContent = [name, rendition, said]
      .filter(Boolean)
      .join(' · ');
    this.dataset.latency = latency === null ? '' : latency.toFixed(3);
  }
}

if (!customElements.get('tidecast-player')) customElements.define('tidecast-player', TidecastPlayer);
