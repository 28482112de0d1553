//! The plain RTMP handshake (C0/C1/C2, S0/S1/S2), both roles.
//!
//! We answer with the simple handshake: S1 carries zeros where a digest would
//! go, which publishers (ffmpeg, OBS) and players accept.

use bytes::{BufMut, BytesMut};

use super::RtmpError;

/// Size of C1, S1, C2 and S2.
pub const PACKET: usize = 1536;
const VERSION: u8 = 3;

/// Server side: reads C0+C1, answers S0+S1+S2, then waits for C2.
#[derive(Debug)]
pub enum ServerHandshake {
    /// Waiting for C0 and C1.
    AwaitC0C1,
    /// S0-S2 sent; waiting for C2.
    AwaitC2,
    /// Done.
    Done,
}

impl ServerHandshake {
    /// Consumes what it can from `buf`, writing any reply to `out`.
    /// Returns true once the handshake is complete.
    pub fn advance(&mut self, buf: &mut BytesMut, out: &mut BytesMut, epoch_ms: u32) -> Result<bool, RtmpError> {
        loop {
            match self {
                ServerHandshake::AwaitC0C1 => {
                    let Some(&version) = buf.first() else { return Ok(false) };
                    if version != VERSION {
                        return Err(RtmpError::Handshake(format!(
                            "client asked for RTMP version {version}; only plain RTMP (3) is served (no RTMPE)"
                        )));
                    }
                    if buf.len() < 1 + PACKET {
                        return Ok(false);
                    }
                    let c0c1 = buf.split_to(1 + PACKET);
                    let c1 = &c0c1[1..];
                    out.put_u8(VERSION);
                    out.put_u32(epoch_ms);
                    out.put_u32(0);
                    let mut random = [0u8; PACKET - 8];
                    rand::fill(&mut random[..]);
                    out.put_slice(&random);
                    // S2 echoes C1's time and random bytes.
                    out.put_slice(&c1[..4]);
                    out.put_u32(epoch_ms);
                    out.put_slice(&c1[8..]);
                    *self = ServerHandshake::AwaitC2;
                }
                ServerHandshake::AwaitC2 => {
                    if buf.len() < PACKET {
                        return Ok(false);
                    }
                    let _c2 = buf.split_to(PACKET);
                    *self = ServerHandshake::Done;
                }
                ServerHandshake::Done => return Ok(true),
            }
        }
    }
}

/// Client side: writes C0+C1 up front, reads S0+S1+S2 and answers C2.
#[derive(Debug)]
pub struct ClientHandshake {
    done: bool,
}

impl ClientHandshake {
    /// Starts a handshake, writing C0+C1 to `out`.
    pub fn start(out: &mut BytesMut) -> ClientHandshake {
        out.put_u8(VERSION);
        out.put_u32(0);
        out.put_u32(0);
        let mut random = [0u8; PACKET - 8];
        rand::fill(&mut random[..]);
        out.put_slice(&random);
        ClientHandshake { done: false }
    }

    /// Consumes S0+S1+S2 from `buf` once complete, writing C2. Returns true when done.
    pub fn advance(&mut self, buf: &mut BytesMut, out: &mut BytesMut) -> Result<bool, RtmpError> {
        if self.done {
            return Ok(true);
        }
        let Some(&version) = buf.first() else { return Ok(false) };
        if version != VERSION {
            return Err(RtmpError::Handshake(format!("server answered RTMP version {version}")));
        }
        if buf.len() < 1 + 2 * PACKET {
            return Ok(false);
        }
        let s = buf.split_to(1 + 2 * PACKET);
        out.put_slice(&s[1..1 + PACKET]); // C2 echoes S1
        self.done = true;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_complete() {
        let mut c_out = BytesMut::new();
        let mut client = ClientHandshake::start(&mut c_out);
        let mut server = ServerHandshake::AwaitC0C1;
        let mut s_out = BytesMut::new();
        assert!(!server.advance(&mut c_out, &mut s_out, 7).unwrap());
        assert_eq!(s_out.len(), 1 + 2 * PACKET);
        let mut c2 = BytesMut::new();
        assert!(client.advance(&mut s_out, &mut c2).unwrap());
        assert!(server.advance(&mut c2, &mut BytesMut::new(), 0).unwrap());
    }

    #[test]
    fn rejects_other_versions_and_waits_for_bytes() {
        let mut server = ServerHandshake::AwaitC0C1;
        let mut out = BytesMut::new();
        assert!(server.advance(&mut BytesMut::from(&[6u8][..]), &mut out, 0).is_err());
        let mut server = ServerHandshake::AwaitC0C1;
        let mut partial = BytesMut::from(&[3u8, 0, 0][..]);
        assert!(!server.advance(&mut partial, &mut out, 0).unwrap());
        assert_eq!(partial.len(), 3);
    }
}
