//! The REST admin API, `/api/v1`, on its own listener.
//!
//! JSON in and out; errors are `application/problem+json` (RFC 9457) with
//! a stable `type` per error; lists are paginated with `limit` and `after`.
//! Every call authenticates with `Authorization: Bearer <api key>`: an
//! admin key sees everything, a tenant key only its tenant's resources
//! (another tenant's resource answers 404, as if it did not exist). Every
//! state-changing call is written to the audit log in the same commit as
//! the change. The OpenAPI document is generated from these handlers.

pub mod keys;
mod live;
mod problem;
pub mod profiles;
mod pushes;
mod streams;
mod tenants;
mod triggers;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

pub use keys::NewApiKey;
pub use problem::{ApiError, Body, Params, PathParams, Problem};
pub use streams::{NewStream, NewStreamKey, NewToken, StreamUpdate};
pub use tenants::{NewTenant, TenantUpdate};
pub use triggers::NewTrigger;

use crate::model::ApiKey;
use crate::plane::ControlPlane;
use crate::secrets::hash;
use crate::store::Table;

/// What the admin API serves from.
#[derive(Clone)]
pub struct Api {
    /// The control plane.
    pub plane: Arc<ControlPlane>,
    /// SRT link statistics, shown on SRT publishers' sessions.
    pub srt: Option<Arc<tidecast_protocols::srt::driver::SrtSessions>>,
    /// The WebRTC edge: WHIP/WHEP sessions and their statistics.
    pub webrtc: Option<Arc<tidecast_protocols::webrtc::WebRtcHub>>,
    /// The transcoder's profiles of the configuration file, and its check
    /// of new ones.
    pub profiles: Option<Arc<dyn profiles::ProfileCatalog>>,
    /// Restreams and recordings.
    pub pushes: Option<Arc<tidecast_protocols::push::PushManager>>,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The API key's id.
    pub key_id: String,
    /// `None` for an admin key.
    pub tenant: Option<String>,
}

impl Caller {
    /// Whether the key is an admin key.
    pub fn is_admin(&self) -> bool {
        self.tenant.is_none()
    }

    /// Fails unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this call needs an admin key"))
        }
    }

    /// Whether the caller may see resources of `tenant`.
    pub fn sees(&self, tenant: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(mine) => tenant == Some(mine.as_str()),
        }
    }

    /// The tenant a new resource belongs to: a tenant key's own (naming
    /// another tenant answers 404, as if it did not exist); an admin's choice.
    pub fn tenant_for(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        match (&self.tenant, requested) {
            (None, t) => Ok(t),
            (Some(mine), None) => Ok(Some(mine.clone())),
            (Some(mine), Some(t)) if *mine == t => Ok(Some(t)),
            (Some(_), Some(t)) => Err(ApiError::not_found(format!("no tenant {t:?}"))),
        }
    }

    /// Who, for the audit log.
    pub fn who(&self) -> String {
        match &self.tenant {
            None => format!("key:{}", self.key_id),
            Some(t) => format!("key:{} tenant:{t}", self.key_id),
        }
    }
}

impl FromRequestParts<Api> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Caller, ApiError> {
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let plane = &api.plane;
        if ip.is_some_and(|ip| plane.limiter.blocked(ip)) {
            plane.metrics.rate_limited.inc();
            return Err(ApiError::too_many("too many failed attempts from this address; try again later"));
        }
        let secret = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(secret) = secret else {
            return Err(ApiError::unauthorized("send an API key: Authorization: Bearer <key>"));
        };
        // Looked up by the key's SHA-256 (see `plane::ControlPlane::stream_for_key`).
        let rec: Option<ApiKey> = plane.db.get(Table::ApiKeys, &hash(secret))?;
        match rec {
            Some(k) => Ok(Caller { key_id: k.id, tenant: k.tenant }),
            None => {
                plane.metrics.auth_failures.with_label_values(&["api_key"]).inc();
                if let Some(ip) = ip {
                    plane.limiter.fail(ip);
                }
                Err(ApiError::unauthorized("unknown API key"))
            }
        }
    }
}

pub use crate::store::audit_op;

/// `?limit=&after=` on every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// At most this many items (1..=500, default 100).
    pub limit: Option<u32>,
    /// Continue after this item id (the previous page's `next`).
    pub after: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 500) as usize
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Pages `items` (sorted by `id`) per `q`.
    pub fn of(items: Vec<T>, q: &PageQuery, id: impl Fn(&T) -> &str) -> Page<T> {
        let limit = q.limit();
        let mut rest: Vec<T> = match &q.after {
            Some(after) => items.into_iter().filter(|t| id(t) > after.as_str()).collect(),
            None => items,
        };
        let next = (rest.len() > limit).then(|| id(&rest[limit - 1]).to_owned());
        rest.truncate(limit);
        Page { items: rest, next }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Tidecast admin API", description = "Tenants, keys, streams, playback tokens, triggers, transcode profiles, pushes, sessions and load of one Tidecast node."),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    components(schemas(Problem))
)]
struct ApiDoc;

fn documented() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tenants::routes())
        .merge(keys::routes())
        .merge(streams::routes())
        .merge(triggers::routes())
        .merge(live::routes())
        .merge(profiles::routes())
        .merge(pushes::routes())
}

/// The routes and the OpenAPI document they generate.
pub fn routes(api: Api) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = documented().split_for_parts();
    (router.with_state(api), finished(doc))
}

/// The generated document with what the macros cannot say.
fn finished(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    document_rate_limit(&mut doc);
    doc
}

/// Every operation that can answer 401 can also answer 429: the caller
/// extractor refuses an address after too many failed authentications
/// (see `plane::AuthLimiter`), before it looks at the key. The response
/// is the 401 one under another description.
fn document_rate_limit(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for item in doc.paths.paths.values_mut() {
        let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for op in ops.into_iter().flatten() {
            let map = &mut op.responses.responses;
            let Some(RefOr::T(unauthorized)) = map.get("401") else { continue };
            let mut limited = unauthorized.clone();
            limited.description = "Too many failed authentications from this address; try again later".into();
            map.entry("429".into()).or_insert(RefOr::T(limited));
        }
    }
}

/// The whole admin listener: `/api/v1/...`, `/api/v1/openapi.json`,
/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(api: Api) -> Router {
    let (plane, webrtc) = (api.plane.clone(), api.webrtc.clone());
    let (routes, doc) = routes(api.clone());
    let doc = Arc::new(doc);
    Router::new()
        .merge(routes)
        .route("/api/v1/openapi.json", get(move || async move { Json((*doc).clone()) }))
        .merge(live::unauthenticated(plane, webrtc))
        .fallback(|| async { ApiError::not_found("no such route") })
}

/// The OpenAPI document, for tests and `docs/openapi.json`.
pub fn openapi_json() -> String {
    finished(documented().split_for_parts().1).to_pretty_json().unwrap_or_default()
}

/// Store writes run off the async threads (redb fsyncs each commit).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::internal("a store task failed"))?
}
