//! The MPEG-TS demuxer: 188-byte packets in, media-core tracks and frames out.
//!
//! Sans-IO: [`TsDemuxer::push`] takes whatever bytes arrived (any split,
//! resynchronising on the 0x47 sync byte) and [`TsDemuxer::poll`] yields
//! outputs. It follows PAT and PMT (a PMT that changes re-creates the
//! tracks), reassembles PES packets, unwraps 33-bit timestamps, treats a
//! timestamp jump of more than ten seconds as a discontinuity, and counts
//! continuity-counter errors: the damaged PES is dropped and video resumes at
//! the next keyframe.
//!
//! Carried: H.264, H.265 (Annex B to length-prefixed, parameter sets into the
//! track configuration), AAC in ADTS (one frame per ADTS frame), MPEG audio
//! (passed through). Reported as unsupported: Opus, AC-3, E-AC-3, anything else.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use tidecast_codecs::{aac, access_unit};
use tidecast_media::{rescale, Codec, Frame, Track, TrackId, TIMESCALE};

use super::psi::{crc32, stream_type};
use super::PACKET;

/// What the demuxer found.
#[derive(Debug, Clone, PartialEq)]
pub enum DemuxOutput {
    /// The tracks changed (first configuration, new parameter sets, new PMT).
    Tracks(Vec<Track>),
    /// One frame.
    Frame(Frame),
    /// Timestamps jumped (PCR/PTS discontinuity, program change): the
    /// timeline restarts.
    Discontinuity,
    /// An elementary stream we cannot carry; reported once per PID.
    Unsupported {
        /// Its PID.
        pid: u16,
        /// What it is.
        what: String,
    },
}

impl crate::ingest::MediaSource for TsDemuxer {
    fn poll(&mut self) -> Option<crate::ingest::Delivery> {
        TsDemuxer::poll(self).map(Into::into)
    }
}

impl From<DemuxOutput> for crate::ingest::Delivery {
    fn from(o: DemuxOutput) -> Self {
        use crate::ingest::Delivery;
        match o {
            DemuxOutput::Tracks(t) => Delivery::Tracks(t),
            DemuxOutput::Frame(f) => Delivery::Frame(f),
            DemuxOutput::Discontinuity => Delivery::Discontinuity,
            DemuxOutput::Unsupported { pid, what } => Delivery::Unsupported(format!("PID {pid}: {what}")),
        }
    }
}

/// Damage seen so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DemuxStats {
    /// Packets read.
    pub packets: u64,
    /// Times the sync byte was lost and found again.
    pub resyncs: u64,
    /// Continuity-counter jumps.
    pub cc_errors: u64,
    /// Packets flagged with transport_error_indicator.
    pub transport_errors: u64,
    /// PSI sections with a bad CRC or length.
    pub bad_sections: u64,
    /// PES packets that did not parse or were cut by damage.
    pub bad_pes: u64,
    /// Frames dropped while waiting for a configuration or keyframe.
    pub dropped_frames: u64,
}

#[derive(Debug)]
struct Es {
    stream_type: u8,
    codec: Option<Codec>,
    track: TrackId,
    cc: Option<u8>,
    pes: BytesMut,
    pes_len: Option<usize>,
    damaged: bool,
    need_key: bool,
    config: Bytes,
    params: Vec<Vec<u8>>,
}

const MAX_PES: usize = 16 << 20;
const WRAP: i64 = 1 << 33;
const JUMP: i64 = 10 * 90_000;

/// Sans-IO MPEG-TS demuxer for one program.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    buf: BytesMut,
    pmt_pid: Option<u16>,
    pmt_crc: Option<u32>,
    es: HashMap<u16, Es>,
    out: VecDeque<DemuxOutput>,
    /// Unwrapped 90 kHz time of the last timestamp, and the raw value.
    clock: Option<(i64, i64)>,
    /// Subtracted from unwrapped time so the stream starts near zero.
    base: Option<i64>,
    stats: DemuxStats,
    unsupported_reported: Vec<u16>,
}

impl TsDemuxer {
    /// A demuxer waiting for a PAT.
    pub fn new() -> TsDemuxer {
        TsDemuxer::default()
    }

    /// Damage counters.
    pub fn stats(&self) -> &DemuxStats {
        &self.stats
    }

    /// The next output.
    pub fn poll(&mut self) -> Option<DemuxOutput> {
        self.out.pop_front()
    }

