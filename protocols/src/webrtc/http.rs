//! WHIP (RFC 9725) and WHEP signaling on the HTTP port.
//!
//! * `POST /whip/{stream}` with an SDP offer and `Authorization: Bearer
//!   <stream key>`: `201 Created`, the answer, and `Location:
//!   /whip/{stream}/{id}`. `PATCH` on that resource takes trickle ICE
//!   fragments, `DELETE` ends the session.
//! * `POST /whep/{stream}` likewise for viewers; the bearer (or `?token=`) is
//!   the playback token when the stream needs one.
//!
//! The resource is bound to the credential that created it: `PATCH` and
//! `DELETE` must present the same bearer (compared in constant time).
//! ICE servers go to the client in `Link` headers, on `POST` and `OPTIONS`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::Router;
use parking_lot::Mutex;
use tidecast_media::Registry;
use tracing::{info, warn};

use super::{Created, EndReason, OfferProblem, ViewerHooks, WebRtcError, WebRtcHub};
use crate::access::{AccessGate, PlayRequest, PublishRequest};
use crate::http::{bearer, cors, ct_eq, denied, preflight, token, Traffic};

/// What the signaling routes need.
#[derive(Clone)]
pub struct Signaling {
    /// The WebRTC edge.
    pub hub: Arc<WebRtcHub>,
    /// Who may publish and play.
    pub gate: Arc<dyn AccessGate>,
    /// The live streams WHEP plays.
    pub registry: Registry,
    /// Bytes sent, for the load report.
    pub traffic: Arc<Traffic>,
    /// Each live session's creating credential (kept in memory only).
    owners: Arc<Mutex<HashMap<String, String>>>,
}

impl Signaling {
    /// Signaling over `hub`.
    pub fn new(hub: Arc<WebRtcHub>, gate: Arc<dyn AccessGate>, registry: Registry, traffic: Arc<Traffic>) -> Signaling {
        Signaling { hub, gate, registry, traffic, owners: Arc::default() }
    }
}

/// The WHIP and WHEP routes, open to pages on every origin. CORS wraps
/// the POST, PATCH and DELETE handlers; `OPTIONS` ([`options`], added
/// after the layer) answers as WHIP's OPTIONS (accepted types, ICE
/// servers) and as a CORS preflight at once (the layer would answer every
/// `OPTIONS` itself, without the ICE servers).
pub fn routes(s: Signaling) -> Router {
    Router::new()
        .route("/whip/{stream}", post(whip).layer(cors()).options(options))
        .route("/whep/{stream}", post(whep).layer(cors()).options(options))
        .route("/whip/{stream}/{id}", patch(trickle).delete(end).layer(cors()).options(options))
        .route("/whep/{stream}/{id}", patch(trickle).delete(end).layer(cors()).options(options))
        .with_state(s)
}

const SDP: &str = "application/sdp";
const TRICKLE: &str = "application/trickle-ice-sdpfrag";

