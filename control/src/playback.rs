//! Playback over HTTP: `GET /hls/{stream}/index.m3u8` and the files it names.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tidecast_protocols::hls::{HlsError, HlsHub, PlaylistRequest, Resource};
use tower_http::cors::{Any, CorsLayer};

const M3U8: &str = "application/vnd.apple.mpegurl";

/// The playback routes, served from memory.
pub fn router(hls: Arc<HlsHub>) -> Router {
    let cors = CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers(Any).expose_headers(Any);
    Router::new().route("/hls/{stream}/{file}", get(hls_file)).layer(cors).with_state(hls)
}

fn error(e: HlsError) -> Response {
    let status = match e {
        HlsError::NotFound => StatusCode::NOT_FOUND,
        HlsError::BadRequest(_) => StatusCode::BAD_REQUEST,
        HlsError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, [(header::CACHE_CONTROL, "no-cache")], format!("{e}\n")).into_response()
}

fn body(content_type: &'static str, cache: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

fn chunks(parts: Vec<Bytes>) -> Body {
    Body::from_stream(futures_util::stream::iter(parts.into_iter().map(Ok::<_, Infallible>)))
}

async fn hls_file(
    State(hub): State<Arc<HlsHub>>,
    Path((stream, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(resource) = Resource::parse(&file) else { return error(HlsError::NotFound) };
    let Some(hls) = hub.get(&stream) else { return error(HlsError::NotFound) };
    let result = match resource {
        Resource::Multivariant => hls.multivariant().await.map(|t| body(M3U8, "no-cache", Body::from(t))),
        Resource::Playlist(r) => match PlaylistRequest::parse(query.as_deref().unwrap_or_default()) {
            Ok(req) => hls.media_playlist(&r, req).await.map(|t| body(M3U8, "no-cache", Body::from(t))),
            Err(e) => Err(e),
        },
        Resource::Init(r, run, v) => hls.init(&r, &run, v).map(|b| body("video/mp4", "max-age=3600", Body::from(b))),
        Resource::Segment(r, run, msn) => {
            hls.segment(&r, &run, msn).map(|c| body("video/iso.segment", "max-age=3600", chunks(c)))
        }
        Resource::Part(r, run, msn, part) => hls
            .part(&r, &run, msn, part)
            .await
            .map(|s| body("video/iso.segment", "max-age=3600", Body::from_stream(s.map(Ok::<_, Infallible>)))),
    };
    result.unwrap_or_else(error)
}
