//! From depacketized RTP samples to media frames (sans-IO).
//!
//! str0m reassembles each codec's RTP payloads into whole samples (Annex B
//! for H.264, OBUs with size fields for AV1, raw frames for VP8/VP9/Opus).
//! This turns them into what the media core carries: length-prefixed NAL
//! units with an avcC built from in-band SPS/PPS, AV1 temporal units with an
//! av1C from the sequence header, VP8/VP9 frames with a vpcC read from each
//! keyframe's header, a timeline in microseconds shared by audio
//! and video, and tracks announced once every expected track is configured.

use bytes::Bytes;
use tidecast_codecs::access_unit::{self, ParamSets};
use tidecast_codecs::{av1, opus, vpx};
use tidecast_media::{Codec, Frame, Track, TrackId, TIMESCALE};

/// Track id of the video track of a WebRTC publisher.
pub const VIDEO: TrackId = 0;
/// Track id of the audio track of a WebRTC publisher.
pub const AUDIO: TrackId = 1;

/// One depacketized sample.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    /// The codec its payload type maps to.
    pub codec: Codec,
    /// RTP time (extended past the 32-bit wrap).
    pub rtp_time: u64,
    /// The codec's RTP clock rate.
    pub clock_rate: u32,
    /// When its first packet arrived, in microseconds on the session's clock.
    pub arrival_us: i64,
    /// The sample.
    pub data: &'a [u8],
    /// Whether the depacketizer marked it a keyframe (VP8, VP9, AV1).
    pub keyframe: bool,
    /// Whether it follows the previous sample without lost packets.
    pub contiguous: bool,
}

/// What one sample produced.
#[derive(Debug, Default, PartialEq)]
pub struct Assembled {
    /// The tracks, when they are first known or change.
    pub tracks: Option<Vec<Track>>,
    /// The frame, once the tracks are known.
    pub frame: Option<Frame>,
    /// The video is unusable until the next keyframe: ask the sender for one.
    pub want_keyframe: bool,
}

#[derive(Debug)]
struct Clock {
    rtp0: u64,
    arrival0: i64,
    rate: u32,
    last: Option<i64>,
}

impl Clock {
    fn dts(&mut self, s: &Sample) -> i64 {
        if s.clock_rate != self.rate || s.rtp_time.abs_diff(self.rtp0) > u64::from(s.clock_rate) * 3600 {
            // A new clock or a jump of over an hour: re-anchor on arrival.
            *self = Clock { rtp0: s.rtp_time, arrival0: s.arrival_us, rate: s.clock_rate, last: self.last };
        }
        let delta = i128::from(s.rtp_time) - i128::from(self.rtp0);
        let us = delta * i128::from(TIMESCALE) / i128::from(self.rate.max(1));
        let mut dts = self.arrival0.saturating_add(i64::try_from(us).unwrap_or(0));
        if let Some(last) = self.last {
            dts = dts.max(last + 1);
        }
        self.last = Some(dts);
        dts
    }
}

#[derive(Debug)]
struct TrackState {
    codec: Codec,
    config: Option<Bytes>,
    clock: Option<Clock>,
}

/// Turns one publisher's samples into frames.
#[derive(Debug)]
pub struct Assembler {
    expect_video: bool,
    expect_audio: bool,
    video: Option<TrackState>,
    audio: Option<TrackState>,
    params: ParamSets,
    /// VP8/VP9 picture size from the last keyframe (their vpcC has none).
    vp_size: Option<(u32, u32)>,
    announced: Option<Vec<Track>>,
    need_key: bool,
    /// Samples dropped: before the tracks were known, unparseable, or while
    /// waiting for a keyframe after loss.
    pub dropped: u64,
}

impl Assembler {
    /// An assembler for a publisher that negotiated video and/or audio.
    pub fn new(expect_video: bool, expect_audio: bool) -> Assembler {
        Assembler {
            expect_video,
            expect_audio,
            video: None,
            audio: None,
            params: ParamSets::default(),
            vp_size: None,
            announced: None,
            need_key: true,
            dropped: 0,
        }
    }

