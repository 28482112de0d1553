//! DASH thumbnails: an image AdaptationSet per Period
//! (`EssentialProperty http://dashif.org/thumbnail_tile`), as dash.js's
//! `provideThumbnail()` reads it.
//!
//! Each image is one tile (`1x1`) and stands for [`interval`] seconds of
//! the Period: image `n` shows the keyframe at or before `Period@start + n
//! × interval` (the start of the video segment that covers that instant).
//! One tile per image keeps dash.js's tile arithmetic, which counts from
//! the stream's origin rather than the Period's, right for every Period.
//! An image can be made as soon as its instant has been packaged, so the
//! template's `availabilityTimeOffset` is the whole interval.
//!
//! Images are named `thumb-{run}-{period start ms}-{n}.jpg`: the name says
//! which instant it shows, with no state kept per MPD. Only keyframes are
//! decoded, one per segment at most (cached per segment), off the async
//! threads and one at a time for the node.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tidecast_media::{MediaKind, Track, TIMESCALE};

use crate::cmaf::{Rendition, Segmenter};
use crate::hls::HlsStream;
use crate::progressive::sprite::{keyframe_in, segment_head, Tiler};

/// Width of an image, pixels (the height follows the video's aspect).
pub const WIDTH: u32 = 160;
/// Images kept at most, node-wide.
const MAX_CACHED: usize = 4096;

/// How much media one image stands for: the segment target, at least 1 s.
pub fn interval(segment_target: Duration) -> Duration {
    segment_target.max(Duration::from_secs(1))
}

/// An image's size for `track`: [`WIDTH`] wide, both even.
pub fn size(track: &Track) -> (u32, u32) {
    let (w, h) = (track.info.width.max(1), track.info.height.max(1));
    let height = (u64::from(h) * u64::from(WIDTH) / u64::from(w)).clamp(2, 4096) as u32;
    (WIDTH, height & !1)
}

/// The video rendition thumbnails are made from: the source's.
fn video(p: &Segmenter) -> Option<&Rendition> {
    p.renditions.iter().find(|r| r.track.kind() == MediaKind::Video)
}

/// Writes the image AdaptationSet of a Period that starts at `start_us`
/// into `out`, when the stream has video with a known size.
pub fn adaptation_set(
    out: &mut String,
    p: &Segmenter,
    id: u32,
    run: &str,
    start_us: i64,
    every: Duration,
    carry: &str,
) {
    let Some(r) = video(p) else { return };
    let track = r.init_tracks.values().next_back().unwrap_or(&r.track);
    if track.info.width == 0 || track.info.height == 0 {
        return;
    }
    let (w, h) = size(track);
    let ms = every.as_millis().max(1);
    let q = if carry.is_empty() { String::new() } else { format!("?{}", super::mpd::escape(carry)) };
    // About 8 KiB per image.
    let bandwidth = (8 * 8192 * 1000 / ms).max(1000);
    let _ = write!(
        out,
        "    <AdaptationSet id=\"{id}\" contentType=\"image\" mimeType=\"image/jpeg\">\n      \
         <SegmentTemplate media=\"thumb-{run}-{}-$Number$.jpg{q}\" timescale=\"1000\" duration=\"{ms}\" startNumber=\"0\" availabilityTimeOffset=\"{:.3}\"/>\n      \
         <Representation id=\"thumbnails\" bandwidth=\"{bandwidth}\" width=\"{w}\" height=\"{h}\">\n        \
         <EssentialProperty schemeIdUri=\"http://dashif.org/thumbnail_tile\" value=\"1x1\"/>\n      \
         </Representation>\n    </AdaptationSet>\n",
        start_us.max(0) / 1000,
        every.as_secs_f64(),
    );
}

/// What an image name says: the stream run, the Period's start (ms) and
/// the image number.
pub fn parse(file: &str) -> Option<(&str, i64, u64)> {
    let rest = file.strip_prefix("thumb-")?.strip_suffix(".jpg")?;
    let mut it = rest.splitn(3, '-');
    let (run, start, n) = (it.next()?, it.next()?, it.next()?);
    if run.is_empty() || !run.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((run, start.parse().ok().filter(|s| *s >= 0)?, n.parse().ok()?))
}

/// Why there is no image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoImage {
    /// Not in the window (or not a name this run handed out).
    NotFound,
    /// Decoding or encoding failed.
    Failed(String),
}

