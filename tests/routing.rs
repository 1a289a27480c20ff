//! Routing on http listeners, through the real binary and real backends: host, path, method and
//! header conditions, the default upstream and 404, strip_prefix, redirects, fixed answers,
//! header rules, HTTP/2, and what `/metrics` and `/status` show of routes.

mod support;
#[path = "support/web.rs"]
mod web;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use support::{Fulcrum, Reply, Toml, closed_addr, free_port, http_backend};
use tokio::net::TcpStream;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One HTTP/1.1 request with its own `Host` (and extra header lines) on a fresh connection.
async fn send(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let s = TcpStream::connect(addr).await.expect("connect to fulcrum");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    send(addr, "GET", host, path, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_pick_the_upstream_exact_or_wildcard_and_others_take_the_default() {
    let (api, www, rest) = (
        http_backend("api").await,
        http_backend("www").await,
        http_backend("rest").await,
    );
    let port = free_port();
    let toml = Toml::new()
        .listener("web", port, "http", "rest")
        .route("name = \"api\"\nhost = [\"api.example.com\"]\nupstream = \"api\"")
        .route("name = \"www\"\nhost = [\"*.example.com\"]\nupstream = \"www\"")
        .upstream("api", [api.addr])
        .upstream("www", [www.addr])
        .upstream("rest", [rest.addr]);
    let _f = Fulcrum::start(&toml);
    let web = local(port);
    for (host, want) in [
        ("api.example.com", "api"),
        ("API.Example.COM:8080", "api"),
        ("api.example.com.", "api"),
        ("www.example.com", "www"),
        ("a.b.example.com", "www"),
        ("example.com", "rest"),
        ("other.test", "rest"),
    ] {
        let r = get(web, host, "/").await;
        assert_eq!((r.status, r.text()), (200, want.to_owned()), "Host {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_default_an_unmatched_request_gets_404_from_fulcrum() {
    let api = http_backend("api").await;
    let port = free_port();
    let toml = Toml::new()
        .routed("web", port)
        .route("host = [\"api.test\"]\nupstream = \"api\"")
        .upstream("api", [api.addr]);
    let _f = Fulcrum::start(&toml);
    assert_eq!(get(local(port), "api.test", "/").await.text(), "api");
    let r = get(local(port), "other.test", "/").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "404 Not Found\n");
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_match_on_segment_boundaries_and_strip_prefix_keeps_the_query() {
    let (api, health, rest) = (
        http_backend("api").await,
        http_backend("health").await,
        http_backend("rest").await,
    );
    let port = free_port();
    let toml = Toml::new()
        .listener("web", port, "http", "rest")
        .route("path_exact = \"/healthz\"\nupstream = \"health\"")
        .route("path = \"/api/\"\nstrip_prefix = true\nupstream = \"api\"")
        .upstream("api", [api.addr])
        .upstream("health", [health.addr])
        .upstream("rest", [rest.addr]);
    let _f = Fulcrum::start(&toml);
    let web = local(port);
    for (path, want) in [
        ("/healthz", "health"),
        ("/healthz/x", "rest"),
        ("/api", "api"),
        ("/api/x", "api"),
        ("/apix", "rest"),
        ("/", "rest"),
    ] {
        assert_eq!(get(web, "h.test", path).await.text(), want, "path {path}");
    }
    let seen = get(web, "h.test", "/api/headers?a=1&b=2").await.text();
    assert!(
        seen.starts_with("GET /headers?a=1&b=2\n"),
        "the prefix goes, the query stays: {seen}"
    );
    let seen = get(web, "h.test", "/api?q=1").await;
    assert_eq!(seen.text(), "api", "/api on its own becomes /");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_headers_narrow_a_route() {
    let (canary, writes, rest) = (
        http_backend("canary").await,
        http_backend("writes").await,
        http_backend("rest").await,
    );
    let port = free_port();
    let toml = Toml::new()
        .listener("web", port, "http", "rest")
        .route("headers = { X-Canary = \"1\" }\nupstream = \"canary\"")
        .route("methods = [\"POST\", \"DELETE\"]\nupstream = \"writes\"")
        .upstream("canary", [canary.addr])
        .upstream("writes", [writes.addr])
        .upstream("rest", [rest.addr]);
    let _f = Fulcrum::start(&toml);
    let web = local(port);
    let text = |r: Reply| r.text();
    assert_eq!(
        text(send(web, "GET", "h", "/", &[("x-canary", "1")]).await),
        "canary"
    );
    assert_eq!(
        text(send(web, "GET", "h", "/", &[("x-canary", "2")]).await),
        "rest"
    );
    assert_eq!(text(send(web, "DELETE", "h", "/", &[]).await), "writes");
    assert_eq!(text(send(web, "PUT", "h", "/", &[]).await), "rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_build_the_location_from_the_request_and_keep_the_query() {
    let rest = http_backend("rest").await;
    let port = free_port();
    let toml = Toml::new()
        .listener("web", port, "http", "rest")
        .route("host = [\"old.test\"]\nredirect = { host = \"new.test\", status = 301 }")
        .route("path = \"/secure\"\nredirect = { scheme = \"https\" }")
        .route("path = \"/moved\"\nredirect = { path = \"/here\", port = 8443, status = 308 }")
        .upstream("rest", [rest.addr]);
    let _f = Fulcrum::start(&toml);
    let web = local(port);
    let r = get(web, "old.test:8080", "/a?x=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "http://new.test:8080/a?x=1");
    let r = get(web, "site.test:8080", "/secure/p?y").await;
    assert_eq!(r.status, 302, "302 unless the route says");
    assert_eq!(
        r.headers["location"], "https://site.test/secure/p?y",
        "a new scheme drops the Host's port"
    );
    let r = get(web, "site.test", "/moved?z=2").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "http://site.test:8443/here?z=2");
    assert_eq!(rest.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_rules_apply_to_backend_answers_redirects_fixed_answers_and_errors() {
    let app = http_backend("app").await;
    let dead = closed_addr();
    let port = free_port();
    let rules = "response_headers = { set = { strict-transport-security = \"max-age=60\" }, \
                 remove = [\"x-backend\"] }";
    let toml = Toml::new()
        .routed("web", port)
        .route(&format!("name = \"app\"\npath = \"/app\"\nupstream = \"app\"\n{rules}"))
        .route(&format!("name = \"gone\"\npath = \"/gone\"\nupstream = \"dead\"\n{rules}"))
        .route(&format!(
            "name = \"maint\"\npath = \"/maint\"\nrespond = {{ status = 503, body = \"down for maintenance\" }}\n{rules}"
        ))
        .route(&format!("name = \"go\"\npath = \"/go\"\nredirect = {{ path = \"/app\" }}\n{rules}"))
        .upstream("app", [app.addr])
        .upstream("dead", [dead])
        .health("check = \"none\"");
    let _f = Fulcrum::start(&toml);
    let web = local(port);
    let r = get(web, "h", "/maint").await;
    assert_eq!(
        (r.status, r.text()),
        (503, "down for maintenance".to_owned())
    );
    assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    for (path, status) in [("/app", 200), ("/gone", 502), ("/maint", 503), ("/go", 302)] {
        let r = get(web, "h", path).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(
            r.headers
                .get("strict-transport-security")
                .map(|v| v.to_str().ok()),
            Some(Some("max-age=60")),
            "{path}: set applies to every answer of the route"
        );
        assert!(r.headers.get("x-backend").is_none(), "{path}: removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_header_rules_apply_after_the_forwarding_fields() {
    let app = http_backend("app").await;
    let port = free_port();
    let toml = Toml::new()
        .routed("web", port)
        .route(
            "upstream = \"app\"\nrequest_headers = { set = { x-env = \"prod\", \
             x-forwarded-proto = \"https\" }, remove = [\"x-debug\"] }",
        )
        .upstream("app", [app.addr]);
    let _f = Fulcrum::start(&toml);
    let seen = send(
        local(port),
        "GET",
        "h",
        "/headers",
        &[("x-debug", "1"), ("x-env", "dev")],
    )
    .await
    .text();
    assert!(seen.contains("x-env: prod\n"), "set replaces: {seen}");
    assert!(!seen.contains("x-env: dev"), "{seen}");
    assert!(!seen.contains("x-debug"), "removed: {seen}");
    assert!(
        seen.contains("x-forwarded-proto: https\n"),
        "applied after fulcrum's own X-Forwarded-Proto: {seen}"
    );
    assert!(seen.contains("x-forwarded-for: 127.0.0.1\n"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_routed_by_their_authority() {
    let (api, rest) = (http_backend("api").await, http_backend("rest").await);
    let port = free_port();
    let toml = Toml::new()
        .listener("web", port, "http", "rest")
        .route("host = [\"api.test\"]\nupstream = \"api\"")
        .upstream("api", [api.addr])
        .upstream("rest", [rest.addr]);
    let _f = Fulcrum::start(&toml);
    let s = TcpStream::connect(local(port)).await.expect("connect");
    let mut sender = support::h2_client(s).await;
    // One connection, two hosts: each request is routed on its own.
    for (uri, want) in [
        ("http://api.test/", "api"),
        ("http://www.test/", "rest"),
        ("http://API.test:80/", "api"),
    ] {
        let req = hyper::Request::get(uri)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2 response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, want, "{uri}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_the_route_and_status_counts_each_routes_requests() {
    let api = http_backend("api").await;
    let (port, admin) = (free_port(), free_port());
    let toml = Toml::new()
        .admin(admin)
        .routed("web", port)
        .route("name = \"api\"\npath = \"/api\"\nupstream = \"api\"")
        .route("name = \"teapot\"\npath = \"/tea\"\nrespond = { status = 418 }")
        .upstream("api", [api.addr]);
    let _f = Fulcrum::start(&toml);
    let web = local(port);
    for _ in 0..3 {
        assert_eq!(get(web, "h", "/api").await.status, 200);
    }
    assert_eq!(get(web, "h", "/tea").await.status, 418);
    assert_eq!(get(web, "h", "/nothing").await.status, 404);
    let (_, text) = web::get(local(admin), "/metrics").await.expect("metrics");
    let m = web::parse_prometheus(&text);
    let backend = api.addr.to_string();
    let count = |labels: &[(&str, &str)]| web::value(&m, "fulcrum_requests_total", labels);
    assert_eq!(
        count(&[
            ("listener", "web"),
            ("route", "api"),
            ("upstream", "api"),
            ("backend", &backend),
            ("code", "2xx")
        ]),
        Some(3.0)
    );
    assert_eq!(
        count(&[
            ("route", "teapot"),
            ("upstream", "none"),
            ("backend", "none"),
            ("code", "4xx")
        ]),
        Some(1.0)
    );
    assert_eq!(
        count(&[
            ("route", "none"),
            ("upstream", "none"),
            ("backend", "none"),
            ("code", "4xx")
        ]),
        Some(1.0),
        "the 404 of no route"
    );
    let (_, body) = web::get(local(admin), "/status").await.expect("status");
    let s: serde_json::Value = serde_json::from_str(&body).expect("json");
    let routes = &s["listeners"][0]["routes"];
    assert_eq!(routes[0]["name"], "api");
    assert_eq!(routes[0]["upstream"], "api");
    assert_eq!(routes[0]["requests"], 3);
    assert_eq!(routes[1]["name"], "teapot");
    assert!(
        routes[1]["upstream"].is_null(),
        "a fixed answer has no upstream"
    );
    assert_eq!(routes[1]["requests"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_cannot_be_bypassed_by_spelling_its_path_another_way() {
    let (app, api) = (http_backend("app").await, http_backend("api").await);
    let port = free_port();
    let toml = Toml::new()
        .listener("web", port, "http", "app")
        .route("path = \"/admin\"\nrespond = { status = 403, body = \"no\" }")
        .route("path = \"/api\"\nstrip_prefix = true\nupstream = \"api\"")
        .upstream("app", [app.addr])
        .upstream("api", [api.addr]);
    let _f = Fulcrum::start(&toml);
    let web = local(port);
    for path in [
        "/admin",
        "/x/../admin",
        "/%61dmin/",
        "//admin",
        "/./admin/x",
    ] {
        assert_eq!(get(web, "h", path).await.status, 403, "{path}");
    }
    assert_eq!(get(web, "h", "/api/../secret").await.text(), "app");
    let seen = get(web, "h", "/api/./x/../headers?q=1").await.text();
    assert!(
        seen.starts_with("GET /headers?q=1\n"),
        "the backend gets the path that was matched, its prefix stripped: {seen}"
    );
    assert_eq!(
        get(web, "h", "/../etc/passwd").await.status,
        400,
        "above the root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_fulcrum_answers_itself_checks_the_request_like_forwarding_does() {
    let port = free_port();
    let toml = Toml::new()
        .routed("web", port)
        .route("name = \"old\"\npath = \"/old\"\nredirect = { path = \"/new\" }\nresponse_headers = { set = { x-route = \"old\" } }")
        .route("path = \"/fixed\"\nrespond = { status = 200 }")
        .upstream("unused", [closed_addr()]);
    let _f = Fulcrum::start(&toml);
    let addr = local(port);
    for (what, request) in [
        (
            "a Host with a path",
            "GET /old HTTP/1.1\r\nHost: evil.test/x\r\n\r\n",
        ),
        (
            "a Host with a space",
            "GET /old HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
        ("two ports", "GET /fixed HTTP/1.1\r\nHost: x:1:2\r\n\r\n"),
        (
            "two Hosts",
            "GET /old HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
        (
            "no route, two Hosts",
            "GET /none HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
    ] {
        let answer = support::raw(addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        assert!(!answer.contains("evil"), "{what}: never echoed: {answer}");
        assert_eq!(
            answer.contains("x-route: old"),
            request.starts_with("GET /old"),
            "{what}: the refusal is the route's answer, with its header rules: {answer}"
        );
    }
}
