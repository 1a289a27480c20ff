//! What changes when the backend speaks HTTP/2: the request's authority travels as
//! `:authority` (RFC 9113 §8.3.1), trailers are announced (`TE: trailers`, which gRPC
//! servers require), and a failed stream tells whether the backend ever saw it.

use http::Request;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme, Uri};

use crate::upstream::Failure;
use crate::upstream::pool::ReqBody;

/// Turns a request prepared for HTTP/1.1 into one for an HTTP/2 backend: `Host` becomes the
/// authority of an absolute URI (`https` over TLS), `Transfer-Encoding` goes (HTTP/2 frames
/// the body itself; hop-by-hop fields went in `prepare`) and `TE: trailers` is added. A
/// request without a host keeps its origin form and gets no `:authority`, as RFC 9113 §8.3.1
/// asks of an intermediary.
pub(super) fn to_h2(mut req: Request<ReqBody>, tls: bool) -> Request<ReqBody> {
    let headers = req.headers_mut();
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(host) = headers.remove(header::HOST) {
        let authority =
            Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(host.as_bytes()));
        let path = req.uri().path_and_query().cloned();
        if let (Ok(authority), Some(path)) = (authority, path) {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
            parts.authority = Some(authority);
            parts.path_and_query = Some(path);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        } else {
            // Not reached: `Host` was checked a valid host[:port] before. Kept as a field.
            req.headers_mut().insert(header::HOST, host);
        }
    }
    // The version stays HTTP/1.1: the `h2` crate then gives a request that kept its origin
    // form the `http` scheme instead of refusing it.
    req
}

/// What a failed stream says of the backend.
pub(super) enum StreamError {
    /// Refused unprocessed: `REFUSED_STREAM`, or above the last stream id of a `GOAWAY`
    /// (RFC 9113 §8.7). Safe to send again, anywhere, whatever the method.
    Refused,
    /// The backend broke the stream or its connection after it may have acted on it.
    Failed(Failure),
}

/// Classifies a failed HTTP/2 exchange by the `h2` error under hyper's.
pub(super) fn stream_error(e: &hyper::Error) -> StreamError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            if h2.is_remote()
                && (h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM))
            {
                return StreamError::Refused;
            }
            return StreamError::Failed(match h2.reason() {
                Some(
                    h2::Reason::PROTOCOL_ERROR
                    | h2::Reason::FRAME_SIZE_ERROR
                    | h2::Reason::COMPRESSION_ERROR,
                ) => Failure::Protocol,
                _ => Failure::Reset,
            });
        }
        source = s.source();
    }
    StreamError::Failed(if e.is_parse() {
        Failure::Protocol
    } else {
        Failure::Reset
    })
}
