//! Layer 7: hyper serves the client connection, one backend is picked per request, and the
//! request goes out on a pooled keep-alive connection. Bodies stream both ways.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activity::{Activity, Expired, InProgress, Metered};
use super::failure::{ConnectError, Failure, fail, fail_connect};
use super::message;
use super::pool::{self, ReqBody, Sender};
use crate::config::ProxyProtocol;
use crate::proxy_protocol::{Addresses, Prefixed};
use crate::server::Shared;
use crate::upstream::{Backend, Lease, Upstream};

/// Largest request head accepted (431 beyond); nginx's large buffers are
/// 4 x 8 KiB, HAProxy's bufsize 16 KiB: 64 KiB is generous without inviting abuse.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request head (431 beyond): HAProxy's default is 101.
pub const MAX_HEADERS: usize = 100;

/// Per-connection facts every request of the connection needs.
struct Conn {
    listener: Arc<str>,
    /// The client (as a PROXY header in front of fulcrum announced it, if any) and listener.
    addrs: Addresses,
    /// The client's address as an `X-Forwarded-For` value, made once per connection.
    peer_ip: HeaderValue,
    /// `X-Forwarded-Proto`: "http", or "https" on a TLS listener.
    proto: &'static str,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    /// WebSocket (upgrade) tunnels of this connection, made at the first: the connection task
    /// waits for them, so they keep its connection permit and count, and end when it is cut
    /// off.
    tunnels: std::sync::OnceLock<Tunnels>,
    /// The listener's `idle`, which also ends a silent tunnel.
    idle: Duration,
}

/// An IP address as a header value. IPv4 is formatted by hand: through `Display` it cost
/// more than the rest of a connection's setup.
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    let len = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(&mut buf, &mut len, b'.');
                }
                if octet >= 100 {
                    put(&mut buf, &mut len, b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(&mut buf, &mut len, b'0' + octet / 10 % 10);
                }
                put(&mut buf, &mut len, b'0' + octet % 10);
            }
            len
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut rest = &mut buf[..];
            match write!(rest, "{ip}") {
                Ok(()) => 64 - rest.len(),
                Err(_) => 0,
            }
        }
    };
    buf.get(..len)
        .filter(|t| !t.is_empty())
        .and_then(|t| HeaderValue::from_bytes(t).ok())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

fn put(buf: &mut [u8], len: &mut usize, b: u8) {
    if let Some(slot) = buf.get_mut(*len) {
        *slot = b;
        *len += 1;
    }
}

/// See `Conn::tunnels`.
struct Tunnels {
    tracker: TaskTracker,
    /// Cancelled when the connection task ends or is cut off: tunnels stop with it.
    stop: CancellationToken,
}

/// Stops the connection's tunnels when its task ends, also when the drain deadline cuts it off.
struct StopTunnels(Arc<Conn>);

impl Drop for StopTunnels {
    fn drop(&mut self) {
        if let Some(t) = self.0.tunnels.get() {
            t.stop.cancel();
        }
    }
}

