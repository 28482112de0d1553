//! WebRTC: WHIP ingest (RFC 9725) and WHEP playback, on str0m.
//!
//! str0m is sans-IO: it never touches a socket. [`WebRtcHub`] owns the
//! sockets (one UDP port shared by every peer, plus ICE-TCP), routes each
//! datagram to its session's task, and runs one task per peer that drives
//! that peer's `Rtc`. The server is ICE-lite: it only answers connectivity
//! checks, so it needs no STUN of its own beyond learning its public address.
//!
//! * [`stun`]: the bits of STUN read outside str0m (routing, public address).
//! * [`sdp`]: offer checks and trickle ICE fragments.
//! * [`assemble`]: depacketized samples to media frames (WHIP).
//! * [`playout`]: one packetizer per stream shared by viewers (WHEP).
//! * [`session`]: the per-peer loop and why sessions end.
//! * [`whip_client`]: a stream pushed to another server's WHIP endpoint.

pub mod assemble;
pub mod http;
mod net;
pub mod playout;
pub mod sdp;
pub mod session;
pub mod stun;
pub mod whip_client;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use str0m::change::SdpOffer;
use str0m::media::Mid;
use str0m::net::TcpType;
use str0m::{Candidate, Rtc, RtcConfig};
use tidecast_media::{Publisher, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use net::NetStats;
pub use sdp::OfferProblem;
pub use session::EndReason;

use assemble::Assembler;
use net::Net;
use playout::Playouts;
use session::{Control, Ctx, PlayRole, PublishRole, Role, RtxWindow};

/// A STUN or TURN server handed to clients (WHIP/WHEP `Link` headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub url: String,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN password.
    pub credential: Option<String>,
}

/// How the WebRTC edge is set up.
#[derive(Debug, Clone)]
pub struct WebRtcConfig {
    /// Addresses to bind; unspecified (`0.0.0.0`) means every interface
    /// address of the machine (loopback only if there is no other).
    pub bind: IpAddr,
    /// The shared UDP port (0: any); `None` disables UDP.
    pub udp_port: Option<u16>,
    /// The ICE-TCP port (0: any); `None` disables ICE-TCP.
    pub tcp_port: Option<u16>,
    /// Public addresses of a 1:1 NAT in front of the server.
    pub public_ips: Vec<IpAddr>,
    /// A STUN server to learn the public address from at start.
    pub stun_server: Option<SocketAddr>,
    /// ICE servers handed to clients.
    pub ice_servers: Vec<IceServer>,
    /// How often a WHIP publisher is asked for a keyframe (browsers send
    /// one only when asked; HLS segments need them).
    pub keyframe_interval: Duration,
    /// How long a session may take to connect (ICE and DTLS).
    pub connect_timeout: Duration,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Where the playouts' packetized frames are accounted.
    pub ledger: tidecast_media::Ledger,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            udp_port: Some(8189),
            tcp_port: Some(8189),
            public_ips: Vec::new(),
            stun_server: None,
            ice_servers: Vec::new(),
            keyframe_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(15),
            max_sessions: 2000,
            ledger: tidecast_media::Ledger::default(),
        }
    }
}

/// Per-m-line counters of a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackStats {
    /// RTP packets received (WHIP) or sent (WHEP).
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// NACKs received (WHEP) or sent (WHIP).
    pub nacks: u64,
    /// PLIs.
    pub plis: u64,
    /// FIRs.
    pub firs: u64,
}

/// One session as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// The resource id (the last path segment of its `Location`).
    pub id: String,
    /// `whip` or `whep`.
    pub kind: &'static str,
    /// The stream published or played.
    pub stream: String,
    /// The HTTP client's address.
    pub peer: SocketAddr,
    /// `connecting`, `connected` or `closed`.
    pub state: String,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// `udp` or `tcp`, once a candidate pair is selected.
    pub transport: Option<String>,
    /// Bytes received from the peer (all packets).
    pub bytes_in: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
    /// Round-trip time, from RTCP.
    pub rtt_ms: Option<f64>,
    /// Counters per m-line (by mid).
    pub tracks: BTreeMap<String, TrackStats>,
    /// What could not be carried (WHEP).
    pub notes: Vec<String>,
    /// Why it ended.
    pub closed_reason: Option<String>,
    /// The id of the publisher's or viewer's session in the node's
    /// session table (`/api/v1/sessions`), when it was admitted through a gate.
    pub session: Option<String>,
}

