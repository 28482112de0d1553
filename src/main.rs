//! The `tidecast` binary: command line, configuration and wiring. All media
//! and protocol logic lives in the workspace crates.

mod config;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tidecast_control::auth::{ConfigGate, StreamKey};
use tidecast_control::playback::Playback;
use tidecast_media::{PublishMode, Registry, RegistryConfig, StreamConfig};
use tidecast_protocols::hls::{HlsConfig, HlsHub};
use tidecast_protocols::ingest::IngestStats;
use tidecast_protocols::mpegts::output::TsHub;
use tidecast_protocols::rtmp::chunk::Limits;
use tidecast_protocols::rtmp::driver::{self, RtmpContext};
use tidecast_protocols::rtmp::SessionConfig;
use tidecast_protocols::srt::driver::{SrtContext, SrtSessions};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

#[derive(Parser, Debug)]
#[command(name = "tidecast", version, about = "A live media server: RTMP in, LL-HLS out, one process.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
}

/// Flags override environment variables, which override the file.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// TOML configuration file (optional: embedded defaults otherwise).
    #[arg(long, short, env = "TIDECAST_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, env = "TIDECAST_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// RTMP listen address.
    #[arg(long, env = "TIDECAST_RTMP_LISTEN")]
    rtmp_listen: Option<SocketAddr>,
    /// SRT listen address (UDP).
    #[arg(long, env = "TIDECAST_SRT_LISTEN")]
    srt_listen: Option<SocketAddr>,
    /// HTTP playback listen address.
    #[arg(long, env = "TIDECAST_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "TIDECAST_LOG")]
    log: Option<String>,
    /// Log format: `text` or `json` (one object per line).
    #[arg(long, env = "TIDECAST_LOG_FORMAT")]
    log_format: Option<String>,
    /// Seconds a stream waits for its publisher to reconnect.
    #[arg(long, env = "TIDECAST_RECONNECT_GRACE")]
    reconnect_grace: Option<f64>,
    /// LL-HLS segment target in seconds.
    #[arg(long, env = "TIDECAST_HLS_SEGMENT")]
    hls_segment: Option<f64>,
    /// LL-HLS part target in seconds.
    #[arg(long, env = "TIDECAST_HLS_PART")]
    hls_part: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = args.rtmp_listen {
        cfg.rtmp.listen = v;
    }
    if let Some(v) = args.srt_listen {
        cfg.srt.listen = v;
    }
    if let Some(v) = args.http_listen {
        cfg.http.listen = v;
    }
    if let Some(v) = args.log {
        cfg.log = v;
    }
    if let Some(v) = args.log_format {
        cfg.log_format = v;
    }
    if let Some(v) = args.reconnect_grace {
        cfg.media.reconnect_grace_seconds = v;
    }
    if let Some(v) = args.hls_segment {
        cfg.hls.segment_seconds = v;
    }
    if let Some(v) = args.hls_part {
        cfg.hls.part_seconds = v;
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log).context("bad log filter")?;
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr);
    match cfg.log_format.as_str() {
        "text" => logs.init(),
        "json" => logs.json().init(),
        other => anyhow::bail!("log format must be text or json, not {other:?}"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(cfg))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let v = cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;

    let registry = Registry::new(RegistryConfig {
        grace: v.grace,
        mode: if cfg.media.takeover { PublishMode::Takeover } else { PublishMode::Refuse },
        stream: StreamConfig { buffer: v.buffer, max_bytes: cfg.media.max_buffer_bytes },
    });
    let stream_passphrases: HashMap<String, String> =
        cfg.streams.iter().filter_map(|s| Some((s.name.clone(), s.srt_passphrase.clone()?))).collect();
    let gate =
        ConfigGate::new(cfg.streams.iter().map(|s| StreamKey { stream: s.name.clone(), key: s.key.clone() }).collect());
    let gate = Arc::new(gate);
    if gate.is_open() {
        warn!("OPEN MODE: no [[streams]] keys are configured, so ANYONE can publish: rtmp://HOST/live/NAME publishes stream NAME. Configure stream keys before exposing this server.");
    }
    let shutdown = CancellationToken::new();

    let hls = HlsHub::new(HlsConfig {
        segment_target: v.segment,
        part_target: v.part,
        window: cfg.hls.playlist_segments,
        ..HlsConfig::default()
    });
    let hls_task = tokio::spawn(hls.clone().run(registry.clone(), shutdown.clone()));
    let ts = TsHub::new();
    let ts_task = tokio::spawn(ts.clone().run(registry.clone(), shutdown.clone()));

    let rtmp_listener = tokio::net::TcpListener::bind(cfg.rtmp.listen)
        .await
        .with_context(|| format!("binding RTMP on {}", cfg.rtmp.listen))?;
    let http_listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http.listen))?;
    let srt_socket = tokio::net::UdpSocket::bind(cfg.srt.listen)
        .await
        .with_context(|| format!("binding SRT on {}", cfg.srt.listen))?;
    let srt_addr = srt_socket.local_addr()?;
    let rtmp_addr = rtmp_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let rtmp_ctx = Arc::new(RtmpContext {
        registry: registry.clone(),
        gate: gate.clone(),
        session: SessionConfig {
            limits: Limits { max_message: cfg.rtmp.max_message_bytes, ..Limits::default() },
            chunk_size: cfg.rtmp.chunk_size,
            ..SessionConfig::default()
        },
        idle_timeout: v.rtmp_idle,
        max_connections: cfg.rtmp.max_connections,
        stats: Arc::new(IngestStats::default()),
    });
    let rtmp_task = tokio::spawn(driver::serve(rtmp_listener, rtmp_ctx, shutdown.clone()));

    let srt_ctx = Arc::new(SrtContext {
        registry: registry.clone(),
        gate: gate.clone(),
        ts: ts.clone(),
        latency: Duration::from_millis(cfg.srt.latency_ms),
        passphrase: cfg.srt.passphrase.clone(),
        stream_passphrases,
        stats: Arc::new(IngestStats::default()),
        sessions: Arc::new(SrtSessions::default()),
    });
    let srt_task = tokio::spawn(tidecast_protocols::srt::driver::serve(srt_socket, srt_ctx, shutdown.clone()));

    let app = tidecast_control::playback::router(Playback { hls: hls.clone(), ts });
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, app).with_graceful_shutdown(async move { http_shutdown.cancelled().await }).await
    });

    info!(%rtmp_addr, %srt_addr, %http_addr, data_dir = %cfg.data_dir.display(), "tidecast {} ready", env!("CARGO_PKG_VERSION"));
    info!("publish: rtmp://{rtmp_addr}/live/NAME   play: http://{http_addr}/hls/NAME/index.m3u8 or http://{http_addr}/ts/NAME.ts");
    // One machine-readable line on stdout for scripts and tests.
    println!("listening rtmp={rtmp_addr} srt={srt_addr} http={http_addr}");

    wait_for_signal().await;
    info!("shutting down: closing publishers and viewers");
    shutdown.cancel();
    let drain = async {
        let _ = rtmp_task.await;
        let _ = srt_task.await;
        registry.close_all();
        let _ = hls_task.await;
        let _ = ts_task.await;
        let _ = http_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        warn!("some connections did not close within 10 s; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
