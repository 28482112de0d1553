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
mod s3;
pub mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::Serialize;
use tidecast_media::{Registry, RegistryEvent, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::flv::egress::{FlvEgress, FlvFile, TagSink};
use crate::flv::TagKind;
use crate::rtmp::ClientSession;
pub use s3::S3Config;
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
    info: Mutex<PushInfo>,
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
    hooks: Arc<dyn PushHooks>,
    root: PathBuf,
    targets_for: TargetsFor,
    /// S3 clients for `s3://` targets.
    s3: Arc<s3::Stores>,
    pushes: Mutex<BTreeMap<u64, Arc<Push>>>,
    next: AtomicU64,
    shutdown: CancellationToken,
}

/// How long an ended push stays listed.
const KEEP_ENDED: Duration = Duration::from_secs(300);
/// Ended pushes kept listed at most.
const MAX_ENDED: usize = 256;

impl PushManager {
    /// A manager recording under `root` (and uploading `s3://` targets as
    /// `s3` says), asking `targets_for` for a starting stream's configured
    /// targets, with `hooks` around each push.
    pub fn new(
        registry: Registry,
        ts: Arc<crate::mpegts::output::TsHub>,
        root: PathBuf,
        s3: S3Config,
        targets_for: TargetsFor,
        hooks: Arc<dyn PushHooks>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(PushManager {
            registry,
            ts,
            hooks,
            root,
            targets_for,
            s3: Arc::new(s3::Stores::new(s3)),
            pushes: Mutex::new(BTreeMap::new()),
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
                            warn!(stream = stream.name(), target = %t, error = %e, "push target not started");
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
        let parsed = Target::parse(&expanded, &self.root).map_err(PushError::Target)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let info = PushInfo {
            id,
            stream: stream.name().to_owned(),
            tenant,
            target: expanded,
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
            info: Mutex::new(info.clone()),
            cancel: self.shutdown.child_token(),
            media: Mutex::default(),
        });
        {
            let mut all = self.pushes.lock();
            prune(&mut all);
            all.insert(id, push.clone());
        }
        info!(id, stream = stream.name(), target = %info.target, "push started");
        let deps =
            Deps { root: self.root.clone(), hooks: self.hooks.clone(), ts: self.ts.clone(), s3: self.s3.clone() };
        tokio::spawn(run_push(push, stream.clone(), parsed, deps));
        Ok(info)
    }

    /// Whether `template` would make a usable target (its variables filled
    /// in with sample values), for rules checked when they are made.
    pub fn check(&self, template: &str) -> Result<(), TargetError> {
        let vars = target::Vars { stream: "stream", tenant: "tenant", datetime: "2026.01.01.00.00.00", segment: None };
        Target::parse(&target::expand(template, &vars), &self.root).map(|_| ())
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
}

async fn run_push(push: Arc<Push>, stream: Arc<Stream>, target: Target, deps: Deps) {
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
            Target::parse(&t, &root).map_err(|e| format!("PUSH_OUT_START answered a bad target: {e}"))
        }
    };
    let recording = match &target {
        Ok(Target::File(f)) => Some(f.container.as_str()),
        _ => None,
    };
    match target {
        Ok(target) => attempts(&push, &stream, &target, &deps).await,
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
    info!(id = info.id, stream = %info.stream, target = %info.target, bytes = info.bytes, reconnects = info.reconnects, "push ended");
    let (first_ms, last_ms, log) = {
        let m = push.media.lock();
        (m.0, m.1, m.2.iter().cloned().collect())
    };
    hooks.ended(&PushReport { info, target_before: before, recording, ended_at: unix_now(), first_ms, last_ms, log });
}

/// Tries a push until the stream ends, it is stopped, or it fails for good.
async fn attempts(push: &Arc<Push>, stream: &Arc<Stream>, target: &Target, deps: &Deps) {
    let mut backoff = Duration::from_secs(1);
    loop {
        push.set(|i| i.state = PushState::Connecting);
        let attempt = match target {
            Target::Rtmp(t) => rtmp_push(push, stream, t).await,
            Target::Srt(t) => srt_push(push, stream, &deps.ts, t).await,
            Target::File(f) => record(push, stream, f, deps).await,
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

/// Tags for an RTMP client session (it copies each body into its chunks).
struct ClientSink<'a>(&'a mut ClientSession);

impl TagSink for ClientSink<'_> {
    fn tag(&mut self, kind: TagKind, timestamp: u32, prefix: &[u8], body: &Bytes) {
        let mut b = BytesMut::with_capacity(prefix.len() + body.len());
        b.extend_from_slice(prefix);
        b.extend_from_slice(body);
        match kind {
            TagKind::Video => self.0.send_video(timestamp, b.freeze()),
            TagKind::Audio => self.0.send_audio(timestamp, b.freeze()),
        }
    }
}

/// How long connecting and the RTMP handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn rtmp_push(push: &Push, stream: &Arc<Stream>, t: &target::RtmpTarget) -> Attempt {
    let mut sock = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Attempt::Retry(format!("connecting to {}: {e}", t.addr)),
        Err(_) => return Attempt::Retry(format!("connecting to {}: timed out", t.addr)),
    };
    let _ = sock.set_nodelay(true);
    let mut session = ClientSession::publish(&t.tc_url, &t.app, &t.name).legacy();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let handshake = async {
        while !session.is_live() {
            while let Some(out) = session.poll_transmit() {
                sock.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            if sock.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("the target closed the connection before accepting the publish".to_owned());
            }
            session.handle_input(&mut buf).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, handshake) => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Attempt::Retry(format!("publishing to {}: {e}", t.tc_url)),
            Err(_) => return Attempt::Retry(format!("publishing to {}: no answer", t.tc_url)),
        },
        _ = push.cancel.cancelled() => return Attempt::Done,
    }
    push.set(|i| i.state = PushState::Live);
    let mut sub = stream.subscribe();
    let mut egress = FlvEgress::new(None);
    let result = loop {
        tokio::select! {
            ev = sub.recv() => match ev {
                Some(ev) => {
                    egress.event(ev, &mut ClientSink(&mut session));
                    while let Some(ev) = sub.try_recv() {
                        egress.event(ev, &mut ClientSink(&mut session));
                    }
                    if egress.last_timestamp() > 0 {
                        push.sent_at(egress.last_timestamp());
                    }
                }
                None => {
                    session.unpublish();
                    let _ = flush(&mut sock, &mut session, push).await;
                    break Attempt::Done;
                }
            },
            r = sock.read_buf(&mut buf) => match r {
                Ok(0) => break Attempt::Retry("the target closed the connection".into()),
                Err(e) => break Attempt::Retry(format!("reading from the target: {e}")),
                Ok(_) => {
                    if let Err(e) = session.handle_input(&mut buf) {
                        break Attempt::Retry(format!("the target sent bad RTMP: {e}"));
                    }
                }
            },
            _ = push.cancel.cancelled() => {
                session.unpublish();
                let _ = flush(&mut sock, &mut session, push).await;
                break Attempt::Done;
            }
        }
        if let Err(e) = flush(&mut sock, &mut session, push).await {
            break Attempt::Retry(format!("writing to the target: {e}"));
        }
        push.set(|i| i.frames_skipped = sub.skips());
    };
    push.set(|i| i.frames_skipped = sub.skips());
    result
}

