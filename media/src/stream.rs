//! The live stream: a bounded ring of frames with a keyframe index, one writer
//! and any number of readers.
//!
//! The ring is guarded by a read-write lock held only to append, evict or clone
//! one entry; readers wait on a `watch` channel that carries the next sequence
//! number. The writer never waits for a reader: a reader whose position has
//! been evicted jumps to the newest keyframe, and the jump is counted.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::{Frame, Gauge, MediaKind, Track, TrackId};

/// What a stream's ring holds: the media core's [`Frame`]s, or an output's
/// packaged form of them (one entry per frame) that the output's viewers read
/// through the same ring, with the same keyframe index, bounds and skip
/// counting.
pub trait Entry: Clone + Send + Sync + 'static {
    /// The track the entry belongs to.
    fn track(&self) -> TrackId;
    /// Decode timestamp in microseconds: ages the entry out of the ring.
    fn dts(&self) -> i64;
    /// Shifts the decode timestamp (a resumed publisher continues the timeline).
    fn shift_dts(&mut self, by: i64);
    /// Whether a reader can start here (on the stream's lead track).
    fn is_key(&self) -> bool;
    /// Payload bytes the entry keeps alive, for the ring's byte bound.
    fn size(&self) -> usize;
}

impl Entry for Frame {
    fn track(&self) -> TrackId {
        self.track
    }
    fn dts(&self) -> i64 {
        self.dts
    }
    fn shift_dts(&mut self, by: i64) {
        self.dts = self.dts.saturating_add(by);
    }
    fn is_key(&self) -> bool {
        self.keyframe
    }
    fn size(&self) -> usize {
        self.payload.len()
    }
}

/// Limits of one stream's ring buffer.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// How much media the ring keeps behind the live edge. The ring always
    /// keeps at least the newest keyframe and what follows it, so a new reader
    /// can start at once; `max_bytes` bounds memory regardless.
    pub buffer: Duration,
    /// Hard cap on the payload bytes the ring holds.
    pub max_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig { buffer: Duration::from_secs(10), max_bytes: 64 << 20 }
    }
}

/// What a [`Subscriber`] reads, in stream order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<F = Frame> {
    /// The tracks in force from here on. Always the first event a subscriber
    /// reads, and repeated whenever the publisher changes them or the
    /// subscriber jumps.
    Tracks(Arc<[Track]>),
    /// One frame.
    Frame(F),
    /// Timestamps or codec configuration may not continue smoothly from the
    /// previous frame (a publisher reconnected, or this subscriber jumped).
    Discontinuity,
}

#[derive(Clone, Debug)]
enum Item<F> {
    Frame(F),
    Tracks(Arc<[Track]>),
    Discontinuity,
}

struct KeyPoint {
    seq: u64,
    tracks: Arc<[Track]>,
}

struct Ring<F> {
    items: VecDeque<Item<F>>,
    first_seq: u64,
    keypoints: VecDeque<KeyPoint>,
    bytes: usize,
    /// What readers see: the publisher's tracks, then every derived set.
    tracks: Arc<[Track]>,
    /// The publisher's own tracks.
    source: Vec<Track>,
    /// Tracks added by [`TrackWriter`]s, by writer.
    derived: Vec<(u64, Vec<Track>)>,
    next_writer: u64,
    lead: Option<TrackId>,
    ended: bool,
    /// Added to every incoming dts so a resumed publisher continues the timeline.
    offset: i64,
    resume: bool,
    newest_dts: Option<i64>,
}

impl<F: Entry> Ring<F> {
    fn next_seq(&self) -> u64 {
        self.first_seq + self.items.len() as u64
    }

    fn get(&self, seq: u64) -> Option<&Item<F>> {
        let idx = seq.checked_sub(self.first_seq)?;
        self.items.get(usize::try_from(idx).ok()?)
    }

    fn push(&mut self, item: Item<F>) {
        if let Item::Frame(f) = &item {
            self.bytes += f.size();
        }
        self.items.push_back(item);
    }

