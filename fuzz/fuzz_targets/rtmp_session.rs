//! A whole server session: a valid handshake, then the fuzz input as the
//! client's bytes in byte-chosen read sizes. Publishes are accepted, so media
//! paths and the FLV ingest are reached too.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tidecast_protocols::flv::FlvIngest;
use tidecast_protocols::rtmp::handshake::ClientHandshake;
use tidecast_protocols::rtmp::{ServerSession, SessionConfig, SessionEvent};

fuzz_target!(|data: &[u8]| {
    let mut server = ServerSession::new(SessionConfig::default());
    let mut c0c1 = BytesMut::new();
    let _ = ClientHandshake::start(&mut c0c1);
    let mut buf = c0c1;
    buf.extend_from_slice(&[0u8; 1536]); // C2
    if server.handle_input(&mut buf, 0).is_err() {
        return;
    }
    let mut ingest = FlvIngest::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let take = (usize::from(n) * 8 + 1).min(tail.len());
        buf.extend_from_slice(&tail[..take]);
        rest = &tail[take..];
        if server.handle_input(&mut buf, 0).is_err() {
            break;
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                SessionEvent::PublishRequested { .. } => server.accept_publish(),
                SessionEvent::Video { timestamp, payload } => {
                    let _ = ingest.video(timestamp, &payload);
                }
                SessionEvent::Audio { timestamp, payload } => {
                    let _ = ingest.audio(timestamp, &payload);
                }
                SessionEvent::Metadata(m) => ingest.metadata(&m),
                _ => {}
            }
        }
        while server.poll_transmit().is_some() {}
    }
});
