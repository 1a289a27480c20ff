//! A client stream wrapper that counts bytes each way and notes when traffic last moved,
//! which is all the `idle` timeout and the `bytes_total` metric need.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::task::AtomicWaker;
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
    /// A bodiless HTTP/1 request is in progress: reads wait until its response is done.
    quiet: AtomicBool,
    /// The reader waiting for `quiet` to end.
    parked: AtomicWaker,
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
            quiet: AtomicBool::new(false),
            parked: AtomicWaker::new(),
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
    ///
    /// Over HTTP/1 it starts only once the connection first waits on its client with no
    /// request in progress (neither timeout runs while one is): a connection whose request
    /// arrived with it and that closes after the response costs no timer at all. That relies
    /// on the caller polling it after the connection itself, each time (`biased` select), as
    /// only the connection's own poll moves `in_progress` there.
    pub async fn watch(&self, idle: Duration, header_read: Duration) -> Expired {
        std::future::poll_fn(|_| {
            if self.in_progress.load(Ordering::Relaxed) == 0 || self.h2.load(Ordering::Relaxed) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
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

    /// The client speaks HTTP/2, as the connection's first bytes showed.
    pub fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
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

impl InProgress {
    /// The connection's first request.
    pub fn is_first(&self) -> bool {
        self.0.begun.load(Ordering::Relaxed) == 1
    }

    /// Pauses the connection's reads until this request's response is done. For a bodiless
    /// HTTP/1 request nothing the client sends can matter before then: a pipelined request
    /// waits its turn anyway, and a client that closed is noticed when the response is
    /// written (HAProxy without `abortonclose` does the same). hyper looks for the client's
    /// close while the backend answers, which would cost a read syscall per request, and on
    /// a freshly accepted socket its registration with the event loop.
    pub fn quiet(&self) {
        self.0.quiet.store(true, Ordering::Relaxed);
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
        if self.0.quiet.swap(false, Ordering::AcqRel) {
            self.0.parked.wake();
        }
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
        if self.activity.quiet.load(Ordering::Acquire) {
            self.activity.parked.register(cx.waker());
            // The response may have finished between the two looks.
            if self.activity.quiet.load(Ordering::Acquire) {
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
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
        let r = write_gathered(Pin::new(&mut self.io), cx, bufs);
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
