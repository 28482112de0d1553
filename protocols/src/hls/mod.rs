//! LL-HLS: packaged once per stream, served to every viewer from memory.
//!
//! [`HlsHub`] follows the [`Registry`]: for each stream that starts it runs a
//! packager task that subscribes to the stream and builds CMAF segments and
//! parts per rendition (one per track). HTTP handlers ask the hub for
//! playlists (blocking reload and delta updates included), init segments,
//! segments and parts; a part still being produced is streamed as its chunks
//! are written.

pub mod playlist;
pub mod read;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream as FutStream;
use parking_lot::{Mutex, RwLock};
use tidecast_media::outputs::{OutputTask, Outputs, Start, StartOutput};
use tidecast_media::{Registry, Stream};

use crate::cmaf::SegmenterConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use crate::cmaf::{Part, Rendition, Segment, Segmenter};
pub use playlist::Skip;

/// LL-HLS settings.
#[derive(Clone, Debug)]
pub struct HlsConfig {
    /// Target segment duration; segments start at keyframes, so a longer GOP
    /// makes longer segments.
    pub segment_target: Duration,
    /// Target part duration.
    pub part_target: Duration,
    /// Complete segments listed in a media playlist.
    pub window: usize,
    /// How many of the newest segments list their parts.
    pub parts_segments: usize,
    /// How long an ended stream's playlists stay up.
    pub linger: Duration,
    /// Cap on the bytes one stream's window holds, all renditions together;
    /// beyond it (or beyond `window` x `segment_target` of media) the oldest
    /// segments leave early, never below three target durations.
    pub max_bytes: usize,
    /// How far back viewers may rewind a stream whose settings do not say
    /// (a DVR window); zero: `window` segments.
    pub dvr: Duration,
    /// Where DVR windows longer than `window` segments are kept (a folder
    /// on a disk); `None`: in memory, within `max_bytes`.
    pub dvr_dir: Option<std::path::PathBuf>,
    /// Cap on the bytes one stream's window on disk holds.
    pub dvr_max_bytes: usize,
    /// Set by [`HlsConfig::with_dvr`] for a window kept on disk.
    pub disk: Option<crate::cmaf::segmenter::DiskWindow>,
}

impl HlsConfig {
    /// These settings for a stream that keeps `dvr` of media: a window of
    /// enough segments to cover it (never fewer than `window`). The byte
    /// cap still applies.
    ///
    /// A window longer than the node's (`window` segments) is kept on disk
    /// when there is a `dvr_dir`: only the node's window of the newest
    /// media stays in memory, and the byte cap is `dvr_max_bytes`.
    pub fn with_dvr(&self, dvr: Duration) -> HlsConfig {
        let target = self.segment_target.as_secs_f64().max(0.001);
        let needed = (dvr.as_secs_f64() / target).ceil() as usize;
        match &self.dvr_dir {
            Some(dir) if needed > self.window => HlsConfig {
                window: needed,
                max_bytes: self.dvr_max_bytes,
                disk: Some(crate::cmaf::segmenter::DiskWindow {
                    dir: dir.clone(),
                    hot: self.segment_target * u32::try_from(self.window).unwrap_or(u32::MAX),
                }),
                ..self.clone()
            },
            _ => HlsConfig { window: self.window.max(needed), ..self.clone() },
        }
    }

