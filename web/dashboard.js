// Tidecast's operator dashboard, on the admin listener (`/`). It uses the
// public admin API only (`/api/v1/...`), with the API key it was signed in
// with: an admin key sees the node, a tenant key its tenant, exactly as the
// API decides. The key lives in sessionStorage (this tab only, never a
// cookie) and is sent to this origin alone.

const API = '/api/v1';
const REFRESH_MS = 2000;
const HISTORY = 60;

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
};
const bits = (bps) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`);
const mib = (b) => (b >= 1048576 ? `${(b / 1048576).toFixed(1)} MiB` : `${Math.round(b / 1024)} KiB`);

class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

let key = sessionStorage.getItem('tidecast-key');
let role = null;
const history = { cpu: [], memory: [], out: [] };

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(`${API}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 204) return null;
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError(r.status, json && (json.detail || json.title));
  return json;
}

function say(text, bad = false) {
  const s = $('#status');
  s.textContent = text;
  s.className = bad ? 'bad' : '';
}

function showSecret(what, secret) {
  const box = $('#secret');
  box.replaceChildren(
    el('strong', {}, `${what} (shown once; copy it now): `),
    el('code', { id: 'secret-value' }, secret),
    el('button', { onclick: () => box.replaceChildren() }, 'Done'),
  );
}

async function signIn(candidate) {
  key = candidate;
  try {
    await api('GET', '/streams?limit=1');
  } catch (e) {
    key = null;
    $('#signin-error').textContent = e.status === 401 ? 'That key was not accepted.' : `Cannot sign in: ${e.message}`;
    return;
  }
  sessionStorage.setItem('tidecast-key', key);
  try {
    await api('GET', '/load');
    role = 'admin';
  } catch {
    role = 'tenant';
  }
  document.body.dataset.role = role;
  $('#who').textContent = role === 'admin' ? 'admin key' : 'tenant key';
  $('#signin').hidden = true;
  $('#app').hidden = false;
  $('#new-stream-tenant').hidden = role !== 'admin';
  $('#node').hidden = role !== 'admin';
  refresh();
}

function signOut() {
  sessionStorage.removeItem('tidecast-key');
  key = null;
  location.reload();
}

async function streamRow(s) {
  const [live, keys] = await Promise.all([
    api('GET', `/streams/${encodeURIComponent(s.name)}/live`).catch(() => null),
    api('GET', `/streams/${encodeURIComponent(s.name)}/keys`).catch(() => ({ items: [] })),
  ]);
  const isLive = !!(live && live.live);
  const viewers = live ? Object.entries(live.viewers || {}).filter(([, n]) => n > 0).map(([p, n]) => `${p} ${n}`).join(', ') : '';
  const tracks = (live && live.tracks) || [];
  const trackText = tracks
    .map((t) => (t.kind === 'video' ? `${t.codec} ${t.width || '?'}x${t.height || '?'}` : `${t.codec} ${t.sample_rate ? `${t.sample_rate / 1000}k` : ''}${t.channels ? ` ${t.channels}ch` : ''}`))
    .join(' · ');
  const name = encodeURIComponent(s.name);
  const keyCell = el(
    'td',
    {},
    ...keys.items.map((k) =>
      el(
        'div',
        { class: 'key', 'data-key': k.id },
        el('code', {}, k.id),
        el('button', { onclick: () => act(() => api('DELETE', `/streams/${name}/keys/${encodeURIComponent(k.id)}`), 'Key revoked') }, 'Revoke'),
      ),
    ),
  );
  return el(
    'tr',
    { 'data-stream': s.name, 'data-live': String(isLive) },
    el('td', {}, el('strong', {}, s.name), s.tenant && role === 'admin' ? el('div', { class: 'dim' }, s.tenant) : null),
    el('td', {}, el('span', { class: isLive ? 'badge live' : 'badge' }, isLive ? 'live' : 'offline')),
    el('td', {}, isLive ? bits(live.bitrate_in_bps) : ''),
    el('td', { class: 'tracks' }, trackText),
    el('td', { class: 'viewers' }, viewers),
    keyCell,
    el(
      'td',
      {},
      el('button', { class: 'new-key', onclick: () => act(async () => showSecret(`Stream key for ${s.name}`, (await api('POST', `/streams/${name}/keys`, {})).key)) }, 'New key'),
      el('button', { onclick: () => act(async () => showSecret(`Stream key for ${s.name} (the others stop working)`, (await api('POST', `/streams/${name}/keys`, { retire_others_after_secs: 0 })).key)) }, 'Rotate'),
      el('button', { onclick: () => act(async () => showSecret(`Playback token for ${s.name} (1 hour)`, (await api('POST', `/streams/${name}/tokens`, {})).token)) }, 'Token'),
      el('button', { class: 'danger', onclick: () => confirm(`Delete stream ${s.name}?`) && act(() => api('DELETE', `/streams/${name}`), 'Stream deleted') }, 'Delete'),
    ),
  );
}

