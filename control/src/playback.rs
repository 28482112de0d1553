//! Playback over HTTP: `GET /hls/{stream}/index.m3u8` and the files it
//! names, and `GET /ts/{stream}.ts`, the live MPEG-TS.

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
use tidecast_media::Event;
use tidecast_protocols::hls::{HlsError, HlsHub, PlaylistRequest, Resource};
use tidecast_protocols::mpegts::output::TsHub;
use tower_http::cors::{Any, CorsLayer};

const M3U8: &str = "application/vnd.apple.mpegurl";

/// What the playback routes serve from.
#[derive(Clone)]
pub struct Playback {
    /// LL-HLS outputs.
    pub hls: Arc<HlsHub>,
    /// MPEG-TS outputs.
    pub ts: Arc<TsHub>,
}

/// The playback routes, served from memory.
pub fn router(outputs: Playback) -> Router {
    let cors = CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers(Any).expose_headers(Any);
    Router::new()
        .route("/hls/{stream}/{file}", get(hls_file))
        .route("/ts/{file}", get(ts_stream))
        .layer(cors)
        .with_state(outputs)
}

/// The live MPEG-TS of a stream, from its newest keyframe, as long as it lasts.
async fn ts_stream(State(out): State<Playback>, Path(file): Path<String>) -> Response {
    let Some(name) = file.strip_suffix(".ts") else { return error(HlsError::NotFound) };
    let Some(sub) = out.ts.subscribe(name) else { return error(HlsError::NotFound) };
    let chunks = futures_util::stream::unfold(sub, |mut sub| async move {
        loop {
            match sub.recv().await? {
                Event::Frame(f) => return Some((Ok::<_, Infallible>(f.payload), sub)),
                Event::Tracks(_) | Event::Discontinuity => continue,
            }
        }
    });
    body("video/mp2t", "no-cache", Body::from_stream(chunks))
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
    State(out): State<Playback>,
    Path((stream, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(resource) = Resource::parse(&file) else { return error(HlsError::NotFound) };
    let Some(hls) = out.hls.get(&stream) else { return error(HlsError::NotFound) };
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
