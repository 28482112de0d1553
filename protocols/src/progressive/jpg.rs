//! `GET /{stream}.jpg`: the stream's newest keyframe as a JPEG (MistServer's
//! URL), `?width=` to scale it (the height follows the aspect ratio).
//!
//! Only keyframes are decoded, one per keyframe and width at most: the
//! JPEG is kept until the stream's next keyframe, so any number of
//! requests in between cost a lookup. Decoding and encoding run off the
//! async threads, one at a time for the whole node; the work itself (an
//! FFmpeg decoder and MJPEG encoder) is handed in by the binary, which
//! links FFmpeg.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use parking_lot::Mutex;
use tidecast_media::{Event, Frame, MediaKind, Stream, Track};

use super::problem;
use crate::flv::http::FlvHttp;
use crate::http::{denied, param, token};

/// Makes a JPEG of one keyframe of `track`, `width` pixels wide if given
/// (blocking and CPU-bound).
pub type MakeJpeg = Arc<dyn Fn(&Track, &Frame, Option<u32>) -> Result<Bytes, String> + Send + Sync>;

/// Widths a request may ask for.
const WIDTHS: std::ops::RangeInclusive<u32> = 16..=3840;
/// Thumbnails kept at most (streams x widths).
const MAX_CACHED: usize = 1024;
/// Events looked at past the newest keyframe for the video's first frame.
const LOOK_AHEAD: usize = 64;

struct Cached {
    /// The stream it was made from (a new stream of the same name is
    /// another stream).
    stream: std::sync::Weak<Stream>,
    /// The keyframe's decode time.
    dts: i64,
    jpeg: Bytes,
}

/// The node's thumbnails: the maker and what it made.
pub struct Thumbnails {
    make: MakeJpeg,
    cache: Mutex<HashMap<(String, Option<u32>), Cached>>,
    /// One decode at a time, node-wide.
    busy: tokio::sync::Mutex<()>,
    /// JPEGs made (not served from the cache).
    pub made: std::sync::atomic::AtomicU64,
}

impl Thumbnails {
    /// Thumbnails made by `make`.
    pub fn new(make: MakeJpeg) -> Arc<Thumbnails> {
        Arc::new(Thumbnails {
            make,
            cache: Mutex::default(),
            busy: tokio::sync::Mutex::new(()),
            made: Default::default(),
        })
    }

    fn cached(&self, key: &(String, Option<u32>), stream: &Arc<Stream>, dts: i64) -> Option<Bytes> {
        let cache = self.cache.lock();
        let c = cache.get(key)?;
        (c.dts == dts && c.stream.upgrade().is_some_and(|s| Arc::ptr_eq(&s, stream))).then(|| c.jpeg.clone())
    }

    /// The JPEG of `stream`'s newest keyframe at `width`.
    pub async fn newest(&self, stream: &Arc<Stream>, width: Option<u32>) -> Result<Bytes, Missing> {
        let (track, key) = newest_keyframe(stream)?;
        let id = (stream.name().to_owned(), width);
        if let Some(j) = self.cached(&id, stream, key.dts) {
            return Ok(j);
        }
        let _turn = self.busy.lock().await;
        // Another request may have made it while this one waited.
        if let Some(j) = self.cached(&id, stream, key.dts) {
            return Ok(j);
        }
        let make = self.make.clone();
        let dts = key.dts;
        let jpeg = tokio::task::spawn_blocking(move || make(&track, &key, width))
            .await
            .map_err(|e| Missing::Failed(e.to_string()))?
            .map_err(Missing::Failed)?;
        self.made.fetch_add(1, Ordering::Relaxed);
        let mut cache = self.cache.lock();
        cache.retain(|_, c| c.stream.strong_count() > 0);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(id, Cached { stream: Arc::downgrade(stream), dts, jpeg: jpeg.clone() });
        Ok(jpeg)
    }
}

/// Why there is no thumbnail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// The stream has no video track.
    NoVideo,
    /// The stream has not had a keyframe yet.
    NoKeyframe,
    /// Decoding or encoding failed.
    Failed(String),
}

/// The source's video track and its newest keyframe (where a new reader
/// of the stream starts).
fn newest_keyframe(stream: &Arc<Stream>) -> Result<(Track, Frame), Missing> {
    let tracks = stream.tracks();
    let video = crate::push::select::first_of(MediaKind::Video, &tracks).cloned().ok_or(Missing::NoVideo)?;
    let mut sub = stream.subscribe();
    for _ in 0..LOOK_AHEAD {
        match sub.try_recv() {
            Some(Event::Frame(f)) if f.track == video.id && f.keyframe => return Ok((video, f)),
            Some(_) => {}
            None => break,
        }
    }
    Err(Missing::NoKeyframe)
}

/// Answers `/{stream}.jpg`.
pub(crate) async fn serve(
    thumbs: &Thumbnails,
    out: &FlvHttp,
    peer: SocketAddr,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    if let Err(e) = out.gate.check_play(name, token(query, headers), peer.ip()) {
        return denied(e);
    }
    let width = match param(query, "width") {
        None => None,
        Some(w) => match w.parse::<u32>().ok().filter(|w| WIDTHS.contains(w)) {
            Some(w) => Some(w),
            None => {
                let detail = format!("width must be {} to {} pixels, not {w:?}", WIDTHS.start(), WIDTHS.end());
                return problem(StatusCode::BAD_REQUEST, &detail);
            }
        },
    };
    let Some(stream) = out.registry.get(name).filter(|s| !s.is_ended()) else {
        return problem(StatusCode::NOT_FOUND, &format!("stream {name:?} is not live"));
    };
    match thumbs.newest(&stream, width).await {
        Ok(jpeg) => {
            out.traffic.jpg.fetch_add(jpeg.len() as u64, Ordering::Relaxed);
            (StatusCode::OK, [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-cache")], jpeg)
                .into_response()
        }
        Err(Missing::NoVideo) => problem(StatusCode::NOT_FOUND, &format!("stream {name:?} has no video")),
        Err(Missing::NoKeyframe) => {
            let mut r =
                problem(StatusCode::SERVICE_UNAVAILABLE, "the stream has had no keyframe yet; retry in a moment");
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Err(Missing::Failed(e)) => problem(StatusCode::INTERNAL_SERVER_ERROR, &format!("no thumbnail: {e}")),
    }
}
