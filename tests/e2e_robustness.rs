//! Hostile and unlucky clients: each gets a clear error and a closed
//! session, while a good stream published beside them keeps flowing.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use tidecast_protocols::rtmp::handshake::ClientHandshake;
use tidecast_protocols::rtmp::ClientSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; fails if it stays open.
async fn expect_closed(mut sock: TcpStream, what: &str) {
    let mut buf = vec![0u8; 65536];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a hostile connection open: {what}");
}

/// Connects and completes the plain handshake.
async fn handshaken(addr: std::net::SocketAddr) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    let mut out = BytesMut::new();
    let mut hs = ClientHandshake::start(&mut out);
    sock.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut c2 = BytesMut::new();
    while !hs.advance(&mut buf, &mut c2).unwrap() {
        assert!(sock.read_buf(&mut buf).await.unwrap() > 0);
    }
    sock.write_all(&c2).await.unwrap();
    sock
}

fn latest_msn(playlist: &str) -> u64 {
    let first: u64 = playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap().parse().unwrap();
    first + playlist.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64 - 1
}

fn live_publisher(server: &Server, name: &str, seconds: u32) -> std::process::Child {
    let mut args = vec!["-re".to_string()];
    args.extend(lavfi_h264_aac(seconds, "320x240", 25, 44100));
    args.extend(["-f".into(), "flv".into(), server.rtmp_url(name)]);
    ffmpeg_spawn(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_are_closed_and_a_good_stream_keeps_flowing() {
    let mut server = Server::start(&["--hls-segment", "1"]);
    let mut good = live_publisher(&server, "good", 60);
    let before = latest_msn(&wait_for_segment(&server, "good", "video", 1).await);

    // 1. Not RTMP at all (an RTMPE or TLS client, or garbage).
    let mut s = TcpStream::connect(server.rtmp).await.unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00GET / HTTP/1.1\r\n\r\n").await.unwrap();
    expect_closed(s, "not rtmp").await;

    // 2. A truncated handshake, then silence: closed by the idle timeout at the latest.
    let mut s = TcpStream::connect(server.rtmp).await.unwrap();
    s.write_all(&[3u8; 700]).await.unwrap();
    s.shutdown().await.unwrap();
    expect_closed(s, "truncated handshake").await;

    // 3. Garbage chunks after a good handshake.
    let mut s = handshaken(server.rtmp).await;
    let junk: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let _ = s.write_all(&junk).await;
    expect_closed(s, "garbage chunks").await;

    // 4. The input that panics rml_rtmp: an AMF0 command shorter than it claims.
    let mut s = handshaken(server.rtmp).await;
    let _ = s.write_all(&[0x03, 0, 0, 0, 0, 0, 4, 20, 0, 0, 0, 0, 0x02, 0x00, 0x10, b'a']).await;
    expect_closed(s, "short amf").await;

    // 5. A message far beyond the size limit.
    let mut s = handshaken(server.rtmp).await;
    let _ = s.write_all(&[0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]).await;
    expect_closed(s, "huge message").await;

    // 6. Media before any publish.
    let mut s = handshaken(server.rtmp).await;
    let _ = s.write_all(&[0x04, 0, 0, 0, 0, 0, 2, 9, 1, 0, 0, 0, 0x17, 0x01]).await;
    expect_closed(s, "media before publish").await;

    // 7. A publisher that disconnects in the middle of a frame.
    let mut sock = TcpStream::connect(server.rtmp).await.unwrap();
    let mut session = ClientSession::publish(&format!("rtmp://{}/live", server.rtmp), "live", "dropper");
    let mut buf = BytesMut::new();
    while !session.is_live() {
        while let Some(out) = session.poll_transmit() {
            sock.write_all(&out).await.unwrap();
        }
        assert!(sock.read_buf(&mut buf).await.unwrap() > 0);
        session.handle_input(&mut buf).unwrap();
    }
    session.send_video(0, bytes::Bytes::from(vec![0x17u8; 100_000]));
    let wire = session.poll_transmit().unwrap();
    sock.write_all(&wire[..wire.len() / 2]).await.unwrap();
    drop(sock);

    // 8. Many bad connections at once.
    let floods: Vec<_> = (0..32)
        .map(|_| {
            let addr = server.rtmp;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let _ = s.write_all(&[0xffu8; 2000]).await;
                expect_closed(s, "flood").await;
            })
        })
        .collect();
    for f in floods {
        f.await.unwrap();
    }

    // The good stream went on: a newer segment appears, and the server is up.
    let after = latest_msn(&wait_for_segment(&server, "good", "video", before + 2).await);
    assert!(after >= before + 2);
    assert!(server.alive());
    let log = server.log();
    assert!(log.contains("rtmp protocol error"), "errors are logged:\n{log}");
    assert!(!log.contains("panicked"), "no session panicked:\n{log}");
    let _ = good.kill();
    let _ = good.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_keys_are_checked() {
    let server = Server::start_with_config(
        Some("[[streams]]\nname = \"show\"\nkey = \"correct-horse\"\n"),
        &["--reconnect-grace", "0"],
    );
    // A wrong key: ffmpeg fails, the server says why.
    let mut args = lavfi_h264_aac(1, "160x120", 25, 44100);
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("wrong-key")]);
    let out = ffmpeg(&args);
    assert!(!out.status.success(), "a wrong key must not publish");
    assert!(server.log().contains("rtmp publish refused"), "{}", server.log());
    // The stream named like the refused key does not exist.
    assert_eq!(get(&server.hls_url("wrong-key", "video.m3u8")).await.0, 404);

    // The right key publishes stream "show".
    let mut args = lavfi_h264_aac(2, "160x120", 25, 44100);
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("correct-horse")]);
    let out = ffmpeg(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pl = get_text(&server.hls_url("show", "video.m3u8")).await;
    assert!(pl.contains("#EXTINF"), "{pl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_publisher_is_refused_and_a_reconnect_resumes() {
    let server = Server::start(&["--hls-segment", "1", "--reconnect-grace", "30"]);
    let mut first = live_publisher(&server, "cam", 60);
    let pl = wait_for_segment(&server, "cam", "video", 1).await;
    let map = pl.lines().find(|l| l.starts_with("#EXT-X-MAP")).unwrap().to_owned();

    // A second publisher on the live name is refused; the first goes on.
    let mut args = lavfi_h264_aac(1, "160x120", 25, 44100);
    args.extend(["-f".into(), "flv".into(), server.rtmp_url("cam")]);
    let out = ffmpeg(&args);
    assert!(!out.status.success(), "a second publisher must be refused");
    assert!(server.log().contains("already has a live publisher"));

    // The first publisher drops (killed) and comes back within the grace period.
    let _ = first.kill();
    let _ = first.wait();
    let mut second = live_publisher(&server, "cam", 60);
    let msn = latest_msn(&get_text(&server.hls_url("cam", "video.m3u8")).await);
    let pl = wait_for_segment(&server, "cam", "video", msn + 3).await;
    assert!(pl.contains("#EXT-X-DISCONTINUITY"), "viewers see a discontinuity:\n{pl}");
    assert!(pl.contains(&map), "same stream, same playlist run:\n{pl}");
    let _ = second.kill();
    let _ = second.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_publishers_and_viewers_and_exits_cleanly() {
    let mut server = Server::start(&["--hls-segment", "1"]);
    let mut publisher = live_publisher(&server, "cam", 60);
    let pl = wait_for_segment(&server, "cam", "video", 1).await;
    // A viewer blocked on a far-off segment.
    let viewer = tokio::spawn({
        let url = server.hls_url("cam", &format!("video.m3u8?_HLS_msn={}", latest_msn(&pl) + 2));
        async move { reqwest::get(&url).await.map(|r| r.status().as_u16()) }
    });
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    let _ = viewer.await.unwrap();
    // The publisher's connection was closed by the server: ffmpeg ends on its own.
    let ended = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if publisher.try_wait().unwrap().is_some() {
                return true;
            }
            if std::time::Instant::now() > deadline {
                let _ = publisher.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(ended, "the publisher was disconnected at shutdown");
    assert!(server.log().contains("stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed() {
    let server = Server::start_with_config(Some("[rtmp]\nmax_connections = 2\n"), &[]);
    let _a = handshaken(server.rtmp).await;
    let _b = handshaken(server.rtmp).await;
    let c = TcpStream::connect(server.rtmp).await.unwrap();
    expect_closed(c, "third connection over a limit of two").await;
    assert!(server.log().contains("connection limit reached"));
    // A slot frees when a client leaves.
    drop(_a);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = TcpStream::connect(server.rtmp).await.unwrap();
        let mut out = BytesMut::new();
        let _ = ClientHandshake::start(&mut out);
        s.write_all(&out).await.unwrap();
        let mut buf = [0u8; 1];
        if matches!(s.read(&mut buf).await, Ok(1)) {
            break; // the server answered the handshake: served
        }
        assert!(std::time::Instant::now() < deadline, "the freed slot was never reused");
    }
}