/// What a WHEP viewer session reports to and takes from the control plane.
pub struct ViewerHooks {
    /// Cancelled when the viewer is kicked.
    pub cancel: CancellationToken,
    /// Called with the payload bytes of each frame sent.
    pub sent: Box<dyn Fn(usize) + Send + Sync>,
    /// The viewer's admitted session, kept for the WebRTC session's life:
    /// dropping it ends the viewer's session. A push has none.
    pub session: Option<crate::access::Session>,
}

/// A created session.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its resource id.
    pub id: String,
    /// The SDP answer.
    pub answer: String,
    /// What could not be carried, for the client.
    pub notes: Vec<String>,
}

/// Why a WHIP/WHEP request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRtcError {
    /// The offer is unusable.
    Offer(OfferProblem),
    /// str0m could not answer the offer.
    Rejected(String),
    /// The stream has no tracks yet.
    NotReady,
    /// The stream has nothing WebRTC can carry.
    NothingToPlay(Vec<String>),
    /// No such session.
    NotFound,
    /// A trickle fragment that does not parse.
    BadCandidate(String),
    /// Too many sessions.
    Full,
    /// `?rendition=` asked for a height the stream does not have.
    NoSuchRendition {
        /// The height asked for.
        asked: u32,
        /// The heights the stream has, largest first.
        available: Vec<u32>,
    },
}

impl fmt::Display for WebRtcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebRtcError::Offer(p) => write!(f, "{p}"),
            WebRtcError::Rejected(e) => write!(f, "the offer was refused: {e}"),
            WebRtcError::NotReady => write!(f, "the stream has no tracks yet; retry in a moment"),
            WebRtcError::NothingToPlay(n) => {
                write!(f, "nothing in this stream can be sent over WebRTC: {}", n.join("; "))
            }
            WebRtcError::NotFound => write!(f, "no such session"),
            WebRtcError::BadCandidate(e) => write!(f, "bad candidate: {e}"),
            WebRtcError::Full => write!(f, "too many WebRTC sessions"),
            WebRtcError::NoSuchRendition { asked, available } => {
                let list: Vec<String> = available.iter().map(|h| format!("{h}p")).collect();
                write!(f, "no {asked}p rendition; this stream has: {}", list.join(", "))
            }
        }
    }
}

impl std::error::Error for WebRtcError {}

impl From<OfferProblem> for WebRtcError {
    fn from(p: OfferProblem) -> Self {
        WebRtcError::Offer(p)
    }
}

struct Handle {
    n: u64,
    kind: &'static str,
    stream: String,
    info: Arc<Mutex<SessionInfo>>,
    control: mpsc::Sender<Control>,
}

/// Sessions that ended, kept for the API.
const CLOSED_KEPT: usize = 64;

/// The WebRTC edge: sockets, sessions, per-stream playouts.
pub struct WebRtcHub {
    cfg: WebRtcConfig,
    net: Arc<Net>,
    candidates: Mutex<Vec<Candidate>>,
    sessions: Mutex<HashMap<String, Handle>>,
    closed: Mutex<VecDeque<SessionInfo>>,
    publishers: Mutex<HashMap<String, (u64, mpsc::Sender<()>)>>,
    playouts: Playouts,
    next: AtomicU64,
    shutdown: CancellationToken,
    /// Sessions opened, by kind.
    pub opened: [AtomicU64; 2],
}

static CRYPTO: Once = Once::new();

/// The machine's addresses to offer as host candidates.
fn interface_ips(v4: bool) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| !ip.is_loopback() && ip.is_ipv4() == v4)
        .filter(|ip| match ip {
            IpAddr::V4(a) => !a.is_link_local(),
            IpAddr::V6(a) => (a.segments()[0] & 0xffc0) != 0xfe80,
        })
        .collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        ips.push(if v4 { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(std::net::Ipv6Addr::LOCALHOST) });
    }
    ips
}

