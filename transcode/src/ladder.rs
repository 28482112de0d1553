//! The ladder: the source's video track decoded once, each rung scaled
//! from the next larger picture (the source's, or the rung above's) on the
//! decode thread and encoded on a thread of its own, the results published
//! as tracks of the same stream (one clock, one keyframe index).
//!
//! Alignment: a rung's frame carries the source frame's presentation time,
//! and every source keyframe becomes a forced IDR in every rung. Decode
//! times are handed out in decode order from the source's own (a
//! keyframe's exactly its source's), so a rung's IDR has the same decode
//! time as the source keyframe that starts a segment, and the segmenter
//! cuts every rendition at the same instant.
//!
//! Isolation: the decoder reads the stream's ring like any viewer (a slow
//! ladder skips to the newest keyframe, the publisher never waits); each
//! rung has a bounded queue and, when it is full, leaves frames out until
//! the next keyframe (counted). An error or a panic ends this run of the
//! ladder only: its tracks are withdrawn, the reason is kept, and the
//! supervisor starts it again after a growing pause.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use ffmpeg_next as ff;
use parking_lot::Mutex;
use serde::Serialize;
use tidecast_codecs::access_unit;
use tidecast_media::{
    Codec, Event, Frame, MediaKind, Stream, Subscriber, Track, TrackId, TrackWriter, DERIVED_TRACK_BASE,
};
use tracing::{info, warn};

use crate::encoder::{self, OpenedEncoder};
use crate::profile::{PlannedRung, Profile};
use crate::supervise::{supervise, RunEnd, RunStats, Stop};

/// Frames a rung's queue holds before it starts leaving frames out.
pub const RUNG_QUEUE: usize = 8;

/// Counters of one rung.
#[derive(Debug, Default)]
pub struct RungStats {
    /// The rung's track id.
    pub track: TrackId,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// The encoder in use.
    pub encoder: Mutex<String>,
    /// Frames encoded and published.
    pub frames_out: AtomicU64,
    /// Bytes published.
    pub bytes_out: AtomicU64,
    /// Frames left out because the rung's queue was full (up to the next keyframe).
    pub dropped: AtomicU64,
    /// Microseconds spent scaling and encoding.
    pub busy_micros: AtomicU64,
    /// Times its encoder failed and the next candidate was opened.
    pub encoder_switches: AtomicU64,
}

/// Counters of one stream's ladder, shared with the API and `/metrics`.
#[derive(Debug, Default)]
pub struct LadderStats {
    /// The profile's name.
    pub profile: String,
    /// Runs, failures and the last error.
    pub runs: RunStats,
    /// Source frames handed to the decoder.
    pub frames_in: AtomicU64,
    /// Pictures the decoder produced.
    pub frames_decoded: AtomicU64,
    /// Source frames the decoder rejected.
    pub decode_errors: AtomicU64,
    /// Microseconds spent decoding.
    pub decode_micros: AtomicU64,
    /// The rungs of the current run.
    pub rungs: Mutex<Vec<Arc<RungStats>>>,
}

/// A snapshot of [`LadderStats`] for the API.
#[derive(Debug, Clone, Serialize)]
pub struct LadderReport {
    /// The profile's name.
    pub profile: String,
    /// Whether it is transcoding now.
    pub running: bool,
    /// Source frames handed to the decoder.
    pub frames_in: u64,
    /// Pictures decoded.
    pub frames_decoded: u64,
    /// Source frames the decoder rejected.
    pub decode_errors: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Seconds of one core spent decoding.
    pub decode_cpu_seconds: f64,
    /// Why the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Each rung.
    pub rungs: Vec<RungReport>,
}

/// One rung in a [`LadderReport`].
#[derive(Debug, Clone, Serialize)]
pub struct RungReport {
    /// Its track id in the stream.
    pub track: TrackId,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// The encoder in use.
    pub encoder: String,
    /// Frames published.
    pub frames_out: u64,
    /// Bytes published.
    pub bytes_out: u64,
    /// Frames left out on overload.
    pub dropped: u64,
    /// Seconds of one core spent scaling and encoding.
    pub encode_cpu_seconds: f64,
    /// Encoder failures that moved it to the next candidate.
    pub encoder_switches: u64,
}

