//! A sprite sheet over a stream's window and its WebVTT index:
//! `/{stream}.thumbvtt` (MistServer's URL; cues `URL#xywh=x,y,w,h` as JW
//! Player, Video.js and Plyr read them) and the sheet it points to,
//! `/thumbs/{stream}.jpg`.
//!
//! One tile per segment of the window (segments begin at keyframes), at
//! most [`MAX_TILES`] of them spread evenly over it, 160x90 in rows of ten
//! as MistServer's thumbnail process makes them. Only those keyframes are
//! decoded, each alone, and each once: a stream's tiles are kept (as raw
//! pictures, about 21 KiB each) while its sheet shows them, so a sheet made
//! again decodes only the segments that joined the window. The sheet is
//! made again when the window has moved and the last one is older than
//! [`REGENERATE`], one sheet at a time for the node, off the async threads. Cue times are the stream's media time
//! in seconds, the clock of its HLS and DASH timelines.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tidecast_media::{rescale, Frame, MediaKind, Track, TIMESCALE};

use crate::hls::HlsStream;

/// Makes one tile: a keyframe of `track` decoded alone and scaled to a
/// size, as raw planar YUV 4:2:0 (blocking, CPU-bound).
pub type MakeTile = Arc<dyn Fn(&Track, &Frame, (u32, u32)) -> Result<Bytes, String> + Send + Sync>;
/// Lays tiles of a size out, so many to a row, and encodes the sheet as a
/// JPEG (an empty tile stays black); returns it and its size (blocking).
pub type Compose = Arc<dyn Fn(&[Bytes], (u32, u32), u32) -> Result<(Bytes, (u32, u32)), String> + Send + Sync>;

/// The two steps of a sheet, handed in by the binary (which links FFmpeg).
#[derive(Clone)]
pub struct Tiler {
    /// A keyframe to a tile.
    pub tile: MakeTile,
    /// Tiles to a JPEG.
    pub compose: Compose,
}

/// Tile size, pixels.
pub const TILE: (u32, u32) = (160, 90);
/// Tiles per row.
pub const COLUMNS: u32 = 10;
/// Most tiles in a sheet.
pub const MAX_TILES: usize = 100;
/// How old a sheet may be before a moved window makes a new one.
pub const REGENERATE: Duration = Duration::from_secs(5);

/// One sheet and what its tiles show.
#[derive(Debug, Clone)]
pub struct Sheet {
    /// The JPEG.
    pub jpeg: Bytes,
    /// Its size, pixels.
    pub size: (u32, u32),
    /// Per tile: media time it covers (seconds, from and to) and where it
    /// is in the sheet (x, y).
    pub cues: Vec<(f64, f64, u32, u32)>,
    made: Instant,
    /// When it was made, Unix milliseconds.
    pub made_unix_ms: i64,
    /// The window's first and last segment numbers when it was made.
    window: (u64, u64),
}

impl Sheet {
    /// The WebVTT index, tiles at `url`.
    pub fn vtt(&self, url: &str) -> String {
        let mut t = String::from("WEBVTT\n");
        for &(from, to, x, y) in &self.cues {
            t.push_str(&format!("\n{} --> {}\n{url}#xywh={x},{y},{},{}\n", stamp(from), stamp(to), TILE.0, TILE.1));
        }
        t
    }
}

/// `HH:MM:SS.mmm`.
fn stamp(secs: f64) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// A sheet and the window (of which stream) it was made of.
type Made = (Weak<HlsStream>, Arc<Sheet>);
/// A stream's tiles, by segment number.
type Tiles = (Weak<HlsStream>, HashMap<u64, Bytes>);

/// The node's sprite sheets.
pub struct Sprites {
    tiler: Tiler,
    /// By stream name: the window it was made of, and the sheet.
    sheets: Mutex<HashMap<String, Made>>,
    /// By stream name: the tiles of its newest sheet.
    tiles: Mutex<HashMap<String, Tiles>>,
    /// Tiles decoded since start (a keyframe each).
    pub tiles_made: std::sync::atomic::AtomicU64,
    busy: tokio::sync::Mutex<()>,
    /// Sheets made since start.
    pub made: std::sync::atomic::AtomicU64,
}

