//! MistServer's progressive outputs on the HTTP port: `GET /{stream}.EXT`,
//! one route for every extension, as MistServer serves them.
//!
//! - `.flv`: the live FLV RTMP players get ([`crate::flv::http`]);
//! - `.ts`: the live MPEG-TS HTTP-TS viewers get ([`crate::mpegts::http`]);
//! - `.mp4` and `.mkv`: the live stream as fragmented MP4 or Matroska,
//!   from its newest keyframe ([`live`]);
//! - `.jpg`: the newest keyframe as a JPEG ([`jpg`]);
//! - `.html`: the stream's player page ([`crate::web`]);
//! - `.thumbvtt`: a sprite sheet over the window and its WebVTT index
//!   ([`sprite`]; the sheet itself at `/thumbs/{stream}.jpg`), also kept
//!   on disk for streams with a `THUMBNAIL_UPDATED` handler ([`thumbfiles`]).
//!
//! With MistServer's time parameters (`start`, `startunix`, `duration`,
//! ...), `.mp4`, `.mkv` and `.ts` answer a clip cut from the stream's
//! window instead of the live stream ([`clip`]).

pub mod clip;
pub mod jpg;
pub mod live;
pub mod sprite;
pub mod thumbfiles;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::flv::http::FlvHttp;
use crate::mpegts::http::TsHttp;

/// What the progressive outputs serve from.
#[derive(Clone)]
pub struct ProgressiveHttp {
    /// `.flv`.
    pub flv: FlvHttp,
    /// `.ts`.
    pub ts: TsHttp,
    /// `.jpg`: `None` on a node built without a decoder.
    pub thumbnails: Option<Arc<jpg::Thumbnails>>,
    /// The packaged windows clips are cut from.
    pub hls: Option<Arc<crate::hls::HlsHub>>,
    /// Sprite sheets: `None` on a node built without a decoder.
    pub sprites: Option<Arc<sprite::Sprites>>,
}

/// The `/{stream}.EXT` route.
pub fn router(state: ProgressiveHttp) -> Router {
    Router::new().route("/{file}", get(progressive)).route("/thumbs/{file}", get(sprite_sheet)).with_state(state)
}

async fn progressive(
    State(out): State<ProgressiveHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some((name, ext)) = file.rsplit_once('.') else { return not_found() };
    if name.is_empty() {
        return not_found();
    }
    let q = query.as_deref();
    if ["flv", "ts", "mp4", "mkv"].contains(&ext) && clip::PARAMS.iter().any(|p| crate::http::param(q, p).is_some()) {
        return serve_clip(&out, peer, name, ext, q, &headers).await;
    }
    let url = format!("/{file}");
    match ext {
        "flv" => crate::flv::http::serve(&out.flv, peer, name, q, &headers, &url).await,
        "ts" => crate::mpegts::http::serve(&out.ts, peer, name, q, &headers, &url).await,
        "mp4" => live::serve(live::Container::Mp4, &out.flv, peer, name, q, &headers, &url).await,
        "mkv" => live::serve(live::Container::Mkv, &out.flv, peer, name, q, &headers, &url).await,
        "thumbvtt" => match sheet_of(&out, peer, name, q, &headers).await {
            Ok(sheet) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/vtt"), (header::CACHE_CONTROL, "no-cache")],
                sheet.vtt(&format!("/thumbs/{name}.jpg")),
            )
                .into_response(),
            Err(r) => r,
        },
        "html" => crate::web::page(name),
        "jpg" | "jpeg" => match &out.thumbnails {
            Some(t) => jpg::serve(t, &out.flv, peer, name, q, &headers).await,
            None => problem(StatusCode::NOT_IMPLEMENTED, "this node makes no thumbnails"),
        },
        _ => not_found(),
    }
}

/// The sprite sheet of `name`'s window.
async fn sheet_of(
    out: &ProgressiveHttp,
    peer: SocketAddr,
    name: &str,
    q: Option<&str>,
    headers: &HeaderMap,
) -> Result<Arc<sprite::Sheet>, Response> {
    if let Err(e) = out.flv.gate.check_play(name, crate::http::token(q, headers), peer.ip()) {
        return Err(crate::http::denied(e));
    }
    let Some(sprites) = &out.sprites else {
        return Err(problem(StatusCode::NOT_IMPLEMENTED, "this node makes no thumbnails"));
    };
    let Some(hls) = out.hls.as_ref().and_then(|h| h.get(name)) else {
        return Err(problem(StatusCode::NOT_FOUND, &format!("stream {name:?} has no window")));
    };
    sprites.sheet(&hls).await.map_err(|e| problem(StatusCode::NOT_FOUND, &e))
}

