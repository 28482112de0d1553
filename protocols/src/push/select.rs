//! Track selection for pushes: `?video=` and `?audio=` on any target pick
//! what of the stream it carries, as MistServer's push selectors do for
//! the forms a push needs.
//!
//! - `none`: leave that kind out (an audio-only recording, a silent
//!   restream);
//! - a height, `480p` (or `480`): the video track of that height, a ladder
//!   rung or the source's own;
//! - a codec, `h264`, `hevc` (`h265`), `av1`, `vp9`, `aac`, `opus`, `mp3`:
//!   the first track of that codec (`opus` asks the audio bridge to make
//!   it from AAC);
//! - absent, `all` or `*`: as without a selector (the source's first track
//!   of each kind the target can carry).
//!
//! The parameters are taken out of the target before it is used, so an
//! RTMP key or a WHIP URL never sees them. A track the selector names that
//! the stream does not have yet (a ladder's rung comes after the source's
//! first keyframe; the bridge's Opus after its first audio) holds the push
//! back until it appears: a recording fixes its tracks at its first frame,
//! so starting without it would leave it out for good. A video track taken
//! up mid-stream starts at its next keyframe. Of each kind a push carries
//! one track: the selected one, or without a selector the source's own.

use std::sync::Arc;

use tidecast_media::{Codec, Event, MediaKind, Stream, Subscriber, Track, TrackId};

use super::target::TargetError;

/// What to carry of one kind of media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pick {
    /// As without a selector.
    #[default]
    Any,
    /// Nothing of this kind.
    None,
    /// The video track of this height.
    Height(u32),
    /// The first track of this codec.
    Codec(Codec),
}

impl Pick {
    fn parse(kind: MediaKind, v: &str) -> Result<Pick, String> {
        let v = v.to_ascii_lowercase();
        let codec = match v.as_str() {
            "" | "all" | "*" => return Ok(Pick::Any),
            "none" => return Ok(Pick::None),
            "h264" | "avc" => Some(Codec::H264),
            "h265" | "hevc" => Some(Codec::H265),
            "av1" => Some(Codec::Av1),
            "vp9" => Some(Codec::Vp9),
            "vp8" => Some(Codec::Vp8),
            "aac" => Some(Codec::Aac),
            "opus" => Some(Codec::Opus),
            "mp3" => Some(Codec::Mp3),
            _ => None,
        };
        if let Some(c) = codec {
            if c.kind() != kind {
                return Err(format!("{} is not a {} codec", c.name(), kind_name(kind)));
            }
            return Ok(Pick::Codec(c));
        }
        let height = v.strip_suffix('p').unwrap_or(&v).parse::<u32>().ok().filter(|h| (1..=8192).contains(h));
        match (kind, height) {
            (MediaKind::Video, Some(h)) => Ok(Pick::Height(h)),
            _ => Err(format!(
                "{v:?} selects no {} track (none, a codec, or for video a height such as 480p)",
                kind_name(kind)
            )),
        }
    }

    /// The track of `kind` this pick carries among `tracks`; `None` for
    /// [`Pick::Any`] too (the reader chooses).
    fn choose(self, kind: MediaKind, tracks: &[Track]) -> Option<&Track> {
        let mut of_kind = tracks.iter().filter(|t| t.kind() == kind);
        match self {
            Pick::Any => first_of(kind, tracks),
            Pick::None => None,
            Pick::Height(h) => of_kind.find(|t| t.info.height == h),
            Pick::Codec(c) => of_kind.find(|t| t.codec == c),
        }
    }

    /// Whether it names a particular track (which may not be there yet).
    fn names_one(self) -> bool {
        matches!(self, Pick::Height(_) | Pick::Codec(_))
    }
}

/// The track of `kind` a push carries without a selector: the source's
/// own first one, else the first one made from it.
pub fn first_of(kind: MediaKind, tracks: &[Track]) -> Option<&Track> {
    let mut of_kind = tracks.iter().filter(|t| t.kind() == kind);
    of_kind.clone().find(|t| t.id < tidecast_media::DERIVED_TRACK_BASE).or_else(|| of_kind.next())
}