/// Calls an SRT listener and sends it the stream's MPEG-TS (the same TS
/// HTTP-TS viewers and SRT players get), paced as SRT players are.
async fn srt_push(
    push: &Push,
    stream: &Arc<Stream>,
    ts: &crate::mpegts::output::TsHub,
    t: &target::SrtTarget,
) -> Attempt {
    use futures_util::SinkExt;
    let addr = match tokio::net::lookup_host(&t.addr).await.map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => return Attempt::Retry(format!("{}: no address", t.addr)),
        Err(e) => return Attempt::Retry(format!("resolving {}: {e}", t.addr)),
    };
    let mut builder = srt_tokio::SrtSocket::builder().latency(Duration::from_millis(u64::from(t.latency_ms)));
    if let Some(p) = &t.passphrase {
        // Checked when the target was parsed (10 to 79 characters).
        builder = builder.encryption(16, p.clone());
    }
    let call = builder.call(addr, t.streamid.as_deref());
    let mut socket = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, call) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Attempt::Retry(format!("calling {}: {e} (a wrong passphrase or streamid ends here)", t.addr)),
            Err(_) => return Attempt::Retry(format!("calling {}: no answer (a wrong passphrase ends here too)", t.addr)),
        },
        _ = push.cancel.cancelled() => return Attempt::Done,
    };
    let Some(mut sub) = ts.subscribe(stream.name()) else { return Attempt::Done };
    push.set(|i| i.state = PushState::Live);
    let mut pacer = crate::srt::pace::Pacer::new(std::time::Instant::now());
    let result = loop {
        let ev = tokio::select! {
            ev = sub.recv() => ev,
            _ = push.cancel.cancelled() => break Attempt::Done,
        };
        let chunk = match ev {
            Some(tidecast_media::Event::Frame(f)) => f.payload,
            Some(_) => continue,
            None => break Attempt::Done,
        };
        let mut failed = None;
        for at in (0..chunk.len()).step_by(SRT_PAYLOAD) {
            let end = (at + SRT_PAYLOAD).min(chunk.len());
            while let Err(wait) = pacer.poll(std::time::Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            if let Err(e) = socket.send((std::time::Instant::now(), chunk.slice(at..end))).await {
                failed = Some(e);
                break;
            }
            push.set(|i| i.bytes += (end - at) as u64);
        }
        if let Some(e) = failed {
            break Attempt::Retry(format!("sending to {}: {e}", t.addr));
        }
        push.set(|i| i.frames_skipped = sub.skips());
    };
    let _ = socket.close().await;
    result
}

