//! HTTP-FLV: `GET /{stream}.flv` (MistServer's URL; also `/flv/{stream}.flv`),
//! the live stream as an FLV file from its newest keyframe, for as long as
//! it lasts: flv.js, ffplay and many CDN tools read it. The tags are the
//! ones RTMP players get ([`FlvEgress`]); `?rendition=480p` picks a ladder
//! rung as it does for RTMP. One connection is one viewer session:
//! admitted once, counted, kickable, ended when it closes.

use std::collections::VecDeque;
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
use bytes::Bytes;
use tidecast_media::{Registry, Subscriber};
use tracing::warn;

use super::egress::{EgressNote, FlvEgress, FlvFile};
use crate::access::{AccessGate, EndReason, PlayRequest, Session};
use crate::http::{body, denied, param, token, Traffic};

/// What the HTTP-FLV routes serve from.
#[derive(Clone)]
pub struct FlvHttp {
    /// Live streams.
    pub registry: Registry,
    /// Who may play.
    pub gate: Arc<dyn AccessGate>,
    /// Bytes sent, for the load report.
    pub traffic: Arc<Traffic>,
}

/// The HTTP-FLV route `/flv/{stream}.flv` (`/{stream}.flv` is routed by
/// [`crate::progressive`] with the other extensions).
pub fn router(state: FlvHttp) -> Router {
    Router::new().route("/flv/{file}", get(flv_stream)).with_state(state)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-cache")], "not found\n").into_response()
}

/// One viewer's state while its response streams.
struct Viewer {
    sub: Subscriber,
    egress: FlvEgress,
    file: FlvFile,
    ready: VecDeque<Bytes>,
    guard: Session,
    traffic: Arc<Traffic>,
    name: String,
}

/// The live FLV of a stream, from its newest keyframe, as long as it lasts.
async fn flv_stream(
    State(out): State<FlvHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(name) = file.strip_suffix(".flv") else { return not_found() };
    serve(&out, peer, name, query.as_deref(), &headers, &format!("/flv/{file}")).await
}

/// The live FLV of `name` for one viewer who asked at `url`.
pub(crate) async fn serve(
    out: &FlvHttp,
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
    let Some(stream) = out.registry.get(name).filter(|s| !s.is_ended()) else { return not_found() };
    let rendition = param(query, "rendition").and_then(|r| r.strip_suffix('p')?.parse::<u32>().ok());
    let req = PlayRequest { protocol: "flv", stream: name, token, peer, url };
    let guard = match out.gate.admit_play(req).await {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    let viewer = Viewer {
        sub: stream.subscribe(),
        egress: FlvEgress::new(rendition),
        file: FlvFile::new(true, true),
        ready: VecDeque::new(),
        guard,
        traffic: out.traffic.clone(),
        name: name.to_owned(),
    };
    let chunks = futures_util::stream::unfold(viewer, |mut v| async move {
        loop {
            if let Some(b) = v.ready.pop_front() {
                v.guard.sent(b.len());
                v.traffic.flv.fetch_add(b.len() as u64, Ordering::Relaxed);
                return Some((Ok::<_, Infallible>(b), v));
            }
            let ev = tokio::select! {
                ev = v.sub.recv() => match ev {
                    Some(ev) => ev,
                    None => {
                        v.guard.end_with(EndReason::StreamEnded);
                        return None;
                    }
                },
                _ = v.guard.cancelled() => return None,
            };
            if v.egress.event(ev, &mut v.file) == EgressNote::TracksLeftOut {
                warn!(stream = %v.name, "http-flv: FLV carries one H.264/HEVC/AV1/VP9 and one AAC track; others are left out");
            }
            // Everything already in the ring goes into the same turn, so a
            // viewer that joins takes its first GOP in few writes.
            while v.file.queued() < 256 * 1024 {
                let Some(ev) = v.sub.try_recv() else { break };
                v.egress.event(ev, &mut v.file);
            }
            v.ready.extend(v.file.take());
        }
    });
    body("video/x-flv", "no-cache", Body::from_stream(chunks))
}
