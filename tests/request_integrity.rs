//! Request integrity: a request body reaches the backend byte for byte
//! whatever its method and framing, pipelined or not, over HTTP/1.1 and HTTP/2, or the
//! request is refused; only origin, absolute and OPTIONS `*` targets and valid `Host` values
//! pass. Raw sockets on the client side; behind fulcrum a real hyper backend that hashes
//! what its socket received, or a raw one that records the bytes.

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::{Fulcrum, Toml, free_port, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wire::{Case, Framing, echo_backend, sha_hex};

fn start(backend: SocketAddr) -> (Fulcrum, SocketAddr) {
    let port = free_port();
    let f = Fulcrum::start(&Toml::http(port, &[backend]));
    (f, ([127, 0, 0, 1], port).into())
}

/// A raw backend that records every byte it receives and answers `200` only once a chunked
/// body has ended (`0` chunk and blank line): a body fulcrum cuts off is never answered.
async fn recorder() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    let ended = {
                        let mut all = sink.lock().expect("lock");
                        all.extend_from_slice(&buf[..n]);
                        all.ends_with(b"\r\n0\r\n\r\n")
                    };
                    if ended {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_get_body_reaches_the_backend() {
    let (_f, addr) = start(echo_backend().await);
    let reply = wire::exchange(
        addr,
        b"GET /s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        &["GET"],
    )
    .await;
    let answer = reply.first().expect("an answer");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-method"), Some("GET"));
    assert_eq!(
        answer.header("x-sha256"),
        Some(sha_hex(b"abc").as_str()),
        "a GET's chunked body must reach the backend whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_and_framing_arrives_pipelined_on_one_connection() {
    let (_f, addr) = start(echo_backend().await);
    let body = b"hello, backend".to_vec();
    let mut cases = Vec::new();
    for method in ["GET", "HEAD", "DELETE", "OPTIONS", "PURGE", "POST"] {
        for framing in [Framing::Length, Framing::Chunked, Framing::ChunkedTrailer] {
            cases.push(Case {
                method,
                framing,
                body: body.clone(),
                chunk: 5,
            });
        }
    }
    wire::check_h1(addr, &cases)
        .await
        .expect("every body arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_bodies_arrive_with_and_without_a_length() {
    let (_f, addr) = start(echo_backend().await);
    let mut cases = Vec::new();
    for method in ["GET", "DELETE", "PURGE", "POST"] {
        for framing in [
            Framing::Length,
            Framing::Chunked,
            Framing::ChunkedTrailer,
            Framing::LengthTrailer,
        ] {
            cases.push(Case {
                method,
                framing,
                body: vec![7; 70_000],
                chunk: 16_000,
            });
        }
    }
    wire::check_h2(addr, &cases)
        .await
        .expect("every body arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_400_and_never_reaches_the_backend_complete() {
    let (backend, seen) = recorder().await;
    let (_f, addr) = start(backend);
    for bad in [
        &b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n"[..],
        b"ffffffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcdef\r\n0\r\n\r\n",
    ] {
        for method in ["GET", "POST"] {
            seen.lock().expect("lock").clear();
            let mut request =
                format!("{method} /m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            request.extend_from_slice(bad);
            let reply = raw(addr, &request).await;
            assert!(
                reply.starts_with("HTTP/1.1 400"),
                "a malformed body ends the exchange with 400: {method} {reply:?}"
            );
            let got = seen.lock().expect("lock").clone();
            assert!(
                !got.ends_with(b"0\r\n\r\n"),
                "the backend never sees a malformed body as a complete request: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_origin_absolute_and_options_asterisk_targets_pass() {
    let (backend, seen) = recorder().await;
    let (_f, addr) = start(backend);
    for (line, status) in [
        ("GET * HTTP/1.1", "400"),
        ("GET example.com:80 HTTP/1.1", "400"),
        ("GET foo HTTP/1.1", "400"),
        ("GET ftp://example.com/x HTTP/1.1", "400"),
        ("GET http://user@example.com/x HTTP/1.1", "400"),
        ("CONNECT example.com:443 HTTP/1.1", "405"),
    ] {
        let reply = raw(
            addr,
            format!("{line}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status}")),
            "{line:?} must be answered {status}: {reply:?}"
        );
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a refused target never reaches the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_asterisk_is_forwarded_as_asterisk() {
    let (_f, addr) = start(echo_backend().await);
    let reply = wire::exchange(addr, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", &["OPTIONS"]).await;
    let answer = reply.first().expect("an answer");
    assert_eq!(answer.status, 200, "OPTIONS * is a valid request");
    assert_eq!(answer.header("x-target"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_goes_out_in_origin_form_with_its_host() {
    let (_f, addr) = start(echo_backend().await);
    for (line, target) in [
        ("GET http://a.example/x?y=1 HTTP/1.1", "/x?y=1"),
        ("GET http://a.example?y=1 HTTP/1.1", "/?y=1"),
        ("GET http://a.example HTTP/1.1", "/"),
    ] {
        let request = format!("{line}\r\nHost: ignored.example\r\n\r\n");
        let reply = wire::exchange(addr, request.as_bytes(), &["GET"]).await;
        let answer = reply.first().expect("an answer");
        assert_eq!(answer.status, 200, "{line}");
        assert_eq!(answer.header("x-target"), Some(target), "{line}");
        assert_eq!(answer.header("x-host"), Some("a.example"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_is_not_host_and_port_is_400() {
    let (backend, seen) = recorder().await;
    let (_f, addr) = start(backend);
    for host in ["a/b", "a\\b", "a b", "a\x01b", "a:1:2", "a:80x", "user@a"] {
        let reply = raw(
            addr,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "Host {host:?} must be refused with 400: {reply:?}"
        );
    }
    assert!(
        seen.lock().expect("lock").is_empty(),
        "a request with an invalid Host never reaches the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_without_host_is_400() {
    let (_f, addr) = start(echo_backend().await);
    let reply = raw(addr, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.ends_with("400 Bad Request\n"),
        "fulcrum refuses an HTTP/1.1 request without Host itself: {reply:?}"
    );
    let reply = raw(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"),
        "HTTP/1.0 needs no Host: {reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_hosts_follow_the_same_rule() {
    let (_f, addr) = start(echo_backend().await);
    for (host, want) in [("a/b", 400), ("a:1:2", 400), ("ok.example:8080", 200)] {
        let status = wire::h2_status(addr, "http://fulcrum.test/", Some(host)).await;
        assert_eq!(status, want, "HTTP/2 host {host:?}");
    }
    for (uri, want) in [
        ("http://user@fulcrum.test/", 400),
        ("http://fulcrum.test:8080/", 200),
    ] {
        let status = wire::h2_status(addr, uri, None).await;
        assert_eq!(status, want, "HTTP/2 :authority of {uri:?}");
    }
}

/// One proptest case: a connection's requests, HTTP/1.1 pipelined or HTTP/2 streams.
fn connection() -> impl Strategy<Value = (bool, Vec<Case>)> {
    let method = prop::sample::select(vec![
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PURGE",
    ]);
    let framing = prop::sample::select(vec![
        Framing::Length,
        Framing::Chunked,
        Framing::ChunkedTrailer,
        Framing::LengthTrailer,
    ]);
    let size = prop_oneof![0..=64usize, 0..=70_000usize, 0..=(1usize << 20)];
    let case = (method, framing, size, 1..=100_000usize, any::<u8>()).prop_map(
        |(method, framing, size, chunk, seed)| Case {
            method,
            framing,
            body: (0..size)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect(),
            chunk,
        },
    );
    (any::<bool>(), prop::collection::vec(case, 1..=3))
}

#[test]
fn request_bodies_arrive_byte_for_byte() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let backend = rt.block_on(echo_backend());
    let (_f, addr) = start(backend);
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&connection(), |(h2, cases)| {
            let checked = rt.block_on(async {
                if h2 {
                    wire::check_h2(addr, &cases).await
                } else {
                    wire::check_h1(addr, &cases).await
                }
            });
            prop_assert!(checked.is_ok(), "{}", checked.err().unwrap_or_default());
            Ok(())
        })
        .expect("every body reaches the backend whole");
}