/// Seven TS packets per SRT payload, as every SRT peer expects.
const SRT_PAYLOAD: usize = 7 * 188;

async fn flush(sock: &mut TcpStream, session: &mut ClientSession, push: &Push) -> std::io::Result<()> {
    while let Some(out) = session.poll_transmit() {
        sock.write_all(&out).await?;
        push.set(|i| i.bytes += out.len() as u64);
    }
    Ok(())
}

/// A recording's container, fed events.
enum Writer {
    Flv(Box<(FlvEgress, FlvFile)>),
    Mp4(mp4::Mp4Recorder),
    /// The muxer (once the tracks are known), and the first and last dts.
    Ts(Option<crate::mpegts::TsMuxer>, Option<(i64, i64)>),
}

impl Writer {
    fn new(container: target::Container) -> Writer {
        match container {
            target::Container::Flv => Writer::Flv(Box::new((FlvEgress::new(None), FlvFile::new(true, true)))),
            target::Container::Mp4 => Writer::Mp4(mp4::Mp4Recorder::new()),
            target::Container::Ts | target::Container::Hls => Writer::Ts(None, None),
        }
    }

    fn event(&mut self, ev: tidecast_media::Event, out: &mut Vec<Bytes>) {
        match self {
            Writer::Flv(flv) => {
                let (egress, file) = &mut **flv;
                egress.event(ev, file);
                out.extend(file.take());
            }
            Writer::Mp4(rec) => out.extend(rec.event(ev)),
            Writer::Ts(mux, span) => match ev {
                tidecast_media::Event::Tracks(t) => {
                    *mux = Some(crate::mpegts::TsMuxer::new(&crate::mpegts::output::ts_tracks(&t)));
                }
                tidecast_media::Event::Frame(f) => {
                    if let Some(packets) = mux.as_mut().and_then(|m| m.frame(&f)) {
                        let (_, last) = span.get_or_insert((f.dts, f.dts));
                        *last = (*last).max(f.dts);
                        out.push(packets);
                    }
                }
                tidecast_media::Event::Discontinuity => {}
            },
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if let Writer::Mp4(rec) = self {
            out.extend(rec.finish());
        }
    }

    /// The media timestamp reached, ms.
    fn media_ms(&self) -> u32 {
        match self {
            Writer::Flv(flv) => flv.0.last_timestamp(),
            Writer::Mp4(rec) => (rec.written_us / 1000).clamp(0, i64::from(u32::MAX)) as u32,
            Writer::Ts(_, span) => span.map_or(0, |(a, b)| ((b - a) / 1000 + 1).clamp(0, i64::from(u32::MAX)) as u32),
        }
    }
}

/// One open file of a recording.
struct OpenFile {
    file: tokio::fs::File,
    path: PathBuf,
    counter: u64,
    writer: Writer,
    bytes: u64,
    /// Stream time (µs) of its first frame.
    first_us: Option<i64>,
    last_us: i64,
}

/// Opens file number `counter` of the recording `f` (inside the root; its
/// folders are made; an existing file is never overwritten).
async fn open_file(root: &Path, f: &target::FileTarget, counter: u64) -> Result<OpenFile, String> {
    let path = f.path_for(counter);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // The path was checked by its text; a link inside the root must
        // not lead out of it either.
        let (real_dir, real_root) = (tokio::fs::canonicalize(dir).await, tokio::fs::canonicalize(root).await);
        match (real_dir, real_root) {
            (Ok(d), Ok(r)) if d.starts_with(&r) => {}
            _ => return Err(format!("{} is outside the recording directory", path.display())),
        }
    }
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok(OpenFile { file, path, counter, writer: Writer::new(f.container), bytes: 0, first_us: None, last_us: 0 })
}

