//! One rendition (one track) of a stream: its init segments, its segments
//! and their parts, built as frames arrive. LL-HLS and LL-DASH serve the
//! same segments, parts and chunks.
//!
//! Samples are written as CMAF chunks (one `moof` + `mdat` each) appended to
//! the open part, so a part can be served while it is still being produced.
//! A sample is written once the next sample of the track (or a boundary)
//! fixes its duration.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use tidecast_media::{Frame, MediaKind, Track, TIMESCALE};
use tidecast_memfile::ChunkWriter;

use super::boxes::{self as cmaf, CmafError, Sample};

/// A partial segment.
#[derive(Debug, Clone)]
pub struct Part {
    /// Fragment headers and frame payloads, in wire order.
    pub chunks: Vec<Bytes>,
    /// Start, in microseconds.
    pub start_us: i64,
    /// Duration in seconds once complete.
    pub duration: f64,
    /// Starts with a keyframe.
    pub independent: bool,
    /// No more chunks will be added.
    pub complete: bool,
    /// Sum of chunk lengths.
    pub bytes: usize,
    /// Once complete: all its chunks as one view of the same memory, when
    /// they lie back to back in the rendition's file (they do unless the
    /// file filled up mid-part), served in one piece with `sendfile`.
    pub whole: Option<Bytes>,
}

impl Part {
    /// Its bytes after the first `from`, as views: its chunks, the first
    /// one cut where `from` falls. Readers that stream a part as it grows
    /// count bytes, which stay valid if its chunks are later joined.
    pub fn bytes_from(&self, from: usize) -> Vec<Bytes> {
        let mut at = 0;
        let mut out = Vec::new();
        for c in &self.chunks {
            let end = at + c.len();
            if end > from {
                out.push(if from > at { c.slice(from - at..) } else { c.clone() });
            }
            at = end;
        }
        out
    }

    fn new(start_us: i64) -> Part {
        Part { chunks: Vec::new(), start_us, duration: 0.0, independent: false, complete: false, bytes: 0, whole: None }
    }

    fn complete(&mut self, end_us: i64) {
        self.complete = true;
        self.duration = (end_us - self.start_us).max(0) as f64 / f64::from(TIMESCALE);
        self.whole = tidecast_memfile::join(&self.chunks);
    }
}

/// A media segment: the concatenation of its parts.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Its parts; the last one is open while the segment is.
    pub parts: Vec<Part>,
    /// Start, in microseconds.
    pub start_us: i64,
    /// Duration in seconds once complete.
    pub duration: f64,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// Which init segment it needs.
    pub init_version: u32,
    /// Complete segments are listed with EXTINF.
    pub complete: bool,
    /// The track had no media for this segment's time (a late track that
    /// lost a segment's worth, such as a Livepeer rendition whose segment
    /// failed): listed with `EXT-X-GAP`, never fetched.
    pub gap: bool,
    /// Once complete: all its parts as one view (see [`Part::whole`]).
    pub whole: Option<Bytes>,
}

impl Segment {
    /// Bytes in all parts.
    pub fn bytes(&self) -> usize {
        self.parts.iter().map(|p| p.bytes).sum()
    }
}

/// One track's packaging state.
#[derive(Debug)]
pub struct Rendition {
    /// `video`, `audio`, `video1`…: HLS serves `{name}.m3u8`, DASH names the
    /// Representation so.
    pub name: String,
    /// The track.
    pub track: Track,
    timescale: u32,
    /// Init segments still referenced, by version.
    pub inits: BTreeMap<u32, Bytes>,
    /// The track each of those init segments describes (its codec string and
    /// picture size, for a manifest that still lists segments of an older
    /// configuration).
    pub init_tracks: BTreeMap<u32, Track>,
    /// Where the first segment of each of those configurations started
    /// (µs): a DASH Period's start, constant while the Period is listed.
    pub init_starts: BTreeMap<u32, i64>,
    /// Current init version.
    pub init_version: u32,
    /// Complete segments, oldest first, then the open one (if any).
    pub segments: VecDeque<Segment>,
    /// Segments dropped from the playlist so far that began with a discontinuity.
    pub discontinuity_sequence: u64,
    pending: Option<Frame>,
    start_msn: Option<u64>,
    ready: Vec<Sample>,
    last_duration_us: i64,
    fragment_seq: u32,
    next_discontinuity: bool,
    /// Longest complete segment, seconds.
    pub longest_segment: f64,
    /// Peak bits per second over complete segments.
    pub peak_bitrate: u64,
    /// Wall clock (Unix ms) of media time 0, once known: each segment then
    /// starts with a `prft` box.
    epoch_ms: Option<i64>,
    /// Where its chunks are written.
    store: ChunkWriter,
    /// For a window kept on disk: how much of the newest media stays in
    /// memory (seconds); older segments are written out and dropped from
    /// memory ([`Rendition::take_evictions`]).
    hot_seconds: Option<f64>,
    /// How many of the oldest segments left memory (they come first).
    cold: usize,
    /// Bytes of the complete segments, and of those that left memory.
    complete_bytes: usize,
    cold_bytes: usize,
    /// Segment bytes that left the hot window, for the packager to evict.
    evictions: Vec<Bytes>,
    /// A segment could not be kept on disk (warned once).
    disk_failed: bool,
}

