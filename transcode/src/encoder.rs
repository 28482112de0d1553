//! Opening one rung's H.264 encoder with low-latency settings whose
//! keyframes come only where the caller forces them (the source's).

use bytes::Bytes;
use ffmpeg_next as ff;
use tidecast_codecs::access_unit;
use tidecast_media::Codec;

use crate::hwframes::HwFrames;
use crate::profile::{PlannedRung, Profile};

/// An opened encoder and what it needs to be fed.
pub struct OpenedEncoder {
    /// The FFmpeg encoder.
    pub encoder: ff::encoder::video::Encoder,
    /// The pixel format it takes (for VAAPI, the format uploaded to its
    /// surfaces).
    pub format: ff::format::Pixel,
    /// The device surfaces it reads, for an encoder that reads only those.
    pub surfaces: Option<HwFrames>,
    /// Its avcC (AVCDecoderConfigurationRecord).
    pub config: Bytes,
    /// FFmpeg's encoder name.
    pub name: &'static str,
}

impl std::fmt::Debug for OpenedEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedEncoder").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The time base of every timestamp handed to an encoder: microseconds,
/// the media core's.
pub const TIME_BASE: ff::Rational = ff::Rational(1, 1_000_000);

/// Opens `name` for `rung`. `fps` is the source's frame rate when known
/// (rate control needs a nominal one).
pub fn open(name: &'static str, rung: &PlannedRung, profile: &Profile, fps: f64) -> Result<OpenedEncoder, String> {
    let codec = ff::encoder::find_by_name(name).ok_or_else(|| format!("{name} is not in this FFmpeg build"))?;
    let format =
        if name == "h264_qsv" || name == "h264_vaapi" { ff::format::Pixel::NV12 } else { ff::format::Pixel::YUV420P };
    let mut enc = ff::codec::context::Context::new_with_codec(codec).encoder().video().map_err(|e| e.to_string())?;
    let fps = rung.max_fps.map_or(fps, |m| m.min(fps)).clamp(1.0, 240.0);
    let kbps = rung.bitrate_kbps as usize;
    enc.set_width(rung.width);
    enc.set_height(rung.height);
    enc.set_format(format);
    enc.set_time_base(TIME_BASE);
    enc.set_frame_rate(Some(ff::Rational((fps * 1000.0).round() as i32, 1000)));
    enc.set_bit_rate(kbps * 1000);
    enc.set_max_bit_rate(kbps * 1000);
    enc.set_max_b_frames(0);
    // Keyframes come where the source has them (forced per frame), never
    // on the encoder's own schedule.
    enc.set_gop(100_000);
    enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
    let mut opts = ff::Dictionary::new();
    match name {
        "libx264" => {
            opts.set("preset", &profile.preset);
            opts.set("tune", "zerolatency");
            opts.set("profile", &profile.h264_profile);
            opts.set("forced-idr", "1");
            opts.set("x264-params", &format!("scenecut=0:keyint=infinite:vbv-maxrate={kbps}:vbv-bufsize={kbps}"));
        }
        "h264_nvenc" => {
            opts.set("preset", "p1");
            opts.set("tune", "ull");
            opts.set("zerolatency", "1");
            opts.set("forced-idr", "1");
            opts.set("rc", "cbr");
            opts.set("profile", &profile.h264_profile);
        }
        "h264_qsv" => {
            opts.set("preset", "veryfast");
            opts.set("forced_idr", "1");
            opts.set("async_depth", "1");
            opts.set("look_ahead", "0");
            opts.set("profile", &profile.h264_profile);
        }
        _ => {}
    }
    let surfaces = if name == "h264_vaapi" {
        let pool = HwFrames::vaapi(rung.width, rung.height)?;
        pool.attach(&mut enc)?;
        Some(pool)
    } else {
        None
    };
    let encoder = enc.open_as_with(codec, opts).map_err(|e| format!("cannot open {name}: {e}"))?;
    let extradata = extradata(&encoder);
    let config = if extradata.first() == Some(&1) {
        Bytes::from(extradata)
    } else {
        let au = access_unit::split_annexb(Codec::H264, &extradata);
        Bytes::from(
            access_unit::config_from_params(Codec::H264, &au.params)
                .ok_or_else(|| format!("{name} gave no usable SPS/PPS"))?,
        )
    };
    Ok(OpenedEncoder { encoder, format, surfaces, config, name })
}

impl OpenedEncoder {
    /// Hands the encoder a picture in [`OpenedEncoder::format`] at the
    /// rung's size, uploading it first where the encoder reads device
    /// surfaces.
    pub fn send(&mut self, picture: &ff::frame::Video) -> Result<(), String> {
        match &self.surfaces {
            Some(pool) => {
                let surface = pool.upload(picture)?;
                self.encoder.send_frame(&surface).map_err(|e| e.to_string())
            }
            None => self.encoder.send_frame(picture).map_err(|e| e.to_string()),
        }
    }
}

/// The codec configuration an open encoder (video or audio) wrote with
/// GLOBAL_HEADER: avcC or Annex B parameter sets, an AudioSpecificConfig,
/// an OpusHead; empty if none.
pub(crate) fn extradata(ctx: &ff::codec::context::Context) -> Vec<u8> {
    // SAFETY: the context is open and owned by the caller's encoder; FFmpeg
    // sets `extradata`/`extradata_size` together when it opens an encoder
    // with GLOBAL_HEADER, and a null pointer or non-positive size means none.
    unsafe {
        let c = ctx.as_ptr();
        let (data, size) = ((*c).extradata, (*c).extradata_size);
        if data.is_null() || size <= 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(data, size as usize).to_vec()
    }
}
