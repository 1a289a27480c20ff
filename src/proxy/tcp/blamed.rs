//! The backend side of a tcp session, which tells a backend's failure from a client's.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The backend side of a session, noting whether an error came from it (not from the client).
pub(super) struct Blamed<'a, S> {
    io: &'a mut S,
    pub(super) failed: bool,
}

impl<'a, S> Blamed<'a, S> {
    pub(super) fn new(io: &'a mut S) -> Self {
        Blamed { io, failed: false }
    }

    fn note<T>(&mut self, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(Err(_)) = &r {
            self.failed = true;
        }
        r
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Blamed<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut *self.io).poll_read(cx, buf);
        self.note(r)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Blamed<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut *self.io).poll_write(cx, buf);
        self.note(r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut *self.io).poll_flush(cx);
        self.note(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut *self.io).poll_shutdown(cx);
        self.note(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn traffic_blames_nobody() {
        let (mut near, mut far) = tokio::io::duplex(64);
        let mut b = Blamed::new(&mut near);
        b.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.expect("read");
        far.write_all(b"pong").await.expect("write");
        b.read_exact(&mut got).await.expect("read");
        assert!(!b.failed);
    }

    #[tokio::test]
    async fn a_write_to_a_gone_backend_is_its_failure() {
        let (mut near, far) = tokio::io::duplex(64);
        drop(far);
        let mut b = Blamed::new(&mut near);
        assert!(b.write_all(b"ping").await.is_err());
        assert!(b.failed);
    }
}
