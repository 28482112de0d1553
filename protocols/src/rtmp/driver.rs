//! The tokio shell around [`ServerSession`]: accept, read, drive, write.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::FutureExt;
use tidecast_media::{Event, Registry, Stream, Subscriber};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::feed::{Feed, Feeds, WireFrame};
use super::flush_tick::FlushTick;
use super::play_queue::PlayQueue;
use super::read_buffer::ReadBuffer;
use super::{ServerSession, SessionConfig, SessionEvent};
use crate::access::{AccessGate, EndReason, PlayRequest, PublishRequest, Refusal, Session};
use crate::flv::egress::{EgressNote, FlvEgress};
use crate::flv::{FlvIngest, TagKind};
use crate::ingest::{Deliverer, IngestStats};

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
    /// How long a player's media may wait to be written with what follows
    /// (one write per this interval instead of one per frame); zero writes
    /// each frame at once.
    pub play_flush: Duration,
    /// Counters.
    pub stats: Arc<IngestStats>,
}

/// Accepts RTMP connections until `shutdown` fires, then waits for every
/// session to close.
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, shutdown: CancellationToken) {
    let tasks = TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(ctx.max_connections));
    let tick = (!ctx.play_flush.is_zero()).then(|| FlushTick::start(ctx.play_flush, shutdown.clone()));
    let feeds = Arc::new(Feeds::new(ctx.session.chunk_size));
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
        let tick = tick.clone();
        let feeds = feeds.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let run =
                AssertUnwindSafe(connection(sock, peer, &ctx, tick.as_deref(), &feeds, shutdown)).catch_unwind().await;
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

