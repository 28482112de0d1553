//! The load report: what an external balancer polls to pick a node, and
//! what `/metrics` exports. A sampler refreshes it once a second, so a
//! request only copies the latest report.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tidecast_media::Registry;
use tidecast_protocols::ingest::IngestStats;
use tidecast_protocols::srt::driver::SrtSessions;
use utoipa::ToSchema;

use tidecast_protocols::access::Sessions;

/// CPU use, 0..1 of the whole machine.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Cpu {
    /// This process.
    pub process: f64,
    /// The host, all processes.
    pub host: f64,
    /// Logical cores.
    pub cores: usize,
}

/// Memory, bytes.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Memory {
    /// Resident set of this process.
    pub process_rss_bytes: u64,
    /// Host total.
    pub host_total_bytes: u64,
    /// Host available.
    pub host_available_bytes: u64,
    /// Media payload bytes the streams' holders keep alive (ring, CMAF
    /// window, TS ring, WHEP GOP), node-wide; an ended stream's outputs count
    /// until their linger ends. Holders can share bytes (a frame in the ring
    /// is also in a CMAF part), so this is an upper bound on unique bytes.
    pub media_buffered_bytes: u64,
    /// The same, per stream and holder.
    pub media_buffers: Vec<BufferHolding>,
    /// Of the resident set, the part in shared memory: the packaged segments
    /// and parts that were read through a mapping. They live in
    /// memory-backed files so that HTTP can send them with `sendfile`, and
    /// most are never mapped, so the process's memory is its resident set
    /// plus `packaged_bytes` less this.
    pub process_rss_shmem_bytes: u64,
    /// Packaged CMAF bytes those files hold now (written, not yet given
    /// back), all streams and renditions.
    pub packaged_bytes: u64,
    /// Memory-backed files holding packaged media (one per rendition, two
    /// for a moment when one fills up); each is an open descriptor.
    pub packaged_files: u64,
    /// Bytes HTTP sent straight from those files with `sendfile`, since
    /// start (never copied by the process).
    pub sendfile_bytes_total: u64,
    /// Bytes of DVR windows written out to disk and dropped from memory,
    /// since start (`hls.dvr_on_disk`).
    pub dvr_evicted_bytes_total: u64,
}

/// Bytes one holder keeps alive for one stream.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct BufferHolding {
    /// Stream name.
    pub stream: String,
    /// `ring` (the stream's frame ring), `cmaf` (LL-HLS segments and parts),
    /// `ts` (the MPEG-TS ring), `whep` (the fast-start GOP).
    pub holder: String,
    /// Payload bytes.
    pub bytes: u64,
}

/// One live stream's load.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct StreamLoad {
    /// Stream name.
    pub name: String,
    /// Ingest bitrate, bits per second.
    pub bitrate_in_bps: u64,
    /// Viewers by protocol.
    pub viewers: BTreeMap<String, u64>,
    /// Frames slow viewers skipped so far.
    pub frames_skipped: u64,
    /// Media bytes held for this stream, by holder (see [`BufferHolding`]).
    pub buffers: BTreeMap<String, u64>,
    /// Its DVR window (what LL-HLS, LL-DASH and clips serve), once packaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dvr: Option<DvrWindow>,
    /// Its newest sprite sheet (`/{stream}.thumbvtt`), once one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbnails: Option<ThumbnailState>,
}

/// A stream's DVR window.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DvrWindow {
    /// How much it is configured to hold (`buffer_secs` or the node's
    /// default), seconds.
    pub configured_seconds: f64,
    /// How much media it holds now, seconds.
    pub seconds: f64,
    /// Bytes it holds, all renditions.
    pub bytes: u64,
    /// Whether it is kept on disk (longer than the node's in-memory
    /// window, `hls.dvr_on_disk`).
    pub on_disk: bool,
    /// Of `bytes`, those on disk only (not in memory).
    pub disk_bytes: u64,
    /// The oldest seconds of the window, on disk only.
    pub disk_seconds: f64,
}

/// A stream's thumbnails.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ThumbnailState {
    /// When the newest sprite sheet was made, Unix milliseconds.
    pub sheet_made_ms: i64,
    /// Its tiles (one per cue of the WebVTT index).
    pub sheet_tiles: usize,
    /// Its JPEG's size, bytes.
    pub sheet_bytes: usize,
    /// Its size, pixels.
    pub sheet_width: u32,
    /// Its size, pixels.
    pub sheet_height: u32,
}

