//! Append-only logs in memory-backed files, read through `Bytes` views.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
static EVICTED: AtomicU64 = AtomicU64::new(0);

/// Process-wide counters of the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Logs alive (each is one open file descriptor).
    pub logs: u64,
    /// Bytes written and not yet given back: the memory the logs hold
    /// (with the page cache filled ahead of a file's head, see
    /// `Log::fill_ahead`).
    pub held_bytes: u64,
    /// Bytes written since start.
    pub written_bytes: u64,
    /// Writes that fell back to a heap copy (no `memfd`, or a write larger
    /// than a log).
    pub heap_fallbacks: u64,
    /// Bytes sockets sent with `sendfile`, since start.
    pub sendfile_bytes: u64,
    /// Bytes written out to files on disk and dropped from memory
    /// ([`evict`]), since start.
    pub evicted_bytes: u64,
}

/// The counters now.
pub fn stats() -> Stats {
    Stats {
        logs: LOGS.load(Ordering::Relaxed),
        held_bytes: HELD.load(Ordering::Relaxed),
        written_bytes: WRITTEN.load(Ordering::Relaxed),
        heap_fallbacks: FALLBACKS.load(Ordering::Relaxed),
        sendfile_bytes: crate::socket::SENT.load(Ordering::Relaxed),
        evicted_bytes: EVICTED.load(Ordering::Relaxed),
    }
}

/// Where writers made with [`ChunkWriter::new`] keep their files: `None`
/// for memory (`memfd`), or a directory on a file system.
static DIRECTORY: parking_lot::RwLock<Option<PathBuf>> = parking_lot::RwLock::new(None);

/// Makes every writer created from now on with [`ChunkWriter::new`] keep
/// its files in `dir` (unlinked files, made with `O_TMPFILE`) instead of in
/// memory; `None` goes back to memory.
///
/// The bytes then live in the page cache of that file system: the kernel
/// may write them out and drop them under memory pressure (and read them
/// back if they are asked for again), and file systems with large folios
/// (ext4, XFS) let `sendfile` look them up a few at a time rather than a
/// page at a time, which is cheaper than shared memory's lookups. A window
/// shorter than the kernel's dirty expiry (30 s by default) is normally
/// freed before it is written out at all. Where the directory cannot hold
/// such files, writers keep their files in memory (logged once).
pub fn set_directory(dir: Option<PathBuf>) {
    *DIRECTORY.write() = dir;
}

/// The granularity memory is given back in: the largest page the kernel
/// may back shared memory with. Punching part of a large page zeroes that
/// part in place, and a socket may still hold the page; so holes are only
/// ever punched in whole pages of the largest size in use.
fn punch_unit() -> usize {
    static UNIT: OnceLock<usize> = OnceLock::new();
    *UNIT.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
        page.max(shmem_large_page())
    })
}

/// The largest page transparent huge pages may give a `memfd`, from
/// `/sys/kernel/mm/transparent_hugepage`: the PMD size when
/// `shmem_enabled` is `always`, `within_size` or `force` (this crate never
/// asks for them, so `advise` does not count), and every multi-size size
/// enabled for shared memory. 0 when none is.
fn shmem_large_page() -> usize {
    let dir = std::path::Path::new("/sys/kernel/mm/transparent_hugepage");
    let chosen = |text: &str| {
        text.split_whitespace()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_owned())
    };
    let on = |mode: &str| matches!(mode, "always" | "within_size" | "force");
    let top = std::fs::read_to_string(dir.join("shmem_enabled")).ok().and_then(|t| chosen(&t)).unwrap_or_default();
    let mut largest = 0;
    if on(&top) {
        largest = std::fs::read_to_string(dir.join("hpage_pmd_size"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(2 << 20);
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kb) = name.strip_prefix("hugepages-").and_then(|n| n.strip_suffix("kB")) else { continue };
        let Ok(kb) = kb.parse::<usize>() else { continue };
        let mode = std::fs::read_to_string(entry.path().join("shmem_enabled")).ok().and_then(|t| chosen(&t));
        if mode.as_deref().is_some_and(|m| on(m) || (m == "inherit" && on(&top))) {
            largest = largest.max(kb * 1024);
        }
    }
    largest
}