impl Sprites {
    /// Sheets made by `tiler`.
    pub fn new(tiler: Tiler) -> Arc<Sprites> {
        Arc::new(Sprites {
            tiler,
            sheets: Mutex::default(),
            tiles: Mutex::default(),
            tiles_made: Default::default(),
            busy: tokio::sync::Mutex::new(()),
            made: Default::default(),
        })
    }

    /// The newest sheet made of `stream`, if it is still the live one's.
    pub fn latest(&self, stream: &str) -> Option<Arc<Sheet>> {
        let sheets = self.sheets.lock();
        let (owner, sheet) = sheets.get(stream)?;
        (owner.strong_count() > 0).then(|| sheet.clone())
    }

    fn cached(&self, hls: &Arc<HlsStream>, window: (u64, u64)) -> Option<Arc<Sheet>> {
        let sheets = self.sheets.lock();
        let (owner, sheet) = sheets.get(hls.name())?;
        let same = owner.upgrade().is_some_and(|o| Arc::ptr_eq(&o, hls));
        (same && (sheet.window == window || sheet.made.elapsed() < REGENERATE)).then(|| sheet.clone())
    }

    /// The sheet of `hls`'s window, made again if the window moved and the
    /// last one is older than [`REGENERATE`].
    pub async fn sheet(&self, hls: &Arc<HlsStream>) -> Result<Arc<Sheet>, String> {
        // The window's bounds are enough to find a sheet still good; its
        // keyframes are read only to make a new one.
        if let Some(s) = window_bounds(hls).and_then(|w| self.cached(hls, w)) {
            return Ok(s);
        }
        let _turn = self.busy.lock().await;
        let (track, keys, cues, window) = window_keyframes(hls)?;
        if let Some(s) = self.cached(hls, window) {
            return Ok(s);
        }
        let known: HashMap<u64, Bytes> = {
            let tiles = self.tiles.lock();
            let mine = tiles.get(hls.name()).filter(|(owner, _)| owner.upgrade().is_some_and(|o| Arc::ptr_eq(&o, hls)));
            mine.map(|(_, t)| t.clone()).unwrap_or_default()
        };
        let tiler = self.tiler.clone();
        let (jpeg, size, tiles, decoded) = tokio::task::spawn_blocking(move || {
            // Tiles already made are reused; a segment that cannot be read
            // or decoded leaves its tile black.
            let mut tiles = HashMap::with_capacity(keys.len());
            let mut decoded = 0u64;
            let laid: Vec<Bytes> = keys
                .iter()
                .map(|(msn, head)| {
                    let tile = known.get(msn).cloned().unwrap_or_else(|| {
                        decoded += 1;
                        keyframe_in(head, &track).and_then(|k| (tiler.tile)(&track, &k, TILE).ok()).unwrap_or_default()
                    });
                    tiles.insert(*msn, tile.clone());
                    tile
                })
                .collect();
            let (jpeg, size) = (tiler.compose)(&laid, TILE, COLUMNS)?;
            Ok::<_, String>((jpeg, size, tiles, decoded))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tiles_made.fetch_add(decoded, std::sync::atomic::Ordering::Relaxed);
        {
            let mut all = self.tiles.lock();
            all.retain(|_, (owner, _)| owner.strong_count() > 0);
            all.insert(hls.name().to_owned(), (Arc::downgrade(hls), tiles));
        }
        let sheet =
            Arc::new(Sheet { jpeg, size, cues, made: Instant::now(), made_unix_ms: crate::hls::unix_ms(), window });
        let mut sheets = self.sheets.lock();
        sheets.retain(|_, (owner, _)| owner.strong_count() > 0);
        sheets.insert(hls.name().to_owned(), (Arc::downgrade(hls), sheet.clone()));
        Ok(sheet)
    }
}

/// The first and last complete video segment of the window.
fn window_bounds(hls: &HlsStream) -> Option<(u64, u64)> {
    hls.read(|p| {
        let r = p.renditions.iter().find(|r| r.track.kind() == MediaKind::Video)?;
        let mut complete = r.segments.iter().filter(|s| s.complete && !s.gap && s.init_version == r.init_version);
        let first = complete.next()?.msn;
        Some((first, complete.last().map_or(first, |s| s.msn)))
    })
}

type WindowKeyframes = (Track, Vec<(u64, Bytes)>, Vec<(f64, f64, u32, u32)>, (u64, u64));

/// The segments (whose first frame is the keyframe) that start each of the
/// window's complete video segments (evenly chosen when there are more
/// than [`MAX_TILES`]), the tiles' cues and the window's bounds. Only views
/// are taken under the stream's lock: the old segments of a window on disk
/// are read back from their files later, off the async threads.
fn window_keyframes(hls: &HlsStream) -> Result<WindowKeyframes, String> {
    hls.read(|p| {
        let r = p.renditions.iter().find(|r| r.track.kind() == MediaKind::Video).ok_or("the stream has no video")?;
        let segments: Vec<&crate::cmaf::Segment> = r
            .segments
            .iter()
            .filter(|s| s.complete && !s.gap && s.whole.is_some() && s.init_version == r.init_version)
            .collect();
        let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
            return Err("the window holds no complete video segment yet".to_owned());
        };
        let window = (first.msn, last.msn);
        let track = r.init_tracks.get(&r.init_version).cloned().ok_or("no track for the window")?;
        // Evenly over the window: tile i shows segment i * n / tiles.
        let n = segments.len();
        let tiles = n.min(MAX_TILES);
        let chosen: Vec<usize> = (0..tiles).map(|i| i * n / tiles).collect();
        let mut keys = Vec::with_capacity(tiles);
        let mut cues = Vec::with_capacity(tiles);
        for (t, &i) in chosen.iter().enumerate() {
            let s = segments[i];
            let Some(head) = segment_head(s) else { continue };
            keys.push((s.msn, head));
            // The tile stands for its segment up to the next tile's.
            let from = s.start_us as f64 / 1e6;
            let to = match chosen.get(t + 1) {
                Some(&j) => segments[j].start_us as f64 / 1e6,
                None => (last.start_us as f64 / 1e6) + last.duration,
            };
            let k = keys.len() as u32 - 1;
            cues.push((from, to, (k % COLUMNS) * TILE.0, (k / COLUMNS) * TILE.1));
        }
        if keys.is_empty() {
            return Err("no keyframe in the window".to_owned());
        }
        Ok((track, keys, cues, window))
    })
}

/// The packaged bytes a video segment's keyframe is in (segments start at
/// keyframes): the whole segment when complete, else its first chunk.
/// A view only; see [`keyframe_in`].
pub fn segment_head(s: &crate::cmaf::Segment) -> Option<Bytes> {
    s.whole.clone().or_else(|| s.parts.first()?.chunks.first().cloned())
}

/// The first frame of `bytes` (from [`segment_head`]), as a frame of
/// `track`; `None` when it holds no sample. Reads the bytes: for a window
/// on disk, call it off the async threads.
pub fn keyframe_in(bytes: &Bytes, track: &Track) -> Option<Frame> {
    let first = super::clip::read_samples(bytes, 0).into_iter().next()?;
    let start = (first.offset & 0xffff_ffff) as usize;
    let end = start.checked_add(first.size as usize)?;
    if end > bytes.len() {
        return None;
    }
    let ts = crate::cmaf::boxes::timescale(track);
    Some(Frame {
        track: track.id,
        dts: rescale(first.dts as i64, ts, TIMESCALE),
        cts: rescale(i64::from(first.cts), ts, TIMESCALE) as i32,
        keyframe: true,
        payload: bytes.slice(start..end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_are_webvtt() {
        let sheet = Sheet {
            jpeg: Bytes::new(),
            size: (320, 90),
            cues: vec![(0.0, 2.0, 0, 0), (2.0, 3725.5, 160, 0)],
            made: Instant::now(),
            made_unix_ms: 0,
            window: (0, 1),
        };
        let vtt = sheet.vtt("/thumbs/cam.jpg");
        assert_eq!(
            vtt,
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\n/thumbs/cam.jpg#xywh=0,0,160,90\n\n00:00:02.000 --> 01:02:05.500\n/thumbs/cam.jpg#xywh=160,0,160,90\n"
        );
    }
}
