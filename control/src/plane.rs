//! The control plane's policy over the media side: who may publish and
//! play (stream keys, playback tokens, quotas, gating triggers), and the
//! monitor that turns media events into notifications and load figures.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tidecast_media::{Registry, RegistryEvent};
use tidecast_protocols::access::{
    AccessGate, Admission, EndReason, NewSession, PlayRequest, PublishRequest, Refusal, Role, SessionInfo, Sessions,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{valid_stream_name, ConfigGate};
use crate::load::{LoadReport, Sampler, Sources};
use crate::metrics::Metrics;
use crate::model::TriggerHandler;
pub use crate::policy::Owned;
use crate::policy::{Policy, PolicyCache};
use crate::secrets::{hash, now_ms};
use crate::store::{Db, StoreError, Table};
use crate::tokens::{TokenError, TokenSigner};
use crate::triggers::{Scope, Trigger, Triggers};

/// An HLS viewer's session ends this long after its last request.
pub const HLS_IDLE: Duration = Duration::from_secs(20);

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
    /// Addresses in `by_ip`: with none, a request needs no lock.
    tracked: AtomicUsize,
    limit: AtomicU32,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter {
            by_ip: Mutex::default(),
            tracked: AtomicUsize::new(0),
            limit: AtomicU32::new(AUTH_FAILURES_PER_WINDOW),
        }
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
        if limit == 0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut m = self.by_ip.lock();
        match m.get(&ip) {
            Some((since, _)) if since.elapsed() >= AUTH_WINDOW => {
                m.remove(&ip);
                self.tracked.store(m.len(), Ordering::Relaxed);
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
        self.tracked.store(m.len(), Ordering::Relaxed);
    }
}

/// The outcome of an HLS admission in progress, shared by its waiters.
type PendingAdmission = tokio::sync::watch::Receiver<Option<Result<(), Refusal>>>;

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
    /// Every publisher and viewer session of every protocol.
    pub sessions: Sessions,
    /// Playback token signer.
    pub tokens: TokenSigner,
    /// Failed-auth limiter.
    pub limiter: AuthLimiter,
    load: RwLock<Arc<LoadReport>>,
    ready: AtomicBool,
    policy: PolicyCache,
    /// HLS sessions being admitted, so that a player's concurrent first
    /// requests open one session, not several.
    hls_pending: Mutex<HashMap<String, PendingAdmission>>,
    /// This plane, for admissions that run on their own task.
    me: std::sync::Weak<ControlPlane>,
    /// Keys the fallback HLS session ids (players that carry no `sid`).
    hls_ids: std::collections::hash_map::RandomState,
}

fn scope_of<'a>(name: &'a str, owned: &'a Option<Arc<Owned>>) -> Scope<'a> {
    owned.as_ref().map_or(Scope { stream: name, tenant: None, tags: &[] }, |o| o.scope())
}

/// The refusal of a failed publish authentication.
fn unauthorized(reason: impl Into<String>) -> Refusal {
    Refusal::Unauthorized(reason.into())
}

fn token_refusal(e: TokenError) -> Refusal {
    match e {
        TokenError::Missing => Refusal::Unauthorized(e.to_string()),
        _ => Refusal::Forbidden(e.to_string()),
    }
}