function table(id, head, rows) {
  $(id).replaceChildren(el('tr', {}, ...head.map((h) => el('th', {}, h))), ...rows);
}

async function act(f, done) {
  try {
    await f();
    if (done) say(done);
    refresh();
  } catch (e) {
    say(e.message, true);
  }
}

function graph(canvas, values, max, label) {
  const c = $(canvas);
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  g.strokeStyle = '#4aa3ff';
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * c.width;
    const y = c.height - (Math.min(v, max) / max) * (c.height - 2) - 1;
    if (i === 0) g.moveTo(x, y);
    else g.lineTo(x, y);
  });
  g.stroke();
  c.nextElementSibling.textContent = label;
}

let refreshing = false;
async function refresh() {
  if (!key || refreshing) return;
  refreshing = true;
  try {
    const streams = await api('GET', '/streams?limit=200');
    table('#streams-table', ['stream', 'state', 'ingest', 'tracks', 'viewers', 'keys', ''], await Promise.all(streams.items.map(streamRow)));
    const sessions = await api('GET', '/sessions?limit=200');
    table(
      '#sessions-table',
      ['session', 'stream', 'protocol', 'role', 'address', 'sent', ''],
      sessions.items.map((s) =>
        el(
          'tr',
          { 'data-session': s.id, 'data-protocol': s.protocol },
          el('td', {}, el('code', {}, s.id)),
          el('td', {}, s.stream),
          el('td', {}, s.protocol),
          el('td', {}, s.role),
          el('td', {}, s.address),
          el('td', {}, mib(s.bytes_out)),
          el('td', {}, el('button', { class: 'kick', onclick: () => act(() => api('DELETE', `/sessions/${encodeURIComponent(s.id)}`), `Kicked ${s.id}`) }, 'Kick')),
        ),
      ),
    );
    const pushes = await api('GET', '/pushes?limit=200').catch(() => ({ items: [] }));
    table(
      '#pushes-table',
      ['push', 'stream', 'target', 'state', 'sent'],
      pushes.items.map((p) => el('tr', {}, el('td', {}, String(p.id)), el('td', {}, p.stream), el('td', {}, p.target), el('td', {}, p.state), el('td', {}, mib(p.bytes)))),
    );
    const triggers = await api('GET', '/triggers?limit=200').catch(() => ({ items: [] }));
    table(
      '#triggers-table',
      ['trigger', 'url', 'blocking'],
      triggers.items.map((t) => el('tr', {}, el('td', {}, t.trigger), el('td', {}, t.url), el('td', {}, t.blocking ? 'yes' : 'no'))),
    );
    if (role === 'admin') {
      const load = await api('GET', '/load');
      const push = (list, v) => {
        list.push(v);
        if (list.length > HISTORY) list.shift();
      };
      push(history.cpu, load.cpu.process);
      push(history.memory, load.memory.process_rss_bytes);
      push(history.out, load.bandwidth_out_bps);
      graph('#cpu', history.cpu, Math.max(1, load.cpu.cores || 1), `CPU ${(load.cpu.process * 100).toFixed(0)} % of a core`);
      graph('#memory', history.memory, Math.max(...history.memory, 1), `memory ${mib(load.memory.process_rss_bytes)}`);
      graph('#out', history.out, Math.max(...history.out, 1e6), `out ${bits(load.bandwidth_out_bps)}`);
      $('#viewers').textContent = `${load.streams} live streams, ${load.viewers} viewers`;
    }
    say(`updated ${new Date().toLocaleTimeString()}`);
  } catch (e) {
    if (e.status === 401) return signOut();
    say(e.message, true);
  } finally {
    refreshing = false;
  }
}

$('#signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  signIn($('#key').value.trim());
});
$('#signout').addEventListener('click', signOut);
$('#new-stream').addEventListener('submit', (e) => {
  e.preventDefault();
  const body = { name: $('#new-stream-name').value.trim() };
  const tenant = $('#new-stream-tenant').value.trim();
  if (role === 'admin' && tenant) body.tenant = tenant;
  act(async () => {
    await api('POST', '/streams', body);
    $('#new-stream-name').value = '';
  }, `Stream ${body.name} created`);
});
setInterval(refresh, REFRESH_MS);
if (key) signIn(key);
