//! `/api/v1/keys`: API keys. The secret is returned once, at creation, and
//! stored only as its hash.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit_op, blocking, Api, ApiError, Body, Caller, Page, PageQuery, Params, PathParams, Problem};
use crate::model::{ApiKey, Tenant};
use crate::secrets::{hash, now_ms, random_id};
use crate::store::{put, Op, Table};

pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(delete_key))
}

pub use crate::secrets::new_secret;

pub(super) fn rng_failed(_: getrandom::Error) -> ApiError {
    ApiError::internal("the system random number generator failed")
}

/// A new API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Scope the key to this tenant. Absent: an admin key (admin callers
    /// only); a tenant caller's keys are always scoped to its tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Free-form label.
    #[serde(default)]
    pub label: String,
}

/// A created key, with its secret (shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    /// The record.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret to send as `Authorization: Bearer`.
    pub secret: String,
}

/// Creates an API key.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", request_body = NewApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn create_key(
    State(api): State<Api>,
    caller: Caller,
    Body(new): Body<NewApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let tenant = caller.tenant_for(new.tenant)?;
    let secret = new_secret(if tenant.is_some() { "tck" } else { "tca" }).map_err(rng_failed)?;
    let key = ApiKey { id: random_id().map_err(rng_failed)?, tenant, label: new.label, created_ms: now_ms() };
    let db = api.plane.db.clone();
    let (rec, h) = (key.clone(), hash(&secret));
    blocking(move || {
        if let Some(t) = &rec.tenant {
            if db.get::<Tenant>(Table::Tenants, t)?.is_none() {
                return Err(ApiError::not_found(format!("no tenant {t:?}")));
            }
        }
        db.commit(vec![put(Table::ApiKeys, &h, &rec), audit_op(&caller.who(), "create", "api_key", &rec.id)])?;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { key, secret })))
}

fn visible(api: &Api, caller: &Caller) -> Result<Vec<(String, ApiKey)>, ApiError> {
    let all: Vec<(String, ApiKey)> = api.plane.db.all(Table::ApiKeys)?;
    let mut v: Vec<_> = all.into_iter().filter(|(_, k)| caller.sees(k.tenant.as_deref())).collect();
    v.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    Ok(v)
}

/// Lists API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", params(PageQuery),
    responses((status = 200, body = Page<ApiKey>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_keys(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    let keys = visible(&api, &caller)?.into_iter().map(|(_, k)| k).collect();
    Ok(Json(Page::of(keys, &q, |k: &ApiKey| &k.id)))
}

/// Revokes an API key.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_key(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let api2 = api.clone();
    blocking(move || {
        let Some((h, k)) = visible(&api2, &caller)?.into_iter().find(|(_, k)| k.id == id) else {
            return Err(ApiError::not_found(format!("no API key {id:?}")));
        };
        api2.plane
            .db
            .commit(vec![Op::Delete(Table::ApiKeys, h), audit_op(&caller.who(), "delete", "api_key", &k.id)])?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
