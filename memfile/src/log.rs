//! Append-only logs in memory-backed files, read through `Bytes` views.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::warn;

use crate::registry;

/// Address space one log reserves. Only what is written takes memory; a
/// rendition that fills it continues in a fresh log.
const CAPACITY: usize = 1 << 30;

/// Freed space is given back to the kernel in steps of at least this much.
const PUNCH_STEP: usize = 256 * 1024;

static HELD: AtomicU64 = AtomicU64::new(0);
static WRITTEN: AtomicU64 = AtomicU64::new(0);
static LOGS: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Process-wide counters of the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Logs alive (each is one open file descriptor).
    pub logs: u64,
    /// Bytes written and not yet given back: the memory the logs hold.
    pub held_bytes: u64,
    /// Bytes written since start.
    pub written_bytes: u64,
    /// Writes that fell back to a heap copy (no `memfd`, or a write larger
    /// than a log).
    pub heap_fallbacks: u64,
    /// Bytes sockets sent with `sendfile`, since start.
    pub sendfile_bytes: u64,
}

/// The counters now.
pub fn stats() -> Stats {
    Stats {
        logs: LOGS.load(Ordering::Relaxed),
        held_bytes: HELD.load(Ordering::Relaxed),
        written_bytes: WRITTEN.load(Ordering::Relaxed),
        heap_fallbacks: FALLBACKS.load(Ordering::Relaxed),
        sendfile_bytes: crate::socket::SENT.load(Ordering::Relaxed),
    }
}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096))
}

struct State {
    /// Bytes written so far; nothing below is ever written again.
    head: usize,
    /// Start offset of every live view, with how many views start there.
    pins: BTreeMap<usize, usize>,
    /// Everything below this was punched out of the file.
    punched: usize,
}

/// One memory-backed file, mapped for its whole capacity.
pub(crate) struct Log {
    fd: OwnedFd,
    base: NonNull<u8>,
    cap: usize,
    state: Mutex<State>,
}

// SAFETY: the mapping is shared memory owned by the log. Bytes are written
// only above `head`, under the state lock, before any view of them exists;
// views read only below `head`, which is never written again; and a range
// is punched only once no view covers it (see `unpin`).
unsafe impl Send for Log {}
// SAFETY: as above.
unsafe impl Sync for Log {}

impl Log {
    fn create(name: &str, cap: usize) -> io::Result<Arc<Log>> {
        let cname = CString::new(format!("tidecast:{name}")).unwrap_or_default();
        // SAFETY: a valid C string and flags; the result is checked.
        let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = libc::off_t::try_from(cap).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid descriptor; a sparse file takes no memory.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh shared mapping of the whole file; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Large pages where the operator allows them for shared memory
        // (`shmem_enabled` = advise): fewer pages to look up per sendfile.
        // SAFETY: the mapping just made; advice only.
        unsafe { libc::madvise(base, cap, libc::MADV_HUGEPAGE) };
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        let log =
            Arc::new(Log { fd, base, cap, state: Mutex::new(State { head: 0, pins: BTreeMap::new(), punched: 0 }) });
        registry::insert(base.as_ptr() as usize, cap, log.fd.as_raw_fd(), Arc::downgrade(&log));
        LOGS.fetch_add(1, Ordering::Relaxed);
        Ok(log)
    }

    /// Appends the concatenation of `pieces`; `None` if it does not fit.
    fn append(self: &Arc<Self>, pieces: &[&[u8]]) -> Option<Bytes> {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let start = {
            let mut s = self.state.lock();
            if s.head.checked_add(total)? > self.cap {
                return None;
            }
            let start = s.head;
            let mut at = start;
            for p in pieces {
                // SAFETY: `at + p.len() <= cap` (checked above), the range is
                // above `head` so no view reads it, and the lock keeps other
                // writers out.
                unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), self.base.as_ptr().add(at), p.len()) };
                at += p.len();
            }
            s.head = at;
            *s.pins.entry(start).or_insert(0) += 1;
            start
        };
        HELD.fetch_add(total as u64, Ordering::Relaxed);
        WRITTEN.fetch_add(total as u64, Ordering::Relaxed);
        Some(Bytes::from_owner(View { log: self.clone(), start, len: total }))
    }

    /// A further view of `[start, start + len)`, which a live view covers
    /// from `start` on.
    fn view(self: &Arc<Self>, start: usize, len: usize) -> Option<Bytes> {
        {
            let mut s = self.state.lock();
            if start < s.punched || start.checked_add(len)? > s.head {
                return None;
            }
            *s.pins.entry(start).or_insert(0) += 1;
        }
        Some(Bytes::from_owner(View { log: self.clone(), start, len }))
    }

    fn unpin(&self, start: usize) {
        let mut s = self.state.lock();
        match s.pins.get_mut(&start) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return;
            }
            Some(_) => {
                s.pins.remove(&start);
            }
            None => return,
        }
        // Nothing below the oldest live view is read again.
        let frontier = s.pins.keys().next().copied().unwrap_or(s.head);
        let to = frontier / page_size() * page_size();
        if to < s.punched + PUNCH_STEP {
            return;
        }
        let (off, len) = (s.punched, to - s.punched);
        // SAFETY: a valid descriptor; whole pages no view covers.
        let r = unsafe {
            libc::fallocate(
                self.fd.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            s.punched = to;
            HELD.fetch_sub(len as u64, Ordering::Relaxed);
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        registry::remove(self.base.as_ptr() as usize);
        // SAFETY: the mapping made in `create`; no view is left (each holds
        // the log alive) and the table no longer names it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.cap) };
        let s = self.state.get_mut();
        HELD.fetch_sub((s.head - s.punched) as u64, Ordering::Relaxed);
        LOGS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The owner of a `Bytes` viewing a log.
struct View {
    log: Arc<Log>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: written before this view was made, never written again,
        // and not punched while this view pins its start.
        unsafe { std::slice::from_raw_parts(self.log.base.as_ptr().add(self.start), self.len) }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        self.log.unpin(self.start);
    }
}

/// One rendition's packaged bytes: each write is copied once into the
/// current log and handed back as a `Bytes` viewing it. Consecutive writes
/// are contiguous, so [`join`] can view a run of them as one.
pub struct ChunkWriter {
    name: String,
    log: Option<Arc<Log>>,
    /// `memfd` is unavailable here: heap copies from now on.
    heap_only: bool,
}

impl fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkWriter").field("name", &self.name).field("heap_only", &self.heap_only).finish()
    }
}

