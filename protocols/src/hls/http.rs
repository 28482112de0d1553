//! LL-HLS over HTTP: `GET /hls/{stream}/index.m3u8` and every file it names,
//! served from memory.
//!
//! Every request passes the gate's per-request check (rate limit, playback
//! token from `?token=` or `Authorization: Bearer`). An HLS player holds no
//! connection, so its session is named by the `sid` its multivariant
//! playlist hands out and every later URI carries (with the token of a
//! token-protected stream), and the first request of a session is admitted
//! like any other viewer (tenant quota, USER_NEW).

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
use futures_util::StreamExt;

use super::{HlsError, HlsHub, PlaylistRequest, Resource};
use crate::access::{AccessGate, PlayRequest, SessionInfo};
use crate::http::{body, denied, param, token, Traffic};

const M3U8: &str = "application/vnd.apple.mpegurl";

/// What the LL-HLS routes serve from.
#[derive(Clone)]
pub struct HlsHttp {
    /// Every stream's LL-HLS output.
    pub hls: Arc<HlsHub>,
    /// Who may play.
    pub gate: Arc<dyn AccessGate>,
    /// Bytes sent, for the load report.
    pub traffic: Arc<Traffic>,
}

/// The LL-HLS routes.
pub fn router(state: HlsHttp) -> Router {
    Router::new().route("/hls/{stream}/{file}", get(hls_file)).with_state(state)
}

/// The HTTP answer to an LL-HLS or LL-DASH request that cannot be served.
pub(crate) fn error(e: HlsError) -> Response {
    let status = match e {
        HlsError::NotFound => StatusCode::NOT_FOUND,
        HlsError::BadRequest(_) => StatusCode::BAD_REQUEST,
        HlsError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, [(header::CACHE_CONTROL, "no-cache")], format!("{e}\n")).into_response()
}

/// A body of `parts`: one piece is sent with a `Content-Length` (and, for
/// packaged media, with `sendfile`), several as they come.
pub(crate) fn chunks(mut parts: Vec<Bytes>) -> Body {
    if parts.len() == 1 {
        return Body::from(parts.remove(0));
    }
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
    State(out): State<HlsHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((stream, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let token = token(query.as_deref(), &headers);
    // The credential first, then whether there is anything to play: only
    // a live (or lingering) stream is worth the quota and the triggers.
    let settings = match out.gate.check_play(&stream, token, peer.ip()) {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    let Some(resource) = Resource::parse(&file) else { return error(HlsError::NotFound) };
    let Some(hls) = out.hls.get(&stream) else { return error(HlsError::NotFound) };
    // A player's session id: the `sid` it carries, a fresh one for a
    // multivariant playlist asked for without one (its URIs hand it on).
    let sid = param(query.as_deref(), "sid");
    let fresh = sid.is_none() && matches!(resource, Resource::Multivariant);
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let url = format!("/hls/{stream}/{file}");
    let req = PlayRequest { protocol: "hls", stream: &stream, token, peer, url: &url };
    let session = match out.gate.hls_viewer(req, sid, fresh, agent).await {
        Ok(s) => s,
        Err(e) => return denied(e),
    };
    // Playlists carry the session id, and the token of a token-protected
    // stream, into every URI they name.
    let mut carry = Vec::new();
    if sid.is_some() || fresh {
        carry.push(format!("sid={}", session.id));
    }
    if let Some(t) = token.filter(|_| settings.as_ref().is_some_and(|s| s.playback_token_required)) {
        carry.push(format!("token={t}"));
    }
    let carry = carry.join("&");
    let playlist = |text: String| if carry.is_empty() { text } else { with_params(&text, &carry) };
    let result = match resource {
        Resource::Multivariant => hls.multivariant().await.map(playlist).map(|t| counted(&out, &session, t)),
        Resource::Playlist(r) => match PlaylistRequest::parse(query.as_deref().unwrap_or_default()) {
            Ok(req) => hls.media_playlist_shared(&r, req).await.map(|text| {
                // The shared text as is, unless this session's URIs carry
                // parameters.
                let text = match carry.is_empty() {
                    true => text,
                    false => Bytes::from(with_params(&String::from_utf8_lossy(&text), &carry)),
                };
                counted(&out, &session, text)
            }),
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
        // A complete part goes out in one piece; one still being made
        // streams as its chunks are written.
        Resource::Part(r, run, msn, part) => match hls.complete_part(&r, &run, msn, part) {
            Some(whole) => {
                count(&out, &session, whole.len());
                Ok(body("video/iso.segment", "max-age=3600", Body::from(whole)))
            }
            None => hls.part(&r, &run, msn, part).await.map(|s| {
                let (out, session) = (out.clone(), session.clone());
                let s = s.map(move |b| {
                    count(&out, &session, b.len());
                    Ok::<_, Infallible>(b)
                });
                body("video/iso.segment", "max-age=3600", Body::from_stream(s))
            }),
        },
    };
    result.unwrap_or_else(error)
}

/// Counts bytes sent to an HLS session.
fn count(out: &HlsHttp, session: &SessionInfo, n: usize) {
    out.traffic.hls.fetch_add(n as u64, Ordering::Relaxed);
    session.count_out(n);
}

/// A playlist response, counted.
fn counted(out: &HlsHttp, session: &SessionInfo, text: impl Into<Bytes>) -> Response {
    let text = text.into();
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
