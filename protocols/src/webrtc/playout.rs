//! WHEP output: one packetizer per stream, shared by every viewer.
//!
//! A stream's frames are turned into RTP payloads once (H.264 with SPS/PPS
//! sent as STAP-A before each keyframe, Opus as is) and published, one
//! [`RtpFrame`] per frame, into a derived ring of the media core: the same
//! ring, keyframe index, bounds and skip counting as the stream itself. Each
//! payload is an `Arc<[u8]>` that every peer's str0m sender keeps for NACK
//! resends, so a payload exists once however many viewers there are; only
//! SRTP, which is per peer, copies it. A viewer starts at the ring's newest
//! keyframe (fast start: the current GOP at once, then the live packets); one
//! that falls out of the ring jumps to the newest keyframe, and the frames it
//! passed over are counted in the source stream's `frames_skipped`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use str0m::unversioned::{H264Packetizer, Packetizer};
use tidecast_codecs::{h264, nal};
use tidecast_media::outputs::{OutputTask, Outputs, Start, StartOutput};
use tidecast_media::{
    Codec, Entry, Event, Frame, Ledger, Publisher, Stream, StreamConfig, Subscriber, Track, TrackId, TIMESCALE,
};
use tracing::{debug, info, warn};

/// RTP payload size: leaves room for the RTP header, extensions and SRTP
/// under a 1200-byte datagram.
pub const PAYLOAD_MTU: usize = 1100;
/// How far behind the live edge a viewer may read before it jumps to the
/// newest keyframe (the ring also keeps the newest GOP whole, for fast start).
pub const LAG_ALLOWANCE: Duration = Duration::from_secs(1);
/// Hard cap on the packetized bytes one stream's ring keeps.
const MAX_BYTES: usize = 32 << 20;

/// One frame, packetized. Cloning it clones reference counts only.
#[derive(Debug, Clone)]
pub struct RtpFrame {
    /// The source track it came from.
    pub track: TrackId,
    /// Video (H.264) or audio (Opus).
    pub video: bool,
    /// RTP timestamp (90 kHz video, 48 kHz audio), same origin for both.
    pub rtp_time: u32,
    /// The frame's presentation time on the stream's clock, microseconds.
    pub pts_us: i64,
    /// Whether a decoder can start here (every audio frame can).
    pub keyframe: bool,
    /// The RTP payloads; the last one carries the marker bit (video).
    pub packets: Arc<[Arc<[u8]>]>,
    /// The payloads' total size.
    pub bytes: usize,
}

impl Entry for RtpFrame {
    fn track(&self) -> TrackId {
        self.track
    }
    fn dts(&self) -> i64 {
        self.pts_us
    }
    fn shift_dts(&mut self, by: i64) {
        self.pts_us = self.pts_us.saturating_add(by);
    }
    fn is_key(&self) -> bool {
        self.keyframe
    }
    fn size(&self) -> usize {
        self.bytes
    }
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

/// The H.264 track a WHEP viewer is sent: with `rendition` (a height, from
/// `?rendition=480p`), the stream's H.264 track of that height (a ladder's
/// rung, or the source's own); otherwise, or while the stream has none of
/// that height, the first H.264 track.
pub fn video_track(tracks: &[Track], rendition: Option<u32>) -> Option<&Track> {
    let mut h264 = tracks.iter().filter(|t| t.codec == Codec::H264);
    let first = h264.clone().next();
    rendition.and_then(|h| h264.find(|t| t.info.height == h)).or(first)
}

/// The heights of the stream's H.264 tracks, largest first: the
/// renditions a WHEP viewer can ask for.
pub fn renditions(tracks: &[Track]) -> Vec<u32> {
    let mut h: Vec<u32> = tracks.iter().filter(|t| t.codec == Codec::H264).map(|t| t.info.height).collect();
    h.sort_unstable_by(|a, b| b.cmp(a));
    h.dedup();
    h
}

/// Decides what of `tracks` WebRTC carries: the H.264 track
/// [`video_track`] picks and the first Opus track (a ladder's rung or the
/// audio bridge's track when the source's own cannot be carried).
/// `opus_coming`: the audio bridge has promised Opus, so AAC audio is not
/// worth a note.
pub fn carried(tracks: &[Track], rendition: Option<u32>, opus_coming: bool) -> Carried {
    let mut c = Carried::default();
    if let Some(t) = video_track(tracks, rendition) {
        c.video = true;
        if let Ok(cfg) = h264::parse_config(&t.config) {
            c.h264_profile = cfg.sps.first().and_then(|s| Some((*s.get(1)?, *s.get(2)?)));
        }
    }
    c.audio = tracks.iter().any(|t| t.codec == Codec::Opus);
    for t in tracks.iter().filter(|t| t.id < tidecast_media::DERIVED_TRACK_BASE) {
        match t.codec {
            Codec::H264 | Codec::Opus => {}
            Codec::Aac if !c.audio && !opus_coming => c.notes.push(
                "audio is AAC, which WebRTC cannot carry: playing video only (the audio bridge to Opus is off)".into(),
            ),
            Codec::Aac => {}
            other if other.kind() == tidecast_media::MediaKind::Video && !c.video => {
                c.notes.push(format!("video is {}, which WHEP does not send yet (H.264 only)", other.name()))
            }
            other if other.kind() == tidecast_media::MediaKind::Video => {}
            other => c.notes.push(format!("track {} ({}) is not sent", t.id, other.name())),
        }
    }
    c
}

/// The shared packetizer of one stream.
pub struct Playout {
    stream: String,
    /// The packetized frames, read by every viewer.
    ring: Arc<Stream<RtpFrame>>,
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
    /// A reader of the packetized frames from the newest keyframe on. Once
    /// the stream has ended it reads what is left and then ends.
    pub fn subscribe(&self) -> Subscriber<RtpFrame> {
        self.ring.subscribe()
    }

