//! HTTP/2 to backends at the frame level, with backends written on `h2` and hyper: a refused
//! stream is sent again with its body, trailers and `TE: trailers` reach the backend and come
//! back, HTTP/1.1 clients reach HTTP/2 backends, an Upgrade is refused, a reload's new backend
//! gets a share of an existing client connection, and a backend that drops new connections is
//! failed over and blamed.

#[path = "support/grpc.rs"]
mod grpc;
mod support;
#[path = "support/web.rs"]
mod web;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Fulcrum, Toml, free_port, wait_for_async};
use tokio::net::{TcpListener, TcpStream};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An h2c backend that refuses every stream unprocessed (`REFUSED_STREAM`); counts them.
async fn refusing_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let refused = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&refused);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    count.fetch_add(1, Ordering::Relaxed);
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                }
            });
        }
    });
    (addr, refused)
}

/// An h2c backend that answers with the request's body, its `TE` and authority in headers,
/// and the request's trailers as its own.
async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let te = req.headers().get("te").cloned();
                let authority = req.uri().authority().map(|a| a.to_string());
                let collected = req.into_body().collect().await.expect("request body");
                let trailers = collected.trailers().cloned().unwrap_or_default();
                let body = Full::new(collected.to_bytes())
                    .with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers))));
                let mut resp = Response::new(body);
                if let Some(te) = te {
                    resp.headers_mut().insert("x-te", te);
                }
                if let Some(a) = authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
                    resp.headers_mut().insert("x-authority", a);
                }
                Ok::<_, Infallible>(resp)
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service),
            );
        }
    });
    addr
}

fn h2c_upstream(port: u16, backends: &[SocketAddr]) -> Toml {
    Toml::http(port, backends).set("protocol = \"h2c\"")
}

/// An HTTP/1.1 request on a fresh connection.
async fn h1(addr: SocketAddr, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (Response::from_parts(parts, ()), body)
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_with_its_body_and_is_no_failure() {
    let (refusing, refused) = refusing_backend().await;
    let echo = echo_backend().await;
    let port = free_port();
    let admin = free_port();
    let _f = Fulcrum::start(
        &h2c_upstream(port, &[refusing, echo])
            .set("retries = 0")
            .admin(admin),
    );
    for i in 0..4 {
        let body = format!("a POST body {i}: never seen by the backend that refused it");
        let req = Request::post("/submit")
            .header("host", "app.test")
            .body(Full::new(Bytes::from(body.clone())))
            .expect("request");
        let (resp, got) = h1(local(port), req).await;
        assert_eq!(resp.status(), 200, "a refused POST is sent elsewhere");
        assert_eq!(got, body.as_bytes(), "with its whole body");
    }
    assert!(
        refused.load(Ordering::Relaxed) >= 2,
        "round robin sent some to the refusing backend first"
    );
    let (_, text) = web::get(local(admin), "/metrics").await.expect("metrics");
    let label = refusing.to_string();
    let failures: f64 = web::parse_prometheus(&text)
        .iter()
        .filter(|s| s.name == "fulcrum_backend_failures_total")
        .filter(|s| s.labels.get("backend") == Some(&label))
        .map(|s| s.value)
        .sum();
    assert_eq!(
        failures, 0.0,
        "a refused stream is no failure of its backend"
    );
}

#[tokio::test]
async fn trailers_pass_both_ways_and_backends_get_te_trailers_and_the_authority() {
    let echo = echo_backend().await;
    let port = free_port();
    let _f = Fulcrum::start(&h2c_upstream(port, &[echo]));
    let s = TcpStream::connect(local(port)).await.expect("connect");
    let mut sender = support::h2_client(s).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let body = Full::new(Bytes::from_static(b"payload"))
        .with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers))));
    let req = Request::post("http://app.test/echo")
        .header("content-type", "application/grpc")
        .body(body)
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(
        resp.headers().get("x-te").map(|v| v.as_bytes()),
        Some(&b"trailers"[..])
    );
    assert_eq!(
        resp.headers().get("x-authority").map(|v| v.as_bytes()),
        Some(&b"app.test"[..]),
        "the client's authority is the backend's :authority"
    );
    let collected = resp.into_body().collect().await.expect("body");
    let back = collected.trailers().cloned().expect("response trailers");
    assert_eq!(
        back.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"abc"[..])
    );
    assert_eq!(collected.to_bytes(), &b"payload"[..]);
}

#[tokio::test]
async fn http1_clients_reach_http2_backends_and_an_upgrade_is_refused() {
    let echo = echo_backend().await;
    let port = free_port();
    let _f = Fulcrum::start(&h2c_upstream(port, &[echo]));
    let req = Request::get("/plain")
        .header("host", "app.test:8080")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (resp, _) = h1(local(port), req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let req = Request::get("/ws")
        .header("host", "app.test")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (resp, _) = h1(local(port), req).await;
    assert_eq!(resp.status(), 501, "HTTP/2 has no Upgrade");
}

#[tokio::test]
async fn a_backend_added_by_a_reload_gets_calls_of_an_open_client_connection() {
    let a = grpc::GrpcBackend::start("a").await;
    let b = grpc::GrpcBackend::start("b").await;
    let port = free_port();
    let f = Fulcrum::start(&h2c_upstream(port, &[a.addr]));
    let mut client = grpc::GrpcClient::connect(local(port)).await;
    client.unary("before").await.expect("unary");
    std::fs::write(&f.config, h2c_upstream(port, &[a.addr, b.addr]).to_string())
        .expect("rewrite config");
    f.signal(libc::SIGHUP);
    wait_for_async("the reload", || async {
        f.log().contains("configuration reloaded").then_some(())
    })
    .await;
    for _ in 0..10 {
        client.unary("after").await.expect("unary");
    }
    let to_b = b.calls.load(Ordering::Relaxed);
    assert!(
        (4..=6).contains(&to_b),
        "about half of the next ten calls, not {to_b}"
    );
}

#[tokio::test]
async fn a_backend_that_drops_every_new_connection_is_failed_over_and_blamed() {
    // Accepts and closes at once, as a port forwarder in front of a stopped container does.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closing = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    let echo = echo_backend().await;
    let port = free_port();
    let admin = free_port();
    let _f = Fulcrum::start(&h2c_upstream(port, &[closing, echo]).admin(admin));
    for i in 0..4 {
        let req = Request::post("/submit")
            .header("host", "app.test")
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .expect("request");
        let (resp, got) = h1(local(port), req).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(got, format!("body {i}").as_bytes());
    }
    let (_, text) = web::get(local(admin), "/metrics").await.expect("metrics");
    let samples = web::parse_prometheus(&text);
    let label = closing.to_string();
    let connect = web::value(
        &samples,
        "fulcrum_backend_failures_total",
        &[("backend", label.as_str()), ("kind", "connect")],
    );
    assert!(connect.unwrap_or(0.0) >= 1.0, "{text}");
}
