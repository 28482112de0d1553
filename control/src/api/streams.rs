//! `/api/v1/streams`: stream configuration, stream keys (rotation and
//! expiry) and playback tokens.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::keys::{new_secret, rng_failed};
use super::{audit_op, blocking, Api, ApiError, Body, Caller, Page, PageQuery, Params, PathParams, Problem};
use crate::auth::valid_stream_name;
use crate::model::{StreamConfig, StreamKey, Tenant};
use crate::secrets::{hash, now_ms, random_id};
use crate::store::{put, Op, Table};
use crate::tokens::Claims;
use crate::triggers::{Scope, Trigger};

pub(super) fn routes() -> OpenApiRouter<Api> {
    OpenApiRouter::new()
        .routes(routes!(create_stream, list_streams))
        .routes(routes!(get_stream, update_stream, delete_stream))
        .routes(routes!(create_stream_key, list_stream_keys))
        .routes(routes!(delete_stream_key))
        .routes(routes!(create_token))
        .routes(routes!(stream_live))
}

/// A new stream.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStream {
    /// Name used in playback URLs (letters, digits, `_ - . +`; up to 128).
    #[schema(pattern = "^[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,127}$")]
    pub name: String,
    /// Owning tenant; required with an admin key, implied by a tenant key.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Whether playback needs a token.
    #[serde(default)]
    pub playback_token_required: bool,
    /// Tags for trigger filters.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How far back viewers may rewind, seconds (1 to 86400): the LL-HLS
    /// and LL-DASH window while the stream is live; applies from its next
    /// start. Unset: the node's `hls.dvr_seconds`.
    #[serde(default)]
    pub buffer_secs: Option<u32>,
    /// Restream and recording targets, started with the stream.
    #[serde(default)]
    pub push_targets: Vec<String>,
    /// The transcode profile (a ladder) the stream gets.
    #[serde(default)]
    pub transcode_profile: Option<String>,
}

/// Changes to a stream (absent fields stay as they are).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamUpdate {
    /// Whether playback needs a token.
    #[serde(default)]
    pub playback_token_required: Option<bool>,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// How far back viewers may rewind, seconds (1 to 86400); from the
    /// stream's next start.
    #[serde(default)]
    pub buffer_secs: Option<u32>,
    /// Restream targets.
    #[serde(default)]
    pub push_targets: Option<Vec<String>>,
    /// Transcode profile.
    #[serde(default)]
    pub transcode_profile: Option<String>,
}