/// Serves one client connection until it closes, idles out, or the listener drains. `stream`
/// is plain TCP or the plaintext side of TLS (`proto` "https"), where ALPN may have chosen
/// HTTP/2: the client's first bytes tell which it speaks.
pub async fn serve<I>(
    stream: I,
    addrs: Addresses,
    listener: Arc<str>,
    shared: Arc<Shared>,
    graceful: CancellationToken,
    timeouts: &crate::config::ListenerTimeouts,
    proto: &'static str,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = Metered {
        io: stream,
        activity: Arc::clone(&activity),
    };
    let peer_ip = ip_value(addrs.client.ip());
    let conn = Arc::new(Conn {
        listener: Arc::clone(&listener),
        addrs,
        peer_ip,
        proto,
        shared,
        activity: Arc::clone(&activity),
        tunnels: std::sync::OnceLock::new(),
        idle: timeouts.idle,
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
            && !is_upgrade(req.headers())
        {
            in_progress.quiet();
        }
        async move { Ok::<_, Infallible>(handle(req, &conn, in_progress).await) }
    });
    let mut io = io;
    let watch = activity.watch(timeouts.idle, timeouts.header_read);
    tokio::pin!(watch);
    let sniffed = tokio::select! {
        biased;
        r = sniff(&mut io) => r,
        () = super::cancelled::cancelled(&graceful) => return,
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
        let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD as u32)
            .serve_connection(io, service);
        let mut served = Box::pin(served);
        drive(served.as_mut(), |c| c.graceful_shutdown(), &graceful, watch).await;
    } else {
        let served = hyper::server::conn::http1::Builder::new()
            // `header_read` is ours (`Activity::watch`): hyper's runs on idle keep-alive
            // connections too, which would close them at `header_read` instead of `idle`.
            .header_read_timeout(None)
            .max_headers(MAX_HEADERS)
            .max_buf_size(MAX_HEAD)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::pin!(served);
        drive(served, |c| c.graceful_shutdown(), &graceful, watch).await;
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
        () = super::cancelled::cancelled(graceful) => {
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

/// One request: route, pick, send with failover, and answer.
async fn handle(
    req: Request<Incoming>,
    conn: &Conn,
    in_progress: InProgress,
) -> Response<RespBody> {
    let started = Instant::now();
    let snapshot = conn.shared.state.load_full();
    let Some((_, upstream)) = snapshot.route(&conn.listener) else {
        return local(StatusCode::SERVICE_UNAVAILABLE, in_progress);
    };
    // Only the access log needs these; skip the copies when it is off.
    let access = snapshot
        .config
        .log
        .access
        .then(|| (req.method().clone(), req.uri().path().to_owned()));
    let (resp, backend) = match forward(req, conn, upstream).await {
        Ok(f) => {
            let backend = Arc::clone(&f.backend);
            (respond(f, upstream, in_progress), Some(backend))
        }
        Err((status, last)) => (local(status, in_progress), last),
    };
    let status = resp.status();
    crate::metrics::request(
        &conn.listener,
        &upstream.name,
        backend.as_deref(),
        status,
        started.elapsed(),
    );
    if let Some((method, path)) = access {
        tracing::info!(
            target: "access",
            listener = %conn.listener,
            client = %conn.addrs.client,
            method = %method,
            path = %path,
            status = status.as_u16(),
            upstream = %upstream.name,
            backend = backend.as_ref().map_or("none", |b| &*b.addr),
            duration_us = started.elapsed().as_micros() as u64,
            // The response body's size when known up front (Content-Length); streamed
            // bodies are counted in `bytes_total` instead.
            bytes = resp.body().size_hint().exact(),
            "http request"
        );
    }
    resp
}

/// What fulcrum answers itself, and the last backend tried (the `backend` label of a 502).
type Refusal = (StatusCode, Option<Arc<Backend>>);

/// A backend's answer and what it holds until its body is done.
struct Forwarded {
    resp: Response<Incoming>,
    backend: Arc<Backend>,
    /// `None` for a `101`: the tunnel holds the lease.
    lease: Option<Lease>,
    /// The connection and the pool key it goes back under (`None` for a `101`).
    pooled: Option<(pool::Key, Sender)>,
}

/// What became of one attempt to send on a backend connection.
enum Sent {
    Response(Response<Incoming>),
    /// The request never left (no usable connection): safe to send elsewhere, any method.
    Unsent(Request<ReqBody>, ConnectError),
    Failed(hyper::Error),
}

/// Sends the request to a backend, failing over where it is safe. The error is the status
/// fulcrum answers itself: all error-to-status mapping is here.
async fn forward(
    mut req: Request<Incoming>,
    conn: &Conn,
    upstream: &Upstream,
) -> Result<Forwarded, Refusal> {
    // hyper enforces this for HTTP/1; HTTP/2 has no field count limit of its own.
    if req.headers().len() > MAX_HEADERS {
        return Err((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None));
    }
    // fulcrum is not a forward proxy: CONNECT would ask it to open a tunnel to wherever the
    // client names, which only configured backends may ever be.
    if req.method() == Method::CONNECT {
        return Err((StatusCode::METHOD_NOT_ALLOWED, None));
    }
    message::check_target(req.method(), req.uri()).map_err(|status| (status, None))?;
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut outgoing = prepare(req, conn, upgrade).map_err(|status| (status, None))?;
    let retries = upstream.conf.retries as usize;
    // A bodiless idempotent request can be sent again if the connection breaks before any
    // response byte: keep what is needed to rebuild it, when there is anywhere to send it.
    let replay = (retries > 0 && upstream.backends.len() > 1 && replayable(&outgoing))
        .then(|| head_of(&outgoing));
    let key = pool_key(upstream, &conn.addrs);
    let mut tried = super::Tried::default();
    let mut last: Option<Arc<Backend>> = None;
    // What fulcrum answers when no backend is left to try: 504 after a response timeout.
    let mut gave_up = StatusCode::BAD_GATEWAY;
    loop {
        let Some(lease) = upstream.pick(tried.as_slice()) else {
            return Err(if tried.is_empty() {
                (StatusCode::SERVICE_UNAVAILABLE, None)
            } else {
                (gave_up, last)
            });
        };
        last = Some(Arc::clone(&lease.backend));
        gave_up = StatusCode::BAD_GATEWAY;
        if !tried.is_empty() {
            crate::metrics::failover(&upstream.name);
        }
        tried.push(lease.index);
        let last_try = tried.len() > retries;
        let backend = &lease.backend;
        let pooled = match backend.pool.checkout(&key) {
            // Handed out ready; if it closed since, a new connection is dialled.
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let reused = pooled.is_some();
        let mut sender = match pooled {
            Some(s) => s,
            None => match connect(&lease, upstream, &conn.addrs).await {
                Ok(s) => s,
                Err(e) => {
                    fail_connect(upstream, &lease, e);
                    if last_try || e == ConnectError::Local {
                        return Err((StatusCode::BAD_GATEWAY, last));
                    }
                    continue;
                }
            },
        };
        let sent = timeout(
            upstream.conf.response_timeout,
            send(&mut sender, outgoing, reused, &lease, upstream, &conn.addrs),
        )
        .await;
        match sent {
            Err(_) => {
                // No response byte in time: like a connection broken before the response, a
                // bodiless idempotent request goes to another backend (nginx's
                // `proxy_next_upstream timeout`); a backend that went silent (a paused
                // container, a cut network) then costs its clients a delay, not an error.
                fail(upstream, &lease, Failure::Timeout);
                gave_up = StatusCode::GATEWAY_TIMEOUT;
                match (&replay, last_try) {
                    (Some(head), false) => outgoing = rebuild(head),
                    _ => return Err((StatusCode::GATEWAY_TIMEOUT, last)),
                }
            }
            Ok(Sent::Unsent(req, e)) => {
                fail_connect(upstream, &lease, e);
                if last_try || e == ConnectError::Local {
                    return Err((StatusCode::BAD_GATEWAY, last));
                }
                outgoing = req;
            }
            Ok(Sent::Response(resp)) if !message::response_framing_is_clear(resp.headers()) => {
                // Dropped with its connection unread: the connection is never reused.
                fail(upstream, &lease, Failure::Protocol);
                return Err((StatusCode::BAD_GATEWAY, last));
            }
            Ok(Sent::Response(mut resp)) => {
                if matches!(resp.status().as_u16(), 502..=504) {
                    fail(upstream, &lease, Failure::Status);
                } else {
                    upstream.record_success(lease.index);
                }
                let backend = Arc::clone(&lease.backend);
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client) = client_upgrade {
                        tunnel(conn, client, hyper::upgrade::on(&mut resp), lease);
                        return Ok(Forwarded {
                            resp,
                            backend,
                            lease: None,
                            pooled: None,
                        });
                    }
                    return Ok(Forwarded {
                        resp,
                        backend,
                        lease: Some(lease),
                        pooled: None,
                    });
                }
                return Ok(Forwarded {
                    resp,
                    backend,
                    lease: Some(lease),
                    pooled: Some((key, sender)),
                });
            }
            Ok(Sent::Failed(e)) if e.is_user() => {
                // The client's own body broke (a bad chunk size, or the client went away):
                // the backend is not at fault, and the request cannot be completed.
                tracing::debug!(error = %e, "client request body failed");
                return Err((StatusCode::BAD_REQUEST, last));
            }
            Ok(Sent::Failed(e)) if e.is_parse() || e.is_parse_status() => {
                // Response bytes came, but not a response fulcrum can pass on: the backend
                // answered, so the request is not sent again.
                tracing::debug!(upstream = %upstream.name, backend = %backend.addr, error = %e, "backend response unreadable");
                fail(upstream, &lease, Failure::Protocol);
                return Err((StatusCode::BAD_GATEWAY, last));
            }
            Ok(Sent::Failed(e)) => {
                fail(upstream, &lease, Failure::Reset);
                tracing::debug!(upstream = %upstream.name, backend = %backend.addr, error = %e, "backend exchange failed");
                match (&replay, last_try) {
                    (Some(head), false) => outgoing = rebuild(head),
                    _ => return Err((StatusCode::BAD_GATEWAY, last)),
                }
            }
        }
    }
}

/// Sends on `sender`. A reused connection found closed before the request was written is
/// replaced by a fresh one to the same backend (the backend closed an idle connection: no
/// failover); a request that never left comes back as `Unsent`, for any method.
async fn send(
    sender: &mut Sender,
    req: Request<ReqBody>,
    reused: bool,
    lease: &Lease,
    upstream: &Upstream,
    addrs: &Addresses,
) -> Sent {
    let req = match sender.try_send_request(req).await {
        Ok(resp) => return Sent::Response(resp),
        Err(mut e) => match e.take_message() {
            Some(req) if reused => req,
            Some(req) => return Sent::Unsent(req, ConnectError::Backend(Failure::Connect)),
            None => return Sent::Failed(e.into_error()),
        },
    };
    *sender = match connect(lease, upstream, addrs).await {
        Ok(s) => s,
        Err(e) => return Sent::Unsent(req, e),
    };
    match sender.try_send_request(req).await {
        Ok(resp) => Sent::Response(resp),
        Err(mut e) => match e.take_message() {
            Some(req) => Sent::Unsent(req, ConnectError::Backend(Failure::Connect)),
            None => Sent::Failed(e.into_error()),
        },
    }
}

/// Idle connections that may carry this client's requests: with `send_proxy_protocol`, only
/// those that announced this very client (and listener).
fn pool_key(upstream: &Upstream, addrs: &Addresses) -> pool::Key {
    match upstream.conf.send_proxy_protocol {
        ProxyProtocol::Off => None,
        version => Some((version, *addrs)),
    }
}

/// A fresh connection to the lease's backend (TLS when the upstream says so), within
/// `connect_timeout`.
async fn connect(
    lease: &Lease,
    upstream: &Upstream,
    addrs: &Addresses,
) -> Result<Sender, ConnectError> {
    let handshake = match super::connect(&lease.backend, upstream, addrs).await? {
        // Each kind gets its own hyper connection type: plain TCP pays nothing for TLS.
        tokio_util::either::Either::Left(tcp) => pool::handshake(tcp).await,
        tokio_util::either::Either::Right(tls) => pool::handshake(tls).await,
    };
    handshake.map_err(|_| ConnectError::Backend(Failure::Connect))
}

const HOP_COUNT: usize = 6;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded. `Trailer` is not one: it announces
/// the trailer fields end to end, and hyper sends a body's trailers only when it names them.
const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `X-Forwarded-For`, `X-Forwarded-Proto`.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// True when the client asks to switch protocols (WebSocket).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes `Connection`, the headers it names and the other hop-by-hop headers. One pass
/// over the fields finds what is there (most messages carry none, or only `Connection`),
/// instead of a hash lookup for each of the seven names on every message.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass to learn which fixed hop-by-hop fields are present: most messages carry
    // none, or only `Connection`, and a lookup per name would cost more than the pass.
    let mut present = [false; HOP_COUNT];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_index(name)
            && let Some(p) = present.get_mut(i)
        {
            *p = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    // The fields a `Connection` field names go too. Its values are read as it is removed:
    // one lookup for the field every message has, where reading and then removing took two.
    // The usual tokens (`close`, `keep-alive`, `upgrade`) name no field or a listed one.
    let mut named: Vec<HeaderName> = Vec::new();
    if present[0]
        && let header::Entry::Occupied(field) = headers.entry(header::CONNECTION)
    {
        let (_, values) = field.remove_entry_mult();
        for value in values {
            named.extend(
                value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| {
                        !t.is_empty()
                            && !t.eq_ignore_ascii_case(b"close")
                            && !HOP_BY_HOP
                                .iter()
                                .any(|h| t.eq_ignore_ascii_case(h.as_str().as_bytes()))
                    })
                    .filter_map(|t| HeaderName::from_bytes(t).ok()),
            );
        }
    }
    // `Connection`, first in the list, is gone already.
    for (name, _) in HOP_BY_HOP.iter().zip(present).skip(1).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// The place of `name` in `HOP_BY_HOP`: one `match` on the name, where comparing it with
/// each of the seven costs more on every field of every message.
fn hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "transfer-encoding" => Some(4),
        "upgrade" => Some(5),
        _ => None,
    }
}

