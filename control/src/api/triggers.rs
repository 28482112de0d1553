//! `/api/v1/triggers`: webhook handlers for MistServer's triggers.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::keys::rng_failed;
use super::{audit_op, blocking, Api, ApiError, Body, Caller, Page, PageQuery, Params, PathParams, Problem};
use crate::model::{PayloadFormat, Tenant, TriggerHandler};
use crate::secrets::{now_ms, random_id, random_token};
use crate::store::{put, Op, Table};
use crate::triggers::{Effect, Trigger};

pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new().routes(routes!(create_trigger, list_triggers)).routes(routes!(get_trigger, delete_trigger))
}

/// A new trigger handler.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTrigger {
    /// MistServer trigger name, e.g. `PUSH_REWRITE`.
    pub trigger: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Wait for the answer (only for triggers that gate or rewrite).
    #[serde(default)]
    pub blocking: bool,
    /// Milliseconds to wait (1 to 60000, default 5000).
    #[serde(default)]
    pub timeout_ms: Option<u32>,
    /// Answer used on failure or timeout, and for non-blocking handlers (default `true`).
    #[serde(default)]
    pub default_response: Option<String>,
    /// Stream filter: names, `!name`, `#tag`.
    #[serde(default)]
    pub streams: Vec<String>,
    /// `mist` (text/plain, one field per line) or `json`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// HMAC secret for the signature header; generated if absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Admin keys only: scope the handler to one tenant's streams.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Registers a trigger handler. The response shows the signing secret, once.
#[utoipa::path(post, path = "/api/v1/triggers", tag = "triggers", request_body = NewTrigger,
    responses((status = 201, body = TriggerHandler), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn create_trigger(
    State(api): State<Api>,
    caller: Caller,
    Body(new): Body<NewTrigger>,
) -> Result<(StatusCode, Json<TriggerHandler>), ApiError> {
    let Some(trigger) = Trigger::parse(&new.trigger) else {
        return Err(ApiError::bad_request(format!("unknown trigger {:?}", new.trigger)));
    };
    if !(new.url.starts_with("http://") || new.url.starts_with("https://")) || reqwest::Url::parse(&new.url).is_err() {
        return Err(ApiError::bad_request("url: an http:// or https:// URL"));
    }
    if new.blocking && trigger.effect() == Effect::Notify {
        return Err(ApiError::bad_request(format!("{} is a notification; it cannot block", trigger.name())));
    }
    let tenant = caller.tenant_for(new.tenant)?;
    if tenant.is_some() && !trigger.stream_specific() {
        return Err(ApiError::forbidden(format!("{} is node-wide; only an admin handler may take it", trigger.name())));
    }
    let timeout_ms = new.timeout_ms.unwrap_or(5000);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err(ApiError::bad_request("timeout_ms: 1 to 60000"));
    }
    let secret = match new.secret {
        Some(s) if !s.is_empty() => s,
        _ => random_token(32).map_err(rng_failed)?,
    };
    let h = TriggerHandler {
        id: random_id().map_err(rng_failed)?,
        tenant,
        trigger: trigger.name().into(),
        url: new.url,
        blocking: new.blocking,
        timeout_ms,
        default_response: new.default_response.unwrap_or_else(|| "true".into()),
        streams: new.streams,
        format: new.format,
        secret,
        created_ms: now_ms(),
    };
    let plane = api.plane.clone();
    let rec = h.clone();
    blocking(move || {
        if let Some(t) = &rec.tenant {
            if plane.db.get::<Tenant>(Table::Tenants, t)?.is_none() {
                return Err(ApiError::not_found(format!("no tenant {t:?}")));
            }
        }
        plane
            .db
            .commit(vec![put(Table::Triggers, &rec.id, &rec), audit_op(&caller.who(), "create", "trigger", &rec.id)])?;
        plane.reload_triggers()?;
        Ok(())
    })
    .await?;
    if !trigger.fires() {
        tracing::info!(trigger = trigger.name(), "trigger handler stored; Tidecast does not fire this trigger yet");
    }
    Ok((StatusCode::CREATED, Json(h)))
}

fn visible(api: &Api, caller: &Caller) -> Result<Vec<TriggerHandler>, ApiError> {
    let all: Vec<TriggerHandler> = api.plane.db.all(Table::Triggers)?.into_iter().map(|(_, h)| h).collect();
    Ok(all
        .into_iter()
        .filter(|h| caller.sees(h.tenant.as_deref()))
        .map(|h| TriggerHandler { secret: String::new(), ..h })
        .collect())
}

/// Lists trigger handlers (without their secrets).
#[utoipa::path(get, path = "/api/v1/triggers", tag = "triggers", params(PageQuery),
    responses((status = 200, body = Page<TriggerHandler>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_triggers(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<TriggerHandler>>, ApiError> {
    Ok(Json(Page::of(visible(&api, &caller)?, &q, |h: &TriggerHandler| &h.id)))
}

/// One trigger handler (without its secret).
#[utoipa::path(get, path = "/api/v1/triggers/{id}", tag = "triggers", params(("id" = String, Path)),
    responses((status = 200, body = TriggerHandler), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_trigger(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<TriggerHandler>, ApiError> {
    visible(&api, &caller)?
        .into_iter()
        .find(|h| h.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no trigger handler {id:?}")))
}

/// Removes a trigger handler.
#[utoipa::path(delete, path = "/api/v1/triggers/{id}", tag = "triggers", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_trigger(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let api2 = api.clone();
    blocking(move || {
        if !visible(&api2, &caller)?.iter().any(|h| h.id == id) {
            return Err(ApiError::not_found(format!("no trigger handler {id:?}")));
        }
        api2.plane
            .db
            .commit(vec![Op::Delete(Table::Triggers, id.clone()), audit_op(&caller.who(), "delete", "trigger", &id)])?;
        api2.plane.reload_triggers()?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
