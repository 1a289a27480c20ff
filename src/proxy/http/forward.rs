//! Forwarding one request: the checks that refuse it before any backend sees it, then the
//! exchange on a backend through the failover loop (`proxy::failover`), on a pooled
//! keep-alive connection or a fresh one.

use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};
use tokio::time::timeout;

use super::headers::is_upgrade;
use super::outgoing::{Rewrite, prepare};
use super::serve::Conn;
use super::{MAX_HEADERS, message, tunnel::tunnel};
use crate::config::ProxyProtocol;
use crate::proxy::backend::ConnectError;
use crate::proxy::failover::{self, Attempt, End, Outcome};
use crate::proxy_protocol::Addresses;
use crate::upstream::pool::{self, ReqBody, Sender};
use crate::upstream::{Backend, Failure, Lease, Upstream};

/// What fulcrum answers itself, and the last backend tried (the `backend` label of a 502).
pub(super) type Refusal = (StatusCode, Option<Arc<Backend>>);

/// A backend's answer and what it holds until its body is done.
pub(super) struct Forwarded {
    pub resp: Response<Incoming>,
    pub backend: Arc<Backend>,
    /// `None` for a `101`: the tunnel holds the lease.
    pub lease: Option<Lease>,
    /// The connection and the pool key it goes back under (`None` for a `101`).
    pub pooled: Option<(pool::Key, Sender)>,
}

/// Sends the request to a backend, failing over where it is safe. The error is the status
/// fulcrum answers itself: all error-to-status mapping is here.
pub(super) async fn forward(
    mut req: Request<Incoming>,
    conn: &Conn,
    upstream: &Upstream,
    rewrite: &Rewrite<'_>,
) -> Result<Forwarded, Refusal> {
    // hyper enforces this for HTTP/1; HTTP/2 has no field count limit of its own.
    if req.headers().len() > MAX_HEADERS {
        return Err((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None));
    }
    message::check_target(req.method(), req.uri()).map_err(|status| (status, None))?;
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let outgoing = prepare(req, conn, upgrade, rewrite).map_err(|status| (status, None))?;
    // A bodiless idempotent request can be sent again if the connection breaks before any
    // response byte: keep what is needed to rebuild it, when there is anywhere to send it.
    let replay =
        (upstream.conf.retries > 0 && upstream.backends.len() > 1 && replayable(&outgoing))
            .then(|| head_of(&outgoing));
    let mut exchange = Exchange {
        outgoing: Some(outgoing),
        replay,
        key: pool_key(upstream, &conn.client.addrs),
        addrs: &conn.client.addrs,
    };
    let ((mut resp, sender), lease) = match failover::run(upstream, &mut exchange).await {
        Ok(answered) => answered,
        Err(End::NoHealthy) => return Err((StatusCode::SERVICE_UNAVAILABLE, None)),
        // No response byte in time from the last backend tried: 504, as nginx answers.
        Err(End::Failed { last, timeout }) => {
            let status = if timeout {
                StatusCode::GATEWAY_TIMEOUT
            } else {
                StatusCode::BAD_GATEWAY
            };
            return Err((status, Some(last)));
        }
        Err(End::Aborted(status, last)) => return Err((status, Some(last))),
    };
    if matches!(resp.status().as_u16(), 502..=504) {
        upstream.fail(&lease, Failure::Status);
    } else {
        upstream.record_success(lease.index);
    }
    let backend = Arc::clone(&lease.backend);
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let lease = match client_upgrade {
            Some(client) => {
                tunnel(conn, client, hyper::upgrade::on(&mut resp), lease);
                None
            }
            None => Some(lease),
        };
        return Ok(Forwarded {
            resp,
            backend,
            lease,
            pooled: None,
        });
    }
    Ok(Forwarded {
        resp,
        backend,
        lease: Some(lease),
        pooled: Some((exchange.key, sender)),
    })
}

/// One request's attempt on a backend: the exchange up to the response head.
struct Exchange<'a> {
    /// The request, until it leaves; given back when it never did.
    outgoing: Option<Request<ReqBody>>,
    /// What rebuilds a bodiless idempotent request that left but got no answer.
    replay: Option<Head>,
    key: pool::Key,
    addrs: &'a Addresses,
}

/// What became of one attempt to send on a backend connection.
enum Sent {
    Response(Response<Incoming>),
    /// The request never left (no usable connection): safe to send elsewhere, any method.
    Unsent(Request<ReqBody>, ConnectError),
    Failed(hyper::Error),
}