    /// How the segmenter cuts and keeps the stream for these settings.
    pub fn segmenter(&self) -> SegmenterConfig {
        SegmenterConfig {
            segment_target: self.segment_target,
            part_target: self.part_target,
            window: self.window,
            max_bytes: self.max_bytes,
            disk: self.disk.clone(),
        }
    }
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            segment_target: Duration::from_secs(2),
            part_target: Duration::from_millis(200),
            window: 10,
            parts_segments: 3,
            linger: Duration::from_secs(30),
            max_bytes: 64 << 20,
            dvr: Duration::ZERO,
            dvr_dir: None,
            dvr_max_bytes: 4 << 30,
            disk: None,
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Why a request cannot be answered; each maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HlsError {
    /// No such stream, rendition, segment or part (404).
    #[error("not found")]
    NotFound,
    /// A request the spec says to refuse, e.g. `_HLS_msn` too far ahead (400).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// A blocking request that did not come true in time (503).
    #[error("the requested segment or part did not become available in time")]
    Timeout,
}

/// What a media playlist request asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaylistRequest {
    /// `_HLS_msn`.
    pub msn: Option<u64>,
    /// `_HLS_part`.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` (or `v2`).
    pub skip: Skip,
}

impl PlaylistRequest {
    /// Parses the LL-HLS query parameters from a raw query string.
    pub fn parse(query: &str) -> Result<PlaylistRequest, HlsError> {
        let mut req = PlaylistRequest::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "_HLS_msn" => req.msn = Some(v.parse().map_err(|_| HlsError::BadRequest("_HLS_msn is not a number"))?),
                "_HLS_part" => {
                    req.part = Some(v.parse().map_err(|_| HlsError::BadRequest("_HLS_part is not a number"))?)
                }
                "_HLS_skip" => {
                    req.skip = match v {
                        "YES" | "v2" => Skip::Yes,
                        _ => return Err(HlsError::BadRequest("_HLS_skip must be YES or v2")),
                    }
                }
                _ => {} // other parameters (tokens, cache busters) are not ours
            }
        }
        if req.part.is_some() && req.msn.is_none() {
            return Err(HlsError::BadRequest("_HLS_part needs _HLS_msn"));
        }
        Ok(req)
    }
}

/// What a file name under `/hls/{stream}/` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    /// `index.m3u8`.
    Multivariant,
    /// `{rendition}.m3u8`.
    Playlist(String),
    /// `{rendition}-{run}-i{version}.mp4`.
    Init(String, String, u32),
    /// `{rendition}-{run}-{msn}.m4s`.
    Segment(String, String, u64),
    /// `{rendition}-{run}-{msn}.{part}.m4s`.
    Part(String, String, u64, usize),
}

impl Resource {
    /// Parses a file name; `None` for names we never hand out.
    pub fn parse(file: &str) -> Option<Resource> {
        if file == "index.m3u8" {
            return Some(Resource::Multivariant);
        }
        if let Some(r) = file.strip_suffix(".m3u8") {
            return (!r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
                .then(|| Resource::Playlist(r.to_owned()));
        }
        let mut it = file.splitn(3, '-');
        let (r, run, rest) = (it.next()?.to_owned(), it.next()?.to_owned(), it.next()?);
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !plain(&r) || !plain(&run) {
            return None;
        }
        if let Some(v) = rest.strip_prefix('i').and_then(|v| v.strip_suffix(".mp4")) {
            return Some(Resource::Init(r, run, v.parse().ok()?));
        }
        let rest = rest.strip_suffix(".m4s")?;
        match rest.split_once('.') {
            Some((msn, part)) => Some(Resource::Part(r, run, msn.parse().ok()?, part.parse().ok()?)),
            None => Some(Resource::Segment(r, run, rest.parse().ok()?)),
        }
    }
}

/// What a stream's window (its DVR window) holds now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowState {
    /// Seconds of media from the oldest complete segment to the newest
    /// (the longest rendition).
    pub seconds: f64,
    /// Bytes of every rendition's complete segments.
    pub bytes: u64,
    /// Of those, bytes kept on disk only.
    pub disk_bytes: u64,
    /// Seconds of the oldest media that are on disk only.
    pub disk_seconds: f64,
    /// Whether the window is kept on disk (see [`HlsConfig::with_dvr`]).
    pub on_disk: bool,
    /// The window's configured length, seconds (segments x target).
    pub configured_seconds: f64,
}