/// How far ahead of its head a file on disk is filled: a folio this large
/// covers the 64 KiB `sendfile` moves per round, and a file holds at most
/// this much beyond what was written.
const FILL_UNIT: usize = 256 << 10;

/// `len` zero bytes to write from (allocated once, and never touched, so
/// it maps no memory of its own).
fn zeros(len: usize) -> &'static [u8] {
    static ZEROS: [u8; FILL_UNIT] = [0; FILL_UNIT];
    &ZEROS[..len.min(FILL_UNIT)]
}

/// The granularity space is given back in for a file on a file system: the
/// largest folio its page cache may use, the PMD size (2 MiB on x86-64),
/// for the same reason as [`punch_unit`].
fn file_punch_unit() -> usize {
    static UNIT: OnceLock<usize> = OnceLock::new();
    *UNIT.get_or_init(|| {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(2 << 20)
            .max(punch_unit())
    })
}

/// Once `head` is this far past what was given back, something old is still
/// viewed (a client that stopped reading): the free ranges after it are
/// looked for and given back too.
const GAP_SCAN_LAG: usize = 32 << 20;

struct State {
    /// Bytes written so far; nothing below is ever written again.
    head: usize,
    /// Every live view's range, with how many views cover exactly it.
    pins: BTreeMap<(usize, usize), usize>,
    /// Everything below this was punched out of the file.
    punched: usize,
    /// Ranges above `punched` punched already (free gaps behind an old
    /// view), by start.
    holes: BTreeMap<usize, usize>,
    /// `head` at the last search for gaps.
    scanned_at: usize,
    /// A file on disk: the page cache is filled up to here (see
    /// [`Log::fill_ahead`]).
    filled: usize,
}

impl State {
    fn new() -> State {
        State { head: 0, pins: BTreeMap::new(), punched: 0, holes: BTreeMap::new(), scanned_at: 0, filled: 0 }
    }

    /// The end of what the file holds: what was written, or filled ahead.
    fn top(&self) -> usize {
        self.head.max(self.filled)
    }

    fn pin(&mut self, start: usize, end: usize) {
        *self.pins.entry((start, end)).or_insert(0) += 1;
    }

    /// Bytes in the holes above `punched`.
    fn hole_bytes(&self) -> usize {
        self.holes.iter().map(|(&a, &b)| b - a).sum()
    }

    /// Whether `[start, end)` lies wholly in memory not given back.
    fn readable(&self, start: usize, end: usize) -> bool {
        start >= self.punched && end <= self.head && !self.holes.iter().any(|(&a, &b)| a < end && start < b)
    }
}

/// One memory-backed file, mapped read-only for its whole capacity and
/// written with `pwritev`.
pub(crate) struct Log {
    fd: OwnedFd,
    base: NonNull<u8>,
    cap: usize,
    /// Holes are punched in multiples of this.
    unit: usize,
    /// A file on a file system (not memory): pages can be written out to
    /// it and dropped ([`evict`]).
    on_disk: bool,
    state: Mutex<State>,
}

// SAFETY: the mapping is shared memory owned by the log. Bytes are written
// only above `head`, under the state lock, before any view of them exists;
// views read only below `head`, which is never written again; and a range
// is punched only where no live view covers it (see `unpin`).
unsafe impl Send for Log {}
// SAFETY: as above.
unsafe impl Sync for Log {}

