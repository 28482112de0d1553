//! WHEP output: one packetizer per stream, shared by every viewer.
//!
//! A stream's frames are turned into RTP payloads once (H.264 with SPS/PPS
//! sent as STAP-A before each keyframe, Opus as is). Each payload is an
//! `Arc<[u8]>` that every peer's str0m sender keeps for NACK resends, so a
//! payload exists once however many viewers there are; only SRTP, which is
//! per peer, copies it. A viewer joining mid-GOP gets the current GOP at once
//! (fast start) and then the live packets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use str0m::unversioned::{H264Packetizer, Packetizer};
use tidecast_codecs::{h264, nal};
use tidecast_media::outputs::{OutputTask, Outputs, Start, StartOutput};
use tidecast_media::{Codec, Event, Frame, Gauge, Ledger, Stream, Track, TIMESCALE};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

/// RTP payload size: leaves room for the RTP header, extensions and SRTP
/// under a 1200-byte datagram.
pub const PAYLOAD_MTU: usize = 1100;
/// Frames a lagging viewer may fall behind before it skips to a keyframe.
const BACKLOG: usize = 512;
/// Cap on the frames kept for fast start (a long GOP is cut short).
const MAX_GOP: usize = 600;

/// One frame, packetized.
#[derive(Debug)]
pub struct RtpFrame {
    /// Video (H.264) or audio (Opus).
    pub video: bool,
    /// RTP timestamp (90 kHz video, 48 kHz audio), same origin for both.
    pub rtp_time: u32,
    /// The frame's presentation time on the stream's clock, microseconds.
    pub pts_us: i64,
    /// Whether a decoder can start here.
    pub keyframe: bool,
    /// The RTP payloads; the last one carries the marker bit (video).
    pub packets: Vec<Arc<[u8]>>,
}

/// What a viewer can be sent of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carried {
    /// The stream has H.264 video.
    pub video: bool,
    /// The stream has Opus audio.
    pub audio: bool,
    /// What cannot be carried, in words for the client and the log.
    pub notes: Vec<String>,
    /// The H.264 profile_idc and constraint flags, for choosing a payload type.
    pub h264_profile: Option<(u8, u8)>,
}

/// Decides what of `tracks` WebRTC carries.
pub fn carried(tracks: &[Track]) -> Carried {
    let mut c = Carried::default();
    for t in tracks {
        match t.codec {
            Codec::H264 if !c.video => {
                c.video = true;
                if let Ok(cfg) = h264::parse_config(&t.config) {
                    c.h264_profile = cfg.sps.first().and_then(|s| Some((*s.get(1)?, *s.get(2)?)));
                }
            }
            Codec::Opus if !c.audio => c.audio = true,
            Codec::Aac => c.notes.push(
                "audio is AAC, which WebRTC cannot carry: playing video only (transcoding to Opus is not built yet)"
                    .into(),
            ),
            other if other.kind() == tidecast_media::MediaKind::Video && !c.video => {
                c.notes.push(format!("video is {}, which WHEP does not send yet (H.264 only)", other.name()))
            }
            other => c.notes.push(format!("track {} ({}) is not sent", t.id, other.name())),
        }
    }
    c
}

/// The shared packetizer of one stream.
pub struct Playout {
    stream: String,
    /// Taken when the stream ends, so every viewer's receiver closes.
    tx: Mutex<Option<broadcast::Sender<Arc<RtpFrame>>>>,
    gop: Mutex<Gop>,
    /// The fast-start GOP's payload bytes, in the node's ledger.
    gauge: Gauge,
    /// The wallclock instant of pts 0, for sender reports.
    pub epoch: Instant,
    bframes: AtomicBool,
    /// Frames packetized.
    pub frames: AtomicU64,
    /// The stream it plays, whose skip counter its lagging viewers add to.
    source: Weak<Stream>,
}

impl std::fmt::Debug for Playout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playout").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl Playout {
    /// Joins: the frames since the last keyframe, and the live feed after
    /// them. Once the stream has ended the feed is closed at once.
    pub fn join(&self) -> (Vec<Arc<RtpFrame>>, broadcast::Receiver<Arc<RtpFrame>>) {
        let gop = self.gop.lock();
        let rx = match &*self.tx.lock() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        };
        (gop.frames.clone(), rx)
    }

    /// Counts frames a lagging viewer skipped (it waits for a keyframe): in
    /// the stream's `frames_skipped`, with every other reader's skips.
    pub fn skipped(&self, frames: u64) {
        if let Some(s) = self.source.upgrade() {
            s.stats().frames_skipped.fetch_add(frames, Ordering::Relaxed);
        }
    }

    /// Whether the stream this playout packetizes has ended.
    pub fn is_ended(&self) -> bool {
        self.tx.lock().is_none()
    }

    /// The stream ended: viewers drain what they have and see the feed
    /// close; the fast-start GOP is released.
    fn end(&self) {
        self.tx.lock().take();
        *self.gop.lock() = Gop::default();
        self.gauge.set(0);
    }

    /// Whether the stream was seen to reorder frames (B-frames), which
    /// WebRTC cannot carry.
    pub fn has_bframes(&self) -> bool {
        self.bframes.load(Ordering::Relaxed)
    }

    fn emit(&self, f: RtpFrame) {
        let f = Arc::new(f);
        let mut gop = self.gop.lock();
        if f.video && f.keyframe {
            *gop = Gop::default();
        }
        if gop.frames.len() < MAX_GOP && (!gop.frames.is_empty() || (f.video && f.keyframe)) {
            gop.bytes += f.packets.iter().map(|p| p.len()).sum::<usize>();
            gop.frames.push(f.clone());
        }
        self.gauge.set(gop.bytes);
        drop(gop);
        if let Some(tx) = &*self.tx.lock() {
            let _ = tx.send(f);
        }
    }
}

