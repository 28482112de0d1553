//! Progressive MP4: `ftyp`, a `moov` that indexes every sample, then one
//! `mdat`: the form a browser can play and seek over plain HTTP before it
//! has the whole file ("faststart": the index in front).
//!
//! Sans IO: given where each sample's bytes are in some source (a
//! fragmented recording, a DVR window), [`layout`] builds the file's head
//! and says which source ranges follow it, in order. Samples are
//! interleaved by decode time, and each run of one track's samples is one
//! chunk.

use bytes::Bytes;
use mp4_atom::{
    Co64, Ctts, CttsEntry, Edts, Elst, ElstEntry, Encode, Ftyp, Moov, Mvhd, Stsc, StscEntry, Stss, Stsz, StszSamples,
    Stts, SttsEntry, Trak,
};
use tidecast_media::{MediaKind, Track};

use super::boxes::{timescale, trak, CmafError, TRACK_ID};

/// The movie timescale (`mvhd`, `tkhd`, edit lists): milliseconds.
const MOVIE_TIMESCALE: u32 = 1000;

/// One sample and where its bytes are in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexedSample {
    /// Offset of its bytes in the source.
    pub offset: u64,
    /// Its size.
    pub size: u32,
    /// Decode time in the track's timescale ([`timescale`]), from the
    /// file's zero.
    pub dts: u64,
    /// Duration in the track's timescale.
    pub duration: u32,
    /// Composition offset in the track's timescale.
    pub cts: i32,
    /// A sync sample.
    pub keyframe: bool,
}

/// One track and its samples, in decode order.
#[derive(Debug, Clone, Copy)]
pub struct Indexed<'a> {
    /// The track (its sample entry comes from its configuration).
    pub track: &'a Track,
    /// Its samples.
    pub samples: &'a [IndexedSample],
}

/// A progressive file: its head (`ftyp`, `moov`, the `mdat` header), then
/// the source's `(offset, size)` ranges, in order.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Everything before the first sample's bytes.
    pub head: Bytes,
    /// The samples' bytes to copy after the head, in order.
    pub ranges: Vec<(u64, u32)>,
    /// The file's total size.
    pub size: u64,
}