fn store_refusal(e: StoreError) -> Refusal {
    warn!(error = %e, "store read failed during admission");
    Refusal::Unavailable("store unavailable".into())
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
        let plane = Arc::new_cyclic(|me| ControlPlane {
            me: me.clone(),
            db,
            config_keys,
            registry,
            metrics,
            triggers,
            sessions: Sessions::new(),
            tokens: TokenSigner::new(secret.into_bytes()),
            limiter: AuthLimiter::default(),
            load: RwLock::new(Arc::new(LoadReport::default())),
            ready: AtomicBool::new(false),
            policy: PolicyCache::new(),
            hls_pending: Mutex::default(),
            hls_ids: std::collections::hash_map::RandomState::new(),
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
            _ => (crate::secrets::new_secret("tca").map_err(|e| StoreError::Backend(e.to_string()))?, true),
        };
        let rec = crate::model::ApiKey {
            id: "admin".into(),
            tenant: None,
            label: "bootstrap admin key".into(),
            created_ms: now_ms(),
        };
        self.db.commit(vec![
            crate::store::put(Table::ApiKeys, &hash(&secret), &rec),
            crate::store::audit_op("bootstrap", "create", "api_key", "admin"),
        ])?;
        Ok(generated.then_some(secret))
    }

    /// The policy snapshot (streams, tenants, stream keys) as of the last
    /// committed write.
    pub fn policy(&self) -> Result<Arc<Policy>, StoreError> {
        self.policy.get(&self.db)
    }

    /// A configured stream and its tenant.
    pub fn owned(&self, name: &str) -> Result<Option<Arc<Owned>>, StoreError> {
        Ok(self.policy()?.stream(name).cloned())
    }

    /// Whether anyone may publish anything: no keys in the file, no streams in the store.
    pub fn open_mode(&self) -> bool {
        self.config_keys.is_open() && self.policy().is_ok_and(|p| !p.has_streams())
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
        let policy = self.policy()?;
        // Looked up by the key's SHA-256: the map lookup can only leak how
        // much of a hash matched, which says nothing of the key.
        let lookup = |key: &str| policy.key(&hash(key)).filter(|k| k.valid_at(now));
        if let Some(k) = lookup(name) {
            return Ok(Some(k.stream.clone()));
        }
        if let Some(p) = param {
            if let Some(k) = lookup(p).filter(|k| k.stream == name) {
                return Ok(Some(k.stream.clone()));
            }
        }
        Ok(None)
    }

    /// Admits a publisher: rate limit, the rewrite triggers, the stream
    /// key, the tenant's stream quota, STREAM_PUSH; then its session.
    async fn publish(&self, req: PublishRequest<'_>) -> Result<tidecast_protocols::access::Session, Refusal> {
        let ip = req.peer.ip();
        if self.limiter.blocked(ip) {
            self.metrics.rate_limited.inc();
            return Err(Refusal::RateLimited);
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
                Some(s) => return Err(Refusal::Trigger(format!("PUSH_REWRITE answered an invalid stream name {s:?}"))),
                None => return Err(self.auth_failed(ip, "refused by PUSH_REWRITE")),
            }
        } else {
            self.check_key(&req, &key, ip)?
        };
        let policy = self.policy().map_err(store_refusal)?;
        let owned = policy.stream(&stream).cloned();
        if let Some(o) = &owned {
            self.check_stream_quota(&policy, o)?;
        }
        let scope = scope_of(&stream, &owned);
        let url = format!("{}://{app}", req.protocol);
        let fields = vec![stream.clone(), ip.to_string(), req.protocol.to_owned(), url.clone()];
        if !self.triggers.allow(Trigger::StreamPush, Some(&scope), fields).await {
            return Err(Refusal::Trigger("refused by STREAM_PUSH".into()));
        }
        let settings = owned.map(|o| o.settings.clone()).unwrap_or_default();
        let new = NewSession {
            id: format!("publish:{stream}"),
            role: Role::Publisher,
            protocol: req.protocol,
            stream,
            settings,
            peer: req.peer,
            url,
        };
        Ok(self.sessions.open(new, None))
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
            Err(e) => Err(store_refusal(e)),
        }
    }

    fn auth_failed(&self, ip: IpAddr, reason: &str) -> Refusal {
        self.metrics.auth_failures.with_label_values(&["stream_key"]).inc();
        self.limiter.fail(ip);
        unauthorized(reason)
    }

    fn check_stream_quota(&self, policy: &Policy, o: &Owned) -> Result<(), Refusal> {
        let Some(max) = o.tenant.as_ref().and_then(|t| t.quotas.max_streams) else { return Ok(()) };
        let live = policy
            .streams_of(&o.stream.tenant)
            .filter(|x| x.stream.name != o.stream.name)
            .filter(|x| self.registry.get(&x.stream.name).is_some_and(|s| s.has_publisher()))
            .count();
        if live >= max as usize {
            self.metrics.quota_refusals.with_label_values(&["max_streams"]).inc();
            return Err(Refusal::Quota(format!("tenant quota: at most {max} live streams")));
        }
        Ok(())
    }

    /// The per-request playback check: rate limit, then the token when the
    /// stream needs one. Reads the policy snapshot only.
    pub fn check_viewer(&self, stream: &str, token: Option<&str>, ip: IpAddr) -> Result<Option<Arc<Owned>>, Refusal> {
        if self.limiter.blocked(ip) {
            self.metrics.rate_limited.inc();
            return Err(Refusal::RateLimited);
        }
        let owned = self.owned(stream).map_err(store_refusal)?;
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
                return Err(token_refusal(e));
            }
        }
        Ok(owned)
    }

    /// Admits a viewer that passed [`ControlPlane::check_viewer`] (rate
    /// limit and token), in this order: the tenant's viewer quota (a slot is
    /// taken at once, so concurrent viewers cannot both get the last one),
    /// CONN_PLAY (connection protocols), USER_NEW; then its session. A
    /// refusal gives the slot back and fires nothing.
    async fn admit_checked(
        &self,
        req: &PlayRequest<'_>,
        id: String,
        owned: Option<Arc<Owned>>,
    ) -> Result<tidecast_protocols::access::Session, Refusal> {
        let tenant = owned.as_ref().map(|o| o.stream.tenant.as_str());
        let max = owned.as_ref().and_then(|o| o.max_viewers());
        let Some(slot) = self.sessions.reserve_viewer(tenant, max) else {
            self.metrics.quota_refusals.with_label_values(&["max_viewers"]).inc();
            let max = max.unwrap_or_default();
            return Err(Refusal::Quota(format!("tenant quota: at most {max} viewers")));
        };
        let scope = scope_of(req.stream, &owned);
        let addr = req.peer.ip().to_string();
        let (stream, url) = (req.stream.to_owned(), req.url.to_owned());
        // HTTP players (LL-HLS, LL-DASH) have no connection to speak of.
        if !matches!(req.protocol, "hls" | "dash") {
            let fields = vec![stream.clone(), addr.clone(), req.protocol.to_owned(), url.clone()];
            if !self.triggers.allow(Trigger::ConnPlay, Some(&scope), fields).await {
                return Err(Refusal::Trigger("refused by CONN_PLAY".into()));
            }
        }
        let fields = vec![stream.clone(), addr, id.clone(), req.protocol.to_owned(), url.clone(), id.clone()];
        if !self.triggers.allow(Trigger::UserNew, Some(&scope), fields).await {
            return Err(Refusal::Trigger("refused by USER_NEW".into()));
        }
        let settings = owned.map(|o| o.settings.clone()).unwrap_or_default();
        let new = NewSession { id, role: Role::Viewer, protocol: req.protocol, stream, settings, peer: req.peer, url };
        Ok(self.sessions.open(new, Some(slot)))
    }

    /// The session id of an HLS or DASH request: a new signed `sid` for a
    /// new player (`fresh`), the `sid` it carries if this node signed it,
    /// or, for a player without a valid one, a keyed hash of the protocol,
    /// its address, user agent and token (players behind one NAT with the
    /// same agent then count as one; one client playing both formats is two
    /// sessions). A client cannot choose its own ids, so it cannot take
    /// another's session or fill a quota with made-up ones.
    #[allow(clippy::too_many_arguments)]
    fn hls_session_id(
        &self,
        sid: Option<&str>,
        fresh: bool,
        protocol: &str,
        stream: &str,
        ip: IpAddr,
        agent: &str,
        token: Option<&str>,
    ) -> String {
        // A sid is 16 random hex digits and 16 of their keyed hash.
        let sign = |r: &str| format!("{r}{:016x}", self.hls_ids.hash_one(("sid", r)));
        if fresh {
            return sign(&tidecast_protocols::access::new_id());
        }
        match sid {
            Some(s) if s.len() == 32 && s.is_char_boundary(16) && sign(&s[..16]) == s => s.to_owned(),
            _ => {
                let h = self.hls_ids.hash_one((protocol, stream, ip, agent, token.unwrap_or("")));
                format!("h{h:016x}")
            }
        }
    }

    /// An HLS request's session, once the request passed
    /// [`ControlPlane::check_viewer`]: refused if it was kicked, opened on
    /// the first request (as [`ControlPlane::admit_checked`] does, once even when a
    /// player's first requests arrive together), kept alive by the later
    /// ones and held by the session table until the player goes quiet for
    /// [`HLS_IDLE`].
    async fn hls_session(
        &self,
        req: PlayRequest<'_>,
        sid: Option<&str>,
        fresh: bool,
        agent: &str,
    ) -> Result<Arc<SessionInfo>, Refusal> {
        let id = self.hls_session_id(sid, fresh, req.protocol, req.stream, req.peer.ip(), agent, req.token);
        let id = id.as_str();
        if let Some(info) = self.sessions.get(id) {
            // A sid is a bearer of a slot: only its own HLS session's.
            if info.protocol != req.protocol || info.stream != req.stream {
                return Err(Refusal::Forbidden("this session plays another stream".into()));
            }
            info.touch();
            return Ok(info);
        }
        if self.sessions.is_kicked(id) {
            return Err(Refusal::Forbidden("this session was ended by the operator".into()));
        }
        // One admission per id, on its own task: every request of the
        // player waits for it, and a player hanging up during a slow
        // USER_NEW neither repeats it nor leaves it without its USER_END.
        let mut result = {
            let mut pending = self.hls_pending.lock();
            match pending.get(id) {
                Some(rx) => rx.clone(),
                None => {
                    let me = self.me.upgrade().ok_or_else(|| Refusal::Unavailable("shutting down".into()))?;
                    let (tx, rx) = tokio::sync::watch::channel(None);
                    pending.insert(id.to_owned(), rx.clone());
                    let (id, stream, token, url) =
                        (id.to_owned(), req.stream.to_owned(), req.token.map(str::to_owned), req.url.to_owned());
                    let (protocol, peer, mine) = (req.protocol, req.peer, rx.clone());
                    tokio::spawn(async move {
                        let req = PlayRequest { protocol, stream: &stream, token: token.as_deref(), peer, url: &url };
                        let r = me.admit_hls(&req, &id).await;
                        let _ = tx.send(Some(r));
                        let mut pending = me.hls_pending.lock();
                        if pending.get(&id).is_some_and(|rx| rx.same_channel(&mine)) {
                            pending.remove(&id);
                        }
                    });
                    rx
                }
            }
        };
        let outcome = match result.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(Ok(())),
            Err(_) => Err(Refusal::Unavailable("the admission did not finish".into())),
        };
        outcome?;
        self.sessions.get(id).ok_or_else(|| Refusal::Forbidden("this session has ended".into()))
    }

    /// Admits an HLS player's session and hands it to the session table.
    async fn admit_hls(&self, req: &PlayRequest<'_>, id: &str) -> Result<(), Refusal> {
        // Admitted while this request looked for a pending admission.
        if self.sessions.get(id).is_some() {
            return Ok(());
        }
        let owned = self.owned(req.stream).map_err(store_refusal)?;
        let session = self.admit_checked(req, id.to_owned(), owned).await?;
        session.info().touch();
        self.sessions.hold(session);
        Ok(())
    }

    /// Whether a handler in `stream`'s scope listens for `trigger`.
    pub fn stream_has_trigger(&self, trigger: Trigger, stream: &str) -> bool {
        let owned = self.owned(stream).ok().flatten();
        self.triggers.has(trigger, Some(&scope_of(stream, &owned)))
    }

    /// Fires a notification trigger in `stream`'s scope (its tenant and
    /// tags decide which handlers hear it).
    pub fn notify_stream(&self, trigger: Trigger, stream: &str, fields: Vec<String>) {
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
                        // The publisher's session ended before the stream
                        // did; viewers still live are counted now, once.
                        let t = self.sessions.close_tally(&name);
                        let fields = vec![name.clone(), t.bytes_out.to_string(), t.bytes_in.to_string(),
                            t.viewers.to_string(), t.inputs.to_string(), "0".into(), t.viewer_seconds.to_string()];
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
                    self.sessions.sweep_idle(HLS_IDLE);
                    self.sessions.prune_tallies(|name| self.registry.get(name).is_some());
                    for ended in self.sessions.take_ended() {
                        let v = &ended.info;
                        info!(session = %v.id, stream = %v.stream, protocol = v.protocol, role = ?v.role,
                            reason = %ended.reason.as_str(), seconds = ended.duration.as_secs(), "session ended");
                        if v.role != Role::Viewer {
                            continue;
                        }
                        let fields = vec![v.id.clone(), v.stream.clone(), v.protocol.to_owned(), v.peer.ip().to_string(),
                            ended.duration.as_secs().to_string(), v.received().to_string(), v.sent().to_string(),
                            String::new()];
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
            // The reason first, so the publisher's end says why, then the cut.
            self.sessions.close_publishers(name, EndReason::Trigger);
            self.registry.kick(name);
        }
    }

    fn enforce_bitrate(&self, report: &LoadReport, over: &mut HashMap<String, u32>) {
        let Ok(policy) = self.policy() else { return };
        for s in &report.per_stream {
            let max = policy.stream(&s.name).and_then(|o| o.tenant.as_ref()).and_then(|t| t.quotas.max_ingest_kbps);
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
                    self.sessions.close_publishers(&s.name, EndReason::Quota);
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
    fn check_play(
        &self,
        stream: &str,
        token: Option<&str>,
        ip: IpAddr,
    ) -> Result<Option<Arc<tidecast_protocols::access::StreamSettings>>, Refusal> {
        Ok(self.check_viewer(stream, token, ip)?.map(|o| o.settings.clone()))
    }

    fn hls_viewer<'a>(
        &'a self,
        req: PlayRequest<'a>,
        sid: Option<&'a str>,
        fresh: bool,
        agent: &'a str,
    ) -> tidecast_protocols::access::HlsAdmission<'a> {
        Box::pin(self.hls_session(req, sid, fresh, agent))
    }

    fn open_publishing(&self) -> bool {
        self.open_mode()
    }

    fn admit_publish<'a>(&'a self, req: PublishRequest<'a>) -> Admission<'a> {
        Box::pin(self.publish(req))
    }

    fn admit_play<'a>(&'a self, req: PlayRequest<'a>) -> Admission<'a> {
        Box::pin(async move {
            let owned = self.check_viewer(req.stream, req.token, req.peer.ip())?;
            // The rest (quota slot, CONN_PLAY, USER_NEW, the session) runs on
            // its own task: a client hanging up during a slow blocking hook
            // cannot cancel it halfway, so a USER_NEW that was sent always
            // has its session, whose end (right away, if nobody takes it)
            // sends the USER_END.
            let me = self.me.upgrade().ok_or_else(|| Refusal::Unavailable("shutting down".into()))?;
            let (stream, token, url) = (req.stream.to_owned(), req.token.map(str::to_owned), req.url.to_owned());
            let (protocol, peer) = (req.protocol, req.peer);
            let admission = tokio::spawn(async move {
                let req = PlayRequest { protocol, stream: &stream, token: token.as_deref(), peer, url: &url };
                me.admit_checked(&req, tidecast_protocols::access::new_id(), owned).await
            });
            admission.await.map_err(|_| Refusal::Unavailable("the admission did not finish".into()))?
        })
    }
}

