//! `/api/v1/tenants`: admin keys manage tenants; a tenant key reads its own.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit_op, blocking, Api, ApiError, Body, Caller, Page, PageQuery, Params, PathParams, Problem};
use crate::model::{ApiKey, Quotas, StreamConfig, Tenant};
use crate::secrets::now_ms;
use crate::store::{put, Op, Table};

pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(create_tenant, list_tenants)).routes(routes!(
        get_tenant,
        update_tenant,
        delete_tenant
    ))
}

/// A tenant id: lowercase letters, digits and `-`, 1 to 64.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A new tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Identifier (`[a-z0-9-]`, 1 to 64).
    #[schema(pattern = "^[a-z0-9-]{1,64}$")]
    pub id: String,
    /// Display name (defaults to the id).
    #[serde(default)]
    pub name: Option<String>,
    /// Limits.
    #[serde(default)]
    pub quotas: Quotas,
    /// The transcode profile of its streams that select none.
    #[serde(default)]
    pub transcode_profile: Option<String>,
}

/// Changes to a tenant.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New limits (replace the old ones).
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// New default transcode profile of its streams (`""` clears it).
    #[serde(default)]
    pub transcode_profile: Option<String>,
}

/// Creates a tenant.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn create_tenant(
    State(api): State<Api>,
    caller: Caller,
    Body(new): Body<NewTenant>,
) -> Result<(StatusCode, Json<Tenant>), ApiError> {
    caller.require_admin()?;
    if !valid_id(&new.id) {
        return Err(ApiError::bad_request("tenant id: lowercase letters, digits and '-', 1 to 64"));
    }
    let t = Tenant {
        name: new.name.unwrap_or_else(|| new.id.clone()),
        id: new.id,
        quotas: new.quotas,
        transcode_profile: new.transcode_profile.filter(|p| !p.is_empty()),
        created_ms: now_ms(),
    };
    let db = api.plane.db.clone();
    let rec = t.clone();
    blocking(move || {
        if db.get::<Tenant>(Table::Tenants, &rec.id)?.is_some() {
            return Err(ApiError::conflict(format!("tenant {:?} exists", rec.id)));
        }
        db.commit(vec![put(Table::Tenants, &rec.id, &rec), audit_op(&caller.who(), "create", "tenant", &rec.id)])?;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// Lists tenants (a tenant key sees only its own).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(PageQuery),
    responses((status = 200, body = Page<Tenant>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_tenants(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<Tenant>>, ApiError> {
    let all: Vec<Tenant> = api.plane.db.all(Table::Tenants)?.into_iter().map(|(_, t)| t).collect();
    let mine = all.into_iter().filter(|t| caller.sees(Some(&t.id))).collect();
    Ok(Json(Page::of(mine, &q, |t: &Tenant| &t.id)))
}

fn load(api: &Api, caller: &Caller, id: &str) -> Result<Tenant, ApiError> {
    match api.plane.db.get::<Tenant>(Table::Tenants, id)? {
        Some(t) if caller.sees(Some(&t.id)) => Ok(t),
        _ => Err(ApiError::not_found(format!("no tenant {id:?}"))),
    }
}

/// One tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 200, body = Tenant), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_tenant(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Tenant>, ApiError> {
    load(&api, &caller, &id).map(Json)
}

/// Changes a tenant's name or quotas.
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    request_body = TenantUpdate,
    responses((status = 200, body = Tenant), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn update_tenant(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(up): Body<TenantUpdate>,
) -> Result<Json<Tenant>, ApiError> {
    caller.require_admin()?;
    let db = api.plane.db.clone();
    let api2 = api.clone();
    blocking(move || {
        let mut t = load(&api2, &caller, &id)?;
        if let Some(n) = up.name {
            t.name = n;
        }
        if let Some(q) = up.quotas {
            t.quotas = q;
        }
        if let Some(p) = up.transcode_profile {
            t.transcode_profile = Some(p).filter(|p| !p.is_empty());
        }
        db.commit(vec![put(Table::Tenants, &t.id, &t), audit_op(&caller.who(), "update", "tenant", &t.id)])?;
        Ok(Json(t))
    })
    .await
}

/// Deletes a tenant that owns no streams; its API keys and triggers go with it.
#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn delete_tenant(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    let plane = api.plane.clone();
    let api2 = api.clone();
    blocking(move || {
        let t = load(&api2, &caller, &id)?;
        let db = &plane.db;
        if db.all::<StreamConfig>(Table::Streams)?.iter().any(|(_, s)| s.tenant == t.id) {
            return Err(ApiError::conflict("the tenant still owns streams; delete them first"));
        }
        let mut ops = vec![Op::Delete(Table::Tenants, t.id.clone())];
        for (h, k) in db.all::<ApiKey>(Table::ApiKeys)? {
            if k.tenant.as_deref() == Some(&t.id) {
                ops.push(Op::Delete(Table::ApiKeys, h));
            }
        }
        for (k, h) in db.all::<crate::model::TriggerHandler>(Table::Triggers)? {
            if h.tenant.as_deref() == Some(&t.id) {
                ops.push(Op::Delete(Table::Triggers, k));
            }
        }
        ops.push(audit_op(&caller.who(), "delete", "tenant", &t.id));
        db.commit(ops)?;
        plane.reload_triggers()?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
