//! Clips from a stream's window, with MistServer's time parameters:
//! `/{stream}.mp4?startunix=-30&duration=10` and the same for `.mkv` and
//! `.ts`.
//!
//! - `start` / `stop`: media time in milliseconds;
//! - `startunix` / `stopunix`: Unix seconds, or, when smaller than a year
//!   in magnitude, seconds relative to now (`-30`: thirty seconds ago), as
//!   MistServer reads them;
//! - `duration`: seconds after the start (without `stop`);
//! - `rate`: accepted; a clip is always sent as fast as it can be.
//!
//! The clip starts at the video keyframe at or before the start (segments
//! begin at keyframes) and ends with the last segment that starts before
//! the stop; the audio is cut to the same span. The media comes from the
//! LL-HLS/DASH window (the stream's DVR window, `buffer_secs`): the
//! segments' own fragments are read back (their `moof` says where every
//! sample is), so no byte is copied until it is sent. MP4 clips are
//! progressive, their index in front ([`crate::cmaf::progressive`]), with a
//! `Content-Length`; Matroska and MPEG-TS clips go through the live
//! writers. A range outside the window is 416.

use bytes::Bytes;
use mp4_atom::{Any, Decode, TrunSamples};
use tidecast_media::{rescale, Event, Frame, MediaKind, Track, TIMESCALE};

use crate::cmaf::progressive::{self, IndexedSample};
use crate::hls::HlsStream;

/// MistServer's clip parameters.
pub const PARAMS: [&str; 6] = ["start", "stop", "startunix", "stopunix", "duration", "rate"];

/// Values of `startunix`/`stopunix` smaller than this (in magnitude) are
/// relative to now.
const RELATIVE_LIMIT: i64 = 365 * 86_400;

/// A clip's span in media time (µs), `stop` open (the live edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Start, µs of media time.
    pub start_us: i64,
    /// Stop, µs of media time; `None`: up to the newest complete segment.
    pub stop_us: Option<i64>,
}

/// Reads the time parameters; `epoch_ms` is the wall clock of media time
/// 0 (for the `unix` forms), `now_ms` the wall clock now.
pub fn span(query: Option<&str>, epoch_ms: Option<i64>, now_ms: i64) -> Result<Span, String> {
    let num = |name: &str| -> Result<Option<f64>, String> {
        match crate::http::param(query, name) {
            None => Ok(None),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && x.abs() < 1e13)
                .map(Some)
                .ok_or_else(|| format!("{name} is not a number: {v:?}")),
        }
    };
    let unix_to_media = |secs: f64| -> Result<i64, String> {
        let epoch = epoch_ms.ok_or("the stream has no media yet")?;
        let unix_ms = if (secs as i64).abs() < RELATIVE_LIMIT {
            now_ms.saturating_add((secs * 1000.0) as i64)
        } else {
            (secs * 1000.0) as i64
        };
        Ok(unix_ms.saturating_sub(epoch).saturating_mul(1000))
    };
    let start_us = match (num("start")?, num("startunix")?) {
        (Some(ms), None) => (ms * 1000.0) as i64,
        (None, Some(s)) => unix_to_media(s)?,
        (Some(_), Some(_)) => return Err("give start or startunix, not both".into()),
        (None, None) => return Err("a clip needs start or startunix".into()),
    };
    let stop_us = match (num("stop")?, num("stopunix")?, num("duration")?) {
        (Some(ms), None, None) => Some((ms * 1000.0) as i64),
        (None, Some(s), None) => Some(unix_to_media(s)?),
        (None, None, Some(d)) if d > 0.0 => Some(start_us.saturating_add((d * 1e6) as i64)),
        (None, None, Some(_)) => return Err("duration must be positive".into()),
        (None, None, None) => None,
        _ => return Err("give one of stop, stopunix and duration".into()),
    };
    if stop_us.is_some_and(|s| s <= start_us) {
        return Err("the clip ends before it starts".into());
    }
    Ok(Span { start_us, stop_us })
}

/// Why there is no clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipError {
    /// The span is not in the window (416).
    OutOfWindow(String),
    /// The stream cannot be cut (no video, a configuration change inside
    /// the span; 409).
    Unusable(String),
}

/// One track of a clip: its track, its samples (sources numbered into
/// `pieces`) and the pieces themselves.
struct Cut {
    track: Track,
    samples: Vec<IndexedSample>,
}

/// A clip, read out of the window.
pub struct Clip {
    cuts: Vec<Cut>,
    /// The segments' bytes the samples point into.
    pieces: Vec<Bytes>,
}

/// A span outside `window` (media µs), said with the window's bounds.
fn outside(window: (i64, i64), why: &str) -> ClipError {
    ClipError::OutOfWindow(format!(
        "{why}: the window holds media time {:.3} s to {:.3} s",
        window.0 as f64 / 1e6,
        window.1 as f64 / 1e6
    ))
}

/// Where a sample's bytes are: piece number and offset in it.
fn source(piece: usize, offset: usize) -> u64 {
    ((piece as u64) << 32) | offset as u64
}