impl LadderStats {
    /// What the API shows.
    pub fn report(&self) -> LadderReport {
        let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        LadderReport {
            profile: self.profile.clone(),
            running: self.runs.running.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_decoded: self.frames_decoded.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            failures: self.runs.failures.load(Ordering::Relaxed),
            decode_cpu_seconds: secs(&self.decode_micros),
            last_error: self.runs.last_error.lock().clone(),
            rungs: self
                .rungs
                .lock()
                .iter()
                .map(|r| RungReport {
                    track: r.track,
                    width: r.width,
                    height: r.height,
                    bitrate_kbps: r.bitrate_kbps,
                    encoder: r.encoder.lock().clone(),
                    frames_out: r.frames_out.load(Ordering::Relaxed),
                    bytes_out: r.bytes_out.load(Ordering::Relaxed),
                    dropped: r.dropped.load(Ordering::Relaxed),
                    encode_cpu_seconds: secs(&r.busy_micros),
                    encoder_switches: r.encoder_switches.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }
}

/// A running ladder; dropping it stops it and withdraws its tracks.
pub struct Ladder {
    stats: Arc<LadderStats>,
    stop: Stop,
}

impl std::fmt::Debug for Ladder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ladder").field("profile", &self.stats.profile).finish_non_exhaustive()
    }
}

/// What a ladder is started with.
#[derive(Debug, Clone)]
pub struct LadderSpec {
    /// The profile's name (for the API and logs).
    pub name: String,
    /// The rungs and encoder settings.
    pub profile: Profile,
    /// Encoders to try, best first (see [`crate::policy::choose`]).
    pub encoders: Vec<&'static str>,
    /// Frames each rung's queue holds ([`RUNG_QUEUE`] by default).
    pub queue: usize,
}

impl LadderSpec {
    /// A spec with the default queue length.
    pub fn new(name: &str, profile: Profile, encoders: Vec<&'static str>) -> LadderSpec {
        LadderSpec { name: name.to_owned(), profile, encoders, queue: RUNG_QUEUE }
    }
}

impl Ladder {
    /// Starts transcoding `stream`. It reads from the next keyframe the
    /// stream gets (or its newest, once it has some). `rt` is the runtime the
    /// stream's readers wake on.
    pub fn start(stream: Arc<Stream>, spec: LadderSpec, rt: tokio::runtime::Handle) -> std::io::Result<Ladder> {
        crate::init();
        let stats = Arc::new(LadderStats { profile: spec.name.clone(), ..LadderStats::default() });
        let stop = Stop::default();
        let first = stream.subscribe();
        let job = Job {
            stream: stream.clone(),
            profile: spec.profile,
            encoders: spec.encoders,
            queue: spec.queue.max(1),
            rt,
            stats: stats.clone(),
            stop: stop.clone(),
        };
        std::thread::Builder::new().name(format!("ladder-{}", short(stream.name()))).spawn(move || {
            supervise(&job.stream, &job.rt, &job.stop, &job.stats.runs, "ladder", first, |sub| {
                // A run's rungs are withdrawn with its writer.
                let writer = Arc::new(job.stream.derive_tracks());
                let end = job.run(sub, &writer);
                job.stats.rungs.lock().clear();
                end
            })
        })?;
        Ok(Ladder { stats, stop })
    }