/// Which fields that `prepare` acts on a request carries, found in one pass.
#[derive(Default)]
struct Fields {
    transfer_encoding: bool,
    content_length: bool,
    hosts: usize,
    /// Every `Host` value is a valid host[:port] (checked in the same pass).
    hosts_valid: bool,
    cookies: usize,
    expect: bool,
    forwarded_for: bool,
    /// `Trailer`: the body announces trailer fields.
    trailer: bool,
    /// The fields' size as lines of a head: names, values and ": " and CRLF.
    size: usize,
}

fn fields(headers: &HeaderMap) -> Fields {
    let mut f = Fields {
        hosts_valid: true,
        ..Fields::default()
    };
    // Every field, repeats included: two `Host` lines count as two.
    for (name, value) in headers {
        f.size += name.as_str().len() + value.len() + 4;
        if name == header::TRANSFER_ENCODING {
            f.transfer_encoding = true;
        } else if name == header::CONTENT_LENGTH {
            f.content_length = true;
        } else if name == header::HOST {
            f.hosts += 1;
            f.hosts_valid &= message::valid_host(value.as_bytes());
        } else if name == header::COOKIE {
            f.cookies += 1;
        } else if name == header::EXPECT {
            f.expect = true;
        } else if name == X_FORWARDED_FOR {
            f.forwarded_for = true;
        } else if name == header::TRAILER {
            f.trailer = true;
        }
    }
    f
}