/// One stream's LL-HLS output.
pub struct HlsStream {
    name: String,
    run: String,
    cfg: HlsConfig,
    state: RwLock<Segmenter>,
    /// Bumped at every change (each chunk written): what streams a part or
    /// a forming segment waits on.
    version: watch::Sender<u64>,
    /// Bumped only when the segmenter's layout changes (a part or segment
    /// starts or ends, tracks change, the stream ends): what playlist and
    /// MPD requests wait on, so a blocked request wakes a few times per
    /// second, not at every frame.
    layout: watch::Sender<u64>,
    /// The window's bytes in the node's ledger, for as long as it lingers.
    gauge: Mutex<Option<tidecast_media::Gauge>>,
    /// Counts changes to the segmenter, bumped under its write lock, so that
    /// a reader holding the read lock sees the count of the state it reads.
    changes: AtomicU64,
    /// Media playlists rendered at a given change count: every blocked
    /// reload that wakes for the same part gets the same text, rendered once.
    playlists: Mutex<Vec<RenderedPlaylist>>,
}

/// A media playlist as rendered for one state of the segmenter.
#[derive(Debug)]
struct RenderedPlaylist {
    rendition: String,
    skip: Skip,
    changes: u64,
    text: Bytes,
}

impl std::fmt::Debug for HlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsStream").field("name", &self.name).field("run", &self.run).finish_non_exhaustive()
    }
}