impl Attempt for Exchange<'_> {
    type Output = (Response<Incoming>, Sender);
    /// The client's own request broke: fulcrum answers this status.
    type Abort = StatusCode;

    async fn run(
        &mut self,
        upstream: &Upstream,
        lease: &Lease,
    ) -> Outcome<Self::Output, StatusCode> {
        let Some(req) = self
            .outgoing
            .take()
            .or_else(|| self.replay.as_ref().map(rebuild))
        else {
            // Not reached: a request that cannot be sent again is never given another try.
            // Were it reached, no backend is at fault, so none is blamed.
            return Outcome::Abort(StatusCode::BAD_GATEWAY);
        };
        let pooled = match lease.backend.pool.checkout(&self.key) {
            // Handed out ready; if it closed since, a new connection is dialled.
            Some(mut s) => s.ready().await.is_ok().then_some(s),
            None => None,
        };
        let reused = pooled.is_some();
        let mut sender = match pooled {
            Some(s) => s,
            None => match connect(lease, upstream, self.addrs).await {
                Ok(s) => s,
                Err(e) => {
                    self.outgoing = Some(req);
                    return e.into();
                }
            },
        };
        let again = self.replay.is_some();
        let sent = timeout(
            upstream.conf.response_timeout,
            send(&mut sender, req, reused, lease, upstream, self.addrs),
        )
        .await;
        match sent {
            // No response byte in time: like a connection broken before the response, a
            // bodiless idempotent request goes to another backend (nginx's
            // `proxy_next_upstream timeout`); a backend that went silent (a paused container,
            // a cut network) then costs its clients a delay, not an error.
            Err(_) => Outcome::Failed(Failure::Timeout, again),
            Ok(Sent::Unsent(req, e)) => {
                self.outgoing = Some(req);
                e.into()
            }
            // Dropped with its connection unread: the connection is never reused.
            Ok(Sent::Response(resp)) if !message::response_framing_is_clear(resp.headers()) => {
                Outcome::Failed(Failure::Protocol, false)
            }
            Ok(Sent::Response(resp)) => Outcome::Done((resp, sender)),
            Ok(Sent::Failed(e)) if e.is_user() => {
                // The client's own body broke (a bad chunk size, or the client went away):
                // the backend is not at fault, and the request cannot be completed.
                tracing::debug!(error = %e, "client request body failed");
                Outcome::Abort(StatusCode::BAD_REQUEST)
            }
            Ok(Sent::Failed(e)) if e.is_parse() || e.is_parse_status() => {
                // Response bytes came, but not a response fulcrum can pass on: the backend
                // answered, so the request is not sent again.
                tracing::debug!(upstream = %upstream.name, backend = %lease.backend.addr, error = %e, "backend response unreadable");
                Outcome::Failed(Failure::Protocol, false)
            }
            Ok(Sent::Failed(e)) => {
                tracing::debug!(upstream = %upstream.name, backend = %lease.backend.addr, error = %e, "backend exchange failed");
                Outcome::Failed(Failure::Reset, again)
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
    let client = match upstream.conf.send_proxy_protocol {
        ProxyProtocol::Off => None,
        version => Some((version, *addrs)),
    };
    pool::Key {
        link: upstream.link,
        client,
    }
}

/// A fresh connection to the lease's backend (TLS when the upstream says so), within
/// `connect_timeout`.
async fn connect(
    lease: &Lease,
    upstream: &Upstream,
    addrs: &Addresses,
) -> Result<Sender, ConnectError> {
    let handshake = match crate::proxy::backend::connect(&lease.backend, upstream, addrs).await? {
        // Each kind gets its own hyper connection type: plain TCP pays nothing for TLS.
        tokio_util::either::Either::Left(tcp) => handshake(tcp).await,
        tokio_util::either::Either::Right(tls) => handshake(tls).await,
    };
    handshake.map_err(|_| ConnectError::Backend(Failure::Connect))
}

/// Performs the HTTP/1.1 handshake on a fresh backend connection (plain TCP or TLS) and
/// drives it in a task.
async fn handshake<I>(stream: I) -> Result<Sender, hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(super::MAX_HEAD + 16 * 1024)
        .handshake(hyper_util::rt::TokioIo::new(
            crate::proxy::gather::Gathered(stream),
        ))
        .await?;
    tokio::spawn(async move {
        // Errors here surface on the request that was in progress, if any.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
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