    /// The ladder's counters.
    pub fn stats(&self) -> &Arc<LadderStats> {
        &self.stats
    }
}

impl Drop for Ladder {
    fn drop(&mut self) {
        // The thread notices within one frame or one wake-up; it is not
        // joined, so that dropping never blocks an async task.
        self.stop.stop();
    }
}

pub(crate) fn short(name: &str) -> String {
    name.chars().take(8).collect()
}

struct Job {
    stream: Arc<Stream>,
    profile: Profile,
    encoders: Vec<&'static str>,
    queue: usize,
    rt: tokio::runtime::Handle,
    stats: Arc<LadderStats>,
    stop: Stop,
}

impl Job {
    fn run(&self, mut sub: Subscriber, writer: &Arc<TrackWriter>) -> RunEnd {
        let mut source: Option<Track> = None;
        let mut decoder: Option<Decoder> = None;
        let mut rungs: Vec<RungLink> = Vec::new();
        let tracks = Arc::new(Mutex::new(Vec::<Track>::new()));
        while let Some(ev) = self.stop.next(&self.rt, &mut sub) {
            match ev {
                Event::Tracks(ts) => {
                    let next = ts.iter().find(|t| t.id < DERIVED_TRACK_BASE && t.kind() == MediaKind::Video).cloned();
                    let same = match (&source, &next) {
                        (Some(a), Some(b)) => a.id == b.id && a.codec == b.codec && a.config == b.config,
                        (None, None) => true,
                        _ => false,
                    };
                    if same {
                        continue;
                    }
                    rungs.clear(); // ends the rung threads
                    tracks.lock().clear();
                    writer.set_tracks(Vec::new());
                    decoder = None;
                    source = next;
                    if let Some(src) = &source {
                        match Decoder::open(src) {
                            Ok(d) => decoder = Some(d),
                            Err(e) => return RunEnd::Failed(e),
                        }
                    }
                }
                Event::Discontinuity => {
                    if let Some(d) = &mut decoder {
                        d.reset();
                    }
                    for r in &mut rungs {
                        r.need_key = true;
                    }
                }
                Event::Frame(f) => {
                    let (Some(src), Some(dec)) = (&source, &mut decoder) else { continue };
                    if f.track != src.id {
                        continue;
                    }
                    self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    let pictures = dec.decode(&f, &self.stats);
                    self.stats.decode_micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    for pic in pictures {
                        if rungs.is_empty() || dec.size_changed(&pic.frame) {
                            rungs.clear();
                            match self.open_rungs(src, &pic.frame, writer, &tracks) {
                                Ok(r) => rungs = r,
                                Err(e) => return RunEnd::Failed(e),
                            }
                            if rungs.is_empty() {
                                // The source is no larger than any rung.
                                continue;
                            }
                        }
                        // Each rung scales from the previous (larger) rung's
                        // picture when it has one: fewer pixels to read.
                        let mut larger: Option<ff::frame::Video> = None;
                        for r in &mut rungs {
                            if !r.wants(&pic) {
                                continue;
                            }
                            let from = larger
                                .as_ref()
                                .filter(|f| f.width() >= r.stats.width && f.height() >= r.stats.height)
                                .unwrap_or(&pic.frame);
                            match r.scale_and_send(&pic, from) {
                                Ok(scaled) => larger = Some(scaled),
                                Err(e) => return RunEnd::Failed(e),
                            }
                        }
                    }
                }
            }
        }
        RunEnd::Done
    }