impl HlsStream {
    fn new(name: String, cfg: HlsConfig) -> HlsStream {
        let run = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64 % 0xffff_ffff);
        HlsStream {
            name,
            run: format!("{run:x}"),
            state: RwLock::new(Segmenter::new(cfg.segmenter())),
            cfg,
            version: watch::channel(0).0,
            layout: watch::channel(0).0,
            gauge: Mutex::new(None),
            changes: AtomicU64::new(0),
            playlists: Mutex::new(Vec::new()),
        }
    }

    /// Keeps `gauge` until this output is dropped (the end of its linger).
    fn keep_gauge(&self, gauge: tidecast_media::Gauge) {
        *self.gauge.lock() = Some(gauge);
    }

    /// The stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the window holds now (walks it: for reports, not per frame).
    pub fn window_state(&self) -> WindowState {
        self.read(|p| {
            let mut w = WindowState {
                on_disk: self.cfg.disk.is_some(),
                configured_seconds: self.cfg.window as f64 * self.cfg.segment_target.as_secs_f64(),
                ..WindowState::default()
            };
            for r in &p.renditions {
                let complete = r.segments.iter().filter(|s| s.complete);
                w.seconds = w.seconds.max(complete.clone().map(|s| s.duration).sum());
                w.bytes += complete.map(|s| s.bytes() as u64).sum::<u64>();
                w.disk_bytes += r.disk_bytes() as u64;
                let cold = r.segments.iter().take(r.disk_segments()).map(|s| s.duration).sum();
                w.disk_seconds = w.disk_seconds.max(cold);
            }
            w
        })
    }

    /// Token in every file name of this run of the stream, so that a stream
    /// restarted under the same name never serves stale cached files.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Applies `f` to the segmenter and wakes waiting requests. The wall
    /// clock of this moment anchors media time once the first segment starts.
    pub fn update<R>(&self, f: impl FnOnce(&mut Segmenter) -> R) -> R {
        let mut state = self.state.write();
        let before = state.layout();
        let r = f(&mut state);
        if state.epoch_ms.is_none() {
            state.anchor(unix_ms());
        }
        let moved = state.layout() != before;
        self.changes.fetch_add(1, Ordering::Relaxed);
        drop(state);
        self.version.send_modify(|v| *v += 1);
        if moved {
            self.layout.send_modify(|v| *v += 1);
        }
        r
    }

    /// Reads the packager.
    pub fn read<R>(&self, f: impl FnOnce(&Segmenter) -> R) -> R {
        f(&self.state.read())
    }

    fn block_timeout(&self) -> Duration {
        let target = self.read(|p| playlist::target_duration(&self.cfg, p));
        Duration::from_secs(3 * target)
    }

    /// Waits until `ready` holds (re-checked at every packager change), for
    /// at most three target durations.
    async fn wait_for<T>(&self, ready: impl FnMut(&Segmenter) -> Option<T>) -> Result<T, HlsError> {
        self.wait_within(self.block_timeout(), ready).await
    }

    /// Waits until `ready` holds, for at most `limit`.
    async fn wait_within<T>(
        &self,
        limit: Duration,
        mut ready: impl FnMut(&Segmenter) -> Option<T>,
    ) -> Result<T, HlsError> {
        let mut rx = self.layout.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            rx.borrow_and_update();
            if let Some(v) = ready(&self.state.read()) {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(HlsError::Timeout),
            }
        }
    }

    /// How long a first request waits for the stream to settle: about one
    /// segment (the configured target, or the longest GOP seen) plus a margin.
    fn settle_hold(&self) -> Duration {
        let target = self.read(|p| playlist::target_duration(&self.cfg, p));
        Duration::from_secs(target) + Duration::from_secs(1)
    }

    /// Holds a first request until `settled` is true or the stream has ended,
    /// for at most [`settle_hold`](Self::settle_hold); then the caller answers
    /// with what exists. A player that joins the moment a stream appears gets
    /// a complete answer (every track, a whole segment), not the first part.
    async fn settle(&self, settled: impl Fn(&Segmenter) -> bool) {
        let hold = self.settle_hold();
        let _ = self.wait_within(hold, |p| (p.ended || settled(p)).then_some(())).await;
    }

    /// The multivariant playlist, once the stream has media. Early in a
    /// stream it waits until every rendition holds a whole segment (see
    /// [`Segmenter::settled`]), so that the variant lists every track.
    pub async fn multivariant(&self) -> Result<String, HlsError> {
        self.settle(Segmenter::settled).await;
        self.wait_for(|p| p.renditions.first().filter(|r| r.last_part().is_some()).map(|_| playlist::multivariant(p)))
            .await
    }

    /// A media playlist, blocking per `_HLS_msn` / `_HLS_part`.
    pub async fn media_playlist(&self, rendition: &str, req: PlaylistRequest) -> Result<String, HlsError> {
        let text = self.media_playlist_shared(rendition, req).await?;
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    /// The text of `rendition`'s playlist in the state `p` (read under the
    /// read lock), rendered once per state and shared.
    fn rendered(&self, p: &Segmenter, r: &Rendition, skip: Skip) -> Bytes {
        let changes = self.changes.load(Ordering::Relaxed);
        let mut cache = self.playlists.lock();
        if let Some(c) = cache.iter().find(|c| c.rendition == r.name && c.skip == skip && c.changes == changes) {
            return c.text.clone();
        }
        let text = Bytes::from(playlist::media(&self.cfg, p, r, &self.run, skip));
        match cache.iter_mut().find(|c| c.rendition == r.name && c.skip == skip) {
            Some(c) => (c.changes, c.text) = (changes, text.clone()),
            None => cache.push(RenderedPlaylist { rendition: r.name.clone(), skip, changes, text: text.clone() }),
        }
        text
    }

    /// [`media_playlist`](Self::media_playlist), as the bytes every request
    /// for the same state shares.
    pub async fn media_playlist_shared(&self, rendition: &str, req: PlaylistRequest) -> Result<Bytes, HlsError> {
        if self.read(|p| p.rendition(rendition).is_none()) {
            // The rendition may not exist yet right after the publish starts.
            self.wait_for(|p| p.rendition(rendition).map(|_| ())).await.map_err(|_| HlsError::NotFound)?;
        }
        if req.msn.is_none() {
            // A first load (no blocking request yet): a plain HLS client reads
            // only whole segments, so let the first one complete.
            self.settle(|p| p.rendition(rendition).is_some_and(|r| r.last_msn().is_some())).await;
        }
        if let Some(msn) = req.msn {
            let last = self.read(|p| p.rendition(rendition).and_then(|r| r.open().map(|s| s.msn)));
            if let Some(open) = last {
                // The spec: more than two segments ahead of the playlist is a 400.
                if msn > open + 2 {
                    return Err(HlsError::BadRequest("_HLS_msn is more than two segments ahead"));
                }
            }
        }
        let name = rendition.to_owned();
        self.wait_for(move |p| {
            let r = p.rendition(&name)?;
            r.last_part()?;
            if !p.ended {
                if let Some(msn) = req.msn {
                    let satisfied = match req.part {
                        None => r.last_msn().is_some_and(|m| m >= msn),
                        Some(part) => {
                            r.last_msn().is_some_and(|m| m >= msn)
                                || r.segment(msn).is_some_and(|s| {
                                    s.parts.get(part as usize).is_some_and(|p| p.complete && !p.chunks.is_empty())
                                })
                        }
                    };
                    if !satisfied {
                        return None;
                    }
                }
            }
            Some(self.rendered(p, r, req.skip))
        })
        .await
    }

    /// An init segment.
    pub fn init(&self, rendition: &str, run: &str, version: u32) -> Result<Bytes, HlsError> {
        if run != self.run {
            return Err(HlsError::NotFound);
        }
        self.read(|p| p.rendition(rendition).and_then(|r| r.inits.get(&version).cloned())).ok_or(HlsError::NotFound)
    }

    /// A complete segment, as the chunks to write.
    pub fn segment(&self, rendition: &str, run: &str, msn: u64) -> Result<Vec<Bytes>, HlsError> {
        if run != self.run {
            return Err(HlsError::NotFound);
        }
        self.read(|p| {
            // A gap has no media: 404, as for a segment never made.
            let seg = p.rendition(rendition)?.segment(msn).filter(|s| s.complete && !s.gap)?;
            if let Some(whole) = &seg.whole {
                return Some(vec![whole.clone()]);
            }
            Some(seg.parts.iter().flat_map(|p| p.chunks.iter().cloned()).collect())
        })
        .ok_or(HlsError::NotFound)
    }

    /// A complete part in one piece, if it is complete and held as one.
    pub fn complete_part(&self, rendition: &str, run: &str, msn: u64, part: usize) -> Option<Bytes> {
        if run != self.run {
            return None;
        }
        self.read(|p| {
            let pt = p.rendition(rendition)?.segment(msn)?.parts.get(part)?;
            pt.whole.clone().filter(|_| pt.complete)
        })
    }

    /// A part, streamed as it is produced: the returned stream yields its
    /// chunks as they are written and ends when the part is complete. A part
    /// not yet started is waited for if it is the next one (the preload hint).
    pub async fn part(
        self: &Arc<Self>,
        rendition: &str,
        run: &str,
        msn: u64,
        part: usize,
    ) -> Result<impl FutStream<Item = Bytes> + Send + 'static, HlsError> {
        if run != self.run {
            return Err(HlsError::NotFound);
        }
        let exists = |p: &Segmenter| -> Option<bool> {
            let r = p.rendition(rendition)?;
            match r.segment(msn) {
                Some(s) if part < s.parts.len() => Some(true),
                Some(s) if !s.complete && part == s.parts.len() => Some(false), // next part: wait
                Some(_) => None,
                None => {
                    let open = r.open()?;
                    (msn == open.msn + 1 && part == 0).then_some(false)
                }
            }
        };
        match self.read(exists) {
            None => return Err(HlsError::NotFound),
            Some(false) => {
                let r = rendition.to_owned();
                self.wait_for(move |p| {
                    let seg = p.rendition(&r)?.segment(msn)?;
                    seg.parts.get(part).map(|_| ())
                })
                .await?;
            }
            Some(true) => {}
        }
        let this = self.clone();
        let r = rendition.to_owned();
        let rx = self.version.subscribe();
        let state = (this, r, rx, 0usize, std::collections::VecDeque::<Bytes>::new());
        Ok(futures_util::stream::unfold(state, move |(this, r, mut rx, sent, mut queue)| async move {
            loop {
                if let Some(chunk) = queue.pop_front() {
                    // Each chunk is a frame payload or a fragment header, handed
                    // to the socket as is.
                    return Some((chunk, (this, r, rx, sent, queue)));
                }
                rx.borrow_and_update();
                let (chunks, complete) = this.read(|p| {
                    let Some(pt) = p.rendition(&r).and_then(|r| r.segment(msn)).and_then(|s| s.parts.get(part)) else {
                        return (Vec::new(), true);
                    };
                    (pt.bytes_from(sent), pt.complete || p.ended)
                });
                if !chunks.is_empty() {
                    let sent = sent + chunks.iter().map(Bytes::len).sum::<usize>();
                    queue.extend(chunks);
                    let chunk = queue.pop_front()?;
                    return Some((chunk, (this, r, rx, sent, queue)));
                }
                if complete {
                    return None;
                }
                if tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.is_err() {
                    return None;
                }
            }
        }))
    }
}

