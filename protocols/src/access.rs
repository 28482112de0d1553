//! One admission path and one session type for every protocol.
//!
//! A protocol that wants to let a client publish or play asks its
//! [`AccessGate`] once, with a [`PublishRequest`] or a [`PlayRequest`]. The
//! gate (the control plane in the server, [`OpenGate`] in tests) checks
//! credentials, quotas and blocking triggers in one fixed order and answers
//! with a [`Session`] guard or a typed [`Refusal`] that the protocol maps to
//! its own wire answer (HTTP status, RTMP `NetStream` error, SRT reject code).
//!
//! The guard is the session. It carries the stream's settings, counts bytes
//! and frames with atomics the session owns (no lock on the media path),
//! holds the cancel handle a kick fires, and ends the session exactly once
//! when it is dropped, with the [`EndReason`] last set. Every live guard is
//! listed in the node's [`Sessions`] table; ended ones wait there, in a
//! bounded queue, for the control plane to turn them into end triggers. A
//! refused client never gets a guard, so it never ends a session.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A client asking to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest<'a> {
    /// `rtmp`, `srt`, `whip`...
    pub protocol: &'static str,
    /// The application or path prefix (`live` in `rtmp://host/live/key`).
    pub app: &'a str,
    /// What the client sent as the stream name or key, query string included.
    pub key: &'a str,
    /// The client's address.
    pub peer: SocketAddr,
}

/// A client asking to play.
#[derive(Debug, Clone)]
pub struct PlayRequest<'a> {
    /// `hls`, `ts`, `rtmp`, `srt`, `whep`...
    pub protocol: &'static str,
    /// The stream name asked for.
    pub stream: &'a str,
    /// The playback token, if the client sent one.
    pub token: Option<&'a str>,
    /// The client's address.
    pub peer: SocketAddr,
    /// What the client asked for, as triggers show it (`/hls/cam/index.m3u8`).
    pub url: &'a str,
}

/// Why a client was turned away. The text is shown to the client and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credential, or one nobody issued (HTTP 401).
    #[error("{0}")]
    Unauthorized(String),
    /// A credential that does not allow this, or a kicked session (403).
    #[error("{0}")]
    Forbidden(String),
    /// A tenant quota is used up (403).
    #[error("{0}")]
    Quota(String),
    /// Nothing to play under that name (404).
    #[error("{0}")]
    NotFound(String),
    /// The stream already has a publisher that may not be replaced (409).
    #[error("{0}")]
    Conflict(String),
    /// Too many failed attempts from this address (429).
    #[error("too many failed attempts; try again later")]
    RateLimited,
    /// A blocking trigger said no (403).
    #[error("{0}")]
    Trigger(String),
    /// The server could not decide (its store failed) (503).
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status an HTTP protocol answers this refusal with.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::Unauthorized(_) => 401,
            Refusal::Forbidden(_) | Refusal::Quota(_) | Refusal::Trigger(_) => 403,
            Refusal::NotFound(_) => 404,
            Refusal::Conflict(_) => 409,
            Refusal::RateLimited => 429,
            Refusal::Unavailable(_) => 503,
        }
    }

    /// The text shown to the client.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// The gate's answer: a live session, or a refusal. Asynchronous because the
/// control plane may ask a webhook.
pub type Admission<'a> = Pin<Box<dyn Future<Output = Result<Session, Refusal>> + Send + 'a>>;

/// The gate's answer to an HLS request: the session it belongs to.
pub type HlsAdmission<'a> = Pin<Box<dyn Future<Output = Result<Arc<SessionInfo>, Refusal>> + Send + 'a>>;