/// The node's load.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct LoadReport {
    /// One figure for a balancer, 0 (idle) to 1 (full): the highest of CPU
    /// and memory use.
    pub score: f64,
    /// CPU.
    pub cpu: Cpu,
    /// Memory.
    pub memory: Memory,
    /// Bits per second received, all protocols.
    pub bandwidth_in_bps: u64,
    /// Bits per second sent, all protocols.
    pub bandwidth_out_bps: u64,
    /// Live streams.
    pub streams: usize,
    /// Viewers, all streams.
    pub viewers: u64,
    /// Viewers by protocol.
    pub viewers_by_protocol: BTreeMap<String, u64>,
    /// Each live stream.
    pub per_stream: Vec<StreamLoad>,
    /// Bytes received since start, by protocol.
    pub bytes_in_total: BTreeMap<String, u64>,
    /// Bytes sent since start, by protocol.
    pub bytes_out_total: BTreeMap<String, u64>,
    /// Refused publishes since start, by protocol.
    pub publish_refused_total: BTreeMap<String, u64>,
    /// Frames skipped for slow viewers since start.
    pub frames_skipped_total: u64,
    /// The H.264 encoders probed at start-up (empty until the probe is done).
    pub encoders: Vec<EncoderStatus>,
    /// Transcoding ladders.
    pub transcode: TranscodeLoad,
    /// Pushes (restreams and recordings): running, and ended in the last
    /// five minutes.
    pub pushes: Vec<PushLoad>,
}

/// One push in the load report.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct PushLoad {
    /// Its id.
    pub id: u64,
    /// The stream it reads.
    pub stream: String,
    /// `rtmp`, `srt` or `file`.
    pub kind: String,
    /// `connecting`, `live`, `waiting`, `stopped` or `failed`.
    pub state: String,
    /// Media bytes sent or written.
    pub bytes: u64,
    /// Reconnects after failures.
    pub reconnects: u64,
    /// Frames skipped because the target was too slow.
    pub frames_skipped: u64,
}

/// The node's transcoding.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct TranscodeLoad {
    /// Each stream's ladder.
    pub ladders: Vec<LadderStatus>,
    /// Each stream's audio bridge (AAC to Opus, Opus to AAC).
    pub audio_bridges: Vec<BridgeStatus>,
    /// Ladders started on software because `hw = "auto"` found no working
    /// hardware encoder, since start.
    pub hw_fallbacks_total: u64,
    /// Ladders refused (unknown profile, `hw = "require"` without
    /// hardware), since start.
    pub refused_total: u64,
    /// Each stream offloaded to Livepeer.
    #[serde(default)]
    pub livepeer: Vec<LivepeerStatus>,
}

/// One stream's Livepeer offload.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct LivepeerStatus {
    /// The stream.
    pub stream: String,
    /// Its profile.
    pub profile: String,
    /// The gateway in use.
    pub gateway: String,
    /// Segments posted.
    pub segments_sent: u64,
    /// Segments whose renditions were published.
    pub segments_done: u64,
    /// Segments lost (every gateway failed, refused, a garbled answer).
    pub segments_failed: u64,
    /// Segments not sent (uploads in flight at the limit) or given up at
    /// their deadline.
    pub segments_skipped: u64,
    /// 422 answers.
    pub rejected: u64,
    /// Moves to another gateway.
    pub gateway_switches: u64,
    /// Answer parts left out (unknown rendition, not MPEG-TS, no video).
    pub bad_parts: u64,
    /// The last segment's turnaround, ms.
    pub last_turnaround_ms: u64,
    /// The last segment's duration over its turnaround (above 1: faster
    /// than real time).
    pub speed_factor: f64,
    /// Every gateway is failing.
    pub down: bool,
    /// The local ladder took over (`fallback = "local"`).
    pub fell_back_to_local: bool,
    /// Why the last segment failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One stream's ladder.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct LadderStatus {
    /// The stream.
    pub stream: String,
    /// The profile.
    pub profile: String,
    /// Whether it is transcoding now (false while it waits to retry).
    pub running: bool,
    /// Source frames handed to the decoder.
    pub frames_in: u64,
    /// Pictures decoded.
    pub frames_decoded: u64,
    /// Source frames the decoder rejected.
    pub decode_errors: u64,
    /// Runs that ended in an error or a panic (each retried after a pause).
    pub failures: u64,
    /// Seconds of one core spent decoding.
    pub decode_cpu_seconds: f64,
    /// Why the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The rungs, largest first.
    pub rungs: Vec<RungStatus>,
}

