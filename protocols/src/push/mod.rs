//! Push targets: a live stream restreamed to another server or recorded
//! into a file, the way MistServer treats both (a recording is a push to a
//! file). Each push reads the stream like any viewer, from its newest
//! keyframe, through the FLV egress RTMP players use, and keeps going
//! until the stream ends or the push is stopped.
//!
//! - **Bounded**: a push reads the stream's ring; one that cannot keep up
//!   (a slow target) falls behind, jumps to the newest keyframe and the
//!   skipped frames are counted, on the push and on the stream. It never
//!   holds the stream, its viewers or other pushes back.
//! - **Reconnects**: a restream whose target fails (refused, unreachable,
//!   closed) tries again after 1 s, doubling to 30 s, for as long as the
//!   stream lives; the reconnects and the last error are in its status. A
//!   recording that fails to write stops (a fresh file would overwrite or
//!   split it), with the error in its status.
//! - **Started** from a stream's `push_targets` when the stream starts, or
//!   on demand ([`PushManager::start`]).

pub mod mp4;
mod record;
mod restream;
mod s3;
pub mod select;
pub mod target;
pub mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use tidecast_media::{Registry, RegistryEvent, Stream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use s3::S3Config;

/// How pushes reach what is outside: S3 for `s3://` targets, and the
/// certificates trusted beyond the public roots for `rtmps://` and
/// `whip+https://` (a private CA, [`tls::read_ca_file`]).
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// S3 for `s3://` targets.
    pub s3: S3Config,
    /// Extra trusted CA certificates.
    pub ca_certs: Vec<tokio_rustls::rustls::pki_types::CertificateDer<'static>>,
}
pub use target::{Target, TargetError};

/// How a push came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The stream's `push_targets`, started with the stream.
    Stream,
    /// The pushes API.
    Api,
    /// An auto-push rule, started with a stream it matches.
    Rule,
}

impl Origin {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Stream => "stream",
            Origin::Api => "api",
            Origin::Rule => "rule",
        }
    }
}

/// Where a push is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PushState {
    /// Connecting to the target or opening the file.
    Connecting,
    /// Sending media.
    Live,
    /// Waiting to reconnect after a failure.
    Waiting,
    /// Ended: the stream ended, or the push was stopped.
    Stopped,
    /// Ended on an error it does not retry (a recording that cannot write).
    Failed,
}

impl PushState {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Connecting => "connecting",
            PushState::Live => "live",
            PushState::Waiting => "waiting",
            PushState::Stopped => "stopped",
            PushState::Failed => "failed",
        }
    }
}

/// A push's figures, as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct PushInfo {
    /// Its id on this node.
    pub id: u64,
    /// The stream it reads.
    pub stream: String,
    /// The stream's tenant, if any.
    pub tenant: Option<String>,
    /// The target as given, variables filled in.
    pub target: String,
    /// `rtmp`, `srt`, `whip` or `file` ([`Target::kind`]).
    pub kind: &'static str,
    /// How it started.
    pub origin: Origin,
    /// Where it is.
    pub state: PushState,
    /// Media bytes sent or written.
    pub bytes: u64,
    /// Failures after which it connected again (or tries to).
    pub reconnects: u64,
    /// Frames it skipped because the target was too slow.
    pub frames_skipped: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Files uploaded (`s3://` targets).
    pub uploads: u64,
    /// When it started, Unix seconds.
    pub started_at: u64,
}

struct Push {
    info: Arc<Mutex<PushInfo>>,
    cancel: CancellationToken,
    /// Media timestamps of the first and last tag sent, and the last log
    /// lines.
    media: Mutex<(Option<u32>, Option<u32>, std::collections::VecDeque<String>)>,
}

/// Log lines a push keeps for its `PUSH_END`.
const LOG_LINES: usize = 10;

impl Push {
    fn set(&self, f: impl FnOnce(&mut PushInfo)) {
        f(&mut self.info.lock());
    }

    /// Its figures, for a callback that outlives a borrow of the push.
    fn info_handle(&self) -> Arc<Mutex<PushInfo>> {
        self.info.clone()
    }

