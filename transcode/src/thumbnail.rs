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

/// One tile of a sprite sheet: `keyframe` (a frame of `track`) decoded
/// alone and scaled to `tile`, as planar YUV 4:2:0 (full range), `w x h`
/// luma bytes then each chroma plane; what [`compose`] lays out.
pub fn tile(track: &Track, keyframe: &Frame, tile: (u32, u32)) -> Result<Bytes, String> {
    crate::init();
    let (tw, th) = (tile.0.max(2) & !1, tile.1.max(2) & !1);
    let picture = decode(track, keyframe)?;
    let format = ff::format::Pixel::YUVJ420P;
    let mut scaler = ff::software::scaling::Context::get(
        picture.format(),
        picture.width(),
        picture.height(),
        format,
        tw,
        th,
        ff::software::scaling::Flags::BICUBIC,
    )
    .map_err(|e| format!("cannot scale {}x{} to {tw}x{th}: {e}", picture.width(), picture.height()))?;
    let mut small = ff::frame::Video::new(format, tw, th);
    scaler.run(&picture, &mut small).map_err(|e| format!("scaling failed: {e}"))?;
    let mut out = Vec::with_capacity((tw * th * 3 / 2) as usize);
    for plane in 0..3usize {
        let div = if plane == 0 { 1 } else { 2 };
        let (w, h) = ((tw / div) as usize, (th / div) as usize);
        let stride = small.stride(plane);
        for y in 0..h {
            out.extend_from_slice(&small.data(plane)[y * stride..y * stride + w]);
        }
    }
    Ok(Bytes::from(out))
}

/// A sprite sheet of `tiles` (from [`tile`], each `tile` in size; an empty
/// or misshapen one stays black), laid out left to right, top to bottom,
/// `columns` to a row, encoded as one JPEG. Returns the JPEG and the
/// sheet's size.
pub fn compose(tiles: &[Bytes], tile: (u32, u32), columns: u32) -> Result<(Bytes, (u32, u32)), String> {
    crate::init();
    let (tw, th) = (tile.0.max(2) & !1, tile.1.max(2) & !1);
    let columns = columns.max(1);
    let n = tiles.len() as u32;
    if n == 0 {
        return Err("no tile to make a sprite of".into());
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
    let size = (tw * th * 3 / 2) as usize;
    for (i, t) in tiles.iter().enumerate() {
        if t.len() != size {
            continue;
        }
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        let mut at_src = 0usize;
        for plane in 0..3usize {
            let div = if plane == 0 { 1 } else { 2 };
            let (w, h) = ((tw / div) as usize, (th / div) as usize);
            let (x0, y0) = ((col * tw / div) as usize, (row * th / div) as usize);
            let dst_stride = sheet.stride(plane);
            for y in 0..h {
                let at = (y0 + y) * dst_stride + x0;
                sheet.data_mut(plane)[at..at + w].copy_from_slice(&t[at_src..at_src + w]);
                at_src += w;
            }
        }
    }
    sheet.set_pts(Some(0));
    Ok((encode(&sheet, sw, sh, format)?, (sw, sh)))
}

fn decode(track: &Track, keyframe: &Frame) -> Result<ff::frame::Video, String> {
    let mut dec = crate::ladder::open_video_decoder(track)?;
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
