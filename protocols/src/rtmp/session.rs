//! The server side of an RTMP connection as a pure state machine.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::amf::{self, Amf0};
use super::chunk::{Decoder, Encoder, Limits, Message};
use super::handshake::ServerHandshake;
use super::RtmpError;

const CSID_CONTROL: u32 = 2;
const CSID_COMMAND: u32 = 3;
pub(crate) const CSID_AUDIO: u32 = 4;
pub(crate) const CSID_VIDEO: u32 = 6;
const MSG_SET_CHUNK_SIZE: u8 = 1;
const MSG_ABORT: u8 = 2;
const MSG_ACK: u8 = 3;
const MSG_USER_CONTROL: u8 = 4;
const MSG_WINDOW_ACK: u8 = 5;
const MSG_PEER_BANDWIDTH: u8 = 6;
pub(crate) const MSG_AUDIO: u8 = 8;
pub(crate) const MSG_VIDEO: u8 = 9;
const MSG_DATA_AMF3: u8 = 15;
const MSG_COMMAND_AMF3: u8 = 17;
const MSG_DATA_AMF0: u8 = 18;
const MSG_COMMAND_AMF0: u8 = 20;
/// The message stream id handed out by createStream.
pub(crate) const MEDIA_STREAM: u32 = 1;

/// Settings of a server session.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Decoder limits (largest message, most chunk streams).
    pub limits: Limits,
    /// Chunk size we announce and write with.
    pub chunk_size: u32,
    /// Acknowledgement window we ask the peer to use.
    pub window_ack: u32,
    /// Cap on bytes held in partially received messages.
    pub max_partial_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            limits: Limits::default(),
            chunk_size: 4096,
            window_ack: 2_500_000,
            max_partial_bytes: 32 << 20,
        }
    }
}

/// What the session reports to its driver.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// The client wants to publish `name` in application `app`. Answer with
    /// [`ServerSession::accept_publish`] or [`ServerSession::reject_publish`];
    /// media is refused until then.
    PublishRequested {
        /// The application from `connect` (`live` in `rtmp://host/live/key`).
        app: String,
        /// The publishing name, query string included (the stream key).
        name: String,
    },
    /// The client wants to play `name`. Answer with
    /// [`ServerSession::accept_play`] or [`ServerSession::reject_play`].
    PlayRequested {
        /// Application.
        app: String,
        /// Stream name.
        name: String,
    },
    /// `@setDataFrame` / `onMetaData` properties.
    Metadata(Amf0),
    /// An FLV audio tag body.
    Audio {
        /// Timestamp in ms (32-bit, wraps).
        timestamp: u32,
        /// Tag body.
        payload: Bytes,
    },
    /// An FLV video tag body.
    Video {
        /// Timestamp in ms (32-bit, wraps).
        timestamp: u32,
        /// Tag body.
        payload: Bytes,
    },
    /// The client stopped publishing (FCUnpublish, deleteStream or closeStream).
    Unpublished,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Handshake,
    AwaitConnect,
    Connected,
    PublishPending,
    Publishing,
    Playing,
    Closed,
}

/// The server side of one RTMP connection, sans IO.
///
/// Feed received bytes to [`handle_input`](Self::handle_input), then drain
/// [`poll_event`](Self::poll_event) and [`poll_transmit`](Self::poll_transmit).
/// After an error the connection must be closed (flush `poll_transmit` first:
/// a rejection carries a status message for the client).
pub struct ServerSession {
    cfg: SessionConfig,
    handshake: ServerHandshake,
    decoder: Decoder,
    encoder: Encoder,
    out: BytesMut,
    events: VecDeque<SessionEvent>,
    state: State,
    app: String,
    bytes_in: u64,
    last_ack: u64,
    peer_window: u32,
}

impl ServerSession {
    /// A session waiting for the client's handshake.
    pub fn new(cfg: SessionConfig) -> ServerSession {
        ServerSession {
            decoder: Decoder::new(cfg.limits),
            cfg,
            handshake: ServerHandshake::AwaitC0C1,
            encoder: Encoder::default(),
            out: BytesMut::new(),
            events: VecDeque::new(),
            state: State::Handshake,
            app: String::new(),
            bytes_in: 0,
            last_ack: 0,
            peer_window: 0,
        }
    }

