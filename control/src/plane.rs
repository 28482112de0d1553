//! The control plane's policy over the media side: who may publish and
//! play (stream keys, playback tokens, quotas, gating triggers), and the
//! monitor that turns media events into notifications and load figures.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tidecast_media::{Registry, RegistryEvent};
use tidecast_protocols::ingest::{AccessGate, Decision, PlayRequest, PublishRequest, Refusal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{valid_stream_name, ConfigGate};
use crate::load::{LoadReport, Sampler, Sources};
use crate::metrics::Metrics;
use crate::model::{StreamConfig, StreamKey, Tenant, TriggerHandler};
use crate::secrets::{hash, now_ms};
use crate::store::{Db, StoreError, Table};
use crate::tokens::{TokenError, TokenSigner};
use crate::triggers::{Scope, Trigger, Triggers};
use crate::viewers::Viewers;

/// Failed authentications one address may make per window before it is
/// refused, unless configured otherwise (`auth_failures_per_minute`).
pub const AUTH_FAILURES_PER_WINDOW: u32 = 20;
/// The window a count of failures lives for.
pub const AUTH_WINDOW: Duration = Duration::from_secs(60);

/// Per-address counter of failed authentications (API keys, stream keys,
/// playback tokens). An address over the limit is refused everything until
/// its window ends.
pub struct AuthLimiter {
    by_ip: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    limit: AtomicU32,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter { by_ip: Mutex::default(), limit: AtomicU32::new(AUTH_FAILURES_PER_WINDOW) }
    }
}

impl AuthLimiter {
    /// Sets the failures allowed per address and window; 0 turns the limit off.
    pub fn set_limit(&self, failures: u32) {
        self.limit.store(failures, Ordering::Relaxed);
    }

    /// Whether `ip` has failed too often lately.
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        if limit == 0 {
            return false;
        }
        let mut m = self.by_ip.lock();
        match m.get(&ip) {
            Some((since, _)) if since.elapsed() >= AUTH_WINDOW => {
                m.remove(&ip);
                false
            }
            Some((_, n)) => *n >= limit,
            None => false,
        }
    }

    /// Counts a failure from `ip`.
    pub fn fail(&self, ip: IpAddr) {
        if self.limit.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut m = self.by_ip.lock();
        if m.len() > 100_000 {
            m.retain(|_, (since, _)| since.elapsed() < AUTH_WINDOW);
        }
        let e = m.entry(ip).or_insert((Instant::now(), 0));
        e.1 = e.1.saturating_add(1);
    }
}

/// Why a viewer may not play.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlayDenied {
    /// Token problems.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// Too many failed attempts from this address.
    #[error("too many failed attempts; try again later")]
    RateLimited,
    /// A trigger or a quota said no.
    #[error("{0}")]
    Refused(String),
    /// The store failed.
    #[error("store unavailable")]
    Store,
}

/// Shared state of the control plane.
pub struct ControlPlane {
    /// Durable records.
    pub db: Db,
    /// Keys from the configuration file (and open mode).
    pub config_keys: ConfigGate,
    /// Live streams.
    pub registry: Registry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Webhooks.
    pub triggers: Arc<Triggers>,
    /// Viewer sessions.
    pub viewers: Viewers,
    /// Playback token signer.
    pub tokens: TokenSigner,
    /// Failed-auth limiter.
    pub limiter: AuthLimiter,
    load: RwLock<Arc<LoadReport>>,
    ready: AtomicBool,
}

/// A stream's configuration and its tenant's record, looked up together.
#[derive(Debug, Clone)]
pub struct Owned {
    /// The stream.
    pub stream: StreamConfig,
    /// Its tenant (absent if deleted under it).
    pub tenant: Option<Tenant>,
}

impl Owned {
    /// The trigger scope of this stream.
    pub fn scope(&self) -> Scope<'_> {
        Scope::of(&self.stream)
    }
}

fn scope_of<'a>(name: &'a str, owned: &'a Option<Owned>) -> Scope<'a> {
    owned.as_ref().map_or(Scope { stream: name, tenant: None, tags: &[] }, Owned::scope)
}

