//! The tokio shell around [`ServerSession`]: accept, read, drive, write.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tidecast_media::{Frame, Publisher, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::{ServerSession, SessionConfig, SessionEvent};
use crate::flv::{FlvError, FlvIngest};
use crate::ingest::{AccessGate, IngestStats, PublishRequest};

/// What the RTMP listener needs from the rest of the server.
pub struct RtmpContext {
    /// Where published streams go.
    pub registry: Registry,
    /// Who may publish.
    pub gate: Arc<dyn AccessGate>,
    /// Session settings.
    pub session: SessionConfig,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Most connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Counters.
    pub stats: Arc<IngestStats>,
}

/// Accepts RTMP connections until `shutdown` fires, then waits for every
/// session to close.
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, shutdown: CancellationToken) {
    let tasks = TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(ctx.max_connections));
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            ctx.stats.refused_connections.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, limit = ctx.max_connections, "rtmp connection limit reached; closing the new connection");
            drop(sock);
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let run = AssertUnwindSafe(connection(sock, peer, &ctx, shutdown)).catch_unwind().await;
            drop(permit);
            if run.is_err() {
                ctx.stats.panics.fetch_add(1, Ordering::Relaxed);
                error!(%peer, "rtmp session panicked; closed it (this is a bug, please report it)");
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

async fn connection(mut sock: TcpStream, peer: SocketAddr, ctx: &RtmpContext, shutdown: CancellationToken) {
    let _ = sock.set_nodelay(true);
    let started = Instant::now();
    let mut session = ServerSession::new(ctx.session.clone());
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut publisher: Option<Publisher> = None;
    let mut ingest = FlvIngest::new();
    let mut stream_name = String::new();
    let mut warned = false;
    debug!(%peer, "rtmp connection");
    loop {
        buf.reserve(64 * 1024);
        let revoked = async {
            match &publisher {
                Some(p) => p.revoked().await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            _ = shutdown.cancelled() => {
                info!(%peer, stream = %stream_name, "rtmp session closed for shutdown");
                break;
            }
            _ = revoked => {
                info!(%peer, stream = %stream_name, "rtmp publisher replaced by a newer one; closing");
                break;
            }
            r = tokio::time::timeout(ctx.idle_timeout, sock.read_buf(&mut buf)) => match r {
                Err(_) => {
                    warn!(%peer, stream = %stream_name, "rtmp session idle for {:?}; closing", ctx.idle_timeout);
                    break;
                }
                Ok(Err(e)) => {
                    info!(%peer, stream = %stream_name, error = %e, "rtmp read failed; closing");
                    break;
                }
                Ok(Ok(0)) => {
                    debug!(%peer, stream = %stream_name, "rtmp peer closed the connection");
                    break;
                }
                Ok(Ok(n)) => n,
            },
        };
        ctx.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let now_ms = started.elapsed().as_millis() as u32;
        let mut close = false;
        let mut resume;
        loop {
            resume = false;
            if let Err(e) = session.handle_input(&mut buf, now_ms) {
                ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, stream = %stream_name, error = %e, "rtmp protocol error; closing the session");
                close = true;
            }
            while let Some(ev) = session.poll_event() {
                match ev {
                    SessionEvent::PublishRequested { app, name } => {
                        let req = PublishRequest { protocol: "rtmp", app: &app, key: &name, peer };
                        match ctx.gate.authorize_publish(req).await {
                            Err(refusal) => {
                                ctx.stats.publish_refused.fetch_add(1, Ordering::Relaxed);
                                warn!(%peer, app, reason = %refusal.reason, "rtmp publish refused");
                                session.reject_publish("NetStream.Publish.BadName", &refusal.reason);
                                close = true;
                            }
                            Ok(stream) => match ctx.registry.publish(&stream) {
                                Ok(p) => {
                                    info!(%peer, stream, "rtmp publish started");
                                    stream_name = stream;
                                    publisher = Some(p);
                                    session.accept_publish();
                                    resume = true;
                                }
                                Err(e) => {
                                    ctx.stats.publish_refused.fetch_add(1, Ordering::Relaxed);
                                    warn!(%peer, stream, error = %e, "rtmp publish refused");
                                    session.reject_publish("NetStream.Publish.BadName", &e.to_string());
                                    close = true;
                                }
                            },
                        }
                    }
                    SessionEvent::PlayRequested { name, .. } => {
                        info!(%peer, name, "rtmp play refused: playback over RTMP is not served yet");
                        session.reject_play("Playback over RTMP is not served yet; use HLS.");
                        close = true;
                    }
                    SessionEvent::Metadata(meta) => ingest.metadata(&meta),
                    SessionEvent::Audio { timestamp, payload } => {
                        let r = ingest.audio(timestamp, &payload);
                        close |= !deliver(&mut ingest, publisher.as_ref(), r, peer, &stream_name, &mut warned);
                    }
                    SessionEvent::Video { timestamp, payload } => {
                        let r = ingest.video(timestamp, &payload);
                        close |= !deliver(&mut ingest, publisher.as_ref(), r, peer, &stream_name, &mut warned);
                    }
                    SessionEvent::Unpublished => {
                        let frames =
                            publisher.as_ref().map_or(0, |p| p.stream().stats().frames_in.load(Ordering::Relaxed));
                        info!(%peer, stream = %stream_name, frames, "rtmp publisher unpublished");
                        publisher = None;
                    }
                }
            }
            // A publish decision unblocks the input that followed the request.
            if close || session.awaiting_decision() || !session.is_publishing() || buf.is_empty() || !resume {
                break;
            }
        }
        while let Some(out) = session.poll_transmit() {
            if let Err(e) = sock.write_all(&out).await {
                debug!(%peer, error = %e, "rtmp write failed");
                close = true;
                break;
            }
        }
        if close {
            break;
        }
    }
    let _ = sock.shutdown().await;
    if publisher.is_some() {
        info!(%peer, stream = %stream_name, dropped_before_config = ingest.dropped_before_config, "rtmp publisher gone; stream in its grace period");
    }
}

/// Pushes what the FLV ingest produced. Returns false when the session must close.
fn deliver(
    ingest: &mut FlvIngest,
    publisher: Option<&Publisher>,
    result: Result<Option<Frame>, FlvError>,
    peer: SocketAddr,
    stream: &str,
    warned: &mut bool,
) -> bool {
    let Some(publisher) = publisher else { return true };
    let frame = match result {
        Ok(f) => f,
        Err(FlvError::Unsupported(what)) => {
            if !std::mem::replace(warned, true) {
                warn!(%peer, stream, "rtmp: dropping media we cannot carry: {what}");
            }
            return true;
        }
        Err(e) => {
            warn!(%peer, stream, error = %e, "rtmp: bad media; closing the session");
            return false;
        }
    };
    if let Some(tracks) = ingest.take_tracks() {
        for t in &tracks {
            info!(stream, track = t.id, codec = t.codec.name(), codec_string = %t.info.codec_string,
                  width = t.info.width, height = t.info.height, sample_rate = t.info.sample_rate, "track");
        }
        if publisher.set_tracks(tracks).is_err() {
            return false;
        }
    }
    match frame {
        Some(f) => publisher.push(f).is_ok(),
        None => true,
    }
}
