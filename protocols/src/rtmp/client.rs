//! The client side of an RTMP connection, sans IO: connect, createStream,
//! then publish or play, then media. Publishing is used by push targets and
//! by tests that publish what ffmpeg cannot (Enhanced RTMP); playing by the
//! load generator's RTMP viewers.

use bytes::{BufMut, Bytes, BytesMut};

use super::amf::{self, Amf0};
use super::chunk::{Decoder, Encoder, Limits, Message};
use super::handshake::ClientHandshake;
use super::RtmpError;

/// What the client asks for once its stream is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publish,
    Play,
}

/// A media message a playing client received.
#[derive(Debug, Clone)]
pub struct Media {
    /// 8 (audio) or 9 (video); 18 for data messages.
    pub type_id: u8,
    /// The message timestamp, milliseconds.
    pub timestamp: u32,
    /// The FLV tag body.
    pub payload: Bytes,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Handshake,
    Connecting,
    Creating,
    Publishing,
    Live,
}

/// A publishing or playing client session.
pub struct ClientSession {
    role: Role,
    media: std::collections::VecDeque<Media>,
    /// Bytes received since the last acknowledgement, and the peer's window.
    unacked: u64,
    received: u64,
    ack_window: u32,
    handshake: ClientHandshake,
    decoder: Decoder,
    encoder: Encoder,
    out: BytesMut,
    state: State,
    app: String,
    tc_url: String,
    name: String,
    stream_id: u32,
    enhanced: bool,
}

impl ClientSession {
    /// Starts publishing `name` to `app` (`tc_url` is the `rtmp://host/app` URL).
    pub fn publish(tc_url: &str, app: &str, name: &str) -> ClientSession {
        Self::start(Role::Publish, tc_url, app, name)
    }

    /// Starts playing `name` from `app`; media arrives through [`Self::poll_media`].
    pub fn play(tc_url: &str, app: &str, name: &str) -> ClientSession {
        Self::start(Role::Play, tc_url, app, name)
    }

    fn start(role: Role, tc_url: &str, app: &str, name: &str) -> ClientSession {
        let mut out = BytesMut::new();
        let handshake = ClientHandshake::start(&mut out);
        ClientSession {
            role,
            media: std::collections::VecDeque::new(),
            unacked: 0,
            received: 0,
            ack_window: 0,
            handshake,
            decoder: Decoder::new(Limits::default()),
            encoder: Encoder::default(),
            out,
            state: State::Handshake,
            app: app.into(),
            tc_url: tc_url.into(),
            name: name.into(),
            stream_id: 0,
            enhanced: true,
        }
    }

    /// Leaves the Enhanced RTMP `fourCcList` out of `connect`: a plain
    /// H.264/AAC client, for servers whose AMF0 reader refuses the strict
    /// array it is sent in (xiu 0.13 closes the connection).
    pub fn legacy(mut self) -> ClientSession {
        self.enhanced = false;
        self
    }

    /// Whether the server accepted the publish or play.
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// Bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// The next media message received while playing.
    pub fn poll_media(&mut self) -> Option<Media> {
        self.media.pop_front()
    }

    /// Consumes bytes from the server.
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<(), RtmpError> {
        let arrived = buf.len() as u64;
        self.received += arrived;
        self.unacked += arrived;
        if self.ack_window > 0 && self.unacked >= u64::from(self.ack_window) {
            // Acknowledgement (type 3): the sequence number is the byte count, mod 2^32.
            self.unacked = 0;
            let seq = (self.received % (1 << 32)) as u32;
            self.send(2, 3, 0, 0, Bytes::copy_from_slice(&seq.to_be_bytes()));
        }
        if self.state == State::Handshake {
            if !self.handshake.advance(buf, &mut self.out)? {
                return Ok(());
            }
            let mut b = BytesMut::new();
            b.put_u32(4096);
            self.send(2, 1, 0, 0, b.freeze());
            self.encoder.set_chunk_size(4096);
            let mut fields = vec![
                ("app", Amf0::str(&self.app)),
                ("type", Amf0::str("nonprivate")),
                ("tcUrl", Amf0::str(&self.tc_url)),
            ];
            if self.enhanced {
                let codecs = vec![Amf0::str("hvc1"), Amf0::str("av01"), Amf0::str("avc1")];
                fields.push(("fourCcList", Amf0::StrictArray(codecs)));
            }
            let cmd = Amf0::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
            self.command(0, &[Amf0::str("connect"), Amf0::Number(1.0), cmd]);
            self.state = State::Connecting;
        }
        loop {
            let before = buf.len();
            if let Some(msg) = self.decoder.decode_chunk(buf)? {
                self.on_message(msg)?;
            }
            if buf.len() == before {
                return Ok(());
            }
        }
    }