impl Log {
    fn create(name: &str, dir: Option<&Path>, cap: usize) -> io::Result<Arc<Log>> {
        let (fd, unit, on_disk) = match dir.map(|d| open_unlinked(d, cap)) {
            Some(Ok(fd)) => {
                let on_disk = !in_memory_fs(&fd);
                (fd, file_punch_unit(), on_disk)
            }
            other => {
                if let Some(Err(e)) = other {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    if !WARNED.swap(true, Ordering::Relaxed) {
                        warn!(dir = %dir.map(Path::display).map(|d| d.to_string()).unwrap_or_default(), error = %e,
                            "cannot keep packaged media in files there; keeping it in memory");
                    }
                }
                (memfd(name)?, punch_unit(), false)
            }
        };
        let len = libc::off_t::try_from(cap).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid descriptor; a sparse file takes no memory.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh shared, read-only mapping of the whole file;
        // checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_NORESERVE,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // A core dump leaves the media out (dumping the file's holes would
        // write a gigabyte of zeros per rendition).
        // SAFETY: the mapping just made; advice only.
        unsafe { libc::madvise(base, cap, libc::MADV_DONTDUMP) };
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::from(io::ErrorKind::Other))?;
        let log = Arc::new(Log { fd, base, cap, unit, on_disk, state: Mutex::new(State::new()) });
        registry::insert(base.as_ptr() as usize, cap, log.fd.as_raw_fd(), Arc::downgrade(&log));
        LOGS.fetch_add(1, Ordering::Relaxed);
        Ok(log)
    }

    /// Appends the concatenation of `pieces`: `Ok(None)` if it does not fit,
    /// an error if the kernel refused the memory.
    fn append(self: &Arc<Self>, pieces: &[&[u8]]) -> io::Result<Option<Bytes>> {
        let total = pieces.iter().try_fold(0usize, |n, p| n.checked_add(p.len()));
        let Some(total) = total else { return Ok(None) };
        let (start, grown) = {
            let mut s = self.state.lock();
            let Some(end) = s.head.checked_add(total).filter(|&e| e <= self.cap) else { return Ok(None) };
            let (before, filled) = (s.top(), s.filled);
            self.fill_ahead(&mut s, end);
            if let Err(e) = self.write_at(s.head, pieces) {
                // Nothing was counted: what the file holds is as before.
                s.filled = filled;
                return Err(e);
            }
            let start = s.head;
            s.head = end;
            s.pin(start, end);
            (start, s.top() - before)
        };
        HELD.fetch_add(grown as u64, Ordering::Relaxed);
        WRITTEN.fetch_add(total as u64, Ordering::Relaxed);
        Ok(Some(Bytes::from_owner(View { log: self.clone(), start, len: total })))
    }

    /// For a file on disk, fills the page cache ahead of `head` with zeros
    /// up to the next whole [`FILL_UNIT`] past `end`, one unit per `pwrite`.
    ///
    /// Chunks arrive a few KiB at a time, and a file system backs each
    /// small write with small folios; `sendfile` then looks the pages of a
    /// segment up a few at a time (`filemap_get_read_batch` was 9 % of the
    /// server under the cached-segment load). A write of a whole aligned
    /// unit gets folios as large as the unit, and the chunks
    /// written over it later keep them. The zeros are dirty pages of the
    /// same file, written over within a second at a video bitrate; they
    /// reach the disk only if the kernel writes the file out before that
    /// (a stream of a few dozen kbit/s, or a DVR window on disk). A failed fill is only
    /// a missed optimisation.
    fn fill_ahead(&self, s: &mut State, end: usize) {
        if !self.on_disk || end <= s.filled {
            return;
        }
        let unit = FILL_UNIT;
        let zeros = zeros(unit);
        while s.filled < end {
            let to = ((s.filled / unit + 1) * unit).min(self.cap);
            let Ok(off) = libc::off_t::try_from(s.filled) else { break };
            // SAFETY: a valid descriptor and a buffer of at least `to -
            // filled` bytes; the range is at or above `head` (`filled` never
            // falls below it), so no view reads it, and the caller holds the
            // state lock, which keeps other writers out.
            let len = (to - s.filled).min(zeros.len());
            let n = unsafe { libc::pwrite(self.fd.as_raw_fd(), zeros.as_ptr().cast(), len, off) };
            if n <= 0 {
                break;
            }
            s.filled += n as usize;
        }
        s.filled = s.filled.max(end);
    }

    /// Writes the concatenation of `pieces` at `offset`, with as few
    /// `pwritev` calls as the kernel allows: one, almost always. One call
    /// for the whole chunk also lets a file system back it with large
    /// folios, which `sendfile` then looks up a few at a time.
    fn write_at(&self, offset: usize, pieces: &[&[u8]]) -> io::Result<()> {
        // IOV_MAX on Linux; a chunk has a few dozen pieces at most.
        const MAX_IOV: usize = 1024;
        let mut at = offset;
        let mut index = 0;
        let mut skip = 0;
        while index < pieces.len() {
            let iov: Vec<libc::iovec> = pieces[index..]
                .iter()
                .take(MAX_IOV)
                .enumerate()
                .map(|(i, p)| {
                    let p = if i == 0 { &p[skip..] } else { p };
                    libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }
                })
                .collect();
            let off = libc::off_t::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: a valid descriptor and buffers that outlive the call;
            // the range is above `head`, so no view reads it, and the caller
            // holds the state lock, which keeps other writers out.
            let n = unsafe { libc::pwritev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int, off) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // What was written above `head` is simply written over by
                // the next append.
                return Err(e);
            }
            if n == 0 {
                let empty = pieces[index..].iter().enumerate().all(|(i, p)| p.len() == if i == 0 { skip } else { 0 });
                if empty {
                    return Ok(());
                }
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            let mut n = n as usize;
            at += n;
            // Step over what was written.
            while index < pieces.len() && n >= pieces[index].len() - skip {
                n -= pieces[index].len() - skip;
                index += 1;
                skip = 0;
            }
            skip += n;
        }
        Ok(())
    }

    /// A further view of `[start, start + len)`, which live views cover.
    fn view(self: &Arc<Self>, start: usize, len: usize) -> Option<Bytes> {
        let end = start.checked_add(len)?;
        {
            let mut s = self.state.lock();
            if !s.readable(start, end) {
                return None;
            }
            s.pin(start, end);
        }
        Some(Bytes::from_owner(View { log: self.clone(), start, len }))
    }

    fn unpin(&self, start: usize, end: usize) {
        let mut s = self.state.lock();
        match s.pins.get_mut(&(start, end)) {
            Some(n) if *n > 1 => {
                *n -= 1;
                return;
            }
            Some(_) => {
                s.pins.remove(&(start, end));
            }
            None => return,
        }
        let unit = self.unit;
        // Nothing below the oldest live view is read again.
        let frontier = s.pins.keys().next().map_or(s.head, |&(a, _)| a);
        let to = frontier / unit * unit;
        if to >= s.punched + PUNCH_STEP.max(unit) {
            let from = s.punched;
            if self.punch(from, to) {
                // Holes inside what the frontier passed were counted already.
                let passed: Vec<(usize, usize)> = s.holes.range(..to).map(|(&a, &b)| (a, b)).collect();
                let mut freed = to - from;
                for (a, b) in passed {
                    s.holes.remove(&a);
                    freed -= b.min(to) - a;
                    if b > to {
                        s.holes.insert(to, b);
                    }
                }
                s.punched = to;
                HELD.fetch_sub(freed as u64, Ordering::Relaxed);
            }
        }
        // An old view (a reader that stopped) must not keep everything
        // written after it: give back the free gaps between live views.
        if s.head - s.punched > GAP_SCAN_LAG && s.head - s.scanned_at > GAP_SCAN_LAG / 8 {
            s.scanned_at = s.head;
            let mut gaps = Vec::new();
            let mut covered = s.punched;
            for &(a, b) in s.pins.keys() {
                if a > covered {
                    gaps.push((covered, a));
                }
                covered = covered.max(b);
            }
            gaps.push((covered, s.head));
            for (a, b) in gaps {
                let (a, b) = (a.div_ceil(unit) * unit, b / unit * unit);
                if b < a + PUNCH_STEP.max(unit) {
                    continue;
                }
                // Punching a hole again costs nothing; only what was not a
                // hole yet counts as given back. Overlapping holes merge.
                let overlapping: Vec<(usize, usize)> =
                    s.holes.iter().filter(|(&x, &y)| x < b && a < y).map(|(&x, &y)| (x, y)).collect();
                if overlapping.iter().any(|&(x, y)| x <= a && b <= y) || !self.punch(a, b) {
                    continue;
                }
                let (mut lo, mut hi, mut known) = (a, b, 0);
                for (x, y) in overlapping {
                    s.holes.remove(&x);
                    known += y.min(b) - x.max(a);
                    (lo, hi) = (lo.min(x), hi.max(y));
                }
                s.holes.insert(lo, hi);
                HELD.fetch_sub((b - a - known) as u64, Ordering::Relaxed);
            }
        }
    }

    /// Gives `[from, to)` back to the kernel.
    fn punch(&self, from: usize, to: usize) -> bool {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to - from)) else { return false };
        // SAFETY: a valid descriptor; whole pages of the largest size in
        // use that no live view covers.
        let r = unsafe {
            libc::fallocate(self.fd.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off, len)
        };
        r == 0
    }
}

