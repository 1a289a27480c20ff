//! gRPC through fulcrum, with real gRPC peers (tonic client and servers, the gRPC health
//! service): every call kind, per-request balancing of one client connection, gRPC statuses
//! for what fulcrum answers itself, a backend's graceful restart, and the grpc health check.

#[path = "support/grpc.rs"]
mod grpc;
mod support;
#[path = "support/web.rs"]
mod web;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use grpc::{GrpcBackend, GrpcClient, Msg};
use support::{Fulcrum, Toml, closed_addr, free_port, wait_for_async};
use tonic::Code;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// fulcrum on a fresh port in front of `backends` over h2c, with `keys` for the upstream.
fn h2c(backends: &[SocketAddr], keys: &str) -> (Fulcrum, SocketAddr) {
    let port = free_port();
    let toml = Toml::http(port, backends)
        .set("protocol = \"h2c\"")
        .set(keys);
    (Fulcrum::start(&toml), local(port))
}

#[tokio::test]
async fn every_call_kind_passes_through_with_metadata_and_trailers() {
    let backend = GrpcBackend::start("a").await;
    let (_f, addr) = h2c(&[backend.addr], "retries = 0");
    let mut client = GrpcClient::connect(addr).await;

    let reply = client.unary("hello").await.expect("unary");
    assert_eq!(
        (reply.text.as_str(), reply.backend.as_str()),
        ("hello", "a")
    );
    // The backend sends `x-meta-echo` in its trailers, after the message.
    let reply = client.unary_with_meta("m", "v1").await.expect("unary");
    assert_eq!(
        reply.metadata().get("x-meta-echo").map(|v| v.to_str().ok()),
        Some(Some("v1")),
        "request metadata reached the backend and its trailers came back"
    );

    let mut stream = client.server_stream(5, 16).await.expect("server stream");
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.expect("stream message") {
        got.push(m.n);
    }
    assert_eq!(got, [0, 1, 2, 3, 4]);

    let texts = (0..4).map(|i| format!("c{i}")).collect();
    let joined = client.client_stream(texts).await.expect("client stream");
    assert_eq!((joined.text.as_str(), joined.n), ("c0,c1,c2,c3", 4));

    // Bidirectional: each message is answered before the next is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let mut replies = client
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bidi");
    for i in 0..3 {
        let text = format!("ping{i}");
        tx.send(Msg {
            text: text.clone(),
            ..Msg::default()
        })
        .await
        .expect("send");
        let echo = replies.message().await.expect("echo").expect("a message");
        assert_eq!(echo.text, text);
    }
    drop(tx);
    assert!(replies.message().await.expect("end").is_none());

    let err = client
        .unary("fail:7")
        .await
        .expect_err("the backend's status");
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "a backend's own gRPC status passes"
    );
}

#[tokio::test]
async fn one_client_connection_is_spread_by_weight_over_every_backend() {
    let a = GrpcBackend::start("a").await;
    let b = GrpcBackend::start("b").await;
    let c = GrpcBackend::start("c").await;
    let port = free_port();
    let toml = Toml::new()
        .listener("web", port, "http", "app")
        .upstream("app", [(a.addr, 1), (b.addr, 2), (c.addr, 3)])
        .set("protocol = \"h2c\"")
        .health("check = \"none\"");
    let _f = Fulcrum::start(&toml);
    let mut client = GrpcClient::connect(local(port)).await;
    for _ in 0..60 {
        client.unary("x").await.expect("unary");
    }
    let calls = [&a, &b, &c].map(|b| b.calls.load(Ordering::Relaxed));
    assert_eq!(
        calls,
        [10, 20, 30],
        "weights 1/2/3 over 60 calls of one connection"
    );
}

#[tokio::test]
async fn no_healthy_backend_is_unavailable_and_a_timeout_is_deadline_exceeded() {
    let (_f, addr) = h2c(&[closed_addr()], "retries = 0");
    let mut client = GrpcClient::connect(addr).await;
    let err = client.unary("x").await.expect_err("nothing to serve it");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    let slow = GrpcBackend::start("slow").await;
    let (_f, addr) = h2c(&[slow.addr], "response_timeout = \"200ms\"\nretries = 0");
    let mut client = GrpcClient::connect(addr).await;
    let err = client.unary("slow:3000").await.expect_err("too slow");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
}