    /// Whether a publish request waits for [`accept_publish`](Self::accept_publish)
    /// or [`reject_publish`](Self::reject_publish). Input is not consumed
    /// meanwhile: call [`handle_input`](Self::handle_input) again after answering.
    pub fn awaiting_decision(&self) -> bool {
        self.state == State::PublishPending
    }

    /// Whether the client is publishing (accepted).
    pub fn is_publishing(&self) -> bool {
        self.state == State::Publishing
    }

    /// Consumes received bytes from `buf`, leaving an incomplete tail there.
    /// `now_ms` is any millisecond clock (it goes into the handshake).
    pub fn handle_input(&mut self, buf: &mut BytesMut, now_ms: u32) -> Result<(), RtmpError> {
        if self.state == State::Closed {
            return Err(RtmpError::Closed);
        }
        let before = buf.len();
        let result = self.drive(buf, now_ms);
        self.bytes_in += (before - buf.len()) as u64;
        if self.peer_window > 0 && self.bytes_in - self.last_ack >= u64::from(self.peer_window) {
            self.last_ack = self.bytes_in;
            let mut body = BytesMut::new();
            body.put_u32(self.bytes_in as u32);
            self.send(CSID_CONTROL, MSG_ACK, 0, body.freeze());
        }
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    fn drive(&mut self, buf: &mut BytesMut, now_ms: u32) -> Result<(), RtmpError> {
        if self.state == State::Handshake {
            if !self.handshake.advance(buf, &mut self.out, now_ms)? {
                return Ok(());
            }
            self.state = State::AwaitConnect;
        }
        loop {
            if self.state == State::PublishPending {
                return Ok(());
            }
            let before = buf.len();
            if let Some(msg) = self.decoder.decode_chunk(buf)? {
                self.on_message(msg)?;
            }
            if self.decoder.buffered() > self.cfg.max_partial_bytes {
                return Err(RtmpError::Protocol("too many bytes in partial messages"));
            }
            // Stop at a publish request: what follows is media, and it may
            // only be read once the driver has accepted the publish.
            if buf.len() == before || matches!(self.state, State::Closed | State::PublishPending) {
                return Ok(());
            }
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Bytes to send to the client, if any, in order. A player's media does
    /// not pass through here: it goes into the player's
    /// [`PlayQueue`](super::play_queue::PlayQueue) behind these bytes.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// Bytes queued for the client and not yet taken by
    /// [`poll_transmit`](Self::poll_transmit).
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Whether the client plays (accepted).
    pub fn is_playing(&self) -> bool {
        self.state == State::Playing
    }

    /// Accepts a play request: the driver sends media from now on, through
    /// the player's [`PlayQueue`](super::play_queue::PlayQueue).
    pub fn accept_play(&mut self) {
        if self.state != State::Connected {
            return;
        }
        self.state = State::Playing;
        let mut body = BytesMut::new();
        body.put_u16(0); // StreamBegin
        body.put_u32(MEDIA_STREAM);
        self.send(CSID_CONTROL, MSG_USER_CONTROL, 0, body.freeze());
        self.on_status("status", "NetStream.Play.Reset", "Playing and resetting.");
        self.on_status("status", "NetStream.Play.Start", "Started playing.");
        let mut data = BytesMut::new();
        for v in [Amf0::str("|RtmpSampleAccess"), Amf0::Boolean(true), Amf0::Boolean(true)] {
            amf::encode(&v, &mut data);
        }
        self.send(CSID_COMMAND, MSG_DATA_AMF0, MEDIA_STREAM, data.freeze());
    }

    /// Tells a player the stream ended; the session closes.
    pub fn end_play(&mut self) {
        self.on_status("status", "NetStream.Play.UnpublishNotify", "The stream ended.");
        self.state = State::Closed;
    }

    /// Accepts a pending publish: the client may send media.
    pub fn accept_publish(&mut self) {
        if self.state != State::PublishPending {
            return;
        }
        self.state = State::Publishing;
        let mut body = BytesMut::new();
        body.put_u16(0); // StreamBegin
        body.put_u32(MEDIA_STREAM);
        self.send(CSID_CONTROL, MSG_USER_CONTROL, 0, body.freeze());
        self.on_status("status", "NetStream.Publish.Start", "Publishing started.");
    }

    /// Refuses a pending publish with a status `code` (e.g.
    /// `NetStream.Publish.BadName`) and a `description` the client shows; the
    /// session is closed (flush [`poll_transmit`](Self::poll_transmit), then
    /// close the socket).
    pub fn reject_publish(&mut self, code: &str, description: &str) {
        self.on_status("error", code, description);
        self.state = State::Closed;
    }

    /// Refuses a play request and closes the session.
    pub fn reject_play(&mut self, description: &str) {
        self.on_status("error", "NetStream.Play.StreamNotFound", description);
        self.state = State::Closed;
    }

    fn on_status(&mut self, level: &str, code: &str, description: &str) {
        let info = Amf0::object([
            ("level", Amf0::str(level)),
            ("code", Amf0::str(code)),
            ("description", Amf0::str(description)),
        ]);
        self.command(MEDIA_STREAM, &[Amf0::str("onStatus"), Amf0::Number(0.0), Amf0::Null, info]);
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Bytes) {
        let msg = Message { csid, type_id, stream_id, timestamp: 0, payload };
        self.encoder.encode(&msg, &mut self.out);
    }

    fn command(&mut self, stream_id: u32, values: &[Amf0]) {
        let mut body = BytesMut::new();
        for v in values {
            amf::encode(v, &mut body);
        }
        self.send(CSID_COMMAND, MSG_COMMAND_AMF0, stream_id, body.freeze());
    }

    fn on_message(&mut self, msg: Message) -> Result<(), RtmpError> {
        let mut p = &msg.payload[..];
        match msg.type_id {
            MSG_SET_CHUNK_SIZE => {
                if p.len() < 4 {
                    return Err(RtmpError::Protocol("short Set Chunk Size"));
                }
                self.decoder.set_chunk_size(p.get_u32())?;
            }
            MSG_ABORT if p.len() >= 4 => {
                self.decoder.abort(p.get_u32());
            }
            MSG_WINDOW_ACK if p.len() >= 4 => {
                self.peer_window = p.get_u32();
            }
            MSG_ACK | MSG_USER_CONTROL | MSG_PEER_BANDWIDTH => {}
            MSG_COMMAND_AMF0 => self.on_command(amf::decode_all(p)?)?,
            MSG_COMMAND_AMF3 => self.on_command(amf::decode_all(p.get(1..).unwrap_or_default())?)?,
            MSG_DATA_AMF0 | MSG_DATA_AMF3 => {
                let p = if msg.type_id == MSG_DATA_AMF3 { p.get(1..).unwrap_or_default() } else { p };
                // Metadata that does not parse is not worth a session.
                if let Ok(values) = amf::decode_all(p) {
                    if let Some(meta) = values.into_iter().find(|v| matches!(v, Amf0::Object(_) | Amf0::EcmaArray(_))) {
                        self.events.push_back(SessionEvent::Metadata(meta));
                    }
                }
            }
            MSG_AUDIO | MSG_VIDEO => {
                if self.state != State::Publishing {
                    return Err(RtmpError::Protocol("media before an accepted publish"));
                }
                let ev = if msg.type_id == MSG_AUDIO {
                    SessionEvent::Audio { timestamp: msg.timestamp, payload: msg.payload }
                } else {
                    SessionEvent::Video { timestamp: msg.timestamp, payload: msg.payload }
                };
                self.events.push_back(ev);
            }
            _ => {} // unknown message types are ignored, as the spec allows
        }
        Ok(())
    }

    fn on_command(&mut self, values: Vec<Amf0>) -> Result<(), RtmpError> {
        let name = values.first().and_then(Amf0::as_str).ok_or(RtmpError::Protocol("command without a name"))?;
        let txid = values.get(1).and_then(Amf0::as_f64).unwrap_or(0.0);
        let arg = |i: usize| values.get(i).and_then(Amf0::as_str).unwrap_or_default().to_owned();
        match name {
            "connect" => {
                if self.state != State::AwaitConnect {
                    return Err(RtmpError::Protocol("connect sent twice"));
                }
                let cmd = values.get(2);
                self.app = cmd.and_then(|c| c.get("app")).and_then(Amf0::as_str).unwrap_or_default().to_owned();
                let encoding = cmd.and_then(|c| c.get("objectEncoding")).and_then(Amf0::as_f64).unwrap_or(0.0);
                let mut b = BytesMut::new();
                b.put_u32(self.cfg.window_ack);
                self.send(CSID_CONTROL, MSG_WINDOW_ACK, 0, b.freeze());
                let mut b = BytesMut::new();
                b.put_u32(self.cfg.window_ack);
                b.put_u8(2); // dynamic
                self.send(CSID_CONTROL, MSG_PEER_BANDWIDTH, 0, b.freeze());
                let mut b = BytesMut::new();
                b.put_u32(self.cfg.chunk_size);
                self.send(CSID_CONTROL, MSG_SET_CHUNK_SIZE, 0, b.freeze());
                self.encoder.set_chunk_size(self.cfg.chunk_size);
                let props =
                    Amf0::object([("fmsVer", Amf0::str("FMS/3,5,7,7009")), ("capabilities", Amf0::Number(31.0))]);
                let info = Amf0::object([
                    ("level", Amf0::str("status")),
                    ("code", Amf0::str("NetConnection.Connect.Success")),
                    ("description", Amf0::str("Connection succeeded.")),
                    ("objectEncoding", Amf0::Number(encoding)),
                ]);
                self.command(0, &[Amf0::str("_result"), Amf0::Number(txid), props, info]);
                self.state = State::Connected;
            }
            "createStream" => {
                self.require_connected()?;
                self.command(
                    0,
                    &[Amf0::str("_result"), Amf0::Number(txid), Amf0::Null, Amf0::Number(f64::from(MEDIA_STREAM))],
                );
            }
            "releaseStream" | "FCPublish" => {
                self.require_connected()?;
                self.command(0, &[Amf0::str("_result"), Amf0::Number(txid), Amf0::Null, Amf0::Undefined]);
            }
            "publish" => {
                self.require_connected()?;
                if self.state != State::Connected {
                    return Err(RtmpError::Protocol("publish sent twice"));
                }
                let name = arg(3);
                if name.is_empty() {
                    return Err(RtmpError::Protocol("publish without a stream name"));
                }
                self.state = State::PublishPending;
                self.events.push_back(SessionEvent::PublishRequested { app: self.app.clone(), name });
            }
            "play" => {
                self.require_connected()?;
                self.events.push_back(SessionEvent::PlayRequested { app: self.app.clone(), name: arg(3) });
            }
            "FCUnpublish" | "deleteStream" | "closeStream" if self.state == State::Publishing => {
                self.state = State::Connected;
                self.events.push_back(SessionEvent::Unpublished);
            }
            _ => {} // getStreamLength, _checkbw and friends need no answer
        }
        Ok(())
    }

    fn require_connected(&self) -> Result<(), RtmpError> {
        match self.state {
            State::Handshake | State::AwaitConnect => Err(RtmpError::Protocol("command before connect")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::egress::TagSink;
    use crate::flv::TagKind;
    use crate::rtmp::play_queue::PlayQueue;
    use crate::rtmp::ClientSession;

    /// Runs a client and a server against each other until the server asks
    /// for a publish decision; returns the bytes the client sent after it.
    fn until_publish_request(client: &mut ClientSession, server: &mut ServerSession) -> BytesMut {
        let (mut to_s, mut to_c) = (BytesMut::new(), BytesMut::new());
        loop {
            while let Some(o) = client.poll_transmit() {
                to_s.extend_from_slice(&o);
            }
            server.handle_input(&mut to_s, 0).unwrap();
            if server.awaiting_decision() {
                return to_s;
            }
            while let Some(o) = server.poll_transmit() {
                to_c.extend_from_slice(&o);
            }
            client.handle_input(&mut to_c).unwrap();
        }
    }

    #[test]
    fn media_pipelined_after_publish_waits_for_the_decision() {
        let mut client = ClientSession::publish("rtmp://h/live", "live", "key?x=1");
        let mut server = ServerSession::new(SessionConfig::default());
        let mut rest = until_publish_request(&mut client, &mut server);
        let events: Vec<_> = std::iter::from_fn(|| server.poll_event()).collect();
        assert!(events.contains(&SessionEvent::PublishRequested { app: "live".into(), name: "key?x=1".into() }));
        // The client pipelines a video tag before hearing back.
        client.send_video(0, Bytes::from_static(&[0x17, 1, 0, 0, 0]));
        while let Some(o) = client.poll_transmit() {
            rest.extend_from_slice(&o);
        }
        server.handle_input(&mut rest, 0).unwrap();
        assert!(server.poll_event().is_none(), "nothing is read before the decision");
        server.accept_publish();
        server.handle_input(&mut rest, 0).unwrap();
        assert!(matches!(server.poll_event(), Some(SessionEvent::Video { .. })));
    }

    #[test]
    fn a_playing_client_receives_the_media_and_acknowledges() {
        let mut client = ClientSession::play("rtmp://h/live", "live", "cam");
        let mut server = ServerSession::new(SessionConfig::default());
        let (mut to_s, mut to_c) = (BytesMut::new(), BytesMut::new());
        let mut requested = false;
        for _ in 0..20 {
            while let Some(o) = client.poll_transmit() {
                to_s.extend_from_slice(&o);
            }
            server.handle_input(&mut to_s, 0).unwrap();
            while let Some(ev) = server.poll_event() {
                if let SessionEvent::PlayRequested { name, .. } = ev {
                    assert_eq!(name, "cam");
                    requested = true;
                    server.accept_play();
                }
            }
            while let Some(o) = server.poll_transmit() {
                to_c.extend_from_slice(&o);
            }
            client.handle_input(&mut to_c).unwrap();
            if client.is_live() {
                break;
            }
        }
        assert!(requested && client.is_live(), "play accepted");
        // Media goes the way the driver sends it: the player's queue.
        let mut queue = PlayQueue::new(SessionConfig::default().chunk_size);
        queue.take_session(&mut server);
        let body = Bytes::from(vec![0x27; 3000]);
        for i in 0..2000u32 {
            queue.tag(TagKind::Video, i * 40, &[], &body);
        }
        while !queue.is_empty() {
            let n: usize = queue
                .slices()
                .iter()
                .map(|s| {
                    to_c.extend_from_slice(s);
                    s.len()
                })
                .sum();
            queue.advance(n);
        }
        client.handle_input(&mut to_c).unwrap();
        // Data messages (|RtmpSampleAccess) may come first.
        let got: Vec<_> = std::iter::from_fn(|| client.poll_media()).filter(|m| m.type_id != 18).collect();
        assert_eq!(got.len(), 2000);
        assert!(got.iter().all(|m| m.type_id == 9 && m.payload.len() == 3000));
        assert_eq!(got[1999].timestamp, 1999 * 40);
        // 6 MB is past the server's acknowledgement window: the client acknowledged.
        let mut acks = BytesMut::new();
        while let Some(o) = client.poll_transmit() {
            acks.extend_from_slice(&o);
        }
        assert!(!acks.is_empty(), "an acknowledgement was sent");
        server.handle_input(&mut acks, 0).unwrap();
    }

    #[test]
    fn rejection_tells_the_client_and_closes() {
        let mut client = ClientSession::publish("rtmp://h/live", "live", "bad");
        let mut server = ServerSession::new(SessionConfig::default());
        let _ = until_publish_request(&mut client, &mut server);
        server.reject_publish("NetStream.Publish.BadName", "unknown stream key");
        let mut to_c = BytesMut::new();
        while let Some(o) = server.poll_transmit() {
            to_c.extend_from_slice(&o);
        }
        let err = client.handle_input(&mut to_c).unwrap_err();
        assert!(matches!(err, RtmpError::Rejected(ref c) if c == "NetStream.Publish.BadName"), "{err}");
        assert!(matches!(server.handle_input(&mut BytesMut::from(&[0u8][..]), 0), Err(RtmpError::Closed)));
    }

    #[test]
    fn commands_before_connect_are_refused() {
        let mut server = ServerSession::new(SessionConfig::default());
        let mut hs = BytesMut::new();
        let _ = crate::rtmp::handshake::ClientHandshake::start(&mut hs);
        hs.extend_from_slice(&[0u8; 1536]);
        server.handle_input(&mut hs, 0).unwrap();
        let mut body = BytesMut::new();
        amf::encode(&Amf0::str("publish"), &mut body);
        amf::encode(&Amf0::Number(1.0), &mut body);
        let mut wire = BytesMut::new();
        Encoder::default().encode(
            &Message { csid: 3, type_id: MSG_COMMAND_AMF0, stream_id: 0, timestamp: 0, payload: body.freeze() },
            &mut wire,
        );
        assert!(matches!(server.handle_input(&mut wire, 0), Err(RtmpError::Protocol(_))));
    }
}
