//! Packaged media kept in memory-backed files, so that sockets can send it
//! with `sendfile(2)` instead of copying it.
//!
//! A rendition's CMAF chunks are written once, by its packager, into an
//! append-only [`ChunkWriter`]: an anonymous in-memory file (`memfd`) mapped
//! into the process. Each write comes back as a [`bytes::Bytes`] that views
//! the mapping, so every consumer (LL-HLS, LL-DASH, recorders) reads the
//! packaged bytes as before, without a second copy. Because one rendition's
//! chunks follow each other in its file, a whole part or segment is one
//! contiguous range: [`join`] views it as a single `Bytes` without copying.
//!
//! [`SendfileStream`] wraps a TCP connection. When a write hands it a slice
//! that lies in one of these mappings (it asks a process-wide table of
//! them), it sends that range with `sendfile`: the kernel attaches the
//! file's pages to the socket buffers and the body is never copied in
//! user space or into the socket. Everything else is written as usual.
//!
//! Memory is given back as it stops being used: a range is freed (its pages
//! punched out of the file) once no `Bytes` views it. Normally that is the
//! oldest data, as a window slides; a view held on to (a client that stopped
//! reading) keeps only its own range, and the free ranges after it are
//! found and given back too. Holes are punched only in whole pages of the
//! largest size the kernel may back shared memory with, so the pages a
//! socket still has queued stay intact (the kernel holds its own reference
//! to them), and a freed range is never written again.
//!
//! [`set_directory`] moves the files onto a file system instead (unlinked
//! files in a directory): the page cache then holds the bytes, and the
//! kernel may write them out under memory pressure.
//!
//! Where `memfd_create` is unavailable the writer falls back to ordinary
//! heap copies and sockets fall back to ordinary writes.

#![warn(missing_docs)]

mod log;
mod registry;
mod socket;

pub use log::{check_directory, evict, join, on_disk, set_directory, stats, ChunkWriter, Stats};
pub use socket::SendfileStream;
