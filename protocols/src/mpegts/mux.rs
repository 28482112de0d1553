//! The MPEG-TS muxer: media-core frames in, 188-byte packets out.
//!
//! One muxer runs per stream and its output is shared by every TS viewer, so
//! the copy into packets (TS interleaves a header every 184 bytes) happens
//! once per stream, not per viewer. H.264 and H.265 get an access unit
//! delimiter and, before keyframes, their parameter sets; AAC gets ADTS
//! headers. PAT and PMT precede every keyframe and repeat at least every
//! 250 ms; the PCR rides on the video PID.

use bytes::{BufMut, Bytes, BytesMut};
use tidecast_media::{rescale, Codec, Frame, MediaKind, Track, TrackId, TIMESCALE};

use super::psi::{self, stream_type};

/// Transport packet size.
pub const PACKET: usize = 188;
const PMT_PID: u16 = 0x1000;
const FIRST_ES_PID: u16 = 0x100;
const PROGRAM: u16 = 1;
/// Timestamps start here (1 s) so PCR can run ahead of DTS without going negative.
const TS_OFFSET: i64 = 90_000;
const PCR_LEAD: i64 = 9_000; // PCR runs 100 ms before DTS
const PSI_INTERVAL_US: i64 = 250_000;

struct Es {
    track: Track,
    pid: u16,
    stream_type: u8,
    stream_id: u8,
    cc: u8,
    /// Parameter sets in Annex B, inserted before keyframes.
    prefix: Vec<u8>,
    /// ADTS fixed header fields (profile, rate index, channels).
    adts: Option<(u8, u8, u8)>,
}

/// Muxes the tracks TS can carry; others are skipped (see [`TsMuxer::skipped`]).
pub struct TsMuxer {
    es: Vec<Es>,
    skipped: Vec<(TrackId, &'static str)>,
    pcr_pid: u16,
    pat_cc: u8,
    pmt_cc: u8,
    last_psi_us: Option<i64>,
}

impl TsMuxer {
    /// A muxer for `tracks`.
    pub fn new(tracks: &[Track]) -> TsMuxer {
        let mut es = Vec::new();
        let mut skipped = Vec::new();
        let mut pid = FIRST_ES_PID;
        let mut ordered: Vec<&Track> = tracks.iter().collect();
        ordered.sort_by_key(|t| (t.kind() != MediaKind::Video, t.id));
        for t in ordered {
            let (st, sid) = match t.codec {
                Codec::H264 => (stream_type::H264, 0xe0),
                Codec::H265 => (stream_type::H265, 0xe0),
                Codec::Aac => (stream_type::AAC_ADTS, 0xc0),
                Codec::Mp3 => (stream_type::MPEG1_AUDIO, 0xc0),
                Codec::Opus => {
                    skipped.push((t.id, "Opus in MPEG-TS is not written yet"));
                    continue;
                }
                Codec::Av1 | Codec::Vp8 | Codec::Vp9 => {
                    skipped.push((t.id, "MPEG-TS has no mapping for this video codec"));
                    continue;
                }
            };
            let prefix = parameter_sets(t);
            let adts = (t.codec == Codec::Aac).then(|| adts_fields(&t.config)).flatten();
            if t.codec == Codec::Aac && adts.is_none() {
                skipped.push((t.id, "AAC configuration ADTS cannot express"));
                continue;
            }
            es.push(Es { track: t.clone(), pid, stream_type: st, stream_id: sid, cc: 0, prefix, adts });
            pid += 1;
        }
        let pcr_pid = es.first().map_or(0x1fff, |e| e.pid);
        TsMuxer { es, skipped, pcr_pid, pat_cc: 0, pmt_cc: 0, last_psi_us: None }
    }

