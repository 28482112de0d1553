//! Restreams: a push to another server over RTMP (the FLV RTMP players
//! get, through our RTMP client), SRT (the MPEG-TS HTTP-TS viewers get, as
//! the caller) or WHIP (the RTP WHEP viewers get, through the WebRTC edge's
//! client).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidecast_media::{Codec, MediaKind, Stream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::select::{self, Pick, Selected, Selection};
use super::{target, Attempt, Deps, Push, PushState};
use crate::flv::egress::{FlvEgress, TagSink};
use crate::flv::TagKind;
use crate::rtmp::ClientSession;

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

/// Publishes the stream over RTMP, or RTMPS with `tls` (the server's
/// certificate checked against the public roots and `push.tls_ca_file`).
pub(super) async fn rtmp_push(
    push: &Push,
    stream: &Arc<Stream>,
    t: &target::RtmpTarget,
    sel: Selection,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Attempt {
    let sock = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&t.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Attempt::Retry(format!("connecting to {}: {e}", t.addr)),
        Err(_) => return Attempt::Retry(format!("connecting to {}: timed out", t.addr)),
    };
    let _ = sock.set_nodelay(true);
    if !t.tls {
        return rtmp_session(push, stream, t, sel, sock).await;
    }
    let Some(connector) = tls else { return Attempt::Fatal("TLS is unavailable on this node (see its log)".into()) };
    let name = match super::tls::server_name(&t.addr) {
        Ok(n) => n,
        Err(e) => return Attempt::Fatal(e),
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, sock)).await {
        Ok(Ok(s)) => rtmp_session(push, stream, t, sel, s).await,
        Ok(Err(e)) => Attempt::Retry(format!("TLS with {}: {e}", t.addr)),
        Err(_) => Attempt::Retry(format!("TLS with {}: timed out", t.addr)),
    }
}