/// Lays out `tracks` as a progressive MP4 (track ids 1, 2, ... in order).
pub fn layout(tracks: &[Indexed<'_>]) -> Result<Layout, CmafError> {
    let scales: Vec<u32> = tracks.iter().map(|t| timescale(t.track)).collect();
    // The mdat's order: the sample that decodes first, across tracks.
    let mut next = vec![0usize; tracks.len()];
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(tracks.iter().map(|t| t.samples.len()).sum());
    loop {
        let mut best: Option<usize> = None;
        for (i, t) in tracks.iter().enumerate() {
            let Some(s) = t.samples.get(next[i]) else { continue };
            let earlier = best.is_none_or(|b| {
                let o = &tracks[b].samples[next[b]];
                u128::from(s.dts) * u128::from(scales[b]) < u128::from(o.dts) * u128::from(scales[i])
            });
            if earlier {
                best = Some(i);
            }
        }
        let Some(i) = best else { break };
        order.push((i, next[i]));
        next[i] += 1;
    }
    // Chunks: each run of one track's samples, at its offset in the mdat.
    let mut chunks: Vec<Vec<(u64, u32)>> = vec![Vec::new(); tracks.len()];
    let mut at = 0u64;
    let mut prev: Option<usize> = None;
    for &(i, s) in &order {
        if prev == Some(i) {
            if let Some(c) = chunks[i].last_mut() {
                c.1 += 1;
            }
        } else {
            chunks[i].push((at, 1));
        }
        prev = Some(i);
        at += u64::from(tracks[i].samples[s].size);
    }
    let payload = at;

    let ftyp = Ftyp {
        major_brand: b"isom".into(),
        minor_version: 512,
        compatible_brands: vec![b"isom".into(), b"iso2".into(), b"avc1".into(), b"mp41".into()],
    };
    let mut ftyp_bytes = Vec::new();
    ftyp.encode(&mut ftyp_bytes).map_err(|e| CmafError::Encode("ftyp", e.to_string()))?;
    // The chunk offsets depend on the moov's size, which does not depend on
    // them (co64 entries are all 8 bytes): build it once to measure.
    let moov_len = moov(tracks, &scales, &chunks, 0)?.len() as u64;
    let base = ftyp_bytes.len() as u64 + moov_len + 16;
    let moov = moov(tracks, &scales, &chunks, base)?;
    let mut head = ftyp_bytes;
    head.extend_from_slice(&moov);
    // A 64-bit mdat header: size 1, then the large size.
    head.extend_from_slice(&1u32.to_be_bytes());
    head.extend_from_slice(b"mdat");
    head.extend_from_slice(&(payload + 16).to_be_bytes());
    let ranges = order.iter().map(|&(i, s)| (tracks[i].samples[s].offset, tracks[i].samples[s].size)).collect();
    let size = head.len() as u64 + payload;
    Ok(Layout { head: Bytes::from(head), ranges, size })
}

fn moov(tracks: &[Indexed<'_>], scales: &[u32], chunks: &[Vec<(u64, u32)>], base: u64) -> Result<Vec<u8>, CmafError> {
    let mut traks = Vec::with_capacity(tracks.len());
    let mut movie_duration = 0u64;
    for (i, t) in tracks.iter().enumerate() {
        let scale = u64::from(scales[i].max(1));
        let media_duration: u64 = t.samples.iter().map(|s| u64::from(s.duration)).sum();
        let to_movie = |ticks: u64| ticks * u64::from(MOVIE_TIMESCALE) / scale;
        let start = t.samples.first().map_or(0, |s| s.dts);
        movie_duration = movie_duration.max(to_movie(start + media_duration));
        let mut trak: Trak = trak(t.track, TRACK_ID + i as u32)?;
        // The track's duration in the movie: its edits, the wait included.
        trak.tkhd.duration = to_movie(start + media_duration);
        trak.mdia.mdhd.duration = media_duration;
        if start > 0 {
            // A track that starts after the file's zero waits that long.
            trak.edts = Some(Edts {
                elst: Some(Elst {
                    entries: vec![
                        ElstEntry { segment_duration: to_movie(start), media_time: None, media_rate: 1.into() },
                        ElstEntry {
                            segment_duration: to_movie(media_duration),
                            media_time: Some(0),
                            media_rate: 1.into(),
                        },
                    ],
                }),
            });
        }
        let stbl = &mut trak.mdia.minf.stbl;
        stbl.stts = Stts { entries: runs(t.samples.iter().map(|s| s.duration)) };
        if t.samples.iter().any(|s| s.cts != 0) {
            let entries = runs(t.samples.iter().map(|s| s.cts))
                .into_iter()
                .map(|e| CttsEntry { sample_count: e.sample_count, sample_offset: i64::from(e.sample_delta as i32) })
                .collect();
            stbl.ctts = Some(Ctts { entries });
        }
        if t.track.kind() == MediaKind::Video && !t.samples.iter().all(|s| s.keyframe) {
            let entries = (1u32..).zip(t.samples).filter(|(_, s)| s.keyframe).map(|(n, _)| n).collect();
            stbl.stss = Some(Stss { entries });
        }
        stbl.stsz = Stsz { samples: StszSamples::Different { sizes: t.samples.iter().map(|s| s.size).collect() } };
        let mut stsc: Vec<StscEntry> = Vec::new();
        for (n, &(_, count)) in (1u32..).zip(&chunks[i]) {
            if stsc.last().is_none_or(|e| e.samples_per_chunk != count) {
                stsc.push(StscEntry { first_chunk: n, samples_per_chunk: count, sample_description_index: 1 });
            }
        }
        stbl.stsc = Stsc { entries: stsc };
        stbl.stco = None;
        stbl.co64 = Some(Co64 { entries: chunks[i].iter().map(|&(off, _)| base + off).collect() });
        traks.push(trak);
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: MOVIE_TIMESCALE,
            duration: movie_duration,
            next_track_id: TRACK_ID + tracks.len() as u32,
            rate: 1.into(),
            volume: 1.into(),
            ..Default::default()
        },
        trak: traks,
        ..Default::default()
    };
    let mut out = Vec::new();
    moov.encode(&mut out).map_err(|e| CmafError::Encode("moov", e.to_string()))?;
    Ok(out)
}

/// Run-length entries of equal values (`stts`-style; for `ctts` the value
/// is the bits of an `i32`).
fn runs<T: Copy + PartialEq + Into<i64>>(values: impl Iterator<Item = T>) -> Vec<SttsEntry> {
    let mut out: Vec<SttsEntry> = Vec::new();
    for v in values {
        let bits = v.into() as u32;
        match out.last_mut() {
            Some(e) if e.sample_delta == bits => e.sample_count += 1,
            _ => out.push(SttsEntry { sample_count: 1, sample_delta: bits }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode};

    use crate::push::mp4::tests::tracks;

    #[test]
    fn the_index_comes_first_and_points_at_every_sample() {
        let t = tracks();
        // 50 video frames at 25 fps (a keyframe every 25), 86 AAC frames,
        // the audio starting 10 ms in; the source holds them back to back.
        let mut offset = 1000u64;
        let mut video = Vec::new();
        for n in 0..50u64 {
            video.push(IndexedSample {
                offset,
                size: 500,
                dts: n * 3600,
                duration: 3600,
                cts: 0,
                keyframe: n % 25 == 0,
            });
            offset += 500;
        }
        let mut audio = Vec::new();
        for n in 0..86u64 {
            audio.push(IndexedSample {
                offset,
                size: 100,
                dts: 441 + n * 1024,
                duration: 1024,
                cts: 0,
                keyframe: true,
            });
            offset += 100;
        }
        let l =
            layout(&[Indexed { track: &t[0], samples: &video }, Indexed { track: &t[1], samples: &audio }]).unwrap();
        assert_eq!(l.ranges.len(), 136);
        assert_eq!(l.size, l.head.len() as u64 + 50 * 500 + 86 * 100);
        // Decode order across tracks: the first video frame, then audio.
        assert_eq!(l.ranges[0], (1000, 500));
        let mut buf = &l.head[..];
        let mut kinds = Vec::new();
        let mut moov = None;
        while !buf.is_empty() {
            match Any::decode(&mut buf) {
                Ok(Any::Moov(m)) => {
                    kinds.push("moov");
                    moov = Some(m);
                }
                Ok(a) => kinds.push(if matches!(a, Any::Ftyp(_)) { "ftyp" } else { "other" }),
                Err(_) => break,
            }
        }
        assert_eq!(kinds[..2], ["ftyp", "moov"]);
        let moov = moov.unwrap();
        assert!(moov.mvex.is_none(), "not fragmented");
        assert_eq!(moov.mvhd.duration, 2006, "the audio ends last: 10 ms + 86 x 1024 / 44.1 kHz");
        let v = &moov.trak[0].mdia.minf.stbl;
        assert_eq!(v.stss.as_ref().unwrap().entries, vec![1, 26]);
        assert_eq!(v.stts.entries, vec![SttsEntry { sample_count: 50, sample_delta: 3600 }]);
        // Chunk offsets land on the samples' bytes in the new file.
        let first_chunk = v.co64.as_ref().unwrap().entries[0];
        assert_eq!(first_chunk, l.head.len() as u64);
        let a = &moov.trak[1];
        assert!(a.edts.is_some(), "the audio starts 10 ms in");
        let samples_in_chunks: u32 = {
            let stsc = &a.mdia.minf.stbl.stsc.entries;
            let chunks = a.mdia.minf.stbl.co64.as_ref().unwrap().entries.len() as u32;
            (0..stsc.len())
                .map(|k| {
                    let end = stsc.get(k + 1).map_or(chunks + 1, |e| e.first_chunk);
                    (end - stsc[k].first_chunk) * stsc[k].samples_per_chunk
                })
                .sum()
        };
        assert_eq!(samples_in_chunks, 86, "every audio sample is in a chunk");
    }
}
