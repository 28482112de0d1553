//! Muxer and demuxer against each other, and the demuxer against damage.

use bytes::Bytes;
use tidecast_media::{Codec, Frame, Track};

use super::*;

fn tracks() -> Vec<Track> {
    let sps = [
        0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
    ];
    let avcc = tidecast_codecs::h264::build_config(&sps, &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44]).unwrap();
    let asc = Bytes::from_static(&[0x12, 0x10]);
    vec![
        Track {
            id: 0,
            codec: Codec::H264,
            info: tidecast_codecs::describe(Codec::H264, &avcc).unwrap(),
            config: avcc.into(),
        },
        Track { id: 1, codec: Codec::Aac, info: tidecast_codecs::describe(Codec::Aac, &asc).unwrap(), config: asc },
    ]
}

fn frames(n: i64) -> Vec<Frame> {
    let mut out = Vec::new();
    for i in 0..n {
        let nal_type = if i % 25 == 0 { 0x65 } else { 0x41 };
        let mut payload = vec![0, 0, 0, 0, nal_type];
        payload.extend((0..(500 + i * 37 % 3000)).map(|b| (b % 251) as u8 | 1));
        let len = (payload.len() - 4) as u32;
        payload[..4].copy_from_slice(&len.to_be_bytes());
        out.push(Frame { track: 0, dts: i * 40_000, cts: 80_000, keyframe: i % 25 == 0, payload: payload.into() });
        out.push(Frame {
            track: 1,
            dts: i * 40_000 + 5_000,
            cts: 0,
            keyframe: true,
            payload: Bytes::from(vec![0x21; 200]),
        });
    }
    out
}

fn mux_all(frames: &[Frame]) -> Vec<u8> {
    let mut m = TsMuxer::new(&tracks());
    frames.iter().filter_map(|f| m.frame(f)).flat_map(|b| b.to_vec()).collect()
}

fn demux_all(ts: &[u8], step: usize) -> (Vec<DemuxOutput>, DemuxStats) {
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    for piece in ts.chunks(step) {
        d.push(piece);
        while let Some(o) = d.poll() {
            out.push(o);
        }
    }
    d.finish();
    while let Some(o) = d.poll() {
        out.push(o);
    }
    (out, d.stats().clone())
}

