//! Pushing a stream to another server's WHIP endpoint (RFC 9725): the
//! server is the client here.
//!
//! The push is a WHEP viewer turned around. It reads the same shared
//! [`Playout`](super::playout::Playout) (H.264 packetized once, Opus from
//! the audio bridge when the source has AAC) and runs the same per-peer loop
//! ([`session::run`]); only the offer/answer and ICE roles differ. It makes a
//! send-only offer, POSTs it with the bearer token, applies the answer, and
//! checks connectivity as the controlling, full ICE agent from its own UDP
//! sockets (one per local address), because the far end is usually ICE-lite
//! and sends no checks a shared socket could route by. At the end it
//! DELETEs the session resource, as a browser page does.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, RtcConfig};
use tidecast_media::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::net::Net;
use super::session::{self, Ctx, EndReason, PlayRole, Role, RtxWindow};
use super::{playout, SessionInfo, ViewerHooks, WebRtcHub};

/// How long the endpoint may take to answer the offer (and the DELETE).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream that has just started may take to show its tracks.
const TRACKS_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest SDP answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// Why a WHIP push could not start, or how it ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhipPushError {
    /// The endpoint could not be reached (DNS, refused, TLS, timeout).
    Unreachable(String),
    /// The endpoint answered the offer with something other than 201.
    Refused {
        /// Its HTTP status.
        status: u16,
        /// The first line of its body, if any.
        body: String,
    },
    /// The answer was not usable SDP.
    BadAnswer(String),
    /// The stream has nothing WebRTC can carry (no H.264, no audio to
    /// make Opus from), or never showed its tracks.
    NothingToSend(String),
    /// Local sockets could not be bound.
    Local(String),
    /// What was asked for is not in the stream yet (a ladder's rung).
    NotYet(String),
}

impl WhipPushError {
    /// Whether trying again later may help: not when the stream itself
    /// cannot be sent.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, WhipPushError::NothingToSend(_))
    }
}

impl std::fmt::Display for WhipPushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WhipPushError::Unreachable(e) => write!(f, "WHIP endpoint unreachable: {e}"),
            WhipPushError::Refused { status: status @ (401 | 403), body } => {
                write!(f, "the WHIP endpoint refused the bearer token ({status}): {body}")
            }
            WhipPushError::Refused { status, body } => write!(f, "the WHIP endpoint answered {status}: {body}"),
            WhipPushError::BadAnswer(e) => write!(f, "the WHIP endpoint's answer is unusable: {e}"),
            WhipPushError::NothingToSend(e) => write!(f, "nothing to send over WHIP: {e}"),
            WhipPushError::Local(e) => write!(f, "WHIP push: {e}"),
            WhipPushError::NotYet(e) => write!(f, "WHIP push: {e}"),
        }
    }
}

impl std::error::Error for WhipPushError {}

/// What a WHIP push sends (a push's `?video=&audio=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhipMedia {
    /// Send the stream's H.264.
    pub video: bool,
    /// The rung of this height rather than the source's video.
    pub rendition: Option<u32>,
    /// Send Opus.
    pub audio: bool,
}

/// Where and how to push.
#[derive(Debug, Clone)]
pub struct WhipEndpoint {
    /// The endpoint's `http://` or `https://` URL.
    pub url: String,
    /// Sent as `Authorization: Bearer`.
    pub token: Option<String>,
}

impl WebRtcHub {
    /// Pushes `stream` to a WHIP endpoint until the stream ends, `cancel`
    /// fires, or the connection fails; returns how the session ended.
    /// `sent` is called with the media bytes of each frame sent, from the
    /// first frame after the connection is up.
    pub async fn push_whip(
        self: &Arc<Self>,
        stream: &Arc<Stream>,
        endpoint: &WhipEndpoint,
        media: WhipMedia,
        client: &reqwest::Client,
        sent: Box<dyn Fn(usize) + Send + Sync>,
        cancel: CancellationToken,
    ) -> Result<EndReason, WhipPushError> {
        let Some(tracks) = crate::push::first_tracks(stream, &cancel, TRACKS_TIMEOUT).await else {
            return Err(WhipPushError::NothingToSend("the stream showed no tracks".into()));
        };
        if media.audio {
            stream.demand(tidecast_media::Demand::OpusAudio);
        }
        let opus_coming = stream.is_promised(tidecast_media::Demand::OpusAudio);
        let mut carried = playout::carried(&tracks, media.rendition, opus_coming);
        carried.video &= media.video;
        // The bridge's Opus may not be out yet: its m-line goes in the
        // offer now, and its packets follow once it is.
        carried.audio = media.audio && (carried.audio || opus_coming);
        if !carried.video && !carried.audio {
            return Err(WhipPushError::NothingToSend(carried.notes.join("; ")));
        }
        // A rung that is not there yet (a ladder starts after the source's
        // first keyframe): try again later rather than send the source.
        if let Some(h) = media.rendition.filter(|h| !playout::renditions(&tracks).contains(h)) {
            return Err(WhipPushError::NotYet(format!("the stream has no {h}p H.264 track (yet)")));
        }

        let ips = local_ips(&endpoint.url).await;
        // The sockets' readers live as long as this attempt, not the push.
        let sockets = cancel.child_token();
        let _close_sockets = sockets.clone().drop_guard();
        let (net, inbox) = Net::client(&ips, sockets).await.map_err(|e| WhipPushError::Local(e.to_string()))?;
        let mut rtc = RtcConfig::new()
            .clear_codecs()
            .enable_h264(true)
            .enable_opus(true, false)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .set_rtp_mode(true)
            .build(Instant::now());
        for addr in net.udp_addrs() {
            let c = Candidate::host(addr, "udp").map_err(|e| WhipPushError::Local(e.to_string()))?;
            rtc.add_local_candidate(c);
        }
        let mut change = rtc.sdp_api();
        let msid = Some(stream.name().to_owned());
        let mut mids = Vec::new();
        if carried.video {
            mids.push(change.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                msid.clone(),
                Some("video".into()),
                None,
            ));
        }
        if carried.audio {
            mids.push(change.add_media(MediaKind::Audio, Direction::SendOnly, msid, Some("audio".into()), None));
        }
        let Some((offer, pending)) = change.apply() else {
            return Err(WhipPushError::Local("no offer to make".into()));
        };