fn unsource(src: u64) -> (usize, usize) {
    ((src >> 32) as usize, (src & 0xffff_ffff) as usize)
}

impl Clip {
    /// Cuts `span` out of `hls`'s window: the first video rendition and
    /// the first audio one.
    pub fn cut(hls: &HlsStream, span: Span) -> Result<Clip, ClipError> {
        // Under the stream's lock only views of the segments are taken;
        // their boxes are read after it, since the old segments of a window
        // on disk are read back from their files.
        let (chosen, window) = hls.read(|p| {
            let video = p.renditions.iter().find(|r| r.track.kind() == MediaKind::Video);
            let audio = p.renditions.iter().find(|r| r.track.kind() == MediaKind::Audio);
            let lead = video.or(audio).ok_or_else(|| ClipError::Unusable("the stream has no media".into()))?;
            let complete: Vec<&crate::cmaf::Segment> =
                lead.segments.iter().filter(|s| s.complete && !s.gap && s.whole.is_some()).collect();
            let (Some(first), Some(last)) = (complete.first(), complete.last()) else {
                return Err(ClipError::OutOfWindow("the window holds no complete segment yet".into()));
            };
            let window = (first.start_us, last.start_us + (last.duration * 1e6) as i64);
            // From the segment holding the start (it begins at a keyframe).
            let from = complete
                .iter()
                .rposition(|s| s.start_us <= span.start_us)
                .ok_or_else(|| outside(window, "the clip starts before the window"))?;
            let stop = span.stop_us.unwrap_or(window.1);
            let chosen: Vec<&&crate::cmaf::Segment> =
                complete[from..].iter().take_while(|s| s.start_us < stop).collect();
            if chosen.is_empty() || span.start_us >= window.1 {
                return Err(outside(window, "the clip starts after the window"));
            }
            let msns: Vec<u64> = chosen.iter().map(|s| s.msn).collect();
            let versions: std::collections::BTreeSet<u32> = chosen.iter().map(|s| s.init_version).collect();
            if versions.len() > 1 {
                return Err(ClipError::Unusable("the stream's configuration changed inside the clip".into()));
            }
            let mut taken = Vec::new();
            for r in [video, audio].into_iter().flatten() {
                let version = r.segment(msns[0]).map_or(r.init_version, |s| s.init_version);
                let Some(track) = r.init_tracks.get(&version).cloned() else { continue };
                let wholes: Vec<Bytes> = msns
                    .iter()
                    .filter_map(|msn| r.segment(*msn).filter(|s| s.complete && !s.gap)?.whole.clone())
                    .collect();
                taken.push((track, wholes));
            }
            Ok((taken, window))
        })?;
        let mut pieces = Vec::new();
        let mut cuts = Vec::new();
        for (track, wholes) in chosen {
            let mut samples = Vec::new();
            for whole in wholes {
                samples.extend(read_samples(&whole, pieces.len()));
                pieces.push(whole);
            }
            cuts.push(Cut { track, samples });
        }
        // Zero is the lead's first sample; the others are cut to its span.
        let scale = |t: &Track| u64::from(crate::cmaf::boxes::timescale(t));
        let lead_ts = cuts.first().map_or(1, |c| scale(&c.track));
        let zero_us = cuts
            .first()
            .and_then(|c| c.samples.first())
            .map_or(0, |s| rescale(s.dts as i64, lead_ts as u32, TIMESCALE));
        let end_us = cuts
            .first()
            .and_then(|c| c.samples.last())
            .map_or(0, |s| rescale(s.dts.saturating_add(u64::from(s.duration)) as i64, lead_ts as u32, TIMESCALE));
        for c in &mut cuts {
            let ts = scale(&c.track) as u32;
            let zero = rescale(zero_us, TIMESCALE, ts).max(0) as u64;
            let end = rescale(end_us, TIMESCALE, ts).max(0) as u64;
            c.samples.retain(|s| s.dts >= zero && s.dts < end);
            for s in &mut c.samples {
                s.dts -= zero;
            }
        }
        cuts.retain(|c| !c.samples.is_empty());
        if cuts.is_empty() {
            return Err(outside(window, "no media in the clip"));
        }
        Ok(Clip { cuts, pieces })
    }

    /// The clip's length, ms: its lead track's samples.
    pub fn duration_ms(&self) -> f64 {
        let Some(c) = self.cuts.first() else { return 0.0 };
        let ticks: u64 = c.samples.iter().map(|s| u64::from(s.duration)).sum();
        ticks as f64 * 1000.0 / f64::from(crate::cmaf::boxes::timescale(&c.track).max(1))
    }

    /// The clip as progressive MP4: its size and its bytes, in order.
    pub fn mp4(&self) -> Result<(u64, Vec<Bytes>), String> {
        let tracks: Vec<progressive::Indexed<'_>> =
            self.cuts.iter().map(|c| progressive::Indexed { track: &c.track, samples: &c.samples }).collect();
        let layout = progressive::layout(&tracks).map_err(|e| e.to_string())?;
        let mut out = vec![layout.head.clone()];
        // Neighbouring ranges of one segment go out as one slice.
        let mut run: Option<(usize, usize, usize)> = None;
        for &(src, size) in &layout.ranges {
            let (piece, offset) = unsource(src);
            let size = size as usize;
            match &mut run {
                Some((p, start, len)) if *p == piece && *start + *len == offset => *len += size,
                _ => {
                    if let Some((p, start, len)) = run.take() {
                        out.push(self.slice(p, start, len)?);
                    }
                    run = Some((piece, offset, size));
                }
            }
        }
        if let Some((p, start, len)) = run {
            out.push(self.slice(p, start, len)?);
        }
        Ok((layout.size, out))
    }

