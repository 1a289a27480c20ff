//! What an HTTP message must look like to pass through unchanged: a request target and `Host`
//! that name one resource, and a response whose body's end is not in doubt. A proxy may refuse
//! a message; it must never pass on one that it and the next hop could read differently.

use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Uri};

/// Checks the request target's form (RFC 9112 §3.2): origin form (`/path`) for every method,
/// `*` only with `OPTIONS`, absolute form (`http://host/path`) with an http or https scheme.
/// Authority form (`host:port`) is CONNECT's alone, which fulcrum refuses before this; a
/// target without a leading `/` parses as one and is refused with it. HTTP/2's `:scheme`,
/// `:authority` and `:path` arrive as an absolute form, whose path obeys the same rule.
pub fn check_target(method: &Method, uri: &Uri) -> Result<(), StatusCode> {
    let path = uri.path_and_query().map_or("", |p| p.as_str());
    if let Some(scheme) = uri.scheme_str() {
        let known = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        let host_ok = uri
            .authority()
            .is_some_and(|a| valid_host(a.as_str().as_bytes()));
        // An empty path or a bare query is how `http://host` and `http://host?q` parse.
        let path_ok = path.is_empty() || path.starts_with(['/', '?']) || is_asterisk(method, path);
        return if known && host_ok && path_ok {
            Ok(())
        } else {
            Err(StatusCode::BAD_REQUEST)
        };
    }
    if uri.authority().is_some() {
        return Err(StatusCode::BAD_REQUEST);
    }
    if path.starts_with('/') || is_asterisk(method, path) {
        Ok(())
    } else {
        Err(StatusCode::BAD_REQUEST)
    }
}

/// The checks forwarding applies to a request head (`forward`, `outgoing::prepare`), for a
/// request fulcrum answers itself (a redirect, a fixed answer, 404, 421): a malformed request
/// gets 400 or 431 whatever route it would take, and a bad `Host` is never echoed.
pub fn check_head(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), StatusCode> {
    if headers.len() > super::MAX_HEADERS {
        return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
    check_target(method, uri)?;
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(StatusCode::BAD_REQUEST),
        (Some(h), None) if !valid_host(h.as_bytes()) => Err(StatusCode::BAD_REQUEST),
        _ => Ok(()),
    }
}

fn is_asterisk(method: &Method, path: &str) -> bool {
    path == "*" && method == Method::OPTIONS
}

/// The origin form a checked target is forwarded in (RFC 9112 §3.2.2): the path and query
/// with a leading `/` (or HTTP/2's `*` of an `OPTIONS`).
pub fn origin_form(uri: &Uri) -> Result<Uri, StatusCode> {
    let origin = match uri.path_and_query().map_or("", |p| p.as_str()) {
        "" => return Ok(Uri::from_static("/")),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Uri::try_from(origin).map_err(|_| StatusCode::BAD_REQUEST)
}

/// True when `v` is a valid `Host` value (RFC 9110 §7.2): `uri-host [ ":" port ]`, where the
/// host is a bracketed IP literal or a reg-name. So no `/`, `\`, space, control byte, `@`
/// (userinfo) or second port: a backend that splits such a value elsewhere than fulcrum would
/// route or cache it under another name. An empty value is allowed (RFC 9112 §3.2).
pub fn valid_host(v: &[u8]) -> bool {
    if v.is_empty() {
        return true;
    }
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let (literal, after) = rest.split_at(end);
        let port = match after.get(1..) {
            Some([]) | None => None,
            Some([b':', port @ ..]) => Some(port),
            Some(_) => return false,
        };
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b":.-_~!$&'()*+,;=".contains(&b));
        if !ok {
            return false;
        }
        (None, port)
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (v.get(..i), v.get(i + 1..)),
            None => (Some(v), None),
        }
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b))
    });
    let port_ok = port.is_none_or(|p| {
        p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .and_then(|p| p.parse::<u32>().ok())
                .is_none_or(|n| n <= 65_535)
    });
    host_ok && port_ok
}

/// True when a backend response's body ends where fulcrum and the client would both read it
/// to end: not `Transfer-Encoding` together with `Content-Length` (RFC 9112 §6.3: a sign of
/// smuggling), and no coding but one `chunked` (fulcrum removes `Transfer-Encoding` as
/// hop-by-hop, so a `gzip` or a second `chunked` would reach the client undecoded and
/// unannounced). hyper itself refuses an invalid `Content-Length`.
pub fn response_framing_is_clear(headers: &HeaderMap) -> bool {
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    !headers.contains_key(header::CONTENT_LENGTH) && only_chunked(headers)
}

/// True when `Transfer-Encoding` names exactly one coding, `chunked`.
pub fn only_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    matches!((codings.next(), codings.next()), (Some(c), None) if c.eq_ignore_ascii_case(b"chunked"))
}

#[cfg(test)]
mod tests;