#[tokio::test]
async fn a_backend_that_restarts_gracefully_under_load_loses_no_call() {
    let a = GrpcBackend::start("a").await;
    let b = GrpcBackend::start("b").await;
    let (_f, addr) = h2c(&[a.addr, b.addr], "");
    let client = GrpcClient::connect(addr).await;
    // Four callers keep calls in flight on the one client connection.
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                for n in 0..150 {
                    let text = if n % 10 == 0 {
                        "slow:20".to_owned()
                    } else {
                        format!("{i}-{n}")
                    };
                    client.unary(&text).await.expect("no call is lost");
                }
            })
        })
        .collect();
    // Once both backends served some, `a` sends GOAWAY, finishes what it has and stops.
    let (calls_a, calls_b) = (a.calls.clone(), b.calls.clone());
    wait_for_async("both backends busy", || async {
        (calls_a.load(Ordering::Relaxed) > 20 && calls_b.load(Ordering::Relaxed) > 20).then_some(())
    })
    .await;
    a.shutdown_gracefully().await;
    for c in callers {
        c.await.expect("caller");
    }
    assert!(calls_b.load(Ordering::Relaxed) > 20);
}

#[tokio::test]
async fn a_not_serving_health_answer_takes_a_backend_out() {
    let a = GrpcBackend::start("a").await;
    let b = GrpcBackend::start("b").await;
    let (_f, addr) = h2c(
        &[a.addr, b.addr],
        "health.check = \"grpc\"\nhealth.service = \"test.Echo\"\nhealth.interval = \"100ms\"\n\
         health.unhealthy_threshold = 1\nhealth.healthy_threshold = 1",
    );
    let client = GrpcClient::connect(addr).await;
    a.set_serving(false).await;
    // Once the check saw it, ten calls in a row all go to `b`.
    let mut client2 = client.clone();
    wait_for_async("a taken out", || {
        let mut c = client2.clone();
        async move {
            for _ in 0..10 {
                if c.unary("x").await.ok()?.backend != "b" {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    a.set_serving(true).await;
    wait_for_async("a back in", || {
        let mut c = client.clone();
        async move { (c.unary("x").await.ok()?.backend == "a").then_some(()) }
    })
    .await;
    client2.unary("x").await.expect("still served");
}

#[tokio::test]
async fn a_slow_reader_holds_back_the_backend_instead_of_filling_fulcrums_memory() {
    let backend = GrpcBackend::start("a").await;
    let (_f, addr) = h2c(&[backend.addr], "");
    let mut client = GrpcClient::connect(addr).await;
    // 512 messages of 64 KiB (32 MiB), read one every 2 ms: the backend runs ahead only as
    // far as the flow-control windows and socket buffers on the way let it.
    const MESSAGES: u64 = 512;
    let mut stream = client
        .server_stream(MESSAGES, 64 * 1024)
        .await
        .expect("server stream");
    let mut read = 0u64;
    let mut ahead_most = 0;
    while let Some(_m) = stream.message().await.expect("message") {
        read += 1;
        let ahead = backend
            .produced
            .load(Ordering::Relaxed)
            .saturating_sub(read);
        ahead_most = ahead_most.max(ahead);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(read, MESSAGES);
    assert!(
        ahead_most < 256,
        "the backend ran {ahead_most} messages (of 64 KiB) ahead of a slow reader"
    );
}

#[tokio::test]
async fn a_backends_unavailable_answer_counts_against_it_and_other_statuses_do_not() {
    let backend = GrpcBackend::start("a").await;
    let port = free_port();
    let admin = free_port();
    let toml = Toml::http(port, &[backend.addr])
        .set("protocol = \"h2c\"")
        .health("unhealthy_threshold = 100")
        .admin(admin);
    let _f = Fulcrum::start(&toml);
    let mut client = GrpcClient::connect(local(port)).await;
    let label = backend.addr.to_string();
    let failures = || async {
        let (_, text) = web::get(local(admin), "/metrics").await.expect("metrics");
        let samples = web::parse_prometheus(&text);
        web::value(
            &samples,
            "fulcrum_backend_failures_total",
            &[("backend", &label), ("kind", "status")],
        )
        .unwrap_or(0.0)
    };
    for code in [5, 3, 14, 14] {
        let err = client
            .unary(&format!("fail:{code}"))
            .await
            .expect_err("asked to fail");
        assert_eq!(err.code() as i32, code);
    }
    assert_eq!(
        failures().await,
        2.0,
        "only the two UNAVAILABLE answers count"
    );
}