/// Decides who may publish or play which stream, and opens their sessions.
/// Implemented by the control plane.
pub trait AccessGate: Send + Sync + 'static {
    /// The check an HTTP protocol makes on every request, before it looks
    /// for anything to play: rate limit, then the playback token when the
    /// stream needs one. The stream's settings when it is configured.
    fn check_play(&self, stream: &str, token: Option<&str>, ip: IpAddr)
        -> Result<Option<Arc<StreamSettings>>, Refusal>;

    /// The session of an HLS request that passed [`AccessGate::check_play`]:
    /// the live one named by the `sid` the request carries (or, without a
    /// valid one, by the client's address, agent and token), touched; else
    /// one admitted now like [`AccessGate::admit_play`], once even when a
    /// player's first requests arrive together, and held until the player
    /// goes quiet. `fresh`: a multivariant playlist asked for without a
    /// `sid`, which starts a new player's session under a new id.
    fn hls_viewer<'a>(
        &'a self,
        req: PlayRequest<'a>,
        sid: Option<&'a str>,
        fresh: bool,
        agent: &'a str,
    ) -> HlsAdmission<'a>;

    /// Whether anyone may publish anything (no keys configured anywhere).
    fn open_publishing(&self) -> bool {
        false
    }

    /// A publisher's session on the internal stream its key names
    /// ([`Session::stream`]), or a refusal.
    fn admit_publish<'a>(&'a self, req: PublishRequest<'a>) -> Admission<'a>;

    /// A viewer's session on the stream it asked for, or a refusal. Ask only
    /// once the protocol knows it has something to play: a viewer refused
    /// for another reason must not have passed the triggers.
    fn admit_play<'a>(&'a self, req: PlayRequest<'a>) -> Admission<'a>;
}

/// Publish or play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends media in.
    Publisher,
    /// Receives media.
    Viewer,
}

/// Why a session ended, as the end trigger and the logs say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client left or the connection closed.
    Closed,
    /// An operator kicked it.
    Kicked,
    /// The stream it played ended.
    StreamEnded,
    /// An HLS viewer stopped asking for anything.
    Idle,
    /// A newer publisher took the stream over.
    Replaced,
    /// A quota cut it off (a publisher over `max_ingest_kbps`).
    Quota,
    /// A blocking trigger refused it after it started (STREAM_READY).
    Trigger,
    /// The server is shutting down.
    Shutdown,
    /// A protocol or media error closed it.
    Error(String),
}

impl EndReason {
    /// A short word for logs and trigger payloads.
    pub fn as_str(&self) -> &str {
        match self {
            EndReason::Closed => "closed",
            EndReason::Kicked => "kicked",
            EndReason::StreamEnded => "stream_ended",
            EndReason::Idle => "idle",
            EndReason::Replaced => "replaced",
            EndReason::Quota => "quota",
            EndReason::Trigger => "trigger",
            EndReason::Shutdown => "shutdown",
            EndReason::Error(e) => e,
        }
    }
}

/// What the control plane knows of a stream that the media side may need
/// (more of it arrives with DVR, transcoding and recording).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSettings {
    /// The owning tenant, when the stream is configured.
    pub tenant: Option<String>,
    /// The stream's labels.
    pub tags: Vec<String>,
    /// The transcode profile it selects.
    pub transcode_profile: Option<String>,
    /// Whether playback needs a token.
    pub playback_token_required: bool,
    /// How far back viewers may rewind, seconds (the stream's
    /// `buffer_secs`); `None`: the node's default.
    pub dvr_secs: Option<u32>,
}

impl Session {
    /// What the media side is told about the stream when this publisher
    /// starts it.
    pub fn publish_options(&self) -> tidecast_media::PublishOptions {
        let dvr = self.settings().dvr_secs.map(|s| std::time::Duration::from_secs(u64::from(s)));
        tidecast_media::PublishOptions { dvr }
    }
}

/// What a session is, shared between its guard and the table.
#[derive(Debug)]
pub struct SessionInfo {
    /// Unique among live sessions; publishers are `publish:{stream}`.
    pub id: String,
    /// Publish or play.
    pub role: Role,
    /// `rtmp`, `hls`, `srt`...
    pub protocol: &'static str,
    /// The internal stream name.
    pub stream: String,
    /// The stream's settings at admission.
    pub settings: Arc<StreamSettings>,
    /// The client's address.
    pub peer: SocketAddr,
    /// What it asked for.
    pub url: String,
    /// When it was admitted, Unix milliseconds.
    pub started_ms: i64,
    started: Instant,
    /// Bytes received from the client.
    pub bytes_in: AtomicU64,
    /// Bytes sent to the client.
    pub bytes_out: AtomicU64,
    /// Media frames received or sent.
    pub frames: AtomicU64,
    /// Milliseconds after the start of the last request (HLS) or byte.
    last_seen: AtomicU64,
    cancel: CancellationToken,
    reason: Mutex<Option<EndReason>>,
    /// Set once STREAM_END has counted this session's figures.
    tallied: AtomicBool,
    /// Set when the session has ended.
    ended: AtomicBool,
}