    /// Counts frames a lagging viewer skipped: in the source stream's
    /// `frames_skipped`, with every other reader's skips.
    pub fn skipped(&self, frames: u64) {
        if let Some(s) = self.source.upgrade() {
            s.stats().subscriber_skips.fetch_add(1, Ordering::Relaxed);
            s.stats().frames_skipped.fetch_add(frames, Ordering::Relaxed);
        }
    }

    /// Whether the stream this playout packetizes has ended.
    pub fn is_ended(&self) -> bool {
        self.ring.is_ended()
    }

    /// Packetized bytes held for viewers.
    pub fn buffered_bytes(&self) -> usize {
        self.ring.buffered_bytes()
    }

    /// Whether the stream was seen to reorder frames (B-frames), which
    /// WebRTC cannot carry.
    pub fn has_bframes(&self) -> bool {
        self.bframes.load(Ordering::Relaxed)
    }
}

/// Every stream's playouts: on-demand kinds of the media core's
/// [`Outputs`], one for the default video and one per rendition viewers
/// asked for, each started on its first viewer and stopped after its last
/// (the packetizer holds its playout only weakly).
pub struct Playouts {
    ledger: Ledger,
    /// By rendition height; `None` is the default video.
    kinds: Mutex<HashMap<Option<u32>, Arc<Outputs<Playout>>>>,
}

impl Default for Playouts {
    fn default() -> Self {
        Playouts::new(Ledger::default())
    }
}

impl Playouts {
    /// No playouts yet; their GOPs will be accounted in `ledger`.
    pub fn new(ledger: Ledger) -> Playouts {
        Playouts { ledger, kinds: Mutex::default() }
    }

    /// The playout of `stream` sending `rendition` (see [`video_track`]),
    /// started if needed. A playout left over from an earlier stream of the
    /// same name is never reused. Callers pass only heights the stream has,
    /// so there are as many kinds as distinct rung heights.
    pub fn get(&self, stream: &Arc<Stream>, rendition: Option<u32>) -> Arc<Playout> {
        let outputs = self.kinds.lock().entry(rendition).or_insert_with(|| self.kind(rendition)).clone();
        outputs.get_or_start(stream)
    }

