//! Layer-7 behaviour of the real binary with real HTTP backends on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use support::{Client, Fulcrum, Toml, free_port, get, http_backend, raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn proxy(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// fulcrum with one http listener over `backends`, plus `extra` keys in the upstream and
/// `listener_extra` in the listener.
async fn start(
    backends: &[SocketAddr],
    extra: &str,
    listener_extra: &str,
) -> (Fulcrum, SocketAddr) {
    let port = free_port();
    let toml = Toml::http(port, backends)
        .set(extra)
        .at("web")
        .set(listener_extra);
    let f = Fulcrum::start(&toml);
    (f, proxy(port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_one_keep_alive_connection_is_balanced() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let (_f, addr) = start(&[a.addr, b.addr], "", "").await;
    let mut client = Client::connect(addr).await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..10 {
        let r = client.request("GET", "/", b"").await;
        assert_eq!(r.status, 200);
        *counts.entry(r.text()).or_default() += 1;
    }
    assert_eq!(
        counts.get("a"),
        Some(&5),
        "one backend per request: {counts:?}"
    );
    assert_eq!(
        counts.get("b"),
        Some(&5),
        "one backend per request: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_pooled_and_reused() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    for _ in 0..200 {
        assert_eq!(get(addr, "/").await.status, 200);
    }
    let conns = a.connections.load(Ordering::Relaxed);
    assert!(
        conns <= 5,
        "200 sequential requests must reuse pooled backend connections, saw {conns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_hop_by_hop_headers_removed() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let reply = raw(
        addr,
        b"GET /headers HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 10.1.1.1\r\n\
X-Forwarded-Proto: https\r\nConnection: close, X-Secret, X-Forwarded-For\r\nX-Secret: 1\r\n\
Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    let seen = reply.to_ascii_lowercase();
    assert!(seen.starts_with("http/1.1 200"), "{reply}");
    assert!(
        seen.contains("host: app.example\n"),
        "Host must be kept: {reply}"
    );
    assert!(
        seen.contains("x-forwarded-for: 127.0.0.1\n")
            || seen.contains("x-forwarded-for: 10.1.1.1, 127.0.0.1\n"),
        "X-Forwarded-For must end with the client address: {reply}"
    );
    assert!(
        seen.contains("x-forwarded-proto: http\n"),
        "X-Forwarded-Proto replaced: {reply}"
    );
    assert!(
        seen.contains("x-kept: yes\n"),
        "end-to-end headers pass: {reply}"
    );
    for gone in [
        "x-secret",
        "keep-alive:",
        "\nte:",
        "proxy-connection",
        "\nconnection:",
    ] {
        let body = &seen[seen.find("\r\n\r\n").unwrap_or(0)..];
        assert!(
            !body.contains(gone),
            "hop-by-hop {gone:?} must not reach the backend: {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_sent_in_origin_form_to_a_configured_backend() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let reply = raw(
        addr,
        b"GET http://elsewhere.example:9/headers?x=1 HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(
        reply.contains("get /headers?x=1\n"),
        "origin form to the backend: {reply}"
    );
    assert!(
        reply.contains("host: elsewhere.example:9\n"),
        "Host from the authority: {reply}"
    );
    assert_eq!(
        a.requests.load(Ordering::Relaxed),
        1,
        "only the configured backend is dialled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_204_and_304_are_framed_right_on_a_reused_connection() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let mut c = Client::connect(addr).await;
    let head = c.request("HEAD", "/big/1000", b"").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(
        head.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"1000"[..]),
        "HEAD keeps the length of the GET"
    );
    assert_eq!(c.request("GET", "/204", b"").await.status, 204);
    assert_eq!(c.request("GET", "/304", b"").await.status, 304);
    let after = c.request("GET", "/", b"").await;
    assert_eq!(
        after.text(),
        "a",
        "the connection stays usable after bodiless responses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("head");
    let mut buf = vec![0u8; 25];
    let n = s.read(&mut buf).await.expect("interim");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "the client gets 100 Continue before sending its body"
    );
    s.write_all(b"hello").await.expect("body");
    let mut rest = vec![0u8; 512];
    let n = s.read(&mut rest).await.expect("response");
    let text = String::from_utf8_lossy(&rest[..n]);
    assert!(text.contains("200 OK") && text.ends_with("got 5"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_becomes_a_byte_tunnel() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("head");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(
            s.read(&mut b).await.expect("read"),
            1,
            "101 head must arrive"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping over the tunnel").await.expect("write");
    let mut back = [0u8; 20];
    s.read_exact(&mut back).await.expect("echo");
    assert_eq!(&back, b"ping over the tunnel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_fail_over_for_every_method() {
    let a = http_backend("a").await;
    let dead = support::closed_addr();
    let (_f, addr) = start(&[dead, a.addr], "retries = 1", "").await;
    let mut c = Client::connect(addr).await;
    for i in 0..50 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let r = c.request(method, "/", b"data").await;
        assert_eq!(
            r.status, 200,
            "{method} {i} must fail over to the live backend"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_left_is_502_with_a_short_plain_body() {
    let dead = support::closed_addr();
    let (_f, addr) = start(&[dead], "", "").await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "502 Bad Gateway\n", "no internals in the body");
    assert!(!r.text().contains(&dead.port().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeout_gives_504() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "response_timeout = \"200ms\"", "").await;
    let r = get(addr, "/sleep/5000").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "504 Gateway Timeout\n");
}

/// A backend that accepts and reads, and never answers (a paused process, a cut network).
async fn silent() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(1..) = s.read(&mut buf).await {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bodiless_get_that_times_out_is_retried_elsewhere() {
    let live = http_backend("live").await;
    let (_f, addr) = start(
        &[silent().await, live.addr],
        "response_timeout = \"1s\"",
        "",
    )
    .await;
    let mut client = Client::connect(addr).await;
    for _ in 0..4 {
        let r = client.request("GET", "/", b"").await;
        assert_eq!(
            (r.status, r.text()),
            (200, "live".to_owned()),
            "an idempotent bodiless request is sent elsewhere after a response timeout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_that_times_out_on_every_backend_is_504() {
    let (_f, addr) = start(
        &[silent().await, silent().await],
        "response_timeout = \"200ms\"",
        "",
    )
    .await;
    let r = get(addr, "/").await;
    assert_eq!(r.status, 504, "the last failure was a response timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_times_out_is_504_not_retried() {
    let live = http_backend("live").await;
    let (_f, addr) = start(
        &[silent().await, live.addr],
        "response_timeout = \"1s\"",
        "",
    )
    .await;
    let mut got = Vec::new();
    // Round robin over two backends: one of two POSTs meets the silent one.
    for _ in 0..2 {
        got.push(
            Client::connect(addr)
                .await
                .request("POST", "/", b"x")
                .await
                .status,
        );
    }
    got.sort_unstable();
    assert_eq!(got, [200, 504], "a request with a body is never sent twice");
    assert_eq!(
        live.requests.load(Ordering::Relaxed),
        1,
        "the timed-out POST never reached the other backend"
    );
}

/// A backend that reads a request head and closes without answering.
async fn slammer() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bodiless_get_broken_before_the_response_is_retried_elsewhere() {
    let bad = slammer().await;
    let good = http_backend("good").await;
    let (_f, addr) = start(&[bad, good.addr], "retries = 1", "").await;
    for i in 0..20 {
        let r = get(addr, "/").await;
        assert_eq!(
            r.status, 200,
            "GET {i} must be retried on the healthy backend"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_broken_before_the_response_is_not_retried() {
    let bad = slammer().await;
    let (_f, addr) = start(&[bad], "retries = 1", "").await;
    let r = Client::connect(addr)
        .await
        .request("POST", "/", b"once")
        .await;
    assert_eq!(
        r.status, 502,
        "a request with a body must not be sent twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_mid_response_gives_a_short_response_not_a_hang() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let mut c = Client::connect(addr).await;
    let r = tokio::time::timeout(support::DEADLINE, c.try_request("GET", "/cut", b"")).await;
    match r {
        Ok(Ok(reply)) => assert!(reply.body.len() < 1000, "the response must be short"),
        Ok(Err(_)) => {} // reset or incomplete message: what a client should see
        Err(_) => panic!("the client must not hang when the backend breaks mid-response"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_clients_are_all_served() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let (_f, addr) = start(&[a.addr, b.addr], "", "").await;
    let tasks: Vec<_> = (0..500)
        .map(|_| tokio::spawn(async move { get(addr, "/").await.status }))
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.expect("task"),
            200,
            "every concurrent client is served"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_with_flat_memory() {
    let a = http_backend("a").await;
    let (f, addr) = start(&[a.addr], "", "").await;
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    const LEN: u64 = 1 << 30;
    let writer = tokio::spawn(async move {
        let head = format!("POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: {LEN}\r\n\r\n");
        w.write_all(head.as_bytes()).await.expect("head");
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..(LEN >> 20) {
            w.write_all(&chunk).await.expect("body");
        }
        w
    });
    let mut out = vec![0u8; 512];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(&format!("got {LEN}")) {
        let n = r.read(&mut out).await.expect("read");
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&out[..n]);
    }
    let _w = writer.await.expect("writer");
    let status = std::fs::read_to_string(format!("/proc/{}/status", f.child.id())).expect("status");
    let hwm_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    assert!(
        hwm_kib < 64 * 1024,
        "a {} MiB body must stream, not be buffered: peak RSS {hwm_kib} KiB",
        LEN >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_is_cut_off_by_header_read() {
    let a = http_backend("a").await;
    let (_f, addr) = start(
        &[a.addr],
        "",
        "timeouts = { header_read = \"300ms\", idle = \"60s\" }",
    )
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "a head that never completes must be cut off");
    assert_eq!(
        a.requests.load(Ordering::Relaxed),
        0,
        "nothing reaches the backend"
    );
}

/// The kernel holds a silent client back (accepting is deferred until data), then hands it
/// over after about a second; the listener's timeouts still end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_is_still_closed() {
    let a = http_backend("a").await;
    let (_f, addr) = start(
        &[a.addr],
        "",
        "timeouts = { header_read = \"300ms\", idle = \"300ms\" }",
    )
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "a silent client must be closed, not held forever"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_client_is_closed() {
    let a = http_backend("a").await;
    let (_f, addr) = start(
        &[a.addr],
        "",
        "timeouts = { header_read = \"10s\", idle = \"300ms\" }",
    )
    .await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let r = tokio::time::timeout(support::DEADLINE, s.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "an idle keep-alive client must be closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_100_header_fields_or_64_kib_of_head_is_431() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let r = raw(addr, many.as_bytes()).await;
    assert!(r.starts_with("HTTP/1.1 431"), "over 100 fields: {r}");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let r = raw(addr, big.as_bytes()).await;
    assert!(
        r.starts_with("HTTP/1.1 431"),
        "over 64 KiB: {}",
        &r[..r.len().min(100)]
    );
    assert_eq!(
        a.requests.load(Ordering::Relaxed),
        0,
        "nothing reaches the backend"
    );
}

/// A raw backend that records the bytes it receives and answers `200 ok`.
async fn recorder() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let sink = std::sync::Arc::clone(&sink);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
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

async fn smuggle(request: &[u8]) -> (String, String) {
    let (backend, seen) = recorder().await;
    let (_f, addr) = start(&[backend], "", "").await;
    let reply = raw(addr, request).await;
    let got = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    (reply, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_never_reaches_a_backend_ambiguous() {
    let (reply, got) = smuggle(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    // hyper normalises this shape (RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is
    // dropped); either a 400 or a backend that sees one unambiguous framing is correct.
    let lower = got.to_ascii_lowercase();
    let ambiguous = lower
        .split("\r\n\r\n")
        .any(|head| head.contains("content-length") && head.contains("transfer-encoding"));
    assert!(
        reply.starts_with("HTTP/1.1 400") || !ambiguous,
        "the backend must never see both framings: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differing_duplicate_content_length_is_400() {
    let (reply, got) = smuggle(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 10\r\n\r\nabcd",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(got, "", "the backend must never see an ambiguous message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_fields_are_400() {
    // Found by fuzz/http_head: fulcrum and the backend could each route by another Host.
    let (reply, got) =
        smuggle(b"GET / HTTP/1.1\r\nHost: a\r\nHost: admin\r\nConnection: close\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(got, "", "the backend must never see two Host fields");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_in_the_head_is_400() {
    let (reply, got) = smuggle(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(got, "", "the backend must never see an obs-folded head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_chunk_size_is_400_and_no_complete_request_reaches_the_backend() {
    let (reply, got) = smuggle(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(
        !got.contains("hello"),
        "no bytes of the bad body are forwarded: {got:?}"
    );
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "the backend never sees a complete message: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_lf_head_is_refused_or_normalised() {
    let (reply, got) = smuggle(b"GET / HTTP/1.1\nHost: x\nConnection: close\n\n").await;
    let bare_lf = got
        .as_bytes()
        .windows(2)
        .any(|w| w[1] == b'\n' && w[0] != b'\r')
        || got.starts_with('\n');
    assert!(
        !bare_lf,
        "the backend must only ever see CRLF line ends: {got:?}"
    );
    assert!(
        reply.starts_with("HTTP/1.1 400") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_return_their_connection_to_the_pool() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let mut c = Client::connect(addr).await;
    for _ in 0..50 {
        assert_eq!(c.request("HEAD", "/", b"").await.status, 200);
        assert_eq!(c.request("GET", "/204", b"").await.status, 204);
    }
    let conns = a.connections.load(Ordering::Relaxed);
    assert!(
        conns <= 3,
        "HEAD and 204 answers must not cost a backend connection each: {conns}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_other_than_chunked_is_501() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let reply = raw(
        addr,
        b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 501"), "{reply}");
    assert_eq!(
        a.requests.load(Ordering::Relaxed),
        0,
        "nothing reaches the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_fields_reach_an_http1_backend_as_one() {
    use http_body_util::BodyExt;
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    // h2c with prior knowledge: the listener serves HTTP/2 without TLS too.
    let s = TcpStream::connect(addr).await.expect("connect");
    let mut sender = support::h2_client(s).await;
    let req = hyper::Request::builder()
        .uri("http://fulcrum.test/headers")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let seen = String::from_utf8_lossy(&body).to_ascii_lowercase();
    assert!(seen.contains("cookie: a=1; b=2\n"), "{seen}");
    assert_eq!(seen.matches("cookie:").count(), 1, "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_client_outlives_header_read() {
    let a = http_backend("a").await;
    let (_f, addr) = start(
        &[a.addr],
        "",
        "timeouts = { header_read = \"100ms\", idle = \"60s\" }",
    )
    .await;
    let mut c = Client::connect(addr).await;
    assert_eq!(c.request("GET", "/", b"").await.status, 200);
    // Idle between requests is `idle`'s business, not `header_read`'s. Three times, a client
    // that sends half a head is cut off by header_read: that many windows passed with nothing
    // sent on the idle connection, which must still serve.
    for _ in 0..3 {
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET / HTTP/1.1\r\nHost")
            .await
            .expect("write half a head");
        let mut rest = Vec::new();
        tokio::time::timeout(support::DEADLINE, slow.read_to_end(&mut rest))
            .await
            .expect("header_read closes a half head")
            .ok();
    }
    let again = c.try_request("GET", "/", b"").await;
    assert!(
        matches!(again, Ok(ref r) if r.status == 200),
        "the keep-alive connection must still be open after header_read"
    );
}

/// The first request of a connection pauses its reads while the backend works (fulcrum does
/// not look for the client's close then): a request sent meanwhile is still read, and answered
/// after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_sent_while_the_first_waits_is_answered_after_it() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /sleep/200 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write the first request");
    support::wait_for_async("the backend to get the first request", || async {
        (a.requests.load(Ordering::Relaxed) == 1).then_some(())
    })
    .await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write the second request");
    let mut out = Vec::new();
    tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("both requests answered, then the connection closed")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert_eq!(a.requests.load(Ordering::Relaxed), 2);
}

/// A response larger than the socket's send buffer, on a fresh connection that is answered
/// before it ever waited: the write that would block hands the socket to the event loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_larger_than_the_socket_buffer_arrives_whole_on_a_fresh_connection() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let size = 8 * 1024 * 1024;
    let request = format!("GET /big/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = raw(addr, request.as_bytes()).await;
    let (head, body) = reply.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), size);
}

/// Two requests in one segment on a fresh connection: both answered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_in_the_first_segment_are_both_answered() {
    let a = http_backend("a").await;
    let (_f, addr) = start(&[a.addr], "", "").await;
    let reply = raw(
        addr,
        b"GET /sleep/50 HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(reply.matches("HTTP/1.1 200 OK").count(), 2, "{reply}");
}
