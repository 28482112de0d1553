//! Runs a stream's renditions through Livepeer gateways: one task per
//! stream reads the stream like a viewer, cuts segments, posts each to a
//! gateway (at most [`LivepeerSpec::in_flight`] at once; a segment cut
//! while that many are out is skipped, counted, so a slow gateway never
//! makes anything queue), and publishes the renditions that come back, in
//! segment order, as tracks of the same stream.
//!
//! Failures: a 503, a timeout or a connection error moves to the next
//! gateway and tries the segment there while its deadline allows; a 422
//! skips the segment, and two in a row are reported
//! ([`LivepeerEvent::Rejected`], MistServer's `LIVEPEER_SEGMENT_REJECTED`);
//! a garbled answer, or one past [`MAX_ANSWER_BYTES`], loses that segment
//! only. Once every gateway has failed
//! [`GATEWAYS_DOWN_AFTER`] segments in a row, [`LivepeerStats::down`] is set
//! so the caller can fall back (it clears at the next success).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tidecast_media::{Event, Frame, MediaKind, Stream, Track, DERIVED_TRACK_BASE};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::answer::{self, Answer};
use super::cutter::{Cutter, Segment};
use super::order::{InOrder, Turn};
use super::profile::{JsonProfile, Rendition, TranscodeConfiguration};

/// Largest answer read; a gateway that sends more loses the segment.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Consecutive segments every gateway failed before [`LivepeerStats::down`].
pub const GATEWAYS_DOWN_AFTER: u64 = 3;
/// Time a gateway gets beyond a segment's own duration (MistServer's
/// data timeout is the same two seconds).
pub const SLACK: Duration = Duration::from_secs(2);

/// Plans the renditions for a source of `width` x `height` at `fps`.
pub type Planner = Box<dyn Fn(u32, u32, f64) -> Vec<Rendition> + Send + Sync>;

/// What to run.
pub struct LivepeerSpec {
    /// The profile's name (for logs and the API).
    pub profile: String,
    /// The renditions for a source size.
    pub plan: Planner,
    /// Gateway base URLs (`http://127.0.0.1:9935`), tried in order.
    pub gateways: Vec<String>,
    /// Uploads in flight at most (MistServer: 2).
    pub in_flight: usize,
}

/// What a notification trigger is told.
#[derive(Debug, Clone, PartialEq)]
pub enum LivepeerEvent {
    /// A segment's renditions were published (the FrameWorks fork's
    /// `LIVEPEER_SEGMENT_COMPLETE`).
    Complete(SegmentReport),
    /// A gateway refused two segments in a row with 422
    /// (`LIVEPEER_SEGMENT_REJECTED`).
    Rejected {
        /// The stream.
        stream: String,
        /// The transcode configuration sent.
        configuration: String,
        /// The refused segment.
        segment: Bytes,
        /// The source track, as JSON.
        track: String,
        /// The gateway that refused it.
        gateway: String,
        /// The next gateway, if there is another.
        other: Option<String>,
    },
}

/// One completed segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentReport {
    /// The stream.
    pub stream: String,
    /// The manifest id (the gateway's session).
    pub manifest: String,
    /// Sequence number.
    pub seq: u64,
    /// Start, stream clock, ms.
    pub start_ms: i64,
    /// Duration, ms.
    pub duration_ms: i64,
    /// Source size.
    pub width: u32,
    /// Source height.
    pub height: u32,
    /// Bytes sent.
    pub bytes_in: usize,
    /// Bytes received.
    pub bytes_out: usize,
    /// Renditions that came back.
    pub renditions: Vec<String>,
    /// Uploads it took.
    pub attempts: u32,
    /// The gateway that answered.
    pub gateway: String,
    /// From sending to the answer, ms.
    pub turnaround_ms: u64,
}

/// Counters of one stream's offload.
#[derive(Debug, Default)]
pub struct LivepeerStats {
    /// Segments posted (first attempts).
    pub segments_sent: AtomicU64,
    /// Segments whose renditions were published.
    pub segments_done: AtomicU64,
    /// Segments lost: every gateway failed, a 422, a garbled answer.
    pub segments_failed: AtomicU64,
    /// Segments not sent because the uploads in flight were at the limit,
    /// or given up at their deadline.
    pub segments_skipped: AtomicU64,
    /// 422 answers.
    pub rejected: AtomicU64,
    /// Moves to another gateway.
    pub gateway_switches: AtomicU64,
    /// Parts left out of answers (unknown name, not TS, no video).
    pub bad_parts: AtomicU64,
    /// Bytes posted.
    pub bytes_sent: AtomicU64,
    /// Bytes received.
    pub bytes_received: AtomicU64,
    /// The last turnaround, ms.
    pub last_turnaround_ms: AtomicU64,
    /// The last speed factor x1000 (segment duration / turnaround).
    pub last_speed_milli: AtomicU64,
    /// Every gateway is failing (see [`GATEWAYS_DOWN_AFTER`]).
    pub down: AtomicBool,
    /// The gateway in use.
    pub gateway: Mutex<String>,
    /// Why the last segment failed.
    pub last_error: Mutex<Option<String>>,
}