async fn connection(
    mut sock: TcpStream,
    peer: SocketAddr,
    ctx: &RtmpContext,
    tick: Option<&FlushTick>,
    feeds: &Feeds,
    shutdown: CancellationToken,
) {
    let _ = sock.set_nodelay(true);
    let started = Instant::now();
    let mut session = ServerSession::new(ctx.session.clone());
    let mut rb = ReadBuffer::new();
    // A publisher's stream and session, once admitted.
    let mut publishing: Option<Deliverer> = None;
    let mut ingest = FlvIngest::new();
    let mut stream_name = String::new();
    let mut playing: Option<(Arc<Stream>, Session, Option<u32>)> = None;
    debug!(%peer, "rtmp connection");
    loop {
        rb.make_room();
        let revoked = async {
            match &publishing {
                Some(d) => d.publisher().revoked().await,
                None => std::future::pending().await,
            }
        };
        let kicked = async {
            match publishing.as_ref().and_then(Deliverer::session) {
                Some(s) => s.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            _ = shutdown.cancelled() => {
                info!(%peer, stream = %stream_name, "rtmp session closed for shutdown");
                end(&publishing, EndReason::Shutdown);
                break;
            }
            _ = revoked => {
                info!(%peer, stream = %stream_name, "rtmp publisher replaced or kicked; closing");
                end(&publishing, EndReason::Replaced);
                break;
            }
            _ = kicked => {
                info!(%peer, stream = %stream_name, "rtmp publisher kicked; closing");
                break;
            }
            r = tokio::time::timeout(ctx.idle_timeout, sock.read_buf(rb.buf())) => match r {
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
        if let Some(s) = publishing.as_ref().and_then(Deliverer::session) {
            s.received(n);
        }
        let now_ms = started.elapsed().as_millis() as u32;
        let mut close = false;
        let mut resume;
        loop {
            resume = false;
            if let Err(e) = session.handle_input(rb.buf(), now_ms) {
                ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                warn!(%peer, stream = %stream_name, error = %e, "rtmp protocol error; closing the session");
                close = true;
            }
            while let Some(ev) = session.poll_event() {
                match ev {
                    SessionEvent::PublishRequested { app, name } => {
                        let req = PublishRequest { protocol: "rtmp", app: &app, key: &name, peer };
                        match ctx.gate.admit_publish(req).await {
                            Err(refusal) => {
                                ctx.stats.publish_refused.fetch_add(1, Ordering::Relaxed);
                                warn!(%peer, app, reason = %refusal, "rtmp publish refused");
                                session.reject_publish(publish_status(&refusal), &refusal.reason());
                                close = true;
                            }
                            Ok(admission) => {
                                let stream = admission.stream().to_owned();
                                match ctx.registry.publish_with(&stream, admission.publish_options()) {
                                    Ok(p) => {
                                        info!(%peer, stream, "rtmp publish started");
                                        rb.attach(ctx.registry.ledger().gauge(&stream, "ingest"));
                                        stream_name = stream;
                                        publishing = Some(Deliverer::new("rtmp", peer, p, Some(admission)));
                                        session.accept_publish();
                                        resume = true;
                                    }
                                    Err(e) => {
                                        admission.discard();
                                        ctx.stats.publish_refused.fetch_add(1, Ordering::Relaxed);
                                        warn!(%peer, stream, error = %e, "rtmp publish refused");
                                        session.reject_publish("NetStream.Publish.BadName", &e.to_string());
                                        close = true;
                                    }
                                }
                            }
                        }
                    }
                    SessionEvent::PlayRequested { app, name } => {
                        let (wanted, query) = name.split_once('?').unwrap_or((&name, ""));
                        let token = query.split('&').find_map(|kv| kv.strip_prefix("token="));
                        // `?rendition=480p`: a ladder's rung by its height (else the source).
                        let rendition = query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("rendition="))
                            .and_then(|r| r.strip_suffix('p')?.parse::<u32>().ok());
                        // Only a live stream is worth the triggers.
                        let Some(stream) = ctx.registry.get(wanted).filter(|s| !s.is_ended()) else {
                            info!(%peer, name = wanted, "rtmp play refused: no such live stream");
                            session.reject_play(&format!("no live stream {wanted:?}"));
                            close = true;
                            continue;
                        };
                        let url = format!("rtmp://{app}/{wanted}");
                        let req = PlayRequest { protocol: "rtmp", stream: wanted, token, peer, url: &url };
                        match ctx.gate.admit_play(req).await {
                            Err(r) => {
                                info!(%peer, name = wanted, reason = %r, "rtmp play refused");
                                session.reject_play(&r.reason());
                                close = true;
                            }
                            Ok(viewer) => {
                                session.accept_play();
                                playing = Some((stream, viewer, rendition));
                            }
                        }
                    }
                    SessionEvent::Metadata(meta) => ingest.metadata(&meta),
                    SessionEvent::Audio { timestamp, payload } => {
                        close |= !deliver(
                            &mut ingest,
                            publishing.as_mut(),
                            TagKind::Audio,
                            timestamp,
                            &rb.pin(payload),
                            peer,
                        );
                    }
                    SessionEvent::Video { timestamp, payload } => {
                        close |= !deliver(
                            &mut ingest,
                            publishing.as_mut(),
                            TagKind::Video,
                            timestamp,
                            &rb.pin(payload),
                            peer,
                        );
                    }
                    SessionEvent::Unpublished => {
                        let frames = publishing
                            .as_ref()
                            .map_or(0, |d| d.publisher().stream().stats().frames_in.load(Ordering::Relaxed));
                        info!(%peer, stream = %stream_name, frames, "rtmp publisher unpublished");
                        publishing = None;
                    }
                }
            }
            // A publish decision unblocks the input that followed the request.
            if close || session.awaiting_decision() || !session.is_publishing() || rb.buf().is_empty() || !resume {
                break;
            }
        }
        if let Err(e) = write_out(&mut sock, &mut session).await {
            debug!(%peer, error = %e, "rtmp write failed");
            close = true;
        }
        if close {
            break;
        }
        if let Some((stream, viewer, rendition)) = playing.take() {
            let feed = feeds.get(&stream);
            let player = Player { viewer: &viewer, rendition, ctx, tick };
            play(&mut sock, &mut session, rb.into_inner(), &stream, &feed, player, shutdown).await;
            break;
        }
    }
    let _ = sock.shutdown().await;
    if publishing.is_some() {
        info!(%peer, stream = %stream_name, dropped_before_config = ingest.dropped_before_config, "rtmp publisher gone; stream in its grace period");
    }
}

/// Records why a publisher's session ends, if it has one.
fn end(publishing: &Option<Deliverer>, reason: EndReason) {
    if let Some(s) = publishing.as_ref().and_then(Deliverer::session) {
        s.end_with(reason);
    }
}

/// The `NetStream.Publish` status a refusal is told with.
fn publish_status(r: &Refusal) -> &'static str {
    match r {
        Refusal::Unauthorized(_) | Refusal::Forbidden(_) | Refusal::RateLimited | Refusal::Conflict(_) => {
            "NetStream.Publish.BadName"
        }
        _ => "NetStream.Publish.Denied",
    }
}

/// Sends a stream to an accepted player until either side ends. Frames go
/// out as FLV tags whose payload is the frame's own bytes, chunked once for
/// every player by the stream's [`Feed`]; a player that reads too slowly
/// skips ahead to a keyframe (counted by the feed's ring).
/// Media is written in batches, once per tick of the listener's
/// [`FlushTick`] (`play_flush` apart): the kernel's send path is most of
/// what a player costs, and one write per frame (about 75 a second) costs
/// several times one per batch. With `play_flush` zero there is no tick and
/// each frame is written as it comes.
async fn play(
    sock: &mut TcpStream,
    session: &mut ServerSession,
    mut buf: BytesMut,
    stream: &Stream,
    feed: &Feed,
    player: Player<'_>,
    shutdown: CancellationToken,
) {
    let Player { viewer, rendition, ctx, tick } = player;
    let peer = viewer.info().peer;
    let name = stream.name().to_owned();
    let mut sub = feed.subscribe();
    let started = Instant::now();
    let mut tags = TagWriter { egress: FlvEgress::new(rendition) };
    let mut queue = PlayQueue::new(ctx.session.chunk_size);
    // What accepting the play said goes before any media.
    queue.take_session(session);
    let mut tick = tick.map(FlushTick::subscribe);
    // Made once, not per turn of the loop: each registers with its
    // notifier when first polled.
    let stopping = shutdown.cancelled();
    let kicked = viewer.cancelled();
    tokio::pin!(stopping, kicked);
    // Whether the stream may hold media not yet queued: at the start (the
    // newest GOP is waiting), after each tick, and while a batch was cut
    // short.
    let mut drain = true;
    let mut flush_now = true;
    let mut skips = Skips::default();
    info!(%peer, stream = %name, "rtmp play started");
    loop {
        if drain {
            let drained = tags.drain(&mut sub, &mut queue, peer, &name);
            skips.forward(&sub, stream);
            match drained {
                Drained::More => flush_now = true,
                Drained::Idle => drain = false,
                Drained::Ended => {
                    viewer.end_with(EndReason::StreamEnded);
                    session.end_play();
                    let _ = write_queue(sock, session, &mut queue).await;
                    break;
                }
            }
        }
        if flush_now || (!drain && queue.queued() > 0) {
            match write_queue(sock, session, &mut queue).await {
                Ok(n) => {
                    ctx.stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    viewer.sent(n);
                }
                Err(e) => {
                    debug!(%peer, stream = %name, error = %e, "rtmp player write failed");
                    break;
                }
            }
            flush_now = false;
        }
        if drain {
            continue;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        // Biased, in this order: a tick or a frame is what wakes a player
        // almost every time, and then nothing else is polled.
        tokio::select! {
            biased;
            more = next_media(&mut tick, &mut sub) => match more {
                NextMedia::Tick => drain = true,
                NextMedia::Frame(Some(ev)) => {
                    tags.event(ev, &mut queue, peer, &name);
                    drain = true;
                }
                NextMedia::Frame(None) => {
                    viewer.end_with(EndReason::StreamEnded);
                    session.end_play();
                    let _ = write_queue(sock, session, &mut queue).await;
                    break;
                }
            },
            r = sock.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    // Players send acknowledgements and control messages only;
                    // what they ask for is answered at once.
                    if session.handle_input(&mut buf, started.elapsed().as_millis() as u32).is_err() {
                        break;
                    }
                    while session.poll_event().is_some() {}
                    flush_now = true;
                }
            },
            _ = &mut stopping => {
                viewer.end_with(EndReason::Shutdown);
                break;
            }
            _ = &mut kicked => {
                info!(%peer, stream = %name, "rtmp player kicked; closing");
                break;
            }
        }
    }
    info!(%peer, stream = %name, skips = sub.skips(), "rtmp play ended");
}

