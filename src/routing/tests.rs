use std::path::Path;

use http::{HeaderMap, HeaderValue, Method};

use super::{Request, Router, host_key};
use crate::config::Config;

/// The routes of the first listener of a config whose routes are `routes` (TOML), each
/// route's target being its upstream's name.
fn router(routes: &str) -> Router<String> {
    let toml = format!(
        "[upstream.a]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n\
         [upstream.b]\nbackends = [{{ addr = \"127.0.0.1:2\" }}]\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n{routes}"
    );
    let config = Config::from_toml(&toml, Path::new("t.toml")).expect("valid");
    Router::build(&config.listeners[0].routes, |u| Some(u.to_owned()), None)
}

fn pick<'a>(r: &'a Router<String>, host: &str, path: &str, headers: &HeaderMap) -> Option<&'a str> {
    let host = host_key(host);
    let req = Request {
        host: &host,
        path,
        method: &Method::GET,
        headers,
    };
    r.lookup(&req).map(|route| &*route.name)
}

#[test]
fn the_first_route_in_file_order_wins_across_exact_wildcard_and_any_host() {
    let r = router(
        r#"
[[listener.route]]
name = "wild-api"
host = ["*.example.com"]
path = "/api"
upstream = "a"
[[listener.route]]
name = "exact"
host = ["www.example.com"]
upstream = "b"
[[listener.route]]
name = "any-static"
path = "/static/"
upstream = "b"
[[listener.route]]
name = "wild"
host = ["*.example.com"]
upstream = "a"
"#,
    );
    let h = HeaderMap::new();
    assert_eq!(pick(&r, "www.example.com", "/api/x", &h), Some("wild-api"));
    assert_eq!(pick(&r, "WWW.Example.COM:8080", "/", &h), Some("exact"));
    assert_eq!(
        pick(&r, "other.example.com", "/static/app.js", &h),
        Some("any-static")
    );
    assert_eq!(pick(&r, "a.b.example.com", "/x", &h), Some("wild"));
    assert_eq!(
        pick(&r, "example.com", "/x", &h),
        None,
        "a wildcard needs a label"
    );
    assert_eq!(pick(&r, "elsewhere.org", "/static", &h), Some("any-static"));
}

#[test]
fn headers_and_methods_narrow_a_route() {
    let r = router(
        r#"
[[listener.route]]
name = "canary"
headers = { X-Canary = "1" }
upstream = "b"
[[listener.route]]
name = "writes"
methods = ["POST", "PUT"]
upstream = "b"
[[listener.route]]
name = "rest"
upstream = "a"
"#,
    );
    let mut h = HeaderMap::new();
    assert_eq!(pick(&r, "x", "/", &h), Some("rest"));
    h.insert("x-canary", HeaderValue::from_static("1"));
    assert_eq!(pick(&r, "x", "/", &h), Some("canary"));
    h.insert("x-canary", HeaderValue::from_static("2"));
    assert_eq!(pick(&r, "x", "/", &h), Some("rest"));
    let host = host_key("x");
    let post = Request {
        host: &host,
        path: "/",
        method: &Method::POST,
        headers: &HeaderMap::new(),
    };
    assert_eq!(r.lookup(&post).map(|r| &*r.name), Some("writes"));
}

#[test]
fn a_thousand_host_routes_are_found_by_hashing() {
    let mut routes = String::new();
    for i in 1..=1000 {
        routes.push_str(&format!(
            "[[listener.route]]\nhost = [\"h{i}.example\"]\nupstream = \"a\"\n"
        ));
    }
    let r = router(&routes);
    let h = HeaderMap::new();
    assert_eq!(pick(&r, "h1.example", "/", &h), Some("route-1"));
    assert_eq!(pick(&r, "h1000.example:80", "/", &h), Some("route-1000"));
    assert_eq!(pick(&r, "h1001.example", "/", &h), None);
}

#[test]
fn host_keys_drop_the_port_and_the_trailing_dot_and_fold_case() {
    assert_eq!(host_key("API.Example.com.:8443"), "api.example.com");
    assert_eq!(host_key("[::1]:80"), "[::1]");
    assert_eq!(host_key("127.0.0.1"), "127.0.0.1");
    assert_eq!(host_key("example.com"), "example.com");
}

#[test]
fn path_routes_are_found_by_their_first_segment_in_file_order() {
    let r = router(
        r#"
[[listener.route]]
name = "users"
path = "/api/users"
upstream = "a"
[[listener.route]]
name = "root-exact"
path_exact = "/"
upstream = "a"
[[listener.route]]
name = "api"
path = "/api"
upstream = "b"
[[listener.route]]
name = "everything"
path = "/"
methods = ["GET"]
upstream = "b"
"#,
    );
    let h = HeaderMap::new();
    assert_eq!(pick(&r, "x", "/api/users/1", &h), Some("users"));
    assert_eq!(pick(&r, "x", "/api/other", &h), Some("api"));
    assert_eq!(pick(&r, "x", "/api", &h), Some("api"));
    assert_eq!(pick(&r, "x", "/", &h), Some("root-exact"));
    assert_eq!(pick(&r, "x", "/apix", &h), Some("everything"));
}
