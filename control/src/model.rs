//! The control plane's records, as stored and as the API shows them.
//!
//! Secrets (API keys, stream keys) are never stored: only their SHA-256,
//! which is the record's key in its table. They are high-entropy random
//! strings we generate, so a plain hash is enough (no password KDF needed).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Per-tenant limits; absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Streams live at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams: Option<u32>,
    /// Viewers at once, over all of the tenant's streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_viewers: Option<u32>,
    /// Ingest bitrate of one stream, in kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ingest_kbps: Option<u32>,
}

/// A tenant: owns streams, API keys and triggers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// Identifier, chosen at creation (`[a-z0-9-]`, up to 64).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Limits.
    #[serde(default)]
    pub quotas: Quotas,
    /// The transcode profile of its streams that select none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcode_profile: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// An API key's record (the secret itself is shown once, at creation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    /// Identifier (public; the secret starts with it).
    pub id: String,
    /// The tenant the key is scoped to; absent for an admin key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free-form label.
    #[serde(default)]
    pub label: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// A stream's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamConfig {
    /// The name viewers use in playback URLs.
    pub name: String,
    /// The owning tenant.
    pub tenant: String,
    /// Whether playback needs a signed playback token.
    #[serde(default)]
    pub playback_token_required: bool,
    /// Tags, for trigger filters (`#tag`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// How far back viewers may rewind, seconds: the LL-HLS and LL-DASH
    /// window of the stream while it is live (from its next start).
    /// Unset: the node's `hls.dvr_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer_secs: Option<u32>,
    /// Restream and recording targets, started with the stream.
    #[serde(default)]
    pub push_targets: Vec<String>,
    /// Transcode profile name (`/api/v1/transcode/profiles`, the config
    /// file's `[transcode.profiles]`, or the built-in `default`); unset: the
    /// tenant's, else the server's `transcode.default_profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcode_profile: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// One rung of a ladder profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LadderRung {
    /// Output height in pixels; the width follows the source's aspect
    /// ratio, rounded to even. Rungs not smaller than the source are left out.
    pub height: u32,
    /// Target bitrate, kbit/s (50 to 100000).
    pub bitrate_kbps: u32,
    /// Frames per second at most; unset: the source's rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<f64>,
}

/// A named ladder profile: the renditions a stream's video gets. Stored by
/// name; the transcoder checks it (the same rules as the config file's
/// `[transcode.profiles.NAME]`) before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LadderProfile {
    /// The rungs, 1 to 8, any order.
    pub rungs: Vec<LadderRung>,
    /// H.264 profile of every rung: `baseline`, `main` (default) or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h264_profile: Option<String>,
    /// x264 preset, `ultrafast` to `medium` (default `veryfast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Hardware encoders: `auto` (default: hardware if one works, else
    /// x264 with a warning and a counted fallback), `require` or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw: Option<String>,
    /// Where the renditions are made: `local` (default) or `livepeer` (the
    /// node's `transcode.livepeer` gateways).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The audio bridge for streams of this profile: `auto`, `always` or
    /// `off`; unset: the node's `transcode.audio_bridge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_bridge: Option<String>,
}

/// A ladder profile as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NamedProfile {
    /// The name streams and tenants select it by.
    pub name: String,
    /// Where it is defined: `api` (changeable here) or `config` (the
    /// configuration file and the built-in `default`; read-only here).
    pub source: String,
    /// The profile.
    pub profile: LadderProfile,
}

/// A stream key's record (keyed by the key's hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StreamKey {
    /// Identifier.
    pub id: String,
    /// The stream it publishes.
    pub stream: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// When it stops working, Unix milliseconds; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
}

impl StreamKey {
    /// Whether the key still publishes at `now_ms`.
    pub fn valid_at(&self, now_ms: i64) -> bool {
        self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// How a trigger handler's request body is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// MistServer's: `text/plain`, one field per line, in its order.
    #[default]
    Mist,
    /// A JSON object with named fields.
    Json,
}

/// A trigger handler: where one trigger is delivered, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TriggerHandler {
    /// Identifier.
    pub id: String,
    /// The tenant whose streams it sees; absent for an admin handler (all streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The trigger's MistServer name, e.g. `PUSH_REWRITE`.
    pub trigger: String,
    /// `http://` or `https://` URL the request is POSTed to.
    pub url: String,
    /// Whether the session waits for the answer (only for triggers that can gate).
    #[serde(default)]
    pub blocking: bool,
    /// How long to wait for a blocking answer, milliseconds.
    pub timeout_ms: u32,
    /// The answer used when the handler fails, times out, or is not blocking.
    pub default_response: String,
    /// Stream filter: exact names, `!name` to exclude, `#tag`; empty: all.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Body format.
    #[serde(default)]
    pub format: PayloadFormat,
    /// HMAC-SHA256 secret for the signature header.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub secret: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// An auto-push rule (MistServer's `push_auto_add`): every stream it
/// matches is pushed to its target from when the stream goes live until it
/// ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushRule {
    /// Identifier.
    pub id: String,
    /// The tenant whose streams it sees; absent for a node-wide rule (all
    /// streams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Which streams: exact names, `#tag`, `!name` to exclude (as trigger
    /// filters); empty: all it sees.
    #[serde(default)]
    pub streams: Vec<String>,
    /// The target template (`$stream`, `$tenant`, `$datetime`,
    /// `$segmentCounter`), as for `/api/v1/pushes`.
    pub target: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}