        let (resource, answer) = post_offer(client, endpoint, offer.to_sdp_string(), &cancel).await?;
        let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| WhipPushError::BadAnswer(e.to_string()))?;
        if let Err(e) = rtc.sdp_api().accept_answer(pending, answer) {
            delete(client, endpoint, resource.as_deref()).await;
            return Err(WhipPushError::BadAnswer(e.to_string()));
        }

        let playout = self.playouts.get(stream, media.rendition);
        let upstream = self.publishers.lock().get(stream.name()).map(|(_, tx)| tx.clone());
        let rtx = RtxWindow::new(self.cfg.ledger.gauge(stream.name(), "whep-rtx"));
        let viewer = ViewerHooks { cancel: cancel.clone(), sent, session: None };
        let role = Role::Play(Box::new(PlayRole::new(playout, rtx, viewer, upstream, carried.h264_profile, mids)));
        let peer = net.udp_addrs().first().copied().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let info = Arc::new(Mutex::new(SessionInfo {
            id: resource.clone().unwrap_or_default(),
            kind: "whip-push",
            stream: stream.name().to_owned(),
            peer,
            state: "connecting".into(),
            started_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
            transport: None,
            bytes_in: 0,
            bytes_out: 0,
            rtt_ms: None,
            tracks: Default::default(),
            notes: carried.notes,
            closed_reason: None,
            session: None,
        }));
        // Nothing trickles or closes from outside: the sender only keeps
        // the channel open.
        let (_control_tx, control) = mpsc::channel(1);
        let ctx =
            Ctx { id: 0, net, inbox, control, info, ice_timeout: self.cfg.connect_timeout, shutdown: cancel.clone() };
        let reason = session::run(rtc, role, ctx).await;
        delete(client, endpoint, resource.as_deref()).await;
        Ok(reason)
    }
}

/// Local addresses to offer as host candidates: every interface address of
/// the endpoint's family, and loopback when the endpoint is on this host.
async fn local_ips(url: &str) -> Vec<IpAddr> {
    let host = reqwest::Url::parse(url).ok().and_then(|u| {
        let port = u.port_or_known_default()?;
        Some(format!("{}:{port}", u.host_str()?.trim_start_matches('[').trim_end_matches(']')))
    });
    let remote = match host {
        Some(h) => tokio::net::lookup_host(h).await.ok().and_then(|mut a| a.next()),
        None => None,
    };
    let v4 = remote.is_none_or(|r| r.is_ipv4());
    let mut ips = super::interface_ips(v4);
    let lo = if v4 { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from(std::net::Ipv6Addr::LOCALHOST) };
    if remote.is_some_and(|r| r.ip().is_loopback()) && !ips.contains(&lo) {
        ips.push(lo);
    }
    ips
}

/// POSTs the offer; the session resource's URL and the answer.
async fn post_offer(
    client: &reqwest::Client,
    endpoint: &WhipEndpoint,
    offer: String,
    cancel: &CancellationToken,
) -> Result<(Option<String>, String), WhipPushError> {
    let mut req = client.post(&endpoint.url).header("content-type", "application/sdp").body(offer);
    if let Some(t) = &endpoint.token {
        req = req.bearer_auth(t);
    }
    let exchange = async {
        let res = req.send().await.map_err(|e| WhipPushError::Unreachable(describe(&e)))?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(|loc| reqwest::Url::parse(&endpoint.url).ok()?.join(loc).ok())
            .map(|u| u.to_string());
        let body = read_capped(res).await?;
        if status != 201 {
            let first = body.lines().next().unwrap_or_default().chars().take(200).collect();
            return Err(WhipPushError::Refused { status, body: first });
        }
        Ok((location, body))
    };
    tokio::select! {
        r = tokio::time::timeout(HTTP_TIMEOUT, exchange) => match r {
            Ok(r) => r,
            Err(_) => Err(WhipPushError::Unreachable(format!("no answer to the offer in {} s", HTTP_TIMEOUT.as_secs()))),
        },
        _ = cancel.cancelled() => Err(WhipPushError::Unreachable("stopped while offering".into())),
    }
}

async fn read_capped(mut res: reqwest::Response) -> Result<String, WhipPushError> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| WhipPushError::Unreachable(describe(&e)))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(WhipPushError::BadAnswer(format!("the answer is over {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| WhipPushError::BadAnswer("the answer is not UTF-8".into()))
}

/// Ends the session resource; a failure changes nothing (the far end
/// notices the lost consent).
async fn delete(client: &reqwest::Client, endpoint: &WhipEndpoint, resource: Option<&str>) {
    let Some(r) = resource else { return };
    let mut req = client.delete(r).timeout(Duration::from_secs(2));
    if let Some(t) = &endpoint.token {
        req = req.bearer_auth(t);
    }
    let _ = req.send().await;
}

/// An HTTP error with its causes, which is where the useful part is
/// ("connection refused", "dns error").
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
