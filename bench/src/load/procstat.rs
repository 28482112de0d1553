//! The server's CPU time and resident memory, sampled from /proc/PID for
//! each of its processes (nginx runs a master and workers) and added up.
//! Memory includes in-memory files the server holds but has not mapped.

use std::time::Instant;

/// One reading.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// User plus system CPU seconds used so far.
    pub cpu_seconds: f64,
    /// Resident memory, bytes: RSS plus the unmapped pages of the in-memory
    /// and unlinked files it holds ([`memfd_unmapped_bytes`]).
    pub rss_bytes: u64,
}

/// Reads /proc/PID/stat (utime, stime) and /proc/PID/status (VmRSS) of
/// each process and adds them up. The memory figure also counts the pages
/// of in-memory files (`memfd`) the process holds open but has not mapped:
/// Tidecast keeps its packaged media in such files and sends it with
/// `sendfile` without reading it, so RSS alone would leave it out.
pub fn sample(pids: &[u32]) -> std::io::Result<Sample> {
    let mut total = Sample { at: Instant::now(), cpu_seconds: 0.0, rss_bytes: 0 };
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let one = parse(&stat, &status).ok_or_else(|| std::io::Error::other(format!("unreadable /proc/{pid}")))?;
        total.cpu_seconds += one.cpu_seconds;
        total.rss_bytes += one.rss_bytes + memfd_unmapped_bytes(*pid);
    }
    Ok(total)
}

/// Bytes of the process's open `memfd` files, and of the unlinked files it
/// holds open (Tidecast's packaged media with `hls.store = "disk"`), that
/// are allocated and not mapped into it (mapped pages are in its RSS
/// already).
pub fn memfd_unmapped_bytes(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut allocated = 0u64;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
        let is_held = std::fs::read_link(entry.path()).is_ok_and(|t| held_file(&t.to_string_lossy()));
        if !is_held {
            continue;
        }
        if let Ok(m) = std::fs::metadata(entry.path()) {
            if m.is_file() && seen.insert((m.dev(), m.ino())) {
                allocated += m.blocks() * 512;
            }
        }
    }
    if allocated == 0 {
        return 0;
    }
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    allocated.saturating_sub(memfd_mapped_bytes(&smaps))
}

/// Whether a path from /proc (a descriptor's target or a mapping's name)
/// is an in-memory file or an unlinked one.
fn held_file(path: &str) -> bool {
    path.starts_with("/memfd:") || (path.starts_with('/') && path.ends_with(" (deleted)"))
}

/// The resident bytes of the `memfd` and unlinked-file mappings in a
/// /proc/PID/smaps text.
fn memfd_mapped_bytes(smaps: &str) -> u64 {
    let mut in_memfd = false;
    let mut total = 0;
    for line in smaps.lines() {
        // A mapping's header: "start-end perms offset dev inode [path]".
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // The path is the sixth field and may contain spaces.
            let path = line.splitn(6, char::is_whitespace).nth(5).map(str::trim_start).unwrap_or("");
            in_memfd = held_file(path);
        } else if let (true, Some(v)) = (in_memfd, line.strip_prefix("Rss:")) {
            total += v.split_whitespace().next().and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024;
        }
    }
    total
}

/// Clock ticks per second for /proc times. Linux reports USER_HZ, which is
/// 100 on every architecture Tidecast runs on.
const TICKS: f64 = 100.0;

fn parse(stat: &str, status: &str) -> Option<Sample> {
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(Sample { at: Instant::now(), cpu_seconds: (utime + stime) / TICKS, rss_bytes: rss_kib * 1024 })
}

/// What a run cost the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Average cores busy over the run.
    pub cores: f64,
    /// Peak resident memory, bytes.
    pub rss_peak: u64,
    /// Resident memory at the start, bytes.
    pub rss_start: u64,
    /// Resident memory at the end, bytes.
    pub rss_end: u64,
}

/// Samples every `every` until `until`, then sums up.
pub async fn watch(pids: Vec<u32>, every: std::time::Duration, until: tokio::time::Instant) -> std::io::Result<Usage> {
    let first = sample(&pids)?;
    let mut last = first;
    let mut peak = first.rss_bytes;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(every.min(until.saturating_duration_since(tokio::time::Instant::now()))).await;
        last = sample(&pids)?;
        peak = peak.max(last.rss_bytes);
    }
    let wall = (last.at - first.at).as_secs_f64().max(1e-3);
    Ok(Usage {
        cores: (last.cpu_seconds - first.cpu_seconds) / wall,
        rss_peak: peak,
        rss_start: first.rss_bytes,
        rss_end: last.rss_bytes,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn mapped_memfd_pages_are_read_from_smaps() {
        let smaps = "7f00-7f10 r--s 00000000 00:01 42 /memfd:tidecast:video (deleted)\nSize: 1048576 kB\nRss: 120 kB\n\
                     7f20-7f30 rw-p 00000000 00:00 0 \nRss: 900 kB\n\
                     7f40-7f50 r--s 00000000 00:01 43 /memfd:tidecast:audio (deleted)\nRss: 8 kB\n\
                     7f60-7f70 r--s 00000000 fd:00 77                 /data/packaged/#77 (deleted)\nRss: 64 kB\n\
                     7f80-7f90 r-xp 00000000 fd:00 78                 /usr/lib/libc.so.6\nRss: 500 kB\n";
        assert_eq!(super::memfd_mapped_bytes(smaps), (120 + 8 + 64) * 1024);
    }

    #[test]
    fn this_process_has_no_unmapped_memfd() {
        assert_eq!(super::memfd_unmapped_bytes(std::process::id()), 0);
    }

    use super::*;

    #[test]
    fn reads_times_and_rss_even_with_spaces_in_the_name() {
        let stat = "4242 (tide cast) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        let status = "Name:\ttidecast\nVmPeak:\t 9999 kB\nVmRSS:\t   20480 kB\n";
        let s = parse(stat, status).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.rss_bytes, 20 * 1024 * 1024);
        assert!(parse("garbage", status).is_none());
    }

    #[test]
    fn samples_this_process() {
        let one = sample(&[std::process::id()]).unwrap();
        assert!(one.rss_bytes > 0);
        let twice = sample(&[std::process::id(), std::process::id()]).unwrap();
        assert!(twice.rss_bytes >= one.rss_bytes * 3 / 2, "processes add up");
        assert!(sample(&[u32::MAX]).is_err());
    }
}
