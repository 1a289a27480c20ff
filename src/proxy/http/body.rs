//! The response the client gets: the backend's, streamed, its connection pooled again once the
//! body is done; or a short one fulcrum makes itself.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::forward::{Forwarded, Held};
use crate::proxy::activity::InProgress;
use crate::upstream::pool;
use crate::upstream::{Failure, Lease, Upstream};

/// The backend's response as the client gets it: hop-by-hop headers removed (but kept on a
/// `101`), the body streamed, the connection pooled again once the body is done.
pub(super) fn respond(
    f: Forwarded,
    upstream: &Arc<Upstream>,
    progress: InProgress,
) -> Response<RespBody> {
    let mut resp = f.resp;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        super::headers::strip_hop_by_hop(resp.headers_mut());
    }
    // An HTTP/2 backend's answer goes to an HTTP/1.1 client as HTTP/1.1.
    if resp.version() == http::Version::HTTP_2 {
        *resp.version_mut() = http::Version::HTTP_11;
    }
    let done = Done {
        held: f.pooled,
        lease: f.lease,
        upstream: Arc::clone(upstream),
        grpc: f.grpc,
        _progress: progress,
    };
    // HEAD, 204, 304 and empty bodies are never polled (hyper sees their end up front): their
    // connection goes back to the pool now, or it would be closed with the body.
    let done = if resp.body().is_end_stream() {
        done.complete(None);
        None
    } else {
        Some(done)
    };
    resp.map(|body| RespBody::Backend { body, done })
}

/// A response fulcrum makes itself: a short plain-text body, no internals.
pub(super) fn local(status: StatusCode, progress: InProgress) -> Response<RespBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = fixed(status, Bytes::from(text), progress);
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

/// A plain-text answer of fulcrum's own: an error, a redirect or a route's fixed answer.
pub(super) fn fixed(status: StatusCode, body: Bytes, progress: InProgress) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::Local {
        body: Full::new(body),
        _progress: progress,
    });
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What ends with a backend response's body: the connection goes back to the pool (or its
/// HTTP/2 stream's place is given back), the in-flight unit is released, the client
/// connection may idle again.
pub struct Done {
    /// The connection and the pool key it goes back under.
    held: Option<(pool::Key, Held)>,
    lease: Option<Lease>,
    /// Where a body that breaks off is recorded as its backend's failure.
    upstream: Arc<Upstream>,
    /// A gRPC answer: its outcome is in its trailers, and recorded when they pass.
    grpc: bool,
    _progress: InProgress,
}

impl Done {
    /// The body ended, with these trailers if any.
    fn complete(self, trailers: Option<&http::HeaderMap>) {
        if let Some(lease) = &self.lease
            && self.grpc
        {
            match trailers.map(super::grpc::outcome) {
                Some(super::grpc::Outcome::Ok) => self.upstream.record_success(lease.index),
                Some(super::grpc::Outcome::Unavailable) => {
                    self.upstream.fail(lease, Failure::Status);
                }
                // A gRPC answer must end with its status (gRPC over HTTP/2, "Responses").
                Some(super::grpc::Outcome::Missing) | None => {
                    self.upstream.fail(lease, Failure::Protocol);
                }
            }
        }
        if let (Some((key, Held::H1(sender))), Some(lease)) = (self.held, &self.lease) {
            lease.backend.pool.checkin(key, sender);
        }
    }

    /// The backend broke off its body (`reset`) or framed it wrongly (`protocol`, a bad
    /// chunk): the client connection is closed by hyper, the backend connection dropped.
    fn broken(self, e: &hyper::Error) {
        if let Some(lease) = &self.lease {
            self.upstream.fail(lease, body_failure_kind(e));
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
                            d.complete(None);
                        }
                    }
                    Poll::Ready(Some(Ok(frame))) if body.is_end_stream() || frame.is_trailers() => {
                        if let Some(d) = done.take() {
                            d.complete(frame.trailers_ref());
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