fn refusal(reason: impl Into<String>) -> Refusal {
    Refusal { reason: reason.into() }
}

impl ControlPlane {
    /// Builds the plane over an opened store; loads trigger handlers and the token secret.
    pub fn new(
        db: Db,
        config_keys: ConfigGate,
        registry: Registry,
        metrics: Arc<Metrics>,
        triggers: Arc<Triggers>,
    ) -> Result<Arc<ControlPlane>, StoreError> {
        let secret = match db.get::<String>(Table::Meta, "token_secret")? {
            Some(s) => s,
            None => {
                let s = crate::secrets::random_token(32).map_err(|e| StoreError::Backend(e.to_string()))?;
                db.commit(vec![crate::store::put(Table::Meta, "token_secret", &s)])?;
                s
            }
        };
        let plane = Arc::new(ControlPlane {
            db,
            config_keys,
            registry,
            metrics,
            triggers,
            viewers: Viewers::default(),
            tokens: TokenSigner::new(secret.into_bytes()),
            limiter: AuthLimiter::default(),
            load: RwLock::new(Arc::new(LoadReport::default())),
            ready: AtomicBool::new(false),
        });
        plane.reload_triggers()?;
        Ok(plane)
    }

    /// Marks the node ready (`/readyz`): every listener is up.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Whether [`ControlPlane::mark_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Reloads the trigger handlers from the store.
    pub fn reload_triggers(&self) -> Result<(), StoreError> {
        let hs: Vec<TriggerHandler> = self.db.all(Table::Triggers)?.into_iter().map(|(_, h)| h).collect();
        self.triggers.set_handlers(hs);
        Ok(())
    }

    /// Creates the first admin key when the store has none: from
    /// `preset` (e.g. `TIDECAST_ADMIN_KEY`) or freshly generated. Returns the
    /// key when it was generated, for the caller to print once.
    pub fn bootstrap(&self, preset: Option<&str>) -> Result<Option<String>, StoreError> {
        if !self.db.store().scan(Table::ApiKeys, None, 1)?.is_empty() {
            return Ok(None);
        }
        let (secret, generated) = match preset {
            Some(k) if !k.is_empty() => (k.to_owned(), false),
            _ => (crate::api::keys::new_secret("tca").map_err(|e| StoreError::Backend(e.to_string()))?, true),
        };
        let rec = crate::model::ApiKey {
            id: "admin".into(),
            tenant: None,
            label: "bootstrap admin key".into(),
            created_ms: now_ms(),
        };
        self.db.commit(vec![
            crate::store::put(Table::ApiKeys, &hash(&secret), &rec),
            crate::api::audit_op("bootstrap", "create", "api_key", "admin"),
        ])?;
        Ok(generated.then_some(secret))
    }

    /// A configured stream and its tenant.
    pub fn owned(&self, name: &str) -> Result<Option<Owned>, StoreError> {
        let Some(stream) = self.db.get::<StreamConfig>(Table::Streams, name)? else { return Ok(None) };
        let tenant = self.db.get::<Tenant>(Table::Tenants, &stream.tenant)?;
        Ok(Some(Owned { stream, tenant }))
    }

    /// Whether anyone may publish anything: no keys in the file, no streams in the store.
    pub fn open_mode(&self) -> bool {
        self.config_keys.is_open() && self.db.store().scan(Table::Streams, None, 1).is_ok_and(|v| v.is_empty())
    }

    /// The latest load report.
    pub fn load(&self) -> Arc<LoadReport> {
        self.load.read().clone()
    }

    /// A stream key lookup: `KEY` or `NAME?key=KEY`. Returns the stream.
    fn stream_for_key(&self, sent: &str) -> Result<Option<String>, StoreError> {
        let (name, query) = sent.split_once('?').unwrap_or((sent, ""));
        let param = query.split('&').find_map(|kv| kv.strip_prefix("key="));
        let now = now_ms();
        // Looked up by the key's SHA-256: the B-tree search can only leak
        // how much of a hash matched, which says nothing of the key.
        let lookup = |key: &str| -> Result<Option<StreamKey>, StoreError> {
            let rec = self.db.get::<StreamKey>(Table::StreamKeys, &hash(key))?;
            Ok(rec.filter(|k| k.valid_at(now)))
        };
        if let Some(k) = lookup(name)? {
            return Ok(Some(k.stream));
        }
        if let Some(p) = param {
            if let Some(k) = lookup(p)?.filter(|k| k.stream == name) {
                return Ok(Some(k.stream));
            }
        }
        Ok(None)
    }