    /// Feeds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        loop {
            let Some(start) = self.buf.iter().position(|&b| b == 0x47) else {
                if !self.buf.is_empty() {
                    self.stats.resyncs += 1;
                }
                self.buf.clear();
                return;
            };
            if start > 0 {
                self.stats.resyncs += 1;
                let _ = self.buf.split_to(start);
            }
            if self.buf.len() < PACKET {
                return;
            }
            // A lone 0x47 inside garbage: require the next packet to line up too when we can see it.
            if self.buf.len() > PACKET && self.buf[PACKET] != 0x47 {
                self.stats.resyncs += 1;
                let _ = self.buf.split_to(1);
                continue;
            }
            let pkt = self.buf.split_to(PACKET).freeze();
            self.packet(&pkt);
        }
    }

    /// Flushes PES packets still being assembled (end of input).
    pub fn finish(&mut self) {
        let pids: Vec<u16> = self.es.keys().copied().collect();
        for pid in pids {
            self.flush_pes(pid);
        }
    }

    fn packet(&mut self, p: &[u8]) {
        self.stats.packets += 1;
        if p[1] & 0x80 != 0 {
            self.stats.transport_errors += 1;
            if let Some(es) = self.es.get_mut(&(u16::from_be_bytes([p[1], p[2]]) & 0x1fff)) {
                es.damaged = true;
            }
            return;
        }
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1], p[2]]) & 0x1fff;
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        let mut pos = 4;
        let mut discontinuity_flag = false;
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            if len > 183 {
                return;
            }
            if len > 0 {
                discontinuity_flag = p[5] & 0x80 != 0;
            }
            pos = 5 + len;
        }
        let has_payload = afc & 1 != 0;
        let payload = if has_payload && pos < PACKET { &p[pos..] } else { &[][..] };
        if pid == 0 {
            if pusi {
                self.pat(payload);
            }
            return;
        }
        if Some(pid) == self.pmt_pid {
            if pusi {
                self.pmt(payload);
            }
            return;
        }
        let Some(es) = self.es.get_mut(&pid) else { return };
        if has_payload {
            if let Some(last) = es.cc {
                let expected = (last + 1) & 0x0f;
                if cc == last && !pusi {
                    return; // a duplicate packet, allowed once
                }
                if cc != expected && !discontinuity_flag {
                    self.stats.cc_errors += 1;
                    es.damaged = true;
                    if matches!(es.codec, Some(Codec::H264 | Codec::H265)) {
                        es.need_key = true;
                    }
                }
            }
            es.cc = Some(cc);
        }
        if pusi {
            self.flush_pes(pid);
            let Some(es) = self.es.get_mut(&pid) else { return };
            es.pes.clear();
            es.damaged = false;
            es.pes_len = None;
            if payload.len() >= 6 && payload[..3] == [0, 0, 1] {
                let len = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
                es.pes_len = (len > 0).then_some(len + 6);
            }
            es.pes.extend_from_slice(payload);
        } else if !es.pes.is_empty() {
            if es.pes.len() + payload.len() > MAX_PES {
                self.stats.bad_pes += 1;
                es.pes.clear();
                return;
            }
            es.pes.extend_from_slice(payload);
        }
        let complete = self.es.get(&pid).is_some_and(|e| e.pes_len.is_some_and(|l| e.pes.len() >= l));
        if complete {
            self.flush_pes(pid);
        }
    }

    fn section<'a>(&mut self, payload: &'a [u8], table_id: u8) -> Option<&'a [u8]> {
        let pointer = usize::from(*payload.first()?);
        let s = payload.get(1 + pointer..)?;
        if s.len() < 3 || s[0] != table_id {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([s[1], s[2]]) & 0x0fff);
        let Some(section) = s.get(..3 + len).filter(|_| len >= 9) else {
            self.stats.bad_sections += 1;
            return None;
        };
        if crc32(section) != 0 {
            self.stats.bad_sections += 1;
            return None;
        }
        Some(section)
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(s) = self.section(payload, 0x00) else { return };
        let entries = &s[8..s.len() - 4];
        for e in entries.chunks_exact(4) {
            let program = u16::from_be_bytes([e[0], e[1]]);
            if program != 0 {
                let pid = u16::from_be_bytes([e[2], e[3]]) & 0x1fff;
                if self.pmt_pid != Some(pid) {
                    self.pmt_pid = Some(pid);
                    self.pmt_crc = None;
                }
                return;
            }
        }
    }

    fn pmt(&mut self, payload: &[u8]) {
        let Some(s) = self.section(payload, 0x02) else { return };
        let crc = u32::from_be_bytes([s[s.len() - 4], s[s.len() - 3], s[s.len() - 2], s[s.len() - 1]]);
        if self.pmt_crc == Some(crc) {
            return; // repeated, unchanged
        }
        let changed = self.pmt_crc.is_some();
        self.pmt_crc = Some(crc);
        let info_len = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0fff);
        let mut rest = s.get(12 + info_len..s.len() - 4).unwrap_or_default();
        let mut streams = Vec::new();
        while rest.len() >= 5 {
            let st = rest[0];
            let pid = u16::from_be_bytes([rest[1], rest[2]]) & 0x1fff;
            let es_len = usize::from(u16::from_be_bytes([rest[3], rest[4]]) & 0x0fff);
            let Some(desc) = rest.get(5..5 + es_len) else { break };
            streams.push((st, pid, desc.to_vec()));
            rest = &rest[5 + es_len..];
        }
        // Flush what the old program had pending, then start over.
        self.finish();
        let old: HashMap<u16, Es> = std::mem::take(&mut self.es);
        for (i, (st, pid, desc)) in streams.into_iter().enumerate() {
            let codec = match st {
                stream_type::H264 => Some(Codec::H264),
                stream_type::H265 => Some(Codec::H265),
                stream_type::AAC_ADTS => Some(Codec::Aac),
                stream_type::MPEG1_AUDIO | stream_type::MPEG2_AUDIO => Some(Codec::Mp3),
                _ => None,
            };
            if codec.is_none() && !self.unsupported_reported.contains(&pid) {
                self.unsupported_reported.push(pid);
                let what = describe_unsupported(st, &desc);
                self.out.push_back(DemuxOutput::Unsupported { pid, what });
            }
            let keep = old.get(&pid).filter(|o| o.stream_type == st);
            self.es.insert(
                pid,
                Es {
                    stream_type: st,
                    codec,
                    track: i as TrackId,
                    cc: None,
                    pes: BytesMut::new(),
                    pes_len: None,
                    damaged: false,
                    need_key: matches!(codec, Some(Codec::H264 | Codec::H265)),
                    config: keep.map(|o| o.config.clone()).unwrap_or_default(),
                    params: keep.map(|o| o.params.clone()).unwrap_or_default(),
                },
            );
        }
        if changed {
            self.out.push_back(DemuxOutput::Discontinuity);
        }
        self.emit_tracks();
    }

    fn emit_tracks(&mut self) {
        let mut tracks: Vec<Track> = self
            .es
            .values()
            .filter_map(|e| {
                let codec = e.codec?;
                if codec != Codec::Mp3 && e.config.is_empty() {
                    return None;
                }
                let info = tidecast_codecs::describe(codec, &e.config).ok()?;
                Some(Track { id: e.track, codec, config: e.config.clone(), info })
            })
            .collect();
        tracks.sort_by_key(|t| t.id);
        if !tracks.is_empty() {
            self.out.push_back(DemuxOutput::Tracks(tracks));
        }
    }

    /// 90 kHz raw timestamp to microseconds on the unwrapped, rebased timeline.
    fn time(&mut self, raw: i64) -> i64 {
        let unwrapped = match self.clock {
            None => raw,
            Some((ext, last_raw)) => {
                let mut d = (raw - last_raw).rem_euclid(WRAP);
                if d >= WRAP / 2 {
                    d -= WRAP;
                }
                ext + d
            }
        };
        if let Some((ext, _)) = self.clock {
            if (unwrapped - ext).abs() > JUMP {
                // A jump: continue the timeline from where it was.
                self.base = Some(self.base.unwrap_or(0) + (unwrapped - ext) - 3_000);
                self.out.push_back(DemuxOutput::Discontinuity);
            }
        }
        self.clock = Some((unwrapped, raw));
        let base = *self.base.get_or_insert(unwrapped);
        rescale(unwrapped - base, 90_000, TIMESCALE)
    }

    fn flush_pes(&mut self, pid: u16) {
        let Some(es) = self.es.get_mut(&pid) else { return };
        if es.pes.is_empty() {
            return;
        }
        let pes = es.pes.split().freeze();
        let damaged = std::mem::take(&mut es.damaged);
        es.pes_len = None;
        let Some(codec) = es.codec else { return };
        if damaged {
            self.stats.bad_pes += 1;
            return;
        }
        let Some((pts, dts, data)) = parse_pes(&pes) else {
            self.stats.bad_pes += 1;
            return;
        };
        let (Some(pts), dts) = (pts, dts) else {
            self.stats.bad_pes += 1;
            return;
        };
        let dts_us = self.time(dts.unwrap_or(pts));
        let cts_us = rescale((pts - dts.unwrap_or(pts)).rem_euclid(WRAP), 90_000, TIMESCALE) as i32;
        match codec {
            Codec::H264 | Codec::H265 => self.video(pid, codec, data, dts_us, cts_us),
            Codec::Aac => self.adts(pid, data, dts_us),
            _ => {
                let track = self.es.get(&pid).map_or(0, |e| e.track);
                let frame = Frame { track, dts: dts_us, cts: 0, keyframe: true, payload: data };
                self.out.push_back(DemuxOutput::Frame(frame));
            }
        }
    }

    fn video(&mut self, pid: u16, codec: Codec, data: Bytes, dts: i64, cts: i32) {
        let au = access_unit::split_annexb(codec, &data);
        let Some(es) = self.es.get_mut(&pid) else { return };
        if !au.params.is_empty() && au.params != es.params {
            if let Some(record) = access_unit::config_from_params(codec, &au.params) {
                es.params = au.params;
                es.config = Bytes::from(record);
                self.emit_tracks();
            }
        }
        let Some(es) = self.es.get_mut(&pid) else { return };
        if es.config.is_empty() || au.data.is_empty() || (es.need_key && !au.keyframe) {
            self.stats.dropped_frames += 1;
            return;
        }
        es.need_key = false;
        let frame = Frame { track: es.track, dts, cts, keyframe: au.keyframe, payload: au.data };
        self.out.push_back(DemuxOutput::Frame(frame));
    }

    fn adts(&mut self, pid: u16, data: Bytes, dts: i64) {
        let mut pos = 0;
        let mut index = 0i64;
        while pos + 7 <= data.len() {
            let h = &data[pos..];
            if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
                self.stats.bad_pes += 1;
                return;
            }
            let protection_absent = h[1] & 1 != 0;
            let profile = (h[2] >> 6) + 1;
            let rate_index = (h[2] >> 2) & 0x0f;
            let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
            let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
            let header = if protection_absent { 7 } else { 9 };
            if len < header || pos + len > data.len() {
                self.stats.bad_pes += 1;
                return;
            }
            let Some(es) = self.es.get_mut(&pid) else { return };
            let rate = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]
                .get(usize::from(rate_index))
                .copied();
            let Some(rate) = rate else {
                self.stats.bad_pes += 1;
                return;
            };
            if let Ok(asc) = aac::build(profile, rate, channels) {
                if es.config.as_ref() != asc {
                    es.config = Bytes::copy_from_slice(&asc);
                    self.emit_tracks();
                }
            }
            let Some(es) = self.es.get(&pid) else { return };
            let frame_dts = dts + index * 1024 * i64::from(TIMESCALE) / i64::from(rate);
            let payload = data.slice(pos + header..pos + len);
            self.out.push_back(DemuxOutput::Frame(Frame {
                track: es.track,
                dts: frame_dts,
                cts: 0,
                keyframe: true,
                payload,
            }));
            pos += len;
            index += 1;
        }
    }
}

