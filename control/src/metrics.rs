//! Prometheus metrics (`/metrics`): the load report's figures plus counters
//! the control plane keeps itself (auth failures, trigger latency).

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::load::LoadReport;

/// Every metric Tidecast exports.
pub struct Metrics {
    registry: Registry,
    /// Every family registered (name, help, type), so that `/metrics`
    /// declares the labelled ones that have no series yet.
    described: Vec<(String, String, &'static str)>,
    /// Auth failures by kind (`api_key`, `stream_key`, `playback_token`).
    pub auth_failures: IntCounterVec,
    /// Requests refused by the per-IP rate limit.
    pub rate_limited: IntCounter,
    /// Trigger deliveries' latency by trigger.
    pub trigger_seconds: HistogramVec,
    /// Trigger deliveries that failed, by trigger.
    pub trigger_failures: IntCounterVec,
    /// Notifications dropped because the queue was full.
    pub trigger_dropped: IntCounter,
    /// Sessions refused by a tenant quota, by quota.
    pub quota_refusals: IntCounterVec,
    streams: IntGauge,
    viewers: IntGaugeVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    frames_skipped: IntCounter,
    publish_refused: IntCounterVec,
    cpu_process: prometheus::Gauge,
    cpu_host: prometheus::Gauge,
    memory_rss: IntGauge,
    media_buffered: IntGauge,
    packaged: IntGauge,
    packaged_files: IntGauge,
    sendfile: IntCounter,
    dvr_evicted: IntCounter,
    stream_buffers: IntGaugeVec,
    load_score: prometheus::Gauge,
    webrtc_sessions: IntGaugeVec,
    webrtc_opened: IntCounterVec,
    webrtc_feedback: IntGaugeVec,
    webrtc_unrouted: IntCounter,
    webrtc_dropped: IntCounter,
    session_ends_dropped: IntCounter,
    pushes: IntGaugeVec,
    transcode_ladders: IntGauge,
    transcode_rung: IntGaugeVec,
    transcode_rung_cpu: prometheus::GaugeVec,
    transcode_ladder: IntGaugeVec,
    transcode_hw_fallbacks: IntCounter,
    transcode_refused: IntCounter,
    livepeer_segments: IntGaugeVec,
    livepeer_turnaround: IntGaugeVec,
    livepeer_speed: prometheus::GaugeVec,
}

/// Registers `c` and notes its families (name with the namespace, help,
/// type) in `described`.
fn register(
    registry: &Registry,
    described: &std::cell::RefCell<Vec<(String, String, &'static str)>>,
    c: Box<dyn prometheus::core::Collector>,
) {
    use prometheus::proto::MetricType;
    for mf in c.collect() {
        let kind = match mf.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        described.borrow_mut().push((format!("tidecast_{}", mf.name()), mf.help().to_owned(), kind));
    }
    must(registry.register(c));
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error
    // caught by the unit test below, never by input.
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition: {e}"),
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("tidecast".into()), None).unwrap_or_default();
        let described = std::cell::RefCell::new(Vec::new());
        let cv = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            register(&registry, &described, Box::new(c.clone()));
            c
        };
        let c = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            register(&registry, &described, Box::new(c.clone()));
            c
        };
        let g = |name: &str, help: &str| {
            let g = must(prometheus::Gauge::new(name, help));
            register(&registry, &described, Box::new(g.clone()));
            g
        };
        let trigger_seconds = must(HistogramVec::new(
            HistogramOpts::new("trigger_seconds", "Trigger delivery latency")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["trigger"],
        ));
        register(&registry, &described, Box::new(trigger_seconds.clone()));
        let streams = must(IntGauge::new("streams", "Live streams"));
        register(&registry, &described, Box::new(streams.clone()));
        let gv = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            register(&registry, &described, Box::new(g.clone()));
            g
        };
        let webrtc_sessions = gv("webrtc_sessions", "Live WebRTC sessions by kind (whip, whep)", &["kind"]);
        let webrtc_feedback = gv(
            "webrtc_feedback",
            "RTCP feedback of the live WebRTC sessions, by kind and type (nack, pli, fir)",
            &["kind", "type"],
        );
        let webrtc_opened = cv("webrtc_sessions_opened_total", "WebRTC sessions opened, by kind", &["kind"]);
        let webrtc_unrouted =
            c("webrtc_unrouted_datagrams_total", "Datagrams on the WebRTC ports that matched no session");
        let webrtc_dropped =
            c("webrtc_dropped_datagrams_total", "WebRTC datagrams dropped (full queue or socket buffer)");
        let viewers = must(IntGaugeVec::new(Opts::new("viewers", "Viewers by protocol"), &["protocol"]));
        register(&registry, &described, Box::new(viewers.clone()));
        let memory_rss = must(IntGauge::new("memory_rss_bytes", "Resident memory of the process"));
        register(&registry, &described, Box::new(memory_rss.clone()));
        let media_buffered = must(IntGauge::new(
            "media_buffered_bytes",
            "Media payload bytes held by all streams' rings and output windows (holders may share bytes)",
        ));
        register(&registry, &described, Box::new(media_buffered.clone()));
        let packaged = must(IntGauge::new(
            "packaged_bytes",
            "Packaged CMAF bytes held in memory-backed files (segments and parts of every rendition)",
        ));
        register(&registry, &described, Box::new(packaged.clone()));
        let packaged_files = must(IntGauge::new(
            "packaged_files",
            "Memory-backed files holding packaged media (each is an open descriptor)",
        ));
        register(&registry, &described, Box::new(packaged_files.clone()));
        let sendfile = c("sendfile_bytes_total", "Bytes HTTP sent from packaged media with sendfile (never copied)");
        let dvr_evicted =
            c("dvr_evicted_bytes_total", "Bytes of DVR windows written out to disk and dropped from memory");
        let pushes = gv(
            "push",
            "Each push (restream or recording, running or ended in the last five minutes): bytes, reconnects, frames_skipped, and 1 for its state",
            &["stream", "push", "kind", "what"],
        );
        let stream_buffers = gv(
            "stream_buffer_bytes",
            "Media payload bytes held for a stream, by holder (ring, cmaf, ts, whep); gone when the holder is",
            &["stream", "holder"],
        );
        let transcode_rung = gv(
            "transcode_rung_frames",
            "Frames of each running rung by what happened to them (out: published; dropped: left out on overload), since its ladder started",
            &["stream", "rung", "encoder", "what"],
        );
        let transcode_rung_cpu = must(prometheus::GaugeVec::new(
            Opts::new("transcode_rung_cpu_seconds", "Seconds of one core each running rung spent scaling and encoding"),
            &["stream", "rung", "encoder"],
        ));
        register(&registry, &described, Box::new(transcode_rung_cpu.clone()));
        let transcode_ladder = gv(
            "transcode_ladder_events",
            "Per running ladder: source frames in, decode errors, failed runs (each retried)",
            &["stream", "what"],
        );
        let livepeer_segments = gv(
            "livepeer_segments",
            "Per stream offloaded to Livepeer, segments by outcome (sent, done, failed, skipped, rejected) and gateway switches, since the offload started",
            &["stream", "what"],
        );
        let livepeer_turnaround = gv(
            "livepeer_turnaround_ms",
            "Per stream offloaded to Livepeer, the last segment's time from upload to answer",
            &["stream", "gateway"],
        );
        let livepeer_speed = must(prometheus::GaugeVec::new(
            Opts::new(
                "livepeer_speed_factor",
                "Per stream offloaded to Livepeer, the last segment's duration over its turnaround",
            ),
            &["stream", "gateway"],
        ));
        register(&registry, &described, Box::new(livepeer_speed.clone()));
        let transcode_ladders = must(IntGauge::new("transcode_ladders", "Streams with a transcoding ladder"));
        register(&registry, &described, Box::new(transcode_ladders.clone()));
        Metrics {
            livepeer_segments,
            livepeer_turnaround,
            livepeer_speed,
            transcode_ladders,
            transcode_rung,
            transcode_rung_cpu,
            transcode_ladder,
            transcode_hw_fallbacks: c(
                "transcode_hw_fallbacks_total",
                "Ladders started on software because hw = auto found no working hardware encoder",
            ),
            transcode_refused: c(
                "transcode_refused_total",
                "Ladders refused: unknown profile, or hw = require without a hardware encoder",
            ),
            auth_failures: cv("auth_failures_total", "Failed authentications by kind", &["kind"]),
            rate_limited: c("rate_limited_total", "Requests refused by the per-IP auth failure limit"),
            trigger_failures: cv("trigger_failures_total", "Failed trigger deliveries", &["trigger"]),
            trigger_dropped: c("trigger_dropped_total", "Trigger notifications dropped (queue full)"),
            quota_refusals: cv("quota_refusals_total", "Sessions refused by a tenant quota", &["quota"]),
            bytes_in: cv("bytes_in_total", "Bytes received by protocol", &["protocol"]),
            bytes_out: cv("bytes_out_total", "Bytes sent by protocol", &["protocol"]),
            frames_skipped: c("frames_skipped_total", "Frames slow viewers skipped"),
            session_ends_dropped: c(
                "session_ends_dropped_total",
                "Ended sessions whose end trigger was never sent (the ended queue overflowed)",
            ),
            publish_refused: cv("publish_refused_total", "Refused publishes by protocol", &["protocol"]),
            cpu_process: g("cpu_process_ratio", "Process CPU use, 0..1 of the whole machine"),
            cpu_host: g("cpu_host_ratio", "Host CPU use, 0..1"),
            load_score: g("load_score", "The load report's 0..1 score"),
            trigger_seconds,
            streams,
            viewers,
            memory_rss,
            packaged,
            pushes,
            packaged_files,
            sendfile,
            dvr_evicted,
            media_buffered,
            stream_buffers,
            registry,
            described: described.into_inner(),
            webrtc_sessions,
            webrtc_opened,
            webrtc_feedback,
            webrtc_unrouted,
            webrtc_dropped,
        }
    }

    /// Brings the session table's own counters up to date.
    pub fn observe_sessions(&self, sessions: &tidecast_protocols::access::Sessions) {
        catch_up(&self.session_ends_dropped, sessions.ended_dropped());
    }

    /// Records one trigger delivery.
    pub fn observe_trigger(&self, trigger: &str, took: Duration, ok: bool) {
        self.trigger_seconds.with_label_values(&[trigger]).observe(took.as_secs_f64());
        if !ok {
            self.trigger_failures.with_label_values(&[trigger]).inc();
        }
    }

    /// Brings the WebRTC figures up to the hub's.
    pub fn observe_webrtc(&self, hub: &tidecast_protocols::webrtc::WebRtcHub) {
        let live = hub.sessions();
        for (i, kind) in ["whip", "whep"].into_iter().enumerate() {
            let mine: Vec<_> = live.iter().filter(|s| s.kind == kind).collect();
            self.webrtc_sessions.with_label_values(&[kind]).set(mine.len() as i64);
            catch_up(&self.webrtc_opened.with_label_values(&[kind]), hub.opened[i].load(Ordering::Relaxed));
            let sum = |f: fn(&tidecast_protocols::webrtc::TrackStats) -> u64| -> i64 {
                mine.iter().flat_map(|s| s.tracks.values()).map(f).sum::<u64>() as i64
            };
            self.webrtc_feedback.with_label_values(&[kind, "nack"]).set(sum(|t| t.nacks));
            self.webrtc_feedback.with_label_values(&[kind, "pli"]).set(sum(|t| t.plis));
            self.webrtc_feedback.with_label_values(&[kind, "fir"]).set(sum(|t| t.firs));
        }
        let net = hub.net_stats();
        catch_up(&self.webrtc_unrouted, net.unrouted.load(Ordering::Relaxed));
        catch_up(&self.webrtc_dropped, net.dropped.load(Ordering::Relaxed));
    }

    /// Brings the exported figures up to `report` and renders the text format.
    pub fn render(&self, report: &LoadReport) -> String {
        self.streams.set(report.streams as i64);
        for (proto, n) in &report.viewers_by_protocol {
            self.viewers.with_label_values(&[proto]).set(*n as i64);
        }
        for (proto, total) in &report.bytes_in_total {
            catch_up(&self.bytes_in.with_label_values(&[proto]), *total);
        }
        for (proto, total) in &report.bytes_out_total {
            catch_up(&self.bytes_out.with_label_values(&[proto]), *total);
        }
        for (proto, total) in &report.publish_refused_total {
            catch_up(&self.publish_refused.with_label_values(&[proto]), *total);
        }
        catch_up(&self.frames_skipped, report.frames_skipped_total);
        self.cpu_process.set(report.cpu.process);
        self.cpu_host.set(report.cpu.host);
        self.memory_rss.set(report.memory.process_rss_bytes as i64);
        self.media_buffered.set(report.memory.media_buffered_bytes as i64);
        self.packaged.set(report.memory.packaged_bytes as i64);
        self.packaged_files.set(report.memory.packaged_files as i64);
        catch_up(&self.sendfile, report.memory.sendfile_bytes_total);
        catch_up(&self.dvr_evicted, report.memory.dvr_evicted_bytes_total);
        // Series of streams whose holders are gone disappear with them.
        self.stream_buffers.reset();
        for h in &report.memory.media_buffers {
            self.stream_buffers.with_label_values(&[h.stream.as_str(), h.holder.as_str()]).set(h.bytes as i64);
        }
        self.pushes.reset();
        for p in &report.pushes {
            let id = p.id.to_string();
            let labels = |what: &'static str| [p.stream.as_str(), id.as_str(), p.kind.as_str(), what];
            self.pushes.with_label_values(&labels("bytes")).set(p.bytes as i64);
            self.pushes.with_label_values(&labels("reconnects")).set(p.reconnects as i64);
            self.pushes.with_label_values(&labels("frames_skipped")).set(p.frames_skipped as i64);
            let state = format!("state_{}", p.state);
            self.pushes.with_label_values(&[p.stream.as_str(), id.as_str(), p.kind.as_str(), state.as_str()]).set(1);
        }
        self.load_score.set(report.score);
        let t = &report.transcode;
        self.transcode_ladders.set(t.ladders.len() as i64);
        catch_up(&self.transcode_hw_fallbacks, t.hw_fallbacks_total);
        catch_up(&self.transcode_refused, t.refused_total);
        self.transcode_rung.reset();
        self.transcode_rung_cpu.reset();
        self.transcode_ladder.reset();
        for l in &t.ladders {
            let s = l.stream.as_str();
            for (what, v) in [("frames_in", l.frames_in), ("decode_errors", l.decode_errors), ("failures", l.failures)]
            {
                self.transcode_ladder.with_label_values(&[s, what]).set(v as i64);
            }
            for r in &l.rungs {
                let rung = format!("{}p", r.height);
                let labels = [s, rung.as_str(), r.encoder.as_str()];
                self.transcode_rung.with_label_values(&[s, &rung, &r.encoder, "out"]).set(r.frames_out as i64);
                self.transcode_rung.with_label_values(&[s, &rung, &r.encoder, "dropped"]).set(r.dropped as i64);
                self.transcode_rung_cpu.with_label_values(&labels).set(r.encode_cpu_seconds);
            }
        }
        self.livepeer_segments.reset();
        self.livepeer_turnaround.reset();
        self.livepeer_speed.reset();
        for o in &t.livepeer {
            let s = o.stream.as_str();
            for (what, v) in [
                ("sent", o.segments_sent),
                ("done", o.segments_done),
                ("failed", o.segments_failed),
                ("skipped", o.segments_skipped),
                ("rejected", o.rejected),
                ("gateway_switches", o.gateway_switches),
            ] {
                self.livepeer_segments.with_label_values(&[s, what]).set(v as i64);
            }
            self.livepeer_turnaround.with_label_values(&[s, o.gateway.as_str()]).set(o.last_turnaround_ms as i64);
            self.livepeer_speed.with_label_values(&[s, o.gateway.as_str()]).set(o.speed_factor);
        }
        let families = self.registry.gather();
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        // Labelled families without a series yet (no trigger has failed,
        // say) are declared anyway, so a dashboard can tell a metric that
        // is quiet from one that does not exist.
        for (name, help, kind) in &self.described {
            if !families.iter().any(|f| f.name() == name) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counters that mirror a running total kept elsewhere.
fn catch_up(c: &IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new();
        m.auth_failures.with_label_values(&["stream_key"]).inc();
        m.observe_trigger("PUSH_REWRITE", Duration::from_millis(3), false);
        let text = m.render(&LoadReport::default());
        assert!(text.contains("tidecast_auth_failures_total{kind=\"stream_key\"} 1"), "{text}");
        assert!(text.contains("tidecast_trigger_failures_total{trigger=\"PUSH_REWRITE\"} 1"));
        assert!(text.contains("tidecast_trigger_seconds_bucket{trigger=\"PUSH_REWRITE\",le=\"0.005\"} 1"));
        assert!(text.contains("tidecast_load_score 0"));
    }
}