    async fn publish(&self, req: PublishRequest<'_>) -> Result<String, Refusal> {
        let ip = req.peer.ip();
        if self.limiter.blocked(ip) {
            self.metrics.rate_limited.inc();
            return Err(refusal("too many failed attempts; try again later"));
        }
        let mut app = req.app.to_owned();
        let mut key = req.key.to_owned();
        if req.protocol == "rtmp" && self.triggers.has(Trigger::RtmpPushRewrite, None) {
            let url = format!("rtmp://{}/{app}/{key}", req.peer);
            let fields = vec![url.clone(), req.peer.ip().to_string()];
            let Some(new) = self.triggers.rewrite(Trigger::RtmpPushRewrite, None, fields, url).await else {
                return Err(self.auth_failed(ip, "refused by RTMP_PUSH_REWRITE"));
            };
            let path = new.split_once("://").map_or(new.as_str(), |(_, rest)| rest);
            let mut segs = path.splitn(3, '/').skip(1);
            app = segs.next().unwrap_or_default().to_owned();
            key = segs.next().unwrap_or_default().to_owned();
        }
        let stream = if self.triggers.has(Trigger::PushRewrite, None) {
            // MistServer integrations map keys to streams here: the hook's
            // answer is the stream name, and it has done the authentication.
            let url = format!("{}://{}/{app}/{key}", req.protocol, req.peer);
            let fields = vec![url, req.peer.ip().to_string(), key.clone()];
            match self.triggers.rewrite(Trigger::PushRewrite, None, fields, key.clone()).await {
                Some(s) if valid_stream_name(&s) => s,
                Some(s) => return Err(refusal(format!("PUSH_REWRITE answered an invalid stream name {s:?}"))),
                None => return Err(self.auth_failed(ip, "refused by PUSH_REWRITE")),
            }
        } else {
            self.check_key(&req, &key, ip)?
        };
        let owned = self.owned(&stream).map_err(|_| refusal("store unavailable"))?;
        if let Some(o) = &owned {
            self.check_stream_quota(o)?;
        }
        let scope = scope_of(&stream, &owned);
        let fields = vec![stream.clone(), ip.to_string(), req.protocol.to_owned(), format!("{}://{app}", req.protocol)];
        if !self.triggers.allow(Trigger::StreamPush, Some(&scope), fields).await {
            return Err(refusal("refused by STREAM_PUSH"));
        }
        Ok(stream)
    }

    fn check_key(&self, req: &PublishRequest<'_>, key: &str, ip: IpAddr) -> Result<String, Refusal> {
        let from_file = (!self.config_keys.is_open())
            .then(|| self.config_keys.check(&PublishRequest { key, ..req.clone() }).ok())
            .flatten();
        if let Some(s) = from_file {
            return Ok(s);
        }
        match self.stream_for_key(key) {
            Ok(Some(s)) => Ok(s),
            Ok(None) if self.open_mode() => self.config_keys.check(&PublishRequest { key, ..req.clone() }),
            Ok(None) => Err(self.auth_failed(ip, "unknown or expired stream key")),
            Err(e) => {
                warn!(error = %e, "store read failed during publish");
                Err(refusal("store unavailable"))
            }
        }
    }

    fn auth_failed(&self, ip: IpAddr, reason: &str) -> Refusal {
        self.metrics.auth_failures.with_label_values(&["stream_key"]).inc();
        self.limiter.fail(ip);
        refusal(reason)
    }

