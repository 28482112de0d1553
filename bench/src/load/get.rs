//! A request hammer: `connections` clients each GET one URL back to back
//! (keep-alive), as a crowd of players fetching the same cached segment.

use std::time::Duration;

/// What the hammer did.
#[derive(Debug, Default, Clone)]
pub struct GetStats {
    /// Completed 2xx responses.
    pub ok: u64,
    /// Failed requests or other statuses.
    pub failed: u64,
    /// Body bytes received.
    pub bytes: u64,
    /// Wall seconds.
    pub seconds: f64,
}

/// Reads a body chunk by chunk, counting and dropping it (no buffering: the
/// hammer shares the machine with the server it measures).
pub(crate) async fn drain(mut res: reqwest::Response) -> Option<u64> {
    let mut n = 0u64;
    loop {
        match res.chunk().await {
            Ok(Some(c)) => n += c.len() as u64,
            Ok(None) => return Some(n),
            Err(_) => return None,
        }
    }
}

/// GETs `url` from `connections` connections until `until`.
pub async fn hammer(url: String, connections: usize, until: tokio::time::Instant) -> GetStats {
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        // One client per connection: each keeps its own keep-alive socket.
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = GetStats::default();
            let Ok(client) = client else {
                s.failed += 1;
                return s;
            };
            while tokio::time::Instant::now() < until {
                match client.get(&url).timeout(Duration::from_secs(10)).send().await {
                    Ok(res) if res.status().is_success() => match drain(res).await {
                        Some(n) => {
                            s.ok += 1;
                            s.bytes += n;
                        }
                        None => s.failed += 1,
                    },
                    _ => s.failed += 1,
                }
            }
            s
        }));
    }
    let mut total = GetStats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            total.ok += s.ok;
            total.failed += s.failed;
            total.bytes += s.bytes;
        }
    }
    total.seconds = start.elapsed().as_secs_f64();
    total
}