/// A running offload; dropping it stops it and withdraws its tracks.
pub struct LivepeerJob {
    stats: Arc<LivepeerStats>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for LivepeerJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivepeerJob").finish_non_exhaustive()
    }
}

impl LivepeerJob {
    /// Starts offloading `stream` per `spec`; `notify` hears of completed
    /// and rejected segments. Needs a tokio runtime.
    pub fn start(stream: Arc<Stream>, spec: LivepeerSpec, notify: Arc<dyn Fn(LivepeerEvent) + Send + Sync>) -> Self {
        let stats = Arc::new(LivepeerStats::default());
        *stats.gateway.lock() = spec.gateways.first().cloned().unwrap_or_default();
        let cancel = CancellationToken::new();
        let run = Run { stream, spec, notify, stats: stats.clone(), cancel: cancel.clone() };
        tokio::spawn(run.run());
        LivepeerJob { stats, cancel }
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<LivepeerStats> {
        &self.stats
    }
}

impl Drop for LivepeerJob {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How one upload ended.
enum Outcome {
    /// `names`: the renditions asked for, in order.
    Done {
        answer: Answer,
        names: Arc<[String]>,
        attempts: u32,
        gateway: String,
        turnaround: Duration,
    },
    Rejected {
        gateway: String,
    },
    Failed(String),
}

struct Run {
    stream: Arc<Stream>,
    spec: LivepeerSpec,
    notify: Arc<dyn Fn(LivepeerEvent) + Send + Sync>,
    stats: Arc<LivepeerStats>,
    cancel: CancellationToken,
}

/// What the uploads share.
struct Upload {
    client: reqwest::Client,
    gateways: Vec<String>,
    /// Index of the gateway in use.
    current: Mutex<usize>,
    manifest: String,
    stats: Arc<LivepeerStats>,
}

impl Run {
    async fn run(self) {
        let name = self.stream.name().to_owned();
        let writer = self.stream.derive_tracks();
        let mut sub = self.stream.subscribe();
        let mut cutter = Cutter::new();
        let mut order: InOrder<(Segment, Outcome)> = InOrder::default();
        let (tx, mut rx) = mpsc::channel::<(u64, Segment, Outcome)>(self.spec.in_flight.max(1) * 2);
        let client = match reqwest::Client::builder().build() {
            Ok(c) => c,
            Err(e) => {
                warn!(stream = %name, error = %e, "livepeer: cannot make an HTTP client");
                return;
            }
        };
        let upload = Arc::new(Upload {
            client,
            gateways: self.spec.gateways.clone(),
            current: Mutex::new(0),
            manifest: format!("{name}-{:08x}", rand::random::<u32>()),
            stats: self.stats.clone(),
        });
        let mut source: Option<Track> = None;
        let mut renditions: Vec<Rendition> = Vec::new();
        // What every upload for these renditions sends and expects back,
        // made once per source configuration.
        let mut names: Arc<[String]> = Arc::from(Vec::new());
        let mut config: Arc<str> = Arc::from("");
        let mut tracks: Vec<Option<Track>> = Vec::new();
        let mut in_flight = 0usize;
        let mut rejected_in_row = 0u32;
        let mut failed_in_row = 0u64;
        let mut ended = false;
        info!(stream = %name, profile = %self.spec.profile, manifest = %upload.manifest, "livepeer: offload started");
        loop {
            let deadline = order.next_deadline().map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                ev = sub.recv(), if !ended => match ev {
                    None => {
                        cutter.finish();
                        ended = true;
                    }
                    Some(Event::Tracks(ts)) => {
                        let video = ts.iter().find(|t| t.id < DERIVED_TRACK_BASE && t.kind() == MediaKind::Video).cloned();
                        if video.as_ref().map(|t| (t.id, &t.config)) != source.as_ref().map(|t| (t.id, &t.config)) {
                            renditions = video.as_ref().map_or_else(Vec::new, |t| {
                                let fps = t.info.frame_rate.filter(|f| (1.0..=240.0).contains(f)).unwrap_or(30.0);
                                (self.spec.plan)(t.info.width, t.info.height, fps)
                            });
                            tracks = vec![None; renditions.len()];
                            names = renditions.iter().map(|r| r.name.clone()).collect();
                            config = TranscodeConfiguration {
                                manifest_id: upload.manifest.clone(),
                                profiles: renditions.iter().map(JsonProfile::from_rendition).collect(),
                            }
                            .header()
                            .into();
                            writer.set_tracks(Vec::new());
                            cutter.set_track(video.clone().filter(|_| !renditions.is_empty()));
                            source = video;
                        }
                    }
                    Some(Event::Frame(f)) => cutter.push(&f),
                    Some(Event::Discontinuity) => {}
                },
                Some((seq, seg, outcome)) = rx.recv() => {
                    in_flight -= 1;
                    order.done(seq, Some((seg, outcome)));
                }
                _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending().await } } => {}
            }
            while let Some(seg) = cutter.poll() {
                if in_flight >= self.spec.in_flight.max(1) {
                    self.stats.segments_skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let budget = Duration::from_micros(seg.duration_us.max(0) as u64) + SLACK;
                order.sent(seg.seq, Instant::now() + budget);
                in_flight += 1;
                self.stats.segments_sent.fetch_add(1, Ordering::Relaxed);
                let (up, tx, names, config) = (upload.clone(), tx.clone(), names.clone(), config.clone());
                tokio::spawn(async move {
                    let outcome = up.send(&seg, &config, &names, budget).await;
                    let _ = tx.send((seg.seq, seg, outcome)).await;
                });
            }
            while let Some(turn) = order.poll(Instant::now()) {
                let (seg, outcome) = match turn {
                    Turn::Ready(_, r) => r,
                    Turn::Skipped(seq) => {
                        self.stats.segments_skipped.fetch_add(1, Ordering::Relaxed);
                        warn!(stream = %name, seq, "livepeer: no answer by the deadline; the segment is skipped");
                        continue;
                    }
                };
                match outcome {
                    Outcome::Done { names: asked, .. } if *asked != *names => {
                        // Asked for before the source changed: its renditions
                        // are not the tracks published now.
                        self.stats.segments_skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Done { answer, names: asked, attempts, gateway, turnaround } => {
                        rejected_in_row = 0;
                        failed_in_row = 0;
                        self.stats.down.store(false, Ordering::Relaxed);
                        self.publish(&writer, &mut tracks, &renditions, &answer);
                        self.stats.segments_done.fetch_add(1, Ordering::Relaxed);
                        let ms = turnaround.as_millis() as u64;
                        self.stats.last_turnaround_ms.store(ms, Ordering::Relaxed);
                        let speed = (seg.duration_us as u64 / 1000).saturating_mul(1000) / ms.max(1);
                        self.stats.last_speed_milli.store(speed, Ordering::Relaxed);
                        (self.notify)(LivepeerEvent::Complete(SegmentReport {
                            stream: name.clone(),
                            manifest: upload.manifest.clone(),
                            seq: seg.seq,
                            start_ms: seg.start_dts / 1000,
                            duration_ms: seg.duration_us / 1000,
                            width: seg.width,
                            height: seg.height,
                            bytes_in: seg.data.len(),
                            bytes_out: answer.bytes,
                            renditions: answer.renditions.iter().filter_map(|r| asked.get(r.index).cloned()).collect(),
                            attempts,
                            gateway,
                            turnaround_ms: ms,
                        }));
                    }
                    Outcome::Rejected { gateway } => {
                        self.stats.segments_failed.fetch_add(1, Ordering::Relaxed);
                        rejected_in_row += 1;
                        if rejected_in_row == 2 {
                            rejected_in_row = 0;
                            warn!(stream = %name, seq = seg.seq, %gateway, "livepeer: two segments in a row refused (422)");
                            let others = upload.gateways.iter().find(|g| **g != gateway).cloned();
                            (self.notify)(LivepeerEvent::Rejected {
                                stream: name.clone(),
                                configuration: config.to_string(),
                                segment: seg.data.clone(),
                                track: source.as_ref().map(track_json).unwrap_or_default(),
                                gateway,
                                other: others,
                            });
                        }
                    }
                    Outcome::Failed(why) => {
                        self.stats.segments_failed.fetch_add(1, Ordering::Relaxed);
                        failed_in_row += 1;
                        if failed_in_row >= GATEWAYS_DOWN_AFTER && !self.stats.down.swap(true, Ordering::Relaxed) {
                            warn!(stream = %name, "livepeer: every gateway is failing ({why})");
                        }
                        *self.stats.last_error.lock() = Some(why);
                    }
                }
            }
            if ended && order.is_empty() && in_flight == 0 {
                break;
            }
        }
        info!(stream = %name, "livepeer: offload stopped");
    }

