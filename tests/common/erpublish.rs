//! The test's own Enhanced RTMP publisher, for codecs Debian's ffmpeg 5.1
//! cannot send over RTMP (HEVC and AV1 arrived in ffmpeg 6.1). It reads a
//! raw elementary stream ffmpeg encoded and publishes it with ex-header FLV
//! video tags through Tidecast's own client session.

// Each test binary that includes this file uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::BytesMut;
use tidecast_codecs::{av1, h265, nal};
use tidecast_protocols::flv::ex_video_tag;
use tidecast_protocols::rtmp::ClientSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One coded picture: (keyframe, sample bytes as MP4 carries them).
pub type Picture = (bool, Vec<u8>);

/// Splits an Annex B HEVC stream into access units, returning the hvcC
/// record and the pictures (parameter sets and AUDs removed).
pub fn hevc_pictures(annexb: &[u8]) -> (Vec<u8>, Vec<Picture>) {
    let (mut vps, mut sps, mut pps) = (None, None, None);
    let mut pictures: Vec<Picture> = Vec::new();
    let mut current: Option<Picture> = None;
    for unit in nal::annexb(annexb) {
        let kind = (unit[0] >> 1) & 0x3f;
        match kind {
            32 => vps = vps.or(Some(unit.to_vec())),
            33 => sps = sps.or(Some(unit.to_vec())),
            34 => pps = pps.or(Some(unit.to_vec())),
            35 => {}
            0..=31 => {
                let first_slice = unit.get(2).is_some_and(|b| b & 0x80 != 0);
                if first_slice {
                    if let Some(p) = current.take() {
                        pictures.push(p);
                    }
                    current = Some(((16..=23).contains(&kind), Vec::new()));
                }
                if let Some((_, data)) = current.as_mut() {
                    data.extend_from_slice(&(unit.len() as u32).to_be_bytes());
                    data.extend_from_slice(unit);
                }
            }
            _ => {}
        }
    }
    pictures.extend(current);
    let record = h265::build_config(&vps.expect("VPS"), &sps.expect("SPS"), &pps.expect("PPS")).expect("hvcC");
    (record, pictures)
}

/// Splits an AV1 OBU stream into temporal units; returns the av1C record
/// and the pictures.
pub fn av1_pictures(obu_stream: &[u8]) -> (Vec<u8>, Vec<Picture>) {
    let units = av1::temporal_units(obu_stream).expect("OBU stream");
    let seq = units
        .iter()
        .find_map(|u| {
            // The first OBU of a keyframe unit is its sequence header.
            let (kind, _) = av1::obus(u).next()?.ok()?;
            (kind == 1).then(|| {
                let size_len = u[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 1;
                // leb128: seven bits per byte, least significant group first.
                let size = u[1..=size_len].iter().rev().fold(0usize, |a, b| (a << 7) | usize::from(b & 0x7f));
                u[..1 + size_len + size].to_vec()
            })
        })
        .expect("a sequence header");
    let record = av1::build_config(&seq).expect("av1C");
    let pictures = units.into_iter().map(|u| (av1::is_keyframe(&u), u)).collect();
    (record, pictures)
}

/// Publishes `pictures` at `fps` as fast as the socket takes them, then unpublishes.
pub async fn publish(addr: SocketAddr, name: &str, fourcc: &[u8; 4], record: &[u8], pictures: &[Picture], fps: u32) {
    send(addr, name, fourcc, record, pictures, fps, false).await
}

/// As [`publish`], but paced: each picture goes out at its own time, as
/// a live encoder would send it.
pub async fn publish_live(
    addr: SocketAddr,
    name: &str,
    fourcc: &[u8; 4],
    record: &[u8],
    pictures: &[Picture],
    fps: u32,
) {
    send(addr, name, fourcc, record, pictures, fps, true).await
}

/// An RTMP publish of `name` through Tidecast's own client session, once
/// the server has accepted it (nothing sent yet).
pub async fn accepted(addr: SocketAddr, name: &str) -> (TcpStream, ClientSession) {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    let mut session = ClientSession::publish(&format!("rtmp://{addr}/live"), "live", name);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(out) = session.poll_transmit() {
            sock.write_all(&out).await.expect("write");
        }
        if session.is_live() {
            return (sock, session);
        }
        let n = sock.read_buf(&mut buf).await.expect("read");
        assert!(n > 0, "server closed the connection before accepting the publish");
        session.handle_input(&mut buf).expect("server refused the publish");
    }
}

async fn send(
    addr: SocketAddr,
    name: &str,
    fourcc: &[u8; 4],
    record: &[u8],
    pictures: &[Picture],
    fps: u32,
    paced: bool,
) {
    let (mut sock, mut session) = accepted(addr, name).await;
    session.send_video(0, ex_video_tag(fourcc, 0, true, 0, record));
    let start = tokio::time::Instant::now();
    for (i, (key, data)) in pictures.iter().enumerate() {
        let ts = (i as u64 * 1000 / u64::from(fps)) as u32;
        if paced {
            tokio::time::sleep_until(start + std::time::Duration::from_millis(u64::from(ts))).await;
        }
        session.send_video(ts, ex_video_tag(fourcc, 3, *key, 0, data));
        if let Some(out) = session.poll_transmit() {
            sock.write_all(&out).await.expect("write media");
        }
    }
    session.unpublish();
    if let Some(out) = session.poll_transmit() {
        sock.write_all(&out).await.expect("write");
    }
    sock.shutdown().await.expect("shutdown");
    // Wait for the server to close its side: it has then read everything.
    let mut rest = Vec::new();
    let _ = sock.read_to_end(&mut rest).await;
}
