//! Layer 7: hyper serves the client connection, one backend is picked per request, and the
//! request goes out on a pooled keep-alive connection. Bodies stream both ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::io::{Activity, InProgress, Metered};
use super::pool::{self, ReqBody, Sender};
use crate::server::Shared;
use crate::upstream::{Lease, Upstream};

/// Largest request head accepted (431 beyond), as SPEC.md says; nginx's large buffers are
/// 4 x 8 KiB, HAProxy's bufsize 16 KiB: 64 KiB is generous without inviting abuse.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a request head (431 beyond): HAProxy's default is 101.
pub const MAX_HEADERS: usize = 100;

/// Per-connection facts every request of the connection needs.
struct Conn {
    listener: Arc<str>,
    peer: SocketAddr,
    /// The client's address as an `X-Forwarded-For` value, made once per connection.
    peer_ip: HeaderValue,
    proto: &'static str,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
}

/// Serves one client connection until it closes, idles out, or the listener drains.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    shared: Arc<Shared>,
    graceful: CancellationToken,
    timeouts: &crate::config::ListenerTimeouts,
) {
    let _ = stream.set_nodelay(true);
    serve_io(stream, peer, listener, shared, graceful, timeouts).await;
}

/// `serve` over any byte stream: what `crate::fuzzing` feeds from memory.
pub async fn serve_io<I>(
    stream: I,
    peer: SocketAddr,
    listener: Arc<str>,
    shared: Arc<Shared>,
    graceful: CancellationToken,
    timeouts: &crate::config::ListenerTimeouts,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = Metered {
        io: stream,
        activity: Arc::clone(&activity),
    };
    let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
    let conn = Arc::new(Conn {
        listener: Arc::clone(&listener),
        peer,
        peer_ip,
        proto: "http",
        shared,
        activity: Arc::clone(&activity),
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(handle(req, &conn).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD);
    builder.http2().timer(TokioTimer::new());
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = graceful.cancelled() => {
            served.as_mut().graceful_shutdown();
            let _ = served.as_mut().await;
        }
        () = activity.idle(timeouts.idle) => {
            served.as_mut().graceful_shutdown();
            let _ = served.as_mut().await;
        }
    }
    crate::metrics::bytes(
        &listener,
        activity.read.load(Ordering::Relaxed),
        activity.written.load(Ordering::Relaxed),
    );
}

/// One request: route, pick, send with failover, and answer.
async fn handle(req: Request<Incoming>, conn: &Conn) -> Response<RespBody> {
    let in_progress = conn.activity.begin();
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
        Ok((resp, lease, sender)) => {
            let backend = Arc::clone(&lease.backend.addr);
            (respond(resp, lease, sender, in_progress), Some(backend))
        }
        Err(status) => (local(status, in_progress), None),
    };
    let status = resp.status();
    crate::metrics::request(
        &conn.listener,
        &upstream.name,
        backend.as_ref(),
        status,
        started.elapsed(),
    );
    if let Some((method, path)) = access {
        tracing::info!(
            target: "access",
            listener = %conn.listener,
            client = %conn.peer,
            method = %method,
            path = %path,
            status = status.as_u16(),
            upstream = %upstream.name,
            backend = backend.as_deref().unwrap_or("none"),
            duration_us = started.elapsed().as_micros() as u64,
            "http request"
        );
    }
    resp
}

/// Sends the request to a backend, failing over as SPEC.md allows. The error is the status
/// fulcrum answers itself: all error-to-status mapping is here.
async fn forward(
    mut req: Request<Incoming>,
    conn: &Conn,
    upstream: &Upstream,
) -> Result<(Response<Incoming>, Lease, Option<Sender>), StatusCode> {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let Some(mut outgoing) = prepare(req, conn, upgrade) else {
        return Err(StatusCode::BAD_REQUEST);
    };
    // A bodiless idempotent request can be sent again if the connection breaks before any
    // response byte: keep what is needed to rebuild it.
    let replay = replayable(&outgoing).then(|| head_of(&outgoing));
    let retries = upstream.conf.retries as usize;
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let Some(lease) = upstream.pick(&tried) else {
            return Err(if tried.is_empty() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            });
        };
        if !tried.is_empty() {
            crate::metrics::failover(&upstream.name);
        }
        tried.push(lease.index);
        let last_try = tried.len() > retries;
        let backend = &lease.backend;
        let (mut sender, reused) = match backend.pool.checkout() {
            Some(s) => (s, true),
            None => match connect(&lease, upstream).await {
                Ok(s) => (s, false),
                Err(kind) => {
                    fail(upstream, &lease, kind);
                    if last_try {
                        return Err(StatusCode::BAD_GATEWAY);
                    }
                    continue;
                }
            },
        };
        let sent = timeout(
            upstream.conf.response_timeout,
            send(&mut sender, outgoing, reused, &lease, upstream),
        )
        .await;
        match sent {
            Err(_) => {
                fail(upstream, &lease, "timeout");
                return Err(StatusCode::GATEWAY_TIMEOUT);
            }
            Ok(Ok(mut resp)) => {
                if matches!(resp.status().as_u16(), 502..=504) {
                    upstream.record_failure(lease.index, "status");
                } else {
                    upstream.record_success(lease.index);
                }
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    if let Some(client) = client_upgrade {
                        tunnel(client, hyper::upgrade::on(&mut resp));
                    }
                    return Ok((resp, lease, None));
                }
                return Ok((resp, lease, Some(sender)));
            }
            Ok(Err(e)) if e.is_user() => {
                // The client's own body broke (a bad chunk size, or the client went away):
                // the backend is not at fault, and the request cannot be completed.
                tracing::debug!(error = %e, "client request body failed");
                return Err(StatusCode::BAD_REQUEST);
            }
            Ok(Err(e)) => {
                fail(upstream, &lease, "reset");
                tracing::debug!(upstream = %upstream.name, backend = %backend.addr, error = %e, "backend exchange failed");
                match (&replay, last_try) {
                    (Some(head), false) => outgoing = rebuild(head),
                    _ => return Err(StatusCode::BAD_GATEWAY),
                }
            }
        }
    }
}

