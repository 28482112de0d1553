//! `/api/v1/pushes`: restreams and recordings of live streams (MistServer's
//! `push_start`, `push_stop` and `push_list`). A push reads one live stream
//! and ends with it; a stream's `push_targets` start with the stream, and
//! this API starts, stops and lists pushes on demand. Tenant keys see and
//! drive only their own streams' pushes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tidecast_protocols::push::{Origin, PushError, PushInfo, PushManager};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{audit_op, blocking, Api, ApiError, Body, Caller, Page, PageQuery, Params, PathParams, Problem};
use crate::model::{PushRule, Tenant};
use crate::secrets::{now_ms, random_id};
use crate::store::{put, Op, Table};

pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(start_push, list_pushes))
        .routes(routes!(get_push, stop_push))
        .routes(routes!(create_rule, list_rules))
        .routes(routes!(delete_rule))
}

/// A push to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPush {
    /// The live stream to push.
    pub stream: String,
    /// Where to: `rtmp://HOST[:PORT]/APP/NAME`, or a recording such as
    /// `$stream/$datetime.flv` (under the recording directory). `$stream`,
    /// `$tenant`, `$datetime` and `$segmentCounter` are filled in.
    #[schema(max_length = 2048)]
    pub target: String,
}

/// A push and its figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct Push {
    /// Its id on this node (digits, zero-padded so that ids sort as
    /// numbers).
    pub id: String,
    /// The stream it reads.
    pub stream: String,
    /// The stream's tenant.
    pub tenant: Option<String>,
    /// The target, variables filled in.
    pub target: String,
    /// `rtmp`, `srt`, `whip` or `file` (a recording, uploaded or not).
    pub kind: String,
    /// `stream` (its `push_targets`), `rule` (an auto-push rule) or `api`.
    pub origin: String,
    /// `connecting`, `live`, `waiting` (to reconnect), `stopped` or `failed`.
    pub state: String,
    /// Media bytes sent or written.
    pub bytes: u64,
    /// Failures after which it connected again, or tries to.
    pub reconnects: u64,
    /// Frames skipped because the target was too slow.
    pub frames_skipped: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// Files uploaded (`s3://` targets).
    pub uploads: u64,
    /// When it started, Unix seconds.
    pub started_at: u64,
}

impl From<PushInfo> for Push {
    fn from(p: PushInfo) -> Push {
        Push {
            id: format!("{:010}", p.id),
            stream: p.stream,
            tenant: p.tenant,
            target: p.target,
            kind: p.kind.into(),
            origin: p.origin.as_str().into(),
            state: p.state.as_str().into(),
            bytes: p.bytes,
            reconnects: p.reconnects,
            frames_skipped: p.frames_skipped,
            last_error: p.last_error,
            uploads: p.uploads,
            started_at: p.started_at,
        }
    }
}

fn manager(api: &Api) -> Result<&std::sync::Arc<PushManager>, ApiError> {
    api.pushes.as_ref().ok_or_else(|| ApiError::not_found("pushes are not available on this node"))
}