/// The RTMP session of a push, over a connected transport.
async fn rtmp_session<S: AsyncRead + AsyncWrite + Unpin>(
    push: &Push,
    stream: &Arc<Stream>,
    t: &target::RtmpTarget,
    sel: Selection,
    mut sock: S,
) -> Attempt {
    // H.264 and AAC go in FLV's legacy form, to any server; anything else
    // (HEVC, AV1, VP9, Opus) needs Enhanced RTMP, announced in `connect`.
    // Servers whose AMF0 reader refuses that announcement (xiu 0.13) get
    // the legacy connect whenever it is enough.
    let tracks = super::first_tracks(stream, &push.cancel, CONNECT_TIMEOUT).await.unwrap_or_default();
    let mut picked = sel.filter();
    // What the FLV egress will send: one video and one audio track, the
    // source's own unless selected otherwise (a bridged Opus beside the
    // source's AAC does not count).
    let legacy = match picked.apply(tidecast_media::Event::Tracks(tracks)) {
        Some(tidecast_media::Event::Tracks(t)) => [MediaKind::Video, MediaKind::Audio]
            .into_iter()
            .filter_map(|k| select::first_of(k, &t))
            .all(|t| matches!(t.codec, Codec::H264 | Codec::Aac)),
        _ => true,
    };
    let mut session = ClientSession::publish(&t.tc_url, &t.app, &t.name);
    if legacy {
        session = session.legacy();
    }
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
    let mut sub = sel.subscribe(stream);
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
pub(super) async fn srt_push(
    push: &Push,
    stream: &Arc<Stream>,
    ts: &crate::mpegts::output::TsHub,
    t: &target::SrtTarget,
    sel: Selection,
) -> Attempt {
    use futures_util::SinkExt;
    let addr = match tokio::net::lookup_host(&t.addr).await.map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        Ok(None) => return Attempt::Retry(format!("{}: no address", t.addr)),
        Err(e) => return Attempt::Retry(format!("resolving {}: {e}", t.addr)),
    };
    let mut builder = srt_tokio::SrtSocket::builder().latency(Duration::from_millis(u64::from(t.latency_ms)));
    if let Some(p) = &t.passphrase {
        // srt-tokio panics on a passphrase outside 10 to 79 bytes; parsing
        // refused those already, and this keeps it so.
        if !(10..=79).contains(&p.len()) {
            return Attempt::Fatal("the SRT passphrase must be 10 to 79 bytes".into());
        }
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
    let mut sub = if sel.is_any() {
        match ts.subscribe(stream.name()) {
            Some(s) => TsSource::Shared(s),
            None => return Attempt::Done,
        }
    } else {
        TsSource::Own(sel.subscribe(stream), None)
    };
    push.set(|i| i.state = PushState::Live);
    let mut pacer = crate::srt::pace::Pacer::new(std::time::Instant::now());
    let result = loop {
        let chunk = tokio::select! {
            c = sub.next() => match c {
                Some(c) => c,
                None => break Attempt::Done,
            },
            _ = push.cancel.cancelled() => break Attempt::Done,
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

/// Where an SRT push's MPEG-TS comes from: the stream's shared TS (what
/// HTTP-TS viewers get), or, with a track selection, a muxer of its own
/// over the selected tracks.
enum TsSource {
    Shared(tidecast_media::Subscriber),
    Own(Selected, Option<crate::mpegts::TsMuxer>),
}

impl TsSource {
    /// The next run of TS packets; `None` once the stream ended.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self {
                TsSource::Shared(sub) => {
                    if let tidecast_media::Event::Frame(f) = sub.recv().await? {
                        return Some(f.payload);
                    }
                }
                TsSource::Own(sub, mux) => match sub.recv().await? {
                    tidecast_media::Event::Tracks(t) => *mux = Some(crate::mpegts::TsMuxer::new(&t)),
                    tidecast_media::Event::Frame(f) => {
                        if let Some(packets) = mux.as_mut().and_then(|m| m.frame(&f)) {
                            return Some(packets);
                        }
                    }
                    tidecast_media::Event::Discontinuity => {}
                },
            }
        }
    }

    fn skips(&self) -> u64 {
        match self {
            TsSource::Shared(s) => s.skips(),
            TsSource::Own(s, _) => s.skips(),
        }
    }
}

/// Seven TS packets per SRT payload, as every SRT peer expects.
const SRT_PAYLOAD: usize = 7 * 188;

async fn flush<S: AsyncWrite + Unpin>(sock: &mut S, session: &mut ClientSession, push: &Push) -> std::io::Result<()> {
    while let Some(out) = session.poll_transmit() {
        sock.write_all(&out).await?;
        push.set(|i| i.bytes += out.len() as u64);
    }
    Ok(())
}

/// Publishes the stream to a WHIP endpoint: the packetized H.264 and Opus
/// WHEP viewers get, through a client peer connection of the WebRTC edge.
pub(super) async fn whip_push(
    push: &Push,
    stream: &Arc<Stream>,
    t: &target::WhipTarget,
    sel: Selection,
    deps: &Deps,
) -> Attempt {
    use crate::webrtc::session::EndReason;
    use crate::webrtc::whip_client::WhipEndpoint;
    let Some(hub) = &deps.webrtc else {
        return Attempt::Fatal("WHIP pushes need the WebRTC edge, which is disabled on this node".into());
    };
    let media = match whip_media(sel) {
        Ok(m) => m,
        Err(e) => return Attempt::Fatal(e),
    };
    let endpoint = WhipEndpoint { url: t.url.clone(), token: t.token.clone() };
    let counter = push.info_handle();
    let sent = Box::new(move |n: usize| {
        let mut i = counter.lock();
        i.state = PushState::Live;
        i.bytes += n as u64;
    });
    match hub.push_whip(stream, &endpoint, media, &deps.http, sent, push.cancel.child_token()).await {
        Err(e) if e.is_retryable() => Attempt::Retry(e.to_string()),
        Err(e) => Attempt::Fatal(e.to_string()),
        Ok(EndReason::StreamEnded) => Attempt::Done,
        Ok(EndReason::Shutdown) if push.cancel.is_cancelled() || stream.is_ended() => Attempt::Done,
        Ok(reason) => Attempt::Retry(format!("WHIP session ended: {reason}")),
    }
}

/// What a selection leaves a WHIP push to send: WebRTC carries H.264 and
/// Opus only.
fn whip_media(sel: Selection) -> Result<crate::webrtc::whip_client::WhipMedia, String> {
    let mut m = crate::webrtc::whip_client::WhipMedia { video: true, rendition: None, audio: true };
    match sel.video {
        Pick::Any | Pick::Codec(Codec::H264) => {}
        Pick::None => m.video = false,
        Pick::Height(h) => m.rendition = Some(h),
        Pick::Codec(c) => return Err(format!("WHIP pushes carry H.264 video, not {}", c.name())),
    }
    match sel.audio {
        Pick::Any | Pick::Codec(Codec::Opus) => {}
        Pick::None => m.audio = false,
        Pick::Codec(c) => return Err(format!("WHIP pushes carry Opus audio (made from AAC), not {}", c.name())),
        Pick::Height(_) => {}
    }
    Ok(m)
}
