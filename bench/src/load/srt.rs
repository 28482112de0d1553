//! SRT players: call the server with a `request` streamid and read the
//! MPEG-TS it sends. A stall is a gap in arrivals longer than SRT's own
//! latency window plus a player's buffer.

use std::time::Duration;

use futures_util::StreamExt;
use srt_tokio::SrtSocket;

use super::{RunTime, ViewerStats};

/// Plays from `addr` (`host:port`) with `streamid` until `run.until`.
pub async fn viewer(addr: String, streamid: String, run: RunTime) -> ViewerStats {
    let mut stats = ViewerStats::default();
    if let Err(e) = play(&addr, &streamid, run, &mut stats).await {
        stats.error = Some(e.to_string());
    }
    stats
}

/// Longest gap between arrivals a player with a 1 s buffer rides out.
const GAP: Duration = Duration::from_millis(1000);

async fn play(addr: &str, streamid: &str, run: RunTime, stats: &mut ViewerStats) -> anyhow::Result<()> {
    let call = SrtSocket::builder().latency(Duration::from_millis(120)).call(addr, Some(streamid));
    let mut sock = tokio::time::timeout(run.connect_timeout, call).await??;
    let mut last: Option<tokio::time::Instant> = None;
    let mut stalled = false;
    loop {
        let next = tokio::time::timeout_at(run.until, sock.next()).await;
        let Ok(item) = next else { break };
        let Some(item) = item else { anyhow::bail!("the server closed the connection") };
        let (_, data) = item?;
        let now = tokio::time::Instant::now();
        if let Some(prev) = last {
            if now - prev > GAP && !stalled {
                stats.stalls += 1;
                stalled = true;
            } else if now - prev <= GAP {
                stalled = false;
            }
        }
        last = Some(now);
        stats.started = true;
        stats.bytes += data.len() as u64;
    }
    Ok(())
}
