//! gRPC as fulcrum sees it: a request is gRPC by its `content-type`; what fulcrum answers such
//! a request itself is a gRPC status (HTTP 200, `grpc-status` and `grpc-message` in a
//! trailers-only answer) that a gRPC client can act on, not an HTTP error page; and a
//! backend's `UNAVAILABLE` counts against it as a 503 would.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::{RespBody, fixed};
use crate::proxy::activity::InProgress;

static GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");

/// `application/grpc`, `application/grpc+proto`, `application/grpc-web...`: the content types
/// gRPC clients send (gRPC over HTTP/2, "Requests").
pub(super) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The fields (a head of a trailers-only answer, or trailers) carry `UNAVAILABLE` (14): the
/// backend says it cannot serve.
pub(super) fn unavailable(fields: &HeaderMap) -> bool {
    fields
        .get(&GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == b"14")
}

/// What a gRPC answer's trailers say of its backend.
pub(super) enum Outcome {
    /// A status, and not UNAVAILABLE: the backend served (an application error included).
    Ok,
    Unavailable,
    /// No `grpc-status`: the answer is broken.
    Missing,
}

pub(super) fn outcome(trailers: &HeaderMap) -> Outcome {
    match trailers.get(&GRPC_STATUS) {
        None => Outcome::Missing,
        Some(_) if unavailable(trailers) => Outcome::Unavailable,
        Some(_) => Outcome::Ok,
    }
}

/// The gRPC code for an HTTP status fulcrum would answer, after gRPC's HTTP-to-gRPC mapping,
/// except a response timeout: DEADLINE_EXCEEDED says what happened, and clients do not retry
/// it blindly.
fn code(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        504 => ("4", "backend response timeout"),
        503 => ("14", "no healthy backend"),
        502 => ("14", "backend failed"),
        421 => ("14", "misdirected request: open a connection for this host"),
        404 => ("12", "no route for this request"),
        405 | 501 => ("12", "not supported by the proxy"),
        400 | 431 => ("13", "malformed request"),
        _ => ("2", "proxy error"),
    }
}

/// fulcrum's own answer to a gRPC request, in place of the `status` page it would give any
/// other request.
pub(super) fn answer(status: StatusCode, progress: InProgress) -> Response<RespBody> {
    let (code, message) = code(status);
    let mut resp = fixed(StatusCode::OK, Bytes::new(), progress);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS.clone(), HeaderValue::from_static(code));
    headers.insert(GRPC_MESSAGE.clone(), HeaderValue::from_static(message));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fulcrums_own_errors_map_to_grpc_codes_clients_retry_on() {
        assert_eq!(code(StatusCode::SERVICE_UNAVAILABLE).0, "14");
        assert_eq!(code(StatusCode::BAD_GATEWAY).0, "14");
        assert_eq!(code(StatusCode::GATEWAY_TIMEOUT).0, "4");
        assert_eq!(code(StatusCode::NOT_FOUND).0, "12");
    }

    #[test]
    fn grpc_is_told_by_content_type() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
        h.insert(GRPC_STATUS.clone(), HeaderValue::from_static("14"));
        assert!(unavailable(&h));
    }
}