impl ChunkWriter {
    /// A writer whose files are named after `name` (it shows in
    /// `/proc/PID/fd`); no file is made before the first write.
    pub fn new(name: &str) -> ChunkWriter {
        ChunkWriter { name: name.to_owned(), log: None, heap_only: false }
    }

    /// Writes the concatenation of `pieces` as one chunk.
    pub fn write(&mut self, pieces: &[&[u8]]) -> Bytes {
        if let Some(b) = self.log.as_ref().and_then(|log| log.append(pieces)) {
            return b;
        }
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        if !self.heap_only && total <= CAPACITY {
            // The first write, or the log is full: a fresh one.
            match Log::create(&self.name, CAPACITY) {
                Ok(log) => {
                    let b = log.append(pieces);
                    self.log = Some(log);
                    if let Some(b) = b {
                        return b;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "no memory-backed file for packaged media; copying to the heap (no sendfile)");
                    self.heap_only = true;
                    self.log = None;
                }
            }
        }
        FALLBACKS.fetch_add(1, Ordering::Relaxed);
        let mut v = Vec::with_capacity(total);
        for p in pieces {
            v.extend_from_slice(p);
        }
        Bytes::from(v)
    }
}

/// `chunks` as one `Bytes`, without copying, when they are consecutive
/// writes of one log (a part or a segment of one rendition). `None` when
/// they are not (a heap fallback, or a run that straddles two logs).
pub fn join(chunks: &[Bytes]) -> Option<Bytes> {
    let mut it = chunks.iter().filter(|c| !c.is_empty());
    let first = it.next()?;
    let mut end = first.as_ptr() as usize + first.len();
    for c in it {
        if c.as_ptr() as usize != end {
            return None;
        }
        end += c.len();
    }
    let start = first.as_ptr() as usize;
    let (log, offset) = registry::log_of(first)?;
    // Contiguous addresses inside one mapping: the run lies in this log if
    // its end does.
    if offset + (end - start) > log.cap {
        return None;
    }
    log.view(offset, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_views_of_one_file_and_join_without_copying() {
        let mut w = ChunkWriter::new("test");
        let a = w.write(&[b"moof", b"mdat"]);
        let b = w.write(&[b"-second"]);
        assert_eq!(&a[..], b"moofmdat");
        assert_eq!(&b[..], b"-second");
        assert!(registry::file_of(&a).is_some(), "the chunk lies in a mapped file");
        let whole = join(&[a.clone(), b.clone()]).expect("consecutive writes join");
        assert_eq!(&whole[..], b"moofmdat-second");
        assert_eq!(whole.as_ptr(), a.as_ptr(), "the joined view is the same memory");
        assert!(join(&[b.clone(), a.clone()]).is_none(), "out of order does not join");
        let heap = Bytes::from_static(b"elsewhere");
        assert!(join(&[a, heap]).is_none());
    }

    #[test]
    fn memory_is_given_back_once_no_view_needs_it() {
        let mut w = ChunkWriter::new("test-punch");
        let chunk = vec![7u8; 64 * 1024];
        let mut kept = std::collections::VecDeque::new();
        for _ in 0..64 {
            kept.push_back(w.write(&[&chunk]));
            if kept.len() > 8 {
                kept.pop_front();
            }
        }
        let log = w.log.clone().expect("a log");
        let (head, punched) = {
            let s = log.state.lock();
            (s.head, s.punched)
        };
        assert_eq!(head, 64 * chunk.len());
        assert!(punched >= head - 9 * chunk.len() - PUNCH_STEP - page_size(), "punched {punched} of {head}");
        assert!(kept.iter().all(|c| c.iter().all(|&b| b == 7)), "what is still viewed is intact");
        // A view taken from the oldest kept chunk keeps it readable after the
        // chunks themselves are gone.
        let oldest = kept.front().cloned().expect("kept");
        kept.clear();
        for _ in 0..16 {
            w.write(&[&chunk]);
        }
        assert!(oldest.iter().all(|&b| b == 7));
    }
}
