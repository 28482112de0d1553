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
///
/// Each connection is a minimal HTTP/1.1 client on its own socket: it sends
/// the next request once the previous body is read, so every request rides
/// the same keep-alive connection (a pooled client opens new ones whenever
/// a connection is not back in its pool yet, which made the servers pay for
/// connection setup). Bodies are read into one buffer and dropped.
pub async fn hammer(url: String, connections: usize, until: tokio::time::Instant) -> GetStats {
    let start = tokio::time::Instant::now();
    let Some((addr, request)) = request_for(&url) else {
        return GetStats { failed: connections as u64, ..Default::default() };
    };
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, request) = (addr.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = GetStats::default();
            let mut buf = vec![0u8; 256 * 1024];
            while tokio::time::Instant::now() < until {
                let Ok(Ok(mut conn)) =
                    tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&addr)).await
                else {
                    s.failed += 1;
                    continue;
                };
                loop {
                    if tokio::time::Instant::now() >= until {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), exchange(&mut conn, &request, &mut buf)).await {
                        Ok(Ok((n, keep))) => {
                            s.ok += 1;
                            s.bytes += n;
                            if !keep {
                                break;
                            }
                        }
                        _ => {
                            s.failed += 1;
                            break;
                        }
                    }
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

/// `host:port` and the request text for an `http://` URL.
fn request_for(url: &str) -> Option<(String, Vec<u8>)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
    Some((addr, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tidecast-load\r\n\r\n").into_bytes()))
}

/// One request and its response on `conn`: the body's length, and whether
/// the connection stays open. A non-2xx answer is an error.
async fn exchange(conn: &mut tokio::net::TcpStream, request: &[u8], buf: &mut [u8]) -> std::io::Result<(u64, bool)> {
    use std::io::{Error, ErrorKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, what.to_owned());
    conn.write_all(request).await?;
    // The head, and whatever of the body came with it.
    let mut have = 0;
    let head_end = loop {
        if have == buf.len() {
            return Err(bad("response head too long"));
        }
        let n = conn.read(&mut buf[have..]).await?;
        if n == 0 {
            return Err(Error::from(ErrorKind::UnexpectedEof));
        }
        have += n;
        if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head is not text"))?.to_ascii_lowercase();
    if !head.starts_with("http/1.1 2") {
        return Err(bad("not a 2xx answer"));
    }
    let keep = !head.contains("\r\nconnection: close");
    let length = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| bad("no content-length"))?;
    let mut got = (have - head_end) as u64;
    while got < length {
        let n = conn.read(buf).await?;
        if n == 0 {
            return Err(Error::from(ErrorKind::UnexpectedEof));
        }
        got += n as u64;
    }
    if got != length {
        return Err(bad("more bytes than content-length"));
    }
    Ok((length, keep))
}
