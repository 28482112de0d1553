//! LL-DASH over HTTP: `GET /dash/{stream}/index.mpd`, the files it names,
//! and `GET /dash/utc`, the server's clock for the MPD's `UTCTiming`.
//!
//! Admission works as for LL-HLS (a DASH player holds no connection
//! either): the per-request credential check, then a session. A DASH player
//! reloads the MPD from its original URL, so its session is named by its
//! address, user agent and token (a `sid` in the MPD URL is honoured and
//! carried into every segment URL, as is the token of a token-protected
//! stream). A finished segment is served whole and
//! cacheable; the one being produced is streamed chunk by chunk (each a
//! `moof` + `mdat` pair) as the segmenter writes it and is not cacheable; a
//! request for the segment after it is held until it starts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;

use super::mpd::{self, MpdContext};
use super::thumbs::{DashThumbs, NoImage};
use crate::access::{AccessGate, PlayRequest, SessionInfo};
use crate::hls::http::error;
use crate::hls::{HlsError, HlsHub, Resource};
use crate::http::{body, denied, param, token, Traffic};

const MPD: &str = "application/dash+xml";

/// What the LL-DASH routes serve from.
#[derive(Clone)]
pub struct DashHttp {
    /// Every stream's CMAF output (the one LL-HLS serves too).
    pub hls: Arc<HlsHub>,
    /// Who may play.
    pub gate: Arc<dyn AccessGate>,
    /// Bytes sent, for the load report.
    pub traffic: Arc<Traffic>,
    /// The MPD's latency target; `None` derives it from the segment and part
    /// targets.
    pub latency_target: Option<Duration>,
    /// Thumbnails for dash.js's `provideThumbnail()`: `None` on a node
    /// built without a decoder.
    pub thumbs: Option<Arc<DashThumbs>>,
    /// How much media each thumbnail stands for ([`super::thumbs::interval`]).
    pub thumb_interval: Duration,
}

/// The LL-DASH routes.
pub fn router(state: DashHttp) -> Router {
    Router::new().route("/dash/utc", get(utc)).route("/dash/{stream}/{file}", get(dash_file)).with_state(state)
}

/// The server's clock as `xs:dateTime` with milliseconds (`http-xsdate`).
async fn utc() -> Response {
    body("text/plain", "no-store", Body::from(mpd::xs_datetime(crate::hls::unix_ms())))
}

async fn dash_file(
    State(out): State<DashHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((stream, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let token = token(query.as_deref(), &headers);
    let settings = match out.gate.check_play(&stream, token, peer.ip()) {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    if let Some((run, start_ms, n)) = super::thumbs::parse(&file) {
        return thumbnail(&out, &stream, run, start_ms, n).await;
    }
    let manifest = file == "index.mpd";
    let resource = if manifest { None } else { Resource::parse(&file) };
    if !manifest && !matches!(resource, Some(Resource::Init(..) | Resource::Segment(..))) {
        return error(HlsError::NotFound);
    }
    let Some(cmaf) = out.hls.get(&stream) else { return error(HlsError::NotFound) };
    // A DASH player reloads the MPD from the URL it was given, without a
    // sid, every second or so: handing each reload a fresh sid would open a
    // session per reload. A player without a sid is named by its address,
    // user agent and token instead (as an HLS player that drops its sid is).
    let sid = param(query.as_deref(), "sid");
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let url = format!("/dash/{stream}/{file}");
    let req = PlayRequest { protocol: "dash", stream: &stream, token, peer, url: &url };
    let session = match out.gate.hls_viewer(req, sid, false, agent).await {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    match resource {
        None => {
            let mut carry = Vec::new();
            if sid.is_some() {
                carry.push(format!("sid={}", session.id));
            }
            if let Some(t) = token.filter(|_| settings.as_ref().is_some_and(|s| s.playback_token_required)) {
                carry.push(format!("token={t}"));
            }
            let carry = carry.join("&");
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
            let utc_url = format!("http://{host}/dash/utc");
            let run = cmaf.run().to_owned();
            let latency_target = out.latency_target;
            let rendered = cmaf
                .settled_read(|p| {
                    let ctx = MpdContext {
                        run: &run,
                        now_ms: crate::hls::unix_ms(),
                        utc_url: &utc_url,
                        latency_target,
                        carry: &carry,
                        thumbnails: out.thumbs.as_ref().map(|_| out.thumb_interval),
                    };
                    mpd::render(p, &ctx)
                })
                .await;
            match rendered {
                Ok(text) => {
                    count(&out, &session, text.len());
                    body(MPD, "no-cache", Body::from(text))
                }
                Err(e) => error(e),
            }
        }
        Some(Resource::Init(r, run, v)) => match cmaf.init(&r, &run, v) {
            Ok(b) => {
                count(&out, &session, b.len());
                body("video/mp4", "max-age=3600", Body::from(b))
            }
            Err(e) => error(e),
        },
        Some(Resource::Segment(r, run, n)) => {
            // A complete segment is served whole; otherwise it is forming
            // (or about to start) and streams.
            if let Ok(chunks) = cmaf.segment(&r, &run, n) {
                count(&out, &session, chunks.iter().map(Bytes::len).sum());
                return body("video/mp4", "max-age=3600", crate::hls::http::chunks(chunks));
            }
            match cmaf.forming_segment(&r, &run, n).await {
                Ok(s) => {
                    let (out, session) = (out.clone(), session.clone());
                    let s = s.map(move |b| {
                        count(&out, &session, b.len());
                        Ok::<_, Infallible>(b)
                    });
                    body("video/mp4", "no-store", Body::from_stream(s))
                }
                Err(e) => error(e),
            }
        }
        Some(_) => error(HlsError::NotFound),
    }
}

/// A thumbnail the MPD names: counted as JPEG bytes, not as a viewer's
/// media (the player's session is its MPD's and segments').
async fn thumbnail(out: &DashHttp, stream: &str, run: &str, start_ms: i64, n: u64) -> Response {
    let (Some(thumbs), Some(cmaf)) = (&out.thumbs, out.hls.get(stream)) else { return error(HlsError::NotFound) };
    match thumbs.image(&cmaf, run, start_ms, n, out.thumb_interval).await {
        Ok(jpeg) => {
            out.traffic.jpg.fetch_add(jpeg.len() as u64, Ordering::Relaxed);
            body("image/jpeg", "max-age=3600", Body::from(jpeg))
        }
        Err(NoImage::NotFound) => error(HlsError::NotFound),
        Err(NoImage::Failed(e)) => {
            tracing::warn!(stream, error = %e, "no DASH thumbnail");
            error(HlsError::NotFound)
        }
    }
}

/// Counts bytes sent to a DASH session.
fn count(out: &DashHttp, session: &SessionInfo, n: usize) {
    out.traffic.dash.fetch_add(n as u64, Ordering::Relaxed);
    session.count_out(n);
}