impl SessionInfo {
    /// How long it has lasted.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// The tenant of its stream.
    pub fn tenant(&self) -> Option<&str> {
        self.settings.tenant.as_deref()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Counts bytes received.
    pub fn count_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts bytes sent.
    pub fn count_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Marks the session active now (an HLS request).
    pub fn touch(&self) {
        self.last_seen.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last [`SessionInfo::touch`].
    pub fn idle(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last_seen.load(Ordering::Relaxed)))
    }

    /// Whether it was kicked or otherwise cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A live session. Dropping it ends the session, once, with its figures.
#[derive(Debug)]
pub struct Session {
    info: Arc<SessionInfo>,
    table: Sessions,
    /// Whether it counts as a viewer of its tenant (released at the end).
    counted: bool,
    /// Dropped without an end record (a session the protocol could not start).
    discarded: bool,
    /// The live session this one took the id of (a publisher reconnecting
    /// or trying to take a stream over), put back if this one is discarded.
    displaced: Option<Arc<SessionInfo>>,
}

impl Session {
    /// The session's description and counters.
    pub fn info(&self) -> &Arc<SessionInfo> {
        &self.info
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The internal stream name.
    pub fn stream(&self) -> &str {
        &self.info.stream
    }

    /// The stream's settings.
    pub fn settings(&self) -> &Arc<StreamSettings> {
        &self.info.settings
    }

    /// Counts bytes received.
    pub fn received(&self, n: usize) {
        self.info.count_in(n);
    }

    /// Counts bytes sent.
    pub fn sent(&self, n: usize) {
        self.info.count_out(n);
    }

    /// Sets the bytes received so far (a transport that counts them itself).
    pub fn set_received(&self, total: u64) {
        self.info.bytes_in.store(total, Ordering::Relaxed);
    }

    /// Counts one media frame.
    pub fn frame(&self) {
        self.info.frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves when the session is kicked.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.info.cancel.cancelled()
    }

    /// The kick handle (for a task that outlives a borrow of the guard).
    pub fn cancel_token(&self) -> CancellationToken {
        self.info.cancel.clone()
    }

    /// Records why the session is ending; the first reason set wins.
    pub fn end_with(&self, reason: EndReason) {
        let mut r = self.info.reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
    }

    /// Ends the session without an end record: the protocol could not start
    /// it after admission (say, the registry refused the publish).
    pub fn discard(mut self) {
        self.discarded = true;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.table.end(self);
    }
}

/// A session that ended, for the end triggers.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The session.
    pub info: Arc<SessionInfo>,
    /// Why it ended.
    pub reason: EndReason,
    /// How long it lasted.
    pub duration: Duration,
}

/// The figures of a stream's sessions, for STREAM_END.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Bytes sent to viewers.
    pub bytes_out: u64,
    /// Bytes received from publishers.
    pub bytes_in: u64,
    /// Viewer sessions.
    pub viewers: u64,
    /// Publisher sessions.
    pub inputs: u64,
    /// Viewer-seconds.
    pub viewer_seconds: u64,
}

impl Tally {
    fn add(&mut self, info: &SessionInfo, duration: Duration) {
        match info.role {
            Role::Viewer => {
                self.viewers += 1;
                self.bytes_out += info.sent();
                self.viewer_seconds += duration.as_secs();
            }
            Role::Publisher => {
                self.inputs += 1;
                self.bytes_in += info.received();
            }
        }
    }
}

