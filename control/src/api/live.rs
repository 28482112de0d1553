//! Live state: sessions (with the kick action), the load report, the audit
//! log; and the unauthenticated probes: `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Api, ApiError, Caller, Page, PageQuery, Params, PathParams, Problem};
use crate::load::LoadReport;
use crate::plane::ControlPlane;
use tidecast_protocols::access::{Role, SessionInfo};

pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(list_webrtc_sessions))
        .routes(routes!(kick_session))
        .routes(routes!(load))
        .routes(routes!(audit))
}

/// One viewer session, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ViewerSession {
    /// Session id (for USER_NEW/USER_END and the kick action).
    pub id: String,
    /// Stream watched.
    pub stream: String,
    /// Owning tenant of the stream, if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `hls`, `ts`, `rtmp`, `srt`, `whep`.
    pub protocol: String,
    /// Viewer address.
    pub address: String,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// Bytes sent so far.
    pub bytes_out: u64,
}

/// A live session: a publisher or a viewer, of any protocol.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    /// `publish:<stream>` for a publisher; the viewer session id otherwise.
    pub id: String,
    /// `publisher` or `viewer`.
    pub role: String,
    /// Stream.
    pub stream: String,
    /// Owning tenant, for configured streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `rtmp`, `srt`, `whip`, `hls`, `ts`, `whep`.
    pub protocol: String,
    /// The client's address (`ip:port`).
    pub address: String,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// Bytes sent to the client so far.
    pub bytes_out: u64,
    /// Viewer details (absent for publishers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer: Option<ViewerSession>,
    /// Publisher: bytes received so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// SRT link statistics of an SRT publisher or player.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub srt_links: Vec<SrtLink>,
    /// The WebRTC link of a WHIP publisher or WHEP viewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webrtc: Option<WebRtcLink>,
}

/// A WHIP or WHEP session's link, as `/api/v1/webrtc/sessions` details it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebRtcLink {
    /// Its resource id there.
    pub id: String,
    /// `connecting` or `connected`.
    pub state: String,
    /// `udp` or `tcp`, once ICE selected a pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Round-trip time from RTCP, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Bytes received from the peer (all packets).
    pub bytes_in: u64,
    /// Bytes sent to the peer (all packets).
    pub bytes_out: u64,
}

/// One SRT link's statistics, refreshed about once a second.
#[derive(Debug, Serialize, ToSchema)]
pub struct SrtLink {
    /// Peer address.
    pub peer: String,
    /// Whether the peer publishes (else it plays).
    pub publishing: bool,
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// Packets lost.
    pub lost_packets: u64,
    /// Packets retransmitted.
    pub retransmitted_packets: u64,
    /// Packets dropped as too late.
    pub dropped_packets: u64,
    /// Bits per second over the last interval.
    pub bitrate: u64,
    /// Bytes so far.
    pub bytes: u64,
}

