//! A TCP stream that sends mapped log ranges with `sendfile`.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::registry;

/// Bytes sent with `sendfile`, for [`stats`](crate::stats).
pub(crate) static SENT: AtomicU64 = AtomicU64::new(0);

/// Slices up to this size are copied with the rest of the write: for a few
/// kilobytes a copy costs less than another system call. HTTP/2 carves a
/// body into DATA frames of 16 KiB by default, each behind its own frame
/// header; those are written together with one `writev` instead of a
/// `sendfile` each.
const MAX_COPIED: usize = 16 * 1024;

/// A TCP connection whose writes send slices of mapped logs with
/// `sendfile` and everything else with ordinary (vectored) writes. An HTTP
/// server writing a response head and a segment body thus copies only the
/// head; the head goes out with `MSG_MORE`, so it shares a packet with the
/// start of the body.
#[derive(Debug)]
pub struct SendfileStream {
    io: TcpStream,
}

impl SendfileStream {
    /// Wraps an accepted connection.
    pub fn new(io: TcpStream) -> SendfileStream {
        SendfileStream { io }
    }

    /// The connection.
    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }

    /// Runs `op` when the socket is writable, until it no longer blocks.
    fn write_with(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(RawFd) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let fd = self.io.as_raw_fd();
        loop {
            ready!(self.io.poll_write_ready(cx))?;
            match self.io.try_io(Interest::WRITABLE, || op(fd)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

fn mapped(slice: &[u8]) -> Option<(RawFd, u64)> {
    if slice.len() <= MAX_COPIED {
        return None;
    }
    registry::file_of(slice)
}

/// `sendmsg` of `bufs` with `MSG_MORE`: more follows at once.
fn send_more(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec on Unix.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    loop {
        // SAFETY: `msg` points at `bufs`, alive for the call.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `sendfile` of `len` bytes of `file` from `offset`.
fn send_file(sock: RawFd, file: RawFd, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: valid descriptors; `off` is a local the call may advance.
        let n = unsafe { libc::sendfile(sock, file, &mut off, len) };
        if n >= 0 {
            SENT.fetch_add(n as u64, Ordering::Relaxed);
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some((k, (file, offset))) = bufs.iter().enumerate().find_map(|(i, b)| Some((i, mapped(b)?))) else {
            return Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        };
        // What comes before the mapped slice (a response head, a chunk
        // header) is copied, flagged so that it waits for the body.
        let mut written = 0;
        if k > 0 {
            let want: usize = bufs[..k].iter().map(|b| b.len()).sum();
            written = ready!(this.write_with(cx, |fd| send_more(fd, &bufs[..k])))?;
            if written < want {
                return Poll::Ready(Ok(written));
            }
        }
        // The mapped slice, and those after it that continue it in the file.
        let mut len = bufs[k].len();
        for b in &bufs[k + 1..] {
            match mapped(b) {
                Some((f, o)) if f == file && o == offset + len as u64 => len += b.len(),
                _ => break,
            }
        }
        match this.write_with(cx, |fd| send_file(fd, file, offset, len)) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(written + n)),
            Poll::Ready(Err(_)) | Poll::Pending if written > 0 => Poll::Ready(Ok(written)),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkWriter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn mapped_slices_go_out_with_sendfile_and_arrive_intact() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut w = ChunkWriter::new("socket-test");
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let a = w.write(&[&body[..100_000]]);
        let b = w.write(&[&body[100_000..]]);
        let before = SENT.load(Ordering::Relaxed);
        let send = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let mut s = SendfileStream::new(s);
            let head = b"HEAD\r\n".to_vec();
            // Vectored, as hyper writes: a heap head, then two mapped chunks.
            let mut bufs: Vec<&[u8]> = vec![&head, &a, &b];
            while !bufs.is_empty() {
                let iov: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
                let mut n = s.write_vectored(&iov).await.expect("write");
                while n > 0 {
                    let take = n.min(bufs[0].len());
                    bufs[0] = &bufs[0][take..];
                    n -= take;
                    if bufs[0].is_empty() {
                        bufs.remove(0);
                    }
                }
            }
            s.shutdown().await.expect("shutdown");
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.expect("read");
        send.await.expect("sender");
        assert_eq!(&got[..6], b"HEAD\r\n");
        assert!(got[6..] == body[..], "the body arrives byte for byte");
        assert!(SENT.load(Ordering::Relaxed) - before >= body.len() as u64, "the body went out with sendfile");
    }
}
