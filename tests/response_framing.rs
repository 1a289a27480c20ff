//! Backend responses whose framing is broken or ambiguous: never passed on
//! as if whole. 502 while nothing was sent to the client, a closed client connection after;
//! the backend connection is not reused, and the failure counts as kind `protocol` in the
//! metrics and in passive health.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{DEADLINE, Fulcrum, Toml, free_port, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw backend that answers every request head with `answer` and keeps the connection
/// open; it counts the connections it accepted.
async fn scripted(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 8192];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

struct Setup {
    fulcrum: Fulcrum,
    addr: SocketAddr,
    admin: SocketAddr,
}

fn start(backend: SocketAddr, unhealthy_threshold: u32) -> Setup {
    let port = free_port();
    let admin = free_port();
    let fulcrum = Fulcrum::start(
        &Toml::http(port, &[backend])
            .set("retries = 0")
            .health(&format!("unhealthy_threshold = {unhealthy_threshold}"))
            .admin(admin),
    );
    Setup {
        fulcrum,
        addr: ([127, 0, 0, 1], port).into(),
        admin: ([127, 0, 0, 1], admin).into(),
    }
}

/// `fulcrum_backend_failures_total{kind="protocol"}`, once the admin listener answers.
async fn protocol_failures(admin: SocketAddr) -> f64 {
    let text = raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    text.lines()
        .filter(|l| {
            l.starts_with("fulcrum_backend_failures_total{") && l.contains("kind=\"protocol\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Two GETs on one keep-alive client connection; the statuses.
async fn two_gets(addr: SocketAddr) -> Vec<u16> {
    let mut client = support::Client::connect(addr).await;
    let mut out = Vec::new();
    for _ in 0..2 {
        out.push(client.request("GET", "/", b"").await.status);
    }
    out
}

async fn refused_with_502(answer: &'static [u8]) {
    let (backend, accepted) = scripted(answer).await;
    let s = start(backend, 2);
    assert_eq!(
        two_gets(s.addr).await,
        [502, 502],
        "an ambiguous response is 502: {}",
        String::from_utf8_lossy(answer)
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a backend connection that sent an ambiguous response is never reused"
    );
    assert_eq!(
        protocol_failures(s.admin).await,
        2.0,
        "both count as kind protocol"
    );
    s.fulcrum.wait_for_log("backend down");
    assert!(
        s.fulcrum.log().contains("reason=\"protocol\""),
        "passive health sees protocol failures: {}",
        s.fulcrum.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_chunked_coding_is_502() {
    refused_with_502(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_content_length_is_502() {
    refused_with_502(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_transfer_coding_is_502() {
    refused_with_502(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_content_length_is_502() {
    refused_with_502(b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_after_the_head_closes_the_client_connection() {
    let (backend, _) =
        scripted(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
            .await;
    let s = start(backend, 1);
    let mut c = TcpStream::connect(s.addr).await.expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, c.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        closed.is_ok(),
        "the client connection is closed, not left waiting: {text:?}"
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the client never gets a complete body from a broken one: {text:?}"
    );
    assert_eq!(
        protocol_failures(s.admin).await,
        1.0,
        "a bad chunk is kind protocol"
    );
    s.fulcrum.wait_for_log("backend down");
}
