//! Thumbnails: one keyframe decoded on its own (a keyframe needs no other
//! frame) and encoded as a JPEG, scaled to a width if asked. Blocking and
//! CPU-bound: callers run it off their async threads, once per keyframe.

use bytes::Bytes;
use ffmpeg_next as ff;
use tidecast_media::{Frame, Track};

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

/// A sprite sheet: each keyframe (in order) decoded alone, scaled to
/// `tile` and laid out left to right, top to bottom, `columns` to a row,
/// encoded as one JPEG. A keyframe that does not decode leaves its tile
/// black. Returns the JPEG and the sheet's size.
pub fn sprite(
    track: &Track,
    keyframes: &[Frame],
    tile: (u32, u32),
    columns: u32,
) -> Result<(Bytes, (u32, u32)), String> {
    crate::init();
    let (tw, th) = (tile.0.max(2) & !1, tile.1.max(2) & !1);
    let columns = columns.max(1);
    let n = keyframes.len() as u32;
    if n == 0 {
        return Err("no keyframe to make a sprite of".into());
    }
    let rows = n.div_ceil(columns);
    let (sw, sh) = (tw * columns.min(n), th * rows);
    let format = ff::format::Pixel::YUVJ420P;
    let mut sheet = ff::frame::Video::new(format, sw, sh);
    // Black: Y 16.. in full range 0, chroma at its middle.
    for plane in 0..3 {
        let fill = if plane == 0 { 0 } else { 128 };
        sheet.data_mut(plane).fill(fill);
    }
    let mut scaler: Option<(ff::software::scaling::Context, (u32, u32, ff::format::Pixel))> = None;
    // One decoder for the sheet, reset between keyframes, rather than one
    // opened and freed per keyframe. (The decoding is the cost: about 3 ms
    // per 720p keyframe either way, bench-thumbs.)
    let mut dec = crate::ladder::open_video_decoder(track)?;
    for (i, key) in keyframes.iter().enumerate() {
        let picture = decode_with(&mut dec, key);
        dec.flush();
        let Ok(picture) = picture else { continue };
        let def = (picture.width(), picture.height(), picture.format());
        if scaler.as_ref().is_none_or(|(_, d)| *d != def) {
            let ctx = ff::software::scaling::Context::get(
                def.2,
                def.0,
                def.1,
                format,
                tw,
                th,
                ff::software::scaling::Flags::BICUBIC,
            )
            .map_err(|e| format!("cannot scale {}x{} to {tw}x{th}: {e}", def.0, def.1))?;
            scaler = Some((ctx, def));
        }
        let Some((ctx, _)) = scaler.as_mut() else { continue };
        let mut small = ff::frame::Video::new(format, tw, th);
        if ctx.run(&picture, &mut small).is_err() {
            continue;
        }
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        for plane in 0..3usize {
            let div = if plane == 0 { 1 } else { 2 };
            let (w, h) = ((tw / div) as usize, (th / div) as usize);
            let (x0, y0) = ((col * tw / div) as usize, (row * th / div) as usize);
            let (src_stride, dst_stride) = (small.stride(plane), sheet.stride(plane));
            for y in 0..h {
                let src = small.data(plane)[y * src_stride..y * src_stride + w].to_vec();
                let at = (y0 + y) * dst_stride + x0;
                sheet.data_mut(plane)[at..at + w].copy_from_slice(&src);
            }
        }
    }
    sheet.set_pts(Some(0));
    Ok((encode(&sheet, sw, sh, format)?, (sw, sh)))
}

fn decode(track: &Track, keyframe: &Frame) -> Result<ff::frame::Video, String> {
    let mut dec = crate::ladder::open_video_decoder(track)?;
    decode_with(&mut dec, keyframe)
}

/// Decodes `keyframe` alone with `dec`, which is left drained (call
/// `flush` before its next keyframe).
fn decode_with(dec: &mut ff::decoder::Video, keyframe: &Frame) -> Result<ff::frame::Video, String> {
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