/// Turns the client's request into the one the backend gets, or the status that refuses
/// it: 400 when it is ambiguous (both `Content-Length` and `Transfer-Encoding`, the smuggling
/// shape, or more than one `Host`: RFC 9112 §3.2, fulcrum and the backend could each read
/// another), 501 for a transfer coding fulcrum does not know.
fn prepare(
    req: Request<Incoming>,
    conn: &Conn,
    upgrade: bool,
) -> Result<Request<ReqBody>, StatusCode> {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    let f = fields(headers);
    // hyper's own limit is checked between reads, so a head that arrives in large reads can
    // pass it; HTTP/2 has none of its own for the whole head.
    if f.size + parts.uri.path_and_query().map_or(0, |p| p.as_str().len()) > MAX_HEAD {
        return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    if f.transfer_encoding {
        if f.content_length {
            return Err(StatusCode::BAD_REQUEST);
        }
        // hyper decodes the final `chunked`; any coding before it (gzip, ...) fulcrum would
        // pass on unannounced once Transfer-Encoding is dropped as hop-by-hop.
        if !message::only_chunked(headers) {
            return Err(StatusCode::NOT_IMPLEMENTED);
        }
    }
    // HTTP/2 clients split cookies into several fields; an HTTP/1.1 backend expects one
    // (RFC 9113 §8.2.3).
    if parts.version == Version::HTTP_2 && f.cookies > 1 {
        join_cookies(headers);
    }
    if f.hosts > 1 {
        return Err(StatusCode::BAD_REQUEST);
    }
    if !f.hosts_valid {
        return Err(StatusCode::BAD_REQUEST);
    }
    // An HTTP/1.1 request must name its host (RFC 9112 §3.2), as nginx and HAProxy require;
    // the backend gets HTTP/1.1 whatever the client spoke, so HTTP/2 needs one too.
    if f.hosts == 0 && parts.uri.authority().is_none() && parts.version >= Version::HTTP_11 {
        return Err(StatusCode::BAD_REQUEST);
    }
    let upgrade_to = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    // Absolute form (or HTTP/2's :authority): Host comes from the authority, which
    // `check_target` found valid (no userinfo); fulcrum still only ever connects to
    // configured backends.
    if let Some(authority) = parts.uri.authority() {
        if !message::valid_host(authority.as_str().as_bytes()) {
            return Err(StatusCode::BAD_REQUEST);
        }
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            headers.insert(header::HOST, v);
        }
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = message::origin_form(&parts.uri)?;
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(headers);
    // A body of unknown length (chunked, or HTTP/2 DATA without `Content-Length`) goes out
    // chunked, whatever the method: hyper's client sends a GET, HEAD or CONNECT of unknown
    // length with no body at all unless the request says `chunked` itself. So does a body
    // that announces trailers (HTTP/2 may send them after a `Content-Length` body): only
    // chunked can carry them, and hyper sends those that `Trailer` names.
    let unknown_length = !f.content_length && body.size_hint().exact().is_none();
    if !body.is_end_stream() && (unknown_length || f.trailer) {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    // fulcrum answers `Expect: 100-continue` itself, when the body is first read.
    if f.expect {
        headers.remove(header::EXPECT);
    }
    let prev = f
        .forwarded_for
        .then(|| headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()))
        .flatten();
    let xff = match prev {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", conn.addrs.client.ip())).ok(),
        None => Some(conn.peer_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(conn.proto),
    );
    if let Some(to) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, to);
    }
    Ok(Request::from_parts(parts, Either::Left(body)))
}

