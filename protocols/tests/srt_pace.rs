//! srt-tokio as the SRT driver uses it for players, on loopback: a
//! fast-start burst (a GOP handed over at once) and then a live rate must
//! all arrive when paced by `srt::pace::Pacer`. Unpaced, srt-tokio 0.4.4
//! delivers almost nothing of it, at any latency (see pace.rs); the SRT
//! crates are built optimised in tests (Cargo.toml) because a debug build
//! drains slowly enough to hide that.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use srt_tokio::{SrtListener, SrtSocket};
use tidecast_protocols::srt::pace::Pacer;

const PAYLOAD: usize = 1316;
/// 2 s of 3 Mbit/s video, as a new player gets it.
const BURST: usize = 570;
/// Then 1 s of the same rate, 10 payloads every 33 ms.
const LIVE_TICKS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_fast_start_burst_and_the_live_edge_all_arrive() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let (_listener, mut incoming) = SrtListener::builder().bind(addr.as_str()).await.unwrap();
    let sender = tokio::spawn(async move {
        let req = incoming.incoming().next().await.expect("a caller");
        let mut sock = req.accept(None).await.expect("accepted");
        let mut pacer = Pacer::new(Instant::now());
        let payload = Bytes::from(vec![0x47u8; PAYLOAD]);
        let mut ticks = tokio::time::interval(Duration::from_millis(33));
        let mut sent = 0usize;
        for tick in 0..=LIVE_TICKS {
            ticks.tick().await;
            for _ in 0..if tick == 0 { BURST } else { 10 } {
                while let Err(wait) = pacer.poll(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                sock.send((Instant::now(), payload.clone())).await.expect("queued");
                sent += PAYLOAD;
            }
        }
        // Closing flushes what is queued; the caller then sees the end.
        sock.close().await.expect("closed");
        sent
    });
    let mut caller =
        SrtSocket::builder().latency(Duration::from_millis(500)).call(addr.as_str(), None).await.expect("connected");
    let mut received = 0usize;
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), caller.next()).await {
        let Ok((_, data)) = item else { break };
        received += data.len();
    }
    let sent = sender.await.unwrap();
    assert!(
        received * 100 >= sent * 95,
        "{received} of {sent} bytes arrived; srt-tokio lost the burst (pacing too fast?)"
    );
}