fn describe_unsupported(st: u8, desc: &[u8]) -> String {
    let mut d = desc;
    while d.len() >= 2 {
        let (tag, len) = (d[0], usize::from(d[1]));
        let body = d.get(2..2 + len).unwrap_or_default();
        match tag {
            0x05 if body.starts_with(b"Opus") => return "Opus audio (not carried from MPEG-TS yet)".into(),
            0x05 if body.starts_with(b"AC-3") => return "AC-3 audio (not supported)".into(),
            0x6a => return "AC-3 audio (not supported)".into(),
            0x7a => return "E-AC-3 audio (not supported)".into(),
            _ => {}
        }
        d = d.get(2 + len..).unwrap_or_default();
    }
    match st {
        stream_type::AC3 => "AC-3 audio (not supported)".into(),
        stream_type::EAC3 => "E-AC-3 audio (not supported)".into(),
        stream_type::AAC_LATM => "AAC in LATM (not supported; use ADTS)".into(),
        other => format!("stream type 0x{other:02x} (not supported)"),
    }
}

fn read_ts(b: &[u8]) -> i64 {
    (i64::from(b[0] >> 1 & 7) << 30)
        | (i64::from(b[1]) << 22)
        | (i64::from(b[2] >> 1) << 15)
        | (i64::from(b[3]) << 7)
        | i64::from(b[4] >> 1)
}

/// Splits a PES packet into (pts, dts, payload).
fn parse_pes(pes: &Bytes) -> Option<(Option<i64>, Option<i64>, Bytes)> {
    if pes.len() < 9 || pes[..3] != [0, 0, 1] {
        return None;
    }
    let flags = pes[7];
    let header_len = usize::from(pes[8]);
    let start = 9 + header_len;
    if pes.len() < start {
        return None;
    }
    let pts = (flags & 0x80 != 0 && header_len >= 5).then(|| read_ts(&pes[9..14]));
    let dts = (flags & 0xc0 == 0xc0 && header_len >= 10).then(|| read_ts(&pes[14..19]));
    let declared = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
    let end = if declared > 0 { (6 + declared).min(pes.len()) } else { pes.len() };
    Some((pts, dts, pes.slice(start.min(end)..end)))
}