fn frames_of(out: &[DemuxOutput], track: u32) -> Vec<Frame> {
    out.iter()
        .filter_map(|o| match o {
            DemuxOutput::Frame(f) if f.track == track => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn mux_then_demux_round_trips_frames_and_tracks() {
    let input = frames(60);
    let ts = mux_all(&input);
    assert_eq!(ts.len() % PACKET, 0);
    for step in [188 * 7, 1, 1000] {
        let (out, stats) = demux_all(&ts, step);
        assert_eq!(stats.cc_errors, 0);
        let DemuxOutput::Tracks(t) = out.iter().find(|o| matches!(o, DemuxOutput::Tracks(t) if t.len() == 2)).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(t[0].config, tracks()[0].config, "SPS/PPS rebuilt into the same avcC");
        assert_eq!(t[1].config, tracks()[1].config, "ADTS rebuilt into the same ASC");
        let video = frames_of(&out, 0);
        let audio = frames_of(&out, 1);
        assert_eq!(video.len(), 60, "step {step}");
        assert_eq!(audio.len(), 60);
        for (a, b) in video.iter().zip(input.iter().filter(|f| f.track == 0)) {
            assert_eq!(a.payload, b.payload);
            assert_eq!(a.keyframe, b.keyframe);
            assert_eq!(a.cts, b.cts);
            assert_eq!(a.dts - video[0].dts, b.dts);
        }
        assert_eq!(audio[1].payload.as_ref(), &[0x21; 200][..]);
    }
}

#[test]
fn continuity_errors_are_counted_and_video_recovers_at_the_next_keyframe() {
    let ts = mux_all(&frames(60));
    // Drop one packet in the middle of the first GOP.
    let mut damaged = ts.clone();
    let cut = 188 * 40;
    damaged.drain(cut..cut + 188);
    let (out, stats) = demux_all(&damaged, 188 * 10);
    assert!(stats.cc_errors >= 1);
    let video = frames_of(&out, 0);
    assert!(video.len() < 60 && video.len() >= 35, "{} frames", video.len());
    // After the damage, video restarts with a keyframe.
    let gap = video.windows(2).position(|w| w[1].dts - w[0].dts > 40_000).expect("a gap");
    assert!(video[gap + 1].keyframe);
}

#[test]
fn garbage_between_packets_is_skipped() {
    let ts = mux_all(&frames(30));
    let mut noisy = Vec::new();
    for (i, p) in ts.chunks(188).enumerate() {
        if i % 50 == 3 {
            noisy.extend_from_slice(&[0x47, 1, 2, 3, 0xff, 0x47]);
        }
        noisy.extend_from_slice(p);
    }
    let (out, stats) = demux_all(&noisy, 4096);
    assert!(stats.resyncs > 0);
    assert!(frames_of(&out, 0).len() >= 25);
}

#[test]
fn timestamps_unwrap_across_33_bits() {
    let mut input = frames(50);
    // Put the 33-bit wrap in the middle: start 1 s before it.
    let wrap_us = ((1i64 << 33) * 1_000_000) / 90_000;
    for f in &mut input {
        f.dts += wrap_us - 1_000_000 - 1_000_000; // the muxer adds 1 s
    }
    let (out, _) = demux_all(&mux_all(&input), 188 * 20);
    let video = frames_of(&out, 0);
    assert_eq!(video.len(), 50);
    assert!(video.windows(2).all(|w| w[1].dts - w[0].dts == 40_000), "monotonic through the wrap");
    assert!(!out.iter().any(|o| matches!(o, DemuxOutput::Discontinuity)));
}

#[test]
fn a_jump_is_a_discontinuity_and_the_timeline_continues() {
    let mut input = frames(50);
    for f in input.iter_mut().skip(50) {
        f.dts += 3_600_000_000; // an hour later
    }
    let (out, _) = demux_all(&mux_all(&input), 188 * 20);
    assert!(out.iter().any(|o| matches!(o, DemuxOutput::Discontinuity)));
    let video = frames_of(&out, 0);
    assert!(video.windows(2).all(|w| (w[1].dts - w[0].dts).abs() < 1_000_000));
}

#[test]
fn unsupported_streams_are_reported_once() {
    // A PMT with an AC-3 stream (ATSC type 0x81) and an Opus one (private + registration).
    let section = psi_with(&[(0x81, 0x101, vec![]), (0x06, 0x102, vec![0x05, 4, b'O', b'p', b'u', b's'])]);
    let mut ts = packet(0, &super::psi::pat(1, 0x1000));
    ts.extend(packet(0x1000, &section));
    ts.extend(packet(0x1000, &section));
    let (out, _) = demux_all(&ts, 188);
    let reports: Vec<_> = out.iter().filter(|o| matches!(o, DemuxOutput::Unsupported { .. })).collect();
    assert_eq!(reports.len(), 2, "{out:?}");
    assert!(format!("{reports:?}").contains("AC-3"));
    assert!(format!("{reports:?}").contains("Opus"));
}

fn psi_with(streams: &[(u8, u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0xe1, 0x01, 0xf0, 0x00];
    for (st, pid, desc) in streams {
        body.push(*st);
        body.extend_from_slice(&(0xe000 | pid).to_be_bytes());
        body.extend_from_slice(&(0xf000 | desc.len() as u16).to_be_bytes());
        body.extend_from_slice(desc);
    }
    let len = 5 + body.len() + 4;
    let mut s = vec![0x02, 0xb0 | (len >> 8) as u8, len as u8, 0, 1, 0xc1, 0, 0];
    s.extend_from_slice(&body);
    let crc = crc32(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

fn packet(pid: u16, section: &[u8]) -> Vec<u8> {
    let mut p = vec![0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0];
    p.extend_from_slice(section);
    p.resize(188, 0xff);
    p
}

#[test]
fn a_pmt_that_changes_codec_recreates_the_tracks() {
    let mut ts = mux_all(&frames(30));
    // The same program goes on with H.265 video (a new PMT, a new configuration).
    let vps = [
        0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x03, 0x00,
        0x00, 0x3c, 0x95, 0x98, 0x09,
    ];
    let sps = [
        0x42, 0x01, 0x01, 0x04, 0x08, 0x00, 0x00, 0x03, 0x00, 0x9e, 0x08, 0x00, 0x00, 0x03, 0x00, 0x00, 0x3c, 0x90,
        0x01, 0x61, 0x00, 0x90, 0xb2, 0xca, 0xcd, 0x24, 0x99, 0x5e, 0x02, 0xdc, 0x08, 0x08, 0x00, 0x10, 0x00, 0x00,
        0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x01, 0xe0, 0x80,
    ];
    let pps = [0x44, 0x01, 0xc1, 0x72, 0x86, 0x0c, 0x46, 0x24];
    let hvcc = tidecast_codecs::h265::build_config(&vps, &sps, &pps).unwrap();
    let hevc = Track {
        id: 0,
        codec: Codec::H265,
        info: tidecast_codecs::describe(Codec::H265, &hvcc).unwrap(),
        config: hvcc.into(),
    };
    let mut m = TsMuxer::new(&[hevc]);
    for i in 30..60i64 {
        let mut payload = vec![0, 0, 0, 3, if i % 25 == 5 { 0x26 } else { 0x02 }, 0x01, 0xaa];
        payload[3] = 3;
        let f = Frame { track: 0, dts: i * 40_000, cts: 0, keyframe: i % 25 == 5, payload: payload.into() };
        ts.extend(m.frame(&f).unwrap().to_vec());
    }
    let (out, _) = demux_all(&ts, 188 * 3);
    let disc =
        out.iter().position(|o| matches!(o, DemuxOutput::Discontinuity)).expect("the new PMT is a discontinuity");
    let hevc_tracks = out[disc..].iter().find_map(|o| match o {
        DemuxOutput::Tracks(t) if t.iter().any(|t| t.codec == Codec::H265) => Some(t.clone()),
        _ => None,
    });
    assert!(hevc_tracks.is_some(), "H.265 track announced after the change: {:?}", &out[disc..disc + 3]);
    let hevc_frames = out[disc..].iter().filter(|o| matches!(o, DemuxOutput::Frame(f) if f.track == 0)).count();
    assert!(hevc_frames >= 20, "H.265 frames flow after the first keyframe: {hevc_frames}");
}

#[test]
fn a_truncated_pes_is_dropped_and_the_rest_flows() {
    let ts = mux_all(&frames(20));
    // Cut the last packet of every 9th audio PES (audio PES declare their length).
    let mut out_ts = Vec::new();
    let packets: Vec<&[u8]> = ts.chunks(188).collect();
    let audio_pid = 0x101;
    for (i, p) in packets.iter().enumerate() {
        let pid = u16::from_be_bytes([p[1], p[2]]) & 0x1fff;
        let next_starts = packets
            .get(i + 1)
            .is_none_or(|n| n[1] & 0x40 != 0 || (u16::from_be_bytes([n[1], n[2]]) & 0x1fff) != audio_pid);
        if pid == audio_pid && p[1] & 0x40 == 0 && next_starts && i % 9 == 0 {
            continue;
        }
        out_ts.extend_from_slice(p);
    }
    let (out, stats) = demux_all(&out_ts, 188 * 5);
    assert!(stats.bad_pes > 0 || stats.cc_errors > 0);
    assert_eq!(frames_of(&out, 0).len(), 20, "video is untouched");
    assert!(frames_of(&out, 1).len() >= 15);
}