/// Joins several `cookie` fields into one, separated by `; `.
fn join_cookies(headers: &mut HeaderMap) {
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// Safe to send again: idempotent (RFC 9110 §9.2.2) and carrying no body.
fn replayable(req: &Request<ReqBody>) -> bool {
    let idempotent = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    idempotent && req.body().is_end_stream()
}

/// What is needed to send a bodiless request again.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

fn head_of(req: &Request<ReqBody>) -> Head {
    Head {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
    }
}

fn rebuild(head: &Head) -> Request<ReqBody> {
    let mut req = Request::new(Either::Right(Empty::new()));
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.headers_mut() = head.headers.clone();
    req
}

/// After `101 Switching Protocols` both connections become one byte tunnel.
/// The tunnel runs under its client connection: it holds the lease (so least load sees it),
/// ends when silent for `idle` or when the connection is cut off, and counts its bytes.
fn tunnel(
    conn: &Conn,
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    lease: Lease,
) {
    let tunnels = conn.tunnels.get_or_init(|| Tunnels {
        tracker: TaskTracker::new(),
        stop: CancellationToken::new(),
    });
    let stop = tunnels.stop.clone();
    let idle = conn.idle;
    let listener = Arc::clone(&conn.listener);
    tunnels.tracker.spawn(async move {
        let (Ok(c), Ok(b)) = (client.await, backend.await) else {
            return;
        };
        let activity = Activity::new();
        let mut c = Metered {
            io: TokioIo::new(c),
            activity: Arc::clone(&activity),
        };
        let mut b = TokioIo::new(b);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut c, &mut b) => {}
            () = activity.idle(idle) => {}
            () = super::cancelled::cancelled(&stop) => {}
        }
        drop(lease);
        crate::metrics::bytes(
            &listener,
            activity.read.load(Ordering::Relaxed),
            activity.written.load(Ordering::Relaxed),
        );
    });
}

