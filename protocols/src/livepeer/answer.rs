//! Reads a gateway's answer to one segment: each `video/mp2t` part named
//! after one of the renditions asked for is demuxed with the TS demuxer,
//! and its video frames are moved onto the stream's clock: the part's
//! first keyframe lands on the segment's first frame (a gateway may keep
//! the timestamps it was sent or start its own; either way the renditions
//! stay aligned with the source and continuous across segments).

use bytes::Bytes;
use tidecast_media::{Frame, MediaKind, Track, TrackId, DERIVED_TRACK_BASE};

use super::multipart::{self, MultipartError};
use crate::mpegts::{DemuxOutput, TsDemuxer};

/// One rendition's frames of one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct RenditionFrames {
    /// Its index among the renditions asked for (its track is
    /// `DERIVED_TRACK_BASE + index`).
    pub index: usize,
    /// Its track, as the TS carried it.
    pub track: Track,
    /// Its frames, on the stream's clock, in decode order.
    pub frames: Vec<Frame>,
}

/// What one answer held.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answer {
    /// The renditions that came back whole.
    pub renditions: Vec<RenditionFrames>,
    /// Parts left out, and why (an unknown name, another type, TS without
    /// video or without a keyframe).
    pub problems: Vec<String>,
    /// Body bytes.
    pub bytes: usize,
}

/// The track id of rendition `index`.
pub fn track_id(index: usize) -> TrackId {
    DERIVED_TRACK_BASE + index as TrackId
}

/// Reads a 200 answer with `content_type` and `body` for the segment that
/// starts at `start_dts`; `names` are the renditions asked for, in order.
pub fn read(start_dts: i64, content_type: &str, body: &Bytes, names: &[String]) -> Result<Answer, MultipartError> {
    let parts = multipart::parse(body, multipart::boundary(content_type)?)?;
    let mut answer = Answer { bytes: body.len(), ..Answer::default() };
    for part in parts {
        let name = part.header("Rendition-Name").unwrap_or("");
        let Some(index) = names.iter().position(|n| n == name) else {
            answer.problems.push(format!("a part for an unknown rendition {name:?}"));
            continue;
        };
        let kind = part.header("Content-Type").unwrap_or("");
        if !kind.to_ascii_lowercase().starts_with("video/mp2t") {
            answer.problems.push(format!("{name}: {kind:?} is not MPEG-TS"));
            continue;
        }
        if answer.renditions.iter().any(|r| r.index == index) {
            answer.problems.push(format!("{name}: sent twice"));
            continue;
        }
        match demux(&part.body, start_dts, index) {
            Ok((track, frames)) => answer.renditions.push(RenditionFrames { index, track, frames }),
            Err(why) => answer.problems.push(format!("{name}: {why}")),
        }
    }
    Ok(answer)
}

/// The video of one TS part, retimed so its first keyframe is at `start`.
fn demux(ts: &[u8], start: i64, index: usize) -> Result<(Track, Vec<Frame>), String> {
    let mut d = TsDemuxer::new();
    d.push(ts);
    d.finish();
    let mut track: Option<Track> = None;
    let mut frames = Vec::new();
    while let Some(out) = d.poll() {
        match out {
            DemuxOutput::Tracks(ts) => {
                if let Some(v) = ts.into_iter().find(|t| t.kind() == MediaKind::Video) {
                    if track.as_ref().is_some_and(|t| t.id != v.id) {
                        return Err("more than one video stream".into());
                    }
                    track = Some(v);
                }
            }
            DemuxOutput::Frame(f) if track.as_ref().is_some_and(|t| t.id == f.track) => frames.push(f),
            DemuxOutput::Frame(_) | DemuxOutput::Unsupported { .. } => {}
            DemuxOutput::Discontinuity => return Err("a timestamp discontinuity inside one segment".into()),
        }
    }
    let mut track = track.ok_or("no video in the TS")?;
    let first_key = frames.iter().position(|f| f.keyframe).ok_or("no keyframe in the TS")?;
    let offset = start - frames[first_key].dts;
    let id = track_id(index);
    track.id = id;
    let frames = frames.into_iter().skip(first_key).map(|f| Frame { track: id, dts: f.dts + offset, ..f }).collect();
    Ok((track, frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livepeer::cutter::Cutter;
    use tidecast_codecs::h264;
    use tidecast_media::{Codec, TrackInfo};

    fn source() -> Track {
        let sps = [
            0x67, 0x42, 0xc0, 0x1f, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
            0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
        ];
        let config = h264::build_config(&sps, &[0x68, 0xeb, 0xe3, 0xc4, 0x48]).expect("avcC");
        Track { id: 0, codec: Codec::H264, config: config.into(), info: TrackInfo::default() }
    }

    /// A segment's TS, cut by our own cutter from frames at `start`.
    fn segment_ts(start: i64) -> Bytes {
        let mut c = Cutter::new();
        c.set_track(Some(source()));
        for i in 0..31i64 {
            let key = i % 30 == 0;
            let nal: &[u8] = if key { &[0, 0, 0, 3, 0x65, 0x88, 0x84] } else { &[0, 0, 0, 3, 0x41, 0x9a, 0x02] };
            c.push(&Frame {
                track: 0,
                dts: start + i * 33_333,
                cts: 0,
                keyframe: key,
                payload: Bytes::from_static(nal),
            });
        }
        c.poll().expect("a segment").data
    }

    fn multipart(parts: &[(&str, &str, &Bytes)]) -> Bytes {
        let mut b = Vec::new();
        for (name, kind, body) in parts {
            b.extend_from_slice(format!("--B\r\nContent-Type: {kind}\r\nRendition-Name: {name}\r\n\r\n").as_bytes());
            b.extend_from_slice(body);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"--B--\r\n");
        Bytes::from(b)
    }

    #[test]
    fn renditions_land_on_the_source_clock() {
        // The gateway kept no timestamps: its TS starts at zero.
        let ts = segment_ts(0);
        let names = vec!["480p".to_owned(), "240p".to_owned()];
        let body = multipart(&[
            ("240p", "video/mp2t; name=\"240p_7.ts\"", &ts),
            ("999p", "video/mp2t", &ts),
            ("480p", "application/vnd+livepeer.uri", &Bytes::from_static(b"https://x/y.ts")),
        ]);
        let a = read(5_000_000, "multipart/mixed; boundary=B", &body, &names).unwrap();
        assert_eq!(a.renditions.len(), 1);
        let r = &a.renditions[0];
        assert_eq!((r.index, r.track.id), (1, DERIVED_TRACK_BASE + 1));
        assert_eq!(r.frames.len(), 30);
        assert!(r.frames[0].keyframe);
        assert_eq!(r.frames[0].dts, 5_000_000, "the first keyframe on the segment's start");
        assert!(r.frames.windows(2).all(|w| w[1].dts > w[0].dts && w[1].track == DERIVED_TRACK_BASE + 1));
        assert_eq!(a.problems.len(), 2, "{:?}", a.problems);
    }

    #[test]
    fn a_part_that_does_not_demux_is_a_problem_not_an_error() {
        let names = vec!["480p".to_owned()];
        let junk = Bytes::from_static(b"this is not a transport stream");
        let body = multipart(&[("480p", "video/mp2t", &junk)]);
        let a = read(0, "multipart/mixed; boundary=B", &body, &names).unwrap();
        assert!(a.renditions.is_empty());
        assert!(a.problems[0].starts_with("480p: "), "{:?}", a.problems);
        assert!(read(0, "text/plain", &body, &names).is_err());
    }
}