    fn evict(&mut self, cfg: &StreamConfig) {
        let keep_us = i64::try_from(cfg.buffer.as_micros()).unwrap_or(i64::MAX);
        let newest = self.newest_dts.unwrap_or(0);
        while let Some(front) = self.items.front() {
            let over_bytes = self.bytes > cfg.max_bytes;
            // A track change or discontinuity marker goes with the frame after it.
            let dts = match front {
                Item::Frame(f) => Some(f.dts()),
                _ => self.items.iter().find_map(|i| match i {
                    Item::Frame(f) => Some(f.dts()),
                    _ => None,
                }),
            };
            let too_old = dts.is_some_and(|d| newest.saturating_sub(d) > keep_us);
            let last_key = self.keypoints.back().map(|k| k.seq);
            let protects = last_key.is_some_and(|k| k <= self.first_seq);
            if !(over_bytes || (too_old && !protects)) {
                break;
            }
            if let Some(Item::Frame(f)) = self.items.pop_front() {
                self.bytes -= f.size();
            }
            self.first_seq += 1;
            while self.keypoints.front().is_some_and(|k| k.seq < self.first_seq) {
                self.keypoints.pop_front();
            }
        }
    }
}

/// Counters of one stream, readable at any time without locking.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Frames pushed by publishers.
    pub frames_in: AtomicU64,
    /// Payload bytes pushed by publishers.
    pub bytes_in: AtomicU64,
    /// Times a subscriber fell out of the ring and jumped to a keyframe.
    pub subscriber_skips: AtomicU64,
    /// Entries those jumps passed over.
    pub frames_skipped: AtomicU64,
    /// Subscribers currently attached.
    pub subscribers: AtomicU64,
    /// Times a publisher resumed the stream within the grace period.
    pub resumes: AtomicU64,
    /// Frames added by [`TrackWriter`]s (not counted in `frames_in`).
    pub derived_frames: AtomicU64,
    /// Derived frames refused for being further than
    /// [`DERIVED_LEAD_LIMIT_US`] ahead of the stream's newest frame.
    pub derived_refused: AtomicU64,
}

pub(crate) struct PublisherSlot {
    pub(crate) generation: u64,
    pub(crate) live: bool,
}

/// A live stream. Obtain one from the [`crate::Registry`], or make a derived
/// one (an output's packaged form) with [`Publisher::standalone`].
pub struct Stream<F: Entry = Frame> {
    name: String,
    cfg: StreamConfig,
    ring: RwLock<Ring<F>>,
    next_seq: watch::Sender<u64>,
    pub(crate) slot: Mutex<PublisherSlot>,
    /// Bumped whenever the stream's publisher slot changes hands.
    pub(crate) revoked: watch::Sender<u64>,
    stats: StreamStats,
    /// The ring's payload bytes, as the node's ledger sees them.
    gauge: Gauge,
    /// [`Demand`]s raised by viewers (low four bits) and promised by
    /// transcoders (high four), one bit each.
    demands: std::sync::atomic::AtomicU8,
    /// How far back viewers may rewind, set once when it is published
    /// ([`crate::PublishOptions`]).
    pub(crate) dvr: std::sync::OnceLock<Duration>,
}

/// Something a viewer needs that the publisher's own tracks may not carry.
/// Outputs raise it; a transcoder that watches the stream acts on it (the
/// audio bridge starts making Opus on the first WebRTC viewer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Demand {
    /// Audio as Opus (a WebRTC viewer).
    OpusAudio,
}

impl Demand {
    fn bit(self) -> u8 {
        match self {
            Demand::OpusAudio => 1,
        }
    }
}

impl<F: Entry> std::fmt::Debug for Stream<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<F: Entry> Stream<F> {
    pub(crate) fn new(name: String, cfg: StreamConfig, gauge: Gauge) -> Arc<Stream<F>> {
        let empty: Arc<[Track]> = Arc::from(Vec::new());
        Arc::new(Stream {
            name,
            cfg,
            ring: RwLock::new(Ring {
                items: VecDeque::new(),
                first_seq: 0,
                keypoints: VecDeque::new(),
                bytes: 0,
                tracks: empty,
                source: Vec::new(),
                derived: Vec::new(),
                next_writer: 0,
                lead: None,
                ended: false,
                offset: 0,
                resume: false,
                newest_dts: None,
            }),
            next_seq: watch::channel(0).0,
            slot: Mutex::new(PublisherSlot { generation: 0, live: true }),
            revoked: watch::channel(0).0,
            stats: StreamStats::default(),
            gauge,
            demands: std::sync::atomic::AtomicU8::new(0),
            dvr: std::sync::OnceLock::new(),
        })
    }

    /// The ring's bounds.
    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// How far back viewers may rewind this stream, if its publisher's
    /// settings said (the stream's `buffer_secs`); `None`: the node's
    /// default.
    pub fn dvr(&self) -> Option<Duration> {
        self.dvr.get().copied()
    }