/// One stream's audio bridge.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct BridgeStatus {
    /// The stream.
    pub stream: String,
    /// Whether it is running (false while it waits to retry).
    pub running: bool,
    /// Whether it is making its track (false while it waits for a WHEP
    /// viewer to ask for Opus, or for audio it can bridge).
    pub active: bool,
    /// Source audio frames decoded.
    pub frames_in: u64,
    /// Bridged frames published.
    pub frames_out: u64,
    /// Source frames the decoder rejected.
    pub decode_errors: u64,
    /// Times its timeline started again at the source's (a gap in the source).
    pub resyncs: u64,
    /// Runs that failed (each retried).
    pub failures: u64,
    /// Why the last run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// One rung of a ladder.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct RungStatus {
    /// Its track id in the stream.
    pub track: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Target bitrate, kbit/s.
    pub bitrate_kbps: u32,
    /// The encoder in use.
    pub encoder: String,
    /// Frames published.
    pub frames_out: u64,
    /// Bytes published.
    pub bytes_out: u64,
    /// Frames left out because the rung fell behind (to its next keyframe).
    pub dropped: u64,
    /// Seconds of one core spent scaling and encoding.
    pub encode_cpu_seconds: f64,
    /// Encoder failures that moved it to the next candidate.
    pub encoder_switches: u64,
}

/// The transcoders as the load report sees them (the binary provides them;
/// this crate does not link FFmpeg).
pub trait TranscodeSource: Send + Sync {
    /// The current figures.
    fn load(&self) -> TranscodeLoad;
}

/// What the start-up probe found of one H.264 encoder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct EncoderStatus {
    /// FFmpeg's encoder name: `h264_nvenc`, `h264_qsv`, `h264_vaapi`, `libx264`.
    pub name: String,
    /// Whether it encoded a test frame on this machine.
    pub works: bool,
    /// A hardware encoder.
    pub hardware: bool,
    /// Why not, in FFmpeg's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

pub use tidecast_protocols::http::Traffic;

/// Where the figures come from.
#[derive(Clone)]
pub struct Sources {
    /// Live streams.
    pub registry: Registry,
    /// Ingest counters by protocol.
    pub ingest: Vec<(&'static str, Arc<IngestStats>)>,
    /// SRT sessions (players' bytes out).
    pub srt: Option<Arc<SrtSessions>>,
    /// Viewer sessions.
    pub sessions: Sessions,
    /// HTTP outputs' bytes.
    pub traffic: Arc<Traffic>,
    /// The encoder probe's findings, once it has run.
    pub encoders: Arc<std::sync::OnceLock<Vec<EncoderStatus>>>,
    /// The transcoders, when there are any.
    pub transcode: Option<Arc<dyn TranscodeSource>>,
    /// Restreams and recordings.
    pub pushes: Option<Arc<tidecast_protocols::push::PushManager>>,
    /// Packaged windows (DVR state).
    pub hls: Option<Arc<tidecast_protocols::hls::HlsHub>>,
    /// Sprite sheets (thumbnail state).
    pub sprites: Option<Arc<tidecast_protocols::progressive::sprite::Sprites>>,
}

fn push_load(p: tidecast_protocols::push::PushInfo) -> PushLoad {
    PushLoad {
        id: p.id,
        stream: p.stream,
        kind: p.kind.into(),
        state: p.state.as_str().into(),
        bytes: p.bytes,
        reconnects: p.reconnects,
        frames_skipped: p.frames_skipped,
    }
}

/// Keeps the previous readings so rates can be computed.
pub struct Sampler {
    sources: Sources,
    at: Instant,
    proc_ticks: u64,
    host: (u64, u64),
    bytes_in: u64,
    bytes_out: u64,
    stream_bytes: HashMap<String, u64>,
    frames_skipped_ended: u64,
    skipped_by_stream: HashMap<String, u64>,
}

impl Sampler {
    /// A sampler; the first report's rates cover the time since this call.
    pub fn new(sources: Sources) -> Sampler {
        Sampler {
            sources,
            at: Instant::now(),
            proc_ticks: proc_ticks().unwrap_or(0),
            host: host_ticks().unwrap_or((0, 0)),
            bytes_in: 0,
            bytes_out: 0,
            stream_bytes: HashMap::new(),
            frames_skipped_ended: 0,
            skipped_by_stream: HashMap::new(),
        }
    }

