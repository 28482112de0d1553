//! Playback over HTTP: `GET /hls/{stream}/index.m3u8` and the files it
//! names, and `GET /ts/{stream}.ts`, the live MPEG-TS.
//!
//! Every request passes the control plane: a stream that needs a playback
//! token gets it from `?token=` or `Authorization: Bearer`, and its
//! playlists carry the token into every URI they name, so a player needs
//! nothing special. A viewer's first request opens its session (tenant
//! viewer quota, USER_NEW, and CONN_PLAY for HTTP-TS).

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

use crate::load::Traffic;
use crate::plane::{ControlPlane, Owned, PlayDenied};
use crate::tokens::TokenError;
use crate::viewers::Viewers;

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

/// The answer to a refused play request (shared by every playback route).
pub(crate) fn denied(e: PlayDenied) -> Response {
    let status = match e {
        PlayDenied::Token(TokenError::Missing) => StatusCode::UNAUTHORIZED,
        PlayDenied::Token(_) | PlayDenied::Refused(_) => StatusCode::FORBIDDEN,
        PlayDenied::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        PlayDenied::Store => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, [(header::CACHE_CONTROL, "no-cache")], format!("{e}\n")).into_response()
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
    let owned = match out.plane.check_play(name, token(query.as_deref(), &headers), peer.ip()) {
        Ok(o) => o,
        Err(e) => return denied(e),
    };
    let Some(sub) = out.ts.subscribe(name) else { return error(HlsError::NotFound) };
    let tenant = owned.as_ref().map(|o| o.stream.tenant.clone());
    let guard = out.plane.viewers.connect(name, tenant.as_deref(), "ts", peer.ip());
    let url = format!("/ts/{file}");
    if let Err(e) = out.plane.admit_viewer(&owned, name, "ts", peer, &url, guard.id()).await {
        return denied(e);
    }
    let traffic = out.traffic.clone();
    let chunks = futures_util::stream::unfold((sub, guard), move |(mut sub, guard)| {
        let traffic = traffic.clone();
        async move {
            loop {
                let ev = tokio::select! {
                    ev = sub.recv() => ev?,
                    _ = guard.cancel.cancelled() => return None,
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

/// Opens or refreshes the HLS viewer session of a request.
async fn hls_session(
    out: &Playback,
    owned: &Option<Owned>,
    stream: &str,
    peer: SocketAddr,
    headers: &HeaderMap,
    token: Option<&str>,
    file: &str,
) -> Result<String, PlayDenied> {
    let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let id = Viewers::hls_session_id(stream, peer.ip(), ua, token);
    let viewers = &out.plane.viewers;
    if viewers.is_kicked(&id) {
        return Err(PlayDenied::Refused("this session was ended by the operator".into()));
    }
    if !viewers.is_live(&id) {
        let url = format!("/hls/{stream}/{file}");
        out.plane.admit_viewer(owned, stream, "hls", peer, &url, &id).await?;
        viewers.begin(id.clone(), stream, owned.as_ref().map(|o| o.stream.tenant.as_str()), "hls", peer.ip());
    }
    Ok(id)
}

/// Appends `token=` to every URI a playlist names, so the player carries it.
pub fn with_token(playlist: &str, token: &str) -> String {
    let add = |uri: &str| format!("{uri}{}token={token}", if uri.contains('?') { '&' } else { '?' });
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
    let Some(hls) = out.hls.get(&stream) else { return error(HlsError::NotFound) };
    let session = match hls_session(&out, &owned, &stream, peer, &headers, token, &file).await {
        Ok(id) => id,
        Err(e) => return denied(e),
    };
    // Playlists of a token-protected stream carry the token on.
    let carry = owned.as_ref().is_some_and(|o| o.stream.playback_token_required).then_some(token).flatten();
    let playlist = |text: String| match carry {
        Some(t) => with_token(&text, t),
        None => text,
    };
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
fn count(out: &Playback, session: &str, n: usize) {
    out.traffic.hls.fetch_add(n as u64, Ordering::Relaxed);
    out.plane.viewers.touch(session, n);
}

/// A playlist response, counted.
fn counted(out: &Playback, session: &str, text: Vec<u8>) -> Response {
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
