//! The publishing side of an RTMP connection, sans IO: connect, createStream,
//! publish, then media. Used by push targets and by tests that publish what
//! ffmpeg cannot (Enhanced RTMP).

use bytes::{BufMut, Bytes, BytesMut};

use super::amf::{self, Amf0};
use super::chunk::{Decoder, Encoder, Limits, Message};
use super::handshake::ClientHandshake;
use super::RtmpError;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Handshake,
    Connecting,
    Creating,
    Publishing,
    Live,
}

/// A publishing client session.
pub struct ClientSession {
    handshake: ClientHandshake,
    decoder: Decoder,
    encoder: Encoder,
    out: BytesMut,
    state: State,
    app: String,
    tc_url: String,
    name: String,
    stream_id: u32,
}

impl ClientSession {
    /// Starts publishing `name` to `app` (`tc_url` is the `rtmp://host/app` URL).
    pub fn publish(tc_url: &str, app: &str, name: &str) -> ClientSession {
        let mut out = BytesMut::new();
        let handshake = ClientHandshake::start(&mut out);
        ClientSession {
            handshake,
            decoder: Decoder::new(Limits::default()),
            encoder: Encoder::default(),
            out,
            state: State::Handshake,
            app: app.into(),
            tc_url: tc_url.into(),
            name: name.into(),
            stream_id: 0,
        }
    }

    /// Whether the server accepted the publish.
    pub fn is_live(&self) -> bool {
        self.state == State::Live
    }

    /// Bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// Consumes bytes from the server.
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<(), RtmpError> {
        if self.state == State::Handshake {
            if !self.handshake.advance(buf, &mut self.out)? {
                return Ok(());
            }
            let mut b = BytesMut::new();
            b.put_u32(4096);
            self.send(2, 1, 0, 0, b.freeze());
            self.encoder.set_chunk_size(4096);
            let cmd = Amf0::object([
                ("app", Amf0::str(&self.app)),
                ("type", Amf0::str("nonprivate")),
                ("tcUrl", Amf0::str(&self.tc_url)),
                ("fourCcList", Amf0::StrictArray(vec![Amf0::str("hvc1"), Amf0::str("av01"), Amf0::str("avc1")])),
            ]);
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
                        self.command(
                            self.stream_id,
                            &[Amf0::str("publish"), Amf0::Number(3.0), Amf0::Null, Amf0::str(&name), Amf0::str("live")],
                        );
                        self.state = State::Publishing;
                    }
                    ("onStatus", _) => {
                        let info = values.get(3);
                        let code = info.and_then(|i| i.get("code")).and_then(Amf0::as_str).unwrap_or_default();
                        if code == "NetStream.Publish.Start" {
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