    fn check_stream_quota(&self, o: &Owned) -> Result<(), Refusal> {
        let Some(max) = o.tenant.as_ref().and_then(|t| t.quotas.max_streams) else { return Ok(()) };
        let live = self
            .registry
            .streams()
            .iter()
            .filter(|s| s.has_publisher() && s.name() != o.stream.name)
            .filter(|s| self.owned(s.name()).ok().flatten().is_some_and(|x| x.stream.tenant == o.stream.tenant))
            .count();
        if live >= max as usize {
            self.metrics.quota_refusals.with_label_values(&["max_streams"]).inc();
            return Err(refusal(format!("tenant quota: at most {max} live streams")));
        }
        Ok(())
    }

    /// Per-request playback check: the token, when the stream needs one.
    pub fn check_play(&self, stream: &str, token: Option<&str>, ip: IpAddr) -> Result<Option<Owned>, PlayDenied> {
        if self.limiter.blocked(ip) {
            self.metrics.rate_limited.inc();
            return Err(PlayDenied::RateLimited);
        }
        let owned = self.owned(stream).map_err(|_| PlayDenied::Store)?;
        if owned.as_ref().is_some_and(|o| o.stream.playback_token_required) {
            let r = match token {
                None => Err(TokenError::Missing),
                Some(t) => self.tokens.verify(t, stream, ip, now_ms() / 1000).map(|_| ()),
            };
            if let Err(e) = r {
                self.metrics.auth_failures.with_label_values(&["playback_token"]).inc();
                if e != TokenError::Missing {
                    self.limiter.fail(ip);
                }
                return Err(e.into());
            }
        }
        Ok(owned)
    }

    /// Admits a new viewer session: tenant viewer quota, then USER_NEW
    /// (and CONN_PLAY for connection outputs).
    pub async fn admit_viewer(
        &self,
        owned: &Option<Owned>,
        stream: &str,
        connector: &str,
        peer: SocketAddr,
        url: &str,
        session: &str,
    ) -> Result<(), PlayDenied> {
        if let Some(max) = owned.as_ref().and_then(|o| o.tenant.as_ref()).and_then(|t| t.quotas.max_viewers) {
            let tenant = owned.as_ref().map(|o| o.stream.tenant.as_str()).unwrap_or_default();
            if self.viewers.count_tenant(tenant) >= max as usize {
                self.metrics.quota_refusals.with_label_values(&["max_viewers"]).inc();
                return Err(PlayDenied::Refused(format!("tenant quota: at most {max} viewers")));
            }
        }
        let scope = scope_of(stream, owned);
        let addr = peer.ip().to_string();
        if connector != "hls" {
            let fields = vec![stream.to_owned(), addr.clone(), connector.to_owned(), url.to_owned()];
            if !self.triggers.allow(Trigger::ConnPlay, Some(&scope), fields).await {
                return Err(PlayDenied::Refused("refused by CONN_PLAY".into()));
            }
        }
        let fields =
            vec![stream.to_owned(), addr, session.to_owned(), connector.to_owned(), url.to_owned(), session.to_owned()];
        if !self.triggers.allow(Trigger::UserNew, Some(&scope), fields).await {
            return Err(PlayDenied::Refused("refused by USER_NEW".into()));
        }
        Ok(())
    }

    fn notify_stream(&self, trigger: Trigger, stream: &str, fields: Vec<String>) {
        let owned = self.owned(stream).ok().flatten();
        self.triggers.notify(trigger, Some(&scope_of(stream, &owned)), fields);
    }