    fn kind(&self, rendition: Option<u32>) -> Arc<Outputs<Playout>> {
        let ledger = self.ledger.clone();
        let start: StartOutput<Playout> = Box::new(move |stream: Arc<Stream>| {
            let cfg = StreamConfig { buffer: LAG_ALLOWANCE, max_bytes: MAX_BYTES };
            let publisher = Publisher::standalone_accounted(stream.name(), cfg, ledger.gauge(stream.name(), "whep"));
            let p = Arc::new(Playout {
                stream: stream.name().to_owned(),
                ring: publisher.stream().clone(),
                epoch: Instant::now(),
                bframes: AtomicBool::new(false),
                frames: AtomicU64::new(0),
                source: Arc::downgrade(&stream),
            });
            // Weak: the packetizer stops once no viewer holds the playout.
            let weak = Arc::downgrade(&p);
            let task: OutputTask<Playout> = Box::pin(async move {
                run(weak, stream, rendition, publisher).await;
                None
            });
            (p, task)
        });
        Outputs::new("whep", Start::OnDemand, std::time::Duration::ZERO, start)
    }
}

struct Packetizers {
    h264: H264Packetizer,
    avc: Option<h264::AvcConfig>,
    video: Option<u32>,
    /// The video track changed (a rung came or went): its frames wait for
    /// its next keyframe.
    video_wait_key: bool,
    audio: Option<u32>,
    base: Option<i64>,
}

/// Packetizes a stream (its `rendition`, see [`video_track`]) into `out`
/// until it ends or nobody watches. The task owns the publisher, so however
/// it ends (a panic included) the playout's ring ends and viewers see it.
async fn run(weak: Weak<Playout>, stream: Arc<Stream>, rendition: Option<u32>, out: Publisher<RtpFrame>) {
    let mut sub = stream.subscribe();
    let mut k = Packetizers {
        h264: H264Packetizer::default(),
        avc: None,
        video: None,
        video_wait_key: false,
        audio: None,
        base: None,
    };
    debug!(stream = stream.name(), ?rendition, "whep playout started");
    while let Some(ev) = sub.recv().await {
        let Some(p) = weak.upgrade() else { break };
        match ev {
            Event::Tracks(tracks) => {
                let video = video_track(&tracks, rendition);
                let audio = tracks.iter().find(|t| t.codec == Codec::Opus);
                if k.video.is_some() && k.video != video.map(|t| t.id) {
                    k.video_wait_key = true;
                }
                k.video = video.map(|t| t.id);
                k.audio = audio.map(|t| t.id);
                k.avc = video.and_then(|t| h264::parse_config(&t.config).ok());
                k.h264 = H264Packetizer::default();
                // The ring's tracks: what is carried, so that its lead (the
                // track whose keyframes viewers start at) is the video.
                let _ = out.set_tracks(video.into_iter().chain(audio).cloned().collect());
            }
            Event::Frame(f) => {
                if let Some(rf) = packetize(&mut k, &p, &f) {
                    p.frames.fetch_add(1, Ordering::Relaxed);
                    let _ = out.push(rf);
                }
            }
            Event::Discontinuity => {}
        }
    }
    info!(stream = stream.name(), "whep playout stopped");
}

fn packetize(k: &mut Packetizers, p: &Playout, f: &Frame) -> Option<RtpFrame> {
    let video = Some(f.track) == k.video;
    if !video && Some(f.track) != k.audio {
        return None;
    }
    if video && k.video_wait_key {
        if !f.keyframe {
            return None;
        }
        k.video_wait_key = false;
    }
    let base = *k.base.get_or_insert(f.dts);
    let pts = f.pts() - base;
    let packets: Arc<[Arc<[u8]>]> = if video {
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
        Arc::from([Arc::from(&f.payload[..])])
    };
    if packets.is_empty() {
        return None;
    }
    let clock: i64 = if video { 90_000 } else { 48_000 };
    let rtp_time = (pts.max(0) as i128 * i128::from(clock) / i128::from(TIMESCALE)) as u32;
    let bytes = packets.iter().map(|p| p.len()).sum();
    Some(RtpFrame { track: f.track, video, rtp_time, pts_us: pts, keyframe: f.keyframe, packets, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tidecast_media::{Registry, RegistryConfig, TrackInfo};

    fn tracks() -> Vec<Track> {
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
            0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
        ];
        let config = h264::build_config(&sps, &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44]).expect("avcC");
        vec![
            Track { id: 0, codec: Codec::H264, config: config.into(), info: TrackInfo::default() },
            Track { id: 1, codec: Codec::Opus, config: Bytes::new(), info: TrackInfo::default() },
        ]
    }

    /// One length-prefixed NAL unit of `len` bytes (an IDR slice or not).
    fn access_unit(key: bool, len: usize) -> Bytes {
        let mut au = (len as u32).to_be_bytes().to_vec();
        au.push(if key { 0x65 } else { 0x41 });
        au.resize(4 + len, 0x5a);
        Bytes::from(au)
    }

    /// Pushes `n` video frames (25 fps, a keyframe every `gop`) with an Opus
    /// frame after each, from frame `from` on.
    fn publish(p: &tidecast_media::Publisher, from: i64, n: i64, gop: i64) {
        for i in from..from + n {
            let dts = i * 40_000;
            p.push(Frame { track: 0, dts, cts: 0, keyframe: i % gop == 0, payload: access_unit(i % gop == 0, 3000) })
                .expect("push");
            p.push(Frame { track: 1, dts, cts: 0, keyframe: true, payload: Bytes::from_static(&[0xfc, 1, 2]) })
                .expect("push");
        }
    }

    fn next_frame(s: &mut Subscriber<RtpFrame>) -> Option<RtpFrame> {
        loop {
            match s.try_recv()? {
                Event::Frame(f) => return Some(f),
                _ => continue,
            }
        }
    }

    /// Lets the packetizer (on this single-threaded runtime) handle `n`
    /// frames; it has nothing else to wait for, so a bounded number of turns
    /// is enough.
    async fn packetized(p: &Playout, n: u64) {
        for _ in 0..10_000 {
            if p.frames.load(Ordering::Relaxed) >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the packetizer handled {} frames, not {n}", p.frames.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_viewer_starts_at_the_newest_keyframe_with_parameter_sets_and_shares_payloads() {
        let registry = Registry::new(RegistryConfig::default());
        let publisher = registry.publish("cam").expect("publish");
        publisher.set_tracks(tracks()).expect("tracks");
        let playouts = Playouts::default();
        let playout = playouts.get(publisher.stream(), None);
        // The packetizer reads from the first frame on once it has started.
        publish(&publisher, 0, 1, 50);
        packetized(&playout, 2).await;
        publish(&publisher, 1, 59, 50);
        packetized(&playout, 120).await;

        let mut a = playout.subscribe();
        let mut b = playout.subscribe();
        let first = next_frame(&mut a).expect("a frame");
        assert!(first.video && first.keyframe, "a viewer starts at a video keyframe");
        assert_eq!(first.rtp_time, 50 * 40 * 90, "the newest keyframe (frame 50), on the 90 kHz clock");
        // SPS and PPS go first, aggregated in one STAP-A (NAL type 24).
        assert_eq!(first.packets[0][0] & 0x1f, 24, "STAP-A first");
        assert!(first.packets.len() >= 3, "a 3000-byte IDR takes several FU-A packets");
        let same = next_frame(&mut b).expect("a frame");
        assert!(Arc::ptr_eq(&first.packets[1], &same.packets[1]), "viewers share one packetized payload");
        let audio = next_frame(&mut a).expect("the audio after it");
        assert!(!audio.video && audio.rtp_time == 50 * 40 * 48, "Opus on the 48 kHz clock");
        assert_eq!(&audio.packets[0][..], &[0xfc, 1, 2]);
        assert!(playout.buffered_bytes() > 0);
    }

    #[tokio::test]
    async fn a_viewer_that_falls_behind_jumps_to_the_newest_keyframe_and_the_skip_is_counted() {
        let registry = Registry::new(RegistryConfig::default());
        let publisher = registry.publish("cam").expect("publish");
        publisher.set_tracks(tracks()).expect("tracks");
        let playouts = Playouts::default();
        let playout = playouts.get(publisher.stream(), None);
        publish(&publisher, 0, 1, 25);
        packetized(&playout, 2).await;
        let mut slow = playout.subscribe();
        assert!(next_frame(&mut slow).is_some_and(|f| f.keyframe));
        // Ten seconds later, with a keyframe every second, the slow viewer's
        // position is long gone from the ring.
        publish(&publisher, 1, 250, 25);
        packetized(&playout, 502).await;
        let mut saw_jump = false;
        let frame = loop {
            match slow.try_recv().expect("an event") {
                Event::Discontinuity => saw_jump = true,
                Event::Frame(f) => break f,
                Event::Tracks(_) => {}
            }
        };
        assert!(saw_jump, "the jump is announced");
        assert!(frame.video && frame.keyframe && frame.rtp_time == 250 * 40 * 90, "it resumes at the newest keyframe");
        assert!(slow.skipped() > 400, "the frames passed over are counted: {}", slow.skipped());
        playout.skipped(slow.skipped());
        let stats = publisher.stream().stats();
        assert_eq!(stats.frames_skipped.load(Ordering::Relaxed), slow.skipped(), "in the source stream's counter");
    }

    #[tokio::test]
    async fn viewers_read_to_the_end_of_the_stream_and_then_stop() {
        let registry = Registry::new(RegistryConfig { grace: Duration::ZERO, ..Default::default() });
        let publisher = registry.publish("cam").expect("publish");
        publisher.set_tracks(tracks()).expect("tracks");
        let playouts = Playouts::default();
        let playout = playouts.get(publisher.stream(), None);
        publish(&publisher, 0, 1, 50);
        packetized(&playout, 2).await;
        publish(&publisher, 1, 9, 50);
        packetized(&playout, 20).await;
        let mut viewer = playout.subscribe();
        drop(publisher);
        let mut frames = 0;
        while let Some(ev) = viewer.recv().await {
            frames += matches!(ev, Event::Frame(_)) as u32;
        }
        assert_eq!(frames, 20, "every packetized frame, then the end");
        assert!(playout.is_ended());
    }
}
