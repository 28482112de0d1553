//! Playback over HTTP: `GET /hls/{stream}/index.m3u8` and the files it
//! names, and `GET /ts/{stream}.ts`, the live MPEG-TS.
//!
//! Every request passes the control plane: a stream that needs a playback
//! token gets it from `?token=` or `Authorization: Bearer`, and its
//! playlists carry the token into every URI they name, so a player needs
//! nothing special. An HTTP-TS connection is one session; an HLS player's
//! session is named by the `sid` its multivariant playlist hands out and
//! every later URI carries. The first request of a session is admitted by
//! [`ControlPlane`] (tenant viewer quota, CONN_PLAY for HTTP-TS, USER_NEW).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tidecast_media::Event;
use tidecast_protocols::hls::{HlsError, HlsHub, PlaylistRequest, Resource};
use tidecast_protocols::mpegts::output::TsHub;
use tower_http::cors::{Any, CorsLayer};

use tidecast_protocols::access::{AccessGate, PlayRequest, Refusal, SessionInfo};

use crate::load::Traffic;
use crate::plane::ControlPlane;

const M3U8: &str = "application/vnd.apple.mpegurl";

/// What the playback routes serve from.
#[derive(Clone)]
pub struct Playback {
    /// LL-HLS outputs.
    pub hls: Arc<HlsHub>,
    /// MPEG-TS outputs.
    pub ts: Arc<TsHub>,
    /// Access policy and viewer sessions.
    pub plane: Arc<ControlPlane>,
    /// Bytes sent, for the load report.
    pub traffic: Arc<Traffic>,
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

/// The playback token of a request: `?token=` or `Authorization: Bearer`.
pub(crate) fn token<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    let from_query = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    from_query.or_else(|| headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim))
}

/// The HTTP answer to a refusal (shared by every HTTP protocol).
pub(crate) fn denied(e: Refusal) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    (status, [(header::CACHE_CONTROL, "no-cache")], format!("{e}\n")).into_response()
}