/// Ended sessions kept for the control plane at most; older ones are
/// dropped (and counted) if it falls behind.
pub const ENDED_QUEUE: usize = 65_536;
/// A kicked keyed session (HLS) stays refused this long.
pub const KICK_HOLD: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Inner {
    live: RwLock<HashMap<String, Arc<SessionInfo>>>,
    /// Viewers per tenant (live and admitted-but-pending).
    tenant_viewers: Mutex<HashMap<String, usize>>,
    ended: Mutex<VecDeque<Ended>>,
    ended_dropped: AtomicU64,
    /// Ended sessions' figures per stream, until its STREAM_END takes them.
    tallies: Mutex<HashMap<String, Tally>>,
    /// Sessions the table itself holds (HLS, which has no connection), by key.
    held: Mutex<HashMap<String, Session>>,
    kicked: Mutex<HashMap<String, Instant>>,
}

/// Every session of a node. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Inner>,
}

/// A viewer slot of a tenant, taken before the blocking triggers run; it
/// becomes the session or is given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    table: Sessions,
    tenant: Option<String>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(t) = self.tenant.take() {
            self.table.release_viewer(&t);
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A fresh session id: 16 hex digits.
pub fn new_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// What a new session is.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The id; [`new_id`] for connections.
    pub id: String,
    /// Publish or play.
    pub role: Role,
    /// The protocol.
    pub protocol: &'static str,
    /// The internal stream name.
    pub stream: String,
    /// The stream's settings.
    pub settings: Arc<StreamSettings>,
    /// The client's address.
    pub peer: SocketAddr,
    /// What it asked for.
    pub url: String,
}

impl Sessions {
    /// An empty table.
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// Takes a viewer slot of `tenant` if fewer than `max` are taken
    /// (`None`: no limit). Check and take are one step, so two viewers
    /// admitted at once cannot both take the last slot.
    pub fn reserve_viewer(&self, tenant: Option<&str>, max: Option<u32>) -> Option<Reservation> {
        let Some(t) = tenant else { return Some(Reservation { table: self.clone(), tenant: None }) };
        let mut m = self.inner.tenant_viewers.lock();
        let n = m.entry(t.to_owned()).or_default();
        if max.is_some_and(|max| *n >= max as usize) {
            if *n == 0 {
                m.remove(t);
            }
            return None;
        }
        *n += 1;
        Some(Reservation { table: self.clone(), tenant: Some(t.to_owned()) })
    }