    /// Takes one sample.
    pub fn push(&mut self, s: &Sample) -> Assembled {
        let mut out = Assembled::default();
        let video = s.codec.kind() == tidecast_media::MediaKind::Video;
        let (payload, keyframe, config) = if video {
            if !s.contiguous {
                self.need_key = true;
            }
            match self.video_payload(s) {
                Some(v) => v,
                None => {
                    self.dropped += 1;
                    out.want_keyframe = self.need_key;
                    return out;
                }
            }
        } else {
            if s.data.is_empty() {
                // Chromium sometimes sends an empty audio payload on the
                // timestamp of the previous one; it is no frame.
                self.dropped += 1;
                return out;
            }
            let config = match s.codec {
                Codec::Opus => Some(Bytes::from(opus::build_head(2, 0))),
                _ => None,
            };
            (Bytes::copy_from_slice(s.data), true, config)
        };
        let slot = if video { &mut self.video } else { &mut self.audio };
        let state = slot.get_or_insert_with(|| TrackState { codec: s.codec, config: None, clock: None });
        if state.codec != s.codec {
            // The sender switched codecs (another payload type): a new
            // configuration on the same timeline.
            state.codec = s.codec;
            state.config = None;
        }
        if config.is_some() && config != state.config {
            state.config = config;
        }
        let clock = state.clock.get_or_insert(Clock {
            rtp0: s.rtp_time,
            arrival0: s.arrival_us,
            rate: s.clock_rate,
            last: None,
        });
        let dts = clock.dts(s);
        out.tracks = self.tracks_if_changed();
        if self.announced.is_none() {
            self.dropped += 1;
            out.want_keyframe = video && self.need_key;
            return out;
        }
        if video {
            if self.need_key && !keyframe {
                self.dropped += 1;
                out.want_keyframe = true;
                return out;
            }
            self.need_key = false;
        }
        let track = if video { VIDEO } else { AUDIO };
        out.frame = Some(Frame { track, dts, cts: 0, keyframe, payload });
        out
    }

    /// The frame payload, whether it is a keyframe, and the configuration
    /// record it carries, if any.
    fn video_payload(&mut self, s: &Sample) -> Option<(Bytes, bool, Option<Bytes>)> {
        match s.codec {
            Codec::H264 | Codec::H265 => {
                let au = access_unit::split_annexb(s.codec, s.data);
                let config = self.params.update(s.codec, &au.params).or_else(|| self.params.config().cloned());
                (!au.data.is_empty()).then_some((au.data, au.keyframe, config))
            }
            Codec::Av1 => {
                let mut tu = Vec::with_capacity(s.data.len());
                let mut config = None;
                for obu in av1::whole_obus(s.data) {
                    let (kind, whole, _) = obu.ok()?;
                    match kind {
                        av1::OBU_TEMPORAL_DELIMITER => continue,
                        av1::OBU_SEQUENCE_HEADER => config = av1::build_config(whole).ok().map(Bytes::from),
                        _ => {}
                    }
                    tu.extend_from_slice(whole);
                }
                let config = config.or_else(|| self.video.as_ref().and_then(|v| v.config.clone()));
                (!tu.is_empty()).then(|| (Bytes::from(tu), s.keyframe, config))
            }
            Codec::Vp8 | Codec::Vp9 => {
                // A header that does not parse is a broken frame: drop it.
                let key = vpx::keyframe_config(s.codec, s.data).ok()?;
                let config = key.map(|c| {
                    self.vp_size = Some(c.size);
                    Bytes::from(vpx::build_config(&c))
                });
                Some((Bytes::copy_from_slice(s.data), config.is_some(), config))
            }
            _ => None,
        }
    }

