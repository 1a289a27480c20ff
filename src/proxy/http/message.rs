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
mod tests {
    use super::*;
    use http::HeaderValue;

    fn target(method: Method, t: &str) -> Result<(), StatusCode> {
        let uri: Uri = t.parse().expect("a uri the parser takes");
        check_target(&method, &uri)
    }

    #[test]
    fn origin_and_absolute_forms_pass_for_every_method() {
        for m in [Method::GET, Method::POST, Method::OPTIONS, Method::DELETE] {
            assert_eq!(target(m.clone(), "/a?b=c"), Ok(()), "{m} /a?b=c");
            assert_eq!(target(m.clone(), "http://h:8080/x"), Ok(()), "{m} absolute");
            assert_eq!(
                target(m.clone(), "HTTPS://h/"),
                Ok(()),
                "{m} scheme in capitals"
            );
        }
    }

    #[test]
    fn asterisk_form_is_for_options_only() {
        assert_eq!(target(Method::OPTIONS, "*"), Ok(()));
        assert_eq!(target(Method::GET, "*"), Err(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn authority_form_and_targets_without_a_slash_are_refused() {
        for t in ["example.com:80", "foo", "ftp://h/x", "http://u@h/x"] {
            assert_eq!(target(Method::GET, t), Err(StatusCode::BAD_REQUEST), "{t}");
        }
    }

    /// What HTTP/2 makes of `:scheme http`, `:authority h` and a `:path`, as h2 builds it;
    /// `None` where the http crate refuses the parts (h2 then resets the stream).
    fn h2_target(path: &str) -> Option<Uri> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(http::uri::Authority::from_static("h"));
        parts.path_and_query = Some(path.parse().ok()?);
        Uri::from_parts(parts).ok()
    }

    #[test]
    fn an_http2_path_obeys_the_origin_form_rule() {
        let check = |m: Method, p: &str| h2_target(p).map(|u| check_target(&m, &u));
        assert_eq!(check(Method::GET, "/x"), Some(Ok(())));
        assert_eq!(check(Method::OPTIONS, "*"), Some(Ok(())));
        for p in ["*", "foo", "http://other/x", "example.com:80"] {
            assert!(
                matches!(
                    check(Method::GET, p),
                    None | Some(Err(StatusCode::BAD_REQUEST))
                ),
                "HTTP/2 :path {p:?} must be refused"
            );
        }
    }

    #[test]
    fn absolute_forms_are_forwarded_in_origin_form() {
        for (target, want) in [
            ("http://h/a?b", "/a?b"),
            ("http://h", "/"),
            ("http://h?q=1", "/?q=1"),
            ("/plain", "/plain"),
        ] {
            let uri: Uri = target.parse().expect("uri");
            let origin = origin_form(&uri).map(|u| u.to_string());
            assert_eq!(origin.as_deref(), Ok(want), "{target}");
        }
    }

    #[test]
    fn hosts_are_host_and_an_optional_port() {
        for ok in [
            "a",
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.ch",
            "",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok:?} is a valid Host");
        }
        for bad in [
            "a/b", "a\\b", "a b", "a\tb", "a\x01b", "a:1:2", ":80", "a:80x", "u@h", "[::1",
            "[::1]x", "[]", "a:123456", "a:65536",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?} is not a valid Host");
        }
    }

    #[test]
    fn ambiguous_response_framing_is_not_clear() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, HeaderValue::from_static(v));
            }
            response_framing_is_clear(&h)
        };
        assert!(with(&[]));
        assert!(with(&[("content-length", "3")]));
        assert!(with(&[("transfer-encoding", "chunked")]));
        assert!(with(&[("transfer-encoding", "Chunked")]));
        assert!(!with(&[("transfer-encoding", "chunked, chunked")]));
        assert!(!with(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked")
        ]));
        assert!(!with(&[("transfer-encoding", "gzip, chunked")]));
        assert!(!with(&[("transfer-encoding", "gzip")]));
        assert!(!with(&[
            ("transfer-encoding", "chunked"),
            ("content-length", "3")
        ]));
    }
}