/// A player's jumps as the stream's counters have them: the feed's ring
/// counts them, and they are added to the stream's own, with every other
/// reader's.
#[derive(Default)]
struct Skips {
    skips: u64,
    skipped: u64,
}

impl Skips {
    fn forward(&mut self, sub: &Subscriber<WireFrame>, stream: &Stream) {
        let (skips, skipped) = (sub.skips(), sub.skipped());
        if skips != self.skips {
            let stats = stream.stats();
            stats.subscriber_skips.fetch_add(skips - self.skips, Ordering::Relaxed);
            stats.frames_skipped.fetch_add(skipped - self.skipped, Ordering::Relaxed);
            (self.skips, self.skipped) = (skips, skipped);
        }
    }
}

/// Who plays, and what the listener gives every player.
struct Player<'a> {
    viewer: &'a Session,
    /// The rung asked for (`?rendition=`), by height.
    rendition: Option<u32>,
    ctx: &'a RtmpContext,
    tick: Option<&'a FlushTick>,
}

/// What woke a player for media.
enum NextMedia {
    /// The listener's tick: take what the stream queued since the last.
    Tick,
    /// Without a tick, the next event itself (`None`: the stream ended).
    Frame(Option<Event<WireFrame>>),
}

async fn next_media(
    tick: &mut Option<tokio::sync::watch::Receiver<u64>>,
    sub: &mut Subscriber<WireFrame>,
) -> NextMedia {
    match tick {
        Some(t) => match t.changed().await {
            Ok(()) => NextMedia::Tick,
            // The listener is shutting down: wait for `stopping`.
            Err(_) => std::future::pending().await,
        },
        None => NextMedia::Frame(sub.recv().await),
    }
}