    /// A fresh report.
    pub fn sample(&mut self) -> LoadReport {
        let now = Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(0.001);
        self.at = now;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut r = LoadReport {
            encoders: self.sources.encoders.get().cloned().unwrap_or_default(),
            transcode: self.sources.transcode.as_ref().map(|t| t.load()).unwrap_or_default(),
            pushes: self
                .sources
                .pushes
                .as_ref()
                .map(|p| p.list())
                .unwrap_or_default()
                .into_iter()
                .map(push_load)
                .collect(),
            ..Default::default()
        };

        // CPU from /proc (Linux); zeros elsewhere.
        let ticks = proc_ticks().unwrap_or(self.proc_ticks);
        let hz = 100.0; // USER_HZ on every Linux we run on
        r.cpu.process = ((ticks.saturating_sub(self.proc_ticks)) as f64 / hz / secs / cores as f64).clamp(0.0, 1.0);
        self.proc_ticks = ticks;
        let (busy, total) = host_ticks().unwrap_or(self.host);
        let dt = total.saturating_sub(self.host.1);
        r.cpu.host = if dt > 0 { (busy.saturating_sub(self.host.0) as f64 / dt as f64).clamp(0.0, 1.0) } else { 0.0 };
        self.host = (busy, total);
        r.cpu.cores = cores;
        r.memory = memory();
        let holdings = self.sources.registry.ledger().snapshot();
        r.memory.media_buffered_bytes = holdings.iter().map(|h| h.bytes).sum();
        r.memory.media_buffers = holdings
            .iter()
            .map(|h| BufferHolding { stream: h.stream.clone(), holder: h.holder.to_owned(), bytes: h.bytes })
            .collect();

        // Bytes.
        for (proto, stats) in &self.sources.ingest {
            *r.bytes_in_total.entry((*proto).into()).or_default() += stats.bytes_in.load(Ordering::Relaxed);
            let out = stats.bytes_out.load(Ordering::Relaxed);
            if out > 0 {
                *r.bytes_out_total.entry((*proto).into()).or_default() += out;
            }
            *r.publish_refused_total.entry((*proto).into()).or_default() +=
                stats.publish_refused.load(Ordering::Relaxed);
        }
        let t = &self.sources.traffic;
        r.bytes_out_total.insert("hls".into(), t.hls.load(Ordering::Relaxed));
        r.bytes_out_total.insert("dash".into(), t.dash.load(Ordering::Relaxed));
        r.bytes_out_total.insert("ts".into(), t.ts.load(Ordering::Relaxed));
        r.bytes_out_total.insert("flv".into(), t.flv.load(Ordering::Relaxed));
        r.bytes_out_total.insert("mp4".into(), t.mp4.load(Ordering::Relaxed));
        r.bytes_out_total.insert("mkv".into(), t.mkv.load(Ordering::Relaxed));
        r.bytes_out_total.insert("jpg".into(), t.jpg.load(Ordering::Relaxed));
        r.bytes_out_total.insert("whep".into(), t.webrtc.load(Ordering::Relaxed));
        let bytes_in: u64 = r.bytes_in_total.values().sum();
        let bytes_out: u64 = r.bytes_out_total.values().sum();
        r.bandwidth_in_bps = (bytes_in.saturating_sub(self.bytes_in) as f64 * 8.0 / secs) as u64;
        r.bandwidth_out_bps = (bytes_out.saturating_sub(self.bytes_out) as f64 * 8.0 / secs) as u64;
        (self.bytes_in, self.bytes_out) = (bytes_in, bytes_out);

        // Streams and viewers, every protocol from the one session table.
        let counts: HashMap<String, BTreeMap<String, u64>> = self
            .sources
            .sessions
            .viewer_counts()
            .into_iter()
            .map(|(stream, by)| (stream, by.into_iter().map(|(p, n)| (p.to_owned(), n)).collect()))
            .collect();
        let mut stream_bytes = HashMap::new();
        let mut skipped_now = HashMap::new();
        for s in self.sources.registry.streams() {
            let stats = s.stats();
            let b = stats.bytes_in.load(Ordering::Relaxed);
            let prev = self.stream_bytes.get(s.name()).copied().unwrap_or(b);
            let skipped = stats.frames_skipped.load(Ordering::Relaxed);
            let viewers = counts.get(s.name()).cloned().unwrap_or_default();
            r.per_stream.push(StreamLoad {
                name: s.name().to_owned(),
                bitrate_in_bps: (b.saturating_sub(prev) as f64 * 8.0 / secs) as u64,
                viewers,
                frames_skipped: skipped,
                buffers: holdings
                    .iter()
                    .filter(|h| h.stream == s.name())
                    .map(|h| (h.holder.to_owned(), h.bytes))
                    .collect(),
                dvr: self.sources.hls.as_ref().and_then(|h| h.get(s.name())).map(|h| {
                    let w = h.window_state();
                    DvrWindow {
                        configured_seconds: w.configured_seconds,
                        seconds: w.seconds,
                        bytes: w.bytes,
                        on_disk: w.on_disk,
                        disk_bytes: w.disk_bytes,
                        disk_seconds: w.disk_seconds,
                    }
                }),
                thumbnails: self.sources.sprites.as_ref().and_then(|sp| sp.latest(s.name())).map(|sheet| {
                    ThumbnailState {
                        sheet_made_ms: sheet.made_unix_ms,
                        sheet_tiles: sheet.cues.len(),
                        sheet_bytes: sheet.jpeg.len(),
                        sheet_width: sheet.size.0,
                        sheet_height: sheet.size.1,
                    }
                }),
            });
            stream_bytes.insert(s.name().to_owned(), b);
            skipped_now.insert(s.name().to_owned(), skipped);
        }
        // Keep the skip total monotonic across streams that ended.
        for (name, n) in &self.skipped_by_stream {
            if !skipped_now.contains_key(name) {
                self.frames_skipped_ended += n;
            }
        }
        r.frames_skipped_total = self.frames_skipped_ended + skipped_now.values().sum::<u64>();
        self.skipped_by_stream = skipped_now;
        self.stream_bytes = stream_bytes;
        r.streams = r.per_stream.len();
        for by_proto in counts.values() {
            for (p, n) in by_proto {
                *r.viewers_by_protocol.entry(p.clone()).or_default() += n;
                r.viewers += n;
            }
        }
        let mem_used = if r.memory.host_total_bytes > 0 {
            1.0 - r.memory.host_available_bytes as f64 / r.memory.host_total_bytes as f64
        } else {
            0.0
        };
        r.score = r.cpu.host.max(mem_used).clamp(0.0, 1.0);
        r
    }
}

/// utime + stime of this process, in clock ticks.
fn proc_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) host CPU ticks.
fn host_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((total.saturating_sub(idle), total))
}