    fn log(&self, line: String) {
        let mut m = self.media.lock();
        if m.2.len() == LOG_LINES {
            m.2.pop_front();
        }
        m.2.push_back(line);
    }

    fn sent_at(&self, ts: u32) {
        let mut m = self.media.lock();
        m.0.get_or_insert(ts);
        m.1 = Some(ts);
    }
}

/// Why a push could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The target is not usable.
    Target(TargetError),
    /// No such live stream.
    NotLive(String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Target(e) => e.fmt(f),
            PushError::NotLive(s) => write!(f, "no live stream {s:?}"),
        }
    }
}

impl std::error::Error for PushError {}

/// What the control plane does around pushes: MistServer's push
/// triggers.
pub trait PushHooks: Send + Sync + 'static {
    /// Before a push connects (`PUSH_OUT_START`): the target to use
    /// instead, or `None` to refuse the push. Without handlers, `target`.
    fn out_start(
        &self,
        stream: &str,
        target: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + '_>>;

    /// When a push has ended (`PUSH_END`, and `RECORDING_END` for a
    /// recording).
    fn ended(&self, report: &PushReport);

    /// When a split recording finished one of its files
    /// (`RECORDING_SEGMENT`).
    fn segment(&self, _report: &SegmentReport) {}
}

/// One finished file of a split recording: what the FrameWorks fork of
/// MistServer sends in `RECORDING_SEGMENT` (stream, path, duration, start
/// and end in media milliseconds).
#[derive(Debug, Clone)]
pub struct SegmentReport {
    /// The push.
    pub push_id: u64,
    /// The stream recorded.
    pub stream: String,
    /// The file.
    pub path: PathBuf,
    /// Its number (`$segmentCounter`).
    pub counter: u64,
    /// Its container.
    pub container: &'static str,
    /// Media time of its first frame, ms (the stream's clock).
    pub start_ms: u64,
    /// Media time where it ends, ms: the next file's first frame, or the
    /// last frame of the recording.
    pub end_ms: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// When it was closed, Unix ms.
    pub closed_unix_ms: u64,
}

/// Hooks that do nothing (tests, tools).
pub struct NoHooks;

impl PushHooks for NoHooks {
    fn out_start(
        &self,
        _: &str,
        target: &str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + '_>> {
        let target = target.to_owned();
        Box::pin(async move { Some(target) })
    }

    fn ended(&self, _: &PushReport) {}
}

/// A finished push, for the end triggers.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// Its figures at the end.
    pub info: PushInfo,
    /// The target before `PUSH_OUT_START` rewrote it.
    pub target_before: String,
    /// Whether it was a recording (a file target), and its container.
    pub recording: Option<&'static str>,
    /// When it ended, Unix seconds.
    pub ended_at: u64,
    /// Media timestamps of the first and last tag sent, ms.
    pub first_ms: Option<u32>,
    /// See `first_ms`.
    pub last_ms: Option<u32>,
    /// Its last log lines, oldest first.
    pub log: Vec<String>,
}

/// A starting stream's targets (its own, and its rules'), each with where
/// it came from, and its tenant.
pub type TargetsFor = Box<dyn Fn(&str) -> (Vec<(String, Origin)>, Option<String>) + Send + Sync>;

/// Every push of this node.
pub struct PushManager {
    registry: Registry,
    /// The streams' MPEG-TS form, which SRT pushes send.
    ts: Arc<crate::mpegts::output::TsHub>,
    /// The WebRTC edge, whose packetized playouts WHIP pushes send.
    webrtc: Option<Arc<crate::webrtc::WebRtcHub>>,
    /// For WHIP offers.
    http: reqwest::Client,
    /// For `rtmps://`.
    tls: Option<tokio_rustls::TlsConnector>,
    hooks: Arc<dyn PushHooks>,
    root: PathBuf,
    targets_for: TargetsFor,
    /// S3 clients for `s3://` targets.
    s3: Arc<s3::Stores>,
    pushes: Mutex<BTreeMap<u64, Arc<Push>>>,
    /// The running pushes' tasks, awaited at shutdown.
    tasks: tokio_util::task::TaskTracker,
    next: AtomicU64,
    shutdown: CancellationToken,
}

