//! Small gathered writes sent as one: hyper hands a head and a small body as separate slices,
//! and one `send(2)` of a copy costs the kernel less than a `writev(2)` of the pieces.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Gathered writes up to this size are copied into one buffer and sent with one `send(2)`.
const GATHER_MAX: usize = 4096;

/// Writes `bufs` (hyper hands a response head and body, or a request head, as separate
/// slices) to `io`. Small ones are copied together and written with one plain write: on a
/// socket that is `send(2)`, which costs the kernel less per call than `writev(2)`, whose
/// iovec array is copied in and checked first; a few hundred bytes copied here cost less
/// than that. Larger writes stay vectored, so no body is copied.
pub fn write_gathered<S: AsyncWrite + ?Sized>(
    io: Pin<&mut S>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    let mut parts = bufs.iter().filter(|b| !b.is_empty());
    let (first, second) = (parts.next(), parts.next());
    let Some(first) = first else {
        return io.poll_write(cx, &[]);
    };
    if second.is_none() {
        return io.poll_write(cx, first);
    }
    let total = bufs.iter().map(|b| b.len()).sum::<usize>();
    if total > GATHER_MAX {
        return io.poll_write_vectored(cx, bufs);
    }
    GATHER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut one) => {
            one.clear();
            for b in bufs {
                one.extend_from_slice(b);
            }
            io.poll_write(cx, &one)
        }
        // Taken only by a write nested inside another's: never a panic on the data path.
        Err(_) => io.poll_write_vectored(cx, bufs),
    })
}

thread_local! {
    /// The buffer `write_gathered` copies into: one per thread, reused, never zeroed.
    static GATHER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(GATHER_MAX));
}

/// A backend stream whose small gathered writes go out as one `send(2)` (see
/// `write_gathered`).
#[derive(Debug)]
pub struct Gathered<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for Gathered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gathered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        write_gathered(Pin::new(&mut self.0), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
