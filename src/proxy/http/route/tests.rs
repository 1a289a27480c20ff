use super::*;

fn redirect() -> Redirect {
    Redirect {
        scheme: None,
        host: None,
        port: None,
        path: None,
        status: StatusCode::FOUND,
    }
}

#[test]
fn a_redirect_keeps_what_it_does_not_replace_and_the_query() {
    let uri: Uri = "/a/b?x=1".parse().expect("uri");
    let loc = |to: &Redirect, auth: &str, scheme: &str| {
        location(to, &uri, Some(auth), scheme).map(|v| v.to_str().expect("ascii").to_owned())
    };
    let https = Redirect {
        scheme: Some("https".into()),
        ..redirect()
    };
    assert_eq!(
        loc(&https, "example.com:8080", "http").as_deref(),
        Some("https://example.com/a/b?x=1"),
        "a new scheme drops the Host's port"
    );
    assert_eq!(
        loc(&redirect(), "example.com:8080", "http").as_deref(),
        Some("http://example.com:8080/a/b?x=1")
    );
    let moved = Redirect {
        host: Some("www.example.com".into()),
        port: Some(8443),
        path: Some("/new".into()),
        ..https
    };
    assert_eq!(
        loc(&moved, "[::1]:80", "http").as_deref(),
        Some("https://www.example.com:8443/new?x=1")
    );
    assert_eq!(location(&redirect(), &uri, None, "http"), None);
}

#[test]
fn strip_keeps_one_slash_and_the_query() {
    let s = |uri: &str, p: &str| strip(&uri.parse().expect("uri"), p).map(|u| u.to_string());
    assert_eq!(s("/v1/users?a=1", "/v1").as_deref(), Some("/users?a=1"));
    assert_eq!(s("/v1", "/v1").as_deref(), Some("/"));
    assert_eq!(s("/v1?q", "/v1").as_deref(), Some("/?q"));
}
