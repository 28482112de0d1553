//! One WebRTC peer: the task that owns its `str0m::Rtc` and drives it.
//!
//! Both roles share this loop (network input, timers, trickle candidates,
//! close requests, stats); only what happens to media differs: a publisher's
//! samples go through the [`Assembler`] into the stream, a viewer's packets
//! come from the stream's shared [`Playout`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use str0m::format::Codec as RtpCodec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::Receive;
use str0m::rtp::{RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tidecast_media::{Codec, Event as MediaEvent, Subscriber};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::assemble::{Assembler, Sample};
use super::net::{Datagram, Net};
use super::playout::{Playout, RtpFrame};
use super::{SessionInfo, ViewerHooks};
use crate::ingest::Delivery;

/// Why a session ended, as the log and the API say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent DELETE.
    Deleted,
    /// An operator kicked it (or the publisher was taken over).
    Kicked,
    /// No connectivity check ever arrived.
    NoCandidatePair {
        /// Seconds waited.
        after_secs: u64,
    },
    /// ICE worked but DTLS did not complete.
    DtlsTimeout {
        /// Seconds waited.
        after_secs: u64,
    },
    /// DTLS failed.
    DtlsFailed(String),
    /// ICE consent was lost (the peer went away without DELETE).
    Disconnected,
    /// The stream ended (viewers) or refused the publisher.
    StreamEnded,
    /// The server is shutting down.
    Shutdown,
    /// Another error inside the WebRTC stack.
    Error(String),
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Deleted => write!(f, "closed by the client (DELETE)"),
            EndReason::Kicked => write!(f, "closed by the server (kicked)"),
            EndReason::NoCandidatePair { after_secs } => write!(
                f,
                "ICE failed: no candidate pair: no connectivity check reached the server in {after_secs} s (is the WebRTC UDP port, or the ICE-TCP port, reachable from the client?)"
            ),
            EndReason::DtlsTimeout { after_secs } => {
                write!(f, "DTLS failed: ICE connected but the DTLS handshake did not complete in {after_secs} s")
            }
            EndReason::DtlsFailed(e) => write!(f, "DTLS failed: {e}"),
            EndReason::Disconnected => write!(f, "ICE disconnected: the peer stopped answering (consent lost)"),
            EndReason::StreamEnded => write!(f, "the stream ended"),
            EndReason::Shutdown => write!(f, "server shutting down"),
            EndReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Requests a session task takes besides network input.
#[derive(Debug)]
pub(crate) enum Control {
    /// Trickled remote candidates.
    Candidates(Vec<Candidate>),
    /// End the session.
    Close(EndReason),
}

/// What a viewer needs to send one kind of media.
#[derive(Debug, Clone, Copy)]
struct Tx {
    ssrc: Ssrc,
    pt: Pt,
    seq: u64,
}

pub(crate) struct PublishRole {
    /// The stream and the publisher's admitted session (bytes in, kicks).
    pub delivery: crate::ingest::Deliverer,
    pub assembler: Assembler,
    pub keyframes: mpsc::Receiver<()>,
    pub keyframe_interval: Duration,
    pub video_mid: Option<Mid>,
    pub last_request: Option<Instant>,
}

/// Packets str0m keeps per sender for NACK resends, and for how long.
const RTX_PACKETS: usize = 1024;
const RTX_AGE: Duration = Duration::from_secs(3);

/// What a viewer's NACK resend caches hold, as the node's ledger sees it
/// (holder `whep-rtx`): the payloads sent in the last [`RTX_AGE`], at most
/// [`RTX_PACKETS`] per sender. The payloads are shared with the playout's
/// ring while it still has them, so this is an upper bound of what the
/// caches alone keep alive.
pub(crate) struct RtxWindow {
    sent: [std::collections::VecDeque<(Instant, usize)>; 2],
    bytes: usize,
    gauge: tidecast_media::Gauge,
}

impl RtxWindow {
    pub fn new(gauge: tidecast_media::Gauge) -> RtxWindow {
        RtxWindow { sent: Default::default(), bytes: 0, gauge }
    }

    /// Records a packet of `len` payload bytes sent on the video (or audio) sender.
    fn record(&mut self, video: bool, now: Instant, len: usize) {
        self.sent[usize::from(video)].push_back((now, len));
        self.bytes += len;
        for (i, q) in self.sent.iter_mut().enumerate() {
            let cap = if i == usize::from(video) { RTX_PACKETS } else { usize::MAX };
            while q.len() > cap || q.front().is_some_and(|(at, _)| now.duration_since(*at) > RTX_AGE) {
                if let Some((_, n)) = q.pop_front() {
                    self.bytes -= n;
                }
            }
        }
    }

    fn publish(&self) {
        self.gauge.set(self.bytes);
    }
}

pub(crate) struct PlayRole {
    pub playout: Arc<Playout>,
    pub rtx: RtxWindow,
    pub hooks: ViewerHooks,
    pub upstream_keyframe: Option<mpsc::Sender<()>>,
    pub profile: Option<(u8, u8)>,
    /// The m-lines of the accepted offer.
    pub mids: Vec<Mid>,
    video: Option<Tx>,
    audio: Option<Tx>,
    live: Option<Subscriber<RtpFrame>>,
    /// Frames this viewer's jumps have passed over, as counted so far.
    skipped: u64,
    need_key: bool,
}

impl PlayRole {
    pub fn new(
        playout: Arc<Playout>,
        rtx: RtxWindow,
        hooks: ViewerHooks,
        upstream_keyframe: Option<mpsc::Sender<()>>,
        profile: Option<(u8, u8)>,
        mids: Vec<Mid>,
    ) -> PlayRole {
        PlayRole {
            playout,
            rtx,
            hooks,
            upstream_keyframe,
            profile,
            mids,
            video: None,
            audio: None,
            live: None,
            skipped: 0,
            need_key: true,
        }
    }
}

pub(crate) enum Role {
    Publish(Box<PublishRole>),
    Play(Box<PlayRole>),
}

/// What the loop needs besides the `Rtc` and its role.
pub(crate) struct Ctx {
    pub id: u64,
    pub net: Arc<Net>,
    pub inbox: mpsc::Receiver<Datagram>,
    pub control: mpsc::Receiver<Control>,
    pub info: Arc<Mutex<SessionInfo>>,
    pub ice_timeout: Duration,
    pub shutdown: CancellationToken,
}

#[derive(Default)]
struct Progress {
    ice_connected: bool,
    connected: bool,
    stun_seen: bool,
}

/// Drives one peer until it ends; returns why.
pub(crate) async fn run(mut rtc: Rtc, mut role: Role, mut ctx: Ctx) -> EndReason {
    let start = Instant::now();
    let mut p = Progress::default();
    loop {
        let deadline = match drain(&mut rtc, &mut role, &ctx, &mut p, start) {
            Ok(d) => d,
            Err(reason) => return reason,
        };
        if !p.connected && start.elapsed() >= ctx.ice_timeout {
            let after_secs = ctx.ice_timeout.as_secs();
            return if p.ice_connected || p.stun_seen {
                EndReason::DtlsTimeout { after_secs }
            } else {
                EndReason::NoCandidatePair { after_secs }
            };
        }
        let mut wake = deadline;
        if !p.connected {
            wake = wake.min(start + ctx.ice_timeout);
        }
        if let Role::Publish(pb) = &role {
            if p.connected {
                wake = wake.min(pb.last_request.map_or(Instant::now(), |t| t + pb.keyframe_interval));
            }
        }
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake.max(Instant::now())));
        let woke = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => Wake::Stop(EndReason::Shutdown),
            c = ctx.control.recv() => match c {
                Some(Control::Close(reason)) => Wake::Stop(reason),
                None => Wake::Stop(EndReason::Shutdown),
                Some(Control::Candidates(cands)) => Wake::Candidates(cands),
            },
            d = ctx.inbox.recv() => match d {
                Some(d) => Wake::Datagram(d),
                None => Wake::Stop(EndReason::Shutdown),
            },
            r = role_wait(&mut role, p.connected) => Wake::Role(r),
            _ = sleep => Wake::Timer,
        };
        let input = match woke {
            Wake::Stop(reason) => return reason,
            Wake::Candidates(cands) => {
                for c in cands {
                    rtc.add_remote_candidate(c);
                    if let Err(r) = drain(&mut rtc, &mut role, &ctx, &mut p, start) {
                        return r;
                    }
                }
                continue;
            }
            Wake::Datagram(d) => {
                p.stun_seen |= super::stun::is_stun(&d.data);
                let Ok(contents) = d.data.as_slice().try_into() else { continue };
                let input = Input::Receive(
                    Instant::now(),
                    Receive { proto: d.proto, source: d.source, destination: d.destination, contents },
                );
                if let Err(e) = rtc.handle_input(input) {
                    return classify(e);
                }
                continue;
            }
            Wake::Role(RoleWake::Kicked) => return EndReason::Kicked,
            Wake::Role(RoleWake::KeyframeAsked(None)) => return EndReason::StreamEnded,
            Wake::Role(RoleWake::KeyframeAsked(Some(()))) => {
                if let Role::Publish(pb) = &mut role {
                    request_keyframe(&mut rtc, pb);
                }
                continue;
            }
            Wake::Role(RoleWake::Frame(ev)) => {
                let Role::Play(play) = &mut role else { continue };
                match ev {
                    Some(MediaEvent::Frame(frame)) => {
                        if let Err(e) = send_frame(&mut rtc, play, &frame, &ctx) {
                            return e;
                        }
                    }
                    Some(MediaEvent::Discontinuity) => {
                        // Either the source's timeline broke or this viewer
                        // fell out of the ring and jumped to the newest keyframe.
                        let skipped = play.live.as_ref().map_or(0, |l| l.skipped());
                        if skipped > play.skipped {
                            debug!(
                                session = ctx.id,
                                skipped = skipped - play.skipped,
                                "whep viewer fell behind; jumped to the newest keyframe"
                            );
                            play.playout.skipped(skipped - play.skipped);
                            play.skipped = skipped;
                        }
                        play.need_key = true;
                        if let Some(up) = &play.upstream_keyframe {
                            let _ = up.try_send(());
                        }
                    }
                    Some(MediaEvent::Tracks(_)) => {}
                    None => return EndReason::StreamEnded,
                }
                continue;
            }
            Wake::Timer => {
                if let Role::Publish(pb) = &mut role {
                    if p.connected && pb.last_request.is_none_or(|t| t.elapsed() >= pb.keyframe_interval) {
                        request_keyframe(&mut rtc, pb);
                    }
                }
                Input::Timeout(Instant::now())
            }
        };
        if let Err(e) = rtc.handle_input(input) {
            return classify(e);
        }
    }
}