    /// Raises `d` for the rest of the stream's life.
    pub fn demand(&self, d: Demand) {
        self.demands.fetch_or(d.bit(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a viewer has raised `d`.
    pub fn is_demanded(&self, d: Demand) -> bool {
        self.demands.load(std::sync::atomic::Ordering::Relaxed) & d.bit() != 0
    }

    /// A transcoder watching the stream will meet `d` once it is raised
    /// (outputs need not tell their viewers it is missing).
    pub fn promise(&self, d: Demand) {
        self.demands.fetch_or(d.bit() << 4, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a transcoder has promised to meet `d`.
    pub fn is_promised(&self, d: Demand) -> bool {
        self.demands.load(std::sync::atomic::Ordering::Relaxed) & (d.bit() << 4) != 0
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tracks in force at the live edge.
    pub fn tracks(&self) -> Arc<[Track]> {
        self.ring.read().tracks.clone()
    }

    /// Counters.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Payload bytes currently held in the ring.
    pub fn buffered_bytes(&self) -> usize {
        self.ring.read().bytes
    }

    /// Span of the frames held in the ring, in microseconds.
    pub fn buffered_span_us(&self) -> i64 {
        let ring = self.ring.read();
        let first = ring.items.iter().find_map(|i| match i {
            Item::Frame(f) => Some(f.dts()),
            _ => None,
        });
        match (first, ring.newest_dts) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        }
    }

    /// Whether the stream has ended (no publisher, grace period over).
    pub fn is_ended(&self) -> bool {
        self.ring.read().ended
    }

    /// Whether a publisher is attached right now.
    pub fn has_publisher(&self) -> bool {
        self.slot.lock().live
    }

    /// A reader starting at the newest keyframe in the ring, or, if there is
    /// none yet, at the first keyframe to arrive.
    pub fn subscribe(self: &Arc<Self>) -> Subscriber<F> {
        self.subscribe_at(false)
    }

    /// A reader starting at the oldest keyframe still in the ring: for
    /// consumers that want everything buffered (a packager that attaches a
    /// moment after the publisher started, a recorder).
    pub fn subscribe_from_oldest(self: &Arc<Self>) -> Subscriber<F> {
        self.subscribe_at(true)
    }

    fn subscribe_at(self: &Arc<Self>, oldest: bool) -> Subscriber<F> {
        let ring = self.ring.read();
        let key = if oldest { ring.keypoints.front() } else { ring.keypoints.back() };
        let (cursor, tracks, need_key) = match key {
            Some(k) => (k.seq, k.tracks.clone(), false),
            None => (ring.next_seq(), ring.tracks.clone(), true),
        };
        drop(ring);
        self.stats.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscriber {
            stream: self.clone(),
            st: ReadState { cursor, pending_tracks: Some(tracks), need_key, skips: 0, skipped: 0 },
            rx: self.next_seq.subscribe(),
        }
    }

    fn set_tracks(&self, tracks: Vec<Track>) {
        let mut ring = self.ring.write();
        ring.source = tracks;
        self.publish_tracks(ring);
    }

    /// Recomputes what readers see from the publisher's and the writers'
    /// tracks, and announces it if it changed.
    fn publish_tracks(&self, mut ring: parking_lot::RwLockWriteGuard<'_, Ring<F>>) {
        let mut all = ring.source.clone();
        for (_, d) in &ring.derived {
            all.extend(d.iter().cloned());
        }
        if *ring.tracks == *all {
            return;
        }
        let lead =
            ring.source.iter().find(|t| t.kind() == MediaKind::Video).or_else(|| ring.source.first()).map(|t| t.id);
        let tracks: Arc<[Track]> = Arc::from(all);
        ring.lead = lead.or(ring.lead);
        ring.tracks = tracks.clone();
        ring.push(Item::Tracks(tracks));
        let next = ring.next_seq();
        drop(ring);
        self.next_seq.send_replace(next);
    }

    /// A writer of tracks derived from this stream (the renditions of a
    /// ladder, a bridged audio track), published into the same ring beside
    /// the publisher's: one clock, one keyframe index (the publisher's lead
    /// track keeps deciding where readers start), one bound.
    pub fn derive_tracks(self: &Arc<Self>) -> TrackWriter<F> {
        let mut ring = self.ring.write();
        let id = ring.next_writer;
        ring.next_writer += 1;
        ring.derived.push((id, Vec::new()));
        TrackWriter { stream: self.clone(), id }
    }

    fn set_derived(&self, writer: u64, tracks: Vec<Track>) {
        let mut ring = self.ring.write();
        match ring.derived.iter_mut().find(|(w, _)| *w == writer) {
            Some((_, d)) => *d = tracks,
            None => return,
        }
        self.publish_tracks(ring);
    }

    fn drop_writer(&self, writer: u64) {
        let mut ring = self.ring.write();
        ring.derived.retain(|(w, _)| *w != writer);
        self.publish_tracks(ring);
    }

    /// Appends a derived frame: already on the stream's timeline (it was
    /// made from frames read out of this ring), so no resume offset applies,
    /// and it never starts a reader.
    fn push_derived(&self, frame: F) {
        let ring = self.ring.write();
        if ring.ended {
            return;
        }
        let dts = frame.dts();
        // Made from frames already here, a derived frame is never far
        // ahead of the stream; one that is (a writer's bug) would hold
        // eviction back behind it, so it is refused and counted.
        if ring.newest_dts.is_some_and(|n| dts > n.saturating_add(DERIVED_LEAD_LIMIT_US)) {
            self.stats.derived_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.derived_frames.fetch_add(1, Ordering::Relaxed);
        self.append(ring, frame);
    }

    /// Appends `frame`, evicts what the bounds say, and wakes readers.
    fn append(&self, mut ring: parking_lot::RwLockWriteGuard<'_, Ring<F>>, frame: F) {
        let dts = frame.dts();
        ring.newest_dts = Some(ring.newest_dts.map_or(dts, |d| d.max(dts)));
        ring.push(Item::Frame(frame));
        ring.evict(&self.cfg);
        self.gauge.set(ring.bytes);
        let next = ring.next_seq();
        drop(ring);
        self.next_seq.send_replace(next);
    }

    fn push_frame(&self, mut frame: F) {
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(frame.size() as u64, Ordering::Relaxed);
        let mut ring = self.ring.write();
        if ring.resume {
            ring.resume = false;
            // Continue the timeline one nominal frame after the newest frame.
            let target = ring.newest_dts.map_or(frame.dts(), |d| d + 33_333);
            ring.offset = target - frame.dts();
            ring.push(Item::Discontinuity);
        }
        frame.shift_dts(ring.offset);
        if ring.lead.is_none() {
            ring.lead = Some(frame.track());
        }
        if frame.is_key() && Some(frame.track()) == ring.lead {
            let seq = ring.next_seq();
            let tracks = ring.tracks.clone();
            ring.keypoints.push_back(KeyPoint { seq, tracks });
        }
        self.append(ring, frame);
    }

    /// The next frame continues the timeline after a break, behind a
    /// `Discontinuity` marker.
    fn mark_discontinuity(&self) {
        self.ring.write().resume = true;
    }

    /// A publisher came back within the grace period.
    pub(crate) fn mark_resume(&self) {
        self.mark_discontinuity();
        self.stats.resumes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end(&self) {
        self.ring.write().ended = true;
        self.next_seq.send_modify(|_| {});
    }
}

/// Called with the stream and the publisher's generation when a publisher goes away.
pub(crate) type OnDrop<F> = Box<dyn FnOnce(&Arc<Stream<F>>, u64) + Send + Sync>;

/// The write side of a stream, held by the one session publishing it.
///
/// Dropping a registry's publisher starts the stream's grace period; a new
/// publisher on the same name within that period resumes the stream.
/// Dropping a standalone one (an output's derived stream) ends its stream,
/// since no one else can write to it: readers drain and finish, even when
/// the task that held it panicked.
pub struct Publisher<F: Entry = Frame> {
    pub(crate) stream: Arc<Stream<F>>,
    pub(crate) generation: u64,
    pub(crate) on_drop: Option<OnDrop<F>>,
}

impl<F: Entry> std::fmt::Debug for Publisher<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("stream", &self.stream.name).finish_non_exhaustive()
    }
}

/// Returned by [`Publisher::push`] once another publisher has taken the stream over.
#[derive(Debug, thiserror::Error)]
#[error("another publisher took over this stream")]
pub struct Revoked;

impl<F: Entry> Publisher<F> {
    /// A publisher of a stream outside any registry: a derived stream, such as
    /// an output's packaged form that its viewers read through the same ring.
    pub fn standalone(name: &str, cfg: StreamConfig) -> Publisher<F> {
        Self::standalone_accounted(name, cfg, Gauge::detached(name, "ring"))
    }

    /// A standalone stream whose ring bytes `gauge` reports (an output's
    /// derived stream, accounted under that output's name).
    pub fn standalone_accounted(name: &str, cfg: StreamConfig, gauge: Gauge) -> Publisher<F> {
        Publisher { stream: Stream::new(name.to_owned(), cfg, gauge), generation: 0, on_drop: None }
    }

    /// Ends the stream now: readers drain what is buffered, then finish.
    pub fn end(self) {
        self.stream.end();
    }

    /// Marks a break in the timeline (the source's clock jumped): the next
    /// frame continues the stream's timeline and readers see a discontinuity.
    pub fn discontinuity(&self) {
        self.stream.mark_discontinuity();
    }

    /// The stream being published.
    pub fn stream(&self) -> &Arc<Stream<F>> {
        &self.stream
    }

    /// Whether another publisher has taken over.
    pub fn is_revoked(&self) -> bool {
        self.stream.slot.lock().generation != self.generation
    }

    /// Resolves once another publisher takes the stream over.
    pub async fn revoked(&self) {
        let mut rx = self.stream.revoked.subscribe();
        while *rx.borrow_and_update() <= self.generation {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Declares the stream's tracks (on the first configuration record, and
    /// again whenever one changes). Unchanged tracks are not repeated.
    pub fn set_tracks(&self, tracks: Vec<Track>) -> Result<(), Revoked> {
        if self.is_revoked() {
            return Err(Revoked);
        }
        self.stream.set_tracks(tracks);
        Ok(())
    }

    /// Appends one frame. Never waits for readers.
    pub fn push(&self, frame: F) -> Result<(), Revoked> {
        if self.is_revoked() {
            return Err(Revoked);
        }
        self.stream.push_frame(frame);
        Ok(())
    }
}

impl<F: Entry> Drop for Publisher<F> {
    fn drop(&mut self) {
        match self.on_drop.take() {
            Some(f) => f(&self.stream, self.generation),
            None => self.stream.end(),
        }
    }
}

/// How far (µs) a derived frame may be ahead of the stream's newest frame.
pub const DERIVED_LEAD_LIMIT_US: i64 = 1_000_000;

/// First track id for derived tracks ([`Stream::derive_tracks`]); ingests
/// number their tracks from 0, far below it.
pub const DERIVED_TRACK_BASE: TrackId = 1 << 20;

/// Adds tracks made from a stream to the same stream (see
/// [`Stream::derive_tracks`]). Dropping it withdraws its tracks; frames it
/// pushed stay in the ring until they age out.
pub struct TrackWriter<F: Entry = Frame> {
    stream: Arc<Stream<F>>,
    id: u64,
}

impl<F: Entry> std::fmt::Debug for TrackWriter<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackWriter").field("stream", &self.stream.name).field("id", &self.id).finish()
    }
}

impl<F: Entry> TrackWriter<F> {
    /// Declares (or replaces) this writer's tracks. Their ids should be at
    /// or above [`DERIVED_TRACK_BASE`] and unique within the stream.
    pub fn set_tracks(&self, tracks: Vec<Track>) {
        self.stream.set_derived(self.id, tracks);
    }

    /// Appends one frame of one of this writer's tracks. Never waits; does
    /// nothing once the stream has ended.
    pub fn push(&self, frame: F) {
        self.stream.push_derived(frame);
    }

    /// The stream written to.
    pub fn stream(&self) -> &Arc<Stream<F>> {
        &self.stream
    }
}

impl<F: Entry> Drop for TrackWriter<F> {
    fn drop(&mut self) {
        self.stream.drop_writer(self.id);
    }
}

/// The read side of a stream. Each subscriber reads at its own pace.
pub struct Subscriber<F: Entry = Frame> {
    stream: Arc<Stream<F>>,
    st: ReadState,
    rx: watch::Receiver<u64>,
}

struct ReadState {
    cursor: u64,
    pending_tracks: Option<Arc<[Track]>>,
    need_key: bool,
    skips: u64,
    skipped: u64,
}

impl ReadState {
    fn jump<F: Entry>(&mut self, ring: &Ring<F>, stats: &StreamStats) -> bool {
        let (skipped, moved) = match ring.keypoints.back() {
            None => {
                let skipped = ring.next_seq().saturating_sub(self.cursor);
                self.cursor = ring.next_seq();
                self.need_key = true;
                (skipped, skipped > 0)
            }
            Some(k) if k.seq <= self.cursor => return false,
            Some(k) => {
                let skipped = k.seq - self.cursor;
                self.cursor = k.seq;
                self.pending_tracks = Some(k.tracks.clone());
                self.need_key = false;
                (skipped, true)
            }
        };
        self.skips += 1;
        self.skipped += skipped;
        stats.subscriber_skips.fetch_add(1, Ordering::Relaxed);
        stats.frames_skipped.fetch_add(skipped, Ordering::Relaxed);
        moved
    }
}

impl<F: Entry> std::fmt::Debug for Subscriber<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("stream", &self.stream.name)
            .field("cursor", &self.st.cursor)
            .finish_non_exhaustive()
    }
}

impl<F: Entry> Subscriber<F> {
    /// The stream read.
    pub fn stream(&self) -> &Arc<Stream<F>> {
        &self.stream
    }

    /// How many times this subscriber fell behind and jumped to a keyframe.
    pub fn skips(&self) -> u64 {
        self.st.skips
    }

    /// How many entries those jumps passed over.
    pub fn skipped(&self) -> u64 {
        self.st.skipped
    }

    /// Entries between this subscriber and the live edge.
    pub fn lag(&self) -> u64 {
        self.stream.ring.read().next_seq().saturating_sub(self.st.cursor)
    }

    /// Jumps to the newest keyframe, as a reader that cannot keep up does.
    /// Returns whether it moved.
    pub fn skip_to_live(&mut self) -> bool {
        let ring = self.stream.ring.read();
        self.st.jump(&ring, &self.stream.stats)
    }

    /// Reads the next event without waiting; `None` if nothing new is there yet
    /// or the stream has ended.
    pub fn try_recv(&mut self) -> Option<Event<F>> {
        if let Some(t) = self.st.pending_tracks.take() {
            return Some(Event::Tracks(t));
        }
        let ring = self.stream.ring.read();
        if self.st.cursor < ring.first_seq {
            let jumped = self.st.jump(&ring, &self.stream.stats);
            drop(ring);
            if jumped {
                return Some(Event::Discontinuity);
            }
            return self.try_recv();
        }
        loop {
            let item = ring.get(self.st.cursor)?.clone();
            self.st.cursor += 1;
            match item {
                Item::Frame(f) => {
                    if self.st.need_key {
                        if !(f.is_key() && Some(f.track()) == ring.lead) {
                            continue;
                        }
                        self.st.need_key = false;
                    }
                    return Some(Event::Frame(f));
                }
                Item::Tracks(t) => return Some(Event::Tracks(t)),
                Item::Discontinuity => return Some(Event::Discontinuity),
            }
        }
    }

    /// Reads the next event, waiting for the publisher if needed. Returns
    /// `None` once the stream has ended and everything before the end was read.
    pub async fn recv(&mut self) -> Option<Event<F>> {
        loop {
            self.rx.borrow_and_update();
            if let Some(ev) = self.try_recv() {
                return Some(ev);
            }
            if self.stream.ring.read().ended {
                return None;
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

impl<F: Entry> Drop for Subscriber<F> {
    fn drop(&mut self) {
        self.stream.stats.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Codec, TrackInfo};
    use bytes::Bytes;

    fn tracks() -> Vec<Track> {
        vec![
            Track { id: 0, codec: Codec::H264, config: Bytes::new(), info: TrackInfo::default() },
            Track { id: 1, codec: Codec::Aac, config: Bytes::new(), info: TrackInfo::default() },
        ]
    }

    fn frame(track: TrackId, ms: i64, keyframe: bool, len: usize) -> Frame {
        Frame { track, dts: ms * 1000, cts: 0, keyframe, payload: Bytes::from(vec![0u8; len]) }
    }

    fn publisher(cfg: StreamConfig) -> Publisher {
        Publisher { stream: Stream::new("t".into(), cfg, Gauge::detached("t", "ring")), generation: 0, on_drop: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_standalone_publisher_ends_its_stream_for_readers() {
        let p: Publisher = Publisher::standalone("out", StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        p.push(frame(0, 0, true, 10)).unwrap();
        let mut s = p.stream().subscribe();
        drop(p);
        // The clock is paused: a read that would wait forever times out at
        // once instead of hanging the test.
        let mut next = async || tokio::time::timeout(Duration::from_secs(3600), s.recv()).await;
        assert!(matches!(next().await, Ok(Some(Event::Tracks(_)))));
        assert!(matches!(next().await, Ok(Some(Event::Frame(_)))));
        assert!(matches!(next().await, Ok(None)), "the reader drains what is buffered, then finishes");
    }

    #[test]
    fn subscriber_starts_at_newest_keyframe_with_tracks_first() {
        let p = publisher(StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        for i in 0..10 {
            p.push(frame(0, i * 40, i % 5 == 0, 10)).unwrap();
        }
        let mut s = p.stream().subscribe();
        assert!(matches!(s.try_recv(), Some(Event::Tracks(t)) if t.len() == 2));
        match s.try_recv() {
            Some(Event::Frame(f)) => assert_eq!((f.dts, f.keyframe), (200_000, true)),
            other => panic!("expected the keyframe at 200 ms, got {other:?}"),
        }
    }

    #[test]
    fn derived_tracks_join_the_stream_and_leave_with_their_writer() {
        let p = publisher(StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        p.push(frame(0, 0, true, 10)).unwrap();
        let mut s = p.stream().subscribe();
        assert!(matches!(s.try_recv(), Some(Event::Tracks(t)) if t.len() == 2));
        let w = p.stream().derive_tracks();
        let rung =
            Track { id: DERIVED_TRACK_BASE, codec: Codec::H264, config: Bytes::new(), info: TrackInfo::default() };
        w.set_tracks(vec![rung.clone()]);
        assert_eq!(p.stream().tracks().len(), 3);
        // The publisher changing its own tracks keeps the derived ones.
        p.set_tracks(tracks()[..1].to_vec()).unwrap();
        assert_eq!(p.stream().tracks().iter().map(|t| t.id).collect::<Vec<_>>(), [0, DERIVED_TRACK_BASE]);
        // A derived keyframe is not where readers start; the publisher's is.
        w.push(frame(DERIVED_TRACK_BASE, 0, true, 10));
        p.push(frame(0, 40, false, 10)).unwrap();
        let late = p.stream().subscribe();
        assert_eq!(late.st.cursor, 1, "a late reader starts at the publisher's keyframe");
        let mut seen = Vec::new();
        while let Some(ev) = s.try_recv() {
            match ev {
                Event::Tracks(t) => seen.push(format!("tracks {}", t.len())),
                Event::Frame(f) => seen.push(format!("frame {} {}", f.track, f.dts)),
                Event::Discontinuity => seen.push("discontinuity".into()),
            }
        }
        assert_eq!(seen, ["frame 0 0", "tracks 3", "tracks 2", "frame 1048576 0", "frame 0 40000"]);
        assert_eq!(p.stream().stats().derived_frames.load(Ordering::Relaxed), 1);
        drop(w);
        assert_eq!(p.stream().tracks().len(), 1, "a dropped writer withdraws its tracks");
    }

    #[test]
    fn a_derived_frame_far_ahead_of_the_stream_is_refused() {
        let cfg = StreamConfig { buffer: Duration::from_secs(1), max_bytes: usize::MAX };
        let p = publisher(cfg);
        p.set_tracks(tracks()).unwrap();
        let w = p.stream().derive_tracks();
        p.push(frame(0, 0, true, 10)).unwrap();
        // 80 s ahead: it would sit at the ring's front and hold every
        // older frame in.
        w.push(frame(DERIVED_TRACK_BASE, 80_000, true, 10));
        for i in 1..100 {
            p.push(frame(0, i * 40, i % 25 == 0, 10)).unwrap();
        }
        assert_eq!(p.stream().stats().derived_refused.load(Ordering::Relaxed), 1);
        assert!(p.stream().buffered_span_us() <= 2_000_000, "the ring still slides: {}", p.stream().buffered_span_us());
    }

    #[test]
    fn derived_frames_keep_their_timestamps_across_a_resume() {
        let p = publisher(StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        p.push(frame(0, 5_000, true, 10)).unwrap();
        let w = p.stream().derive_tracks();
        p.stream().mark_resume();
        // Made from ring frames, which are already on the stream's timeline.
        w.push(frame(DERIVED_TRACK_BASE, 5_000, true, 10));
        p.push(frame(0, 0, true, 10)).unwrap();
        let mut s = p.stream().subscribe_from_oldest();
        let mut dts = Vec::new();
        while let Some(ev) = s.try_recv() {
            if let Event::Frame(f) = ev {
                dts.push((f.track, f.dts));
            }
        }
        assert_eq!(dts, [(0, 5_000_000), (DERIVED_TRACK_BASE, 5_000_000), (0, 5_033_333)]);
    }

    #[test]
    fn subscribe_from_oldest_starts_at_the_first_buffered_keyframe() {
        let p = publisher(StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        for i in 0..10 {
            p.push(frame(0, i * 40, i % 5 == 0, 10)).unwrap();
        }
        let mut s = p.stream().subscribe_from_oldest();
        assert!(matches!(s.try_recv(), Some(Event::Tracks(_))));
        assert!(matches!(s.try_recv(), Some(Event::Frame(f)) if f.dts == 0));
    }

    #[test]
    fn subscriber_attached_before_the_first_frame_reads_everything() {
        let p = publisher(StreamConfig::default());
        let mut s = p.stream().subscribe_from_oldest();
        p.set_tracks(tracks()).unwrap();
        for i in 0..100 {
            p.push(frame(0, i * 40, i % 25 == 0, 10)).unwrap();
        }
        let mut frames = 0;
        while let Some(ev) = s.try_recv() {
            frames += matches!(ev, Event::Frame(_)) as u32;
        }
        assert_eq!((frames, s.skips()), (100, 0));
    }

    #[test]
    fn early_subscriber_waits_for_a_keyframe() {
        let p = publisher(StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        let mut s = p.stream().subscribe();
        p.push(frame(0, 0, false, 1)).unwrap();
        p.push(frame(0, 40, true, 1)).unwrap();
        assert!(matches!(s.try_recv(), Some(Event::Tracks(_))));
        assert!(matches!(s.try_recv(), Some(Event::Frame(f)) if f.dts == 40_000));
    }

    #[test]
    fn ring_is_bounded_by_time_but_keeps_the_last_gop() {
        let cfg = StreamConfig { buffer: Duration::from_secs(1), max_bytes: usize::MAX };
        let p = publisher(cfg);
        p.set_tracks(tracks()).unwrap();
        for i in 0..1000 {
            p.push(frame(0, i * 40, i % 50 == 0, 100)).unwrap();
        }
        let span = p.stream().buffered_span_us();
        assert!(span <= 2_000_000, "span {span}");
        assert!(span >= 1_000_000, "span {span}");
        // Keyframe every 2 s with a 1 s buffer: the whole last GOP is kept.
        let mut s = p.stream().subscribe();
        s.try_recv();
        assert!(matches!(s.try_recv(), Some(Event::Frame(f)) if f.keyframe && f.dts == 38_000_000));
    }

    #[test]
    fn ring_is_bounded_by_bytes() {
        let cfg = StreamConfig { buffer: Duration::from_secs(3600), max_bytes: 10_000 };
        let p = publisher(cfg);
        for i in 0..1000 {
            p.push(frame(0, i * 40, i % 50 == 0, 100)).unwrap();
        }
        assert!(p.stream().buffered_bytes() <= 10_000);
    }

    #[test]
    fn slow_subscriber_jumps_to_newest_keyframe_and_is_counted() {
        let cfg = StreamConfig { buffer: Duration::from_millis(500), max_bytes: usize::MAX };
        let p = publisher(cfg);
        p.set_tracks(tracks()).unwrap();
        p.push(frame(0, 0, true, 1)).unwrap();
        let mut slow = p.stream().subscribe();
        let mut fast = p.stream().subscribe();
        let mut fast_frames = 0;
        for i in 1..200 {
            p.push(frame(0, i * 40, i % 25 == 0, 1)).unwrap();
            while let Some(ev) = fast.try_recv() {
                fast_frames += matches!(ev, Event::Frame(_)) as u32;
            }
        }
        assert_eq!(fast_frames, 200, "the fast reader saw every frame");
        assert!(matches!(slow.try_recv(), Some(Event::Tracks(_))));
        assert!(matches!(slow.try_recv(), Some(Event::Discontinuity)));
        assert!(matches!(slow.try_recv(), Some(Event::Tracks(_))));
        assert!(matches!(slow.try_recv(), Some(Event::Frame(f)) if f.keyframe && f.dts == 7_000_000));
        assert_eq!(slow.skips(), 1);
        assert_eq!(p.stream().stats().subscriber_skips.load(Ordering::Relaxed), 1);
        assert_eq!(fast.skips(), 0);
    }

    #[test]
    fn fan_out_shares_payload_bytes() {
        let p = publisher(StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        let payload = Bytes::from(vec![7u8; 4096]);
        let ptr = payload.as_ptr();
        let mut subs: Vec<_> = (0..100).map(|_| p.stream().subscribe()).collect();
        p.push(Frame { track: 0, dts: 0, cts: 0, keyframe: true, payload }).unwrap();
        for s in &mut subs {
            s.try_recv();
            match s.try_recv() {
                Some(Event::Frame(f)) => assert_eq!(f.payload.as_ptr(), ptr),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn recv_waits_for_the_publisher_and_ends_with_the_stream() {
        let p = publisher(StreamConfig::default());
        p.set_tracks(tracks()).unwrap();
        let mut s = p.stream().subscribe();
        assert!(matches!(s.recv().await, Some(Event::Tracks(_))));
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(ev) = s.recv().await {
                n += matches!(ev, Event::Frame(_)) as u32;
            }
            n
        });
        for i in 0..5 {
            p.push(frame(0, i * 40, i == 0, 1)).unwrap();
            tokio::task::yield_now().await;
        }
        p.stream().end();
        assert_eq!(reader.await.unwrap(), 5);
    }
}