    fn slice(&self, piece: usize, start: usize, len: usize) -> Result<Bytes, String> {
        let p = self.pieces.get(piece).ok_or("a sample points past the clip's segments")?;
        if start + len > p.len() {
            return Err("a sample points past its segment".into());
        }
        Ok(p.slice(start..start + len))
    }

    /// The clip as media events (its tracks, then every frame in decode
    /// order), for the live writers.
    pub fn events(&self) -> Result<Vec<Event>, String> {
        let tracks: Vec<Track> = self.cuts.iter().map(|c| c.track.clone()).collect();
        let mut frames: Vec<(i64, Frame)> = Vec::new();
        for c in &self.cuts {
            let ts = crate::cmaf::boxes::timescale(&c.track);
            for s in &c.samples {
                let (piece, offset) = unsource(s.offset);
                let dts = rescale(s.dts as i64, ts, TIMESCALE);
                let frame = Frame {
                    track: c.track.id,
                    dts,
                    cts: rescale(i64::from(s.cts), ts, TIMESCALE) as i32,
                    keyframe: s.keyframe,
                    payload: self.slice(piece, offset, s.size as usize)?,
                };
                frames.push((dts, frame));
            }
        }
        frames.sort_by_key(|(dts, f)| (*dts, f.track));
        let mut events = vec![Event::Tracks(tracks.into())];
        events.extend(frames.into_iter().map(|(_, f)| Event::Frame(f)));
        Ok(events)
    }
}

/// The samples of one CMAF segment (`prft`? then `moof` + `mdat` per
/// part), their bytes numbered into piece `piece`. Boxes that do not parse
/// end the reading; every sample returned lies inside `segment`.
pub fn read_samples(segment: &[u8], piece: usize) -> Vec<IndexedSample> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 8 <= segment.len() {
        let size = u32::from_be_bytes([segment[at], segment[at + 1], segment[at + 2], segment[at + 3]]) as usize;
        let kind = &segment[at + 4..at + 8];
        if size < 8 || at + size > segment.len() {
            break;
        }
        if kind == b"moof" {
            let mut buf = &segment[at..at + size];
            if let Ok(Any::Moof(moof)) = Any::decode(&mut buf) {
                for traf in &moof.traf {
                    let mut dts = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                    for trun in &traf.trun {
                        let mut offset = at as i64 + i64::from(trun.data_offset.unwrap_or(0));
                        let TrunSamples::Explicit(entries) = &trun.samples else { continue };
                        for e in entries {
                            let size = e.size.unwrap_or(0);
                            let duration = e.duration.unwrap_or(0);
                            let inside =
                                offset >= 0 && (offset as u64).saturating_add(u64::from(size)) <= segment.len() as u64;
                            if inside {
                                out.push(IndexedSample {
                                    offset: source(piece, offset as usize),
                                    size,
                                    dts,
                                    duration,
                                    cts: e.cts.unwrap_or(0).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
                                    keyframe: e.flags.is_none_or(|f| f & 0x0001_0000 == 0),
                                });
                            }
                            offset += i64::from(size);
                            dts += u64::from(duration);
                        }
                    }
                }
            }
        }
        at += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_parameters_read_as_mistserver_reads_them() {
        let epoch = Some(1_000_000_000_000);
        let now = 1_000_000_060_000; // a minute of media
        let s = span(Some("startunix=-30&duration=10"), epoch, now).unwrap();
        assert_eq!(s, Span { start_us: 30_000_000, stop_us: Some(40_000_000) });
        let s = span(Some("startunix=1000000010&stopunix=1000000020"), epoch, now).unwrap();
        assert_eq!(s, Span { start_us: 10_000_000, stop_us: Some(20_000_000) });
        let s = span(Some("start=5000&stop=9000&rate=0"), epoch, now).unwrap();
        assert_eq!(s, Span { start_us: 5_000_000, stop_us: Some(9_000_000) });
        assert_eq!(span(Some("start=5000"), epoch, now).unwrap().stop_us, None);
        // Huge values saturate instead of overflowing.
        let huge = span(Some("startunix=99999999999&duration=9999999999999"), epoch, now);
        assert!(huge.is_ok(), "{huge:?}");
        for bad in [
            "duration=10",
            "start=x",
            "start=1&startunix=1",
            "start=5&stop=1",
            "start=1&duration=-2",
            "start=1&stop=2&duration=1",
        ] {
            assert!(span(Some(bad), epoch, now).is_err(), "{bad}");
        }
        assert!(span(Some("startunix=-5"), None, now).is_err(), "no media yet");
    }
}