enum Wake {
    Stop(EndReason),
    Candidates(Vec<Candidate>),
    Datagram(Datagram),
    Role(RoleWake),
    Timer,
}

enum RoleWake {
    Kicked,
    KeyframeAsked(Option<()>),
    Frame(Option<MediaEvent<RtpFrame>>),
}

/// Waits for what only one role waits for: a keyframe request routed to a
/// publisher; a kick or the next live frame for a viewer.
async fn role_wait(role: &mut Role, connected: bool) -> RoleWake {
    match role {
        Role::Publish(pb) => tokio::select! {
            k = pb.keyframes.recv() => RoleWake::KeyframeAsked(k),
            _ = kicked(&pb.delivery) => RoleWake::Kicked,
            _ = pb.delivery.publisher().revoked() => RoleWake::Kicked,
        },
        Role::Play(play) => {
            let cancel = play.hooks.cancel.clone();
            match &mut play.live {
                Some(rx) if connected => tokio::select! {
                    _ = cancel.cancelled() => RoleWake::Kicked,
                    f = rx.recv() => RoleWake::Frame(f),
                },
                _ => {
                    cancel.cancelled().await;
                    RoleWake::Kicked
                }
            }
        }
    }
}

/// Resolves when the publisher's session is kicked.
async fn kicked(d: &crate::ingest::Deliverer) {
    match d.session() {
        Some(s) => s.cancelled().await,
        None => std::future::pending().await,
    }
}