impl HlsStream {
    /// A whole segment as it is produced, for LL-DASH: its parts' chunks so
    /// far, then each chunk as it is written, until the segment completes.
    /// The segment after the open one is waited for (it is inside DASH's
    /// availability window once the open one is nearly done). `None` in the
    /// stream's place: the segment is complete (serve it whole) or unknown.
    pub async fn forming_segment(
        self: &Arc<Self>,
        rendition: &str,
        run: &str,
        msn: u64,
    ) -> Result<impl FutStream<Item = Bytes> + Send + 'static, HlsError> {
        if run != self.run {
            return Err(HlsError::NotFound);
        }
        let known = |p: &Segmenter| -> Option<bool> {
            let r = p.rendition(rendition)?;
            match r.segment(msn) {
                Some(_) => Some(true),
                None => {
                    let open = r.open()?;
                    (msn == open.msn + 1 && !p.ended).then_some(false)
                }
            }
        };
        match self.read(known) {
            None => return Err(HlsError::NotFound),
            Some(false) => {
                let r = rendition.to_owned();
                self.wait_for(move |p| p.rendition(&r)?.segment(msn).map(|_| ())).await?;
            }
            Some(true) => {}
        }
        let this = self.clone();
        let r = rendition.to_owned();
        let rx = self.version.subscribe();
        // (part index, bytes of it sent)
        let state = (this, r, rx, (0usize, 0usize), std::collections::VecDeque::<Bytes>::new());
        Ok(futures_util::stream::unfold(state, move |(this, r, mut rx, mut at, mut queue)| async move {
            loop {
                if let Some(chunk) = queue.pop_front() {
                    return Some((chunk, (this, r, rx, at, queue)));
                }
                rx.borrow_and_update();
                let done = this.read(|p| {
                    let Some(seg) = p.rendition(&r).and_then(|r| r.segment(msn)) else { return true };
                    while let Some(part) = seg.parts.get(at.0) {
                        queue.extend(part.bytes_from(at.1));
                        at.1 = part.bytes;
                        if !(part.complete || seg.complete) {
                            return false;
                        }
                        at = (at.0 + 1, 0);
                    }
                    seg.complete || p.ended
                });
                if !queue.is_empty() {
                    continue;
                }
                if done {
                    return None;
                }
                if tokio::time::timeout(Duration::from_secs(10), rx.changed()).await.is_err() {
                    return None;
                }
            }
        }))
    }

    /// The wall clock (Unix ms) of media time 0, once the first segment started.
    pub fn epoch_ms(&self) -> Option<i64> {
        self.read(|p| p.epoch_ms)
    }

    /// The multivariant-style early-join hold, for other renderers (the
    /// MPD): waits until every rendition holds a whole segment, or about a
    /// segment, then reads the segmenter with `f`.
    pub async fn settled_read<R>(&self, f: impl Fn(&Segmenter) -> Option<R>) -> Result<R, HlsError> {
        self.settle(Segmenter::settled).await;
        self.wait_for(|p| p.renditions.first().filter(|r| r.last_part().is_some()).and_then(|_| f(p))).await
    }
}