fn problem(status: StatusCode, text: impl std::fmt::Display) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        format!("{text}\n"),
    )
        .into_response()
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// `Link` header values for the configured ICE servers (RFC 9725 section 4.6).
fn links(hub: &WebRtcHub) -> Vec<HeaderValue> {
    hub.ice_servers()
        .iter()
        .filter_map(|s| {
            let mut v = format!("<{}>; rel=\"ice-server\"", s.url);
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                v.push_str(&format!("; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""));
            }
            HeaderValue::from_str(&v).ok()
        })
        .collect()
}

async fn options(State(s): State<Signaling>, req: HeaderMap) -> Response {
    const METHODS: &str = "OPTIONS, POST, PATCH, DELETE";
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    preflight(&req, METHODS, h);
    h.insert(header::ALLOW, HeaderValue::from_static(METHODS));
    h.insert("accept-post", HeaderValue::from_static(SDP));
    h.insert("accept-patch", HeaderValue::from_static(TRICKLE));
    for l in links(&s.hub) {
        h.append(header::LINK, l);
    }
    r
}

fn webrtc_error(e: &WebRtcError) -> Response {
    let status = match e {
        WebRtcError::Offer(OfferProblem::Malformed(_)) | WebRtcError::Rejected(_) | WebRtcError::BadCandidate(_) => {
            StatusCode::BAD_REQUEST
        }
        WebRtcError::Offer(OfferProblem::NoSupportedCodec(_)) => StatusCode::NOT_ACCEPTABLE,
        WebRtcError::NothingToPlay(_) => StatusCode::UNPROCESSABLE_ENTITY,
        WebRtcError::NotReady | WebRtcError::Full => StatusCode::SERVICE_UNAVAILABLE,
        WebRtcError::NotFound | WebRtcError::NoSuchRendition { .. } => StatusCode::NOT_FOUND,
    };
    let mut r = problem(status, e);
    // A stream that has a publisher but no tracks yet is starting: asking
    // again in a second works. `Full` gives no such promise, so a player
    // tells the two apart by this header and falls back only on `Full`.
    if matches!(e, WebRtcError::NotReady) {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A refusal: status and the text the client reads.
type Refused = (StatusCode, &'static str);

fn read_offer(headers: &HeaderMap, body: &Bytes) -> Result<String, Refused> {
    if !content_type_is(headers, SDP) {
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, "the offer must be sent as application/sdp"));
    }
    String::from_utf8(body.to_vec()).map_err(|_| (StatusCode::BAD_REQUEST, "the offer is not UTF-8"))
}

fn created(s: &Signaling, kind: &str, stream: &str, c: Created, credential: &str) -> Response {
    {
        // Sessions that ended without a DELETE (timed out, kicked, stream
        // ended) leave with the next one created, so the map stays as long
        // as the live sessions (at most webrtc.max_sessions).
        let mut owners = s.owners.lock();
        owners.retain(|k, _| s.hub.session_stream(k).is_some());
        owners.insert(c.id.clone(), credential.to_owned());
    }
    let mut r = (StatusCode::CREATED, c.answer).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("/{kind}/{stream}/{}", c.id)) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", c.id)) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(TRICKLE));
    for l in links(&s.hub) {
        h.append(header::LINK, l);
    }
    for note in &c.notes {
        if let Ok(v) = HeaderValue::from_str(note) {
            h.append("x-tidecast-note", v);
        }
    }
    r
}

async fn whip(
    State(s): State<Signaling>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match read_offer(&headers, &body) {
        Ok(o) => o,
        Err((status, text)) => return problem(status, text),
    };
    let open = s.gate.open_publishing();
    let token = bearer(&headers);
    let key = match (token, open) {
        (_, true) => stream.clone(),
        (Some(t), false) => t.to_owned(),
        (None, false) => {
            let mut r = problem(StatusCode::UNAUTHORIZED, "WHIP needs the stream key as a bearer token");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    let req = PublishRequest { protocol: "whip", app: "whip", key: &key, peer };
    let session = match s.gate.admit_publish(req).await {
        Ok(n) => n,
        Err(r) => {
            info!(%peer, stream, reason = %r, "whip publish refused");
            let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            return problem(status, r);
        }
    };
    let name = session.stream().to_owned();
    if name != stream {
        session.discard();
        info!(%peer, stream, key_stream = name, "whip publish refused: the key is for another stream");
        return problem(StatusCode::UNAUTHORIZED, "this key does not publish this stream");
    }
    let publisher = match s.registry.publish_with(&name, session.publish_options()) {
        Ok(p) => p,
        Err(e) => {
            session.discard();
            return problem(StatusCode::CONFLICT, e);
        }
    };
    match s.hub.publish(&offer, publisher, session, peer) {
        Ok(c) => {
            info!(%peer, stream = name, id = %c.id, "whip session created");
            created(&s, "whip", &stream, c, token.unwrap_or(""))
        }
        Err(e) => {
            info!(%peer, stream = name, error = %e, "whip offer refused");
            webrtc_error(&e)
        }
    }
}

async fn whep(
    State(s): State<Signaling>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stream): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let offer = match read_offer(&headers, &body) {
        Ok(o) => o,
        Err((status, text)) => return problem(status, text),
    };
    let token = token(query.as_deref(), &headers);
    let rendition = match rendition(query.as_deref()) {
        Ok(r) => r,
        Err(text) => return problem(StatusCode::BAD_REQUEST, text),
    };
    // The credential first, then whether there is anything to play: only a
    // live stream is worth the quota and the triggers.
    if let Err(e) = s.gate.check_play(&stream, token, peer.ip()) {
        return denied(e);
    }
    let Some(live) = s.registry.get(&stream).filter(|st| st.has_publisher()) else {
        return problem(StatusCode::NOT_FOUND, format!("stream {stream:?} is not live"));
    };
    // Starting (no tracks yet): told before admission, so a player asking
    // again each second costs no quota slot and fires no play triggers.
    // (The hub checks again, for a stream that loses its tracks meanwhile.)
    if live.tracks().is_empty() {
        return webrtc_error(&WebRtcError::NotReady);
    }
    let url = format!("/whep/{stream}");
    let req = PlayRequest { protocol: "whep", stream: &stream, token, peer, url: &url };
    let session = match s.gate.admit_play(req).await {
        Ok(g) => g,
        Err(e) => return denied(e),
    };
    let counter = session.info().clone();
    let traffic = s.traffic.clone();
    let hooks = ViewerHooks {
        cancel: session.cancel_token(),
        sent: Box::new(move |n| {
            counter.count_out(n);
            traffic.webrtc.fetch_add(n as u64, Ordering::Relaxed);
        }),
        session: Some(session),
    };
    match s.hub.play(&offer, live, rendition, peer, hooks) {
        Ok(c) => {
            info!(%peer, stream, id = %c.id, "whep session created");
            created(&s, "whep", &stream, c, token.unwrap_or(""))
        }
        Err(e) => {
            info!(%peer, stream, error = %e, "whep offer refused");
            webrtc_error(&e)
        }
    }
}

/// `?rendition=480p` (or `480`): the height of the ladder rung to play.
fn rendition(query: Option<&str>) -> Result<Option<u32>, String> {
    let Some(v) = query.unwrap_or("").split('&').find_map(|kv| kv.strip_prefix("rendition=")) else {
        return Ok(None);
    };
    let digits = v.strip_suffix('p').unwrap_or(v);
    match digits.parse::<u32>() {
        Ok(h) if (1..=8640).contains(&h) => Ok(Some(h)),
        _ => Err(format!("rendition={v:?}: expected a height such as 480p")),
    }
}

/// Checks that `id` is a live session of `kind` on `stream` created with the
/// bearer this request presents.
fn owned_session(s: &Signaling, kind: &str, stream: &str, id: &str, headers: &HeaderMap) -> Result<(), Refused> {
    s.owners.lock().retain(|k, _| s.hub.session_stream(k).is_some());
    let Some((k, st)) = s.hub.session_stream(id) else {
        return Err((StatusCode::NOT_FOUND, "no such session"));
    };
    if k != kind || st != stream {
        return Err((StatusCode::NOT_FOUND, "no such session"));
    }
    let presented = bearer(headers).unwrap_or("");
    let matches = s.owners.lock().get(id).is_some_and(|h| ct_eq(h.as_bytes(), presented.as_bytes()));
    if !matches {
        warn!(id, "webrtc resource request with the wrong credential");
        return Err((StatusCode::FORBIDDEN, "this session was created with another credential"));
    }
    Ok(())
}

fn kind_of(headers_path: &str) -> &'static str {
    if headers_path.starts_with("/whep/") {
        "whep"
    } else {
        "whip"
    }
}

async fn trickle(
    State(s): State<Signaling>,
    uri: axum::http::Uri,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let kind = kind_of(uri.path());
    if let Err((status, text)) = owned_session(&s, kind, &stream, &id, &headers) {
        return problem(status, text);
    }
    if !content_type_is(&headers, TRICKLE) {
        return problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "PATCH takes application/trickle-ice-sdpfrag");
    }
    let Ok(fragment) = std::str::from_utf8(&body) else { return problem(StatusCode::BAD_REQUEST, "not UTF-8") };
    match s.hub.trickle(&id, fragment) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => webrtc_error(&e),
    }
}

async fn end(
    State(s): State<Signaling>,
    uri: axum::http::Uri,
    Path((stream, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let kind = kind_of(uri.path());
    if let Err((status, text)) = owned_session(&s, kind, &stream, &id, &headers) {
        return problem(status, text);
    }
    match s.hub.close(&id, EndReason::Deleted) {
        Ok(()) => {
            s.owners.lock().remove(&id);
            StatusCode::OK.into_response()
        }
        Err(e) => webrtc_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starting_stream_says_when_to_ask_again_and_a_full_server_does_not() {
        let starting = webrtc_error(&WebRtcError::NotReady);
        assert_eq!(starting.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(starting.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        let full = webrtc_error(&WebRtcError::Full);
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(full.headers().get(header::RETRY_AFTER).is_none(), "a player falls back on this one");
    }
}