    fn release_viewer(&self, tenant: &str) {
        let mut m = self.inner.tenant_viewers.lock();
        if let Some(n) = m.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(tenant);
            }
        }
    }

    /// Viewers of a tenant's streams now (admitted or being admitted).
    pub fn tenant_viewers(&self, tenant: &str) -> usize {
        self.inner.tenant_viewers.lock().get(tenant).copied().unwrap_or(0)
    }

    /// Opens a session: it is listed from now on. A viewer's `reservation`
    /// becomes its slot, released when the session ends.
    pub fn open(&self, new: NewSession, reservation: Option<Reservation>) -> Session {
        let info = Arc::new(SessionInfo {
            id: new.id,
            role: new.role,
            protocol: new.protocol,
            stream: new.stream,
            settings: new.settings,
            peer: new.peer,
            url: new.url,
            started_ms: now_ms(),
            started: Instant::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            last_seen: AtomicU64::new(0),
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            tallied: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        });
        let counted = match reservation {
            Some(mut r) => r.tenant.take().is_some(),
            None => false,
        };
        // A newer publisher of the same stream takes the id over; the older
        // one's end removes only its own entry.
        let displaced = self.inner.live.write().insert(info.id.clone(), info.clone());
        Session { info, table: self.clone(), counted, discarded: false, displaced }
    }

    fn end(&self, s: &Session) {
        // The tallies' lock is held from leaving `live` to being counted, so
        // a STREAM_END in between (`close_tally`) sees this session in one
        // place or the other, never in neither.
        let mut tallies = self.inner.tallies.lock();
        s.info.ended.store(true, Ordering::Relaxed);
        {
            let mut live = self.inner.live.write();
            if live.get(&s.info.id).is_some_and(|x| Arc::ptr_eq(x, &s.info)) {
                match s.displaced.as_ref().filter(|d| s.discarded && !d.ended.load(Ordering::Relaxed)) {
                    // A refused takeover: the session it displaced is live again.
                    Some(d) => {
                        live.insert(s.info.id.clone(), d.clone());
                    }
                    None => {
                        live.remove(&s.info.id);
                    }
                }
            }
        }
        if s.counted {
            if let Some(t) = s.info.tenant() {
                self.release_viewer(t);
            }
        }
        if s.discarded {
            return;
        }
        let reason = s.info.reason.lock().take().unwrap_or(EndReason::Closed);
        let duration = match s.info.protocol {
            // An HLS viewer's session lasts until its last request.
            "hls" | "dash" => Duration::from_millis(s.info.last_seen.load(Ordering::Relaxed)),
            _ => s.info.age(),
        };
        if !s.info.tallied.swap(true, Ordering::Relaxed) {
            tallies.entry(s.info.stream.clone()).or_default().add(&s.info, duration);
        }
        drop(tallies);
        let mut ended = self.inner.ended.lock();
        if ended.len() >= ENDED_QUEUE {
            ended.pop_front();
            self.inner.ended_dropped.fetch_add(1, Ordering::Relaxed);
        }
        ended.push_back(Ended { info: s.info.clone(), reason, duration });
    }

    /// Every session that ended since the last call, oldest first.
    pub fn take_ended(&self) -> Vec<Ended> {
        self.inner.ended.lock().drain(..).collect()
    }

    /// Ended sessions dropped because nobody collected them in time.
    pub fn ended_dropped(&self) -> u64 {
        self.inner.ended_dropped.load(Ordering::Relaxed)
    }

    /// The figures of every session of `stream` so far, ended and live;
    /// live ones are marked so that their own end does not count them again.
    /// Called once, when the stream ends.
    pub fn close_tally(&self, stream: &str) -> Tally {
        let mut tallies = self.inner.tallies.lock();
        let mut tally = tallies.remove(stream).unwrap_or_default();
        for s in self.inner.live.read().values().filter(|s| s.stream == stream) {
            if !s.tallied.swap(true, Ordering::Relaxed) {
                tally.add(s, s.age());
            }
        }
        tally
    }

    /// Forgets the tallies of streams `keep` says are gone (sessions that
    /// ended after their stream's STREAM_END, or an end announcement lost).
    pub fn prune_tallies(&self, keep: impl Fn(&str) -> bool) {
        self.inner.tallies.lock().retain(|name, _| keep(name));
    }

    /// One live session.
    pub fn get(&self, id: &str) -> Option<Arc<SessionInfo>> {
        self.inner.live.read().get(id).cloned()
    }

    /// Every live session, by id.
    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self.inner.live.read().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Live viewers by stream, then protocol.
    pub fn viewer_counts(&self) -> HashMap<String, HashMap<&'static str, u64>> {
        let mut out: HashMap<String, HashMap<&'static str, u64>> = HashMap::new();
        for s in self.inner.live.read().values().filter(|s| s.role == Role::Viewer) {
            *out.entry(s.stream.clone()).or_default().entry(s.protocol).or_default() += 1;
        }
        out
    }

    /// Keeps `session` in the table until [`Sessions::sweep_idle`] or a kick
    /// ends it (HLS viewers, who hold no connection).
    pub fn hold(&self, session: Session) {
        let key = session.id().to_owned();
        let mut held = self.inner.held.lock();
        // An id already held keeps its session; a second one never replaces
        // (and so never ends) it.
        if let std::collections::hash_map::Entry::Vacant(v) = held.entry(key) {
            v.insert(session);
        } else {
            drop(held);
            session.discard();
        }
    }

    /// Ends held sessions idle for `idle` or longer.
    pub fn sweep_idle(&self, idle: Duration) {
        let gone: Vec<Session> = {
            let mut held = self.inner.held.lock();
            let ids: Vec<String> = held.iter().filter(|(_, s)| s.info.idle() >= idle).map(|(k, _)| k.clone()).collect();
            ids.iter().filter_map(|k| held.remove(k)).collect()
        };
        for s in gone {
            s.end_with(EndReason::Idle);
        }
        let mut kicked = self.inner.kicked.lock();
        kicked.retain(|_, at| at.elapsed() < KICK_HOLD);
    }

    /// Whether a keyed (HLS) session id was kicked lately.
    pub fn is_kicked(&self, id: &str) -> bool {
        let kicked = self.inner.kicked.lock();
        kicked.get(id).is_some_and(|at| at.elapsed() < KICK_HOLD)
    }

    /// Kicks a live session: its cancel handle fires (the protocol closes
    /// the connection) and a held session ends now and stays refused for
    /// [`KICK_HOLD`]. False if no such session is live.
    pub fn kick(&self, id: &str) -> bool {
        self.close(id, EndReason::Kicked)
    }

    /// Closes the live publisher sessions of `stream` for `reason` (a quota
    /// or a trigger cut the stream off). Returns how many there were.
    pub fn close_publishers(&self, stream: &str, reason: EndReason) -> usize {
        let ids: Vec<String> = self
            .inner
            .live
            .read()
            .values()
            .filter(|s| s.role == Role::Publisher && s.stream == stream)
            .map(|s| s.id.clone())
            .collect();
        ids.iter().filter(|id| self.close(id, reason.clone())).count()
    }

    /// Closes a live session for `reason` (kept if it already had one).
    fn close(&self, id: &str, reason: EndReason) -> bool {
        let Some(info) = self.get(id) else { return false };
        info.reason.lock().get_or_insert(reason);
        info.cancel.cancel();
        let held = self.inner.held.lock().remove(id);
        if held.is_some() {
            self.inner.kicked.lock().insert(id.to_owned(), Instant::now());
        }
        drop(held);
        true
    }
}