/// All streams' LL-HLS outputs: an eager kind of the media core's
/// [`Outputs`], lingering [`HlsConfig::linger`] after each stream ends.
#[derive(Debug)]
pub struct HlsHub {
    cfg: HlsConfig,
    outputs: OnceLock<Arc<Outputs<HlsStream>>>,
}

impl HlsHub {
    /// An empty hub; it packages streams once [`HlsHub::run`] runs.
    pub fn new(cfg: HlsConfig) -> Arc<HlsHub> {
        Arc::new(HlsHub { cfg, outputs: OnceLock::new() })
    }

    /// The LL-HLS output of `stream`.
    pub fn get(&self, stream: &str) -> Option<Arc<HlsStream>> {
        self.outputs.get()?.get(stream)
    }

    /// Packages every stream the registry starts, until `shutdown`.
    pub async fn run(self: Arc<Self>, registry: Registry, shutdown: CancellationToken) {
        let (cfg, ledger, stop) = (self.cfg.clone(), registry.ledger().clone(), shutdown.clone());
        let start: StartOutput<HlsStream> = Box::new(move |stream: Arc<Stream>| {
            // The stream's own DVR window (its publisher's settings, on the
            // stream before it started), else the node's.
            let dvr = stream.dvr().unwrap_or(cfg.dvr);
            let hls = Arc::new(HlsStream::new(stream.name().to_owned(), cfg.with_dvr(dvr)));
            let gauge = ledger.gauge(stream.name(), "cmaf");
            let task = package(hls.clone(), stream, gauge, stop.clone());
            (hls, Box::pin(task) as OutputTask<HlsStream>)
        });
        let outputs = self.outputs.get_or_init(|| Outputs::new("hls", Start::Eager, self.cfg.linger, start)).clone();
        tokio::select! {
            _ = outputs.clone().run(registry) => {}
            _ = shutdown.cancelled() => {}
        }
        outputs.close();
    }
}

