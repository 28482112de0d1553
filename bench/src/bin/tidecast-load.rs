//! `tidecast-load`: viewers and publishers against a media server on
//! loopback, with one JSON report. Works against Tidecast and against other
//! servers (nginx-rtmp, xiu): it speaks plain RTMP, HLS, LL-HLS, SRT and
//! WHEP.
//!
//! ```text
//! tidecast-load --seconds 20 --server-pid 1234 \
//!     --publish rtmp://127.0.0.1:1935/live/cam --clip clip.flv \
//!     --rtmp rtmp://127.0.0.1:1935/live/cam --rtmp-viewers 100 \
//!     --llhls http://127.0.0.1:8080/hls/cam/video.m3u8 --llhls-viewers 50
//! ```

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};
use tidecast_bench::load::{get, hls, percentile, procstat, publish, rtmp, srt, whep, RunTime, ViewerStats};

/// Load generator for live media servers (loopback only, bounded in time and count).
#[derive(Parser, Debug)]
#[command(name = "tidecast-load")]
struct Args {
    /// Seconds of load (after publishers are up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The server's process ids (comma-separated: nginx's master and
    /// workers): their CPU and memory are sampled from /proc and added up.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// RTMP URL to publish the clip to (`rtmp://host:port/app/name`).
    #[arg(long)]
    publish: Option<String>,
    /// How many publishers: names get `-0`, `-1`, ... when more than one.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// The FLV clip publishers push (H.264/AAC, real time, looped).
    #[arg(long)]
    clip: Option<String>,
    /// Seconds to wait after publishing before viewers start.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// RTMP URL viewers play.
    #[arg(long)]
    rtmp: Option<String>,
    /// RTMP viewers.
    #[arg(long, default_value_t = 0)]
    rtmp_viewers: usize,
    /// LL-HLS media playlist viewers play.
    #[arg(long)]
    llhls: Option<String>,
    /// LL-HLS viewers.
    #[arg(long, default_value_t = 0)]
    llhls_viewers: usize,
    /// Plain HLS media playlist viewers play.
    #[arg(long)]
    hls: Option<String>,
    /// Plain HLS viewers.
    #[arg(long, default_value_t = 0)]
    hls_viewers: usize,
    /// SRT address (`host:port`) viewers call.
    #[arg(long)]
    srt: Option<String>,
    /// The streamid SRT viewers send (e.g. `#!::r=cam,m=request`).
    #[arg(long, default_value = "")]
    srt_streamid: String,
    /// SRT viewers.
    #[arg(long, default_value_t = 0)]
    srt_viewers: usize,
    /// WHEP endpoint viewers play (`http://host:port/whep/NAME`).
    #[arg(long)]
    whep: Option<String>,
    /// WHEP viewers.
    #[arg(long, default_value_t = 0)]
    whep_viewers: usize,
    /// A URL to GET back to back (a cached segment).
    #[arg(long)]
    get: Option<String>,
    /// Connections for `--get`.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// A media playlist to watch from the moment the first publisher starts:
    /// reports the ingest-to-playlist delay of each new segment.
    #[arg(long)]
    segment_delay: Option<String>,
    /// Stagger viewer starts over this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    ramp_ms: u64,
}

/// Upper bounds, so a typo cannot turn a benchmark into a flood.
const MAX_VIEWERS: usize = 10_000;
const MAX_PUBLISHERS: usize = 100;

