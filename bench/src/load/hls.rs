//! HLS players. The LL-HLS player does what hls.js does at the live edge:
//! blocking playlist reloads (`_HLS_msn`/`_HLS_part`) and a fetch of each
//! part as it is announced. The plain player reloads the playlist every half
//! target duration and fetches each new segment. Both keep a playout buffer
//! and count stalls; the LL-HLS one also measures how long after its media
//! ended each part was announced.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tidecast_protocols::hls::read::{self, MediaPlaylist};

use super::{PlayoutBuffer, RunTime, ViewerStats};

/// Which player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Blocking reloads and parts.
    LowLatency,
    /// Polling and whole segments.
    Plain,
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// `uri` as a URL: absolute, absolute-path (`/x`, against the origin) or
/// relative to the directory of `playlist_url`.
pub(crate) fn resolve(playlist_url: &str, uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_owned();
    }
    let base = playlist_url.split('?').next().unwrap_or(playlist_url);
    if uri.starts_with('/') {
        let host_at = base.find("://").map_or(0, |i| i + 3);
        let origin_end = base[host_at..].find('/').map_or(base.len(), |i| host_at + i);
        return format!("{}{uri}", &base[..origin_end]);
    }
    match base.rfind('/') {
        Some(i) => format!("{}/{uri}", &base[..i]),
        None => uri.to_owned(),
    }
}

/// Plays the media playlist at `url` until `run.until`.
pub async fn viewer(client: reqwest::Client, url: String, mode: Mode, run: RunTime) -> ViewerStats {
    let mut stats = ViewerStats::default();
    let result = match mode {
        Mode::LowLatency => low_latency(&client, &url, run, &mut stats).await,
        Mode::Plain => plain(&client, &url, run, &mut stats).await,
    };
    if let Err(e) = result {
        stats.error = Some(e.to_string());
    }
    stats
}

async fn get_playlist(client: &reqwest::Client, url: &str, timeout: Duration) -> anyhow::Result<MediaPlaylist> {
    let res = client.get(url).timeout(timeout).send().await?;
    anyhow::ensure!(res.status().is_success(), "{url}: {}", res.status());
    Ok(read::media_playlist(&res.text().await?)?)
}

/// Fetches one file; returns its size.
async fn fetch(client: &reqwest::Client, url: &str, stats: &mut ViewerStats) -> anyhow::Result<u64> {
    let t0 = tokio::time::Instant::now();
    let res = client.get(url).timeout(Duration::from_secs(10)).send().await?;
    anyhow::ensure!(res.status().is_success(), "{url}: {}", res.status());
    let n = super::get::drain(res).await.ok_or_else(|| anyhow::anyhow!("{url}: the body broke off"))?;
    stats.fetch_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    stats.bytes += n;
    Ok(n)
}

async fn low_latency(client: &reqwest::Client, url: &str, run: RunTime, stats: &mut ViewerStats) -> anyhow::Result<()> {
    let mut playlist = get_playlist(client, url, run.connect_timeout).await?;
    anyhow::ensure!(playlist.part_target.is_some(), "{url} is not a low-latency playlist (no EXT-X-PART-INF)");
    // Start at the live edge: the newest independent run of parts, like a
    // player honouring PART-HOLD-BACK would (three part targets back).
    let mut seen: HashSet<(u64, u32)> = HashSet::new();
    let edge = playlist.parts.len().saturating_sub(3);
    for p in &playlist.parts[..edge] {
        seen.insert((p.msn, p.index));
    }
    let mut buffer = PlayoutBuffer::new(playlist.part_target.unwrap_or(0.2) * 3.0);
    let sep = if url.contains('?') { '&' } else { '?' };
    loop {
        let arrived = now_ms();
        for p in playlist.parts.iter().filter(|p| !seen.contains(&(p.msn, p.index))).cloned().collect::<Vec<_>>() {
            seen.insert((p.msn, p.index));
            if let Some(end) = p.end_ms {
                stats.announce_ms.push(arrived - end as f64);
            }
            fetch(client, &resolve(url, &p.uri), stats).await?;
            stats.started = true;
            buffer.add(p.duration);
        }
        buffer.check(tokio::time::Instant::now());
        let Some((msn, part)) = playlist.next_part() else { anyhow::bail!("{url}: no parts listed") };
        let next = format!("{url}{sep}_HLS_msn={msn}&_HLS_part={part}");
        let left = run.until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, get_playlist(client, &next, Duration::from_secs(10))).await {
            Ok(p) => playlist = p?,
            Err(_) => break,
        }
    }
    stats.stalls = buffer.stalls;
    stats.media_seconds = buffer.received();
    Ok(())
}