/// `/thumbs/{stream}.jpg`: the sprite sheet `/{stream}.thumbvtt` points to.
async fn sprite_sheet(
    State(out): State<ProgressiveHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(name) = file.strip_suffix(".jpg") else { return not_found() };
    match sheet_of(&out, peer, name, query.as_deref(), &headers).await {
        Ok(sheet) => {
            out.flv.traffic.jpg.fetch_add(sheet.jpeg.len() as u64, std::sync::atomic::Ordering::Relaxed);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-cache")],
                sheet.jpeg.clone(),
            )
                .into_response()
        }
        Err(r) => r,
    }
}

/// A clip of `name` from its window, in the container `ext` names. It is
/// cut and laid out on a blocking thread: the old segments of a window on
/// disk are read back from their files.
async fn serve_clip(
    out: &ProgressiveHttp,
    peer: SocketAddr,
    name: &str,
    ext: &str,
    q: Option<&str>,
    headers: &HeaderMap,
) -> Response {
    use std::sync::atomic::Ordering;
    if let Err(e) = out.flv.gate.check_play(name, crate::http::token(q, headers), peer.ip()) {
        return crate::http::denied(e);
    }
    if ext == "flv" {
        return problem(StatusCode::BAD_REQUEST, "clips come as .mp4, .mkv or .ts");
    }
    let Some(hls) = out.hls.as_ref().and_then(|h| h.get(name)) else {
        return problem(StatusCode::NOT_FOUND, &format!("stream {name:?} has no window to cut from"));
    };
    let span = match clip::span(q, hls.epoch_ms(), crate::hls::unix_ms()) {
        Ok(s) => s,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e),
    };
    let container = ext.to_owned();
    let built = tokio::task::spawn_blocking(move || build_clip(&hls, span, &container)).await;
    let (content_type, parts) = match built {
        Ok(Ok(b)) => b,
        Ok(Err((status, detail))) => return problem(status, &detail),
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let traffic = &out.flv.traffic;
    let counter = match ext {
        "mp4" => &traffic.mp4,
        "mkv" => &traffic.mkv,
        _ => &traffic.ts,
    };
    let size: usize = parts.iter().map(|p| p.len()).sum();
    counter.fetch_add(size as u64, Ordering::Relaxed);
    let body = axum::body::Body::from_stream(futures_util::stream::iter(
        parts.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        body,
    )
        .into_response()
}

/// The clip `span` of `hls` in container `ext` (`mp4`, `mkv` or `ts`): its
/// content type and bytes, or the status and detail of why not.
fn build_clip(
    hls: &crate::hls::HlsStream,
    span: clip::Span,
    ext: &str,
) -> Result<(&'static str, Vec<bytes::Bytes>), (StatusCode, String)> {
    let cut = clip::Clip::cut(hls, span).map_err(|e| match e {
        clip::ClipError::OutOfWindow(e) => (StatusCode::RANGE_NOT_SATISFIABLE, e),
        clip::ClipError::Unusable(e) => (StatusCode::CONFLICT, e),
    })?;
    let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e);
    if ext == "mp4" {
        return Ok(("video/mp4", cut.mp4().map_err(failed)?.1));
    }
    let events = cut.events().map_err(failed)?;
    if ext == "mkv" {
        return Ok(("video/x-matroska", crate::mkv::MkvWriter::whole_file(events, cut.duration_ms())));
    }
    let mut mux: Option<crate::mpegts::TsMuxer> = None;
    let mut parts = Vec::new();
    for ev in events {
        match ev {
            tidecast_media::Event::Tracks(t) => mux = Some(crate::mpegts::TsMuxer::new(&t)),
            tidecast_media::Event::Frame(f) => parts.extend(mux.as_mut().and_then(|m| m.frame(&f))),
            tidecast_media::Event::Discontinuity => {}
        }
    }
    Ok(("video/mp2t", parts))
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-cache")], "not found\n").into_response()
}

/// An RFC 9457 problem answer.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response {
    let body = serde_json::json!({"title": status.canonical_reason().unwrap_or(""), "status": status.as_u16(), "detail": detail});
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json"), (header::CACHE_CONTROL, "no-cache")],
        body.to_string(),
    )
        .into_response()
}
