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
        "a/b", "a\\b", "a b", "a\tb", "a\x01b", "a:1:2", ":80", "a:80x", "u@h", "[::1", "[::1]x",
        "[]", "a:123456", "a:65536",
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