    /// Publishes one answer's renditions, frames merged in decode order.
    fn publish(
        &self,
        writer: &tidecast_media::TrackWriter,
        tracks: &mut [Option<Track>],
        renditions: &[Rendition],
        answer: &Answer,
    ) {
        self.stats.bad_parts.fetch_add(answer.problems.len() as u64, Ordering::Relaxed);
        for p in &answer.problems {
            warn!(stream = self.stream.name(), "livepeer: part left out: {p}");
        }
        let mut changed = false;
        for r in &answer.renditions {
            let Some(slot) = tracks.get_mut(r.index) else { continue };
            let mut track = r.track.clone();
            if let Some(spec) = renditions.get(r.index) {
                track.info.bitrate = Some(spec.bitrate_kbps.saturating_mul(1000));
                track.info.frame_rate = track.info.frame_rate.or(Some(spec.fps));
            }
            if slot.as_ref() != Some(&track) {
                *slot = Some(track);
                changed = true;
            }
        }
        if changed {
            writer.set_tracks(tracks.iter().flatten().cloned().collect());
        }
        let mut frames: Vec<&Frame> = answer.renditions.iter().flat_map(|r| &r.frames).collect();
        frames.sort_by_key(|f| f.dts);
        for f in frames {
            writer.push(f.clone());
        }
    }
}

/// Reads a body of at most `cap` bytes.
async fn read_capped(mut r: reqwest::Response, cap: usize) -> Result<Bytes, String> {
    if r.content_length().is_some_and(|n| n > cap as u64) {
        return Err(format!("the answer is larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > cap {
            return Err(format!("the answer is larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

fn track_json(t: &Track) -> String {
    serde_json::json!({
        "codec": t.codec.name(),
        "width": t.info.width,
        "height": t.info.height,
        "fps": t.info.frame_rate,
    })
    .to_string()
}

impl Upload {
    /// Posts `seg`, moving to the next gateway on a 503, a timeout or a
    /// connection error while `budget` lasts.
    async fn send(&self, seg: &Segment, config: &str, names: &Arc<[String]>, budget: Duration) -> Outcome {
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut last = String::from("no gateway configured");
        while attempts < self.gateways.len() as u32 {
            let Some(left) = budget.checked_sub(started.elapsed()) else { break };
            let index = *self.current.lock() % self.gateways.len();
            let gateway = self.gateways[index].clone();
            attempts += 1;
            let url = format!("{}/live/{}/{}.ts", gateway.trim_end_matches('/'), self.manifest, seg.seq);
            let sent = self
                .client
                .post(&url)
                .timeout(left)
                .header("Accept", "multipart/mixed")
                .header("Content-Duration", (seg.duration_us / 1000).to_string())
                .header("Content-Resolution", format!("{}x{}", seg.width, seg.height))
                .header("Livepeer-Transcode-Configuration", config)
                .body(seg.data.clone())
                .send()
                .await;
            self.stats.bytes_sent.fetch_add(seg.data.len() as u64, Ordering::Relaxed);
            let retry = match sent {
                Ok(r) if r.status() == reqwest::StatusCode::OK => {
                    let kind = r
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    return match read_capped(r, MAX_ANSWER_BYTES).await {
                        Ok(body) => {
                            self.stats.bytes_received.fetch_add(body.len() as u64, Ordering::Relaxed);
                            match answer::read(seg.start_dts, &kind, &body, names) {
                                Ok(answer) => Outcome::Done {
                                    answer,
                                    names: names.clone(),
                                    attempts,
                                    gateway,
                                    turnaround: started.elapsed(),
                                },
                                Err(e) => Outcome::Failed(format!("{gateway}: the answer is not multipart: {e}")),
                            }
                        }
                        Err(e) => Outcome::Failed(format!("{gateway}: the answer broke off: {e}")),
                    };
                }
                Ok(r) if r.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    return Outcome::Rejected { gateway };
                }
                Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => format!("{gateway}: 503"),
                Ok(r) => return Outcome::Failed(format!("{gateway}: HTTP {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => format!("{gateway}: no answer in time"),
                Err(e) => format!("{gateway}: {e}"),
            };
            warn!(manifest = %self.manifest, seq = seg.seq, "livepeer: {retry}; trying the next gateway");
            last = retry;
            let mut cur = self.current.lock();
            if *cur % self.gateways.len() == index {
                *cur = (index + 1) % self.gateways.len();
                self.stats.gateway_switches.fetch_add(1, Ordering::Relaxed);
                *self.stats.gateway.lock() = self.gateways[*cur].clone();
            }
        }
        Outcome::Failed(last)
    }
}