/// The backend's response as the client gets it: hop-by-hop headers removed (but kept on a
/// `101`), the body streamed, the connection pooled again once the body is done.
fn respond(f: Forwarded, upstream: &Arc<Upstream>, progress: InProgress) -> Response<RespBody> {
    let mut resp = f.resp;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(resp.headers_mut());
    }
    // HEAD, 204, 304 and empty bodies are never polled (hyper sees their end up front): their
    // connection goes back to the pool now, or it would be closed with the body.
    let done = if resp.body().is_end_stream() {
        if let (Some((key, sender)), Some(lease)) = (f.pooled, &f.lease) {
            lease.backend.pool.checkin(key, sender);
        }
        None
    } else {
        Some(Done {
            sender: f.pooled,
            lease: f.lease,
            upstream: Arc::clone(upstream),
            _progress: progress,
        })
    };
    resp.map(|body| RespBody::Backend { body, done })
}

/// A response fulcrum makes itself: a short plain-text body, no internals.
fn local(status: StatusCode, progress: InProgress) -> Response<RespBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(RespBody::Local {
        body: Full::new(Bytes::from(text)),
        _progress: progress,
    });
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // A request refused for its own shape: what the client sends next on this connection is
    // not worth reading (nginx closes there too).
    if matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            | StatusCode::NOT_IMPLEMENTED
    ) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// What ends with a backend response's body: the connection goes back to the pool, the