    fn on_message(&mut self, msg: Message) -> Result<(), RtmpError> {
        match msg.type_id {
            1 if msg.payload.len() >= 4 => {
                let size = u32::from_be_bytes([msg.payload[0], msg.payload[1], msg.payload[2], msg.payload[3]]);
                self.decoder.set_chunk_size(size)?;
            }
            5 if msg.payload.len() >= 4 => {
                self.ack_window = u32::from_be_bytes([msg.payload[0], msg.payload[1], msg.payload[2], msg.payload[3]]);
            }
            8 | 9 | 18 if self.role == Role::Play => {
                self.media.push_back(Media { type_id: msg.type_id, timestamp: msg.timestamp, payload: msg.payload });
            }
            20 => {
                let values = amf::decode_all(&msg.payload)?;
                let name = values.first().and_then(Amf0::as_str).unwrap_or_default();
                match (name, &self.state) {
                    ("_result", State::Connecting) => {
                        self.command(0, &[Amf0::str("createStream"), Amf0::Number(2.0), Amf0::Null]);
                        self.state = State::Creating;
                    }
                    ("_result", State::Creating) => {
                        self.stream_id = values.get(3).and_then(Amf0::as_f64).unwrap_or(1.0) as u32;
                        let name = self.name.clone();
                        match self.role {
                            Role::Publish => self.command(
                                self.stream_id,
                                &[
                                    Amf0::str("publish"),
                                    Amf0::Number(3.0),
                                    Amf0::Null,
                                    Amf0::str(&name),
                                    Amf0::str("live"),
                                ],
                            ),
                            Role::Play => {
                                // A 1 s client buffer (user control SetBufferLength), then play.
                                let mut ev = BytesMut::new();
                                ev.put_u16(3);
                                ev.put_u32(self.stream_id);
                                ev.put_u32(1000);
                                self.send(2, 4, 0, 0, ev.freeze());
                                self.command(
                                    self.stream_id,
                                    &[Amf0::str("play"), Amf0::Number(3.0), Amf0::Null, Amf0::str(&name)],
                                );
                            }
                        }
                        self.state = State::Publishing;
                    }
                    ("onStatus", _) => {
                        let info = values.get(3);
                        let code = info.and_then(|i| i.get("code")).and_then(Amf0::as_str).unwrap_or_default();
                        if code == "NetStream.Publish.Start" || code == "NetStream.Play.Start" {
                            self.state = State::Live;
                        } else if info.and_then(|i| i.get("level")).and_then(Amf0::as_str) == Some("error") {
                            return Err(RtmpError::Rejected(code.to_owned()));
                        }
                    }
                    ("_error", _) => return Err(RtmpError::Rejected("_error".into())),
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, timestamp: u32, payload: Bytes) {
        self.encoder.encode(&Message { csid, type_id, stream_id, timestamp, payload }, &mut self.out);
    }

    fn command(&mut self, stream_id: u32, values: &[Amf0]) {
        let mut body = BytesMut::new();
        for v in values {
            amf::encode(v, &mut body);
        }
        self.send(3, 20, stream_id, 0, body.freeze());
    }

    /// Queues an FLV video tag body.
    pub fn send_video(&mut self, timestamp: u32, body: Bytes) {
        self.send(6, 9, self.stream_id, timestamp, body);
    }

    /// Queues an FLV audio tag body.
    pub fn send_audio(&mut self, timestamp: u32, body: Bytes) {
        self.send(4, 8, self.stream_id, timestamp, body);
    }

    /// Queues deleteStream (a clean unpublish).
    pub fn unpublish(&mut self) {
        let id = f64::from(self.stream_id);
        self.command(0, &[Amf0::str("deleteStream"), Amf0::Number(4.0), Amf0::Null, Amf0::Number(id)]);
    }
}