impl ControlPlane {
    /// Where a stream that goes live is pushed: its own `push_targets`,
    /// then the targets of every auto-push rule that matches it (node-wide
    /// rules, and its tenant's); and its tenant.
    pub fn push_targets(&self, stream: &str) -> (Vec<(String, tidecast_protocols::push::Origin)>, Option<String>) {
        use tidecast_protocols::push::Origin;
        let owned = self.owned(stream).ok().flatten();
        let scope = scope_of(stream, &owned);
        let mut targets: Vec<(String, Origin)> = owned
            .as_ref()
            .map(|o| o.stream.push_targets.iter().map(|t| (t.clone(), Origin::Stream)).collect())
            .unwrap_or_default();
        let rules: Vec<(String, crate::model::PushRule)> = match self.db.all(crate::store::Table::PushRules) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(stream, error = %e, "push rules unreadable; only the stream's own targets apply");
                Vec::new()
            }
        };
        let mut rules: Vec<crate::model::PushRule> = rules.into_iter().map(|(_, r)| r).collect();
        rules.sort_by(|a, b| a.id.cmp(&b.id));
        for r in rules {
            let mine = r.tenant.is_none() || r.tenant.as_deref() == scope.tenant;
            if mine
                && crate::triggers::filter_matches(&r.streams, &scope)
                && !targets.iter().any(|(t, _)| *t == r.target)
            {
                targets.push((r.target, Origin::Rule));
            }
        }
        (targets, owned.map(|o| o.stream.tenant.clone()))
    }
}

