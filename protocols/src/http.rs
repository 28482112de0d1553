//! What the HTTP protocols share (LL-HLS in `hls::http`, HTTP-TS in
//! `mpegts::http`, WHIP/WHEP in `webrtc::http`): the playback credential of
//! a request, the answer to a refusal, byte counters, CORS.
//!
//! Each protocol's routes are its own router; the binary merges them on the
//! HTTP port. None of them reads policy: they ask the [`AccessGate`].
//!
//! [`AccessGate`]: crate::access::AccessGate

use std::sync::atomic::AtomicU64;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tower_http::cors::{Any, CorsLayer};

use crate::access::Refusal;

/// Bytes the HTTP outputs sent, for the load report.
#[derive(Debug, Default)]
pub struct Traffic {
    /// LL-HLS.
    pub hls: AtomicU64,
    /// LL-DASH.
    pub dash: AtomicU64,
    /// HTTP MPEG-TS.
    pub ts: AtomicU64,
    /// HTTP-FLV.
    pub flv: AtomicU64,
    /// Progressive MP4 (`/{stream}.mp4`).
    pub mp4: AtomicU64,
    /// Progressive Matroska (`/{stream}.mkv`).
    pub mkv: AtomicU64,
    /// Thumbnails (`/{stream}.jpg`).
    pub jpg: AtomicU64,
    /// WHEP (media payload bytes before RTP and SRTP overhead).
    pub webrtc: AtomicU64,
}

/// The playback token of a request: `?token=` or `Authorization: Bearer`.
pub fn token<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    param(query, "token").or_else(|| bearer(headers))
}

/// The bearer credential of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim).filter(|t| !t.is_empty())
}

/// One query parameter's value.
pub fn param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The HTTP answer to a refusal (every HTTP protocol answers alike).
pub fn denied(e: Refusal) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
    (status, [(header::CACHE_CONTROL, "no-cache")], format!("{e}\n")).into_response()
}

/// A response with `body`, its content type and cache policy.
pub fn body(content_type: &'static str, cache: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

/// Playback is open to every origin (players run on other sites).
pub fn cors() -> CorsLayer {
    CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers(Any).expose_headers(Any)
}

/// The CORS preflight answer for a handler that answers `OPTIONS` itself:
/// any origin, `methods`, and the request headers the page asked for (a
/// wildcard would not cover `Authorization`, which WHIP and WHEP send).
pub fn preflight(req: &HeaderMap, methods: &'static str, out: &mut HeaderMap) {
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    if let Some(asked) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
}

/// Constant-time equality of two byte strings (credentials).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_query_or_the_bearer() {
        let mut h = HeaderMap::new();
        assert_eq!(token(Some("a=1&token=T.S"), &h), Some("T.S"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer B"));
        assert_eq!(token(Some("a=1"), &h), Some("B"));
        assert_eq!(param(Some("sid=ab&tokenx=1"), "token"), None);
        assert!(ct_eq(b"abc", b"abc") && !ct_eq(b"abc", b"abd"));
        assert_eq!(denied(Refusal::RateLimited).status(), StatusCode::TOO_MANY_REQUESTS);
    }
}

/// The HTTP port's listener: its connections send packaged media with
/// `sendfile` ([`SendfileStream`](tidecast_memfile::SendfileStream)).
#[derive(Debug)]
pub struct MediaListener(tokio::net::TcpListener);

impl MediaListener {
    /// Wraps a bound listener.
    pub fn new(listener: tokio::net::TcpListener) -> MediaListener {
        MediaListener(listener)
    }
}

impl axum::serve::Listener for MediaListener {
    type Io = tidecast_memfile::SendfileStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((io, addr)) => {
                    // No Nagle: a response head waits for its body by
                    // itself (`MSG_MORE`), and a small answer (a playlist,
                    // a blocking reload) leaves at once.
                    let _ = io.set_nodelay(true);
                    return (tidecast_memfile::SendfileStream::new(io), addr);
                }
                // A connection that failed before it was accepted concerns
                // only its peer.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) => {}
                // Out of descriptors or memory: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed; retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