/// Whether `fd` is a file on a file system that lives in memory (tmpfs):
/// its pages cannot be written out anywhere.
fn in_memory_fs(fd: &OwnedFd) -> bool {
    // SAFETY: a valid descriptor and a buffer of the right type.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } == 0;
    // `f_type` and the magic constants have different integer types on
    // different targets (and the same on x86-64): compare as i64.
    #[allow(clippy::unnecessary_cast)]
    let same = ok && (st.f_type as i64 == libc::TMPFS_MAGIC as i64 || st.f_type as i64 == 0x8584_58f6_i64);
    same
}

/// A fresh anonymous in-memory file.
fn memfd(name: &str) -> io::Result<OwnedFd> {
    let cname = CString::new(format!("tidecast:{name}")).unwrap_or_default();
    // SAFETY: a valid C string and flags; the result is checked.
    let raw = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A fresh unlinked file in `dir`, gone from the file system when closed,
/// on a file system that can punch holes (checked: a log that could not
/// give space back would grow to its capacity).
fn open_unlinked(dir: &Path, cap: usize) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let cdir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string and flags; the result is checked.
    let raw = unsafe { libc::open(cdir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC, 0o600) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = libc::off_t::try_from(cap.min(file_punch_unit())).unwrap_or(4096);
    // SAFETY: a valid descriptor; the file is empty, so nothing is lost.
    let r = unsafe { libc::fallocate(fd.as_raw_fd(), libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl Drop for Log {
    fn drop(&mut self) {
        registry::remove(self.base.as_ptr() as usize);
        // SAFETY: the mapping made in `create`; no view is left (each holds
        // the log alive) and the table no longer names it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.cap) };
        let s = self.state.get_mut();
        let holes = s.hole_bytes();
        HELD.fetch_sub((s.top() - s.punched - holes) as u64, Ordering::Relaxed);
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
        self.log.unpin(self.start, self.start + self.len);
    }
}

/// Set once `memfd` turned out not to exist here (or to be forbidden):
/// every writer copies to the heap from then on.
static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// After a failure that may pass (out of descriptors or memory), a writer
/// copies this many chunks to the heap before it tries a file again.
const RETRY_AFTER: u32 = 256;

/// One rendition's packaged bytes: each write is copied once into the
/// current log and handed back as a `Bytes` viewing it. Consecutive writes
/// are contiguous, so [`join`] can view a run of them as one.
pub struct ChunkWriter {
    name: String,
    /// Where its files go: `None` for memory.
    dir: Option<PathBuf>,
    log: Option<Arc<Log>>,
    /// Heap writes left before the next try at a file.
    backoff: u32,
}

impl fmt::Debug for ChunkWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkWriter").field("name", &self.name).field("in_file", &self.log.is_some()).finish()
    }
}

impl ChunkWriter {
    /// A writer whose files are named after `name` (it shows in
    /// `/proc/PID/fd`) and kept where [`set_directory`] said; no file is
    /// made before the first write.
    pub fn new(name: &str) -> ChunkWriter {
        ChunkWriter::in_directory(name, DIRECTORY.read().clone())
    }

    /// A writer whose files are kept in `dir` (`None`: in memory).
    pub fn in_directory(name: &str, dir: Option<PathBuf>) -> ChunkWriter {
        ChunkWriter { name: name.to_owned(), dir, log: None, backoff: 0 }
    }

    /// Writes the concatenation of `pieces` as one chunk.
    pub fn write(&mut self, pieces: &[&[u8]]) -> Bytes {
        if let Some(log) = &self.log {
            match log.append(pieces) {
                Ok(Some(b)) => return b,
                Ok(None) => self.log = None, // full: a fresh file below
                Err(e) => self.failed(&e),
            }
        }
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        if self.log.is_none() && self.backoff == 0 && !UNAVAILABLE.load(Ordering::Relaxed) && total <= CAPACITY {
            match Log::create(&self.name, self.dir.as_deref(), CAPACITY).and_then(|log| Ok((log.append(pieces)?, log)))
            {
                Ok((b, log)) => {
                    self.log = Some(log);
                    if let Some(b) = b {
                        return b;
                    }
                }
                Err(e) => self.failed(&e),
            }
        }
        self.backoff = self.backoff.saturating_sub(1);
        FALLBACKS.fetch_add(1, Ordering::Relaxed);
        let mut v = Vec::with_capacity(total);
        for p in pieces {
            v.extend_from_slice(p);
        }
        Bytes::from(v)
    }

    /// A file could not be made or written: for good where the system has
    /// no `memfd`, for a while where it ran out of something.
    fn failed(&mut self, e: &io::Error) {
        self.log = None;
        let permanent = matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM | libc::EACCES | libc::EINVAL));
        if permanent {
            if !UNAVAILABLE.swap(true, Ordering::Relaxed) {
                warn!(error = %e, "no memory-backed files for packaged media; copying to the heap (no sendfile)");
            }
        } else {
            warn!(rendition = %self.name, error = %e, "packaged media falls back to the heap for a while");
            self.backoff = RETRY_AFTER;
        }
    }
}