impl Pick {}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
    }
}

/// A push's `?video=` and `?audio=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selection {
    /// What video to carry.
    pub video: Pick,
    /// What audio to carry.
    pub audio: Pick,
}

impl Selection {
    /// Whether it selects nothing: the target carries what it would anyway.
    pub fn is_any(&self) -> bool {
        self.video == Pick::Any && self.audio == Pick::Any
    }

    /// A reader that applies this selection to a stream's events.
    pub fn filter(self) -> TrackFilter {
        TrackFilter { sel: self, keep: Vec::new(), video: None, video_wait_key: false, waiting: false }
    }
}

/// `target` without its `video` and `audio` parameters, and the selection
/// they made.
pub fn take(target: &str) -> Result<(String, Selection), TargetError> {
    let Some((head, query)) = target.split_once('?') else { return Ok((target.to_owned(), Selection::default())) };
    let mut sel = Selection::default();
    let mut kept = Vec::new();
    for kv in query.split('&') {
        match kv.split_once('=') {
            Some(("video", v)) => sel.video = Pick::parse(MediaKind::Video, v).map_err(TargetError::Invalid)?,
            Some(("audio", v)) => sel.audio = Pick::parse(MediaKind::Audio, v).map_err(TargetError::Invalid)?,
            _ => kept.push(kv),
        }
    }
    if sel.video == Pick::None && sel.audio == Pick::None {
        return Err(TargetError::Invalid("video=none and audio=none leave nothing to push".into()));
    }
    let rest = if kept.iter().all(|kv| kv.is_empty()) { head.to_owned() } else { format!("{head}?{}", kept.join("&")) };
    Ok((rest, sel))
}

/// A subscriber to a stream that reads it through a [`TrackFilter`].
pub struct Selected {
    sub: Subscriber,
    filter: TrackFilter,
}

impl Selected {
    /// The next event the selection passes on; `None` once the stream ended.
    /// Cancel-safe, as the subscriber's own `recv` is.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            let ev = self.sub.recv().await?;
            if let Some(ev) = self.filter.apply(ev) {
                return Some(ev);
            }
        }
    }

    /// The next event already waiting, if any.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            let ev = self.sub.try_recv()?;
            if let Some(ev) = self.filter.apply(ev) {
                return Some(ev);
            }
        }
    }

    /// Frames the subscriber skipped (it fell behind).
    pub fn skips(&self) -> u64 {
        self.sub.skips()
    }
}

impl Selection {
    /// Subscribes to `stream` through this selection.
    pub fn subscribe(self, stream: &Arc<Stream>) -> Selected {
        Selected { sub: stream.subscribe(), filter: self.filter() }
    }
}

/// A stream's events as a [`Selection`] sees them: `Tracks` cut down to
/// the chosen tracks, frames of the others dropped.
#[derive(Debug)]
pub struct TrackFilter {
    sel: Selection,
    keep: Vec<TrackId>,
    video: Option<TrackId>,
    video_wait_key: bool,
    /// A named track is not there yet: nothing passes.
    waiting: bool,
}