    /// Tracks left out, and why.
    pub fn skipped(&self) -> &[(TrackId, &'static str)] {
        &self.skipped
    }

    /// Whether any track can be muxed.
    pub fn is_empty(&self) -> bool {
        self.es.is_empty()
    }

    /// Muxes one frame into whole packets (PAT and PMT first when due).
    /// Returns `None` for frames of tracks not muxed.
    pub fn frame(&mut self, frame: &Frame) -> Option<Bytes> {
        let idx = self.es.iter().position(|e| e.track.id == frame.track)?;
        let video = self.es[idx].track.kind() == MediaKind::Video;
        let psi_due = self.last_psi_us.is_none_or(|t| frame.dts - t >= PSI_INTERVAL_US) || (video && frame.keyframe);
        let dts = rescale(frame.dts, TIMESCALE, 90_000) + TS_OFFSET;
        let pts = rescale(frame.pts(), TIMESCALE, 90_000) + TS_OFFSET;
        let es = &self.es[idx];
        // Annex B adds at most 4 bytes per NAL over length prefixes, which a
        // start code replaces one for one; the access unit delimiter, the
        // parameter sets and the ADTS header come on top.
        let body = frame.payload.len() + es.prefix.len() + 16;
        let mut pes = pes_header(es.stream_id, pts, (pts != dts).then_some(dts), body);
        match es.track.codec {
            Codec::H264 | Codec::H265 => {
                pes.extend_from_slice(if es.track.codec == Codec::H264 {
                    &[0, 0, 0, 1, 0x09, 0xf0]
                } else {
                    &[0, 0, 0, 1, 0x46, 0x01, 0x50]
                });
                if frame.keyframe {
                    pes.extend_from_slice(&es.prefix);
                }
                for nal in tidecast_codecs::nal::length_prefixed(&frame.payload, 4).flatten() {
                    pes.extend_from_slice(&[0, 0, 0, 1]);
                    pes.extend_from_slice(nal);
                }
            }
            Codec::Aac => {
                if let Some((profile, rate, ch)) = es.adts {
                    pes.extend_from_slice(&adts_header(profile, rate, ch, frame.payload.len()));
                }
                pes.extend_from_slice(&frame.payload);
            }
            _ => pes.extend_from_slice(&frame.payload),
        }
        if !video {
            // Audio PES carry their length.
            let len = pes.len() - 6;
            if len <= 0xffff {
                pes[4..6].copy_from_slice(&(len as u16).to_be_bytes());
            }
        }
        // The chunk stays in the TS ring for seconds: allocate what it needs.
        // The first packet gives up to 8 bytes to the PCR adaptation field.
        let packets = (pes.len() + 8).div_ceil(184) + if psi_due { 2 } else { 0 };
        let mut out = BytesMut::with_capacity(packets * PACKET);
        if psi_due {
            self.tables(&mut out);
            self.last_psi_us = Some(frame.dts);
        }
        let es = &mut self.es[idx];
        let pcr = (es.pid == self.pcr_pid).then(|| (dts - PCR_LEAD).max(0));
        packetize(es.pid, &mut es.cc, &pes, pcr, video && frame.keyframe, &mut out);
        Some(out.freeze())
    }

    fn tables(&mut self, out: &mut BytesMut) {
        let pat = psi::pat(PROGRAM, PMT_PID);
        let streams: Vec<(u8, u16)> = self.es.iter().map(|e| (e.stream_type, e.pid)).collect();
        let pmt = psi::pmt(PROGRAM, self.pcr_pid, &streams);
        section_packet(0, &mut self.pat_cc, &pat, out);
        section_packet(PMT_PID, &mut self.pmt_cc, &pmt, out);
    }
}

fn parameter_sets(t: &Track) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |sets: &[Vec<u8>]| {
        for s in sets {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(s);
        }
    };
    match t.codec {
        Codec::H264 => {
            if let Ok(c) = tidecast_codecs::h264::parse_config(&t.config) {
                push(&c.sps);
                push(&c.pps);
            }
        }
        Codec::H265 => {
            if let Ok(c) = tidecast_codecs::h265::parse_config(&t.config) {
                push(&c.vps);
                push(&c.sps);
                push(&c.pps);
            }
        }
        _ => {}
    }
    out
}

fn adts_fields(asc: &[u8]) -> Option<(u8, u8, u8)> {
    let c = tidecast_codecs::aac::parse(asc).ok()?;
    let rate = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]
        .iter()
        .position(|&r| r == c.sample_rate)? as u8;
    // ADTS carries the base AAC profile (1..=4 as object type).
    let profile = match c.object_type {
        1..=4 => c.object_type,
        5 | 29 => 2, // HE-AAC signals as LC with implicit SBR
        _ => return None,
    };
    Some((profile, rate, c.channels))
}

