//! Thumbnails: one keyframe decoded on its own (a keyframe needs no other
//! frame) and encoded as a JPEG, scaled to a width if asked. Blocking and
//! CPU-bound: callers run it off their async threads, once per keyframe.

use bytes::Bytes;
use ffmpeg_next as ff;
use tidecast_media::{Codec, Frame, Track};

/// JPEG quality as FFmpeg's `qscale` (2 best .. 31 worst): about what
/// `-q:v 4` gives, a sharp thumbnail of a few tens of KiB.
const QSCALE: i32 = 4;
/// FFmpeg's `FF_QP2LAMBDA`: `global_quality` is a qscale times this.
const QP2LAMBDA: i32 = 118;

/// The JPEG of `keyframe` (a frame of `track`), `width` pixels wide when
/// given (the height follows the aspect ratio; both even).
pub fn keyframe_jpeg(track: &Track, keyframe: &Frame, width: Option<u32>) -> Result<Bytes, String> {
    crate::init();
    let picture = decode(track, keyframe)?;
    let (w, h) = (picture.width(), picture.height());
    if w == 0 || h == 0 {
        return Err("the keyframe decoded to an empty picture".into());
    }
    let (ow, oh) = match width {
        Some(ow) => {
            let oh = (u64::from(h) * u64::from(ow) / u64::from(w)).max(2) as u32;
            (ow & !1, oh & !1)
        }
        None => (w & !1, h & !1),
    };
    let (ow, oh) = (ow.max(2), oh.max(2));
    let format = ff::format::Pixel::YUVJ420P;
    let mut scaler = ff::software::scaling::Context::get(
        picture.format(),
        w,
        h,
        format,
        ow,
        oh,
        ff::software::scaling::Flags::BICUBIC,
    )
    .map_err(|e| format!("cannot scale {w}x{h} to {ow}x{oh}: {e}"))?;
    let mut scaled = ff::frame::Video::new(format, ow, oh);
    scaler.run(&picture, &mut scaled).map_err(|e| format!("scaling failed: {e}"))?;
    scaled.set_pts(Some(0));
    encode(&scaled, ow, oh, format)
}

fn decode(track: &Track, keyframe: &Frame) -> Result<ff::frame::Video, String> {
    let id = match track.codec {
        Codec::H264 => ff::codec::Id::H264,
        Codec::H265 => ff::codec::Id::HEVC,
        Codec::Av1 => ff::codec::Id::AV1,
        Codec::Vp8 => ff::codec::Id::VP8,
        Codec::Vp9 => ff::codec::Id::VP9,
        other => return Err(format!("cannot decode {} video", other.name())),
    };
    let codec =
        ff::decoder::find(id).ok_or_else(|| format!("no {} decoder in this FFmpeg build", track.codec.name()))?;
    let mut ctx = ff::codec::context::Context::new_with_codec(codec);
    if !track.config.is_empty() {
        crate::ladder::set_extradata(&mut ctx, &track.config)?;
    }
    let mut dec = ctx
        .decoder()
        .open_as(codec)
        .and_then(|o| o.video())
        .map_err(|e| format!("cannot open the {} decoder: {e}", track.codec.name()))?;
    let mut packet = ff::Packet::copy(&keyframe.payload);
    packet.set_pts(Some(keyframe.pts()));
    packet.set_dts(Some(keyframe.dts));
    packet.set_flags(ff::codec::packet::Flags::KEY);
    dec.send_packet(&packet).map_err(|e| format!("the keyframe did not decode: {e}"))?;
    // Flushing makes a decoder that holds pictures back (reordering) give
    // this one up now.
    let _ = dec.send_eof();
    let mut picture = ff::frame::Video::empty();
    dec.receive_frame(&mut picture).map_err(|e| format!("the keyframe gave no picture: {e}"))?;
    Ok(picture)
}

fn encode(picture: &ff::frame::Video, w: u32, h: u32, format: ff::format::Pixel) -> Result<Bytes, String> {
    let codec = ff::encoder::find(ff::codec::Id::MJPEG).ok_or("no MJPEG encoder in this FFmpeg build")?;
    let mut enc = ff::codec::context::Context::new_with_codec(codec).encoder().video().map_err(|e| e.to_string())?;
    enc.set_width(w);
    enc.set_height(h);
    enc.set_format(format);
    enc.set_time_base(ff::Rational(1, 25));
    let mut opts = ff::Dictionary::new();
    opts.set("flags", "+qscale");
    opts.set("global_quality", &(QSCALE * QP2LAMBDA).to_string());
    let mut enc = enc.open_as_with(codec, opts).map_err(|e| format!("cannot open the MJPEG encoder: {e}"))?;
    enc.send_frame(picture).map_err(|e| format!("JPEG encoding failed: {e}"))?;
    let _ = enc.send_eof();
    let mut packet = ff::Packet::empty();
    enc.receive_packet(&mut packet).map_err(|e| format!("JPEG encoding gave nothing: {e}"))?;
    Ok(Bytes::copy_from_slice(packet.data().unwrap_or_default()))
}
