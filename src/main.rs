//! The `tidecast` binary: command line, configuration and wiring. All media
//! and protocol logic lives in the workspace crates.

mod config;
mod transcoding;
mod trim;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tidecast_control::api::Api;
use tidecast_control::auth::{ConfigGate, StreamKey};
use tidecast_control::load::{Sources, Traffic};
use tidecast_control::metrics::Metrics;
use tidecast_control::plane::ControlPlane;
use tidecast_control::store::{Db, RedbStore};
use tidecast_control::triggers::{Trigger, Triggers};
use tidecast_media::{PublishMode, Registry, RegistryConfig, StreamConfig};
use tidecast_protocols::dash::http::DashHttp;
use tidecast_protocols::dash::thumbs::DashThumbs;
use tidecast_protocols::flv::http::FlvHttp;
use tidecast_protocols::hls::http::HlsHttp;
use tidecast_protocols::hls::{HlsConfig, HlsHub};
use tidecast_protocols::ingest::IngestStats;
use tidecast_protocols::mpegts::http::TsHttp;
use tidecast_protocols::mpegts::output::TsHub;
use tidecast_protocols::progressive::jpg::Thumbnails;
use tidecast_protocols::progressive::sprite::{Sprites, Tiler};
use tidecast_protocols::progressive::thumbfiles::ThumbFiles;
use tidecast_protocols::progressive::ProgressiveHttp;
use tidecast_protocols::push::PushManager;
use tidecast_protocols::rtmp::chunk::Limits;
use tidecast_protocols::rtmp::driver::{self, RtmpContext};
use tidecast_protocols::rtmp::SessionConfig;
use tidecast_protocols::srt::driver::{SrtContext, SrtSessions};
use tidecast_protocols::webrtc::http::Signaling;
use tidecast_protocols::webrtc::{IceServer, WebRtcConfig, WebRtcHub};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use transcoding::Transcoders;