fn loopback_only(url: &str) -> anyhow::Result<()> {
    let host = url.split("://").nth(1).unwrap_or(url).split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    anyhow::ensure!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1"),
        "{url}: tidecast-load only targets loopback"
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let total = args.rtmp_viewers + args.llhls_viewers + args.hls_viewers + args.srt_viewers + args.whep_viewers;
    anyhow::ensure!(total <= MAX_VIEWERS, "at most {MAX_VIEWERS} viewers");
    anyhow::ensure!(args.publishers <= MAX_PUBLISHERS, "at most {MAX_PUBLISHERS} publishers");
    anyhow::ensure!(args.seconds <= 3600, "at most 3600 seconds");
    for url in
        [&args.publish, &args.rtmp, &args.llhls, &args.hls, &args.srt, &args.whep, &args.get, &args.segment_delay]
            .into_iter()
            .flatten()
    {
        loopback_only(url)?;
    }

    let watched = !args.server_pid.is_empty();
    let idle = if watched { Some(procstat::sample(&args.server_pid)?) } else { None };

    // Publishers first; viewers after the warm-up.
    let publish_until =
        tokio::time::Instant::now() + Duration::from_secs(args.warmup + args.seconds) + Duration::from_millis(500);
    let mut publishers = Vec::new();
    let mut clip_info = Value::Null;
    let mut delay_task = None;
    if let Some(url) = &args.publish {
        let path = args.clip.as_deref().ok_or_else(|| anyhow::anyhow!("--publish needs --clip"))?;
        let clip = Arc::new(publish::Clip::open(path)?);
        clip_info =
            json!({"path": path, "seconds": f64::from(clip.duration_ms) / 1000.0, "bitrate_bps": clip.bitrate()});
        let published_at = tokio::time::Instant::now();
        for i in 0..args.publishers {
            let name = if args.publishers > 1 { format!("{url}-{i}") } else { url.clone() };
            let target = rtmp::RtmpUrl::parse(&name)?;
            publishers.push(tokio::spawn(publish::publisher(target, clip.clone(), publish_until)));
        }
        if let Some(pl) = &args.segment_delay {
            let client = reqwest::Client::new();
            delay_task = Some(tokio::spawn(hls::segment_delays(client, pl.clone(), published_at, publish_until)));
        }
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;

    let after_warmup = if watched { Some(procstat::sample(&args.server_pid)?) } else { None };
    let until = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let run = RunTime { until, connect_timeout: Duration::from_secs(5) };
    let usage =
        watched.then(|| tokio::spawn(procstat::watch(args.server_pid.clone(), Duration::from_millis(500), until)));
    // The generator's own CPU over the same time: where the server and the
    // generator together use the machine's cores, the generator (the
    // machine), not the server, is the limit.
    let own =
        watched.then(|| tokio::spawn(procstat::watch(vec![std::process::id()], Duration::from_millis(500), until)));

    let mut viewers: Vec<(&'static str, tokio::task::JoinHandle<ViewerStats>)> = Vec::new();
    let client = reqwest::Client::builder().pool_max_idle_per_host(total.max(1)).build()?;
    let step = Duration::from_millis(args.ramp_ms) / (total.max(1) as u32);
    let mut spawn_delay = Duration::ZERO;
    let mut stagger = || {
        let d = spawn_delay;
        spawn_delay += step;
        d
    };
    if let Some(url) = &args.rtmp {
        let target = rtmp::RtmpUrl::parse(url)?;
        for _ in 0..args.rtmp_viewers {
            viewers.push(("rtmp", staggered(stagger(), rtmp::viewer(target.clone(), run))));
        }
    }
    for (kind, url, n, mode) in [
        ("llhls", &args.llhls, args.llhls_viewers, hls::Mode::LowLatency),
        ("hls", &args.hls, args.hls_viewers, hls::Mode::Plain),
    ] {
        let Some(url) = url else { continue };
        for _ in 0..n {
            viewers.push((kind, staggered(stagger(), hls::viewer(client.clone(), url.clone(), mode, run))));
        }
    }
    if let Some(addr) = &args.srt {
        for _ in 0..args.srt_viewers {
            let viewer = srt::viewer(addr.clone(), args.srt_streamid.clone(), run);
            viewers.push(("srt", staggered(stagger(), viewer)));
        }
    }
    if let Some(url) = &args.whep {
        for _ in 0..args.whep_viewers {
            viewers.push(("whep", staggered(stagger(), whep::viewer(client.clone(), url.clone(), run))));
        }
    }
    let hammer = args.get.clone().map(|url| tokio::spawn(get::hammer(url, args.connections, until)));

    // Gather.
    let mut report = serde_json::Map::new();
    report.insert("seconds".into(), json!(args.seconds));
    report.insert("clip".into(), clip_info);
    let mut by_kind: std::collections::BTreeMap<&str, Vec<ViewerStats>> = Default::default();
    for (kind, task) in viewers {
        let stats = task.await.unwrap_or_else(|e| ViewerStats { error: Some(e.to_string()), ..Default::default() });
        by_kind.entry(kind).or_default().push(stats);
    }
    for (kind, list) in by_kind {
        report.insert(kind.into(), summarize(&list, args.seconds as f64));
    }
    if let Some(h) = hammer {
        let g = h.await?;
        report.insert(
            "get".into(),
            json!({
                "connections": args.connections,
                "ok": g.ok,
                "failed": g.failed,
                "requests_per_second": g.ok as f64 / g.seconds.max(1e-3),
                "gbit_per_second": g.bytes as f64 * 8.0 / g.seconds.max(1e-3) / 1e9,
            }),
        );
    }
    if let Some(u) = usage {
        let u = u.await??;
        report.insert(
            "server".into(),
            json!({
                "cores": u.cores,
                "rss_idle_bytes": idle.map(|s| s.rss_bytes),
                "rss_after_warmup_bytes": after_warmup.map(|s| s.rss_bytes),
                "rss_peak_bytes": u.rss_peak,
                "rss_end_bytes": u.rss_end,
            }),
        );
    }
    if let Some(o) = own {
        let o = o.await??;
        let host = std::thread::available_parallelism().map_or(1, usize::from);
        report.insert("generator".into(), json!({"cores": o.cores, "host_cores": host}));
    }
    let mut pubs = Vec::new();
    for p in publishers {
        let s = p.await?;
        pubs.push(json!({"bytes": s.bytes, "error": s.error}));
    }
    report.insert("publishers".into(), Value::Array(pubs));
    if let Some(t) = delay_task {
        let mut d = t.await?;
        report.insert(
            "segment_delay_ms".into(),
            json!({"segments": d.len(), "p50": percentile(&mut d, 50.0), "p90": percentile(&mut d, 90.0), "max": percentile(&mut d, 100.0)}),
        );
    }
    println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
    Ok(())
}

/// Runs `viewer` after `delay` (a viewer future does nothing until polled).
fn staggered(
    delay: Duration,
    viewer: impl std::future::Future<Output = ViewerStats> + Send + 'static,
) -> tokio::task::JoinHandle<ViewerStats> {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        viewer.await
    })
}

