//! The SRT listener: accept or reject each caller by its streamid, then
//! demux a publisher's TS into the media core or feed a player the stream's
//! shared TS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use parking_lot::Mutex;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::{KeySize, Passphrase};
use srt_tokio::{ConnectionRequest, SocketStatistics, SrtListener, SrtSocket};
use tidecast_media::{Event, Registry};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::streamid::{self, Mode};
use crate::access::{AccessGate, EndReason, PlayRequest, PublishRequest, Refusal, Session};
use crate::ingest::{Deliverer, IngestStats};
use crate::mpegts::output::TsHub;
use crate::mpegts::TsDemuxer;

/// What the SRT listener needs from the rest of the server.
pub struct SrtContext {
    /// Where published streams go.
    pub registry: Registry,
    /// Who may publish.
    pub gate: Arc<dyn AccessGate>,
    /// Streams' shared MPEG-TS, for players.
    pub ts: Arc<TsHub>,
    /// TSBPD latency offered to callers (the larger of both sides wins).
    pub latency: Duration,
    /// Passphrase for every connection, unless the stream has its own.
    pub passphrase: Option<String>,
    /// Per-stream passphrases, by stream name.
    pub stream_passphrases: HashMap<String, String>,
    /// Counters.
    pub stats: Arc<IngestStats>,
    /// Live sessions' link statistics.
    pub sessions: Arc<SrtSessions>,
}

/// Link statistics of one SRT session, refreshed about once a second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkStats {
    /// Stream name.
    pub stream: String,
    /// Publish or play.
    pub publishing: bool,
    /// Round-trip time.
    pub rtt_ms: f64,
    /// Packets lost (receiving side for publishers, sending side for players).
    pub lost_packets: u64,
    /// Packets retransmitted.
    pub retransmitted_packets: u64,
    /// Packets dropped as too late.
    pub dropped_packets: u64,
    /// Bits per second over the last interval.
    pub bitrate: u64,
    /// Bytes so far.
    pub bytes: u64,
}

/// Statistics of every live SRT session, by peer address.
#[derive(Debug, Default)]
pub struct SrtSessions {
    live: Mutex<HashMap<SocketAddr, LinkStats>>,
}

impl SrtSessions {
    /// A snapshot of every live session.
    pub fn snapshot(&self) -> Vec<(SocketAddr, LinkStats)> {
        self.live.lock().iter().map(|(a, s)| (*a, s.clone())).collect()
    }
}

/// Why the streamid's owner was turned away, as an SRT rejection.
fn reject_code(code: ServerRejectReason) -> RejectReason {
    RejectReason::Server(code)
}

/// Accepts SRT callers on `socket` until `shutdown`, then waits for every
/// session to end.
///
/// `srt-tokio` runs its handshakes in one listener task, and some malformed
/// handshakes panic it (upstream `unimplemented!` paths). That would end SRT
/// for everyone, so the listener is supervised: when it dies, the panic is
/// counted and logged, the port is bound again, and sessions already
/// established carry on.
pub async fn serve(socket: UdpSocket, ctx: Arc<SrtContext>, shutdown: CancellationToken) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let tasks = TaskTracker::new();
    let mut socket = Some(socket);
    while !shutdown.is_cancelled() {
        let sock = match socket.take() {
            Some(s) => s,
            None => UdpSocket::bind(local).await?,
        };
        let (_listener, mut incoming) = SrtListener::builder().latency(ctx.latency).socket(sock).bind(local).await?;
        loop {
            let req = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = incoming.incoming().next() => match r {
                    Some(r) => r,
                    None => {
                        ctx.stats.panics.fetch_add(1, Ordering::Relaxed);
                        error!(%local, "the SRT listener stopped (srt-tokio panicked on a handshake); binding it again");
                        break;
                    }
                },
            };
            ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
            let ctx = ctx.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let peer = req.remote();
                if AssertUnwindSafe(session(req, &ctx, shutdown)).catch_unwind().await.is_err() {
                    ctx.stats.panics.fetch_add(1, Ordering::Relaxed);
                    error!(%peer, "srt session panicked; closed it (this is a bug, please report it)");
                }
                ctx.sessions.live.lock().remove(&peer);
            });
        }
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// The SRT rejection a refusal is answered with.
fn refusal_code(r: &Refusal) -> ServerRejectReason {
    match r {
        Refusal::Unauthorized(_) => ServerRejectReason::Unauthorized,
        Refusal::Forbidden(_) | Refusal::Quota(_) | Refusal::Trigger(_) => ServerRejectReason::Forbidden,
        Refusal::NotFound(_) => ServerRejectReason::Notfound,
        Refusal::Conflict(_) => ServerRejectReason::Conflict,
        Refusal::RateLimited => ServerRejectReason::Overload,
        Refusal::Unavailable(_) => ServerRejectReason::InternalServerError,
    }
}

