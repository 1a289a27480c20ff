//! What a client connection did: bytes each way, requests in progress, when a request head
//! began. One record per connection, written by its stream (`Metered`) and its requests
//! (`InProgress`), read by its watchdog (`Activity::watch`: `idle` and `header_read`) and by
//! the `bytes_total` metric.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

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
        let r = super::gather::write_gathered(Pin::new(&mut self.io), cx, bufs);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const IDLE: Duration = Duration::from_secs(60);
    const HEAD: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn idle_fires_once_nothing_moved_for_idle() {
        let a = Activity::new();
        let start = Instant::now();
        assert_eq!(a.watch(IDLE, HEAD).await, Expired::Idle);
        let waited = start.elapsed();
        assert!(
            waited >= IDLE && waited <= IDLE + IDLE / 4,
            "idle fires within a quarter of its time late: {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_holds_idle_off() {
        let a = Activity::new();
        let request = a.begin();
        let mut watch = Box::pin(a.watch(IDLE, HEAD));
        assert!(
            tokio::time::timeout(IDLE * 3, &mut watch).await.is_err(),
            "no timeout runs while a request is in progress"
        );
        drop(request);
        let start = Instant::now();
        assert_eq!(watch.await, Expired::Idle);
        assert!(
            start.elapsed() >= IDLE,
            "idle counts from the request's end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_head_is_cut_off_at_header_read() {
        let a = Activity::new();
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = Metered {
            io: server,
            activity: Arc::clone(&a),
        };
        let trickle = async {
            let mut buf = [0u8; 8];
            loop {
                client.write_all(b"G").await.expect("write");
                let _ = stream.read(&mut buf).await.expect("read");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let start = Instant::now();
        tokio::select! {
            why = a.watch(IDLE, HEAD) => assert_eq!(why, Expired::HeaderRead),
            () = trickle => unreachable!("the trickle never ends"),
        }
        let waited = start.elapsed();
        assert!(
            waited >= HEAD && waited <= HEAD + HEAD / 4 + Duration::from_secs(1),
            "a byte a second does not extend header_read: {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_header_read_does_not_run() {
        let a = Activity::new();
        drop(a.begin());
        assert_eq!(
            a.watch(IDLE, HEAD).await,
            Expired::Idle,
            "an idle keep-alive connection meets idle, not header_read"
        );
    }

    #[tokio::test]
    async fn metered_counts_bytes_both_ways() {
        let a = Activity::new();
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = Metered {
            io: server,
            activity: Arc::clone(&a),
        };
        client.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.expect("read");
        stream.write_all(b"ok").await.expect("write back");
        assert_eq!(a.read.load(Ordering::Relaxed), 5);
        assert_eq!(a.written.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_quiet_request_pauses_reads_until_it_ends() {
        let a = Activity::new();
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = Metered {
            io: server,
            activity: Arc::clone(&a),
        };
        let request = a.begin();
        request.quiet();
        client.write_all(b"next").await.expect("write");
        let mut buf = [0u8; 4];
        let mut read = Box::pin(stream.read(&mut buf));
        assert!(
            futures_util::poll!(read.as_mut()).is_pending(),
            "bytes that are there wait while a quiet request is in progress"
        );
        drop(request);
        assert_eq!(
            read.await.expect("read"),
            4,
            "the request's end wakes the read"
        );
    }
}