use crate::config::{Config, PackagedStore};

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
    /// Admin API listen address.
    #[arg(long, env = "TIDECAST_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Address WebRTC binds (`0.0.0.0`: every interface address).
    #[arg(long, env = "TIDECAST_WEBRTC_BIND")]
    webrtc_bind: Option<std::net::IpAddr>,
    /// The UDP port every WebRTC peer shares (0: any).
    #[arg(long, env = "TIDECAST_WEBRTC_UDP_PORT")]
    webrtc_udp_port: Option<u16>,
    /// The ICE-TCP port (0: any).
    #[arg(long, env = "TIDECAST_WEBRTC_TCP_PORT")]
    webrtc_tcp_port: Option<u16>,
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
    if let Some(v) = args.admin_listen {
        cfg.admin.listen = v;
    }
    if let Some(v) = args.webrtc_bind {
        cfg.webrtc.bind = v;
    }
    if let Some(v) = args.webrtc_udp_port {
        cfg.webrtc.udp_port = v;
    }
    if let Some(v) = args.webrtc_tcp_port {
        cfg.webrtc.tcp_port = v;
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
    if cfg.hls.store == PackagedStore::Disk {
        let dir = cfg.data_dir.join("packaged");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        tidecast_memfile::set_directory(Some(dir));
    }

    let registry = Registry::new(RegistryConfig {
        grace: v.grace,
        mode: if cfg.media.takeover { PublishMode::Takeover } else { PublishMode::Refuse },
        stream: StreamConfig { buffer: v.buffer, max_bytes: cfg.media.max_buffer_bytes },
    });
    let stream_passphrases: HashMap<String, String> =
        cfg.streams.iter().filter_map(|s| Some((s.name.clone(), s.srt_passphrase.clone()?))).collect();
    let config_keys =
        ConfigGate::new(cfg.streams.iter().map(|s| StreamKey { stream: s.name.clone(), key: s.key.clone() }).collect());

    // The control plane: durable store, triggers, metrics.
    let store_path = cfg.data_dir.join("tidecast.redb");
    let store = RedbStore::open(&store_path).with_context(|| format!("opening the store {}", store_path.display()))?;
    let metrics = Arc::new(Metrics::new());
    let instance = format!("tidecast@{}", cfg.http.listen);
    let (triggers, trigger_worker) = Triggers::new(instance, metrics.clone());
    tokio::spawn(trigger_worker);
    let plane = ControlPlane::new(Db::new(Arc::new(store)), config_keys, registry.clone(), metrics, triggers.clone())?;
    plane.limiter.set_limit(cfg.admin.auth_failures_per_minute);
    let preset = std::env::var("TIDECAST_ADMIN_KEY").ok();
    if let Some(key) = plane.bootstrap(preset.as_deref())? {
        warn!(
            "first start: created the admin API key; it is printed once, on stdout. Keep it: only its hash is stored."
        );
        println!("admin-key {key}");
    }
    if plane.open_mode() {
        warn!("OPEN MODE: no stream keys are configured (none in the file, no streams in the store), so ANYONE can publish: rtmp://HOST/live/NAME publishes stream NAME. Create streams through the admin API before exposing this server.");
    }
    if !triggers.allow(Trigger::SystemStart, None, vec![]).await {
        anyhow::bail!("a SYSTEM_START trigger handler refused the start");
    }
    let gate: Arc<ControlPlane> = plane.clone();
    let shutdown = CancellationToken::new();

    // Long DVR windows: files in the data directory, emptied at each start
    // (what a previous run left is unlinked already; see memfile).
    let dvr_dir = cfg.hls.dvr_on_disk.then(|| cfg.data_dir.join("dvr")).filter(|dir| {
        let usable = std::fs::create_dir_all(dir).and_then(|()| tidecast_memfile::check_directory(dir));
        if let Err(e) = &usable {
            warn!(dir = %dir.display(), error = %e,
                "DVR windows cannot be kept on disk there; they stay in memory, capped by hls.max_window_bytes");
        }
        usable.is_ok()
    });
    let hls = HlsHub::new(HlsConfig {
        segment_target: v.segment,
        part_target: v.part,
        window: cfg.hls.playlist_segments,
        linger: v.hls_linger,
        max_bytes: cfg.hls.max_window_bytes,
        dvr: Duration::from_secs(u64::from(cfg.hls.dvr_seconds)),
        dvr_dir,
        dvr_max_bytes: cfg.hls.dvr_max_disk_bytes,
        ..HlsConfig::default()
    });
    let hls_task = tokio::spawn(hls.clone().run(registry.clone(), shutdown.clone()));
    // Ended streams' memory goes back to the kernel once their outputs'
    // linger has passed (see src/trim.rs).
    tokio::spawn(trim::run(registry.clone(), v.hls_linger + Duration::from_secs(5), shutdown.clone()));
    let ts = TsHub::new();
    let ts_task = tokio::spawn(ts.clone().run(registry.clone(), shutdown.clone()));

    let rtmp_listener = tokio::net::TcpListener::bind(cfg.rtmp.listen)
        .await
        .with_context(|| format!("binding RTMP on {}", cfg.rtmp.listen))?;
    let http_listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", cfg.http.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("binding the admin API on {}", cfg.admin.listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let srt_socket = tokio::net::UdpSocket::bind(cfg.srt.listen)
        .await
        .with_context(|| format!("binding SRT on {}", cfg.srt.listen))?;
    let srt_addr = srt_socket.local_addr()?;
    let rtmp_addr = rtmp_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let webrtc = WebRtcHub::start(webrtc_config(&cfg, &v, &registry).await?, shutdown.clone())
        .await
        .context("starting WebRTC (webrtc.udp_port / webrtc.tcp_port)")?;
    let webrtc_udp = webrtc.udp_addrs().first().map_or("-".to_string(), |a| a.to_string());
    let webrtc_tcp = webrtc.tcp_addrs().first().map_or("-".to_string(), |a| a.to_string());

    let rtmp_stats = Arc::new(IngestStats::default());
    let srt_stats = Arc::new(IngestStats::default());
    let srt_sessions = Arc::new(SrtSessions::default());
    let traffic = Arc::new(Traffic::default());
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
        play_flush: Duration::from_millis(cfg.rtmp.play_flush_ms),
        stats: rtmp_stats.clone(),
    });
    let rtmp_task = tokio::spawn(driver::serve(rtmp_listener, rtmp_ctx, shutdown.clone()));

    let srt_ctx = Arc::new(SrtContext {
        registry: registry.clone(),
        gate: gate.clone(),
        ts: ts.clone(),
        latency: Duration::from_millis(cfg.srt.latency_ms),
        passphrase: cfg.srt.passphrase.clone(),
        stream_passphrases,
        stats: srt_stats.clone(),
        sessions: srt_sessions.clone(),
    });
    let srt_task = tokio::spawn(tidecast_protocols::srt::driver::serve(srt_socket, srt_ctx, shutdown.clone()));

    // Which H.264 encoders work here, probed once off the runtime (opening
    // an encoder may load a driver): logged, in the load report, and what
    // the ladders' hardware policy is resolved against.
    let encoders: Arc<std::sync::OnceLock<Vec<tidecast_control::load::EncoderStatus>>> = Arc::default();
    let (probed_tx, probed) = tokio::sync::watch::channel(None);
    {
        let encoders = encoders.clone();
        tokio::task::spawn_blocking(move || {
            let found = tidecast_transcode::probe::probe_h264();
            for p in &found {
                match &p.reason {
                    None => info!(encoder = %p.name, hardware = p.hardware, micros = p.micros, "encoder available"),
                    Some(why) => info!(encoder = %p.name, hardware = p.hardware, "encoder unavailable: {why}"),
                }
            }
            let _ = encoders.set(
                found
                    .iter()
                    .map(|p| tidecast_control::load::EncoderStatus {
                        name: p.name.clone(),
                        works: p.works,
                        hardware: p.hardware,
                        reason: p.reason.clone(),
                    })
                    .collect(),
            );
            let _ = probed_tx.send(Some(Arc::new(found)));
        });
    }
    // Ladders for streams that select a transcode profile (src/transcoding.rs).
    let stored: transcoding::StoredProfile = {
        let plane = plane.clone();
        Arc::new(move |name: &str| {
            let p =
                plane.db.get::<tidecast_control::model::LadderProfile>(tidecast_control::store::Table::Profiles, name);
            match p {
                Ok(Some(p)) => transcoding::from_api(&p)
                    .inspect_err(|e| tracing::warn!(profile = name, error = %e, "transcode: stored profile unreadable"))
                    .ok(),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(profile = name, error = %e, "transcode: cannot read stored profiles");
                    None
                }
            }
        })
    };
    let livepeer_notify: transcoding::LivepeerNotify = {
        let plane = plane.clone();
        Arc::new(move |ev| transcoding::livepeer_trigger(&plane, ev))
    };
    let transcoders = Transcoders::new(
        cfg.transcode.profiles.clone(),
        cfg.transcode.audio_bridge,
        stored,
        cfg.transcode.livepeer.clone(),
        livepeer_notify,
    );
    {
        let by_config: HashMap<String, String> =
            cfg.streams.iter().filter_map(|s| Some((s.name.clone(), s.transcode_profile.clone()?))).collect();
        let fallback = cfg.transcode.default_profile.clone();
        let plane = plane.clone();
        let profile_of: transcoding::ProfileOf = Arc::new(move |name: &str| {
            plane
                .owned(name)
                .ok()
                .flatten()
                .and_then(|o| o.settings.transcode_profile.clone())
                .or_else(|| by_config.get(name).cloned())
                .or_else(|| fallback.clone())
        });
        tokio::spawn(transcoders.clone().run(registry.clone(), profile_of, probed, shutdown.clone()));
    }
    // Push targets: restreams and recordings (under DATA_DIR/recordings).
    let recordings = cfg.push.recordings_dir.clone().unwrap_or_else(|| cfg.data_dir.join("recordings"));
    std::fs::create_dir_all(&recordings).with_context(|| format!("creating {}", recordings.display()))?;
    let pushes = {
        let hooks: Arc<dyn tidecast_protocols::push::PushHooks> = plane.clone();
        let plane = plane.clone();
        let targets_for: tidecast_protocols::push::TargetsFor = Box::new(move |name: &str| plane.push_targets(name));
        let s3 = &cfg.push.s3;
        let s3 = tidecast_protocols::push::S3Config {
            endpoint: s3.endpoint.clone(),
            region: s3.region.clone(),
            access_key_id: s3.access_key_id.clone(),
            secret_access_key: s3.secret_access_key.clone(),
        };
        let ca_certs = match &cfg.push.tls_ca_file {
            Some(path) => tidecast_protocols::push::tls::read_ca_file(path)
                .map_err(anyhow::Error::msg)
                .context("push.tls_ca_file")?,
            None => Vec::new(),
        };
        let options = tidecast_protocols::push::PushOptions { s3, ca_certs };
        PushManager::new(
            registry.clone(),
            ts.clone(),
            Some(webrtc.clone()),
            recordings,
            options,
            targets_for,
            hooks,
            shutdown.clone(),
        )
    };
    tokio::spawn(pushes.clone().run());
    // Posters and sprite sheets, made on demand for viewers and kept on
    // disk (THUMBNAIL_UPDATED) for streams whose handlers ask.
    let thumbnails = Thumbnails::new(Arc::new(tidecast_transcode::thumbnail::keyframe_jpeg));
    let tiler = Tiler {
        tile: Arc::new(tidecast_transcode::thumbnail::tile),
        compose: Arc::new(tidecast_transcode::thumbnail::compose),
    };
    let sprites = Sprites::new(tiler.clone());
    let thumb_files = ThumbFiles {
        root: cfg.data_dir.join("thumbs"),
        sprites: sprites.clone(),
        thumbnails: thumbnails.clone(),
        wants: {
            let plane = plane.clone();
            Arc::new(move |stream: &str| plane.stream_has_trigger(Trigger::ThumbnailUpdated, stream))
        },
        updated: {
            let plane = plane.clone();
            Arc::new(move |stream: &str, paths: &[PathBuf; 3]| {
                let mut fields = vec![stream.to_owned()];
                fields.extend(paths.iter().map(|p| p.display().to_string()));
                plane.notify_stream(Trigger::ThumbnailUpdated, stream, fields);
            })
        },
    };
    tokio::spawn(thumb_files.run(registry.clone(), hls.clone(), shutdown.clone()));

    let sources = Sources {
        registry: registry.clone(),
        ingest: vec![("rtmp", rtmp_stats), ("srt", srt_stats)],
        srt: Some(srt_sessions.clone()),
        sessions: plane.sessions.clone(),
        traffic: traffic.clone(),
        encoders,
        transcode: Some(transcoders.clone()),
        pushes: Some(pushes.clone()),
        hls: Some(hls.clone()),
        sprites: Some(sprites.clone()),
    };
    let monitor_task = tokio::spawn(plane.clone().monitor(sources, shutdown.clone()));

    // Each protocol's HTTP routes, from its own folder; all of them ask
    // the control plane through the gate.
    let http_gate: Arc<dyn tidecast_protocols::access::AccessGate> = gate.clone();
    let signaling = Signaling::new(webrtc.clone(), http_gate.clone(), registry.clone(), traffic.clone());
    let ts_http = TsHttp { ts, gate: http_gate.clone(), traffic: traffic.clone() };
    let flv_http = FlvHttp { registry: registry.clone(), gate: http_gate.clone(), traffic: traffic.clone() };
    let app = tidecast_protocols::hls::http::router(HlsHttp {
        hls: hls.clone(),
        gate: http_gate.clone(),
        traffic: traffic.clone(),
    })
    .merge(tidecast_protocols::dash::http::router(DashHttp {
        hls: hls.clone(),
        gate: http_gate.clone(),
        traffic: traffic.clone(),
        latency_target: v.dash_latency_target,
        thumbs: Some(DashThumbs::new(tiler)),
        thumb_interval: tidecast_protocols::dash::thumbs::interval(v.segment),
    }))
    .merge(tidecast_protocols::mpegts::http::router(ts_http.clone()))
    .merge(tidecast_protocols::web::router())
    .merge(tidecast_protocols::flv::http::router(flv_http.clone()))
    .merge(tidecast_protocols::progressive::router(ProgressiveHttp {
        flv: flv_http,
        ts: ts_http,
        thumbnails: Some(thumbnails.clone()),
        hls: Some(hls.clone()),
        sprites: Some(sprites.clone()),
    }))
    .layer(tidecast_protocols::http::cors())
    // After the layer: the WHIP/WHEP routes carry their own CORS, since
    // their OPTIONS answers both as WHIP's (ICE servers) and as a CORS
    // preflight, which the layer would answer alone.
    .merge(tidecast_protocols::webrtc::http::routes(signaling));
    let http_shutdown = shutdown.clone();
    let http_task = tokio::spawn(async move {
        // Connections that send complete segments and parts with sendfile
        // (`tap_io` also makes the peer address available to handlers).
        let listener = tidecast_protocols::http::MediaListener::new(http_listener);
        let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await
    });
    let admin = tidecast_control::api::router(Api {
        plane: plane.clone(),
        srt: Some(srt_sessions.clone()),
        webrtc: Some(webrtc.clone()),
        profiles: Some(transcoders.clone()),
        pushes: Some(pushes.clone()),
    })
    .merge(tidecast_protocols::web::dashboard_router());
    let admin_shutdown = shutdown.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin_listener, admin.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
            .await
    });
    for connector in ["rtmp", "srt", "hls", "ts", "webrtc", "api"] {
        triggers.notify(Trigger::OutputStart, None, vec![format!(r#"{{"connector":"{connector}"}}"#)]);
    }
    plane.mark_ready();

    info!(%rtmp_addr, %srt_addr, %http_addr, %admin_addr, data_dir = %cfg.data_dir.display(), "tidecast {} ready", env!("CARGO_PKG_VERSION"));
    info!("publish: rtmp://{rtmp_addr}/live/NAME or WHIP http://{http_addr}/whip/NAME   play: http://{http_addr}/hls/NAME/index.m3u8, WHEP http://{http_addr}/whep/NAME or http://{http_addr}/ts/NAME.ts");
    // One machine-readable line on stdout for scripts and tests.
    println!("listening rtmp={rtmp_addr} srt={srt_addr} http={http_addr} admin={admin_addr} webrtc={webrtc_udp} webrtc_tcp={webrtc_tcp}");

    // SYSTEM_STOP may veto a shutdown (MistServer's semantics).
    loop {
        wait_for_signal().await;
        if triggers.allow(Trigger::SystemStop, None, vec!["signal".into()]).await {
            break;
        }
        warn!("a SYSTEM_STOP trigger handler refused the shutdown; still running");
    }
    for connector in ["rtmp", "srt", "hls", "ts", "webrtc", "api"] {
        triggers.notify(Trigger::OutputStop, None, vec![format!(r#"{{"connector":"{connector}"}}"#)]);
    }
    info!("shutting down: closing publishers and viewers");
    shutdown.cancel();
    let drain = async {
        let _ = rtmp_task.await;
        let _ = srt_task.await;
        registry.close_all();
        let _ = hls_task.await;
        let _ = ts_task.await;
        let _ = http_task.await;
        let _ = admin_task.await;
        let _ = monitor_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        warn!("some connections did not close within 10 s; exiting anyway");
    }
    // Recordings close their files (and finish their faststart rewrites and
    // uploads); restreams unpublish. Their own budget: a large rewrite or
    // upload takes longer than a socket does to close.
    if tokio::time::timeout(PUSH_DRAIN, pushes.drain()).await.is_err() {
        warn!(budget = ?PUSH_DRAIN, "some pushes did not finish in time; exiting anyway (fragmented MP4s stay playable)");
    }
    info!("stopped");
    Ok(())
}

/// How long a stopping node waits for its pushes to finish.
const PUSH_DRAIN: Duration = Duration::from_secs(30);

/// The WebRTC edge's settings; resolves the STUN server's name.
async fn webrtc_config(cfg: &Config, v: &config::Validated, registry: &Registry) -> anyhow::Result<WebRtcConfig> {
    let w = &cfg.webrtc;
    let stun_server = match &w.stun_server {
        Some(host) => match tokio::net::lookup_host(host.as_str()).await {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                warn!(server = %host, error = %e, "cannot resolve webrtc.stun_server; no public address will be learned");
                None
            }
        },
        None => None,
    };
    Ok(WebRtcConfig {
        bind: w.bind,
        udp_port: w.udp.then_some(w.udp_port),
        tcp_port: w.tcp.then_some(w.tcp_port),
        public_ips: w.public_ips.clone(),
        stun_server,
        ice_servers: w
            .ice_servers
            .iter()
            .map(|s| IceServer { url: s.url.clone(), username: s.username.clone(), credential: s.credential.clone() })
            .collect(),
        keyframe_interval: v.keyframe_interval,
        connect_timeout: v.webrtc_connect,
        max_sessions: w.max_sessions,
        ledger: registry.ledger().clone(),
    })
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
