//! The process-wide table of mapped logs: which file a pointer's memory
//! belongs to, for sockets (to `sendfile` it) and for [`join`](crate::join).

use std::os::fd::RawFd;
use std::sync::{Arc, Weak};

use parking_lot::RwLock;

use crate::log::Log;

struct Entry {
    start: usize,
    len: usize,
    fd: RawFd,
    log: Weak<Log>,
}

/// Sorted by `start`; mappings never overlap.
static MAPPINGS: RwLock<Vec<Entry>> = parking_lot::const_rwlock(Vec::new());

/// Where `[ptr, ptr + len)` lies, if it lies wholly inside one mapping.
fn position(map: &[Entry], ptr: usize, len: usize) -> Option<usize> {
    let i = map.partition_point(|e| e.start <= ptr).checked_sub(1)?;
    let e = &map[i];
    let end = ptr.checked_add(len)?;
    (end <= e.start + e.len).then_some(i)
}

pub(crate) fn insert(start: usize, len: usize, fd: RawFd, log: Weak<Log>) {
    let mut map = MAPPINGS.write();
    let at = map.partition_point(|e| e.start < start);
    map.insert(at, Entry { start, len, fd, log });
}

/// Removes the mapping at `start`. Called before it is unmapped and its
/// file closed, so no lookup can return a closed descriptor.
pub(crate) fn remove(start: usize) {
    MAPPINGS.write().retain(|e| e.start != start);
}

/// The file and offset of `slice`, if it lies in a mapped log. The
/// descriptor stays open as long as something holds the `Bytes` the slice
/// borrows from.
pub(crate) fn file_of(slice: &[u8]) -> Option<(RawFd, u64)> {
    let ptr = slice.as_ptr() as usize;
    let map = MAPPINGS.read();
    let e = &map[position(&map, ptr, slice.len())?];
    Some((e.fd, (ptr - e.start) as u64))
}

/// The log `slice` lies in, and its offset there.
pub(crate) fn log_of(slice: &[u8]) -> Option<(Arc<Log>, usize)> {
    let ptr = slice.as_ptr() as usize;
    let map = MAPPINGS.read();
    let e = &map[position(&map, ptr, slice.len())?];
    Some((e.log.upgrade()?, ptr - e.start))
}