impl Rendition {
    /// A rendition for `track`, whose first segment will carry `msn`.
    pub fn new(name: String, track: Track) -> Result<Rendition, CmafError> {
        Rendition::with_store(name, track, None)
    }

    /// A rendition whose window is kept on disk in `disk` (a folder, and how
    /// many seconds of the newest media stay in memory): its chunks are
    /// written to files there, and segments older than that leave memory.
    pub fn with_store(
        name: String,
        track: Track,
        disk: Option<(std::path::PathBuf, f64)>,
    ) -> Result<Rendition, CmafError> {
        let init = cmaf::init_segment(&track)?;
        let timescale = cmaf::timescale(&track);
        let first_track = track.clone();
        let name_for_store = name.clone();
        let last_duration_us = match track.kind() {
            MediaKind::Video => 33_333,
            MediaKind::Audio => 1024 * i64::from(TIMESCALE) / i64::from(track.info.sample_rate.max(1)),
        };
        Ok(Rendition {
            name,
            track,
            timescale,
            inits: BTreeMap::from([(0, init)]),
            init_tracks: BTreeMap::from([(0, first_track)]),
            init_starts: BTreeMap::new(),
            init_version: 0,
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            pending: None,
            start_msn: None,
            ready: Vec::new(),
            last_duration_us,
            fragment_seq: 0,
            next_discontinuity: false,
            longest_segment: 0.0,
            peak_bitrate: 0,
            epoch_ms: None,
            store: match &disk {
                Some((dir, _)) => ChunkWriter::in_directory(&name_for_store, Some(dir.clone())),
                None => ChunkWriter::new(&name_for_store),
            },
            hot_seconds: disk.map(|(_, hot)| hot),
            cold: 0,
            complete_bytes: 0,
            cold_bytes: 0,
            evictions: Vec::new(),
            disk_failed: false,
        })
    }

    /// Ties media time to the wall clock (Unix ms of media time 0), for the
    /// `prft` box at the start of each later segment.
    pub fn set_epoch(&mut self, epoch_ms: Option<i64>) {
        self.epoch_ms = epoch_ms;
    }

    /// Replaces the track (new codec configuration): a new init segment, and
    /// the next segment starts with a discontinuity.
    pub fn update_track(&mut self, track: Track) -> Result<(), CmafError> {
        if track.config == self.track.config && track.codec == self.track.codec {
            self.init_tracks.insert(self.init_version, track.clone());
            self.track = track;
            return Ok(());
        }
        let init = cmaf::init_segment(&track)?;
        self.timescale = cmaf::timescale(&track);
        self.track = track;
        self.init_version += 1;
        self.inits.insert(self.init_version, init);
        self.init_tracks.insert(self.init_version, self.track.clone());
        self.discontinuity(None);
        Ok(())
    }

    /// The open segment, if any.
    pub fn open(&self) -> Option<&Segment> {
        self.segments.back().filter(|s| !s.complete)
    }

