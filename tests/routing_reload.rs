//! A reload that changes routes under load: every request is answered by the routes of one
//! configuration or the other, none fails, and the reload log names the routes it changed.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use support::{Client, Fulcrum, Toml, free_port, http_backend, wait_for_async};

/// Routes of the first configuration: `/api` to `a`, `/old` a fixed answer, the rest to `b`.
fn first(port: u16, a: SocketAddr, b: SocketAddr) -> Toml {
    Toml::new()
        .listener("web", port, "http", "b")
        .route("name = \"api\"\npath = \"/api\"\nupstream = \"a\"")
        .route("name = \"old\"\npath = \"/old\"\nrespond = { status = 200, body = \"old\" }")
        .upstream("a", [a])
        .upstream("b", [b])
}

/// The second: `/api` to `b` with its prefix stripped, `/old` gone, `/new` added, the rest to `a`.
fn second(port: u16, a: SocketAddr, b: SocketAddr) -> Toml {
    Toml::new()
        .listener("web", port, "http", "a")
        .route("name = \"api\"\npath = \"/api\"\nstrip_prefix = true\nupstream = \"b\"")
        .route("name = \"new\"\npath = \"/new\"\nrespond = { status = 200, body = \"new\" }")
        .upstream("a", [a])
        .upstream("b", [b])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_that_change_routes_under_load_fail_no_request() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let port = free_port();
    let one = first(port, a.addr, b.addr);
    let two = second(port, a.addr, b.addr);
    let f = Fulcrum::start(&one);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        clients.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let path = ["/api/x", "/", "/old", "/new"][i % 4];
            while !stop.load(Ordering::Relaxed) {
                match c.try_request("GET", path, b"").await {
                    // `/old` and `/new` exist in one configuration each: the other's default
                    // upstream answers them, also 200.
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for n in 1..=10 {
        std::fs::write(&f.config, if n % 2 == 1 { &two } else { &one }.to_string())
            .expect("rewrite config");
        f.signal(libc::SIGHUP);
        // Polled without blocking a worker: the clients share the test's two.
        wait_for_async(&format!("reload {n}"), || async {
            (f.log().matches("configuration reloaded").count() >= n).then_some(())
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "traffic ran during the reloads"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request may fail");
    let log = f.log();
    for line in [
        "reload: listener \"web\" settings changed",
        "reload: listener \"web\": route \"api\" changed",
        "reload: listener \"web\": route \"new\" added",
        "reload: listener \"web\": route \"old\" removed",
    ] {
        assert!(
            log.contains(line),
            "the reload log must say {line:?}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_a_route_to_its_new_upstream() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let port = free_port();
    let f = Fulcrum::start(&first(port, a.addr, b.addr));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = Client::connect(addr).await;
    assert_eq!(c.request("GET", "/api/x", b"").await.text(), "a");
    std::fs::write(&f.config, second(port, a.addr, b.addr).to_string()).expect("rewrite");
    f.signal(libc::SIGHUP);
    f.wait_for_log("configuration reloaded");
    // The same keep-alive connection: its next request takes the new routes.
    let r = c.request("GET", "/api/x", b"").await;
    assert_eq!(r.text(), "b");
    assert_eq!(c.request("GET", "/new", b"").await.text(), "new");
    assert_eq!(
        c.request("GET", "/old", b"").await.text(),
        "a",
        "the new default"
    );
}