fn config_json(s: &StreamConfig) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Creates a stream (STREAM_ADD may refuse it).
#[utoipa::path(post, path = "/api/v1/streams", tag = "streams", request_body = NewStream,
    responses((status = 201, body = StreamConfig), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn create_stream(
    State(api): State<Api>,
    caller: Caller,
    Body(new): Body<NewStream>,
) -> Result<(StatusCode, Json<StreamConfig>), ApiError> {
    if !valid_stream_name(&new.name) {
        return Err(ApiError::bad_request(
            "stream name: letters, digits, '_' '-' '.' '+', up to 128, not starting with '.'",
        ));
    }
    if let Some(b) = new.buffer_secs {
        check_buffer_secs(b)?;
    }
    let tenant = caller
        .tenant_for(new.tenant)?
        .ok_or_else(|| ApiError::bad_request("an admin key must name the stream's tenant"))?;
    let s = StreamConfig {
        name: new.name,
        tenant,
        playback_token_required: new.playback_token_required,
        tags: new.tags,
        buffer_secs: new.buffer_secs,
        push_targets: new.push_targets,
        transcode_profile: new.transcode_profile,
        created_ms: now_ms(),
    };
    let db = api.plane.db.clone();
    let rec = s.clone();
    blocking(move || {
        if db.get::<Tenant>(Table::Tenants, &rec.tenant)?.is_none() {
            return Err(ApiError::not_found(format!("no tenant {:?}", rec.tenant)));
        }
        if db.get::<StreamConfig>(Table::Streams, &rec.name)?.is_some() {
            // Names are global (they are URLs); say so without saying whose.
            return Err(ApiError::conflict(format!("stream name {:?} is taken", rec.name)));
        }
        Ok(())
    })
    .await?;
    let fields = vec![s.name.clone(), config_json(&s)];
    if !api.plane.triggers.allow(Trigger::StreamAdd, Some(&Scope::of(&s)), fields).await {
        return Err(ApiError::refused("STREAM_ADD refused the new stream"));
    }
    let db = api.plane.db.clone();
    let rec = s.clone();
    blocking(move || {
        db.commit(vec![put(Table::Streams, &rec.name, &rec), audit_op(&caller.who(), "create", "stream", &rec.name)])?;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

fn load(api: &Api, caller: &Caller, name: &str) -> Result<StreamConfig, ApiError> {
    match api.plane.db.get::<StreamConfig>(Table::Streams, name)? {
        Some(s) if caller.sees(Some(&s.tenant)) => Ok(s),
        _ => Err(ApiError::not_found(format!("no stream {name:?}"))),
    }
}

/// Lists streams.
#[utoipa::path(get, path = "/api/v1/streams", tag = "streams", params(PageQuery),
    responses((status = 200, body = Page<StreamConfig>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json")))]
async fn list_streams(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<StreamConfig>>, ApiError> {
    let all: Vec<StreamConfig> = api.plane.db.all(Table::Streams)?.into_iter().map(|(_, s)| s).collect();
    let mine = all.into_iter().filter(|s| caller.sees(Some(&s.tenant))).collect();
    Ok(Json(Page::of(mine, &q, |s: &StreamConfig| &s.name)))
}

/// One stream.
#[utoipa::path(get, path = "/api/v1/streams/{name}", tag = "streams", params(("name" = String, Path)),
    responses((status = 200, body = StreamConfig), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn get_stream(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> Result<Json<StreamConfig>, ApiError> {
    load(&api, &caller, &name).map(Json)
}

/// What a stream is doing now.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamLive {
    /// Stream name.
    pub name: String,
    /// Whether it is live (published, or in its reconnect grace period).
    pub live: bool,
    /// Ingest bitrate over the last second, bits per second.
    pub bitrate_in_bps: u64,
    /// Viewers by protocol.
    pub viewers: BTreeMap<String, u64>,
    /// Frames slow viewers skipped so far.
    pub frames_skipped: u64,
    /// Media payload bytes held for the stream now, by holder: `ring` (the
    /// frame ring), `cmaf` (LL-HLS segments and parts), `ts` (the MPEG-TS
    /// ring), `whep` (the fast-start GOP). An ended stream's outputs show
    /// here until their linger ends.
    pub buffers: BTreeMap<String, u64>,
    /// The sum of `buffers` (holders may share bytes: an upper bound).
    pub buffered_bytes: u64,
    /// Its transcoding ladder, when it has one: rungs, encoder in use,
    /// frames in and out, drops, CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transcode: Option<crate::load::LadderStatus>,
    /// Its tracks now: the source's and its renditions'.
    pub tracks: Vec<LiveTrack>,
    /// Its DVR window, once packaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dvr: Option<crate::load::DvrWindow>,
    /// Its newest sprite sheet, once one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnails: Option<crate::load::ThumbnailState>,
}

/// One track of a live stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveTrack {
    /// Its id in the stream.
    pub id: u32,
    /// `video` or `audio`.
    pub kind: String,
    /// `h264`, `aac`, `opus`... (the internal framing's names).
    pub codec: String,
    /// RFC 6381 codec string.
    pub codec_string: String,
    /// Picture size (video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Picture size (video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Frames per second, when the ingest knows it (video).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_rate: Option<f64>,
    /// Samples per second (audio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Channels (audio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Nominal bitrate, bits per second, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u32>,
}

/// A stream's live state: ingest, viewers and the memory its media holds.
#[utoipa::path(get, path = "/api/v1/streams/{name}/live", tag = "streams", params(("name" = String, Path)),
    responses((status = 200, body = StreamLive), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn stream_live(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> Result<Json<StreamLive>, ApiError> {
    // A configured stream the caller sees; an admin also sees streams
    // published without a record (open mode, the config file).
    match api.plane.db.get::<StreamConfig>(Table::Streams, &name)? {
        Some(s) if caller.sees(Some(&s.tenant)) => {}
        None if caller.is_admin() => {}
        _ => return Err(ApiError::not_found(format!("no stream {name:?}"))),
    }
    let report = api.plane.load();
    let now = report.per_stream.iter().find(|s| s.name == name);
    let buffers: BTreeMap<String, u64> = api
        .plane
        .registry
        .ledger()
        .snapshot()
        .into_iter()
        .filter(|h| h.stream == name)
        .map(|h| (h.holder.to_owned(), h.bytes))
        .collect();
    Ok(Json(StreamLive {
        live: api.plane.registry.get(&name).is_some(),
        bitrate_in_bps: now.map_or(0, |s| s.bitrate_in_bps),
        viewers: now.map(|s| s.viewers.clone()).unwrap_or_default(),
        frames_skipped: now.map_or(0, |s| s.frames_skipped),
        buffered_bytes: buffers.values().sum(),
        buffers,
        transcode: report.transcode.ladders.iter().find(|l| l.stream == name).cloned(),
        tracks: api.plane.registry.get(&name).map(|s| s.tracks().iter().map(live_track).collect()).unwrap_or_default(),
        dvr: now.and_then(|s| s.dvr.clone()),
        thumbnails: now.and_then(|s| s.thumbnails.clone()),
        name,
    }))
}

fn live_track(t: &tidecast_media::Track) -> LiveTrack {
    let video = t.kind() == tidecast_media::MediaKind::Video;
    let i = &t.info;
    LiveTrack {
        id: t.id,
        kind: if video { "video" } else { "audio" }.to_owned(),
        codec: t.codec.name().to_owned(),
        codec_string: i.codec_string.clone(),
        width: video.then_some(i.width).filter(|w| *w > 0),
        height: video.then_some(i.height).filter(|h| *h > 0),
        frame_rate: i.frame_rate.filter(|_| video),
        sample_rate: (!video).then_some(i.sample_rate).filter(|r| *r > 0),
        channels: (!video).then_some(i.channels).filter(|c| *c > 0),
        bitrate: i.bitrate,
    }
}

/// Changes a stream (STREAM_CONFIG may refuse it).
#[utoipa::path(patch, path = "/api/v1/streams/{name}", tag = "streams", params(("name" = String, Path)),
    request_body = StreamUpdate,
    responses((status = 200, body = StreamConfig), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn update_stream(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Body(up): Body<StreamUpdate>,
) -> Result<Json<StreamConfig>, ApiError> {
    let mut s = load(&api, &caller, &name)?;
    if let Some(v) = up.playback_token_required {
        s.playback_token_required = v;
    }
    if let Some(v) = up.tags {
        s.tags = v;
    }
    if let Some(b) = up.buffer_secs {
        check_buffer_secs(b)?;
        s.buffer_secs = up.buffer_secs;
    }
    if let Some(v) = up.push_targets {
        s.push_targets = v;
    }
    if up.transcode_profile.is_some() {
        s.transcode_profile = up.transcode_profile;
    }
    let fields = vec![s.name.clone(), config_json(&s)];
    if !api.plane.triggers.allow(Trigger::StreamConfig, Some(&Scope::of(&s)), fields).await {
        return Err(ApiError::refused("STREAM_CONFIG refused the change"));
    }
    let db = api.plane.db.clone();
    let rec = s.clone();
    blocking(move || {
        db.commit(vec![put(Table::Streams, &rec.name, &rec), audit_op(&caller.who(), "update", "stream", &rec.name)])?;
        Ok(())
    })
    .await?;
    Ok(Json(s))
}

/// Deletes a stream and its keys (STREAM_REMOVE may refuse it). A live
/// publisher is disconnected.
#[utoipa::path(delete, path = "/api/v1/streams/{name}", tag = "streams", params(("name" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
async fn delete_stream(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    let s = load(&api, &caller, &name)?;
    if !api.plane.triggers.allow(Trigger::StreamRemove, Some(&Scope::of(&s)), vec![s.name.clone()]).await {
        return Err(ApiError::refused("STREAM_REMOVE refused the removal"));
    }
    let db = api.plane.db.clone();
    let rec = s.clone();
    blocking(move || {
        let mut ops = vec![Op::Delete(Table::Streams, rec.name.clone())];
        for (h, k) in db.all::<StreamKey>(Table::StreamKeys)? {
            if k.stream == rec.name {
                ops.push(Op::Delete(Table::StreamKeys, h));
            }
        }
        ops.push(audit_op(&caller.who(), "delete", "stream", &rec.name));
        db.commit(ops)?;
        Ok(())
    })
    .await?;
    api.plane.registry.kick(&s.name);
    Ok(StatusCode::NO_CONTENT)
}

/// A new stream key.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStreamKey {
    /// Seconds until the key stops working; absent: never.
    #[serde(default)]
    pub expires_in_secs: Option<u32>,
    /// Rotation: the stream's other keys stop working after this many
    /// seconds (0: at once), so a publisher can move to the new key.
    #[serde(default)]
    pub retire_others_after_secs: Option<u32>,
}

/// A created stream key, with its secret (shown this once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedStreamKey {
    /// The record.
    #[serde(flatten)]
    pub record: StreamKey,
    /// The key: publish with `rtmp://HOST/live/KEY` or SRT streamid `NAME?key=KEY`.
    pub key: String,
}

/// Creates a stream key, optionally retiring the others (rotation).
#[utoipa::path(post, path = "/api/v1/streams/{name}/keys", tag = "streams", params(("name" = String, Path)),
    request_body = NewStreamKey,
    responses((status = 201, body = CreatedStreamKey), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn create_stream_key(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Body(new): Body<NewStreamKey>,
) -> Result<(StatusCode, Json<CreatedStreamKey>), ApiError> {
    let s = load(&api, &caller, &name)?;
    let key = new_secret("sk").map_err(rng_failed)?;
    let now = now_ms();
    let record = StreamKey {
        id: random_id().map_err(rng_failed)?,
        stream: s.name.clone(),
        created_ms: now,
        expires_ms: new.expires_in_secs.map(|e| now + i64::from(e) * 1000),
    };
    let db = api.plane.db.clone();
    let (rec, h) = (record.clone(), hash(&key));
    blocking(move || {
        let mut ops = vec![put(Table::StreamKeys, &h, &rec)];
        if let Some(after) = new.retire_others_after_secs {
            let until = now + i64::from(after) * 1000;
            for (kh, mut k) in db.all::<StreamKey>(Table::StreamKeys)? {
                if k.stream == rec.stream && k.expires_ms.is_none_or(|e| e > until) {
                    k.expires_ms = Some(until);
                    ops.push(put(Table::StreamKeys, &kh, &k));
                }
            }
        }
        ops.push(audit_op(&caller.who(), "create", "stream_key", &format!("{}/{}", rec.stream, rec.id)));
        db.commit(ops)?;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedStreamKey { record, key })))
}

fn stream_keys(api: &Api, stream: &str) -> Result<Vec<(String, StreamKey)>, ApiError> {
    let mut v: Vec<_> =
        api.plane.db.all::<StreamKey>(Table::StreamKeys)?.into_iter().filter(|(_, k)| k.stream == stream).collect();
    v.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    Ok(v)
}

/// Lists a stream's keys (never the keys themselves).
#[utoipa::path(get, path = "/api/v1/streams/{name}/keys", tag = "streams", params(("name" = String, Path), PageQuery),
    responses((status = 200, body = Page<StreamKey>), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn list_stream_keys(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Params(q): Params<PageQuery>,
) -> Result<Json<Page<StreamKey>>, ApiError> {
    let s = load(&api, &caller, &name)?;
    let keys = stream_keys(&api, &s.name)?.into_iter().map(|(_, k)| k).collect();
    Ok(Json(Page::of(keys, &q, |k: &StreamKey| &k.id)))
}

/// Revokes a stream key at once.
#[utoipa::path(delete, path = "/api/v1/streams/{name}/keys/{id}", tag = "streams",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn delete_stream_key(
    State(api): State<Api>,
    caller: Caller,
    PathParams((name, id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let s = load(&api, &caller, &name)?;
    let api2 = api.clone();
    blocking(move || {
        let Some((h, k)) = stream_keys(&api2, &s.name)?.into_iter().find(|(_, k)| k.id == id) else {
            return Err(ApiError::not_found(format!("no key {id:?} on stream {:?}", s.name)));
        };
        api2.plane.db.commit(vec![
            Op::Delete(Table::StreamKeys, h),
            audit_op(&caller.who(), "delete", "stream_key", &format!("{}/{}", k.stream, k.id)),
        ])?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// A playback token request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Lifetime in seconds (1 to 31 days; default 1 hour).
    #[serde(default)]
    pub expires_in_secs: Option<u32>,
    /// Bind the token to this viewer address.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
}

/// A playback token.
#[derive(Debug, Serialize, ToSchema)]
pub struct Token {
    /// The token: `?token=` on playback URLs, or `Authorization: Bearer`.
    pub token: String,
    /// Expiry, Unix milliseconds.
    pub expires_ms: i64,
    /// The HLS playback path with the token.
    pub hls_path: String,
}

/// Signs a playback token for a stream.
#[utoipa::path(post, path = "/api/v1/streams/{name}/tokens", tag = "streams", params(("name" = String, Path)),
    request_body = NewToken,
    responses((status = 201, body = Token), (status = 400, body = Problem, content_type = "application/problem+json"), (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
async fn create_token(
    State(api): State<Api>,
    caller: Caller,
    PathParams(name): PathParams<String>,
    Body(new): Body<NewToken>,
) -> Result<(StatusCode, Json<Token>), ApiError> {
    let s = load(&api, &caller, &name)?;
    let ttl = i64::from(new.expires_in_secs.unwrap_or(3600));
    if !(1..=31 * 86_400).contains(&ttl) {
        return Err(ApiError::bad_request("expires_in_secs: 1 to 2678400"));
    }
    let expires_s = now_ms() / 1000 + ttl;
    let token = api.plane.tokens.sign(&Claims { s: s.name.clone(), e: expires_s, ip: new.ip });
    let hls_path = format!("/hls/{}/index.m3u8?token={token}", s.name);
    Ok((StatusCode::CREATED, Json(Token { token, expires_ms: expires_s * 1000, hls_path })))
}

/// The DVR window a stream may ask for: a second to a day.
fn check_buffer_secs(b: u32) -> Result<(), ApiError> {
    if (1..=86_400).contains(&b) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("buffer_secs must be 1 to 86400 seconds, not {b}")))
    }
}