async fn reject(req: ConnectionRequest, ctx: &SrtContext, publishing: bool, code: ServerRejectReason, why: &str) {
    let peer = req.remote();
    let counter = if publishing { &ctx.stats.publish_refused } else { &ctx.stats.play_refused };
    counter.fetch_add(1, Ordering::Relaxed);
    warn!(%peer, code = code as i32, "srt connection refused: {why}");
    let _ = req.reject(reject_code(code)).await;
}

/// The encryption to accept a caller with. The key size is exactly the
/// caller's own (`Unspecified` means AES-128 there too): `srt-protocol`
/// panics (`unimplemented!`) when the two sides' sizes differ.
fn key_settings(passphrase: Option<&String>, caller: KeySize) -> Option<srt_protocol::settings::KeySettings> {
    let passphrase = Passphrase::try_from(passphrase?.clone()).ok()?;
    Some(srt_protocol::settings::KeySettings { key_size: caller, passphrase })
}

async fn session(req: ConnectionRequest, ctx: &SrtContext, shutdown: CancellationToken) {
    let peer = req.remote();
    let sid = req.stream_id().map(|s| s.to_string()).unwrap_or_default();
    let parsed = match streamid::parse(&sid) {
        Ok(p) => p,
        Err(e) => {
            let why = format!("streamid {sid:?}: {e}");
            return reject(req, ctx, true, ServerRejectReason::BadRequest, &why).await;
        }
    };
    match parsed.mode {
        Mode::Publish => {
            let key = parsed.gate_key();
            let gate_req = PublishRequest { protocol: "srt", app: "", key: &key, peer };
            let admitted = match ctx.gate.admit_publish(gate_req).await {
                Ok(s) => s,
                Err(r) => return reject(req, ctx, true, refusal_code(&r), &r.reason()).await,
            };
            let stream = admitted.stream().to_owned();
            let publisher = match ctx.registry.publish_with(&stream, admitted.publish_options()) {
                Ok(p) => p,
                Err(e) => {
                    admitted.discard();
                    return reject(req, ctx, true, ServerRejectReason::Conflict, &e.to_string()).await;
                }
            };
            let keys = key_settings(ctx.stream_passphrases.get(&stream).or(ctx.passphrase.as_ref()), req.key_size());
            let socket = match req.accept(keys).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(%peer, stream, error = %e, "srt handshake failed (a wrong passphrase ends here)");
                    return;
                }
            };
            info!(%peer, stream, "srt publish started");
            publish(socket, Deliverer::new("srt", peer, publisher, Some(admitted)), ctx, shutdown).await;
        }
        Mode::Request => {
            let name = parsed.name.clone();
            // The credential first (nothing starts for a caller without
            // one), then whether there is anything to play: only a live
            // stream is worth the quota and the triggers.
            if let Err(r) = ctx.gate.check_play(&name, parsed.credential.as_deref(), peer.ip()) {
                return reject(req, ctx, false, refusal_code(&r), &r.reason()).await;
            }
            let Some(sub) = ctx.ts.subscribe(&name) else {
                return reject(req, ctx, false, ServerRejectReason::Notfound, &format!("no live stream {name:?}"))
                    .await;
            };
            let url = format!("srt://{name}");
            let token = parsed.credential.as_deref();
            let play_req = PlayRequest { protocol: "srt", stream: &name, token, peer, url: &url };
            let viewer = match ctx.gate.admit_play(play_req).await {
                Ok(s) => s,
                Err(r) => return reject(req, ctx, false, refusal_code(&r), &r.reason()).await,
            };
            let keys = key_settings(ctx.stream_passphrases.get(&name).or(ctx.passphrase.as_ref()), req.key_size());
            let socket = match req.accept(keys).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(%peer, stream = name, error = %e, "srt handshake failed");
                    return;
                }
            };
            info!(%peer, stream = name, "srt playback started");
            play(socket, sub, &viewer, peer, ctx, shutdown).await;
        }
    }
}

fn record(
    ctx: &SrtContext,
    peer: SocketAddr,
    stream: &str,
    publishing: bool,
    s: &SocketStatistics,
    prev: &mut (Instant, u64),
) {
    let bytes = if publishing { s.rx_bytes } else { s.tx_bytes };
    let elapsed = prev.0.elapsed().as_secs_f64().max(0.001);
    let bitrate = ((bytes.saturating_sub(prev.1)) as f64 * 8.0 / elapsed) as u64;
    *prev = (Instant::now(), bytes);
    let stats = LinkStats {
        stream: stream.to_owned(),
        publishing,
        rtt_ms: if publishing { s.rx_average_rtt } else { s.tx_average_rtt }.as_secs_f64() * 1000.0,
        lost_packets: if publishing { s.rx_loss_data } else { s.tx_loss_data },
        retransmitted_packets: if publishing { s.rx_retransmit_data } else { s.tx_retransmit_data },
        dropped_packets: if publishing { s.rx_dropped_data } else { s.tx_dropped_data },
        bitrate,
        bytes,
    };
    ctx.sessions.live.lock().insert(peer, stats);
}