impl TrackFilter {
    /// `ev` as the selection passes it on, if at all.
    pub fn apply(&mut self, ev: Event) -> Option<Event> {
        if self.sel.is_any() {
            return Some(ev);
        }
        match ev {
            Event::Tracks(tracks) => {
                let mut kept: Vec<Track> = Vec::new();
                self.waiting = false;
                for kind in [MediaKind::Video, MediaKind::Audio] {
                    let pick = if kind == MediaKind::Video { self.sel.video } else { self.sel.audio };
                    match pick.choose(kind, &tracks) {
                        Some(t) => kept.push(t.clone()),
                        None => self.waiting |= pick.names_one(),
                    }
                }
                if self.waiting {
                    kept.clear();
                }
                let video = kept.iter().find(|t| t.kind() == MediaKind::Video).map(|t| t.id);
                if video != self.video {
                    // A track taken up mid-stream (a rung that appeared)
                    // starts at its own keyframe.
                    self.video_wait_key = video.is_some();
                    self.video = video;
                }
                self.keep = kept.iter().map(|t| t.id).collect();
                let kept: Arc<[Track]> = kept.into();
                Some(Event::Tracks(kept))
            }
            Event::Frame(f) => {
                if self.waiting || !self.keep.contains(&f.track) {
                    return None;
                }
                if Some(f.track) == self.video && self.video_wait_key {
                    if !f.keyframe {
                        return None;
                    }
                    self.video_wait_key = false;
                }
                Some(Event::Frame(f))
            }
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_leave_the_target_and_parse() {
        let (t, s) = take("rtmp://h/app/key?video=480p&x=1&audio=none").unwrap();
        assert_eq!(t, "rtmp://h/app/key?x=1");
        assert_eq!(s, Selection { video: Pick::Height(480), audio: Pick::None });
        let (t, s) = take("rec/$stream.mp4?split=5&audio=OPUS&video=hevc").unwrap();
        assert_eq!(t, "rec/$stream.mp4?split=5");
        assert_eq!(s, Selection { video: Pick::Codec(Codec::H265), audio: Pick::Codec(Codec::Opus) });
        let (t, s) = take("x.flv?video=all").unwrap();
        assert_eq!((t.as_str(), s.is_any()), ("x.flv", true));
        assert_eq!(take("srt://h:1").unwrap(), ("srt://h:1".to_owned(), Selection::default()));
        for bad in ["x.mp4?video=aac", "x.mp4?audio=480p", "x.mp4?video=huge", "x.mp4?video=none&audio=none"] {
            assert!(matches!(take(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }

    fn track(id: TrackId, codec: Codec, height: u32) -> Track {
        let info = tidecast_media::TrackInfo { height, ..Default::default() };
        Track { id, codec, config: bytes::Bytes::new(), info }
    }

    fn frame(track: TrackId, keyframe: bool) -> Event {
        Event::Frame(tidecast_media::Frame {
            track,
            dts: 0,
            cts: 0,
            keyframe,
            payload: bytes::Bytes::from_static(b"x"),
        })
    }

    #[test]
    fn a_rung_is_carried_from_its_first_keyframe() {
        let (_, sel) = take("x.mp4?video=360p").unwrap();
        let mut f = sel.filter();
        let source = vec![track(0, Codec::H264, 720), track(1, Codec::Aac, 0)];
        let Some(Event::Tracks(t)) = f.apply(Event::Tracks(source.clone().into())) else { panic!() };
        assert!(t.is_empty(), "no 360p track yet: nothing");
        assert!(f.apply(frame(0, true)).is_none());
        assert!(f.apply(frame(1, true)).is_none(), "not even audio: the recording waits for its video");
        let rung = tidecast_media::DERIVED_TRACK_BASE;
        let mut with_rung = source;
        with_rung.push(track(rung, Codec::H264, 360));
        let Some(Event::Tracks(t)) = f.apply(Event::Tracks(with_rung.into())) else { panic!() };
        assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), vec![rung, 1], "the rung and the source's audio");
        assert!(f.apply(frame(rung, false)).is_none(), "waits for the rung's keyframe");
        assert!(f.apply(frame(rung, true)).is_some());
        assert!(f.apply(frame(rung, false)).is_some());
        assert!(f.apply(frame(1, true)).is_some());
        assert!(f.apply(frame(0, true)).is_none(), "not the source's video");
        // Without a selector for audio, one audio track: the source's, not the bridge's.
        let bridged = tidecast_media::DERIVED_TRACK_BASE + 7;
        let mut more = vec![track(0, Codec::H264, 720), track(1, Codec::Aac, 0), track(rung, Codec::H264, 360)];
        more.push(track(bridged, Codec::Opus, 0));
        let Some(Event::Tracks(t)) = f.apply(Event::Tracks(more.into())) else { panic!() };
        assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), vec![rung, 1]);
    }
}
