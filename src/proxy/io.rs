//! A client stream wrapper that counts bytes each way and notes when traffic last moved,
//! which is all the `idle` timeout and the `bytes_total` metric need.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// What one connection did, shared between its stream, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    pub read: AtomicU64,
    pub written: AtomicU64,
    /// HTTP requests whose response is not finished yet (idle only counts between them).
    pub in_progress: AtomicUsize,
    /// When the first byte of a request head arrived with no request in progress, in ms
    /// since `start` plus one (0: none pending). `header_read` runs from here.
    head_since: AtomicU64,
    /// The client speaks HTTP/2 (its first bytes were the preface). Its frames between
    /// requests (WINDOW_UPDATE, PING) are not request heads: `header_read` only bounds the
    /// connection's start there.
    h2: AtomicBool,
    /// Requests begun on this connection.
    begun: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            head_since: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            begun: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Everything that counts as traffic: bytes each way and requests begun. The watchdogs
    /// compare it between looks instead of reading the clock on every read and write.
    fn moved(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
            + self.written.load(Ordering::Relaxed)
            + self.begun.load(Ordering::Relaxed)
    }

    /// Bytes came in: with no request in progress they begin a request head.
    fn arrived(&self) {
        let h2_running = self.h2.load(Ordering::Relaxed) && self.begun.load(Ordering::Relaxed) > 0;
        if !h2_running
            && self.in_progress.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// Resolves once nothing moved for `idle` while no request was in progress.
    pub async fn idle(&self, idle: Duration) {
        match self.watch(idle, Duration::MAX).await {
            Expired::Idle | Expired::HeaderRead => {}
        }
    }

    /// One watchdog for both timeouts, polled as one future. `idle`: nothing moved while no
    /// request was in progress. `header_read`: a request head has been arriving for that long
    /// without becoming a request (slowloris: a trickle does not extend it); unlike hyper's
    /// own timer it does not run while a keep-alive connection is merely idle. It looks every
    /// quarter of the shorter one, so either fires within 1.25 x its time, for a timer per
    /// connection rather than a clock read per byte moved.
    pub async fn watch(&self, idle: Duration, header_read: Duration) -> Expired {
        let step = (idle.min(header_read) / 4).max(Duration::from_millis(1));
        let mut seen = self.moved();
        let mut quiet_since = Instant::now();
        loop {
            tokio::time::sleep(step).await;
            let since = self.head_since.load(Ordering::Relaxed);
            if since != 0
                && Duration::from_millis(self.now_ms().saturating_sub(since - 1)) >= header_read
            {
                return Expired::HeaderRead;
            }
            let now = self.moved();
            if now != seen || self.in_progress.load(Ordering::Relaxed) > 0 {
                seen = now;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= idle {
                return Expired::Idle;
            }
        }
    }

    /// Marks one request in progress until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        InProgress(Arc::clone(self))
    }
}

/// Which timeout `Activity::watch` saw expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    HeaderRead,
}

/// One request in progress on a connection.
#[derive(Debug)]
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records its traffic in an `Activity`.
#[derive(Debug)]
pub struct Metered<S> {
    pub io: S,
    pub activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            if self.activity.read.load(Ordering::Relaxed) == 0
                && buf
                    .filled()
                    .get(before..)
                    .is_some_and(|b| b.starts_with(b"PRI * HTTP/2"))
            {
                self.activity.h2.store(true, Ordering::Relaxed);
            }
            self.activity.arrived();
            self.activity.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.activity.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.activity.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// `token.cancelled()` that is cheap to poll again. A waiting `Notified` takes the
    /// token's waiter-list lock on every poll, and a connection task is polled several times
    /// per request, each time polling the listener-wide tokens it selects on: this polls the
    /// inner future only when the task's waker changed, otherwise only checks the flag.
    pub struct Cancelled<'a> {
        token: &'a CancellationToken,
        #[pin]
        inner: WaitForCancellationFuture<'a>,
        waker: Option<Waker>,
    }
}

/// See `Cancelled`.
pub fn cancelled(token: &CancellationToken) -> Cancelled<'_> {
    Cancelled {
        token,
        inner: token.cancelled(),
        waker: None,
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Registered with this very waker: cancelling wakes it, and the flag above
            // answers then.
            return Poll::Pending;
        }
        let r = this.inner.poll(cx);
        if r.is_pending() {
            *this.waker = Some(cx.waker().clone());
        }
        r
    }
}