fn classify(e: str0m::RtcError) -> EndReason {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("dtls") {
        EndReason::DtlsFailed(text)
    } else {
        EndReason::Error(text)
    }
}

/// Polls `rtc` until it has nothing more to do now; returns when it next
/// wants a timeout.
fn drain(rtc: &mut Rtc, role: &mut Role, ctx: &Ctx, p: &mut Progress, start: Instant) -> Result<Instant, EndReason> {
    loop {
        let out = rtc.poll_output().map_err(classify)?;
        match out {
            Output::Timeout(t) => return Ok(t),
            Output::Transmit(t) => {
                ctx.net.send(t.proto, t.source, t.destination, &t.contents);
            }
            Output::Event(e) => on_event(rtc, role, ctx, p, start, e)?,
        }
    }
}

fn on_event(
    rtc: &mut Rtc,
    role: &mut Role,
    ctx: &Ctx,
    p: &mut Progress,
    start: Instant,
    e: Event,
) -> Result<(), EndReason> {
    match e {
        Event::IceConnectionStateChange(s) => {
            debug!(session = ctx.id, state = ?s, "ice state");
            match s {
                IceConnectionState::Connected | IceConnectionState::Completed => p.ice_connected = true,
                IceConnectionState::Disconnected => return Err(EndReason::Disconnected),
                _ => {}
            }
        }
        Event::Connected => {
            p.connected = true;
            let ms = start.elapsed().as_millis();
            info!(session = ctx.id, setup_ms = ms as u64, "webrtc connected");
            ctx.info.lock().state = "connected".into();
            match role {
                Role::Play(play) => {
                    setup_senders(rtc, play);
                    play.live = Some(play.playout.subscribe());
                    play.need_key = true;
                    if let Some(up) = &play.upstream_keyframe {
                        let _ = up.try_send(());
                    }
                }
                Role::Publish(pb) => request_keyframe(rtc, pb),
            }
        }
        Event::MediaAdded(m) => {
            if let Role::Publish(pb) = role {
                if m.kind == MediaKind::Video && pb.video_mid.is_none() {
                    pb.video_mid = Some(m.mid);
                }
            }
        }
        Event::MediaData(d) => {
            let Role::Publish(pb) = role else { return Ok(()) };
            let Some(codec) = media_codec(d.params.spec().codec) else { return Ok(()) };
            let sample = Sample {
                codec,
                rtp_time: d.time.numer(),
                clock_rate: d.time.denom(),
                arrival_us: i64::try_from(d.network_time.saturating_duration_since(start).as_micros()).unwrap_or(0),
                data: &d.data,
                keyframe: d.is_keyframe(),
                contiguous: d.contiguous,
            };
            let out = pb.assembler.push(&sample);
            if let Some(tracks) = out.tracks {
                info!(session = ctx.id, tracks = ?tracks.iter().map(|t| t.info.codec_string.clone()).collect::<Vec<_>>(), "whip tracks");
                if pb.delivery.deliver(Delivery::Tracks(tracks)).is_err() {
                    return Err(EndReason::Kicked);
                }
            }
            if let Some(frame) = out.frame {
                if pb.delivery.deliver(Delivery::Frame(frame)).is_err() {
                    return Err(EndReason::Kicked);
                }
            }
            if out.want_keyframe {
                let due = pb.last_request.is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
                if due {
                    request_keyframe(rtc, pb);
                }
            }
        }
        Event::KeyframeRequest(_) => {
            if let Role::Play(play) = role {
                if let Some(up) = &play.upstream_keyframe {
                    let _ = up.try_send(());
                }
            }
        }
        Event::PeerStats(s) => {
            let mut info = ctx.info.lock();
            info.bytes_in = s.peer_bytes_rx;
            if let Role::Publish(pb) = role {
                if let Some(s2) = pb.delivery.session() {
                    s2.set_received(s.peer_bytes_rx);
                }
            }
            info.bytes_out = s.peer_bytes_tx;
            info.rtt_ms = s.rtt.map(|d| d.as_secs_f64() * 1000.0);
            if let Some(pair) = &s.selected_candidate_pair {
                info.transport = Some(format!("{:?}", pair.protocol).to_ascii_lowercase());
            }
        }
        Event::MediaIngressStats(s) => {
            record_track(ctx, &s.mid, (s.packets, s.bytes, s.nacks, s.plis, s.firs), s.rtt);
        }
        Event::MediaEgressStats(s) => {
            record_track(ctx, &s.mid, (s.packets, s.bytes, s.nacks, s.plis, s.firs), s.rtt);
        }
        _ => {}
    }
    Ok(())
}