impl OpenFile {
    async fn write(&mut self, out: &mut Vec<Bytes>, push: &Push) -> Result<(), String> {
        let mut wrote = 0;
        for b in out.drain(..) {
            self.file.write_all(&b).await.map_err(|e| format!("writing {}: {e}", self.path.display()))?;
            wrote += b.len() as u64;
        }
        self.bytes += wrote;
        push.set(|i| i.bytes += wrote);
        Ok(())
    }

    /// Writes what the writer still holds and closes the file.
    async fn close(mut self, push: &Push) -> Result<OpenFile, String> {
        let mut out = Vec::new();
        self.writer.finish(&mut out);
        self.write(&mut out, push).await?;
        self.file.flush().await.map_err(|e| format!("closing {}: {e}", self.path.display()))?;
        self.file.sync_all().await.map_err(|e| format!("closing {}: {e}", self.path.display()))?;
        Ok(self)
    }
}

/// Records the stream into the file `f` names, or, with `split`, into a
/// new file at the first keyframe after each `split` seconds of media.
async fn record(push: &Arc<Push>, stream: &Arc<Stream>, f: &target::FileTarget, deps: &Deps) -> Attempt {
    let (root, hooks) = (deps.root.as_path(), &*deps.hooks);
    let store = match &f.upload {
        Some(dest) => match deps.s3.for_bucket(&dest.bucket) {
            Ok(s) => Some(s),
            Err(e) => return Attempt::Fatal(e),
        },
        None => None,
    };
    // Uploads run beside the recording; the push ends once they are done.
    let mut uploads = tokio::task::JoinSet::new();
    let mut upload = |done: &OpenFile| {
        let (Some(store), Some(dest)) = (store.clone(), f.upload.as_ref()) else { return };
        let (path, key, push) = (done.path.clone(), dest.key_for(done.counter), push.clone());
        uploads.spawn(async move {
            match s3::upload(&*store, &path, &key).await {
                Ok(_) => push.set(|i| i.uploads += 1),
                Err(e) => {
                    warn!(error = %e, "recording upload failed");
                    push.log(e.clone());
                    push.set(|i| i.last_error = Some(e));
                }
            }
        });
    };
    let mut current = match open_file(root, f, 0).await {
        Ok(o) => o,
        Err(e) => return Attempt::Fatal(e),
    };
    push.set(|i| i.state = PushState::Live);
    let split_us = f.split.map(|s| i64::from(s) * 1_000_000);
    let mut sub = stream.subscribe();
    // What a fresh file's writer must see first.
    let mut tracks: Option<Arc<[tidecast_media::Track]>> = None;
    // HLS on disk: the finished segments, listed in the playlist.
    let mut listed: Vec<(String, f64)> = Vec::new();
    let mut out = Vec::new();
    loop {
        let more = tokio::select! {
            ev = sub.recv() => ev,
            _ = push.cancel.cancelled() => None,
        };
        let Some(first) = more else { break };
        let mut batch = vec![first];
        while let Some(ev) = sub.try_recv() {
            batch.push(ev);
        }
        for ev in batch {
            if let tidecast_media::Event::Tracks(t) = &ev {
                tracks = Some(t.clone());
            }
            if let (tidecast_media::Event::Frame(fr), Some(split)) = (&ev, split_us) {
                let video = tracks.as_ref().and_then(|t| t.iter().find(|t| t.id == fr.track)).map(|t| t.kind());
                let has_video =
                    tracks.as_ref().is_some_and(|t| t.iter().any(|t| t.kind() == tidecast_media::MediaKind::Video));
                let boundary = match video {
                    Some(tidecast_media::MediaKind::Video) => fr.keyframe,
                    Some(tidecast_media::MediaKind::Audio) => !has_video,
                    None => false,
                };
                if boundary && current.first_us.is_some_and(|t0| fr.dts - t0 >= split) {
                    if let Err(e) = current.write(&mut out, push).await {
                        return Attempt::Fatal(e);
                    }
                    let done = match current.close(push).await {
                        Ok(d) => d,
                        Err(e) => return Attempt::Fatal(e),
                    };
                    report_segment(push, stream, f, &done, fr.dts, hooks);
                    upload(&done);
                    if let Err(e) = list_segment(f, &mut listed, &done, fr.dts, false).await {
                        return Attempt::Fatal(e);
                    }
                    current = match open_file(root, f, done.counter + 1).await {
                        Ok(o) => o,
                        Err(e) => return Attempt::Fatal(e),
                    };
                    if let Some(t) = &tracks {
                        current.writer.event(tidecast_media::Event::Tracks(t.clone()), &mut out);
                    }
                }
            }
            if let tidecast_media::Event::Frame(fr) = &ev {
                current.first_us.get_or_insert(fr.dts);
                current.last_us = current.last_us.max(fr.dts);
            }
            current.writer.event(ev, &mut out);
        }
        if current.writer.media_ms() > 0 {
            push.sent_at(current.writer.media_ms());
        }
        if let Err(e) = current.write(&mut out, push).await {
            return Attempt::Fatal(e);
        }
        push.set(|i| i.frames_skipped = sub.skips());
    }
    match current.close(push).await {
        Ok(done) => {
            // The last frame lasts about as long as the one before: count
            // one frame's worth past it (a 25 fps guess when unknown).
            let end = done.last_us + 40_000;
            if f.split.is_some() {
                report_segment(push, stream, f, &done, end, hooks);
            }
            upload(&done);
            while uploads.join_next().await.is_some() {}
            match list_segment(f, &mut listed, &done, end, true).await {
                Ok(()) => Attempt::Done,
                Err(e) => Attempt::Fatal(e),
            }
        }
        Err(e) => Attempt::Fatal(e),
    }
}

