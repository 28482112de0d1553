// Page-side WHIP/WHEP signaling (RFC 9725 and the WHEP draft), shared by the
// browser peers of the end-to-end tests (webrtc.mjs) and the latency
// benchmark (bench/webrtc-latency.mjs). Loaded into the page with
// page.addScriptTag; it defines window.tidecast.
window.tidecast = {
  // POSTs the peer connection's offer to a WHIP or WHEP endpoint. Returns
  // { status, location, notes, answer } on 201, { status, error } otherwise;
  // the caller sets the answer (possibly after editing it).
  async offer(pc, url, token) {
    await pc.setLocalDescription(await pc.createOffer());
    const headers = { 'Content-Type': 'application/sdp' };
    if (token && token !== '-') headers.Authorization = `Bearer ${token}`;
    const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
    if (res.status !== 201) return { status: res.status, error: await res.text() };
    return {
      status: 201,
      location: res.headers.get('Location'),
      notes: res.headers.get('X-Tidecast-Note'),
      answer: await res.text(),
    };
  },

  // Resolves true once the connection is up, false when it fails or after
  // `ms` milliseconds.
  connected(pc, ms) {
    return new Promise((resolve) => {
      const check = () => {
        if (pc.connectionState === 'connected') resolve(true);
        if (pc.connectionState === 'failed') resolve(false);
      };
      pc.addEventListener('connectionstatechange', check);
      setTimeout(() => resolve(pc.connectionState === 'connected'), ms);
      check();
    });
  },

  // DELETEs a session resource; returns the status.
  async remove(location, token) {
    const headers = token && token !== '-' ? { Authorization: `Bearer ${token}` } : {};
    const res = await fetch(location, { method: 'DELETE', headers });
    return res.status;
  },
};