/// The frames since the last keyframe, for viewers who join now.
#[derive(Default)]
struct Gop {
    frames: Vec<Arc<RtpFrame>>,
    bytes: usize,
}

/// Every stream's playout: an on-demand kind of the media core's
/// [`Outputs`], started on a stream's first viewer and stopped after its
/// last (the packetizer holds its playout only weakly).
pub struct Playouts {
    outputs: Arc<Outputs<Playout>>,
}

impl Default for Playouts {
    fn default() -> Self {
        Playouts::new(Ledger::default())
    }
}

impl Playouts {
    /// No playouts yet; their GOPs will be accounted in `ledger`.
    pub fn new(ledger: Ledger) -> Playouts {
        let start: StartOutput<Playout> = Box::new(move |stream: Arc<Stream>| {
            let (tx, _) = broadcast::channel(BACKLOG);
            let p = Arc::new(Playout {
                stream: stream.name().to_owned(),
                tx: Mutex::new(Some(tx)),
                gop: Mutex::default(),
                gauge: ledger.gauge(stream.name(), "whep"),
                epoch: Instant::now(),
                bframes: AtomicBool::new(false),
                frames: AtomicU64::new(0),
                source: Arc::downgrade(&stream),
            });
            // Weak: the packetizer stops once no viewer holds the playout.
            let weak = Arc::downgrade(&p);
            let task: OutputTask<Playout> = Box::pin(async move {
                run(weak, stream).await;
                None
            });
            (p, task)
        });
        Playouts { outputs: Outputs::new("whep", Start::OnDemand, std::time::Duration::ZERO, start) }
    }

    /// The playout of `stream`, started if needed. A playout left over
    /// from an earlier stream of the same name is never reused.
    pub fn get(&self, stream: &Arc<Stream>) -> Arc<Playout> {
        self.outputs.get_or_start(stream)
    }
}

struct Packetizers {
    h264: H264Packetizer,
    avc: Option<h264::AvcConfig>,
    video: Option<u32>,
    audio: Option<u32>,
    base: Option<i64>,
}

/// Packetizes a stream until it ends or nobody watches.
async fn run(weak: Weak<Playout>, stream: Arc<Stream>) {
    let mut sub = stream.subscribe();
    let mut k = Packetizers { h264: H264Packetizer::default(), avc: None, video: None, audio: None, base: None };
    debug!(stream = stream.name(), "whep playout started");
    while let Some(ev) = sub.recv().await {
        let Some(p) = weak.upgrade() else { break };
        match ev {
            Event::Tracks(tracks) => {
                k.video = tracks.iter().find(|t| t.codec == Codec::H264).map(|t| t.id);
                k.audio = tracks.iter().find(|t| t.codec == Codec::Opus).map(|t| t.id);
                k.avc = tracks.iter().find(|t| t.codec == Codec::H264).and_then(|t| h264::parse_config(&t.config).ok());
                k.h264 = H264Packetizer::default();
            }
            Event::Frame(f) => {
                if let Some(rf) = packetize(&mut k, &p, &f) {
                    p.frames.fetch_add(1, Ordering::Relaxed);
                    p.emit(rf);
                }
            }
            Event::Discontinuity => {}
        }
    }
    if let Some(p) = weak.upgrade() {
        p.end();
    }
    info!(stream = stream.name(), "whep playout stopped");
}

fn packetize(k: &mut Packetizers, p: &Playout, f: &Frame) -> Option<RtpFrame> {
    let video = Some(f.track) == k.video;
    if !video && Some(f.track) != k.audio {
        return None;
    }
    let base = *k.base.get_or_insert(f.dts);
    let pts = f.pts() - base;
    let packets: Vec<Arc<[u8]>> = if video {
        if f.cts != 0 && !p.bframes.swap(true, Ordering::Relaxed) {
            warn!(stream = %p.stream, "the stream has B-frames, which WebRTC cannot carry: WHEP viewers will see stutter; publish with B-frames off (x264 -bf 0, or a baseline profile)");
        }
        let avc = k.avc.as_ref()?;
        let mut annexb = Vec::with_capacity(f.payload.len() + 64);
        if f.keyframe {
            for ps in avc.sps.iter().chain(&avc.pps) {
                annexb.extend_from_slice(&[0, 0, 0, 1]);
                annexb.extend_from_slice(ps);
            }
        }
        annexb.extend_from_slice(&nal::to_annexb(&f.payload, avc.length_size).ok()?);
        k.h264.packetize(PAYLOAD_MTU, &annexb).ok()?.into_iter().map(Arc::from).collect()
    } else {
        vec![Arc::from(&f.payload[..])]
    };
    if packets.is_empty() {
        return None;
    }
    let clock: i64 = if video { 90_000 } else { 48_000 };
    let rtp_time = (pts.max(0) as i128 * i128::from(clock) / i128::from(TIMESCALE)) as u32;
    Some(RtpFrame { video, rtp_time, pts_us: pts, keyframe: f.keyframe && video, packets })
}