/// in-flight unit is released, the client connection may idle again.
pub struct Done {
    /// The connection and the pool key it goes back under.
    sender: Option<(pool::Key, Sender)>,
    lease: Option<Lease>,
    /// Where a body that breaks off is recorded as its backend's failure.
    upstream: Arc<Upstream>,
    _progress: InProgress,
}

impl Done {
    fn complete(self) {
        if let (Some((key, sender)), Some(lease)) = (self.sender, &self.lease) {
            lease.backend.pool.checkin(key, sender);
        }
    }

    /// The backend broke off its body (`reset`) or framed it wrongly (`protocol`, a bad
    /// chunk): the client connection is closed by hyper, the backend connection dropped.
    fn broken(self, e: &hyper::Error) {
        if let Some(lease) = &self.lease {
            fail(&self.upstream, lease, body_failure_kind(e));
        }
    }
}

/// A response body's decoding error is `InvalidData` or `InvalidInput` from hyper's decoder
/// (a bad chunk); anything else is the connection breaking off.
fn body_failure_kind(e: &hyper::Error) -> Failure {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput => {
                    Failure::Protocol
                }
                _ => Failure::Reset,
            };
        }
        source = s.source();
    }
    if e.is_parse() {
        Failure::Protocol
    } else {
        Failure::Reset
    }
}

/// The body of a response to the client.
pub enum RespBody {
    Backend {
        body: Incoming,
        done: Option<Done>,
    },
    Local {
        body: Full<Bytes>,
        _progress: InProgress,
    },
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RespBody::Backend { body, done } => {
                let r = Pin::new(&mut *body).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => {
                        if let Some(d) = done.take() {
                            d.complete();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                        if let Some(d) = done.take() {
                            d.complete();
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // A backend that breaks mid-body: the connection is not reused.
                        if let Some(d) = done.take() {
                            d.broken(e);
                        }
                    }
                    _ => {}
                }
                r
            }
            RespBody::Local { body, .. } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Backend { body, .. } => body.is_end_stream(),
            RespBody::Local { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Backend { body, .. } => body.size_hint(),
            RespBody::Local { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{HOP_BY_HOP, hop_index, ip_value};

    #[test]
    fn hop_index_agrees_with_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_index(&http::header::HOST), None);
    }

    #[test]
    fn ip_values_are_the_usual_text() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let parsed: std::net::IpAddr = ip.parse().expect("an address");
            assert_eq!(ip_value(parsed).to_str().ok(), Some(ip));
        }
    }
}
