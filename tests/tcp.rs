//! Layer-4 behaviour of the real binary with real TCP backends on 127.0.0.1.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use support::{Fulcrum, Mode, Toml, free_port, read_tag, tcp_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A tcp listener over upstream `app`; further keys go to `app`.
fn config(port: u16, balance: &str, backends: &[(SocketAddr, u32)]) -> Toml {
    Toml::new()
        .runtime("shutdown_timeout = \"10s\"")
        .listener("l4", port, "tcp", "app")
        .upstream("app", backends)
        .set(&format!("balance = \"{balance}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_3_to_1_give_exactly_3_to_1_over_sequential_sessions() {
    let a = tcp_backend("a", Mode::TagThenClose).await;
    let b = tcp_backend("b", Mode::TagThenClose).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "round_robin", &[(a, 3), (b, 1)]));
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..40 {
        let tag = read_tag(proxy).await.expect("session through fulcrum");
        *counts.entry(tag).or_default() += 1;
    }
    assert_eq!(
        counts.get("a"),
        Some(&30),
        "weight 3 must get 3/4 of sessions: {counts:?}"
    );
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "weight 1 must get 1/4 of sessions: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_load_sends_new_sessions_away_from_a_backend_holding_long_ones() {
    let slow = tcp_backend("slow", Mode::TagThenHold).await;
    let fast = tcp_backend("fast", Mode::TagThenClose).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "least_load", &[(slow, 1), (fast, 1)]));
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut held = Vec::new();
    let mut slow_count = 0;
    for _ in 0..20 {
        let mut s = TcpStream::connect(proxy).await.expect("connect");
        let mut line = [0u8; 5];
        let n = s.read(&mut line).await.expect("read tag");
        if line[..n].starts_with(b"slow") {
            slow_count += 1;
            held.push(s); // the session stays in flight on "slow"
        } else {
            // Close our side and wait for fulcrum to close its own: the session is then
            // (all but) over, so "fast" carries little load into the next pick.
            let _ = s.shutdown().await;
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        }
    }
    // "slow" is only chosen while its load does not exceed "fast"'s, which holds at most the
    // few sessions still closing; round robin would give it 10 of 20.
    assert!(
        slow_count <= 4,
        "least_load must avoid the backend holding long sessions: slow got {slow_count} of 20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_backend_port_closed_every_session_succeeds_by_failover() {
    let live = tcp_backend("live", Mode::TagThenClose).await;
    let dead = support::closed_addr();
    let port = free_port();
    let _f =
        Fulcrum::start(&config(port, "round_robin", &[(dead, 1), (live, 1)]).set("retries = 1"));
    let proxy: SocketAddr = ([127, 0, 0, 1], port).into();
    for i in 0..100 {
        let tag = read_tag(proxy).await.expect("session through fulcrum");
        assert_eq!(
            tag, "live",
            "session {i} must fail over to the live backend"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_stream_passes_byte_exact() {
    let echo = tcp_backend("echo", Mode::Echo).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "round_robin", &[(echo, 1)]));
    let s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut r, mut w) = s.into_split();
    const LEN: usize = 50 << 20;
    let data: Vec<u8> = (0..LEN as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.expect("write");
        w.shutdown().await.expect("shutdown");
    });
    let mut back = Vec::with_capacity(LEN);
    r.read_to_end(&mut back).await.expect("read");
    writer.await.expect("writer");
    assert_eq!(back.len(), LEN, "every byte must come back");
    assert!(back == data, "the bytes must come back unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_is_passed_on_and_the_answer_still_arrives() {
    let counter = tcp_backend("count", Mode::CountThenAnswer).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "round_robin", &[(counter, 1)]));
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"hello, half-close").await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read answer");
    assert_eq!(
        answer, "got 17",
        "the backend must see EOF and its answer must reach the client"
    );
}

/// The other way round: the backend is done first. Its FIN must reach the client at once
/// (fulcrum leaves a client's shutdown to close(2) only when nothing else follows), and
/// what the client sends afterwards must still reach the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_half_close_reaches_the_client_which_can_still_send() {
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = backend.local_addr().expect("backend addr");
    let received = tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.expect("accept");
        s.write_all(b"bye").await.expect("backend write");
        s.shutdown().await.expect("backend half-close");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("backend read");
        got
    });
    let port = free_port();
    // No health probe: it would be the one connection this backend accepts.
    let toml = config(port, "round_robin", &[(addr, 1)]).health("check = \"none\"");
    let _f = Fulcrum::start(&toml);
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut first = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut first),
    )
    .await
    .expect("the backend's FIN must reach the client")
    .expect("read");
    assert_eq!(first, b"bye");
    s.write_all(b"still here").await.expect("write after EOF");
    s.shutdown().await.expect("client half-close");
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), received)
        .await
        .expect("the backend must see the client's bytes and EOF")
        .expect("backend task");
    assert_eq!(got, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_session_finish_then_exits_0() {
    let echo = tcp_backend("echo", Mode::Echo).await;
    let port = free_port();
    let mut f = Fulcrum::start(&config(port, "round_robin", &[(echo, 1)]));
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(b"before").await.expect("write");
    let mut buf = [0u8; 6];
    s.read_exact(&mut buf).await.expect("echo before");
    f.signal(libc::SIGTERM);
    f.wait_for_log("draining");
    support::wait_for_async("the listener to stop accepting", || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    s.write_all(b"after!").await.expect("write during drain");
    s.read_exact(&mut buf).await.expect("echo during drain");
    assert_eq!(
        &buf, b"after!",
        "the open session must keep working while draining"
    );
    assert!(
        f.child.try_wait().expect("try_wait").is_none(),
        "fulcrum must wait for the open session"
    );
    drop(s);
    assert_eq!(f.wait_exit(), Some(0), "fulcrum must exit 0 after draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_the_client_is_closed() {
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "round_robin", &[(support::closed_addr(), 1)]));
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "a client with no backend to reach is closed");
}