/// Writes the pages that lie wholly inside `b` out to their file and drops
/// them from memory (the page cache and this process's mapping); whoever
/// reads them later (a viewer who rewinds, a clip) reads them back from the
/// file. Only for writers whose files are on a file system
/// ([`ChunkWriter::in_directory`]): memory-backed files have nowhere to put
/// them. Returns the bytes dropped. Blocking: it waits for the write.
pub fn evict(b: &Bytes) -> usize {
    let Some((log, offset)) = registry::log_of(b) else { return 0 };
    if !log.on_disk {
        return 0;
    }
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096).max(4096);
    let (from, to) = (offset.div_ceil(page) * page, (offset + b.len()) / page * page);
    if to <= from {
        return 0;
    }
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(to - from)) else { return 0 };
    let fd = log.fd.as_raw_fd();
    let how = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a valid descriptor and a range inside the file; the view `b`
    // keeps the range from being punched meanwhile.
    if unsafe { libc::sync_file_range(fd, off, len, how) } != 0 {
        return 0;
    }
    // SAFETY: whole pages inside this log's mapping. It is a shared
    // mapping of a file, so dropping its pages loses nothing: a later read
    // faults them back in from the file.
    unsafe { libc::madvise(log.base.as_ptr().add(from).cast(), to - from, libc::MADV_DONTNEED) };
    // SAFETY: a valid descriptor; advice only (the pages are clean now).
    unsafe { libc::posix_fadvise(fd, off, len, libc::POSIX_FADV_DONTNEED) };
    EVICTED.fetch_add((to - from) as u64, Ordering::Relaxed);
    to - from
}