/// A gate that lets anyone publish and play anything (tests, and a node
/// with no control plane); its sessions are listed in `sessions`.
#[derive(Debug, Clone, Default)]
pub struct OpenGate {
    /// Where its sessions are listed.
    pub sessions: Sessions,
}

impl OpenGate {
    fn open(&self, role: Role, protocol: &'static str, stream: &str, peer: SocketAddr, url: &str) -> Session {
        let id = match role {
            Role::Publisher => format!("publish:{stream}"),
            Role::Viewer => new_id(),
        };
        let new = NewSession {
            id,
            role,
            protocol,
            stream: stream.to_owned(),
            settings: Arc::default(),
            peer,
            url: url.to_owned(),
        };
        self.sessions.open(new, None)
    }
}

impl AccessGate for OpenGate {
    fn check_play(&self, _: &str, _: Option<&str>, _: IpAddr) -> Result<Option<Arc<StreamSettings>>, Refusal> {
        Ok(None)
    }

    fn hls_viewer<'a>(
        &'a self,
        req: PlayRequest<'a>,
        sid: Option<&'a str>,
        fresh: bool,
        agent: &'a str,
    ) -> HlsAdmission<'a> {
        Box::pin(async move {
            let id = match sid {
                Some(s) => s.to_owned(),
                None if fresh => new_id(),
                None => format!("{}-{}-{agent}", req.stream, req.peer.ip()),
            };
            if let Some(info) = self.sessions.get(&id) {
                info.touch();
                return Ok(info);
            }
            let new = NewSession {
                id: id.clone(),
                role: Role::Viewer,
                protocol: req.protocol,
                stream: req.stream.to_owned(),
                settings: Arc::default(),
                peer: req.peer,
                url: req.url.to_owned(),
            };
            let s = self.sessions.open(new, None);
            let info = s.info().clone();
            self.sessions.hold(s);
            Ok(info)
        })
    }

    fn open_publishing(&self) -> bool {
        true
    }

    fn admit_publish<'a>(&'a self, req: PublishRequest<'a>) -> Admission<'a> {
        let name = req.key.split('?').next().unwrap_or_default().to_owned();
        Box::pin(async move {
            if name.is_empty() {
                return Err(Refusal::Unauthorized("no stream name".into()));
            }
            Ok(self.open(Role::Publisher, req.protocol, &name, req.peer, req.key))
        })
    }

    fn admit_play<'a>(&'a self, req: PlayRequest<'a>) -> Admission<'a> {
        Box::pin(async move { Ok(self.open(Role::Viewer, req.protocol, req.stream, req.peer, req.url)) })
    }
}