impl WebRtcHub {
    /// Binds the sockets and starts the edge.
    pub async fn start(cfg: WebRtcConfig, shutdown: CancellationToken) -> io::Result<Arc<WebRtcHub>> {
        CRYPTO.call_once(|| str0m::crypto::from_feature_flags().install_process_default());
        let ips = if cfg.bind.is_unspecified() { interface_ips(cfg.bind.is_ipv4()) } else { vec![cfg.bind] };
        let net = Net::bind(&ips, cfg.udp_port, cfg.tcp_port, shutdown.clone()).await?;
        let mut candidates = Vec::new();
        for addr in net.udp_addrs() {
            candidates.push(Candidate::host(addr, "udp").map_err(io::Error::other)?);
        }
        for &addr in net.tcp_addrs() {
            let c =
                Candidate::builder().tcp().host(addr).tcptype(TcpType::Passive).build().map_err(io::Error::other)?;
            candidates.push(c);
        }
        // An ICE-lite agent may only have host candidates (RFC 8445 section
        // 2.5), so a NAT's public address is announced as one: the checks it
        // forwards arrive on the private socket, which is a host candidate too.
        for ip in &cfg.public_ips {
            if let Some(base) = net.udp_addrs().into_iter().find(|a| a.is_ipv4() == ip.is_ipv4()) {
                candidates.push(Candidate::host(SocketAddr::new(*ip, base.port()), "udp").map_err(io::Error::other)?);
            }
            if let Some(&base) = net.tcp_addrs().iter().find(|a| a.is_ipv4() == ip.is_ipv4()) {
                let public = SocketAddr::new(*ip, base.port());
                let c = Candidate::builder()
                    .tcp()
                    .host(public)
                    .tcptype(TcpType::Passive)
                    .build()
                    .map_err(io::Error::other)?;
                candidates.push(c);
            }
        }
        info!(udp = ?net.udp_addrs(), tcp = ?net.tcp_addrs(), public = ?cfg.public_ips, "webrtc listening");
        let playouts = Playouts::new(cfg.ledger.clone());
        let hub = Arc::new(WebRtcHub {
            cfg,
            net,
            candidates: Mutex::new(candidates),
            sessions: Mutex::default(),
            closed: Mutex::default(),
            publishers: Mutex::default(),
            playouts,
            next: AtomicU64::new(1),
            shutdown,
            opened: Default::default(),
        });
        if let Some(server) = hub.cfg.stun_server {
            match hub.net.discover(server).await {
                Some((public, base)) if !hub.net.udp_addrs().iter().any(|a| a.ip() == public.ip()) => {
                    info!(%public, %base, %server, "webrtc public address learned from STUN");
                    if let Ok(c) = Candidate::host(public, "udp") {
                        hub.candidates.lock().push(c);
                    }
                }
                Some(_) => info!(%server, "STUN reports no NAT in front of the WebRTC port"),
                None => warn!(%server, "the STUN server did not answer; no public address learned"),
            }
        }
        Ok(hub)
    }