async fn plain(client: &reqwest::Client, url: &str, run: RunTime, stats: &mut ViewerStats) -> anyhow::Result<()> {
    let mut playlist = get_playlist(client, url, run.connect_timeout).await?;
    // Start three segments from the end, as RFC 8216 advises players to.
    let mut seen: HashSet<u64> = HashSet::new();
    let edge = playlist.segments.len().saturating_sub(3);
    for s in &playlist.segments[..edge] {
        seen.insert(s.msn);
    }
    let target = playlist.target_duration.max(0.5);
    let mut buffer = PlayoutBuffer::new(target);
    loop {
        for s in playlist.segments.iter().filter(|s| !seen.contains(&s.msn)).cloned().collect::<Vec<_>>() {
            seen.insert(s.msn);
            fetch(client, &resolve(url, &s.uri), stats).await?;
            stats.started = true;
            buffer.add(s.duration);
        }
        buffer.check(tokio::time::Instant::now());
        let wake = tokio::time::Instant::now() + Duration::from_secs_f64(target / 2.0);
        if wake >= run.until {
            break;
        }
        tokio::time::sleep_until(wake).await;
        playlist = get_playlist(client, url, Duration::from_secs(10)).await?;
    }
    stats.stalls = buffer.stalls;
    stats.media_seconds = buffer.received();
    Ok(())
}

/// Ingest-to-playlist delay, measured the same way on any server: polls the
/// playlist every 20 ms from the moment a real-time publisher started, and
/// for each new segment takes the time it appeared minus the time its media
/// ended (the publisher's start plus the durations of the segments up to and
/// including it). Needs the stream fresh, so that its first segment is seen.
pub async fn segment_delays(
    client: reqwest::Client,
    url: String,
    published_at: tokio::time::Instant,
    until: tokio::time::Instant,
) -> Vec<f64> {
    let mut delays = Vec::new();
    let mut media_end = 0.0;
    let mut next_msn: Option<u64> = None;
    while tokio::time::Instant::now() < until {
        if let Ok(p) = get_playlist(&client, &url, Duration::from_secs(5)).await {
            let seen = published_at.elapsed().as_secs_f64();
            // What the first poll finds may have waited for it: not timed.
            let timed = next_msn.is_some();
            for s in &p.segments {
                if next_msn.is_some_and(|n| s.msn < n) {
                    continue;
                }
                media_end += s.duration;
                if timed {
                    delays.push((seen - media_end) * 1000.0);
                }
                next_msn = Some(s.msn + 1);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    delays
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_uris_resolve_against_the_playlist() {
        assert_eq!(resolve("http://h/hls/cam/video.m3u8?token=t", "v-1.m4s"), "http://h/hls/cam/v-1.m4s");
        assert_eq!(resolve("http://h/a.m3u8", "http://o/x.ts"), "http://o/x.ts");
        assert_eq!(resolve("http://h:8080/whep/cam", "/whep/cam/abc"), "http://h:8080/whep/cam/abc");
        assert_eq!(resolve("http://h:8080", "/x"), "http://h:8080/x");
    }
}
