//! CMAF (fMP4) packaging: one init segment per track, and fragments (`moof` +
//! `mdat`) whose sample payloads are the frames' own bytes.
//!
//! A fragment is returned as a header (`moof` and the `mdat` box header) plus
//! the payloads, so serving it writes the frame bytes from the media core to
//! the socket without copying them. Boxes are built with `mp4-atom`.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Atom, Audio, Av01, Av1c, Avc1, Avcc, Codec as Mp4Codec, Dinf, Dops, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1, Hvcc,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Opus, Prft, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts, Tfdt,
    Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd, Vp08, Vp09, VpcC,
};
use tidecast_media::{rescale, Codec, Frame, MediaKind, Track, TIMESCALE};

/// The track id inside every init segment and fragment we write (one track per file, as CMAF wants).
pub const TRACK_ID: u32 = 1;

/// Why a track cannot be packaged.
#[derive(Debug, thiserror::Error)]
pub enum CmafError {
    /// No sample entry for this codec yet.
    #[error("{0} cannot be packaged as CMAF yet")]
    Unsupported(&'static str),
    /// The configuration record did not parse.
    #[error("bad {0} configuration record: {1}")]
    BadConfig(&'static str, String),
    /// mp4-atom refused to encode.
    #[error("encoding {0} failed: {1}")]
    Encode(&'static str, String),
}

/// The media timescale we use for a track: 90 kHz for video, the sample
/// rate for audio.
pub fn timescale(track: &Track) -> u32 {
    match track.kind() {
        MediaKind::Video => 90_000,
        MediaKind::Audio if track.codec == Codec::Opus => 48_000,
        MediaKind::Audio => track.info.sample_rate.max(1),
    }
}

fn enc<T: Encode>(what: &'static str, atom: &T, out: &mut Vec<u8>) -> Result<(), CmafError> {
    atom.encode(out).map_err(|e| CmafError::Encode(what, e.to_string()))
}

fn sample_entry(track: &Track) -> Result<Mp4Codec, CmafError> {
    let visual = || Visual {
        data_reference_index: 1,
        width: track.info.width.min(u32::from(u16::MAX)) as u16,
        height: track.info.height.min(u32::from(u16::MAX)) as u16,
        horizresolution: 72.into(),
        vertresolution: 72.into(),
        frame_count: 1,
        compressor: "".into(),
        depth: 24,
    };
    let audio = |rate: u32, channels: u8| Audio {
        data_reference_index: 1,
        channel_count: u16::from(channels.max(1)),
        sample_size: 16,
        sample_rate: (rate.min(u32::from(u16::MAX)) as u16).into(),
    };
    let bad = |codec: &'static str| move |e: mp4_atom::Error| CmafError::BadConfig(codec, e.to_string());
    let mut cfg = &track.config[..];
    Ok(match track.codec {
        Codec::H264 => {
            Avc1 { visual: visual(), avcc: Avcc::decode_body(&mut cfg).map_err(bad("avcC"))?, ..Default::default() }
                .into()
        }
        Codec::H265 => {
            Hvc1 { visual: visual(), hvcc: Hvcc::decode_body(&mut cfg).map_err(bad("hvcC"))?, ..Default::default() }
                .into()
        }
        Codec::Av1 => {
            Av01 { visual: visual(), av1c: Av1c::decode_body(&mut cfg).map_err(bad("av1C"))?, ..Default::default() }
                .into()
        }
        Codec::Aac => {
            let asc =
                tidecast_codecs::aac::parse(&track.config).map_err(|e| CmafError::BadConfig("AAC", e.to_string()))?;
            Mp4a {
                audio: audio(asc.sample_rate, asc.channels),
                esds: Esds {
                    es_desc: EsDescriptor {
                        es_id: 1,
                        dec_config: DecoderConfig {
                            object_type_indication: 0x40,
                            stream_type: 5,
                            up_stream: 0,
                            buffer_size_db: Default::default(),
                            max_bitrate: track.info.bitrate.unwrap_or(0),
                            avg_bitrate: track.info.bitrate.unwrap_or(0),
                            dec_specific: Some(DecoderSpecific {
                                profile: asc.object_type,
                                freq_index: 0,
                                chan_conf: asc.channels,
                                raw: track.config.to_vec(),
                            }),
                        },
                        sl_config: SLConfig::default(),
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            }
            .into()
        }
        Codec::Opus => {
            let head =
                tidecast_codecs::opus::parse(&track.config).map_err(|e| CmafError::BadConfig("Opus", e.to_string()))?;
            Opus {
                audio: audio(48_000, head.channels),
                dops: Dops {
                    output_channel_count: head.channels,
                    pre_skip: head.pre_skip,
                    input_sample_rate: head.input_sample_rate,
                    output_gain: 0,
                    channel_mapping: None,
                },
                btrt: None,
            }
            .into()
        }
        Codec::Vp8 | Codec::Vp9 => {
            let c = tidecast_codecs::vpx::parse_config(&track.config)
                .map_err(|e| CmafError::BadConfig("vpcC", e.to_string()))?;
            let vpcc = VpcC {
                profile: c.profile,
                level: c.level,
                bit_depth: c.bit_depth,
                chroma_subsampling: c.chroma_subsampling,
                video_full_range_flag: c.full_range,
                color_primaries: c.color_primaries,
                transfer_characteristics: c.transfer_characteristics,
                matrix_coefficients: c.matrix_coefficients,
                codec_initialization_data: Vec::new(),
            };
            if track.codec == Codec::Vp8 {
                Vp08 { visual: visual(), vpcc, btrt: None, colr: None, pasp: None, spatial: None }.into()
            } else {
                Vp09 { visual: visual(), vpcc, btrt: None, colr: None, pasp: None, spatial: None }.into()
            }
        }
        Codec::Mp3 => return Err(CmafError::Unsupported("MP3")),
    })
}

/// Builds the init segment (`ftyp` + `moov`) for one track.
pub fn init_segment(track: &Track) -> Result<Bytes, CmafError> {
    init_segment_tracks(&[track])
}

/// Builds an init segment whose `moov` holds `tracks`, with track ids 1,
/// 2, ... in that order (a recording's video and audio in one file).
pub fn init_segment_tracks(tracks: &[&Track]) -> Result<Bytes, CmafError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into(), b"dash".into()],
    };
    let mut traks = Vec::with_capacity(tracks.len());
    let mut trex = Vec::with_capacity(tracks.len());
    for (i, track) in tracks.iter().enumerate() {
        let id = TRACK_ID + i as u32;
        traks.push(trak(track, id)?);
        trex.push(Trex { track_id: id, default_sample_description_index: 1, ..Default::default() });
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            next_track_id: TRACK_ID + tracks.len() as u32,
            rate: 1.into(),
            volume: 1.into(),
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak: traks,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(1024);
    enc("ftyp", &ftyp, &mut out)?;
    enc("moov", &moov, &mut out)?;
    Ok(Bytes::from(out))
}

pub(crate) fn trak(track: &Track, id: u32) -> Result<Trak, CmafError> {
    let video = track.kind() == MediaKind::Video;
    Ok(Trak {
        tkhd: Tkhd {
            track_id: id,
            enabled: true,
            in_movie: true,
            volume: if video { 0.into() } else { 1.into() },
            width: if video { (track.info.width.min(u32::from(u16::MAX)) as u16).into() } else { 0.into() },
            height: if video { (track.info.height.min(u32::from(u16::MAX)) as u16).into() } else { 0.into() },
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: timescale(track), language: "und".into(), ..Default::default() },
            hdlr: Hdlr {
                handler: if video { b"vide".into() } else { b"soun".into() },
                name: if video { "Tidecast video".into() } else { "Tidecast audio".into() },
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                stbl: Stbl {
                    stsd: Stsd { codecs: vec![sample_entry(track)?] },
                    stts: Stts::default(),
                    stsc: Stsc::default(),
                    stsz: Stsz::default(),
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    })
}

/// One sample of a fragment, timing in the track's media timescale.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The frame (payload and keyframe flag).
    pub frame: Frame,
    /// Decode time in the media timescale.
    pub dts: u64,
    /// Duration in the media timescale.
    pub duration: u32,
    /// Composition offset in the media timescale.
    pub cts: i32,
}

impl Sample {
    /// Converts a frame's microsecond timing to `timescale` ticks; `next_dts_us`
    /// is the following frame's dts (for the duration).
    pub fn from_frame(frame: Frame, next_dts_us: i64, timescale: u32) -> Sample {
        let dts = rescale(frame.dts, TIMESCALE, timescale);
        let next = rescale(next_dts_us, TIMESCALE, timescale);
        let cts = rescale(i64::from(frame.cts), TIMESCALE, timescale);
        Sample {
            dts: dts.max(0) as u64,
            duration: (next - dts).clamp(0, i64::from(u32::MAX)) as u32,
            cts: cts.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            frame,
        }
    }
}

const FLAGS_SYNC: u32 = 0x0200_0000;
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// A `prft` box (ISO/IEC 14496-12 8.16.5, version 1) tying `media_time` (in
/// the track's timescale) to `unix_ms`, the wall clock at which that frame
/// came in: written before a segment's first fragment, so a player can tell
/// its latency from the segments alone.
pub fn prft(media_time: u64, unix_ms: i64) -> Result<Bytes, CmafError> {
    let ms = u64::try_from(unix_ms).unwrap_or(0);
    let seconds = ms / 1000 + NTP_UNIX_OFFSET;
    let fraction = ((ms % 1000) << 32) / 1000;
    let atom = Prft {
        reference_track_id: TRACK_ID,
        ntp_timestamp: (seconds << 32) | fraction,
        media_time,
        // The default semantics: the time the frame came in (to us).
        ..Default::default()
    };
    let mut out = Vec::with_capacity(32);
    enc("prft", &atom, &mut out)?;
    Ok(Bytes::from(out))
}

/// Builds one fragment: returns the `moof` + `mdat` header; the sample
/// payloads follow it on the wire, in order, untouched.
pub fn fragment_header(sequence: u32, samples: &[Sample]) -> Result<Bytes, CmafError> {
    fragment_header_tracks(sequence, &[(TRACK_ID, samples)])
}

/// Builds one fragment of several tracks: a `traf` per `(track id,
/// samples)` run that has samples, in order; the `mdat` holds each run's
/// payloads after the previous run's. Returns the `moof` + `mdat` header;
/// the payloads follow it, run after run, untouched.
pub fn fragment_header_tracks(sequence: u32, runs: &[(u32, &[Sample])]) -> Result<Bytes, CmafError> {
    let runs: Vec<&(u32, &[Sample])> = runs.iter().filter(|(_, s)| !s.is_empty()).collect();
    let trafs: Vec<Traf> = runs
        .iter()
        .map(|(id, samples)| {
            let entries: Vec<TrunEntry> = samples
                .iter()
                .map(|s| TrunEntry {
                    duration: Some(s.duration),
                    size: Some(s.frame.payload.len() as u32),
                    flags: Some(if s.frame.keyframe { FLAGS_SYNC } else { FLAGS_NON_SYNC }),
                    cts: Some(i64::from(s.cts)),
                })
                .collect();
            Traf {
                tfhd: Tfhd { track_id: *id, default_base_is_moof: true, ..Default::default() },
                tfdt: Some(Tfdt { base_media_decode_time: samples.first().map_or(0, |s| s.dts) }),
                trun: vec![Trun { data_offset: Some(0), samples: TrunSamples::Explicit(entries) }],
                ..Default::default()
            }
        })
        .collect();
    let mut moof = Moof { mfhd: Mfhd { sequence_number: sequence }, traf: trafs };
    let mut out = Vec::with_capacity(128 + 16 * runs.iter().map(|r| r.1.len()).sum::<usize>());
    enc("moof", &moof, &mut out)?;
    let moof_len = out.len();
    let mut offset = moof_len + 8;
    for (traf, (_, samples)) in moof.traf.iter_mut().zip(&runs) {
        traf.trun[0].data_offset = Some(offset as i32);
        offset += samples.iter().map(|s| s.frame.payload.len()).sum::<usize>();
    }
    out.clear();
    enc("moof", &moof, &mut out)?;
    let payload = offset - moof_len - 8;
    let mut out = BytesMut::from(&out[..]);
    out.put_u32((payload + 8) as u32);
    out.put_slice(b"mdat");
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode};
    use tidecast_media::TrackInfo;

    fn h264_track() -> Track {
        let sps = [
            0x67, 0xf4, 0x00, 0x0d, 0x91, 0x9b, 0x28, 0x28, 0x3f, 0x60, 0x22, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00,
            0x03, 0x00, 0x64, 0x1e, 0x28, 0x53, 0x2c,
        ];
        let config = tidecast_codecs::h264::build_config(&sps, &[0x68, 0xeb, 0xe3, 0xc4, 0x48, 0x44]).unwrap();
        let info = tidecast_codecs::describe(Codec::H264, &config).unwrap();
        Track { id: 0, codec: Codec::H264, config: config.into(), info }
    }

    #[test]
    fn init_segment_decodes_back() {
        let init = init_segment(&h264_track()).unwrap();
        let mut buf = &init[..];
        assert!(matches!(Any::decode(&mut buf).unwrap(), Any::Ftyp(_)));
        match Any::decode(&mut buf).unwrap() {
            Any::Moov(m) => {
                assert_eq!(m.trak[0].mdia.mdhd.timescale, 90_000);
                assert!(
                    matches!(m.trak[0].mdia.minf.stbl.stsd.codecs[0], Mp4Codec::Avc1(ref a) if a.visual.width == 320)
                );
            }
            other => panic!("{other:?}"),
        }
        let aac = Track {
            id: 1,
            codec: Codec::Aac,
            config: Bytes::from_static(&[0x12, 0x10]),
            info: TrackInfo { sample_rate: 44100, channels: 2, ..Default::default() },
        };
        assert!(init_segment(&aac).is_ok());
    }

    #[test]
    fn vp8_and_vp9_get_a_vpcc_sample_entry() {
        let key = [0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6, 0x00];
        let c = tidecast_codecs::vpx::keyframe_config(Codec::Vp9, &key).unwrap().unwrap();
        let config = Bytes::from(tidecast_codecs::vpx::build_config(&c));
        for codec in [Codec::Vp8, Codec::Vp9] {
            let info = TrackInfo { width: 320, height: 240, ..Default::default() };
            let track = Track { id: 0, codec, config: config.clone(), info };
            let init = init_segment(&track).unwrap();
            let mut buf = &init[..];
            let _ftyp = Any::decode(&mut buf).unwrap();
            let Any::Moov(m) = Any::decode(&mut buf).unwrap() else { panic!("no moov") };
            match &m.trak[0].mdia.minf.stbl.stsd.codecs[0] {
                Mp4Codec::Vp09(v) if codec == Codec::Vp9 => {
                    assert_eq!((v.visual.width, v.vpcc.bit_depth, v.vpcc.level), (320, 8, 20))
                }
                Mp4Codec::Vp08(v) if codec == Codec::Vp8 => assert_eq!(v.visual.height, 240),
                other => panic!("{codec:?}: {other:?}"),
            }
        }
        let bad = Track { id: 0, codec: Codec::Vp9, config: Bytes::new(), info: TrackInfo::default() };
        assert!(matches!(init_segment(&bad), Err(CmafError::BadConfig(..))));
    }

    #[test]
    fn fragment_offsets_point_at_the_payloads() {
        let frames = [(0i64, true, 5usize), (40_000, false, 3), (80_000, false, 0)];
        let samples: Vec<Sample> = frames
            .iter()
            .map(|&(dts, key, len)| {
                let f = Frame { track: 0, dts, cts: 80_000, keyframe: key, payload: Bytes::from(vec![0xab; len]) };
                Sample::from_frame(f, dts + 40_000, 90_000)
            })
            .collect();
        let header = fragment_header(7, &samples).unwrap();
        let mut buf = &header[..];
        let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else { panic!("no moof") };
        assert_eq!(moof.mfhd.sequence_number, 7);
        let trun = &moof.traf[0].trun[0];
        assert_eq!(trun.data_offset, Some(header.len() as i32));
        let e = trun.samples.get(1).unwrap();
        assert_eq!((e.duration, e.size, e.cts), (Some(3600), Some(3), Some(7200)));
        assert_eq!(&buf[4..8], b"mdat");
        assert_eq!(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]), 8 + 8);
    }
}