/// Stores one m-line's counters (packets, bytes, NACKs, PLIs, FIRs) and RTT.
fn record_track(ctx: &Ctx, mid: &Mid, counts: (u64, u64, u64, u64, u64), rtt: Option<Duration>) {
    let mut info = ctx.info.lock();
    let (packets, bytes, nacks, plis, firs) = counts;
    info.tracks.insert(mid.to_string(), super::TrackStats { packets, bytes, nacks, plis, firs });
    if let Some(rtt) = rtt {
        info.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
    }
}

fn media_codec(c: RtpCodec) -> Option<Codec> {
    Some(match c {
        RtpCodec::H264 => Codec::H264,
        RtpCodec::Vp8 => Codec::Vp8,
        RtpCodec::Vp9 => Codec::Vp9,
        RtpCodec::Av1 => Codec::Av1,
        RtpCodec::H265 => Codec::H265,
        RtpCodec::Opus => Codec::Opus,
        _ => return None,
    })
}

fn request_keyframe(rtc: &mut Rtc, pb: &mut PublishRole) {
    let Some(mid) = pb.video_mid else { return };
    pb.last_request = Some(Instant::now());
    let Some(mut w) = rtc.writer(mid) else { return };
    let kind = if w.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
        KeyframeRequestKind::Pli
    } else {
        KeyframeRequestKind::Fir
    };
    if let Err(e) = w.request_keyframe(None, kind) {
        debug!(error = %e, "keyframe request not sent");
    }
}

