//! Publishers: push a prepared FLV clip over RTMP in real time, without
//! re-encoding, looping it with continuous timestamps.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tidecast_protocols::flv::{file_tags, FileTag};
use tidecast_protocols::rtmp::ClientSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::rtmp::RtmpUrl;

/// A clip's tags, the script data left out.
#[derive(Debug, Clone)]
pub struct Clip {
    tags: Vec<FileTag>,
    /// Length in milliseconds (last timestamp plus one frame).
    pub duration_ms: u32,
    /// Total tag body bytes, for the bitrate.
    pub bytes: u64,
}

impl Clip {
    /// Reads an FLV file.
    pub fn open(path: &str) -> anyhow::Result<Clip> {
        let file = Bytes::from(std::fs::read(path)?);
        let mut tags = Vec::new();
        for tag in file_tags(&file) {
            let tag = tag.map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            if tag.kind == 8 || tag.kind == 9 {
                tags.push(tag);
            }
        }
        let first = tags.first().map_or(0, |t| t.timestamp);
        for t in &mut tags {
            t.timestamp = t.timestamp.saturating_sub(first);
        }
        let last = tags.last().map_or(0, |t| t.timestamp);
        anyhow::ensure!(last > 0, "{path}: no media");
        let bytes = tags.iter().map(|t| t.body.len() as u64).sum();
        Ok(Clip { tags, duration_ms: last + 33, bytes })
    }

    /// Average bitrate, bits per second.
    pub fn bitrate(&self) -> u64 {
        self.bytes * 8 * 1000 / u64::from(self.duration_ms.max(1))
    }
}

/// What a publisher did.
#[derive(Debug, Default, Clone)]
pub struct PublishStats {
    /// Tag bytes sent.
    pub bytes: u64,
    /// When the first media tag went out.
    pub started: Option<tokio::time::Instant>,
    /// Why it stopped early.
    pub error: Option<String>,
}

/// Publishes `clip` to `url` in real time until `until`.
pub async fn publisher(url: RtmpUrl, clip: std::sync::Arc<Clip>, until: tokio::time::Instant) -> PublishStats {
    let mut stats = PublishStats::default();
    if let Err(e) = push(&url, &clip, until, &mut stats).await {
        stats.error = Some(e.to_string());
    }
    stats
}

async fn push(url: &RtmpUrl, clip: &Clip, until: tokio::time::Instant, stats: &mut PublishStats) -> anyhow::Result<()> {
    let mut sock = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&url.addr)).await??;
    sock.set_nodelay(true)?;
    let mut session = ClientSession::publish(&url.tc_url, &url.app, &url.name).legacy();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while !session.is_live() {
        while let Some(out) = session.poll_transmit() {
            sock.write_all(&out).await?;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), sock.read_buf(&mut buf)).await??;
        anyhow::ensure!(read > 0, "the server closed the connection before accepting the publish");
        session.handle_input(&mut buf)?;
    }
    let start = tokio::time::Instant::now();
    stats.started = Some(start);
    let mut offset: u64 = 0;
    'outer: loop {
        for tag in &clip.tags {
            let ts = offset + u64::from(tag.timestamp);
            let due = start + Duration::from_millis(ts);
            if due >= until {
                break 'outer;
            }
            tokio::time::sleep_until(due).await;
            let ts32 = (ts % (1 << 32)) as u32;
            if tag.kind == 9 {
                session.send_video(ts32, tag.body.clone());
            } else {
                session.send_audio(ts32, tag.body.clone());
            }
            stats.bytes += tag.body.len() as u64;
            while let Some(out) = session.poll_transmit() {
                sock.write_all(&out).await?;
            }
            // Drain what the server says (acknowledgements) without waiting.
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, sock.read_buf(&mut buf)).await {
                anyhow::ensure!(n > 0, "the server closed the connection");
                session.handle_input(&mut buf)?;
            }
        }
        offset += u64::from(clip.duration_ms);
    }
    session.unpublish();
    while let Some(out) = session.poll_transmit() {
        sock.write_all(&out).await?;
    }
    Ok(())
}
