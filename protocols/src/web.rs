//! The web face on the playback port: a player page for every stream
//! (`/{stream}.html`, MistServer's URL), the embeddable player it uses
//! (`/player.js`, a `<tidecast-player stream="NAME">` element for anyone's
//! page), and the libraries that player loads (`/player/hls.min.js`,
//! `/player/dash.mediaplayer.min.js`). All of it is embedded in the binary
//! (`web/` in the repository): no Node at run time, nothing from a CDN.
//!
//! The page carries no inline script or style and is served with a
//! Content-Security-Policy that allows only this server (and `blob:` for
//! media, MSE and hls.js's worker). It embeds no credential: the player
//! reads a playback token from the page's own `?token=` and sends it with
//! every request.
//!
//! The operator dashboard ([`dashboard_router`]) is served on the admin
//! listener instead, and speaks only to the admin API of that origin.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PLAYER_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/player.js"));
const HLS_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/vendor/hls.min.js"));
const DASH_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/vendor/dash.mediaplayer.min.js"));
const DASHBOARD_HTML: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dashboard.html"));
const DASHBOARD_JS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dashboard.js"));
const DASHBOARD_CSS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/dashboard.css"));
const PAGE_CSS: &str = "html,body{margin:0;height:100%;background:#000}\
    tidecast-player{height:100%}";

/// The policy of the player page: this server only, plus `blob:` where
/// MSE, WebRTC and hls.js's worker need it.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    media-src 'self' blob: mediastream:; worker-src 'self' blob:; img-src 'self' data: blob:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'";

/// The policy of the dashboard: this origin only (the admin API), and no
/// framing by other pages.
pub const DASHBOARD_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The operator dashboard, for the admin listener: `/`, `/dashboard.js`,
/// `/dashboard.css`. It talks to the admin API of the same origin only.
pub fn dashboard_router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { secured(asset("text/html; charset=utf-8", "no-cache", DASHBOARD_HTML), DASHBOARD_CSP) }),
        )
        .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", "no-cache", DASHBOARD_JS) }))
        .route("/dashboard.css", get(|| async { asset("text/css; charset=utf-8", "no-cache", DASHBOARD_CSS) }))
}

/// `r` with the page headers: `policy`, no sniffing, no referrer.
fn secured(mut r: Response, policy: &'static str) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

/// `/player.js` and `/player/{file}`.
pub fn router() -> Router {
    Router::new().route("/player.js", get(player_js)).route("/player/{file}", get(library))
}

fn asset(content_type: &'static str, cache: &'static str, bytes: &'static [u8]) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response()
}

async fn player_js() -> Response {
    // Small, and it changes with the server: revalidated every time.
    asset("text/javascript; charset=utf-8", "no-cache", PLAYER_JS)
}

async fn library(Path(file): Path<String>) -> Response {
    let day = "public, max-age=86400";
    match file.as_str() {
        "hls.min.js" => asset("text/javascript; charset=utf-8", day, HLS_JS),
        "dash.mediaplayer.min.js" => asset("text/javascript; charset=utf-8", day, DASH_JS),
        "page.css" => asset("text/css; charset=utf-8", "no-cache", PAGE_CSS.as_bytes()),
        _ => (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-cache")], "not found\n").into_response(),
    }
}

/// Escapes `s` for HTML text and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The player page of `stream`: the player, full window. Served whether
/// the stream is live or not: the player waits for it.
pub fn page(stream: &str) -> Response {
    let name = escape(stream);
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{name} · Tidecast</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/player/page.css\">\
         <script type=\"module\" src=\"/player.js\"></script></head>\
         <body><tidecast-player stream=\"{name}\"></tidecast-player></body></html>\n"
    );
    let mut r = (StatusCode::OK, html).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    secured(r, PAGE_CSP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_name_cannot_break_out_of_the_page() {
        assert_eq!(escape("a\"><script>x</script>&'"), "a&quot;&gt;&lt;script&gt;x&lt;/script&gt;&amp;&#39;");
    }

    #[test]
    fn the_embedded_player_is_the_element() {
        let js = std::str::from_utf8(PLAYER_JS).unwrap();
        assert!(js.contains("customElements.define('tidecast-player'"));
        assert!(HLS_JS.len() > 100_000 && DASH_JS.len() > 100_000);
    }
}
