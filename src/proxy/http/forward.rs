//! Forwarding one request: the checks that refuse it before any backend sees it, then the
//! exchange on a backend through the failover loop (`proxy::failover`): on a stream of a
//! shared HTTP/2 connection, a pooled HTTP/1.1 keep-alive connection, or a fresh one.

use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Incoming};

use super::dial::{Dialed, dial};
use super::headers::is_upgrade;
use super::outgoing::{Rewrite, prepare};
use super::serve::Conn;
use super::{MAX_HEADERS, grpc, message, tunnel::tunnel};
use crate::config::{ProxyProtocol, UpstreamProtocol};
use crate::proxy::backend::ConnectError;
use crate::proxy::failover::{self, Attempt, End, Outcome};
use crate::proxy_protocol::Addresses;
use crate::upstream::multiplex::{Dial, Stream};
use crate::upstream::pool::{self, ReqBody, Sender};
use crate::upstream::replay::Tape;
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
    pub pooled: Option<(pool::Key, Held)>,
    /// A gRPC answer with a body: whether the call failed shows in its trailers.
    pub grpc: bool,
}

/// The backend connection a response is read from, until its body ends.
pub(super) enum Held {
    /// Goes back to the pool.
    H1(Sender),
    /// Its stream's place on the shared connection is given back when this is dropped.
    H2(#[expect(dead_code, reason = "held for its Drop alone")] Stream),
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
    // HTTP/2 has no Upgrade (RFC 9113 §8.6): a WebSocket needs an HTTP/1.1 backend.
    if upgrade && upstream.conf.protocol.h2_only() {
        return Err((StatusCode::NOT_IMPLEMENTED, None));
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut outgoing = prepare(req, conn, upgrade, rewrite).map_err(|status| (status, None))?;
    // A bodiless idempotent request can be sent again if the connection breaks before any
    // response byte, when there is anywhere to send it.
    let safe = upstream.conf.retries > 0 && upstream.backends.len() > 1 && replayable(&outgoing);
    // HTTP/2 backends may refuse a stream unprocessed; it is then sent again, any method, so
    // its head and the body read so far are kept.
    let multiplexed = upstream.conf.protocol != UpstreamProtocol::Http1 && !upgrade;
    let tape = if multiplexed && !outgoing.body().is_end_stream() {
        keep_body(&mut outgoing)
    } else {
        None
    };
    let replay = (safe || multiplexed).then(|| head_of(&outgoing));
    let mut exchange = Exchange {
        outgoing: Some(outgoing),
        replay,
        tape,
        safe,
        upgrade,
        key: pool_key(upstream, &conn.client.addrs),
        addrs: &conn.client.addrs,
    };
    let ((mut resp, held), lease) = match failover::run(upstream, &mut exchange).await {
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
    // A backend that answers 502-504, or gRPC's UNAVAILABLE in its head (a trailers-only
    // answer), says it cannot serve: a failure for passive health. A gRPC answer with a body
    // is judged by its trailers, when they pass. gRPC needs HTTP/2: an HTTP/1.1 backend's
    // answers are judged by their status alone, as before.
    let h2 = resp.version() == http::Version::HTTP_2;
    let failed =
        matches!(resp.status().as_u16(), 502..=504) || (h2 && grpc::unavailable(resp.headers()));
    let grpc = h2 && !failed && grpc::is_grpc(resp.headers()) && !resp.body().is_end_stream();
    if failed {
        upstream.fail(&lease, Failure::Status);
    } else if !grpc {
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
            grpc: false,
        });
    }
    Ok(Forwarded {
        resp,
        backend,
        lease: Some(lease),
        pooled: Some((exchange.key, held)),
        grpc,
    })
}

/// One request's attempt on a backend: the exchange up to the response head.
pub(super) struct Exchange<'a> {
    /// The request, until it leaves; given back when it never did.
    pub(super) outgoing: Option<Request<ReqBody>>,
    /// What rebuilds the request: for a bodiless idempotent request that left but got no
    /// answer, and (HTTP/2) for a stream the backend refused unprocessed.
    replay: Option<Head>,
    /// The client's body as read so far, for a refused stream sent again (HTTP/2).
    pub(super) tape: Option<Tape>,
    /// Bodiless and idempotent, with somewhere else to go: sent again after a reset or a
    /// response timeout.
    pub(super) safe: bool,
    /// An Upgrade request: only an HTTP/1.1 connection can carry it.
    pub(super) upgrade: bool,
    pub(super) key: pool::Key,
    pub(super) addrs: &'a Addresses,
}