/// Packages one stream until it ends (or `shutdown`); its playlists then
/// linger (the output set holds them) without the source.
async fn package(
    hls: Arc<HlsStream>,
    stream: Arc<Stream>,
    gauge: tidecast_media::Gauge,
    shutdown: CancellationToken,
) -> Option<Arc<HlsStream>> {
    let mut sub = stream.subscribe_from_oldest();
    drop(stream);
    info!(stream = hls.name(), run = hls.run(), "hls packaging started");
    let mut frames = 0u64;
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => None,
            ev = sub.recv() => ev,
        };
        match ev {
            Some(ev) => {
                frames += u64::from(matches!(ev, tidecast_media::Event::Frame(_)));
                let (held, cold) = hls.update(|p| {
                    p.on_event(ev);
                    (p.held_bytes(), p.take_evictions())
                });
                gauge.set(held);
                if !cold.is_empty() {
                    // Segments that left the hot window of a window on
                    // disk: written out and dropped off the async threads.
                    tokio::task::spawn_blocking(move || {
                        for b in &cold {
                            tidecast_memfile::evict(b);
                        }
                    });
                }
            }
            None => break,
        }
    }
    gauge.set(hls.update(|p| {
        p.finish();
        p.held_bytes()
    }));
    debug!(stream = hls.name(), frames, skips = sub.skips(), "hls packaging finished");
    // The gauge goes with the output (after the linger); the source's ring
    // can go now.
    drop(sub);
    hls.keep_gauge(gauge);
    Some(hls)
}

pub mod http;

#[cfg(test)]
mod tests;