/// Stream names are path segments in playback URLs (and folder names for
/// what the node writes per stream): keep them plain.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'))
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(table: &Sessions, stream: &str, tenant: Option<&str>, r: Option<Reservation>) -> Session {
        let settings = Arc::new(StreamSettings { tenant: tenant.map(str::to_owned), ..Default::default() });
        let new = NewSession {
            id: new_id(),
            role: Role::Viewer,
            protocol: "ts",
            stream: stream.into(),
            settings,
            peer: "127.0.0.1:9".parse().unwrap(),
            url: "/ts/cam.ts".into(),
        };
        table.open(new, r)
    }

    #[test]
    fn a_quota_slot_is_taken_once_and_given_back_by_the_session_or_the_reservation() {
        let t = Sessions::new();
        let r = t.reserve_viewer(Some("acme"), Some(1)).expect("the first slot");
        assert!(t.reserve_viewer(Some("acme"), Some(1)).is_none(), "the reservation holds the slot");
        let s = viewer(&t, "cam", Some("acme"), Some(r));
        assert_eq!(t.tenant_viewers("acme"), 1);
        assert!(t.reserve_viewer(Some("acme"), Some(1)).is_none());
        drop(s);
        assert_eq!(t.tenant_viewers("acme"), 0);
        let r = t.reserve_viewer(Some("acme"), Some(1)).expect("free again");
        drop(r);
        assert_eq!(t.tenant_viewers("acme"), 0, "a refused viewer gives its slot back");
        assert!(t.take_ended().len() == 1, "only the admitted session ended");
    }

    #[test]
    fn a_session_ends_once_with_its_figures_and_the_stream_tally_counts_it_once() {
        let t = Sessions::new();
        let a = viewer(&t, "cam", None, None);
        let b = viewer(&t, "cam", None, None);
        a.sent(100);
        b.sent(50);
        assert_eq!(t.list().len(), 2);
        a.end_with(EndReason::Closed);
        drop(a);
        let ended = t.take_ended();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].info.sent(), 100);
        // The stream ends while b is live: both count, b only once.
        let tally = t.close_tally("cam");
        assert_eq!((tally.viewers, tally.bytes_out), (2, 150));
        drop(b);
        assert_eq!(t.close_tally("cam"), Tally::default());
        assert_eq!(t.take_ended().len(), 1, "b still ends");
    }

    #[test]
    fn kicks_cancel_connections_and_end_held_sessions_that_stay_refused() {
        let t = Sessions::new();
        let conn = viewer(&t, "cam", None, None);
        assert!(t.kick(conn.id()));
        assert!(conn.info().is_cancelled());
        drop(conn);
        assert_eq!(t.take_ended()[0].reason, EndReason::Kicked);

        let held = viewer(&t, "cam", None, None);
        let id = held.id().to_owned();
        t.hold(held);
        assert!(t.get(&id).is_some());
        assert!(t.kick(&id));
        assert!(t.get(&id).is_none(), "a held session ends at once");
        assert!(t.is_kicked(&id));
        assert!(!t.kick(&id), "only once");
        assert_eq!(t.take_ended().len(), 1);
    }

    #[test]
    fn a_refused_takeover_leaves_the_live_publisher_listed() {
        let t = Sessions::new();
        let publisher = |t: &Sessions| {
            let new = NewSession {
                id: "publish:cam".into(),
                role: Role::Publisher,
                protocol: "rtmp",
                stream: "cam".into(),
                settings: Arc::default(),
                peer: "127.0.0.1:9".parse().unwrap(),
                url: "rtmp://x/live".into(),
            };
            t.open(new, None)
        };
        let live = publisher(&t);
        let refused = publisher(&t);
        refused.discard();
        assert!(t.get("publish:cam").is_some_and(|i| Arc::ptr_eq(&i, live.info())), "still listed, still kickable");
        drop(live);
        assert!(t.get("publish:cam").is_none());
        assert_eq!(t.take_ended().len(), 1, "only the live one ended");
    }

    #[test]
    fn a_discarded_session_leaves_no_record() {
        let t = Sessions::new();
        let s = viewer(&t, "cam", None, None);
        s.discard();
        assert!(t.list().is_empty());
        assert!(t.take_ended().is_empty());
        assert_eq!(t.close_tally("cam"), Tally::default());
    }
}