/// One query parameter's value.
fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The live MPEG-TS of a stream, from its newest keyframe, as long as it lasts.
async fn ts_stream(
    State(out): State<Playback>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(name) = file.strip_suffix(".ts") else { return error(HlsError::NotFound) };
    // The credential first, then whether there is anything to play: only a
    // live stream is worth the quota and the triggers.
    if let Err(e) = out.plane.check_play(name, token(query.as_deref(), &headers), peer.ip()) {
        return denied(e);
    }
    let Some(sub) = out.ts.subscribe(name) else { return error(HlsError::NotFound) };
    let url = format!("/ts/{file}");
    let req = PlayRequest { protocol: "ts", stream: name, token: token(query.as_deref(), &headers), peer, url: &url };
    let guard = match out.plane.admit_play(req).await {
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
                            guard.end_with(tidecast_protocols::access::EndReason::StreamEnded);
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

/// Appends `token=` to every URI a playlist names, so the player carries it.
pub fn with_token(playlist: &str, token: &str) -> String {
    with_params(playlist, &format!("token={token}"))
}

/// Appends `params` (`a=1&b=2`) to every URI a playlist names.
pub fn with_params(playlist: &str, params: &str) -> String {
    let add = |uri: &str| format!("{uri}{}{params}", if uri.contains('?') { '&' } else { '?' });
    let mut out = String::with_capacity(playlist.len() + 64);
    for line in playlist.lines() {
        if line.is_empty() {
        } else if !line.starts_with('#') {
            out.push_str(&add(line));
        } else if let Some(at) = line.find("URI=\"") {
            let start = at + 5;
            match line[start..].find('"') {
                Some(len) => {
                    out.push_str(&line[..start]);
                    out.push_str(&add(&line[start..start + len]));
                    out.push_str(&line[start + len..]);
                }
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

async fn hls_file(
    State(out): State<Playback>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((stream, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let token = token(query.as_deref(), &headers);
    let owned = match out.plane.check_play(&stream, token, peer.ip()) {
        Ok(o) => o,
        Err(e) => return denied(e),
    };
    let Some(resource) = Resource::parse(&file) else { return error(HlsError::NotFound) };
    // Only a live (or lingering) stream is worth the triggers.
    let Some(hls) = out.hls.get(&stream) else { return error(HlsError::NotFound) };
    // A player's session id: the `sid` it carries, a fresh one for a
    // multivariant playlist asked for without one (its URIs hand it on).
    let sid = param(query.as_deref(), "sid");
    let minted = (sid.is_none() && matches!(resource, Resource::Multivariant)).then(tidecast_protocols::access::new_id);
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let id = out.plane.hls_session_id(sid.or(minted.as_deref()), &stream, peer.ip(), agent, token);
    let url = format!("/hls/{stream}/{file}");
    let req = PlayRequest { protocol: "hls", stream: &stream, token, peer, url: &url };
    let session = match out.plane.hls_viewer(req, &id, owned).await {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    // Playlists carry the session id, and the token of a token-protected
    // stream, into every URI they name.
    let mut carry = Vec::new();
    if sid.is_some() || minted.is_some() {
        carry.push(format!("sid={id}"));
    }
    if let Some(t) = token.filter(|_| session.settings.playback_token_required) {
        carry.push(format!("token={t}"));
    }
    let carry = carry.join("&");
    let playlist = |text: String| if carry.is_empty() { text } else { with_params(&text, &carry) };
    let result = match resource {
        Resource::Multivariant => {
            hls.multivariant().await.map(playlist).map(|t| counted(&out, &session, t.into_bytes()))
        }
        Resource::Playlist(r) => match PlaylistRequest::parse(query.as_deref().unwrap_or_default()) {
            Ok(req) => hls.media_playlist(&r, req).await.map(playlist).map(|t| counted(&out, &session, t.into_bytes())),
            Err(e) => Err(e),
        },
        Resource::Init(r, run, v) => hls.init(&r, &run, v).map(|b| {
            count(&out, &session, b.len());
            body("video/mp4", "max-age=3600", Body::from(b))
        }),
        Resource::Segment(r, run, msn) => hls.segment(&r, &run, msn).map(|c| {
            let n: usize = c.iter().map(Bytes::len).sum();
            count(&out, &session, n);
            body("video/iso.segment", "max-age=3600", chunks(c))
        }),
        Resource::Part(r, run, msn, part) => hls.part(&r, &run, msn, part).await.map(|s| {
            let (out, session) = (out.clone(), session.clone());
            let s = s.map(move |b| {
                count(&out, &session, b.len());
                Ok::<_, Infallible>(b)
            });
            body("video/iso.segment", "max-age=3600", Body::from_stream(s))
        }),
    };
    result.unwrap_or_else(error)
}

/// Counts bytes sent to an HLS session.
fn count(out: &Playback, session: &SessionInfo, n: usize) {
    out.traffic.hls.fetch_add(n as u64, Ordering::Relaxed);
    session.count_out(n);
}

/// A playlist response, counted.
fn counted(out: &Playback, session: &SessionInfo, text: Vec<u8>) -> Response {
    count(out, session, text.len());
    body(M3U8, "no-cache", Body::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlists_carry_the_token_into_every_uri() {
        let pl = "#EXTM3U\n#EXT-X-MAP:URI=\"v-ab-i1.mp4\"\n#EXT-X-PART:DURATION=0.2,URI=\"v-ab-1.0.m4s\"\nv-ab-1.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v-ab-2.1.m4s\"\nvideo.m3u8?x=1\n";
        let t = with_token(pl, "T.S");
        assert_eq!(
            t,
            "#EXTM3U\n#EXT-X-MAP:URI=\"v-ab-i1.mp4?token=T.S\"\n#EXT-X-PART:DURATION=0.2,URI=\"v-ab-1.0.m4s?token=T.S\"\nv-ab-1.m4s?token=T.S\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v-ab-2.1.m4s?token=T.S\"\nvideo.m3u8?x=1&token=T.S\n"
        );
    }
}