/// One kind of viewer, added up.
fn summarize(list: &[ViewerStats], seconds: f64) -> Value {
    let started = list.iter().filter(|v| v.started).count();
    let sustained = list.iter().filter(|v| v.started && v.stalls == 0 && v.error.is_none()).count();
    let bytes: u64 = list.iter().map(|v| v.bytes).sum();
    let mut stalls: Vec<f64> = list.iter().map(|v| f64::from(v.stalls)).collect();
    let mut announce: Vec<f64> = list.iter().flat_map(|v| v.announce_ms.iter().copied()).collect();
    let mut fetch: Vec<f64> = list.iter().flat_map(|v| v.fetch_ms.iter().copied()).collect();
    let mut errors: Vec<&str> = list.iter().filter_map(|v| v.error.as_deref()).collect();
    errors.sort_unstable();
    errors.dedup();
    errors.truncate(5);
    json!({
        "viewers": list.len(),
        "started": started,
        "sustained_without_stall": sustained,
        "stalls_total": stalls.iter().sum::<f64>(),
        "stalls_per_viewer_max": percentile(&mut stalls, 100.0),
        "bytes_per_second": bytes as f64 / seconds.max(1e-3),
        "media_seconds_per_viewer_p50": percentile(&mut list.iter().map(|v| v.media_seconds).collect::<Vec<_>>(), 50.0),
        "part_announce_ms": {"p50": percentile(&mut announce, 50.0), "p90": percentile(&mut announce, 90.0), "p99": percentile(&mut announce, 99.0)},
        "fetch_ms": {"p50": percentile(&mut fetch, 50.0), "p99": percentile(&mut fetch, 99.0)},
        "errors": errors,
    })
}