impl Exchange<'_> {
    /// The request for this attempt: the original, or one rebuilt from its head and kept body.
    fn request(&mut self) -> Option<Request<ReqBody>> {
        if let Some(req) = self.outgoing.take() {
            return Some(req);
        }
        let head = self.replay.as_ref()?;
        let body = match &self.tape {
            Some(tape) => Either::Right(Either::Right(tape.replay()?)),
            None => Either::Right(Either::Left(Empty::new())),
        };
        Some(rebuild(head, body))
    }
}

impl Attempt for Exchange<'_> {
    type Output = (Response<Incoming>, Held);
    /// The client's own request broke: fulcrum answers this status.
    type Abort = StatusCode;

    async fn run(
        &mut self,
        upstream: &Upstream,
        lease: &Lease,
    ) -> Outcome<Self::Output, StatusCode> {
        let Some(req) = self.request() else {
            // A request whose body was read beyond what is kept, refused after that: it
            // cannot be sent again, and no backend is at fault.
            return Outcome::Abort(StatusCode::BAD_GATEWAY);
        };
        let backend = &lease.backend;
        let protocol = upstream.conf.protocol;
        let auto = protocol == UpstreamProtocol::Auto;
        // `auto` whose backend chose HTTP/1.1 last time goes the HTTP/1.1 way, as does an
        // Upgrade (HTTP/2 cannot carry one).
        let multiplexed = protocol != UpstreamProtocol::Http1
            && !self.upgrade
            && !(auto && backend.multiplex.speaks_h1());
        let max = upstream.conf.max_streams;
        if multiplexed && let Some(stream) = backend.multiplex.checkout(&self.key, max) {
            return self.on_stream(req, stream, upstream).await;
        }
        if !protocol.h2_only()
            && let Some(mut s) = backend.pool.checkout(&self.key)
            && s.ready().await.is_ok()
        {
            // Handed out ready; if it closed since, a new connection is dialled.
            return self.on_h1(req, s, true, upstream, lease).await;
        }
        // A connection that announces one client with a PROXY header is that client's alone:
        // there is nothing to share, nor to wait for.
        let opening = if multiplexed && self.key.client.is_none() {
            // One shared opening per backend at a time: requests that arrive meanwhile
            // share it.
            match backend.multiplex.dial().await {
                Dial::Open(opening) => Some(opening),
                Dial::Failed(why) => {
                    self.outgoing = Some(req);
                    return why.map_or(Outcome::Local, |f| Outcome::Failed(f, true));
                }
            }
        } else {
            None
        };
        if opening.is_some()
            && let Some(stream) = backend.multiplex.checkout(&self.key, max)
        {
            return self.on_stream(req, stream, upstream).await;
        }
        match dial(backend, upstream, self.addrs).await {
            Ok(Dialed::H2(..)) if self.upgrade => Outcome::Abort(StatusCode::NOT_IMPLEMENTED),
            Ok(Dialed::H2(s, heard)) => {
                backend.multiplex.set_speaks_h1(false);
                let stream = backend.multiplex.add(self.key, s, heard);
                drop(opening);
                self.on_stream(req, stream, upstream).await
            }
            Ok(Dialed::H1(s)) => {
                drop(opening);
                if auto {
                    backend.multiplex.set_speaks_h1(true);
                }
                self.on_h1(req, s, false, upstream, lease).await
            }
            Err(e) => {
                if let Some(opening) = opening {
                    opening.failed(match e {
                        ConnectError::Backend(f) => Some(f),
                        ConnectError::Local => None,
                    });
                }
                self.outgoing = Some(req);
                e.into()
            }
        }
    }
}

/// Idle connections that may carry this client's requests: with `send_proxy_protocol`, only
/// those that announced this very client (and listener).
pub(super) fn pool_key(upstream: &Upstream, addrs: &Addresses) -> pool::Key {
    let client = match upstream.conf.send_proxy_protocol {
        ProxyProtocol::Off => None,
        version => Some((version, *addrs)),
    };
    pool::Key {
        link: upstream.link,
        client,
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

/// Puts the client's body on a tape, so a refused stream can be sent again with it.
fn keep_body(req: &mut Request<ReqBody>) -> Option<Tape> {
    let body = std::mem::replace(req.body_mut(), Either::Right(Either::Left(Empty::new())));
    let Either::Left(incoming) = body else {
        *req.body_mut() = body;
        return None;
    };
    let (tape, first) = Tape::new(incoming);
    *req.body_mut() = Either::Right(Either::Right(first));
    Some(tape)
}

/// What is needed to send a request again.
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

fn rebuild(head: &Head, body: ReqBody) -> Request<ReqBody> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.headers_mut() = head.headers.clone();
    req
}