/// HLS on disk: adds a finished segment to the playlist and rewrites it
/// (a new file renamed over the old, so a reader never sees half of one);
/// `last`: the stream ended, the playlist becomes a VOD one.
async fn list_segment(
    f: &target::FileTarget,
    listed: &mut Vec<(String, f64)>,
    done: &OpenFile,
    end_us: i64,
    last: bool,
) -> Result<(), String> {
    let Some(playlist) = &f.playlist else { return Ok(()) };
    if done.first_us.is_some() {
        let name = done.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let secs = (end_us - done.first_us.unwrap_or(end_us)).max(0) as f64 / 1e6;
        listed.push((name, secs));
    }
    let text = hls_playlist(listed, last);
    let tmp = playlist.with_extension("m3u8.tmp");
    tokio::fs::write(&tmp, text).await.map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, playlist).await.map_err(|e| format!("writing {}: {e}", playlist.display()))
}

/// The playlist of HLS on disk: an EVENT playlist while recording, VOD
/// with `#EXT-X-ENDLIST` at the end.
fn hls_playlist(segments: &[(String, f64)], ended: bool) -> String {
    let target = segments.iter().map(|s| s.1.ceil() as u64).max().unwrap_or(1).max(1);
    let mut t = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:{}\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n",
        if ended { "VOD" } else { "EVENT" }
    );
    for (name, secs) in segments {
        t.push_str(&format!("#EXTINF:{secs:.3},\n{name}\n"));
    }
    if ended {
        t.push_str("#EXT-X-ENDLIST\n");
    }
    t
}

/// A split recording's file is done: `RECORDING_SEGMENT`.
fn report_segment(
    push: &Push,
    stream: &Stream,
    f: &target::FileTarget,
    done: &OpenFile,
    end_us: i64,
    hooks: &dyn PushHooks,
) {
    let ms = |us: i64| (us / 1000).max(0) as u64;
    let closed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    hooks.segment(&SegmentReport {
        push_id: push.info.lock().id,
        stream: stream.name().to_owned(),
        path: done.path.clone(),
        counter: done.counter,
        container: f.container.as_str(),
        start_ms: ms(done.first_us.unwrap_or(0)),
        end_ms: ms(end_us),
        bytes: done.bytes,
        closed_unix_ms: closed,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hls_playlist_is_an_event_while_recording_and_vod_at_the_end() {
        let segs = vec![("x-0.ts".to_owned(), 6.04), ("x-1.ts".to_owned(), 5.96)];
        let live = hls_playlist(&segs, false);
        assert!(live.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:7\n"), "{live}");
        assert!(live.contains("#EXTINF:6.040,\nx-0.ts\n#EXTINF:5.960,\nx-1.ts\n") && !live.contains("ENDLIST"));
        let done = hls_playlist(&segs, true);
        assert!(done.contains("#EXT-X-PLAYLIST-TYPE:VOD") && done.ends_with("#EXT-X-ENDLIST\n"), "{done}");
    }
}