type Key = (String, String, u64);

/// The node's DASH thumbnails.
pub struct DashThumbs {
    tiler: Tiler,
    /// By (stream, run, segment): the image of that segment's keyframe.
    cache: Mutex<HashMap<Key, (Weak<HlsStream>, Bytes)>>,
    busy: tokio::sync::Mutex<()>,
}

impl DashThumbs {
    /// Images made by `tiler` (a sheet of one tile).
    pub fn new(tiler: Tiler) -> Arc<DashThumbs> {
        Arc::new(DashThumbs { tiler, cache: Mutex::default(), busy: tokio::sync::Mutex::new(()) })
    }

    fn cached(&self, key: &Key, hls: &Arc<HlsStream>) -> Option<Bytes> {
        let cache = self.cache.lock();
        let (owner, jpeg) = cache.get(key)?;
        owner.upgrade().is_some_and(|o| Arc::ptr_eq(&o, hls)).then(|| jpeg.clone())
    }

    /// Image `n` of the Period starting at `start_ms`, every `every`.
    pub async fn image(
        &self,
        hls: &Arc<HlsStream>,
        run: &str,
        start_ms: i64,
        n: u64,
        every: Duration,
    ) -> Result<Bytes, NoImage> {
        if run != hls.run() {
            return Err(NoImage::NotFound);
        }
        let offset = i64::try_from(n).ok().and_then(|n| n.checked_mul(every.as_micros() as i64));
        let at_us = offset.and_then(|o| o.checked_add(start_ms.checked_mul(1000)?)).ok_or(NoImage::NotFound)?;
        // The video segment covering that instant, and its keyframe.
        let (msn, track, key) = hls
            .read(|p| {
                let r = video(p)?;
                // Not past what has been packaged.
                let newest = r.segments.back()?;
                let edge = match newest.complete {
                    true => newest.start_us + (newest.duration * f64::from(TIMESCALE)) as i64,
                    false => newest.parts.last().map_or(newest.start_us, |p| p.start_us),
                };
                if at_us > edge {
                    return None;
                }
                let s = r.segments.iter().rev().find(|s| s.start_us <= at_us && !s.gap)?;
                let track = r.init_tracks.get(&s.init_version)?.clone();
                Some((s.msn, track, segment_head(s)?))
            })
            .ok_or(NoImage::NotFound)?;
        let id = (hls.name().to_owned(), run.to_owned(), msn);
        if let Some(j) = self.cached(&id, hls) {
            return Ok(j);
        }
        let _turn = self.busy.lock().await;
        if let Some(j) = self.cached(&id, hls) {
            return Ok(j);
        }
        let tiler = self.tiler.clone();
        let tile = size(&track);
        let (jpeg, _) = tokio::task::spawn_blocking(move || {
            let key = keyframe_in(&key, &track).ok_or("the segment holds no frame")?;
            (tiler.compose)(&[(tiler.tile)(&track, &key, tile)?], tile, 1)
        })
        .await
        .map_err(|e| NoImage::Failed(e.to_string()))?
        .map_err(NoImage::Failed)?;
        let mut cache = self.cache.lock();
        cache.retain(|_, (owner, _)| owner.strong_count() > 0);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(id, (Arc::downgrade(hls), jpeg.clone()));
        Ok(jpeg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_round_trip() {
        assert_eq!(parse("thumb-1a2b-0-17.jpg"), Some(("1a2b", 0, 17)));
        assert_eq!(parse("thumb-1a2b-36000-0.jpg"), Some(("1a2b", 36_000, 0)));
        for bad in ["thumb-1a2b-0.jpg", "thumb--0-1.jpg", "thumb-x/y-0-1.jpg", "thumb-a--1-1.jpg", "thumb-a-0-1.png"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn images_keep_the_videos_aspect() {
        let mut t = Track {
            id: 0,
            codec: tidecast_media::Codec::H264,
            config: Bytes::new(),
            info: tidecast_media::TrackInfo::default(),
        };
        (t.info.width, t.info.height) = (1280, 720);
        assert_eq!(size(&t), (160, 90));
        (t.info.width, t.info.height) = (320, 240);
        assert_eq!(size(&t), (160, 120));
        assert_eq!(interval(Duration::from_millis(200)), Duration::from_secs(1));
    }
}