/// How long an ended push stays listed.
const KEEP_ENDED: Duration = Duration::from_secs(300);
/// Ended pushes kept listed at most.
const MAX_ENDED: usize = 256;

impl PushManager {
    /// A manager recording under `root` (and reaching S3 and TLS targets as
    /// `options` says), asking `targets_for` for a starting stream's configured
    /// targets, with `hooks` around each push. WHIP pushes need `webrtc`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        registry: Registry,
        ts: Arc<crate::mpegts::output::TsHub>,
        webrtc: Option<Arc<crate::webrtc::WebRtcHub>>,
        root: PathBuf,
        options: PushOptions,
        targets_for: TargetsFor,
        hooks: Arc<dyn PushHooks>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(PushManager {
            registry,
            ts,
            webrtc,
            http: http_client(&options.ca_certs),
            tls: match tls::connector(&options.ca_certs) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "rtmps:// pushes are unavailable");
                    None
                }
            },
            hooks,
            root,
            targets_for,
            s3: Arc::new(s3::Stores::new(options.s3)),
            pushes: Mutex::new(BTreeMap::new()),
            tasks: tokio_util::task::TaskTracker::new(),
            next: AtomicU64::new(1),
            shutdown,
        })
    }

    /// The recording root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts each stream's configured targets when it starts, until
    /// shutdown.
    pub async fn run(self: Arc<Self>) {
        let mut events = self.registry.events();
        loop {
            let ev = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                ev = events.recv() => ev,
            };
            match ev {
                Ok(RegistryEvent::Started(stream)) => {
                    let (targets, tenant) = (self.targets_for)(stream.name());
                    for (t, origin) in targets {
                        if let Err(e) = self.start_on(&stream, &t, origin, tenant.clone()) {
                            warn!(stream = stream.name(), target = %target::redacted(&t), error = %e, "push target not started");
                        }
                    }
                }
                Ok(RegistryEvent::Ended(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(missed = n, "push manager missed stream events");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Starts pushing the live stream `stream` to `target` (variables
    /// filled in here).
    pub fn start(
        self: &Arc<Self>,
        stream: &str,
        target: &str,
        origin: Origin,
        tenant: Option<String>,
    ) -> Result<PushInfo, PushError> {
        let live =
            self.registry.get(stream).filter(|s| !s.is_ended()).ok_or_else(|| PushError::NotLive(stream.into()))?;
        self.start_on(&live, target, origin, tenant)
    }

    fn start_on(
        self: &Arc<Self>,
        stream: &Arc<Stream>,
        template: &str,
        origin: Origin,
        tenant: Option<String>,
    ) -> Result<PushInfo, PushError> {
        let now = unix_now();
        let datetime = target::datetime(now);
        let vars = target::Vars {
            stream: stream.name(),
            tenant: tenant.as_deref().unwrap_or(""),
            datetime: &datetime,
            segment: None,
        };
        let expanded = target::expand(template, &vars);
        let parsed = parse(&expanded, &self.root).map_err(PushError::Target)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let info = PushInfo {
            id,
            stream: stream.name().to_owned(),
            tenant,
            target: expanded,
            kind: parsed.0.kind(),
            origin,
            state: PushState::Connecting,
            bytes: 0,
            reconnects: 0,
            frames_skipped: 0,
            last_error: None,
            uploads: 0,
            started_at: now,
        };
        let push = Arc::new(Push {
            info: Arc::new(Mutex::new(info.clone())),
            cancel: self.shutdown.child_token(),
            media: Mutex::default(),
        });
        {
            let mut all = self.pushes.lock();
            prune(&mut all);
            all.insert(id, push.clone());
        }
        info!(id, stream = stream.name(), target = %target::redacted(&info.target), "push started");
        let deps = Deps {
            root: self.root.clone(),
            hooks: self.hooks.clone(),
            ts: self.ts.clone(),
            s3: self.s3.clone(),
            webrtc: self.webrtc.clone(),
            http: self.http.clone(),
            tls: self.tls.clone(),
        };
        self.tasks.spawn(run_push(push, stream.clone(), parsed, deps));
        Ok(info)
    }

    /// Whether `template` would make a usable target (its variables filled
    /// in with sample values), for rules checked when they are made.
    pub fn check(&self, template: &str) -> Result<(), TargetError> {
        let vars = target::Vars { stream: "stream", tenant: "tenant", datetime: "2026.01.01.00.00.00", segment: None };
        parse(&target::expand(template, &vars), &self.root).map(|_| ())
    }

    /// Waits for every push to end (at shutdown, once they were told to
    /// stop): recordings close their files (and finish their faststart
    /// rewrites and uploads), restreams unpublish, and each raises its end
    /// triggers. Starts no more pushes.
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Stops a push; false if there is none by that id.
    pub fn stop(&self, id: u64) -> bool {
        let Some(p) = self.pushes.lock().get(&id).cloned() else { return false };
        p.cancel.cancel();
        true
    }

    /// Every push, running and recently ended, by id.
    pub fn list(&self) -> Vec<PushInfo> {
        self.pushes.lock().values().map(|p| p.info.lock().clone()).collect()
    }

    /// One push.
    pub fn get(&self, id: u64) -> Option<PushInfo> {
        self.pushes.lock().get(&id).map(|p| p.info.lock().clone())
    }
}

/// Drops ended pushes older than [`KEEP_ENDED`], and the oldest ended ones
/// beyond [`MAX_ENDED`].
fn prune(all: &mut BTreeMap<u64, Arc<Push>>) {
    let now = unix_now();
    let ended = |p: &Push| matches!(p.info.lock().state, PushState::Stopped | PushState::Failed);
    all.retain(|_, p| !(ended(p) && p.info.lock().started_at + KEEP_ENDED.as_secs() < now));
    let mut surplus = all.values().filter(|p| ended(p)).count().saturating_sub(MAX_ENDED);
    all.retain(|_, p| {
        if surplus > 0 && ended(p) {
            surplus -= 1;
            return false;
        }
        true
    });
}

/// The HTTP client of WHIP pushes: the public roots and `extra` trusted.
fn http_client(extra: &[tokio_rustls::rustls::pki_types::CertificateDer<'static>]) -> reqwest::Client {
    let mut b = reqwest::Client::builder();
    for c in extra {
        match reqwest::Certificate::from_der(c.as_ref()) {
            Ok(cert) => b = b.add_root_certificate(cert),
            Err(e) => warn!(error = %e, "a CA certificate is unusable for WHIP pushes"),
        }
    }
    b.build().unwrap_or_else(|e| {
        warn!(error = %e, "WHIP push client with default settings");
        reqwest::Client::new()
    })
}

/// The stream's tracks once it has shown all of them: when a reader sees
/// its first frame (a publisher announces its tracks one by one, all
/// before its first frame; a stream already flowing shows its newest
/// keyframe at once). `None` if the stream ends, `cancel` fires or `wait`
/// passes first.
pub(crate) async fn first_tracks(
    stream: &Arc<Stream>,
    cancel: &CancellationToken,
    wait: Duration,
) -> Option<Arc<[tidecast_media::Track]>> {
    let mut sub = stream.subscribe();
    let shown = async {
        while let Some(ev) = sub.recv().await {
            if matches!(ev, tidecast_media::Event::Frame(_)) {
                return Some(stream.tracks());
            }
        }
        None
    };
    tokio::select! {
        r = tokio::time::timeout(wait, shown) => r.ok().flatten().filter(|t| !t.is_empty()),
        _ = cancel.cancelled() => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How one attempt at a push ended.
enum Attempt {
    /// The stream ended or the push was stopped: done.
    Done,
    /// A failure worth another try.
    Retry(String),
    /// A failure not worth another try.
    Fatal(String),
}

/// What a push's task needs of its manager.
struct Deps {
    root: PathBuf,
    hooks: Arc<dyn PushHooks>,
    ts: Arc<crate::mpegts::output::TsHub>,
    s3: Arc<s3::Stores>,
    webrtc: Option<Arc<crate::webrtc::WebRtcHub>>,
    http: reqwest::Client,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// A target and its track selection ([`select::take`]).
fn parse(target: &str, root: &Path) -> Result<(Target, select::Selection), TargetError> {
    let (rest, selection) = select::take(target)?;
    Ok((Target::parse(&rest, root)?, selection))
}

async fn run_push(push: Arc<Push>, stream: Arc<Stream>, target: (Target, select::Selection), deps: Deps) {
    let Deps { root, hooks, .. } = &deps;
    let (root, hooks) = (root.clone(), hooks.clone());
    let before = push.info.lock().target.clone();
    // PUSH_OUT_START may move or refuse the push; what it answers is
    // checked like any target.
    let target = match hooks.out_start(stream.name(), &before).await {
        None => Err("refused by PUSH_OUT_START".to_owned()),
        Some(t) if t == before => Ok(target),
        Some(t) => {
            push.set(|i| i.target = t.clone());
            let parsed = parse(&t, &root).map_err(|e| format!("PUSH_OUT_START answered a bad target: {e}"));
            if let Ok((p, _)) = &parsed {
                push.set(|i| i.kind = p.kind());
            }
            parsed
        }
    };
    let recording = match &target {
        Ok((Target::File(f), _)) => Some(f.container.as_str()),
        _ => None,
    };
    match target {
        Ok((target, selection)) => {
            if selection.audio == select::Pick::Codec(tidecast_media::Codec::Opus) {
                stream.demand(tidecast_media::Demand::OpusAudio);
            }
            attempts(&push, &stream, &target, selection, &deps).await
        }
        Err(e) => {
            warn!(stream = stream.name(), error = %e, "push not started");
            push.log(e.clone());
            push.set(|i| {
                i.state = PushState::Failed;
                i.last_error = Some(e);
            });
        }
    }
    let info = push.info.lock().clone();
    info!(id = info.id, stream = %info.stream, target = %target::redacted(&info.target), bytes = info.bytes, reconnects = info.reconnects, "push ended");
    let (first_ms, last_ms, log) = {
        let m = push.media.lock();
        (m.0, m.1, m.2.iter().cloned().collect())
    };
    hooks.ended(&PushReport { info, target_before: before, recording, ended_at: unix_now(), first_ms, last_ms, log });
}

/// Tries a push until the stream ends, it is stopped, or it fails for good.
async fn attempts(push: &Arc<Push>, stream: &Arc<Stream>, target: &Target, sel: select::Selection, deps: &Deps) {
    let mut backoff = Duration::from_secs(1);
    loop {
        push.set(|i| i.state = PushState::Connecting);
        let attempt = match target {
            Target::Rtmp(t) => restream::rtmp_push(push, stream, t, sel, deps.tls.as_ref()).await,
            Target::Srt(t) => restream::srt_push(push, stream, &deps.ts, t, sel).await,
            Target::File(f) => record::record(push, stream, f, sel, deps).await,
            Target::Whip(t) => restream::whip_push(push, stream, t, sel, deps).await,
        };
        match attempt {
            Attempt::Done => {
                push.log("ended".into());
                push.set(|i| i.state = PushState::Stopped);
                return;
            }
            Attempt::Fatal(e) => {
                warn!(stream = stream.name(), error = %e, "push failed");
                push.log(e.clone());
                push.set(|i| {
                    i.state = PushState::Failed;
                    i.last_error = Some(e);
                });
                return;
            }
            Attempt::Retry(e) => {
                info!(stream = stream.name(), error = %e, wait = ?backoff, "push target failed; trying again");
                push.log(e.clone());
                push.set(|i| {
                    i.state = PushState::Waiting;
                    i.last_error = Some(e);
                    i.reconnects += 1;
                });
                // Wait, looking once a second whether the stream ended.
                let until = tokio::time::Instant::now() + backoff;
                let mut stop = false;
                while !stop && tokio::time::Instant::now() < until {
                    let step = until.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(1));
                    tokio::select! {
                        _ = tokio::time::sleep(step) => stop = stream.is_ended(),
                        _ = push.cancel.cancelled() => stop = true,
                    }
                }
                if stop {
                    push.set(|i| i.state = PushState::Stopped);
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
