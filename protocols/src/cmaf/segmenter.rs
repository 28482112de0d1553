//! Cuts a stream into CMAF segments and parts, once for all viewers and
//! every format.
//!
//! The lead track (the first video track if there is one) decides the
//! boundaries: a segment starts at a keyframe once the target duration is
//! reached, a part once about a part target has passed. Each boundary is
//! queued for the other tracks (more video tracks, such as the renditions
//! of a ladder, and the audio tracks), which apply it when their own
//! timeline reaches it, so every rendition carries the same segment numbers
//! (HLS media sequence numbers, DASH `$Number$`) at the same media times.

use std::collections::VecDeque;
use std::time::Duration;

use tidecast_media::{Event, Frame, MediaKind, Track, TrackId};
use tracing::warn;

use super::rendition::Rendition;

/// How a stream is cut and how much of it is kept.
#[derive(Clone, Debug)]
pub struct SegmenterConfig {
    /// Target segment duration; segments start at keyframes, so a longer GOP
    /// makes longer segments.
    pub segment_target: Duration,
    /// Target part duration.
    pub part_target: Duration,
    /// Complete segments kept per rendition.
    pub window: usize,
    /// Cap on the bytes the window holds, all renditions together; beyond it
    /// (or beyond `window` x `segment_target` of media) the oldest segments
    /// leave early, never below three of the longest segments.
    pub max_bytes: usize,
    /// Where a window longer than memory should hold is kept; `None`: in
    /// memory.
    pub disk: Option<DiskWindow>,
}