/// Whether `b` lies in a log kept in a file on a disk, whose pages
/// [`evict`] can write out and drop.
pub fn on_disk(b: &Bytes) -> bool {
    registry::log_of(b).is_some_and(|(log, _)| log.on_disk)
}

/// Checks that `dir` can hold logs on a disk: unlinked files that give
/// space back (holes), on a file system that is not memory. The error says
/// why not.
pub fn check_directory(dir: &Path) -> io::Result<()> {
    let fd = open_unlinked(dir, file_punch_unit())?;
    if in_memory_fs(&fd) {
        return Err(io::Error::other("the file system is in memory (tmpfs): pages there cannot leave memory"));
    }
    Ok(())
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
    fn many_pieces_and_empty_ones_are_written_in_order() {
        let mut w = ChunkWriter::new("test-pieces");
        // More pieces than one `pwritev` takes, some of them empty.
        let pieces: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; (i % 3) as usize]).collect();
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let chunk = w.write(&refs);
        assert_eq!(&chunk[..], &pieces.concat()[..]);
        assert!(w.write(&[b"", b""]).is_empty());
        assert_eq!(&w.write(&[b"next"])[..], b"next");
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
        assert!(
            punched >= head - 9 * chunk.len() - PUNCH_STEP.max(punch_unit()) - punch_unit(),
            "punched {punched} of {head}"
        );
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

    fn fd_target(log: &Log) -> String {
        std::fs::read_link(format!("/proc/self/fd/{}", log.fd.as_raw_fd()))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    #[test]
    fn files_in_a_directory_are_unlinked_and_give_space_back_in_whole_folios() {
        let dir = std::env::temp_dir().join(format!("memfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut w = ChunkWriter::in_directory("test-dir", Some(dir.clone()));
        let chunk = vec![5u8; 256 * 1024];
        let mut kept = std::collections::VecDeque::new();
        for _ in 0..64 {
            kept.push_back(w.write(&[&chunk]));
            if kept.len() > 4 {
                kept.pop_front();
            }
        }
        let log = w.log.clone().expect("a log");
        let target = fd_target(&log);
        assert!(target.starts_with(&*dir.to_string_lossy()) && target.ends_with("(deleted)"), "{target}");
        assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "nothing is left in the directory");
        assert_eq!(log.unit, file_punch_unit());
        let (head, punched) = {
            let s = log.state.lock();
            (s.head, s.punched)
        };
        assert_eq!(punched % log.unit, 0);
        assert!(punched + 5 * chunk.len() + 2 * log.unit >= head, "punched {punched} of {head}");
        assert!(kept.iter().all(|c| c.iter().all(|&b| b == 5)), "what is still viewed is intact");
        drop((kept, w, log));
        let _ = std::fs::remove_dir(&dir);
    }

    /// Pages of `b` resident in memory.
    fn resident_pages(b: &[u8]) -> usize {
        let page = 4096;
        let start = b.as_ptr() as usize / page * page;
        let end = (b.as_ptr() as usize + b.len()).div_ceil(page) * page;
        let mut v = vec![0u8; (end - start) / page];
        // SAFETY: a range inside a live mapping, a vector of one byte per page.
        let r = unsafe { libc::mincore(start as *mut libc::c_void, end - start, v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        v.iter().filter(|&&x| x & 1 == 1).count()
    }

    #[test]
    fn evicted_pages_leave_memory_and_read_back_from_the_file() {
        // The build's own folder: a file system on a disk, as a data
        // directory is (the system's temp dir may be memory).
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target").join(format!("evict-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a test dir");
        let mut w = ChunkWriter::in_directory("test-evict", Some(dir.clone()));
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let chunk = w.write(&[&data]);
        let log = w.log.clone().expect("a log");
        assert!(resident_pages(&chunk) > 0, "just written: in the page cache");
        let dropped = evict(&chunk);
        if log.on_disk {
            assert!(dropped >= data.len() - 2 * 4096, "dropped {dropped}");
            assert!(resident_pages(&chunk) < 16, "out of memory: {} pages left", resident_pages(&chunk));
        } else {
            assert_eq!(dropped, 0, "nothing can leave a file system in memory");
        }
        assert_eq!(&chunk[..], &data[..], "read back whole");
        let heap = Bytes::from(vec![1u8; 1 << 20]);
        assert_eq!(evict(&heap), 0, "not in a log");
        let mut mem = ChunkWriter::in_directory("test-evict-mem", None);
        assert_eq!(evict(&mem.write(&[&data])), 0, "a memory file keeps its pages");
        drop((chunk, w, log));
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn a_file_on_disk_is_filled_ahead_in_whole_units_and_reads_back_what_was_written() {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target").join(format!("fill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a test dir");
        let mut w = ChunkWriter::in_directory("test-fill", Some(dir.clone()));
        let chunks: Vec<Bytes> =
            (0..300u32).map(|i| w.write(&[&vec![(i % 251) as u8 + 1; 3000 + i as usize]])).collect();
        let log = w.log.clone().expect("a log");
        let (head, filled) = {
            let s = log.state.lock();
            (s.head, s.filled)
        };
        if log.on_disk {
            assert!(filled >= head && filled - head < FILL_UNIT, "filled {filled}, head {head}");
            assert!(filled % FILL_UNIT == 0 || filled == log.cap, "filled to a whole unit: {filled}");
            // SAFETY: the log's own mapping, whose capacity is above `filled`.
            let ahead = unsafe { std::slice::from_raw_parts(log.base.as_ptr().add(head), filled - head) };
            assert!(resident_pages(ahead) * 4096 + 4096 >= ahead.len(), "the page cache holds the filled range");
        } else {
            assert_eq!(filled, 0, "a file in memory is not filled ahead");
        }
        for (i, c) in chunks.iter().enumerate() {
            assert!(c.len() == 3000 + i && c.iter().all(|&b| b == (i % 251) as u8 + 1), "chunk {i} reads back");
        }
        drop((chunks, w, log));
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn a_directory_that_cannot_hold_files_falls_back_to_memory() {
        let mut w = ChunkWriter::in_directory("test-nodir", Some(PathBuf::from("/nonexistent/tidecast-memfile")));
        assert_eq!(&w.write(&[b"still written"])[..], b"still written");
        let log = w.log.clone().expect("a log, in memory");
        assert!(fd_target(&log).starts_with("/memfd:"), "{}", fd_target(&log));
    }

    #[test]
    fn a_view_held_on_to_keeps_only_its_own_range() {
        let mut w = ChunkWriter::new("test-stalled");
        let chunk = vec![3u8; 256 * 1024];
        // A reader that stopped: the first chunk stays viewed.
        let stalled = w.write(&[&chunk]);
        for _ in 0..(2 * GAP_SCAN_LAG / chunk.len()) {
            w.write(&[&chunk]);
        }
        let log = w.log.clone().expect("a log");
        let (head, punched, holes) = {
            let s = log.state.lock();
            (s.head, s.punched, s.hole_bytes())
        };
        assert!(punched < chunk.len(), "the prefix cannot move past the stalled view");
        assert!(head - punched - holes < GAP_SCAN_LAG / 4, "the gaps after it were given back: {holes} of {head}");
        assert!(stalled.iter().all(|&b| b == 3), "the stalled view is intact");
        // A view of given-back memory is refused.
        assert!(log.view(head / 2, 16).is_none());
    }
}