/// Sends on `sender`; a reused connection found closed before the request was written is
/// replaced by a fresh one to the same backend (the backend closed an idle connection; the
/// request never left, so this is safe for every method and is no failover).
async fn send(
    sender: &mut Sender,
    req: Request<ReqBody>,
    reused: bool,
    lease: &Lease,
    upstream: &Upstream,
) -> Result<Response<Incoming>, hyper::Error> {
    match sender.try_send_request(req).await {
        Ok(resp) => Ok(resp),
        Err(mut e) => match (reused, e.take_message()) {
            (true, Some(req)) => {
                *sender = connect(lease, upstream).await.map_err(|_| e.into_error())?;
                sender.send_request(req).await
            }
            _ => Err(e.into_error()),
        },
    }
}

/// A fresh connection to the lease's backend, within `connect_timeout`.
async fn connect(lease: &Lease, upstream: &Upstream) -> Result<Sender, &'static str> {
    let dial = tokio::net::TcpStream::connect(lease.backend.dial);
    let stream = match timeout(upstream.conf.connect_timeout, dial).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err("connect"),
        Err(_) => return Err("timeout"),
    };
    let _ = stream.set_nodelay(true);
    pool::handshake(stream).await.map_err(|_| "connect")
}

fn fail(upstream: &Upstream, lease: &Lease, kind: &'static str) {
    crate::metrics::backend_failure(&upstream.name, &lease.backend.addr, kind);
    upstream.record_failure(lease.index, kind);
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
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

/// Removes `Connection`, the headers it names and the other hop-by-hop headers.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Turns the client's request into the one the backend gets; `None` when it is ambiguous,
/// refused with 400: both `Content-Length` and `Transfer-Encoding` (the smuggling shape), or
/// more than one `Host` (RFC 9112 §3.2: fulcrum and the backend could each read another).
fn prepare(req: Request<Incoming>, conn: &Conn, upgrade: bool) -> Option<Request<ReqBody>> {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    if headers.contains_key(header::TRANSFER_ENCODING)
        && headers.contains_key(header::CONTENT_LENGTH)
    {
        return None;
    }
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return None;
    }
    let upgrade_to = upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    // Absolute form (or HTTP/2's :authority): Host comes from the authority; fulcrum still
    // only ever connects to configured backends.
    if let Some(authority) = parts.uri.authority() {
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
    }
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::try_from(path).ok()?;
    }
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(headers);
    // fulcrum answers `Expect: 100-continue` itself, when the body is first read.
    headers.remove(header::EXPECT);
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", conn.peer.ip())).ok(),
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
    Some(Request::from_parts(parts, Either::Left(body)))
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
fn tunnel(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(c), Ok(b)) = (client.await, backend.await) else {
            return;
        };
        let mut c = TokioIo::new(c);
        let mut b = TokioIo::new(b);
        let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
    });
}

/// The backend's response as the client gets it: hop-by-hop headers removed (but kept on a
/// `101`), the body streamed, the connection pooled again once the body is done.
fn respond(
    mut resp: Response<Incoming>,
    lease: Lease,
    sender: Option<Sender>,
    progress: InProgress,
) -> Response<RespBody> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop(resp.headers_mut());
    }
    resp.map(|body| RespBody::Backend {
        body,
        done: Some(Done {
            sender,
            lease,
            _progress: progress,
        }),
    })
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
    resp
}

/// What ends with a backend response's body: the connection goes back to the pool, the
/// in-flight unit is released, the client connection may idle again.
pub struct Done {
    sender: Option<Sender>,
    lease: Lease,
    _progress: InProgress,
}

impl Done {
    fn complete(self) {
        if let Some(sender) = self.sender {
            self.lease.backend.pool.checkin(sender);
        }
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
                    Poll::Ready(Some(Err(_))) => {
                        // A backend that breaks mid-body: the connection is not reused.
                        if let Some(d) = done.take() {
                            d.lease.backend.failures.fetch_add(1, Ordering::Relaxed);
                            crate::metrics::backend_failure(
                                &d.lease.backend.upstream,
                                &d.lease.backend.addr,
                                "reset",
                            );
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
