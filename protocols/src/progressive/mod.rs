//! MistServer's progressive outputs on the HTTP port: `GET /{stream}.EXT`,
//! one route for every extension, as MistServer serves them.
//!
//! - `.flv`: the live FLV RTMP players get ([`crate::flv::http`]);
//! - `.ts`: the live MPEG-TS HTTP-TS viewers get ([`crate::mpegts::http`]);
//! - `.mp4` and `.mkv`: the live stream as fragmented MP4 or Matroska,
//!   from its newest keyframe ([`live`]);
//! - `.jpg`: the newest keyframe as a JPEG ([`jpg`]).
//!
//! Time ranges (`start`, `startunix`, `duration`, ... : clips) need the
//! DVR window, which is not built yet; a request with them is refused
//! with 400 rather than answered with the live stream.

pub mod jpg;
pub mod live;

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
}

/// The `/{stream}.EXT` route.
pub fn router(state: ProgressiveHttp) -> Router {
    Router::new().route("/{file}", get(progressive)).with_state(state)
}

/// MistServer's clip parameters, which need the DVR window.
const TIME_PARAMS: [&str; 6] = ["start", "stop", "startunix", "stopunix", "duration", "rate"];

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
    if ["flv", "ts", "mp4", "mkv"].contains(&ext) && TIME_PARAMS.iter().any(|p| crate::http::param(q, p).is_some()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "time ranges (clips) need the DVR window, which this node does not keep yet; ask without start/stop/duration for the live stream",
        );
    }
    let url = format!("/{file}");
    match ext {
        "flv" => crate::flv::http::serve(&out.flv, peer, name, q, &headers, &url).await,
        "ts" => crate::mpegts::http::serve(&out.ts, peer, name, q, &headers, &url).await,
        "mp4" => live::serve(live::Container::Mp4, &out.flv, peer, name, q, &headers, &url).await,
        "mkv" => live::serve(live::Container::Mkv, &out.flv, peer, name, q, &headers, &url).await,
        "jpg" | "jpeg" => match &out.thumbnails {
            Some(t) => jpg::serve(t, &out.flv, peer, name, q, &headers).await,
            None => problem(StatusCode::NOT_IMPLEMENTED, "this node makes no thumbnails"),
        },
        _ => not_found(),
    }
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