    /// Follows the media side until `shutdown`: stream start/end and track
    /// triggers, viewer session ends, load samples, ingest bitrate quotas.
    pub async fn monitor(self: Arc<Self>, sources: Sources, shutdown: CancellationToken) {
        let mut events = self.registry.events();
        let mut sampler = Sampler::new(sources);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut announced: HashMap<String, usize> = HashMap::new();
        let mut over_quota: HashMap<String, u32> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = events.recv() => match ev {
                    Ok(RegistryEvent::Started(s)) => {
                        info!(stream = s.name(), "stream started");
                    }
                    Ok(RegistryEvent::Ended(name)) => {
                        announced.remove(&name);
                        let fields = vec![name.clone(), "0".into(), "0".into(), "0".into(), "1".into(), "0".into(), "0".into()];
                        self.notify_stream(Trigger::StreamEnd, &name, fields);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
                _ = tick.tick() => {
                    let report = sampler.sample();
                    // Names of streams that ended (their Ended announcement
                    // may have been lost to lag) leave both maps.
                    let live: std::collections::HashSet<&str> = report.per_stream.iter().map(|s| s.name.as_str()).collect();
                    announced.retain(|n, _| live.contains(n.as_str()));
                    over_quota.retain(|n, _| live.contains(n.as_str()));
                    for s in self.registry.streams() {
                        let tracks = s.tracks();
                        if !tracks.is_empty() && announced.get(s.name()) != Some(&tracks.len()) {
                            let first = !announced.contains_key(s.name());
                            announced.insert(s.name().to_owned(), tracks.len());
                            let list = serde_json::Value::Array(tracks.iter().map(|t| serde_json::json!({
                                "id": t.id, "codec": t.codec.name(), "codec_string": t.info.codec_string,
                                "width": t.info.width, "height": t.info.height, "sample_rate": t.info.sample_rate,
                            })).collect()).to_string();
                            self.notify_stream(Trigger::LiveTrackList, s.name(), vec![s.name().to_owned(), list]);
                            if first {
                                self.stream_ready(s.name()).await;
                            }
                        }
                    }
                    self.enforce_bitrate(&report, &mut over_quota);
                    for ended in self.viewers.collect_ended() {
                        let v = &ended.session;
                        let fields = vec![v.id.clone(), v.stream.clone(), v.protocol.clone(), v.address.clone(),
                            ended.duration.as_secs().to_string(), "0".into(), v.bytes_out.to_string(), String::new()];
                        self.notify_stream(Trigger::UserEnd, &v.stream, fields);
                    }
                    *self.load.write() = Arc::new(report);
                }
            }
        }
    }

    async fn stream_ready(&self, name: &str) {
        let owned = self.owned(name).ok().flatten();
        let fields = vec![name.to_owned(), "live".into()];
        if !self.triggers.allow(Trigger::StreamReady, Some(&scope_of(name, &owned)), fields).await {
            warn!(stream = name, "STREAM_READY refused the stream; disconnecting its publisher");
            self.registry.kick(name);
        }
    }

    fn enforce_bitrate(&self, report: &LoadReport, over: &mut HashMap<String, u32>) {
        for s in &report.per_stream {
            let max = self.owned(&s.name).ok().flatten().and_then(|o| o.tenant).and_then(|t| t.quotas.max_ingest_kbps);
            let Some(max) = max else { continue };
            if s.bitrate_in_bps > u64::from(max) * 1000 {
                let n = over.entry(s.name.clone()).or_default();
                *n += 1;
                // Five seconds over the limit: a burst at a keyframe is not a violation.
                if *n >= 5 {
                    warn!(
                        stream = s.name,
                        bps = s.bitrate_in_bps,
                        max_kbps = max,
                        "ingest bitrate over the tenant quota; disconnecting"
                    );
                    self.metrics.quota_refusals.with_label_values(&["max_ingest_kbps"]).inc();
                    self.registry.kick(&s.name);
                    over.remove(&s.name);
                }
            } else {
                over.remove(&s.name);
            }
        }
    }
}

impl AccessGate for ControlPlane {
    fn authorize_publish<'a>(&'a self, req: PublishRequest<'a>) -> Decision<'a> {
        Box::pin(self.publish(req))
    }

    fn authorize_play<'a>(&'a self, req: PlayRequest<'a>) -> Decision<'a> {
        Box::pin(async move {
            let owned = self.check_play(req.stream, req.token, req.peer.ip()).map_err(|e| refusal(e.to_string()))?;
            let session = crate::viewers::Viewers::hls_session_id(req.stream, req.peer.ip(), req.protocol, req.token);
            let url = format!("{}://{}", req.protocol, req.stream);
            self.admit_viewer(&owned, req.stream, req.protocol, req.peer, &url, &session)
                .await
                .map_err(|e| refusal(e.to_string()))?;
            Ok(req.stream.to_owned())
        })
    }
}