/// A window kept on disk: chunks go to files in `dir`, and only the newest
/// `hot` of media stays in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskWindow {
    /// The folder (under the data directory).
    pub dir: std::path::PathBuf,
    /// Media kept in memory as well.
    pub hot: Duration,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        SegmenterConfig {
            segment_target: Duration::from_secs(2),
            part_target: Duration::from_millis(200),
            window: 10,
            max_bytes: 64 << 20,
            disk: None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Boundary {
    at_us: i64,
    segment: bool,
}

#[derive(Debug)]
struct Follower {
    queue: VecDeque<Boundary>,
}

/// Per-stream packaging state: the renditions and how to feed them.
#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    /// Renditions, the lead first.
    pub renditions: Vec<Rendition>,
    track_ids: Vec<TrackId>,
    followers: Vec<Follower>,
    /// Wall-clock ms of media time 0, set by [`Segmenter::anchor`] once the
    /// first segment has started.
    pub epoch_ms: Option<i64>,
    /// Media time (µs) at which the first segment started.
    origin_us: Option<i64>,
    /// Segment numbers where some rendition's configuration changed (a new
    /// init segment), with the media time the lead's segment of that number
    /// started: where a DASH Period starts. Kept while listed, plus the last
    /// one before the window.
    cuts: std::collections::BTreeMap<u64, i64>,
    /// True once the stream ended.
    pub ended: bool,
    pending_discontinuity: bool,
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Segmenter {
    /// An empty segmenter.
    pub fn new(cfg: SegmenterConfig) -> Segmenter {
        Segmenter {
            cfg,
            renditions: Vec::new(),
            track_ids: Vec::new(),
            followers: Vec::new(),
            epoch_ms: None,
            origin_us: None,
            cuts: std::collections::BTreeMap::new(),
            ended: false,
            pending_discontinuity: false,
        }
    }

    /// A fingerprint of what playlists and manifests list: which segments
    /// and parts exist and which are complete, the tracks, the end. It
    /// changes when a part or segment starts or closes and not when a frame
    /// is added to an open part, so waiters for the former wake only then.
    pub fn layout(&self) -> u64 {
        let mix = |h: u64, v: u64| h.wrapping_mul(0x100_0000_01b3).wrapping_add(v);
        let mut h = mix(u64::from(self.ended), self.renditions.len() as u64);
        for r in &self.renditions {
            h = mix(h, r.segments.len() as u64);
            h = mix(h, u64::from(r.init_version));
            if let Some(s) = r.segments.back() {
                h = mix(h, s.msn);
                h = mix(h, s.parts.len() as u64);
                h = mix(h, u64::from(s.complete));
            }
            if let Some(s) = r.segments.front() {
                h = mix(h, s.msn);
            }
        }
        h
    }

    /// The settings it cuts with.
    pub fn config(&self) -> &SegmenterConfig {
        &self.cfg
    }

    /// Ties media time to the wall clock: `now_ms` (Unix milliseconds) is
    /// when the newest event was handed in. The first call after the first
    /// segment started fixes [`Segmenter::epoch_ms`]; later calls do nothing.
    pub fn anchor(&mut self, now_ms: i64) {
        if self.epoch_ms.is_none() {
            if let Some(origin) = self.origin_us {
                self.epoch_ms = Some(now_ms - origin / 1000);
                for r in &mut self.renditions {
                    r.set_epoch(self.epoch_ms);
                }
            }
        }
    }

    /// Feeds one event from the stream's subscriber.
    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Tracks(tracks) => self.on_tracks(&tracks),
            Event::Frame(f) => {
                self.on_frame(f);
                self.note_cuts();
            }
            Event::Discontinuity => self.pending_discontinuity = true,
        }
    }

    /// Records where a rendition's newest segment starts a new configuration.
    fn note_cuts(&mut self) {
        for r in &self.renditions {
            let n = r.segments.len();
            if n < 2 || r.segments[n - 1].init_version == r.segments[n - 2].init_version {
                continue;
            }
            let m = r.segments[n - 1].msn;
            if !self.cuts.contains_key(&m) {
                let lead = self.renditions.first().and_then(|l| l.segment(m));
                self.cuts.insert(m, lead.map_or(r.segments[n - 1].start_us, |s| s.start_us));
            }
        }
        let first = self.renditions.iter().filter_map(|r| r.segments.front().map(|s| s.msn)).min();
        if let Some(keep) = first.and_then(|f| self.cuts.range(..=f).next_back().map(|(&m, _)| m)) {
            self.cuts.retain(|&m, _| m >= keep);
        }
    }

    /// The configuration changes in force over the window: segment number
    /// and media time (µs) of each, oldest first, starting with the one in
    /// force at the window's first segment (the stream's start if none).
    pub fn cuts(&self) -> Vec<(u64, i64)> {
        let first = self.renditions.iter().filter_map(|r| r.segments.front().map(|s| s.msn)).min().unwrap_or(0);
        let before = self.cuts.range(..=first).next_back().map(|(_, &t)| t);
        let mut out = vec![(first, before.or(self.origin_us).unwrap_or(0))];
        out.extend(self.cuts.range(first + 1..).map(|(&m, &t)| (m, t)));
        out
    }

    fn on_tracks(&mut self, tracks: &[Track]) {
        for t in tracks {
            if let Some(i) = self.track_ids.iter().position(|&id| id == t.id) {
                if let Err(e) = self.renditions[i].update_track(t.clone()) {
                    warn!(track = t.id, error = %e, "cmaf: cannot package the new track configuration");
                }
                continue;
            }
            // `video`, `audio`, then `video1`, `audio1`… for more tracks of a kind.
            let kind = match t.kind() {
                MediaKind::Video => "video",
                MediaKind::Audio => "audio",
            };
            let n = self.renditions.iter().filter(|r| r.track.kind() == t.kind()).count();
            let name = if n == 0 { kind.to_owned() } else { format!("{kind}{n}") };
            let disk = self.cfg.disk.as_ref().map(|d| (d.dir.clone(), d.hot.as_secs_f64()));
            match Rendition::with_store(name, t.clone(), disk) {
                Ok(mut r) => {
                    r.set_epoch(self.epoch_ms);
                    // A late track joins at the lead's current segment.
                    let lead_msn = self.renditions.first().and_then(|l| l.open()).map(|s| s.msn);
                    let lead_is_video = self.renditions.first().is_some_and(|l| l.track.kind() == MediaKind::Video);
                    if t.kind() == MediaKind::Video
                        && !lead_is_video
                        && self.renditions.first().is_none_or(|l| !l.started())
                    {
                        // Video declared after audio but before any media: video leads.
                        self.renditions.insert(0, r);
                        self.track_ids.insert(0, t.id);
                        self.followers.insert(0, Follower { queue: VecDeque::new() });
                        continue;
                    }
                    if let Some(msn) = lead_msn {
                        r.start_pending(msn);
                    }
                    self.renditions.push(r);
                    self.track_ids.push(t.id);
                    self.followers.push(Follower { queue: VecDeque::new() });
                }
                Err(e) => warn!(track = t.id, codec = t.codec.name(), error = %e, "cmaf: track not packaged"),
            }
        }
    }

    fn on_frame(&mut self, f: Frame) {
        if f.payload.is_empty() {
            // A zero-size sample makes players (ffmpeg's mov demuxer among
            // them) reject the whole fragment; an empty frame carries nothing.
            return;
        }
        let Some(idx) = self.track_ids.iter().position(|&id| id == f.track) else { return };
        if self.pending_discontinuity {
            self.pending_discontinuity = false;
            for r in &mut self.renditions {
                r.discontinuity(Some(self.cfg.window));
            }
            for fl in &mut self.followers {
                fl.queue.clear();
            }
        }
        if idx == 0 {
            self.on_lead_frame(f);
        } else {
            self.on_follower_frame(idx, f);
        }
    }

    fn chunk_us(&self, idx: usize) -> i64 {
        if self.renditions[idx].track.kind() == MediaKind::Video {
            0
        } else {
            us(self.cfg.part_target) / 2
        }
    }

    fn next_msn(r: &Rendition) -> u64 {
        r.segments.back().map_or(0, |s| if s.complete { s.msn + 1 } else { s.msn })
    }

    fn on_lead_frame(&mut self, f: Frame) {
        let chunk_us = self.chunk_us(0);
        let window = self.cfg.window;
        let seg_target = us(self.cfg.segment_target);
        let part_target = us(self.cfg.part_target);
        let lead = &mut self.renditions[0];
        let boundary = match (lead.segment_start(), lead.part_start()) {
            (None, _) => {
                if !f.keyframe {
                    return; // wait for a keyframe to start
                }
                if self.origin_us.is_none() {
                    self.origin_us = Some(f.dts);
                }
                let msn = Self::next_msn(lead);
                lead.start(msn, f.dts);
                for (r, fl) in self.renditions.iter_mut().zip(&mut self.followers).skip(1) {
                    if !r.started() || r.open().is_none() {
                        r.start_pending(msn);
                    }
                    fl.queue.clear();
                }
                None
            }
            (Some(seg_start), Some(part_start)) => {
                if f.keyframe && f.dts - seg_start >= seg_target {
                    Some(Boundary { at_us: f.dts, segment: true })
                } else if (f.dts - part_start) * 10 >= part_target * 9 {
                    Some(Boundary { at_us: f.dts, segment: false })
                } else {
                    None
                }
            }
            (Some(_), None) => None,
        };
        let (max_seconds, max_bytes) = self.window_limits();
        let lead = &mut self.renditions[0];
        if let Some(b) = boundary {
            let applied = if b.segment {
                lead.close_segment(b.at_us, window).map(|_| {
                    lead.trim_to(max_seconds, max_bytes);
                    true
                })
            } else {
                lead.close_part(b.at_us)
            };
            match applied {
                Ok(true) => {
                    for fl in &mut self.followers[1..] {
                        fl.queue.push_back(b);
                        if fl.queue.len() > 64 {
                            fl.queue.pop_front();
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "cmaf: packaging failed"),
            }
        }
        if let Err(e) = self.renditions[0].push(f, chunk_us) {
            warn!(error = %e, "cmaf: packaging failed");
        }
    }

    fn on_follower_frame(&mut self, idx: usize, f: Frame) {
        let chunk_us = self.chunk_us(idx);
        let window = self.cfg.window;
        let (max_seconds, max_bytes) = self.window_limits();
        let Some(lead_start) = self.renditions[0].segments.front().map(|s| s.start_us) else { return };
        if f.dts < lead_start {
            return;
        }
        if self.renditions[idx].open().is_none() {
            let r = &self.renditions[idx];
            // Left pending until a frame starts the segment.
            let msn = r.peek_pending_msn().unwrap_or_else(|| Self::next_msn(r));
            // A track that joins late (a ladder's rung, Livepeer's renditions,
            // a bridged audio track) starts at the lead's segment of that
            // number: its frames from before that segment's start belong to
            // segments already cut without it. A video track starts at a
            // keyframe.
            let joins_at = self.renditions[0].segments.iter().find(|s| s.msn == msn).map(|s| s.start_us);
            if joins_at.is_some_and(|start| f.dts < start) {
                return;
            }
            let r = &mut self.renditions[idx];
            if r.track.kind() == MediaKind::Video && !f.keyframe {
                return;
            }
            let _ = r.pending_msn();
            r.start(msn, f.dts);
        }
        let r = &mut self.renditions[idx];
        // Boundaries close at this frame, as always, unless the track has a
        // hole (a late rendition that lost a segment's worth, audio that
        // stopped): then a segment that had media ends at its own
        // boundary when more boundaries are due, and one without media is
        // a gap (`EXT-X-GAP`) of the lead's duration.
        let video = r.track.kind() == MediaKind::Video;
        while let Some(b) = self.followers[idx].queue.front().copied() {
            if f.dts < b.at_us {
                break;
            }
            self.followers[idx].queue.pop_front();
            let more = self.followers[idx].queue.iter().any(|n| n.segment && n.at_us <= f.dts);
            let starts_before = r.open().is_some_and(|s| s.start_us < b.at_us);
            let empty = r.open_is_empty();
            let res = if b.segment {
                let closed = if empty && starts_before {
                    r.close_gap(b.at_us, window)
                } else if more && starts_before {
                    r.close_segment(b.at_us, window)
                } else {
                    r.close_segment(f.dts, window)
                };
                closed.map(|()| r.trim_to(max_seconds, max_bytes))
            } else if starts_before && (empty || more) {
                if empty {
                    Ok(())
                } else {
                    r.close_part(b.at_us).map(|_| ())
                }
            } else {
                r.close_part(f.dts).map(|_| ())
            };
            if let Err(e) = res {
                warn!(error = %e, "cmaf: packaging failed");
            }
        }
        // After a gap a video track starts again at a keyframe.
        if video && !f.keyframe && r.after_gap() {
            return;
        }
        if let Err(e) = r.push(f, chunk_us) {
            warn!(error = %e, "cmaf: packaging failed");
        }
    }

    /// The window's bounds besides its segment count: the configured number
    /// of segments times the target duration, and the byte cap, shared by
    /// the renditions.
    fn window_limits(&self) -> (f64, usize) {
        let seconds = self.cfg.window as f64 * self.cfg.segment_target.as_secs_f64();
        let share = self.cfg.max_bytes / self.renditions.len().max(1);
        (seconds, share)
    }

    /// Segment bytes that left memory since the last call, every
    /// rendition's: the packager writes them out and drops them.
    pub fn take_evictions(&mut self) -> Vec<bytes::Bytes> {
        self.renditions.iter_mut().flat_map(Rendition::take_evictions).collect()
    }

    /// Payload bytes held in memory by every rendition.
    pub fn held_bytes(&self) -> usize {
        self.renditions.iter().map(Rendition::held_bytes).sum()
    }

    /// Completes every rendition (the stream ended).
    pub fn finish(&mut self) {
        for r in &mut self.renditions {
            r.finish();
        }
        self.ended = true;
    }

    /// Whether the stream has settled for a joining player: it has
    /// renditions and each holds at least one whole segment.
    pub fn settled(&self) -> bool {
        !self.renditions.is_empty() && self.renditions.iter().all(|r| r.last_msn().is_some())
    }

    /// The rendition called `name`.
    pub fn rendition(&self, name: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.name == name)
    }
}