    /// The UDP addresses peers reach.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.net.udp_addrs()
    }

    /// The ICE-TCP addresses.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.net.tcp_addrs().to_vec()
    }

    /// The ICE servers for clients.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.cfg.ice_servers
    }

    /// Counters of the network edge.
    pub fn net_stats(&self) -> &NetStats {
        &self.net.stats
    }

    /// Live sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.sessions.lock().values().map(|h| h.info.lock().clone()).collect()
    }

    /// Sessions that ended recently, newest last.
    pub fn closed(&self) -> Vec<SessionInfo> {
        self.closed.lock().iter().cloned().collect()
    }

    /// The stream and kind of a live session.
    pub fn session_stream(&self, id: &str) -> Option<(&'static str, String)> {
        self.sessions.lock().get(id).map(|h| (h.kind, h.stream.clone()))
    }

    fn rtc(&self, play: bool) -> Rtc {
        let mut cfg = RtcConfig::new()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_rtp_mode(play);
        if !play {
            cfg = cfg.enable_vp8(true).enable_vp9(true).enable_av1(true);
        }
        let mut rtc = cfg.build(Instant::now());
        for c in self.candidates.lock().iter() {
            rtc.add_local_candidate(c.clone());
        }
        rtc
    }

    fn check_capacity(&self) -> Result<(), WebRtcError> {
        if self.sessions.lock().len() >= self.cfg.max_sessions {
            return Err(WebRtcError::Full);
        }
        Ok(())
    }

    /// Accepts a WHIP offer: the peer publishes into `publisher`'s stream.
    pub fn publish(
        self: &Arc<Self>,
        offer: &str,
        publisher: Publisher,
        session: crate::access::Session,
        peer: SocketAddr,
    ) -> Result<Created, WebRtcError> {
        self.check_capacity()?;
        let lines = sdp::check_offer(offer, true, sdp::INGEST_CODECS)?;
        let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| OfferProblem::Malformed(e.to_string()))?;
        let mut rtc = self.rtc(false);
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| WebRtcError::Rejected(e.to_string()))?;
        let usable = |kind: &str, codecs: &[&str]| {
            lines
                .iter()
                .any(|l| l.kind == kind && l.direction.sends() && l.codecs.iter().any(|c| codecs.contains(&c.as_str())))
        };
        let expect_video = usable("video", &["h264", "vp8", "vp9", "av1"]);
        let expect_audio = usable("audio", &["opus"]);
        let stream = publisher.stream().name().to_owned();
        let admitted = Some(session.id().to_owned());
        let (ktx, krx) = mpsc::channel(4);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.publishers.lock().insert(stream.clone(), (n, ktx));
        let role = Role::Publish(Box::new(PublishRole {
            delivery: crate::ingest::Deliverer::new("whip", peer, publisher, Some(session)),
            assembler: Assembler::new(expect_video, expect_audio),
            keyframes: krx,
            keyframe_interval: self.cfg.keyframe_interval,
            video_mid: None,
            last_request: None,
        }));
        self.opened[0].fetch_add(1, Ordering::Relaxed);
        Ok(self.spawn(n, rtc, role, "whip", stream, peer, answer.to_sdp_string(), Vec::new(), admitted))
    }

    /// Accepts a WHEP offer: the peer plays `stream`, the H.264 rendition
    /// of height `rendition` when given (a ladder's rung, `?rendition=480p`).
    pub fn play(
        self: &Arc<Self>,
        offer: &str,
        stream: Arc<Stream>,
        rendition: Option<u32>,
        peer: SocketAddr,
        hooks: ViewerHooks,
    ) -> Result<Created, WebRtcError> {
        self.check_capacity()?;
        let lines = sdp::check_offer(offer, false, sdp::PLAYBACK_CODECS)?;
        let tracks = stream.tracks();
        if tracks.is_empty() {
            return Err(WebRtcError::NotReady);
        }
        if let Some(asked) = rendition {
            let available = playout::renditions(&tracks);
            if !available.contains(&asked) {
                return Err(WebRtcError::NoSuchRendition { asked, available });
            }
        }
        // A WebRTC viewer hears Opus: the audio bridge makes it from AAC.
        stream.demand(tidecast_media::Demand::OpusAudio);
        let carried = playout::carried(&tracks, rendition, stream.is_promised(tidecast_media::Demand::OpusAudio));
        if !carried.video && !carried.audio {
            return Err(WebRtcError::NothingToPlay(carried.notes));
        }
        let parsed = SdpOffer::from_sdp_string(offer).map_err(|e| OfferProblem::Malformed(e.to_string()))?;
        let mut rtc = self.rtc(true);
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(|e| WebRtcError::Rejected(e.to_string()))?;
        let playout = self.playouts.get(&stream, rendition);
        let mut notes = carried.notes;
        if playout.has_bframes() {
            notes.push("the stream has B-frames, which WebRTC cannot carry: expect stutter".into());
        }
        let mids = lines.iter().filter_map(|l| l.mid.as_deref()).map(Mid::from).collect();
        let name = stream.name().to_owned();
        let upstream = self.publishers.lock().get(&name).map(|(_, tx)| tx.clone());
        let admitted = hooks.session.as_ref().map(|s| s.id().to_owned());
        let rtx = RtxWindow::new(self.cfg.ledger.gauge(&name, "whep-rtx"));
        let role = Role::Play(Box::new(PlayRole::new(playout, rtx, hooks, upstream, carried.h264_profile, mids)));
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        for note in &notes {
            warn!(stream = %name, %peer, "whep: {note}");
        }
        self.opened[1].fetch_add(1, Ordering::Relaxed);
        Ok(self.spawn(n, rtc, role, "whep", name, peer, answer.to_sdp_string(), notes, admitted))
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        self: &Arc<Self>,
        n: u64,
        mut rtc: Rtc,
        role: Role,
        kind: &'static str,
        stream: String,
        peer: SocketAddr,
        answer: String,
        notes: Vec<String>,
        session: Option<String>,
    ) -> Created {
        let id = random_id();
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let (in_tx, in_rx) = mpsc::channel(net::INBOX);
        self.net.register(&ufrag, n, in_tx);
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let info = Arc::new(Mutex::new(SessionInfo {
            id: id.clone(),
            kind,
            stream: stream.clone(),
            peer,
            state: "connecting".into(),
            started_ms,
            transport: None,
            bytes_in: 0,
            bytes_out: 0,
            rtt_ms: None,
            tracks: BTreeMap::new(),
            notes: notes.clone(),
            closed_reason: None,
            session,
        }));
        self.sessions
            .lock()
            .insert(id.clone(), Handle { n, kind, stream: stream.clone(), info: info.clone(), control: ctl_tx });
        info!(session = n, id = %id, kind, stream = %stream, %peer, "webrtc session created");
        let ctx = Ctx {
            id: n,
            net: self.net.clone(),
            inbox: in_rx,
            control: ctl_rx,
            info,
            ice_timeout: self.cfg.connect_timeout,
            shutdown: self.shutdown.clone(),
        };
        let hub = self.clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            let reason = session::run(rtc, role, ctx).await;
            hub.finish(&task_id, reason);
        });
        Created { id, answer, notes }
    }

    fn finish(&self, id: &str, reason: EndReason) {
        let Some(h) = self.sessions.lock().remove(id) else { return };
        self.net.unregister(h.n);
        if h.kind == "whip" {
            let mut p = self.publishers.lock();
            if p.get(&h.stream).is_some_and(|(n, _)| *n == h.n) {
                p.remove(&h.stream);
            }
        }
        session::log_end(h.n, h.kind, &h.stream, &reason);
        let mut info = h.info.lock().clone();
        info.state = "closed".into();
        info.closed_reason = Some(reason.to_string());
        let mut closed = self.closed.lock();
        if closed.len() >= CLOSED_KEPT {
            closed.pop_front();
        }
        closed.push_back(info);
    }

    /// Ends a session (`DELETE` on its resource, or a kick).
    pub fn close(&self, id: &str, reason: EndReason) -> Result<(), WebRtcError> {
        let control = self.sessions.lock().get(id).map(|h| h.control.clone()).ok_or(WebRtcError::NotFound)?;
        let _ = control.try_send(Control::Close(reason));
        Ok(())
    }

    /// Adds trickled candidates (`PATCH` with an SDP fragment).
    pub fn trickle(&self, id: &str, fragment: &str) -> Result<(), WebRtcError> {
        let control = self.sessions.lock().get(id).map(|h| h.control.clone()).ok_or(WebRtcError::NotFound)?;
        let t = sdp::parse_trickle(fragment).map_err(|e| WebRtcError::BadCandidate(e.to_string()))?;
        let mut cands = Vec::new();
        for line in &t.candidates {
            let c = Candidate::from_sdp_string(line).map_err(|e| WebRtcError::BadCandidate(format!("{line}: {e}")))?;
            cands.push(c);
        }
        if !cands.is_empty() {
            let _ = control.try_send(Control::Candidates(cands));
        }
        Ok(())
    }
}

/// A resource id: 128 random bits, hex.
fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
