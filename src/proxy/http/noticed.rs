//! The first sign of life on an HTTP/2 backend connection, which tells whether a broken
//! connection ever served a request.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::upstream::multiplex::Heard;

/// A backend stream that notes the first bytes the backend sends: an HTTP/2 server's first
/// frame is its SETTINGS (RFC 9113 §3.4), so a connection that broke before any byte came
/// was never served by HTTP/2, and no request on it was processed.
pub(super) struct Noticed<S> {
    io: S,
    heard: Heard,
}

impl<S> Noticed<S> {
    pub(super) fn new(io: S, heard: Heard) -> Self {
        Noticed { io, heard }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Noticed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before && !self.heard.get() {
            self.heard.set();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Noticed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn only_a_byte_from_the_backend_counts_as_heard() {
        let (near, mut far) = tokio::io::duplex(64);
        let heard = Heard::default();
        let mut io = Noticed::new(near, heard.clone());
        io.write_all(b"PRI * HTTP/2.0").await.expect("write");
        assert!(!heard.get(), "our own writes are not the backend's");
        far.write_all(b"x").await.expect("write");
        let mut got = [0u8; 1];
        io.read_exact(&mut got).await.expect("read");
        assert!(heard.get());
    }

    #[tokio::test]
    async fn a_close_without_a_byte_is_not_heard() {
        let (near, far) = tokio::io::duplex(64);
        drop(far);
        let heard = Heard::default();
        let mut io = Noticed::new(near, heard.clone());
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.expect("eof");
        assert!(!heard.get());
    }
}