/// Finds each sending m-line's SSRC and the payload type to use: H.264 with
/// packetization-mode 1 (matching the stream's profile when offered) and Opus.
fn setup_senders(rtc: &mut Rtc, play: &mut PlayRole) {
    let params = rtc.codec_config().params().to_vec();
    let mut found: Vec<(MediaKind, Mid, Pt)> = Vec::new();
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let mut candidates: Vec<(Mid, Pt, u8)> = Vec::new();
        for &mid in &play.mids {
            let Some(media) = rtc.media(mid) else { continue };
            if media.kind() != kind || !media.direction().is_sending() {
                continue;
            }
            for pp in params.iter().filter(|p| media.remote_pts().contains(&p.pt())) {
                let spec = pp.spec();
                let score = match (kind, spec.codec) {
                    (MediaKind::Video, RtpCodec::H264) if spec.format.packetization_mode == Some(1) => {
                        let offered = spec.format.profile_level_id.map(|v| ((v >> 16) as u8, (v >> 8) as u8));
                        match (offered, play.profile) {
                            (Some((op, _)), Some((sp, _))) if op == sp => 3,
                            _ => 2,
                        }
                    }
                    (MediaKind::Audio, RtpCodec::Opus) => 3,
                    _ => 0,
                };
                if score > 0 {
                    candidates.push((mid, pp.pt(), score));
                }
            }
        }
        if let Some(best) = candidates.iter().max_by_key(|c| c.2) {
            found.push((kind, best.0, best.1));
        }
    }
    for (kind, mid, pt) in found {
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(mid, None) else { continue };
        stream.set_rtx_cache(RTX_PACKETS, RTX_AGE, None);
        let tx = Tx { ssrc: stream.ssrc(), pt, seq: u64::from(rand::random::<u16>() & 0x7fff) };
        match kind {
            MediaKind::Video => play.video = Some(tx),
            MediaKind::Audio => play.audio = Some(tx),
        }
    }
}