/// MistServer's push triggers around the media side's pushes.
impl tidecast_protocols::push::PushHooks for ControlPlane {
    fn out_start(
        &self,
        stream: &str,
        target: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + '_>> {
        let (stream, target) = (stream.to_owned(), target.to_owned());
        Box::pin(async move {
            let owned = self.owned(&stream).ok().flatten();
            let scope = scope_of(&stream, &owned);
            if !self.triggers.has(Trigger::PushOutStart, Some(&scope)) {
                return Some(target);
            }
            let fields = vec![stream.clone(), target.clone()];
            self.triggers.rewrite(Trigger::PushOutStart, Some(&scope), fields, target).await
        })
    }

    fn ended(&self, r: &tidecast_protocols::push::PushReport) {
        let i = &r.info;
        let log = serde_json::to_string(&r.log).unwrap_or_default();
        let status = serde_json::to_string(i).unwrap_or_default();
        let fields = vec![i.id.to_string(), i.stream.clone(), r.target_before.clone(), i.target.clone(), log, status];
        self.notify_stream(Trigger::PushEnd, &i.stream, fields);
        if let Some(container) = r.recording {
            let failed = i.state == tidecast_protocols::push::PushState::Failed;
            let (first, last) = (r.first_ms.unwrap_or(0), r.last_ms.unwrap_or(0));
            let fields = vec![
                i.stream.clone(),
                i.target.clone(),
                container.to_owned(),
                i.bytes.to_string(),
                r.ended_at.saturating_sub(i.started_at).to_string(),
                i.started_at.to_string(),
                r.ended_at.to_string(),
                last.saturating_sub(first).to_string(),
                first.to_string(),
                last.to_string(),
                if failed { "1" } else { "0" }.to_owned(),
                i.last_error.clone().filter(|_| failed).unwrap_or_else(|| "ended".to_owned()),
            ];
            self.notify_stream(Trigger::RecordingEnd, &i.stream, fields);
        }
    }

    fn segment(&self, r: &tidecast_protocols::push::SegmentReport) {
        let fields = vec![
            r.stream.clone(),
            r.path.display().to_string(),
            r.end_ms.saturating_sub(r.start_ms).to_string(),
            r.start_ms.to_string(),
            r.end_ms.to_string(),
        ];
        self.notify_stream(Trigger::RecordingSegment, &r.stream, fields);
    }
}