/// How a drain of the stream ended.
enum Drained {
    /// Nothing more now.
    Idle,
    /// A batch's worth was queued; more may be waiting.
    More,
    /// The stream ended and everything it had was queued.
    Ended,
}

/// Events taken at once from the stream before the next write decision.
const MAX_BATCH: usize = 64;
/// Queued bytes that go out without waiting for the rest of a drain.
const FLUSH_BYTES: usize = 256 * 1024;

/// A player's FLV form of the stream.
struct TagWriter {
    egress: FlvEgress,
}

impl TagWriter {
    /// Queues what is already in the feed, without waiting: at most
    /// [`MAX_BATCH`] events or [`FLUSH_BYTES`] queued bytes at a time.
    fn drain(
        &mut self,
        sub: &mut Subscriber<WireFrame>,
        queue: &mut PlayQueue,
        peer: SocketAddr,
        name: &str,
    ) -> Drained {
        for _ in 0..MAX_BATCH {
            let ev = match sub.try_recv() {
                Some(ev) => ev,
                // The feed is marked ended only after its last frame, so
                // one more look after seeing the mark finds anything
                // published in between.
                None if sub.stream().is_ended() => match sub.try_recv() {
                    Some(ev) => ev,
                    None => return Drained::Ended,
                },
                None => return Drained::Idle,
            };
            self.event(ev, queue, peer, name);
            if queue.queued() >= FLUSH_BYTES {
                return Drained::More;
            }
        }
        Drained::More
    }

    /// Queues what `ev` means for this player: sequence headers of its
    /// own, or a shared message behind its own first chunk header.
    fn event(&mut self, ev: Event<WireFrame>, queue: &mut PlayQueue, peer: SocketAddr, name: &str) {
        match ev {
            Event::Tracks(tracks) => {
                if self.egress.tracks(&tracks, queue) == EgressNote::TracksLeftOut {
                    warn!(%peer, stream = %name, "rtmp play: FLV carries one H.264/HEVC/AV1/VP9 and one AAC track; others are left out");
                }
            }
            Event::Frame(f) => {
                if let Some(ts) = self.egress.admit(f.track, f.dts, f.keyframe) {
                    queue.shared(ts, f.msg);
                }
            }
            Event::Discontinuity => {}
        }
    }
}

/// Writes what the player has queued and what the session has to say
/// after it, with vectored writes. Returns the bytes written.
async fn write_queue(
    sock: &mut TcpStream,
    session: &mut ServerSession,
    queue: &mut PlayQueue,
) -> std::io::Result<usize> {
    queue.take_session(session);
    let mut total = 0;
    while !queue.is_empty() {
        let n = sock.write_vectored(&queue.slices()).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        queue.advance(n);
        total += n;
    }
    Ok(total)
}

/// Writes everything the session has queued, with vectored writes (media
/// bodies are many slices). Returns the bytes written.
async fn write_out(sock: &mut TcpStream, session: &mut ServerSession) -> std::io::Result<usize> {
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    while let Some(b) = session.poll_transmit() {
        batch.push(b);
    }
    let total: usize = batch.iter().map(bytes::Bytes::len).sum();
    let (mut i, mut off) = (0, 0);
    while i < batch.len() {
        let slices: Vec<std::io::IoSlice<'_>> = std::iter::once(&batch[i][off..])
            .chain(batch[i + 1..].iter().take(255).map(|b| &b[..]))
            .map(std::io::IoSlice::new)
            .collect();
        let mut n = sock.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && i < batch.len() {
            let left = batch[i].len() - off;
            if n >= left {
                n -= left;
                i += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(total)
}

/// Hands what the FLV ingest made of a tag to the stream, through the
/// delivery path every ingest shares. False when the session must end.
fn deliver(
    ingest: &mut FlvIngest,
    publishing: Option<&mut Deliverer>,
    kind: TagKind,
    timestamp: u32,
    body: &bytes::Bytes,
    peer: SocketAddr,
) -> bool {
    let Some(d) = publishing else { return true };
    if let Err(e) = ingest.push(kind, timestamp, body) {
        warn!(%peer, stream = d.stream(), error = %e, "rtmp: bad media; closing the session");
        return false;
    }
    d.drain(ingest).is_ok()
}
