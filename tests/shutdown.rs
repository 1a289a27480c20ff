//! The shutdown sequence: keep serving for `shutdown_delay`, stop accepting, close idle
//! keep-alive clients, finish in-flight work with `Connection: close`, exit 0; a second
//! signal exits at once.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use support::{Client, Fulcrum, Toml, free_port, get, http_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Each test sets its own shutdown timing in `runtime`; no slow request here reaches the
/// response timeout.
fn config(port: u16, backend: SocketAddr, runtime: &str) -> Toml {
    Toml::http(port, &[backend])
        .set("response_timeout = \"120s\"")
        .runtime(runtime)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_through_the_delay_then_drains_in_flight_work_and_exits_0() {
    let a = http_backend("a").await;
    let port = free_port();
    let mut f = Fulcrum::start(&config(
        port,
        a.addr,
        "shutdown_delay = \"1s\"\nshutdown_timeout = \"20s\"",
    ));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // An idle keep-alive client, and a request that is in flight when the signal comes.
    let mut idle = TcpStream::connect(addr).await.expect("idle client");
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    assert!(idle.read(&mut buf).await.expect("read") > 0);
    let slow = tokio::spawn(async move { get(addr, "/sleep/2500").await });
    support::wait_for("the slow request to reach the backend", || {
        (a.requests.load(Ordering::Relaxed) >= 2).then_some(())
    });

    f.signal(libc::SIGTERM);
    f.wait_for_log("not ready, still serving");
    assert_eq!(
        get(addr, "/").await.status,
        200,
        "new clients are served during shutdown_delay"
    );

    f.wait_for_log("stopped accepting");
    support::wait_for_async("the listener to refuse new clients", || async {
        TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
    let closed = tokio::time::timeout(support::DEADLINE, idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle keep-alive clients are closed"
    );

    let r = slow.await.expect("slow request");
    assert_eq!(r.status, 200, "the in-flight request completes");
    assert_eq!(
        r.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a response finished during the drain carries Connection: close"
    );
    assert_eq!(f.wait_exit(), Some(0), "exit 0 after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let a = http_backend("a").await;
    let port = free_port();
    let mut f = Fulcrum::start(&config(port, a.addr, "shutdown_timeout = \"300s\""));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let _stuck = tokio::spawn(async move {
        let _ = Client::connect(addr)
            .await
            .try_request("GET", "/sleep/600000", b"")
            .await;
    });
    support::wait_for("the request to reach the backend", || {
        (a.requests.load(Ordering::Relaxed) >= 1).then_some(())
    });
    f.signal(libc::SIGTERM);
    f.wait_for_log("draining");
    f.signal(libc::SIGINT);
    assert_eq!(
        f.wait_exit(),
        Some(0),
        "the second signal exits without waiting for the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_cuts_off_what_is_left_and_still_exits_0() {
    let a = http_backend("a").await;
    let port = free_port();
    let mut f = Fulcrum::start(&config(port, a.addr, "shutdown_timeout = \"300ms\""));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let stuck = tokio::spawn(async move {
        Client::connect(addr)
            .await
            .try_request("GET", "/sleep/600000", b"")
            .await
            .is_err()
    });
    support::wait_for("the request to reach the backend", || {
        (a.requests.load(Ordering::Relaxed) >= 1).then_some(())
    });
    f.signal(libc::SIGTERM);
    assert_eq!(
        f.wait_exit(),
        Some(0),
        "exit 0 also when the deadline cut connections off"
    );
    assert!(
        stuck.await.expect("client"),
        "the cut-off client sees its connection end"
    );
    assert!(f.log().contains("drain deadline reached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_tunnel_is_drained_like_a_request() {
    let a = http_backend("a").await;
    let port = free_port();
    let mut f = Fulcrum::start(&config(port, a.addr, "shutdown_timeout = \"20s\""));
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .expect("upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).await.expect("read"), 1);
        head.push(b[0]);
    }
    f.signal(libc::SIGTERM);
    f.wait_for_log("stopped accepting");
    s.write_all(b"still here")
        .await
        .expect("write during drain");
    let mut back = [0u8; 10];
    s.read_exact(&mut back).await.expect("echo during drain");
    assert_eq!(
        &back, b"still here",
        "the tunnel keeps working while draining"
    );
    assert!(
        f.child.try_wait().expect("try_wait").is_none(),
        "fulcrum waits for the open tunnel"
    );
    drop(s);
    assert_eq!(f.wait_exit(), Some(0));
}