    fn open_rungs(
        &self,
        src: &Track,
        pic: &ff::frame::Video,
        writer: &Arc<TrackWriter>,
        tracks: &Arc<Mutex<Vec<Track>>>,
    ) -> Result<Vec<RungLink>, String> {
        let fps = src.info.frame_rate.filter(|f| (1.0..=240.0).contains(f)).unwrap_or(30.0);
        let plan = self.profile.plan(pic.width(), pic.height());
        let mut links = Vec::new();
        let mut new_tracks = Vec::new();
        let mut stats = Vec::new();
        for (i, rung) in plan.iter().enumerate() {
            let id = DERIVED_TRACK_BASE + i as TrackId;
            let (opened, skipped) = open_first(&self.encoders, rung, &self.profile, fps)?;
            for (name, why) in skipped {
                warn!(stream = self.stream.name(), encoder = name, reason = %why, "transcode: encoder failed to open; trying the next");
            }
            let track = rung_track(id, &opened.config, rung, fps)?;
            let rs = Arc::new(RungStats {
                track: id,
                width: rung.width,
                height: rung.height,
                bitrate_kbps: rung.bitrate_kbps,
                encoder: Mutex::new(opened.name.to_owned()),
                ..RungStats::default()
            });
            info!(
                stream = self.stream.name(),
                width = rung.width,
                height = rung.height,
                kbps = rung.bitrate_kbps,
                encoder = opened.name,
                "transcode: rung started"
            );
            new_tracks.push(track);
            stats.push(rs.clone());
            let (tx, rx) = sync_channel(self.queue);
            let format = opened.format;
            let worker = RungWorker {
                index: i,
                rung: *rung,
                profile: self.profile.clone(),
                fps,
                encoders: self.encoders.clone(),
                enc: opened,
                writer: writer.clone(),
                tracks: tracks.clone(),
                stats: rs.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("rung{}-{}", rung.height, short(self.stream.name())))
                .spawn(move || worker.run(rx))
                .map_err(|e| format!("cannot start a rung thread: {e}"))?;
            links.push(RungLink {
                scaler: Scaler::new(rung.width, rung.height, format),
                tx: Some(tx),
                thread: Some(thread),
                need_key: true,
                min_gap_us: rung.max_fps.map(|f| (1e6 / f) as i64 - 1000),
                last_pts: None,
                stats: rs,
            });
        }
        *tracks.lock() = new_tracks.clone();
        writer.set_tracks(new_tracks);
        *self.stats.rungs.lock() = stats;
        Ok(links)
    }
}

/// Encoders passed over, each with the reason it did not open.
type Skipped = Vec<(&'static str, String)>;

/// Opens the first encoder of `candidates` that opens, with the reasons
/// of those that did not.
fn open_first(
    candidates: &[&'static str],
    rung: &PlannedRung,
    profile: &Profile,
    fps: f64,
) -> Result<(OpenedEncoder, Skipped), String> {
    let mut skipped = Vec::new();
    for name in candidates {
        match encoder::open(name, rung, profile, fps) {
            Ok(e) => return Ok((e, skipped)),
            Err(why) => skipped.push((*name, why)),
        }
    }
    let why: Vec<String> = skipped.iter().map(|(n, w)| format!("{n}: {w}")).collect();
    Err(format!("no encoder opened for {}x{} ({})", rung.width, rung.height, why.join("; ")))
}

fn rung_track(id: TrackId, config: &bytes::Bytes, rung: &PlannedRung, fps: f64) -> Result<Track, String> {
    let mut info = tidecast_codecs::describe(Codec::H264, config).map_err(|e| format!("encoder's avcC: {e}"))?;
    info.bitrate = Some(rung.bitrate_kbps * 1000);
    info.frame_rate = Some(rung.max_fps.map_or(fps, |m| m.min(fps)));
    Ok(Track { id, codec: Codec::H264, config: config.clone(), info })
}

/// A decoded picture with the times and the keyframe mark of its source frame.
struct Picture {
    frame: ff::frame::Video,
    pts: i64,
    dts: i64,
    key: bool,
}

struct Decoder {
    dec: ff::decoder::Video,
    times: DecodeTimes,
    size: Option<(u32, u32, ff::format::Pixel)>,
}

impl Decoder {
    fn open(track: &Track) -> Result<Decoder, String> {
        Ok(Decoder { dec: open_video_decoder(track)?, times: DecodeTimes::default(), size: None })
    }

    fn reset(&mut self) {
        self.dec.flush();
        self.times = DecodeTimes::default();
    }

    fn size_changed(&mut self, f: &ff::frame::Video) -> bool {
        let now = Some((f.width(), f.height(), f.format()));
        let changed = self.size.is_some() && self.size != now;
        self.size = now;
        changed
    }

    fn decode(&mut self, f: &Frame, stats: &LadderStats) -> Vec<Picture> {
        let mut packet = ff::Packet::copy(&f.payload);
        packet.set_pts(Some(f.pts()));
        packet.set_dts(Some(f.dts));
        if f.keyframe {
            packet.set_flags(ff::codec::packet::Flags::KEY);
        }
        self.times.input(f.pts(), f.dts, f.keyframe);
        if self.dec.send_packet(&packet).is_err() {
            stats.decode_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut out = Vec::new();
        loop {
            let mut frame = ff::frame::Video::empty();
            if self.dec.receive_frame(&mut frame).is_err() {
                break;
            }
            stats.frames_decoded.fetch_add(1, Ordering::Relaxed);
            let Some(pts) = frame.timestamp().or(frame.pts()) else { continue };
            let (dts, key) = self.times.output(pts);
            out.push(Picture { frame, pts, dts, key });
        }
        out
    }
}

/// An FFmpeg decoder for `track`'s video, its configuration record as
/// extradata, packet times in the media core's microseconds.
pub(crate) fn open_video_decoder(track: &Track) -> Result<ff::decoder::Video, String> {
    let id = match track.codec {
        Codec::H264 => ff::codec::Id::H264,
        Codec::H265 => ff::codec::Id::HEVC,
        Codec::Av1 => ff::codec::Id::AV1,
        Codec::Vp8 => ff::codec::Id::VP8,
        Codec::Vp9 => ff::codec::Id::VP9,
        other => return Err(format!("cannot decode {} video", other.name())),
    };
    let codec =
        ff::decoder::find(id).ok_or_else(|| format!("no {} decoder in this FFmpeg build", track.codec.name()))?;
    let mut ctx = ff::codec::context::Context::new_with_codec(codec);
    if !track.config.is_empty() {
        set_extradata(&mut ctx, &track.config)?;
    }
    let mut dec = ctx.decoder();
    dec.set_packet_time_base(encoder::TIME_BASE);
    dec.open_as(codec)
        .and_then(|o| o.video())
        .map_err(|e| format!("cannot open the {} decoder: {e}", track.codec.name()))
}

pub(crate) fn set_extradata(ctx: &mut ff::codec::context::Context, data: &[u8]) -> Result<(), String> {
    let len = i32::try_from(data.len()).map_err(|_| "codec configuration too large".to_owned())?;
    // SAFETY: FFmpeg owns `extradata` once set and frees it with the
    // context; it must come from av_malloc and carry zeroed padding, which
    // av_mallocz provides. The context is not open yet, so nothing reads it
    // concurrently.
    unsafe {
        let buf = ff::ffi::av_mallocz(data.len() + ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize) as *mut u8;
        if buf.is_null() {
            return Err("out of memory".into());
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        let c = ctx.as_mut_ptr();
        (*c).extradata = buf;
        (*c).extradata_size = len;
    }
    Ok(())
}

/// Hands out decode times to pictures that come out of a decoder in
/// presentation order: the smallest source decode time not yet given, and a
/// keyframe's own. Since every picture's presentation time is at least its
/// decode time, the times handed out never exceed the pictures'
/// presentation times, and a keyframe (after which nothing earlier is
/// shown) gets exactly its source's decode time.
#[derive(Debug, Default)]
pub(crate) struct DecodeTimes {
    pending: VecDeque<i64>,
    keys: VecDeque<(i64, i64)>,
    last: Option<i64>,
}

impl DecodeTimes {
    const MAX: usize = 128;

    pub(crate) fn input(&mut self, pts: i64, dts: i64, key: bool) {
        self.pending.push_back(dts);
        if key {
            self.keys.push_back((pts, dts));
        }
        while self.pending.len() > Self::MAX {
            self.pending.pop_front();
        }
        while self.keys.len() > Self::MAX {
            self.keys.pop_front();
        }
    }

    /// Decode time and keyframe mark of the picture shown at `pts`.
    pub(crate) fn output(&mut self, pts: i64) -> (i64, bool) {
        let (mut dts, key) = match self.keys.iter().position(|&(p, _)| p == pts) {
            Some(i) => {
                let (_, d) = self.keys[i];
                self.keys.drain(..=i);
                // Source frames before the keyframe that never came out
                // (the decoder dropped them) give their times up here.
                while self.pending.front().is_some_and(|&p| p <= d) {
                    self.pending.pop_front();
                }
                (d, true)
            }
            None => (self.pending.pop_front().unwrap_or(pts).min(pts), false),
        };
        if let Some(last) = self.last {
            if dts <= last {
                dts = (last + 1).min(pts);
            }
        }
        self.last = Some(dts);
        (dts, key)
    }
}

/// The decode side's end of one rung: it scales the pictures the rung
/// takes and queues them for the rung's encoder thread.
struct RungLink {
    scaler: Scaler,
    tx: Option<SyncSender<RungInput>>,
    thread: Option<JoinHandle<()>>,
    need_key: bool,
    min_gap_us: Option<i64>,
    last_pts: Option<i64>,
    stats: Arc<RungStats>,
}

impl RungLink {
    /// Whether the rung takes this picture: after a drop it waits for the
    /// next keyframe (counting what it leaves out), and its frame-rate cap
    /// leaves some out.
    fn wants(&mut self, pic: &Picture) -> bool {
        if pic.key || self.tx.is_none() {
            return self.tx.is_some();
        }
        if self.need_key {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match (self.min_gap_us, self.last_pts) {
            (Some(gap), Some(last)) => pic.pts - last >= gap,
            _ => true,
        }
    }

    /// Scales `from` (the decoded picture or a larger rung's) to the rung's
    /// size and queues it; when the queue is full the rung waits for the
    /// next keyframe. Returns the scaled picture for the next rung down.
    fn scale_and_send(&mut self, pic: &Picture, from: &ff::frame::Video) -> Result<ff::frame::Video, String> {
        let t0 = Instant::now();
        let scaled = self.scaler.run(from)?;
        self.stats.busy_micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        let frame = share(&scaled).ok_or("cannot reference a scaled picture")?;
        let Some(tx) = &self.tx else { return Ok(scaled) };
        match tx.try_send(RungInput { frame, pts: pic.pts, dts: pic.dts, key: pic.key }) {
            Ok(()) => {
                self.need_key = false;
                self.last_pts = Some(pic.pts);
                Ok(scaled)
            }
            Err(TrySendError::Full(_)) => {
                self.need_key = true;
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                Ok(scaled)
            }
            Err(TrySendError::Disconnected(_)) => Err(format!("the {}p rung stopped", self.stats.height)),
        }
    }
}

/// A software scaler to one output size and pixel format that rebuilds
/// itself when its input's size or format changes. Every call returns a
/// new picture, so the previous one may still be in an encoder's hands.
struct Scaler {
    out: (u32, u32, ff::format::Pixel),
    ctx: Option<(ff::software::scaling::Context, (u32, u32, ff::format::Pixel))>,
}

impl Scaler {
    fn new(width: u32, height: u32, format: ff::format::Pixel) -> Scaler {
        Scaler { out: (width, height, format), ctx: None }
    }

    fn run(&mut self, input: &ff::frame::Video) -> Result<ff::frame::Video, String> {
        let def = (input.width(), input.height(), input.format());
        if self.ctx.as_ref().is_none_or(|(_, d)| *d != def) {
            let (w, h, f) = self.out;
            let ctx = ff::software::scaling::Context::get(
                def.2,
                def.0,
                def.1,
                f,
                w,
                h,
                ff::software::scaling::Flags::BILINEAR,
            )
            .map_err(|e| format!("cannot scale {}x{} to {w}x{h}: {e}", def.0, def.1))?;
            self.ctx = Some((ctx, def));
        }
        let Some((ctx, _)) = self.ctx.as_mut() else { return Err("no scaler".into()) };
        let (w, h, f) = self.out;
        let mut out = ff::frame::Video::new(f, w, h);
        ctx.run(input, &mut out).map_err(|e| format!("scaling failed: {e}"))?;
        Ok(out)
    }
}

impl Drop for RungLink {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A new reference to the same picture buffers (no copy).
fn share(f: &ff::frame::Video) -> Option<ff::frame::Video> {
    let mut out = ff::frame::Video::empty();
    // SAFETY: both frames are valid AVFrames; `out` is empty, as
    // av_frame_ref requires, and takes its own references to the buffers.
    let rc = unsafe { ff::ffi::av_frame_ref(out.as_mut_ptr(), f.as_ptr()) };
    (rc >= 0).then_some(out)
}

struct RungInput {
    frame: ff::frame::Video,
    pts: i64,
    dts: i64,
    key: bool,
}

struct RungWorker {
    index: usize,
    rung: PlannedRung,
    profile: Profile,
    fps: f64,
    encoders: Vec<&'static str>,
    enc: OpenedEncoder,
    writer: Arc<TrackWriter>,
    tracks: Arc<Mutex<Vec<Track>>>,
    stats: Arc<RungStats>,
}

impl RungWorker {
    fn run(mut self, rx: Receiver<RungInput>) {
        // Pictures arrive scaled for the encoder the rung opened with; one
        // opened after a failure may want another pixel format.
        let mut convert = Scaler::new(self.rung.width, self.rung.height, self.enc.format);
        let mut times: VecDeque<(i64, i64)> = VecDeque::new();
        let mut wait_key = false;
        let mut packet = ff::Packet::empty();
        while let Ok(input) = rx.recv() {
            if wait_key && !input.key {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            wait_key = false;
            let t0 = Instant::now();
            let mut frame = input.frame;
            let want = (self.rung.width, self.rung.height, self.enc.format);
            if (frame.width(), frame.height(), frame.format()) != want {
                convert.out = want;
                frame = match convert.run(&frame) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!(error = %e, "transcode: the rung stops");
                        return;
                    }
                };
            }
            frame.set_pts(Some(input.pts));
            frame.set_kind(if input.key { ff::picture::Type::I } else { ff::picture::Type::None });
            times.push_back((input.pts, input.dts));
            if times.len() > 256 {
                times.pop_front();
            }
            if let Err(e) = self.enc.send(&frame) {
                if !self.switch_encoder(&e) {
                    return;
                }
                times.clear();
                wait_key = true;
                continue;
            }
            while self.enc.encoder.receive_packet(&mut packet).is_ok() {
                self.emit(&packet, &mut times);
            }
            self.stats.busy_micros.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
    }

    fn emit(&self, packet: &ff::Packet, times: &mut VecDeque<(i64, i64)>) {
        let Some(data) = packet.data() else { return };
        let Some(pts) = packet.pts() else { return };
        let mut dts = None;
        while let Some(&(p, d)) = times.front() {
            if p > pts {
                break;
            }
            times.pop_front();
            if p == pts {
                dts = Some(d);
                break;
            }
        }
        let dts = dts.unwrap_or(pts);
        let au = access_unit::split_annexb(Codec::H264, data);
        if au.data.is_empty() {
            return;
        }
        let frame = Frame {
            track: DERIVED_TRACK_BASE + self.index as TrackId,
            dts,
            cts: i32::try_from(pts - dts).unwrap_or(0),
            keyframe: au.keyframe || packet.is_key(),
            payload: au.data,
        };
        self.stats.frames_out.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_out.fetch_add(frame.payload.len() as u64, Ordering::Relaxed);
        self.writer.push(frame);
    }

    /// The encoder failed: opens the next candidate after it (the last one
    /// again if it was the last), announces its configuration, and the
    /// rung resumes at the next source keyframe. False if none opens.
    fn switch_encoder(&mut self, why: &str) -> bool {
        let at = self.encoders.iter().position(|n| *n == self.enc.name).unwrap_or(0);
        let rest: Vec<&'static str> = self.encoders[(at + 1).min(self.encoders.len().saturating_sub(1))..].to_vec();
        warn!(encoder = self.enc.name, error = why, "transcode: encoder failed; opening the next candidate");
        match open_first(&rest, &self.rung, &self.profile, self.fps) {
            Ok((enc, _)) => {
                self.stats.encoder_switches.fetch_add(1, Ordering::Relaxed);
                *self.stats.encoder.lock() = enc.name.to_owned();
                let id = DERIVED_TRACK_BASE + self.index as TrackId;
                if let Ok(track) = rung_track(id, &enc.config, &self.rung, self.fps) {
                    let mut all = self.tracks.lock();
                    if let Some(t) = all.iter_mut().find(|t| t.id == id) {
                        *t = track;
                    }
                    self.writer.set_tracks(all.clone());
                }
                self.enc = enc;
                true
            }
            Err(e) => {
                warn!(error = %e, "transcode: no encoder left for the rung; it stops");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_times_give_keyframes_their_own_and_never_pass_presentation() {
        // IBBP-like: decode order I(0) P(3) B(1) B(2) P(6) B(4) B(5), 10 µs a frame,
        // each shown 10 µs after decoding at the earliest.
        let frames = [
            (10, 0, true),
            (40, 10, false),
            (20, 20, false),
            (30, 30, false),
            (70, 40, false),
            (50, 50, false),
            (60, 60, false),
        ];
        let mut t = DecodeTimes::default();
        for (pts, dts, key) in frames {
            t.input(pts, dts, key);
        }
        let mut out = Vec::new();
        for pts in [10, 20, 30, 40, 50, 60, 70] {
            let (dts, key) = t.output(pts);
            assert!(dts <= pts, "dts {dts} after pts {pts}");
            out.push((dts, key));
        }
        assert_eq!(out[0], (0, true), "the keyframe keeps its decode time");
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "increasing: {out:?}");
    }

    #[test]
    fn a_failed_encoder_gives_way_to_the_next_that_opens() {
        crate::init();
        let publisher: tidecast_media::Publisher =
            tidecast_media::Publisher::standalone("switch", tidecast_media::StreamConfig::default());
        let writer = Arc::new(publisher.stream().derive_tracks());
        let rung = PlannedRung { width: 320, height: 180, bitrate_kbps: 300, max_fps: None };
        let profile = Profile::standard();
        let (first, _) = open_first(&["libx264"], &rung, &profile, 30.0).expect("x264 opens");
        let track = rung_track(DERIVED_TRACK_BASE, &first.config, &rung, 30.0).expect("a track");
        let stats = Arc::new(RungStats { encoder: Mutex::new("libx264".into()), ..RungStats::default() });
        let mut worker = RungWorker {
            index: 0,
            rung,
            profile,
            fps: 30.0,
            // The middle candidate cannot open: the switch goes past it.
            encoders: vec!["libx264", "h264_missing_for_this_test", "libx264"],
            enc: first,
            writer,
            tracks: Arc::new(Mutex::new(vec![track])),
            stats: stats.clone(),
        };
        assert!(worker.switch_encoder("injected failure"));
        assert_eq!(stats.encoder_switches.load(Ordering::Relaxed), 1);
        assert_eq!(*stats.encoder.lock(), "libx264");
        let mut frame = ff::frame::Video::new(worker.enc.format, 320, 180);
        frame.set_pts(Some(0));
        frame.set_kind(ff::picture::Type::I);
        worker.enc.send(&frame).expect("the new encoder takes pictures");
        // Past the last candidate there is nothing left to open.
        worker.encoders = vec!["h264_missing_for_this_test"];
        worker.enc.name = "h264_missing_for_this_test";
        assert!(!worker.switch_encoder("injected failure"));
    }

    #[test]
    fn a_dropped_picture_does_not_shift_the_next_keyframe() {
        let mut t = DecodeTimes::default();
        for i in 0..5 {
            t.input(i * 10, i * 10, i == 0);
        }
        t.input(50, 50, true);
        // Pictures 1 and 2 never come out.
        assert_eq!(t.output(0), (0, true));
        assert_eq!(t.output(30), (10, false));
        assert_eq!(t.output(40), (20, false));
        assert_eq!(t.output(50), (50, true), "resynchronised on the keyframe");
    }
}