/// Starts pushing a live stream to a target.
#[utoipa::path(post, path = "/api/v1/pushes", tag = "pushes", request_body = NewPush,
    responses((status = 201, body = Push), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn start_push(
    State(api): State<Api>,
    caller: Caller,
    Body(new): Body<NewPush>,
) -> Result<(StatusCode, Json<Push>), ApiError> {
    let pushes = manager(&api)?;
    // A tenant may push only its own streams; any other name is unknown to it.
    let owned = api.plane.owned(&new.stream)?;
    let tenant = owned.as_ref().map(|o| o.stream.tenant.clone());
    if !caller.is_admin() && (tenant.is_none() || !caller.sees(tenant.as_deref())) {
        return Err(ApiError::not_found(format!("no live stream {:?}", new.stream)));
    }
    match pushes.start(&new.stream, &new.target, Origin::Api, tenant) {
        Ok(p) => Ok((StatusCode::CREATED, Json(p.into()))),
        Err(PushError::NotLive(s)) => Err(ApiError::not_found(format!("no live stream {s:?}"))),
        Err(PushError::Target(e)) => Err(ApiError::bad_request(e.to_string())),
    }
}

fn visible(api: &Api, caller: &Caller) -> Result<Vec<Push>, ApiError> {
    Ok(manager(api)?.list().into_iter().filter(|p| caller.sees(p.tenant.as_deref())).map(Push::from).collect())
}

/// Lists pushes: running ones, and those that ended in the last five minutes.
#[utoipa::path(get, path = "/api/v1/pushes", tag = "pushes", params(PageQuery),
    responses((status = 200, body = Page<Push>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn list_pushes(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<Push>>, ApiError> {
    let mut all = visible(&api, &caller)?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(Page::of(all, &q, |p: &Push| &p.id)))
}

fn find(api: &Api, caller: &Caller, id: &str) -> Result<Push, ApiError> {
    visible(api, caller)?.into_iter().find(|p| p.id == id).ok_or_else(|| ApiError::not_found(format!("no push {id:?}")))
}

/// One push.
#[utoipa::path(get, path = "/api/v1/pushes/{id}", tag = "pushes", params(("id" = String, Path)),
    responses((status = 200, body = Push), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_push(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Push>, ApiError> {
    Ok(Json(find(&api, &caller, &id)?))
}

/// Stops a push (a recording closes its file).
#[utoipa::path(delete, path = "/api/v1/pushes/{id}", tag = "pushes", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn stop_push(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let p = find(&api, &caller, &id)?;
    let n: u64 = p.id.parse().map_err(|_| ApiError::not_found(format!("no push {id:?}")))?;
    manager(&api)?.stop(n);
    Ok(StatusCode::NO_CONTENT)
}

/// A new auto-push rule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPushRule {
    /// Scope the rule to this tenant's streams. Absent: node-wide (admin
    /// callers only); a tenant caller's rules are always its own.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Which streams: exact names, `#tag`, `!name` to exclude; empty: all.
    #[serde(default)]
    pub streams: Vec<String>,
    /// The target template, as for `POST /api/v1/pushes`.
    #[schema(max_length = 2048)]
    pub target: String,
}

/// Most rules a node keeps.
const MAX_RULES: usize = 1000;

/// Creates an auto-push rule: from now on, every matching stream that goes
/// live is pushed to its target until it ends.
#[utoipa::path(post, path = "/api/v1/push_rules", tag = "pushes", request_body = NewPushRule,
    responses((status = 201, body = PushRule), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn create_rule(
    State(api): State<Api>,
    caller: Caller,
    Body(new): Body<NewPushRule>,
) -> Result<(StatusCode, Json<PushRule>), ApiError> {
    let tenant = caller.tenant_for(new.tenant)?;
    manager(&api)?.check(&new.target).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if new.streams.len() > 100 || new.streams.iter().any(|f| f.is_empty() || f.len() > 200) {
        return Err(ApiError::bad_request("streams: at most 100 filters of 1 to 200 characters"));
    }
    let rule = PushRule {
        id: random_id().map_err(super::keys::rng_failed)?,
        tenant,
        streams: new.streams,
        target: new.target,
        created_ms: now_ms(),
    };
    let db = api.plane.db.clone();
    let rec = rule.clone();
    blocking(move || {
        if let Some(t) = &rec.tenant {
            if db.get::<Tenant>(Table::Tenants, t)?.is_none() {
                return Err(ApiError::not_found(format!("no tenant {t:?}")));
            }
        }
        if db.all::<PushRule>(Table::PushRules)?.len() >= MAX_RULES {
            return Err(ApiError::conflict(format!("this node keeps at most {MAX_RULES} push rules")));
        }
        db.commit(vec![put(Table::PushRules, &rec.id, &rec), audit_op(&caller.who(), "create", "push_rule", &rec.id)])?;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

fn visible_rules(api: &Api, caller: &Caller) -> Result<Vec<PushRule>, ApiError> {
    let mut all: Vec<PushRule> = api
        .plane
        .db
        .all::<PushRule>(Table::PushRules)?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| caller.sees(r.tenant.as_deref()))
        .collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(all)
}

/// Lists auto-push rules.
#[utoipa::path(get, path = "/api/v1/push_rules", tag = "pushes", params(PageQuery),
    responses((status = 200, body = Page<PushRule>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_rules(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<PushRule>>, ApiError> {
    Ok(Json(Page::of(visible_rules(&api, &caller)?, &q, |r: &PushRule| &r.id)))
}

/// Deletes an auto-push rule (pushes it started go on until their streams
/// end, or until stopped).
#[utoipa::path(delete, path = "/api/v1/push_rules/{id}", tag = "pushes", params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_rule(
    State(api): State<Api>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let api2 = api.clone();
    blocking(move || {
        let Some(r) = visible_rules(&api2, &caller)?.into_iter().find(|r| r.id == id) else {
            return Err(ApiError::not_found(format!("no push rule {id:?}")));
        };
        api2.plane.db.commit(vec![
            Op::Delete(Table::PushRules, r.id.clone()),
            audit_op(&caller.who(), "delete", "push_rule", &r.id),
        ])?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