async fn publish(mut socket: SrtSocket, mut d: Deliverer, ctx: &SrtContext, shutdown: CancellationToken) {
    let Some(session) = d.session().map(|s| s.info().clone()) else { return };
    let (stream, peer, kicked) = (session.stream.clone(), session.peer, d.session().map(Session::cancel_token));
    let stream = stream.as_str();
    let kicked = kicked.unwrap_or_default();
    let end = |d: &Deliverer, reason: EndReason| {
        if let Some(s) = d.session() {
            s.end_with(reason);
        }
    };
    let mut demux = TsDemuxer::new();
    let mut stats = socket.statistics().clone();
    let mut prev = (Instant::now(), 0u64);
    let mut reported = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                end(&d, EndReason::Shutdown);
                break;
            }
            _ = d.publisher().revoked() => {
                info!(%peer, stream, "srt publisher replaced or kicked; closing");
                end(&d, EndReason::Replaced);
                break;
            }
            _ = kicked.cancelled() => {
                info!(%peer, stream, "srt publisher kicked; closing");
                break;
            }
            s = stats.next() => if let Some(s) = s {
                record(ctx, peer, stream, true, &s, &mut prev);
            },
            packet = socket.next() => {
                let Some(Ok((_, data))) = packet else { break };
                ctx.stats.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                session.count_in(data.len());
                demux.push(&data);
                if d.drain(&mut demux).is_err() {
                    break;
                }
                let errors = demux.stats().cc_errors + demux.stats().resyncs + demux.stats().bad_pes;
                if errors > reported {
                    let s = demux.stats();
                    warn!(%peer, stream, cc_errors = s.cc_errors, resyncs = s.resyncs, bad_pes = s.bad_pes,
                          "srt: damaged MPEG-TS; recovering at the next keyframe");
                    reported = errors;
                }
            }
        }
    }
    demux.finish();
    let _ = d.drain(&mut demux);
    let _ = socket.close().await;
    info!(%peer, stream, packets = demux.stats().packets, "srt publisher gone; stream in its grace period");
}

/// SRT carries TS in payloads of seven packets.
const PAYLOAD: usize = 7 * 188;

async fn play(
    mut socket: SrtSocket,
    mut sub: tidecast_media::Subscriber,
    viewer: &Session,
    peer: SocketAddr,
    ctx: &SrtContext,
    shutdown: CancellationToken,
) {
    let stream = viewer.stream();
    // What srt-tokio's send buffer holds for this player (references to
    // TS chunks, which it keeps alive until acknowledged), in the ledger.
    let sending = ctx.registry.ledger().gauge(stream, "srt-send");
    let mut stats = socket.statistics().clone();
    let mut prev = (Instant::now(), 0u64);
    let mut pacer = super::pace::Pacer::new(Instant::now());
    // The receiving half of a player's socket ends at once (it sends no
    // media), so a hang-up shows as a failed send, not as end of input.
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => {
                viewer.end_with(EndReason::Shutdown);
                break;
            }
            _ = viewer.cancelled() => {
                info!(%peer, stream, "srt player kicked; closing");
                break;
            }
            s = stats.next() => {
                if let Some(s) = s {
                    record(ctx, peer, stream, false, &s, &mut prev);
                    sending.set(usize::try_from(s.tx_buffered_bytes).unwrap_or(usize::MAX));
                }
                continue;
            }
            ev = sub.recv() => ev,
        };
        let chunk: Bytes = match ev {
            Some(Event::Frame(f)) => f.payload,
            Some(_) => continue,
            None => {
                viewer.end_with(EndReason::StreamEnded);
                break;
            }
        };
        let mut failed = false;
        for piece in (0..chunk.len()).step_by(PAYLOAD) {
            let end = (piece + PAYLOAD).min(chunk.len());
            while let Err(wait) = pacer.poll(Instant::now()) {
                tokio::time::sleep(wait).await;
            }
            if socket.send((Instant::now(), chunk.slice(piece..end))).await.is_err() {
                failed = true;
                break;
            }
            viewer.sent(end - piece);
            ctx.stats.bytes_out.fetch_add((end - piece) as u64, Ordering::Relaxed);
        }
        if failed {
            break;
        }
    }
    let _ = socket.close().await;
    debug!(%peer, stream, skips = sub.skips(), "srt player gone");
}
