//! Layer 4: one client connection becomes one backend session; bytes are copied both ways
//! until both sides close, a half-close is passed on, and `idle` ends a silent session.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::DialError;
use crate::upstream::Upstream;

/// Buffer per direction: large enough that bulk transfers make few syscalls, small enough
/// that 10,000 open sessions stay within a few hundred MiB.
const BUF_SIZE: usize = 32 * 1024;

/// How a session ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Closed,
    Idle,
    Error,
    NoBackend,
}

/// What one session did.
#[derive(Debug)]
pub struct Session {
    pub backend: Option<std::sync::Arc<str>>,
    pub rx: u64,
    pub tx: u64,
    pub end: End,
}

/// Proxies one client connection to a backend of `upstream`.
pub async fn serve(mut client: TcpStream, upstream: &Upstream, idle: Duration) -> Session {
    let (mut backend, lease) = match super::dial(upstream).await {
        Ok(ok) => ok,
        Err(e) => {
            if let DialError::NoHealthy = e {
                tracing::debug!(upstream = %upstream.name, "no healthy backend, closing client");
            }
            return Session {
                backend: None,
                rx: 0,
                tx: 0,
                end: End::NoBackend,
            };
        }
    };
    let _ = client.set_nodelay(true);
    let activity = Activity::new();
    let mut c = Watched {
        io: &mut client,
        activity: &activity,
        read: 0,
        written: 0,
    };
    let mut b = Watched {
        io: &mut backend,
        activity: &activity,
        read: 0,
        written: 0,
    };
    let end = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, BUF_SIZE, BUF_SIZE) => match r {
            Ok(_) => End::Closed,
            Err(e) => {
                if super::is_disconnect(&e) && b.read == 0 {
                    upstream.record_failure(lease.index, "reset");
                }
                End::Error
            }
        },
        () = activity.idle(idle) => End::Idle,
    };
    if end == End::Closed {
        upstream.record_success(lease.index);
    }
    Session {
        backend: Some(std::sync::Arc::clone(&lease.backend.addr)),
        rx: c.read,
        tx: c.written,
        end,
    }
}

/// The time of the last byte moved in either direction, in ms since the session started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte moved for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that notes activity and counts bytes each way.
struct Watched<'a, S> {
    io: &'a mut S,
    activity: &'a Activity,
    read: u64,
    written: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.touch();
            self.read += n as u64;
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}
