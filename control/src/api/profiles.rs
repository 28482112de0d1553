//! `/api/v1/transcode/profiles`: named ladder profiles. Admin keys make,
//! replace and delete them; every key lists them (a tenant picks one for
//! its streams). Profiles of the configuration file (and the built-in
//! `default`) are listed beside them and are read-only here. A changed
//! profile applies to ladders started after the change; running ladders
//! keep theirs until their stream starts again.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit_op, blocking, Api, ApiError, Body, Caller, Page, PageQuery, Params, PathParams, Problem};
use crate::model::{LadderProfile, NamedProfile};
use crate::store::{put, Op, Table};

/// What the API asks of the transcoder about profiles.
pub trait ProfileCatalog: Send + Sync {
    /// The profiles of the configuration file, the built-in `default` among them.
    fn configured(&self) -> Vec<(String, LadderProfile)>;
    /// Whether a ladder could run `profile`; the reason when not.
    fn check(&self, profile: &LadderProfile) -> Result<(), String>;
}

pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(list_profiles)).routes(routes!(get_profile, put_profile, delete_profile))
}

fn configured(api: &Api) -> Vec<(String, LadderProfile)> {
    api.profiles.as_ref().map(|c| c.configured()).unwrap_or_default()
}

fn catalog(api: &Api) -> Option<Arc<dyn ProfileCatalog>> {
    api.profiles.clone()
}

/// Every profile, by name.
fn everything(api: &Api) -> Result<Vec<NamedProfile>, ApiError> {
    let mut all: Vec<NamedProfile> = configured(api)
        .into_iter()
        .map(|(name, profile)| NamedProfile { name, source: "config".into(), profile })
        .collect();
    for (name, profile) in api.plane.db.all::<LadderProfile>(Table::Profiles)? {
        if !all.iter().any(|p| p.name == name) {
            all.push(NamedProfile { name, source: "api".into(), profile });
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Lists the ladder profiles streams can select.
#[utoipa::path(get, path = "/api/v1/transcode/profiles", tag = "transcode", params(PageQuery),
    responses((status = 200, body = Page<NamedProfile>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_profiles(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<NamedProfile>>, ApiError> {
    Ok(Json(Page::of(everything(&api)?, &q, |p: &NamedProfile| &p.name)))
}

/// One ladder profile.
#[utoipa::path(get, path = "/api/v1/transcode/profiles/{name}", tag = "transcode", params(("name" = String, Path)),
    responses((status = 200, body = NamedProfile), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_profile(
    State(api): State<Api>,
    _caller: Caller,
    PathParams(name): PathParams<String>,
) -> Result<Json<NamedProfile>, ApiError> {
    everything(&api)?
        .into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no transcode profile {name:?}")))
}

/// Makes or replaces a ladder profile; it applies to ladders started from
/// now on.
#[utoipa::path(put, path = "/api/v1/transcode/profiles/{name}", tag = "transcode", params(("name" = String, Path)),
    request_body = LadderProfile,
    responses((status = 200, description = "Replaced", body = NamedProfile), (status = 201, description = "Made", body = NamedProfile),
        (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn put_profile(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Body(profile): Body<LadderProfile>,
) -> Result<(StatusCode, Json<NamedProfile>), ApiError> {
    caller.require_admin()?;
    if !super::tenants::valid_id(&name) {
        return Err(ApiError::bad_request("profile name: lowercase letters, digits and '-', 1 to 64"));
    }
    if configured(&api).iter().any(|(n, _)| *n == name) {
        return Err(ApiError::conflict(format!(
            "profile {name:?} is defined in the configuration file; change it there"
        )));
    }
    if let Some(c) = catalog(&api) {
        c.check(&profile).map_err(|why| ApiError::bad_request(format!("profile {name:?}: {why}")))?;
    }
    let db = api.plane.db.clone();
    let (key, rec) = (name.clone(), profile.clone());
    let existed = blocking(move || {
        let existed = db.get::<LadderProfile>(Table::Profiles, &key)?.is_some();
        let action = if existed { "update" } else { "create" };
        db.commit(vec![put(Table::Profiles, &key, &rec), audit_op(&caller.who(), action, "transcode_profile", &key)])?;
        Ok(existed)
    })
    .await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(NamedProfile { name, source: "api".into(), profile })))
}

/// Deletes a ladder profile made through the API. Streams that select it
/// get no ladder from their next start (refused, counted and logged).
#[utoipa::path(delete, path = "/api/v1/transcode/profiles/{name}", tag = "transcode", params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn delete_profile(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    if configured(&api).iter().any(|(n, _)| *n == name) {
        return Err(ApiError::conflict(format!("profile {name:?} is defined in the configuration file")));
    }
    let db = api.plane.db.clone();
    blocking(move || {
        if db.get::<LadderProfile>(Table::Profiles, &name)?.is_none() {
            return Err(ApiError::not_found(format!("no transcode profile {name:?}")));
        }
        db.commit(vec![
            Op::Delete(Table::Profiles, name.clone()),
            audit_op(&caller.who(), "delete", "transcode_profile", &name),
        ])?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
