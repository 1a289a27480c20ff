//! Serving one client connection: which HTTP version it speaks, hyper's connection with
//! fulcrum's limits, and its end (drain, idle, a stalled head).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Request, Version};
use hyper::body::{Body, Incoming};
// hyper's server side, under a name of its own: the request path never names fulcrum's wiring
// (the `server` module), and a search for that name finds nothing here.
use hyper::server as serving;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::headers::{self, ip_value};
use super::tunnel::{StopTunnels, Tunnels};
use super::{Client, request};
use crate::proxy::activity::{Activity, Expired, Metered};
use crate::proxy::cancelled::cancelled;
use crate::proxy_protocol::Prefixed;
use crate::snapshot::Live;

/// Per-connection facts every request of the connection needs.
pub(super) struct Conn {
    pub client: Client,
    /// The client's address as an `X-Forwarded-For` value, made once per connection.
    pub peer_ip: HeaderValue,
    /// The running snapshot: each request takes its upstream from the one current then.
    pub live: Arc<Live>,
    pub activity: Arc<Activity>,
    /// WebSocket (upgrade) tunnels of this connection, made at the first: the connection task
    /// waits for them, so they keep its connection permit and count, and end when it is cut
    /// off.
    pub tunnels: std::sync::OnceLock<Tunnels>,
}

/// Serves one client connection until it closes, idles out, or the listener drains. `stream`
/// is plain TCP or the plaintext side of TLS (`proto` "https"), where ALPN may have chosen
/// HTTP/2: the client's first bytes tell which it speaks.
pub async fn serve<I>(stream: I, client: Client, live: Arc<Live>, graceful: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = Metered {
        io: stream,
        activity: Arc::clone(&activity),
    };
    let timeouts = client.timeouts.clone();
    let listener = Arc::clone(&client.listener);
    let conn = Arc::new(Conn {
        peer_ip: ip_value(client.addrs.client.ip()),
        client,
        live,
        activity: Arc::clone(&activity),
        tunnels: std::sync::OnceLock::new(),
    });
    let stop_tunnels = StopTunnels(Arc::clone(&conn));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let conn = Arc::clone(&conn);
        // Begun when hyper hands the request over, before the future first runs: hyper
        // reads on in between, which `quiet` may spare.
        let in_progress = conn.activity.begin();
        // Only the first request: its socket has not joined the event loop yet, which
        // `quiet` may spare it (see `listener::Accepted`); later ones gain nothing from it.
        if in_progress.is_first()
            && req.version() <= Version::HTTP_11
            && req.body().is_end_stream()
            && !headers::is_upgrade(req.headers())
        {
            in_progress.quiet();
        }
        async move { Ok::<_, Infallible>(request::handle(req, &conn, in_progress).await) }
    });
    let mut io = io;
    let watch = activity.watch(timeouts.idle, timeouts.header_read);
    tokio::pin!(watch);
    let sniffed = tokio::select! {
        biased;
        r = sniff(&mut io) => r,
        () = cancelled(graceful) => return,
        _ = watch.as_mut() => return,
    };
    let Ok((first, h2)) = sniffed else {
        return;
    };
    let io = TokioIo::new(Prefixed::new(first, io));
    if h2 {
        activity.set_h2();
        // HTTP/2 gets the HTTP/1 head limit (hyper's default is 16 KiB): a request must not
        // pass or fail depending on the protocol the client happened to negotiate. Boxed: an
        // HTTP/2 connection's state is kilobytes that HTTP/1 connections should not carry.
        let served = serving::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(super::MAX_HEAD as u32)
            .serve_connection(io, service);
        let mut served = Box::pin(served);
        drive(served.as_mut(), |c| c.graceful_shutdown(), graceful, watch).await;
    } else {
        let served = serving::conn::http1::Builder::new()
            // `header_read` is ours (`Activity::watch`): hyper's runs on idle keep-alive
            // connections too, which would close them at `header_read` instead of `idle`.
            .header_read_timeout(None)
            .max_headers(super::MAX_HEADERS)
            .max_buf_size(super::MAX_HEAD)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(served);
        drive(served, |c| c.graceful_shutdown(), graceful, watch).await;
    }
    if let Some(t) = stop_tunnels.0.tunnels.get() {
        t.tracker.close();
        t.tracker.wait().await;
    }
    crate::metrics::bytes(
        &listener,
        activity.read.load(Ordering::Relaxed),
        activity.written.load(Ordering::Relaxed),
    );
}

/// The HTTP/2 connection preface (RFC 9113 §3.4): a client that starts with it speaks
/// HTTP/2 with prior knowledge (or chose it by ALPN).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads the client's first bytes, as many as one read gives, and more only while they could
/// still be the start of the HTTP/2 preface. They go back in front of the stream for hyper.
/// `true`: HTTP/2. Ok with nothing read: the client closed at once.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<(Bytes, bool)> {
    let mut got = BytesMut::new();
    loop {
        let more = std::future::poll_fn(|cx| read_scratch(Pin::new(&mut *io), cx)).await?;
        if more.is_empty() {
            return Ok((got.freeze(), false));
        }
        let head = if got.is_empty() {
            more
        } else {
            got.extend_from_slice(&more);
            std::mem::take(&mut got).freeze()
        };
        let n = head.len().min(PREFACE.len());
        if head.get(..n) != PREFACE.get(..n) {
            return Ok((head, false));
        }
        if n == PREFACE.len() {
            return Ok((head, true));
        }
        got = BytesMut::from(&head[..]);
    }
}

/// One read into a per-thread buffer, copied out at its size: a connection's first bytes cost
/// a small allocation rather than a large one (a request head is usually a few hundred bytes).
fn read_scratch<I: AsyncRead>(
    io: Pin<&mut I>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<Bytes>> {
    SCRATCH.with(|cell| {
        // Taken only by a read nested inside another's: never a panic on the data path.
        let mut own;
        let mut borrowed = cell.try_borrow_mut();
        let scratch: &mut [u8] = match &mut borrowed {
            Ok(b) => b,
            Err(_) => {
                own = vec![0; SNIFF_READ];
                &mut own
            }
        };
        let mut buf = tokio::io::ReadBuf::new(scratch);
        match io.poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Bytes::copy_from_slice(buf.filled()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// The first read on a client connection: a common request head fits.
const SNIFF_READ: usize = 8192;

thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; SNIFF_READ].into_boxed_slice());
}

/// Runs a client connection to its end: on drain, or once idle, it finishes the request in
/// progress and closes; a request head that takes longer than `header_read` closes it at once.
async fn drive<C: Future>(
    mut conn: Pin<&mut C>,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    graceful: &CancellationToken,
    watch: Pin<&mut impl Future<Output = Expired>>,
) {
    tokio::select! {
        // In this order: `watch` must see what the connection's poll just did.
        biased;
        _ = conn.as_mut() => {}
        () = cancelled(graceful) => {
            graceful_shutdown(conn.as_mut());
            let _ = conn.await;
        }
        why = watch => match why {
            Expired::Idle => {
                graceful_shutdown(conn.as_mut());
                let _ = conn.await;
            }
            // A head that never completes: drop the connection, nothing to finish.
            Expired::HeaderRead => {}
        },
    }
}