fn memory() -> Memory {
    let kb = |text: &str, key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let packaged = tidecast_memfile::stats();
    Memory {
        process_rss_bytes: kb(&status, "VmRSS:"),
        process_rss_shmem_bytes: kb(&status, "RssShmem:"),
        packaged_bytes: packaged.held_bytes,
        packaged_files: packaged.logs,
        sendfile_bytes_total: packaged.sendfile_bytes,
        dvr_evicted_bytes_total: packaged.evicted_bytes,
        host_total_bytes: kb(&info, "MemTotal:"),
        host_available_bytes: kb(&info, "MemAvailable:"),
        ..Memory::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidecast_media::RegistryConfig;

    #[test]
    fn reports_streams_bytes_and_machine_figures() {
        let registry = Registry::new(RegistryConfig::default());
        let ingest = Arc::new(IngestStats::default());
        let sources = Sources {
            registry: registry.clone(),
            ingest: vec![("rtmp", ingest.clone())],
            srt: None,
            sessions: Sessions::new(),
            traffic: Arc::new(Traffic::default()),
            encoders: Arc::default(),
            transcode: None,
            pushes: None,
            hls: None,
            sprites: None,
        };
        let mut s = Sampler::new(sources.clone());
        let _p = registry.publish("cam").unwrap();
        ingest.bytes_in.fetch_add(1000, Ordering::Relaxed);
        sources.traffic.hls.fetch_add(500, Ordering::Relaxed);
        let gate = tidecast_protocols::access::OpenGate { sessions: sources.sessions.clone() };
        let req = tidecast_protocols::access::PlayRequest {
            protocol: "ts",
            stream: "cam",
            token: None,
            peer: "127.0.0.1:5000".parse().unwrap(),
            url: "/ts/cam.ts",
        };
        let _g = futures_util::FutureExt::now_or_never(tidecast_protocols::access::AccessGate::admit_play(&gate, req))
            .unwrap()
            .unwrap();
        let r = s.sample();
        assert_eq!(r.streams, 1);
        assert_eq!(r.viewers, 1);
        assert_eq!(r.viewers_by_protocol["ts"], 1);
        assert_eq!(r.bytes_in_total["rtmp"], 1000);
        assert_eq!(r.bytes_out_total["hls"], 500);
        assert!(r.bandwidth_in_bps > 0);
        assert!((0.0..=1.0).contains(&r.score));
        if cfg!(target_os = "linux") {
            assert!(r.memory.process_rss_bytes > 0 && r.memory.host_total_bytes > 0);
        }
    }
}
