//! The exchange on one backend connection, up to the response head: a stream of a shared
//! HTTP/2 connection, or an HTTP/1.1 connection (pooled, or fresh); what became of it, as the
//! failover loop (`proxy::failover`) reads it.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::timeout;

use super::dial::{Dialed, dial};
use super::forward::{Exchange, Held, pool_key};
use super::h2::{StreamError, stream_error, to_h2};
use super::message;
use crate::proxy::backend::ConnectError;
use crate::proxy::failover::Outcome;
use crate::proxy_protocol::Addresses;
use crate::upstream::multiplex::Stream;
use crate::upstream::pool::{ReqBody, Sender};
use crate::upstream::replay::Tape;
use crate::upstream::{Failure, Lease, Upstream};

/// What became of one attempt to send on an HTTP/1.1 connection.
enum Sent {
    Response(Response<Incoming>),
    /// The request never left (no usable connection): safe to send elsewhere, any method.
    Unsent(Request<ReqBody>, ConnectError),
    /// A fresh connection to the backend turned out to speak HTTP/2 (`auto`): kept for the
    /// next attempt, which this request makes.
    Multiplexed(Request<ReqBody>),
    Failed(hyper::Error),
}

impl Exchange<'_> {
    /// The exchange on a stream of a shared HTTP/2 connection.
    pub(super) async fn on_stream(
        &mut self,
        req: Request<ReqBody>,
        mut stream: Stream,
        upstream: &Upstream,
    ) -> Outcome<(Response<Incoming>, Held), StatusCode> {
        let req = to_h2(req, upstream.tls.is_some());
        let sent = timeout(
            upstream.conf.response_timeout,
            stream.sender.try_send_request(req),
        )
        .await;
        match sent {
            Ok(Ok(resp)) => {
                // Answered: nothing will be sent again.
                if let Some(tape) = &self.tape {
                    tape.seal();
                }
                Outcome::Done((resp, Held::H2(stream)))
            }
            Err(_) => Outcome::Failed(Failure::Timeout, self.safe),
            Ok(Err(_)) if self.tape.as_ref().is_some_and(Tape::broken) => {
                // The client's own body broke: the backend is not at fault.
                Outcome::Abort(StatusCode::BAD_REQUEST)
            }
            // A connection that broke before the backend sent a byte (not even its SETTINGS):
            // nothing on it was processed, and the backend is at fault, as for a refused
            // connection. The request goes elsewhere, whatever its method.
            Ok(Err(_)) if !stream.heard.get() => Outcome::Failed(Failure::Connect, true),
            // A shared connection closed before the stream opened (it got a GOAWAY, or
            // broke): the request never left.
            Ok(Err(e)) if e.message().is_some() => Outcome::Refused,
            // hyper held the request (the backend's stream limit was reached) and its
            // connection ended before sending it.
            Ok(Err(e)) if e.error().is_canceled() && stream.sender.is_closed() => Outcome::Refused,
            Ok(Err(e)) => {
                let e = e.into_error();
                match stream_error(&e) {
                    StreamError::Refused => Outcome::Refused,
                    StreamError::Failed(failure) => {
                        tracing::debug!(upstream = %upstream.name, error = %e, "backend stream failed");
                        Outcome::Failed(failure, self.safe)
                    }
                }
            }
        }
    }

    /// The exchange on an HTTP/1.1 connection, `reused` from the pool or fresh.
    pub(super) async fn on_h1(
        &mut self,
        req: Request<ReqBody>,
        mut sender: Sender,
        reused: bool,
        upstream: &Upstream,
        lease: &Lease,
    ) -> Outcome<(Response<Incoming>, Held), StatusCode> {
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
            Err(_) => Outcome::Failed(Failure::Timeout, self.safe),
            Ok(Sent::Unsent(req, e)) => {
                self.outgoing = Some(req);
                e.into()
            }
            Ok(Sent::Multiplexed(_)) if self.upgrade => Outcome::Abort(StatusCode::NOT_IMPLEMENTED),
            Ok(Sent::Multiplexed(req)) => {
                self.outgoing = Some(req);
                Outcome::Refused
            }
            // Dropped with its connection unread: the connection is never reused.
            Ok(Sent::Response(resp)) if !message::response_framing_is_clear(resp.headers()) => {
                Outcome::Failed(Failure::Protocol, false)
            }
            Ok(Sent::Response(resp)) => {
                if let Some(tape) = &self.tape {
                    tape.seal();
                }
                Outcome::Done((resp, Held::H1(sender)))
            }
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
                Outcome::Failed(Failure::Reset, self.safe)
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
    *sender = match dial(&lease.backend, upstream, addrs).await {
        Ok(Dialed::H1(s)) => s,
        Ok(Dialed::H2(s, heard)) => {
            // `auto`, and the backend now speaks HTTP/2: its connection is kept, and the
            // request goes again through the failover loop, which finds it.
            lease.backend.multiplex.set_speaks_h1(false);
            drop(
                lease
                    .backend
                    .multiplex
                    .add(pool_key(upstream, addrs), s, heard),
            );
            return Sent::Multiplexed(req);
        }
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
