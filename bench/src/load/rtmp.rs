//! RTMP players: connect, play, read media as fast as the server sends it,
//! and count a stall whenever the media timestamps fall more than the
//! player's buffer behind the wall clock.

use std::time::Duration;

use bytes::BytesMut;
use tidecast_protocols::rtmp::ClientSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{PlayoutBuffer, RunTime, ViewerStats};

/// Where an RTMP client connects: `rtmp://host:port/app/name`.
#[derive(Debug, Clone)]
pub struct RtmpUrl {
    /// host:port.
    pub addr: String,
    /// Application.
    pub app: String,
    /// Stream name (with any query).
    pub name: String,
    /// `rtmp://host:port/app`.
    pub tc_url: String,
}

impl RtmpUrl {
    /// Parses `rtmp://host[:port]/app/name`.
    pub fn parse(url: &str) -> anyhow::Result<RtmpUrl> {
        let rest = url.strip_prefix("rtmp://").ok_or_else(|| anyhow::anyhow!("{url}: not rtmp://"))?;
        let (host, path) = rest.split_once('/').ok_or_else(|| anyhow::anyhow!("{url}: no app"))?;
        let (app, name) = path.split_once('/').ok_or_else(|| anyhow::anyhow!("{url}: no stream name"))?;
        let addr = if host.contains(':') { host.to_owned() } else { format!("{host}:1935") };
        Ok(RtmpUrl { tc_url: format!("rtmp://{addr}/{app}"), addr, app: app.into(), name: name.into() })
    }
}

/// Seconds of media a player buffers before it plays (and after a stall).
const BUFFER: f64 = 1.0;

/// Plays `url` until `run.until`.
pub async fn viewer(url: RtmpUrl, run: RunTime) -> ViewerStats {
    let mut stats = ViewerStats::default();
    if let Err(e) = play(&url, run, &mut stats).await {
        stats.error = Some(e.to_string());
    }
    stats
}

async fn play(url: &RtmpUrl, run: RunTime, stats: &mut ViewerStats) -> anyhow::Result<()> {
    let mut sock = tokio::time::timeout(run.connect_timeout, TcpStream::connect(&url.addr)).await??;
    sock.set_nodelay(true)?;
    // The clip is H.264/AAC: no Enhanced RTMP offer, which xiu cannot read.
    let mut session = ClientSession::play(&url.tc_url, &url.app, &url.name).legacy();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut playout = PlayoutBuffer::new(BUFFER);
    // Media time advances by the video timestamps (audio alike when there is no video).
    let mut last_ts: Option<u32> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // Made once: a timer made on every read costs the generator a wheel
    // registration per read, thousands of times a second at a big step.
    let end = tokio::time::sleep_until(run.until);
    tokio::pin!(end);
    loop {
        while let Some(out) = session.poll_transmit() {
            sock.write_all(&out).await?;
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        tokio::select! {
            read = sock.read_buf(&mut buf) => {
                let n = read?;
                if n == 0 {
                    anyhow::bail!("the server closed the connection");
                }
                stats.bytes += n as u64;
                session.handle_input(&mut buf)?;
                while let Some(m) = session.poll_media() {
                    if m.type_id != 9 {
                        continue;
                    }
                    stats.started = true;
                    if let Some(prev) = last_ts {
                        let step = m.timestamp.wrapping_sub(prev);
                        // Ignore jumps (a reconnecting publisher): they are not playback time.
                        if step < 10_000 {
                            playout.add(f64::from(step) / 1000.0);
                        }
                    }
                    last_ts = Some(m.timestamp);
                }
            }
            _ = tick.tick() => {
                playout.check(tokio::time::Instant::now());
            }
            _ = &mut end => break,
        }
    }
    stats.stalls = playout.stalls;
    stats.media_seconds = playout.received();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = RtmpUrl::parse("rtmp://127.0.0.1/live/cam?token=x").unwrap();
        assert_eq!((u.addr.as_str(), u.app.as_str(), u.name.as_str()), ("127.0.0.1:1935", "live", "cam?token=x"));
        assert_eq!(u.tc_url, "rtmp://127.0.0.1:1935/live");
        assert!(RtmpUrl::parse("http://x/live/a").is_err());
        assert!(RtmpUrl::parse("rtmp://x/live").is_err());
    }
}