/// Writes one packetized frame to a viewer, packet by packet, draining str0m
/// after each (its single-mutation rule).
fn send_frame(rtc: &mut Rtc, play: &mut PlayRole, frame: &RtpFrame, ctx: &Ctx) -> Result<(), EndReason> {
    if frame.video && play.need_key {
        if !frame.keyframe {
            return Ok(());
        }
        play.need_key = false;
    }
    let slot = if frame.video { &mut play.video } else { &mut play.audio };
    let Some(tx) = slot.as_mut() else { return Ok(()) };
    let wallclock = play.playout.epoch + Duration::from_micros(u64::try_from(frame.pts_us).unwrap_or(0));
    let last = frame.packets.len().saturating_sub(1);
    let mut sent = 0usize;
    let now = Instant::now();
    for (i, payload) in frame.packets.iter().enumerate() {
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx(&tx.ssrc) else { return Ok(()) };
        let write = RtpWrite::new(tx.pt, SeqNo::from(tx.seq), frame.rtp_time, wallclock, payload.clone())
            .marker(frame.video && i == last)
            .nackable(true);
        stream.write_rtp(write);
        tx.seq += 1;
        sent += payload.len();
        play.rtx.record(frame.video, now, payload.len());
        loop {
            match rtc.poll_output().map_err(classify)? {
                Output::Timeout(_) => break,
                Output::Transmit(t) => ctx.net.send(t.proto, t.source, t.destination, &t.contents),
                Output::Event(_) => {}
            }
        }
    }
    play.rtx.publish();
    (play.hooks.sent)(sent);
    Ok(())
}

/// Logs how a session ended.
pub(crate) fn log_end(id: u64, kind: &str, stream: &str, reason: &EndReason) {
    match reason {
        EndReason::Deleted | EndReason::StreamEnded | EndReason::Shutdown => {
            info!(session = id, kind, stream, reason = %reason, "webrtc session closed")
        }
        _ => warn!(session = id, kind, stream, reason = %reason, "webrtc session closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resend_window_counts_what_str0m_may_still_hold() {
        let ledger = tidecast_media::Ledger::new();
        let mut w = RtxWindow::new(ledger.gauge("cam", "whep-rtx"));
        let t0 = Instant::now();
        // More packets than a sender keeps: only the newest 1024 count.
        for i in 0..1500u32 {
            w.record(true, t0 + Duration::from_micros(u64::from(i)), 1000);
        }
        w.record(false, t0, 100);
        w.publish();
        assert_eq!(ledger.total(), 1024 * 1000 + 100);
        // Three seconds later the old ones have aged out of str0m's cache.
        w.record(true, t0 + RTX_AGE + Duration::from_millis(10), 500);
        w.publish();
        assert_eq!(ledger.total(), 500);
        w.record(false, t0 + RTX_AGE + Duration::from_millis(20), 100);
        w.publish();
        assert_eq!(ledger.total(), 600);
        drop(w);
        assert_eq!(ledger.total(), 0, "the viewer's gauge goes with it");
    }
}