fn sessions(api: &Api, caller: &Caller) -> Vec<Session> {
    let plane = &api.plane;
    let links = api.srt.as_ref().map(|s| s.snapshot()).unwrap_or_default();
    let srt_links = |stream: &str, publishing: bool| -> Vec<SrtLink> {
        links
            .iter()
            .filter(|(_, l)| l.stream == stream && l.publishing == publishing)
            .map(|(peer, l)| SrtLink {
                peer: peer.to_string(),
                publishing: l.publishing,
                rtt_ms: l.rtt_ms,
                lost_packets: l.lost_packets,
                retransmitted_packets: l.retransmitted_packets,
                dropped_packets: l.dropped_packets,
                bitrate: l.bitrate,
                bytes: l.bytes,
            })
            .collect()
    };
    let rtc: std::collections::HashMap<String, tidecast_protocols::webrtc::SessionInfo> = api
        .webrtc
        .as_ref()
        .map(|h| h.sessions().into_iter().filter_map(|s| Some((s.session.clone()?, s))).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    let session = |i: &SessionInfo| {
        let publishing = i.role == Role::Publisher;
        let links: Vec<SrtLink> = if i.protocol == "srt" {
            srt_links(&i.stream, publishing).into_iter().filter(|l| l.peer == i.peer.to_string()).collect()
        } else {
            Vec::new()
        };
        let tenant = i.tenant().map(str::to_owned);
        Session {
            id: i.id.clone(),
            role: if publishing { "publisher" } else { "viewer" }.into(),
            stream: i.stream.clone(),
            tenant: tenant.clone(),
            protocol: i.protocol.to_owned(),
            address: i.peer.to_string(),
            started_ms: i.started_ms,
            bytes_out: i.sent(),
            viewer: (!publishing).then(|| ViewerSession {
                id: i.id.clone(),
                stream: i.stream.clone(),
                tenant,
                protocol: i.protocol.to_owned(),
                address: i.peer.ip().to_string(),
                started_ms: i.started_ms,
                bytes_out: i.sent(),
            }),
            bytes_in: publishing.then(|| i.received()),
            srt_links: links,
            webrtc: rtc.get(&i.id).map(|s| WebRtcLink {
                id: s.id.clone(),
                state: s.state.clone(),
                transport: s.transport.clone(),
                rtt_ms: s.rtt_ms,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
            }),
        }
    };
    for i in plane.sessions.list() {
        if caller.sees(i.tenant()) {
            out.push(session(&i));
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Live publishers and viewers.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "live", params(PageQuery),
    responses((status = 200, body = Page<Session>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_sessions(State(api): State<Api>, caller: Caller, Params(q): Params<PageQuery>) -> Json<Page<Session>> {
    Json(Page::of(sessions(&api, &caller), &q, |s: &Session| &s.id))
}

/// Kicks a session: a publisher is disconnected (it may reconnect unless
/// its key is revoked); a viewer's connection is closed, and an HLS viewer
/// is refused for two minutes.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "live", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn kick_session(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let Some(s) = sessions(&api, &caller).into_iter().find(|s| s.id == id) else {
        return Err(ApiError::not_found(format!("no live session {id:?}")));
    };
    let kicked = match s.role.as_str() {
        // The registry revokes the publisher whatever its protocol; the
        // session's own cancel handle closes its connection.
        "publisher" => api.plane.sessions.kick(&s.id) | api.plane.registry.kick(&s.stream),
        _ => api.plane.sessions.kick(&s.id),
    };
    if !kicked {
        return Err(ApiError::not_found(format!("session {id:?} already ended")));
    }
    let _ = api.plane.db.commit(vec![super::audit_op(&caller.who(), "kick", "session", &id)]);
    Ok(StatusCode::NO_CONTENT)
}

/// Counters of one m-line of a WebRTC session.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebRtcTrack {
    /// The m-line's mid.
    pub mid: String,
    /// RTP packets received (WHIP) or sent (WHEP).
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// NACKs (sent for WHIP, received for WHEP).
    pub nacks: u64,
    /// Picture loss indications.
    pub plis: u64,
    /// Full intra requests.
    pub firs: u64,
}

/// A WHIP or WHEP session, live or recently closed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebRtcSession {
    /// Resource id (the last segment of its `Location`).
    pub id: String,
    /// `whip` or `whep`.
    pub kind: String,
    /// Stream.
    pub stream: String,
    /// Owning tenant, for configured streams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The client's HTTP address.
    pub peer: String,
    /// `connecting`, `connected` or `closed`.
    pub state: String,
    /// Start, Unix milliseconds.
    pub started_ms: i64,
    /// `udp` or `tcp`, once ICE selected a pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Bytes received from the peer.
    pub bytes_in: u64,
    /// Bytes sent to the peer.
    pub bytes_out: u64,
    /// Round-trip time from RTCP, milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Per m-line counters.
    pub tracks: Vec<WebRtcTrack>,
    /// What could not be carried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why it closed: `ICE failed: no candidate pair ...`, `DTLS failed: ...`,
    /// `closed by the client (DELETE)`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
    /// Its id in `/api/v1/sessions` (where it is counted and kicked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// WHIP publishers and WHEP viewers: the live ones, then the last 64 that
/// closed, each with why.
#[utoipa::path(get, path = "/api/v1/webrtc/sessions", tag = "live", params(PageQuery),
    responses((status = 200, body = Page<WebRtcSession>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_webrtc_sessions(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Json<Page<WebRtcSession>> {
    let mut out = Vec::new();
    if let Some(hub) = &api.webrtc {
        for s in hub.sessions().into_iter().chain(hub.closed()) {
            let tenant = api.plane.owned(&s.stream).ok().flatten().map(|o| o.stream.tenant.clone());
            if !caller.sees(tenant.as_deref()) {
                continue;
            }
            out.push(WebRtcSession {
                id: s.id,
                kind: s.kind.into(),
                stream: s.stream,
                tenant,
                peer: s.peer.to_string(),
                state: s.state,
                started_ms: s.started_ms,
                transport: s.transport,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                rtt_ms: s.rtt_ms,
                tracks: s
                    .tracks
                    .into_iter()
                    .map(|(mid, t)| WebRtcTrack {
                        mid,
                        packets: t.packets,
                        bytes: t.bytes,
                        nacks: t.nacks,
                        plis: t.plis,
                        firs: t.firs,
                    })
                    .collect(),
                notes: s.notes,
                closed_reason: s.closed_reason,
                session: s.session,
            });
        }
    }
    Json(Page::of(out, &q, |s: &WebRtcSession| &s.id))
}

/// The node's load, refreshed every second: for an external balancer.
#[utoipa::path(get, path = "/api/v1/load", tag = "live",
    responses((status = 200, body = LoadReport), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn load(State(api): State<Api>, caller: Caller) -> Result<Json<LoadReport>, ApiError> {
    caller.require_admin()?;
    Ok(Json((*api.plane.load()).clone()))
}

/// `?after=&limit=` on the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this sequence number.
    pub after: Option<u64>,
    /// At most this many (1..=1000, default 100).
    pub limit: Option<u32>,
}

/// One audit-log entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Sequence number.
    pub seq: u64,
    /// The entry: time, who, action, kind and id of the resource.
    #[schema(value_type = Object)]
    pub entry: serde_json::Value,
}

/// The audit log of state-changing calls, oldest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "live", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json")))]
async fn audit(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    caller.require_admin()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let rows = api.plane.db.store().audit_log(q.after.unwrap_or(0), limit)?;
    Ok(Json(
        rows.into_iter()
            .map(|(seq, bytes)| AuditEntry { seq, entry: serde_json::from_slice(&bytes).unwrap_or_default() })
            .collect(),
    ))
}

pub(super) fn unauthenticated(
    plane: Arc<ControlPlane>,
    webrtc: Option<Arc<tidecast_protocols::webrtc::WebRtcHub>>,
) -> Router {
    let metrics_plane = plane.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let plane = plane.clone();
                async move {
                    let store_ok = plane.db.store().scan(crate::store::Table::Meta, None, 1).is_ok();
                    if plane.is_ready() && store_ok {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let plane = metrics_plane.clone();
                let webrtc = webrtc.clone();
                async move {
                    if let Some(hub) = &webrtc {
                        plane.metrics.observe_webrtc(hub);
                    }
                    plane.metrics.observe_sessions(&plane.sessions);
                    let text = plane.metrics.render(&plane.load());
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
                }
            }),
        )
}