    /// Whether any segment was started.
    pub fn started(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Start of the open part, microseconds.
    pub fn part_start(&self) -> Option<i64> {
        self.open().and_then(|s| s.parts.last()).map(|p| p.start_us)
    }

    /// Start of the open segment, microseconds.
    pub fn segment_start(&self) -> Option<i64> {
        self.open().map(|s| s.start_us)
    }

    /// Remembers the msn the next segment must carry (a track that joins late
    /// or restarts after a discontinuity aligns with the lead).
    pub fn start_pending(&mut self, msn: u64) {
        self.start_msn = Some(msn);
    }

    /// The msn set by [`start_pending`](Self::start_pending), consumed.
    pub fn pending_msn(&mut self) -> Option<u64> {
        self.start_msn.take()
    }

    /// The msn set by [`start_pending`](Self::start_pending), left in place.
    pub fn peek_pending_msn(&self) -> Option<u64> {
        self.start_msn
    }

    /// Opens the first segment (or the one after a discontinuity) at `msn`.
    pub fn start(&mut self, msn: u64, at_us: i64) {
        self.init_starts.entry(self.init_version).or_insert(at_us);
        self.segments.push_back(Segment {
            msn,
            parts: vec![Part::new(at_us)],
            start_us: at_us,
            duration: 0.0,
            discontinuity: std::mem::take(&mut self.next_discontinuity),
            init_version: self.init_version,
            complete: false,
            gap: false,
            whole: None,
        });
    }

    /// Whether the open segment has no media yet (nothing written, nothing
    /// waiting).
    pub fn open_is_empty(&self) -> bool {
        self.pending.is_none()
            && self.ready.is_empty()
            && self.open().is_some_and(|s| s.parts.iter().all(|p| p.chunks.is_empty()))
    }

    /// Whether the last complete segment is a gap and the open one has no
    /// media yet.
    pub fn after_gap(&self) -> bool {
        self.open_is_empty() && self.segments.iter().rev().find(|s| s.complete).is_some_and(|s| s.gap)
    }

    /// Completes the open segment, which received no media, at `end_us` as
    /// a gap; the next opens there.
    pub fn close_gap(&mut self, end_us: i64, window: usize) -> Result<(), CmafError> {
        if self.open_is_empty() {
            if let Some(seg) = self.segments.back_mut().filter(|s| !s.complete) {
                seg.gap = true;
            }
        }
        self.close_segment(end_us, window)
    }

    /// Adds a frame to the open part. The samples waiting are written as one
    /// chunk once they span `chunk_us` (0: a chunk per sample, as video is
    /// written).
    pub fn push(&mut self, frame: Frame, chunk_us: i64) -> Result<(), CmafError> {
        if let Some(prev) = self.pending.take() {
            let d = frame.dts - prev.dts;
            if d > 0 && d < 10 * i64::from(TIMESCALE) {
                self.last_duration_us = d;
            }
            self.ready.push(Sample::from_frame(prev, frame.dts.max(0), self.timescale));
        }
        self.pending = Some(frame);
        let span: u64 = self.ready.iter().map(|s| u64::from(s.duration)).sum();
        if !self.ready.is_empty() && span * u64::from(TIMESCALE) >= (chunk_us.max(0) as u64) * u64::from(self.timescale)
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CmafError> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let header = cmaf::fragment_header(self.fragment_seq, &self.ready)?;
        self.fragment_seq = self.fragment_seq.wrapping_add(1);
        let Some(seg) = self.segments.back_mut().filter(|s| !s.complete) else {
            self.ready.clear();
            return Ok(());
        };
        let first_of_segment = seg.parts.len() == 1 && seg.parts[0].chunks.is_empty();
        let Some(part) = seg.parts.last_mut() else {
            self.ready.clear();
            return Ok(());
        };
        if part.chunks.is_empty() {
            part.independent = self.ready[0].frame.keyframe;
        }
        let prft = match (first_of_segment, self.epoch_ms) {
            (true, Some(epoch)) => {
                let first = &self.ready[0];
                Some(cmaf::prft(first.dts, epoch.saturating_add(first.frame.dts / 1000))?)
            }
            _ => None,
        };
        // The chunk (`prft`, `moof`, `mdat`) is copied once into the
        // rendition's file; every viewer is served that copy.
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(self.ready.len() + 2);
        pieces.extend(prft.as_deref());
        pieces.push(&header);
        pieces.extend(self.ready.iter().map(|s| &s.frame.payload[..]));
        let chunk = self.store.write(&pieces);
        self.ready.clear();
        part.bytes += chunk.len();
        part.chunks.push(chunk);
        Ok(())
    }

    /// Writes everything before `end_us` (the pending sample ends there).
    fn drain_until(&mut self, end_us: i64) -> Result<(), CmafError> {
        if let Some(prev) = self.pending.take() {
            let end = if end_us > prev.dts { end_us } else { prev.dts + self.last_duration_us };
            self.ready.push(Sample::from_frame(prev, end, self.timescale));
        }
        self.flush()
    }

    /// Closes the open part at `end_us` and opens the next one. Returns false
    /// (and does nothing) when the part is still empty.
    pub fn close_part(&mut self, end_us: i64) -> Result<bool, CmafError> {
        if self.pending.is_none() && self.open().and_then(|s| s.parts.last()).is_none_or(|p| p.chunks.is_empty()) {
            return Ok(false);
        }
        self.drain_until(end_us)?;
        if let Some(seg) = self.segments.back_mut().filter(|s| !s.complete) {
            if let Some(p) = seg.parts.last_mut() {
                p.complete(end_us);
            }
            seg.parts.push(Part::new(end_us));
        }
        Ok(true)
    }

    /// Closes the open segment at `end_us` and opens segment `msn + 1`.
    pub fn close_segment(&mut self, end_us: i64, window: usize) -> Result<(), CmafError> {
        self.drain_until(end_us)?;
        let Some(seg) = self.segments.back_mut().filter(|s| !s.complete) else { return Ok(()) };
        if let Some(p) = seg.parts.last_mut() {
            p.complete(end_us);
        }
        seg.parts.retain(|p| !p.chunks.is_empty());
        let chunks: Vec<Bytes> = seg.parts.iter().flat_map(|p| p.chunks.iter().cloned()).collect();
        seg.whole = tidecast_memfile::join(&chunks);
        seg.complete = true;
        self.complete_bytes += seg.bytes();
        seg.duration = (end_us - seg.start_us).max(0) as f64 / f64::from(TIMESCALE);
        self.longest_segment = self.longest_segment.max(seg.duration);
        if seg.duration > 0.0 {
            self.peak_bitrate = self.peak_bitrate.max((seg.bytes() as f64 * 8.0 / seg.duration) as u64);
        }
        let msn = seg.msn + 1;
        self.start(msn, end_us);
        self.trim(window);
        Ok(())
    }

    /// Ends the open segment early (publisher reconnected, codec changed or
    /// stream ended): the next segment starts with a discontinuity.
    pub fn discontinuity(&mut self, window: Option<usize>) {
        let end = self.pending.as_ref().map(|p| p.dts + self.last_duration_us);
        if let (Some(end), Some(_)) = (end, self.open()) {
            let _ = self.close_segment(end, window.unwrap_or(usize::MAX));
            // close_segment opened an empty successor; it restarts at the next frame.
            if self.segments.back().is_some_and(|s| !s.complete && s.parts.iter().all(|p| p.chunks.is_empty())) {
                self.segments.pop_back();
            }
        }
        self.pending = None;
        self.next_discontinuity = self.started();
    }

    /// Ends the rendition: writes what is pending and completes the open segment.
    pub fn finish(&mut self) {
        let end = self.pending.as_ref().map(|p| p.dts + self.last_duration_us);
        if let Some(end) = end {
            let _ = self.close_segment(end, usize::MAX);
        }
        if self.segments.back().is_some_and(|s| !s.complete) {
            self.segments.pop_back();
        }
    }

    /// Drops complete segments beyond `window`, and init segments no one needs.
    fn trim(&mut self, window: usize) {
        while self.segments.iter().filter(|s| s.complete).count() > window {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let Some(old) = self.segments.pop_front() else { return };
        if old.discontinuity {
            self.discontinuity_sequence += 1;
        }
        if old.complete {
            self.complete_bytes -= old.bytes();
        }
        if self.cold > 0 {
            self.cold -= 1;
            self.cold_bytes -= old.bytes();
        }
        let oldest = self.segments.front().map_or(self.init_version, |s| s.init_version);
        self.inits.retain(|&v, _| v >= oldest);
        self.init_tracks.retain(|&v, _| v >= oldest);
        self.init_starts.retain(|&v, _| v >= oldest);
    }

    /// Drops the oldest complete segments while the window holds more than
    /// `max_seconds` of media or `max_bytes`, as long as what stays spans at
    /// least three of its longest segments (RFC 8216bis: a playlist never
    /// shrinks below three target durations). A source with a long GOP thus
    /// keeps fewer segments instead of more memory.
    pub fn trim_to(&mut self, max_seconds: f64, max_bytes: usize) {
        loop {
            let complete = || self.segments.iter().filter(|s| s.complete);
            let (seconds, bytes) = complete().fold((0.0, 0usize), |(d, b), s| (d + s.duration, b + s.bytes()));
            let Some(oldest) = self.segments.front().filter(|s| s.complete) else { return };
            let longest = complete().map(|s| s.duration).fold(0.0, f64::max);
            let over = seconds > max_seconds || bytes > max_bytes;
            if !over || seconds - oldest.duration < 3.0 * longest {
                break;
            }
            self.drop_oldest();
        }
        self.cool();
    }

    /// For a window on disk: the complete segments that fell out of the
    /// hot window leave memory. Their bytes are queued for the packager to
    /// write out and drop (off its lock), and their parts are compacted to
    /// one view each (no part of them is listed any more).
    fn cool(&mut self) {
        let Some(hot) = self.hot_seconds else { return };
        let Some(newest) = self.segments.iter().rev().find(|s| s.complete) else { return };
        let edge = newest.start_us as f64 / 1e6 + newest.duration;
        while let Some(s) = self.segments.get(self.cold).filter(|s| s.complete) {
            if edge - (s.start_us as f64 / 1e6 + s.duration) < hot {
                break;
            }
            let bytes: Vec<Bytes> = match &s.whole {
                Some(w) => vec![w.clone()],
                None => s.parts.iter().flat_map(|p| p.chunks.iter().cloned()).collect(),
            };
            if !bytes.iter().all(tidecast_memfile::on_disk) {
                // Not in a file on disk (its writer fell back to memory: a
                // full disk, no descriptors): it leaves the window with
                // everything older, so memory stays the hot window.
                if !self.disk_failed {
                    self.disk_failed = true;
                    tracing::warn!(rendition = %self.name, "a DVR segment could not be kept on disk; the window is cut there");
                }
                for _ in 0..=self.cold {
                    self.drop_oldest();
                }
                continue;
            }
            self.evictions.extend(bytes);
            let Some(s) = self.segments.get_mut(self.cold) else { break };
            // Only the newest segments list parts; readers of an old part
            // count bytes, not chunks, so one view per part serves them.
            for p in &mut s.parts {
                if let Some(w) = &p.whole {
                    p.chunks = vec![w.clone()];
                }
            }
            self.cold_bytes += s.bytes();
            self.cold += 1;
        }
    }

    /// Segment bytes that left memory since the last call: the packager
    /// writes them out and drops them ([`tidecast_memfile::evict`]).
    pub fn take_evictions(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.evictions)
    }

    /// Bytes of the window kept on disk only (not in memory).
    pub fn disk_bytes(&self) -> usize {
        self.cold_bytes
    }

    /// How many of the oldest segments are on disk only.
    pub fn disk_segments(&self) -> usize {
        self.cold
    }

    /// Payload bytes this rendition keeps alive: its segments and parts
    /// (frames and fragment headers), the sample waiting for its duration,
    /// and its init segments.
    pub fn held_bytes(&self) -> usize {
        let open = self.segments.back().filter(|s| !s.complete).map_or(0, Segment::bytes);
        let segments = self.complete_bytes - self.cold_bytes + open;
        let pending = self.pending.as_ref().map_or(0, |f| f.payload.len())
            + self.ready.iter().map(|s| s.frame.payload.len()).sum::<usize>();
        segments + pending + self.inits.values().map(Bytes::len).sum::<usize>()
    }

    /// The segment `msn`, if held.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        self.segments.get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// Last complete part: (msn, part index).
    pub fn last_part(&self) -> Option<(u64, usize)> {
        for seg in self.segments.iter().rev() {
            if let Some(i) = seg.parts.iter().rposition(|p| p.complete && !p.chunks.is_empty()) {
                return Some((seg.msn, i));
            }
        }
        None
    }

    /// Last complete segment's msn.
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.iter().rev().find(|s| s.complete).map(|s| s.msn)
    }
}