    /// The track list, when every expected track is configured and it
    /// differs from the one announced.
    fn tracks_if_changed(&mut self) -> Option<Vec<Track>> {
        let mut tracks = Vec::new();
        for (expected, slot, id) in [(self.expect_video, &self.video, VIDEO), (self.expect_audio, &self.audio, AUDIO)] {
            if !expected {
                continue;
            }
            let state = slot.as_ref()?;
            let config = state.config.clone()?;
            let mut info = tidecast_codecs::describe(state.codec, &config).ok()?;
            if let (Some((w, h)), Codec::Vp8 | Codec::Vp9) = (self.vp_size, state.codec) {
                (info.width, info.height) = (w, h);
            }
            tracks.push(Track { id, codec: state.codec, config, info });
        }
        if tracks.is_empty() || self.announced.as_ref() == Some(&tracks) {
            return None;
        }
        self.announced = Some(tracks.clone());
        Some(tracks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[
        0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
        0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44];

    fn annexb(units: &[&[u8]]) -> Vec<u8> {
        units.iter().flat_map(|u| [&[0u8, 0, 0, 1][..], u].concat()).collect()
    }

    fn sample(codec: Codec, rtp: u64, arrival_ms: i64, data: &[u8]) -> Sample<'_> {
        let clock_rate = if codec == Codec::Opus { 48_000 } else { 90_000 };
        Sample {
            codec,
            rtp_time: rtp,
            clock_rate,
            arrival_us: arrival_ms * 1000,
            data,
            keyframe: false,
            contiguous: true,
        }
    }

    #[test]
    fn waits_for_every_track_then_keeps_one_timeline() {
        let mut a = Assembler::new(true, true);
        let opus = [0xfc, 1, 2];
        // Audio before the first keyframe is dropped, and a keyframe is asked for.
        let first = a.push(&sample(Codec::Opus, 1000, 0, &opus));
        assert!(first.frame.is_none() && first.tracks.is_none());
        let delta = annexb(&[&[0x41, 0x9a]]);
        assert!(a.push(&sample(Codec::H264, 5000, 5, &delta)).want_keyframe);
        let key = annexb(&[SPS, PPS, &[0x65, 0x88]]);
        let out = a.push(&sample(Codec::H264, 5000 + 9000, 105, &key));
        let tracks = out.tracks.expect("tracks once both are configured");
        assert_eq!(tracks.iter().map(|t| t.codec).collect::<Vec<_>>(), vec![Codec::H264, Codec::Opus]);
        let f = out.frame.expect("the keyframe");
        assert!(f.keyframe);
        assert_eq!(f.dts, 105_000, "anchored on the first sample's arrival plus RTP time");
        assert_eq!(&f.payload[..], &[0, 0, 0, 2, 0x65, 0x88]);
        // Audio 100 ms of RTP later lands 100 ms after its anchor.
        let au = a.push(&sample(Codec::Opus, 1000 + 4800, 100, &opus)).frame.unwrap();
        assert_eq!((au.track, au.dts), (AUDIO, 100_000));
        // An empty audio payload on the same timestamp is no frame.
        assert!(a.push(&sample(Codec::Opus, 1000 + 4800, 101, &[])).frame.is_none());
        // Loss makes the next delta frame useless until a keyframe.
        let mut lost = sample(Codec::H264, 5000 + 12_000, 140, &delta);
        lost.contiguous = false;
        let out = a.push(&lost);
        assert!(out.frame.is_none() && out.want_keyframe);
        assert!(a.push(&sample(Codec::H264, 5000 + 15_000, 170, &key)).frame.is_some());
    }

    #[test]
    fn av1_drops_temporal_delimiters_and_builds_av1c() {
        let seq = [0x0a, 0x0b, 0x00, 0x00, 0x00, 0x04, 0x3c, 0xff, 0xbc, 0xda, 0xf9, 0x00, 0x40];
        let td = [0x12, 0x00];
        let frame = [0x32, 0x02, 0x10, 0x00];
        let data = [&td[..], &seq, &frame].concat();
        let mut a = Assembler::new(true, false);
        let mut s = sample(Codec::Av1, 0, 0, &data);
        s.keyframe = true;
        let out = a.push(&s);
        assert_eq!(out.tracks.unwrap()[0].codec, Codec::Av1);
        assert_eq!(&out.frame.unwrap().payload[..], &[&seq[..], &frame].concat()[..]);
        assert!(a.push(&sample(Codec::Av1, 3000, 33, &[])).frame.is_none(), "an empty sample is dropped");
        let bad = a.push(&sample(Codec::Av1, 3000, 33, &[0x32, 0x7f]));
        assert!(bad.frame.is_none(), "a truncated OBU is dropped");
    }

    #[test]
    fn vp9_waits_for_a_keyframe_and_reads_its_header() {
        let mut a = Assembler::new(true, false);
        let inter = [0x86, 0x00, 0x01];
        let out = a.push(&sample(Codec::Vp9, 0, 0, &inter));
        assert!(out.frame.is_none() && out.want_keyframe, "no frames before the first keyframe");
        // 320x240, profile 0 (see codecs::vpx).
        let key = [0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x00];
        let out = a.push(&sample(Codec::Vp9, 3000, 33, &key));
        let tracks = out.tracks.expect("tracks once a keyframe gives the vpcC");
        assert_eq!((tracks[0].info.width, tracks[0].info.height), (320, 240));
        assert_eq!(tracks[0].info.codec_string, "vp09.00.20.08");
        assert!(out.frame.expect("the keyframe").keyframe);
        let next = a.push(&sample(Codec::Vp9, 6000, 66, &inter));
        assert!(next.tracks.is_none() && next.frame.is_some_and(|f| !f.keyframe));
        assert!(a.push(&sample(Codec::Vp9, 9000, 99, &[0x02])).frame.is_none(), "a bad header is dropped");
    }
}
