//! HTTP-TS: `GET /ts/{stream}.ts` (and MistServer's `/{stream}.ts`, routed
//! by [`crate::progressive`]), the live MPEG-TS of a stream from its
//! newest keyframe, for as long as it lasts. One connection is one viewer
//! session: admitted once, counted, kickable, ended when it closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tidecast_media::Event;

use super::output::TsHub;
use crate::access::{AccessGate, EndReason, PlayRequest};
use crate::http::{body, denied, token, Traffic};

/// What the HTTP-TS route serves from.
#[derive(Clone)]
pub struct TsHttp {
    /// Every stream's TS form.
    pub ts: Arc<TsHub>,
    /// Who may play.
    pub gate: Arc<dyn AccessGate>,
    /// Bytes sent, for the load report.
    pub traffic: Arc<Traffic>,
}

/// The HTTP-TS route.
pub fn router(state: TsHttp) -> Router {
    Router::new().route("/ts/{file}", get(ts_stream)).with_state(state)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-cache")], "not found\n").into_response()
}

/// The live MPEG-TS of a stream, from its newest keyframe, as long as it lasts.
async fn ts_stream(
    State(out): State<TsHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(name) = file.strip_suffix(".ts") else { return not_found() };
    serve(&out, peer, name, query.as_deref(), &headers, &format!("/ts/{file}")).await
}

/// The live MPEG-TS of `name` for one viewer who asked at `url`.
pub(crate) async fn serve(
    out: &TsHttp,
    peer: SocketAddr,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    url: &str,
) -> Response {
    let token = token(query, headers);
    // The credential first, then whether there is anything to play: only a
    // live stream is worth the quota and the triggers.
    if let Err(e) = out.gate.check_play(name, token, peer.ip()) {
        return denied(e);
    }
    let Some(sub) = out.ts.subscribe(name) else { return not_found() };
    let req = PlayRequest { protocol: "ts", stream: name, token, peer, url };
    let guard = match out.gate.admit_play(req).await {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    let traffic = out.traffic.clone();
    let chunks = futures_util::stream::unfold((sub, guard), move |(mut sub, guard)| {
        let traffic = traffic.clone();
        async move {
            loop {
                let ev = tokio::select! {
                    ev = sub.recv() => match ev {
                        Some(ev) => ev,
                        None => {
                            guard.end_with(EndReason::StreamEnded);
                            return None;
                        }
                    },
                    _ = guard.cancelled() => return None,
                };
                match ev {
                    Event::Frame(f) => {
                        guard.sent(f.payload.len());
                        traffic.ts.fetch_add(f.payload.len() as u64, Ordering::Relaxed);
                        return Some((Ok::<_, Infallible>(f.payload), (sub, guard)));
                    }
                    Event::Tracks(_) | Event::Discontinuity => continue,
                }
            }
        }
    });
    body("video/mp2t", "no-cache", Body::from_stream(chunks))
}