/// A 7-byte ADTS header (no CRC) for a raw AAC frame of `len` bytes.
pub fn adts_header(profile: u8, rate_index: u8, channels: u8, len: usize) -> [u8; 7] {
    let full = (len + 7) as u32;
    [
        0xff,
        0xf1,
        ((profile - 1) << 6) | (rate_index << 2) | (channels >> 2),
        ((channels & 3) << 6) | ((full >> 11) as u8 & 3),
        (full >> 3) as u8,
        (((full & 7) as u8) << 5) | 0x1f,
        0xfc,
    ]
}

fn put_ts(out: &mut Vec<u8>, marker: u8, ts: i64) {
    let ts = ts as u64 & 0x1_ffff_ffff;
    out.push((marker << 4) | (((ts >> 30) as u8 & 7) << 1) | 1);
    out.extend_from_slice(&((((ts >> 15) & 0x7fff) << 1 | 1) as u16).to_be_bytes());
    out.extend_from_slice(&((((ts) & 0x7fff) << 1 | 1) as u16).to_be_bytes());
}

/// A PES header with room for `body` more bytes.
fn pes_header(stream_id: u8, pts: i64, dts: Option<i64>, body: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(19 + body);
    h.extend_from_slice(&[0, 0, 1, stream_id, 0, 0, 0x80]);
    match dts {
        Some(dts) => {
            h.extend_from_slice(&[0xc0, 10]);
            put_ts(&mut h, 3, pts);
            put_ts(&mut h, 1, dts);
        }
        None => {
            h.extend_from_slice(&[0x80, 5]);
            put_ts(&mut h, 2, pts);
        }
    }
    h
}

/// Cuts a PES into packets. The first carries PUSI, the PCR and the random
/// access flag; the last is padded with adaptation-field stuffing.
fn packetize(pid: u16, cc: &mut u8, pes: &[u8], pcr: Option<i64>, random_access: bool, out: &mut BytesMut) {
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        let mut af = Vec::new();
        if first && (pcr.is_some() || random_access) {
            let mut flags = 0u8;
            if random_access {
                flags |= 0x40;
            }
            af.push(0); // length, set below
            if let Some(pcr) = pcr {
                flags |= 0x10;
                af.push(flags);
                let base = pcr as u64 & 0x1_ffff_ffff;
                af.extend_from_slice(&((base >> 1) as u32).to_be_bytes());
                af.push((((base & 1) as u8) << 7) | 0x7e);
                af.push(0);
            } else {
                af.push(flags);
            }
        }
        let room = PACKET - 4 - af.len();
        let take = rest.len().min(room);
        if take < room {
            // Stuff the adaptation field so the packet is exactly 188 bytes.
            let stuffing = room - take;
            if af.is_empty() {
                af.push(0);
                if stuffing > 1 {
                    af.push(0); // flags
                    af.extend(std::iter::repeat_n(0xff, stuffing - 2));
                }
            } else {
                af.extend(std::iter::repeat_n(0xff, stuffing));
            }
        }
        if !af.is_empty() {
            af[0] = (af.len() - 1) as u8;
        }
        out.put_u8(0x47);
        out.put_u16((u16::from(first) << 14) | (pid & 0x1fff));
        out.put_u8(if af.is_empty() { 0x10 } else { 0x30 } | (*cc & 0x0f));
        out.put_slice(&af);
        out.put_slice(&rest[..take]);
        *cc = (*cc + 1) & 0x0f;
        rest = &rest[take..];
        first = false;
    }
}

fn section_packet(pid: u16, cc: &mut u8, section: &[u8], out: &mut BytesMut) {
    out.put_u8(0x47);
    out.put_u16(0x4000 | pid);
    out.put_u8(0x10 | (*cc & 0x0f));
    out.put_u8(0); // pointer_field
    out.put_slice(section);
    let used = 5 + section.len();
    out.put_bytes(0xff, PACKET.saturating_sub(used));
    *cc = (*cc + 1) & 0x0f;
}
