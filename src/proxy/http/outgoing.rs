//! The request a backend gets: the client's, refused when ambiguous, with hop-by-hop fields
//! removed, framing made explicit, and the forwarding fields added.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, StatusCode, Version};
use http_body_util::Either;
use hyper::body::{Body, Incoming};

use super::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, join_cookies, strip_hop_by_hop};
use super::message;
use super::serve::Conn;
use crate::upstream::pool::ReqBody;

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

/// What a route changes in the request it forwards.
#[derive(Default)]
pub(super) struct Rewrite<'a> {
    /// The matched path prefix to remove (`strip_prefix`).
    pub strip: Option<&'a str>,
    /// `request_headers`, applied after fulcrum's own fields.
    pub headers: Option<&'a crate::config::HeaderRules>,
}

/// Turns the client's request into the one the backend gets, or the status that refuses
/// it: 400 when it is ambiguous (both `Content-Length` and `Transfer-Encoding`, the smuggling
/// shape, or more than one `Host`: RFC 9112 §3.2, fulcrum and the backend could each read
/// another), 501 for a transfer coding fulcrum does not know.
pub(super) fn prepare(
    req: Request<Incoming>,
    conn: &Conn,
    upgrade: bool,
    rewrite: &Rewrite<'_>,
) -> Result<Request<ReqBody>, StatusCode> {
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    let f = fields(headers);
    // hyper's own limit is checked between reads, so a head that arrives in large reads can
    // pass it; HTTP/2 has none of its own for the whole head.
    if f.size + parts.uri.path_and_query().map_or(0, |p| p.as_str().len()) > super::MAX_HEAD {
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
    if let Some(prefix) = rewrite.strip
        && let Some(uri) = super::route::strip(&parts.uri, prefix)
    {
        parts.uri = uri;
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
        Some(prev) => {
            HeaderValue::from_str(&format!("{prev}, {}", conn.client.addrs.client.ip())).ok()
        }
        None => Some(conn.peer_ip.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(conn.client.proto),
    );
    if let Some(rules) = rewrite.headers {
        super::route::apply(rules, headers);
    }
    if let Some(to) = upgrade_to {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, to);
    }
    Ok(Request::from_parts(parts, Either::Left(body)))
}
