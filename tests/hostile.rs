//! Hostile clients: whatever one client sends, fulcrum keeps serving everyone else, stays
//! bounded, and never becomes an open proxy. Each test ends by checking that `/healthz` and a
//! normal request still answer.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{Fulcrum, Mode, Toml, free_port, get, http_backend, raw, tcp_backend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Ports {
    web: u16,
    l4: u16,
    admin: u16,
}

fn config(p: &Ports, http: SocketAddr, echo: SocketAddr) -> Toml {
    Toml::new()
        .runtime("shutdown_timeout = \"2s\"")
        .admin(p.admin)
        .listener("web", p.web, "http", "app")
        .listener("l4", p.l4, "tcp", "echo")
        .upstream("app", [http])
        .health("check = \"none\"")
        .upstream("echo", [echo])
        .health("check = \"none\"")
}

async fn setup(wrapper: &[&str]) -> (Fulcrum, Ports) {
    let http = http_backend("app").await;
    let echo = tcp_backend("echo", Mode::Echo).await;
    let p = Ports {
        web: free_port(),
        l4: free_port(),
        admin: free_port(),
    };
    let path = config(&p, http.addr, echo).write(&support::temp_dir("hostile"));
    let f = Fulcrum::spawn_wrapped(&path, wrapper);
    f.wait_for_log_count("listening", 2);
    f.wait_for_log("admin listener up");
    std::mem::forget(http); // keep the backend serving for the whole test
    (f, p)
}

/// The process still answers its probes and serves a normal request.
async fn still_serving(f: &mut Fulcrum, p: &Ports) {
    assert!(
        f.child.try_wait().expect("try_wait").is_none(),
        "fulcrum must still run"
    );
    let health = get(([127, 0, 0, 1], p.admin).into(), "/healthz").await;
    assert_eq!(health.status, 200, "/healthz keeps answering");
    let normal = get(([127, 0, 0, 1], p.web).into(), "/").await;
    assert_eq!(normal.status, 200, "a normal request is still served");
    assert!(!f.log().contains("panicked"), "no panic: {}", f.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_stop_normal_traffic() {
    let (mut f, p) = setup(&[]).await;
    let web: SocketAddr = ([127, 0, 0, 1], p.web).into();
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(TcpStream::connect(web).await.expect("idle connection"));
    }
    for _ in 0..20 {
        assert_eq!(
            get(web, "/").await.status,
            200,
            "served beside 2,000 idle clients"
        );
    }
    still_serving(&mut f, &p).await;
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    // 64 descriptors: a few sessions (two each) exhaust them.
    let (mut f, p) = setup(&["prlimit", "--nofile=64:64"]).await;
    let l4: SocketAddr = ([127, 0, 0, 1], p.l4).into();
    let mut held = Vec::new();
    for _ in 0..60 {
        if let Ok(s) = TcpStream::connect(l4).await {
            held.push(s);
        }
    }
    f.wait_for_log("accept failed, backing off");
    drop(held);
    support::wait_for_async("an echo session after the descriptors are free", || async {
        let mut s = TcpStream::connect(l4).await.ok()?;
        s.write_all(b"ping").await.ok()?;
        let mut b = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut b))
            .await
            .ok()?
            .ok()?;
        (&b == b"ping").then_some(())
    })
    .await;
    still_serving(&mut f, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_refused_and_never_reaches_the_host_it_names() {
    let (mut f, p) = setup(&[]).await;
    let target = std::net::TcpListener::bind("127.0.0.1:0").expect("bind target");
    target.set_nonblocking(true).expect("nonblocking");
    let t = target.local_addr().expect("addr");
    let reply = raw(
        ([127, 0, 0, 1], p.web).into(),
        format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        reply.starts_with("HTTP/1.1 405"),
        "CONNECT is refused: {reply}"
    );
    assert!(
        target.accept().is_err(),
        "fulcrum must never dial a host a client names"
    );
    still_serving(&mut f, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_strip_x_forwarded_for_through_connection() {
    let (mut f, p) = setup(&[]).await;
    let reply = raw(
        ([127, 0, 0, 1], p.web).into(),
        b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close, X-Forwarded-For\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(
        reply.contains("x-forwarded-for: 127.0.0.1\n"),
        "fulcrum's own X-Forwarded-For always reaches the backend: {reply}"
    );
    still_serving(&mut f, &p).await;
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// HPACK: `:method GET`, `:scheme http`, `:path /` (static table), `:authority x`.
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'x'];

/// Reads until the peer sends GOAWAY or closes; true if either happened in time.
async fn ends_with_goaway_or_close(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Err(_)) | Ok(Ok(0)) => return true,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Walk whole frames looking for GOAWAY.
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = (usize::from(buf[at]) << 16)
                | (usize::from(buf[at + 1]) << 8)
                | usize::from(buf[at + 2]);
            if buf[at + 3] == GOAWAY {
                return true;
            }
            if buf.len() < at + 9 + len {
                break;
            }
            at += 9 + len;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_ends_that_connection_only() {
    let (mut f, p) = setup(&[]).await;
    let mut s = TcpStream::connect(("127.0.0.1", p.web))
        .await
        .expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for i in 0..5000u32 {
        let id = 2 * i + 1;
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, GET_BLOCK));
        out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    let _ = s.write_all(&out).await;
    assert!(
        ends_with_goaway_or_close(&mut s).await,
        "a reset flood must end in GOAWAY or a close"
    );
    still_serving(&mut f, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_continuation_flood_is_bounded() {
    let (mut f, p) = setup(&[]).await;
    let mut s = TcpStream::connect(("127.0.0.1", p.web))
        .await
        .expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, 0, 1, GET_BLOCK));
    // Literal header `x-a: <1000 bytes>` without indexing, repeated in CONTINUATION frames:
    // far past the 64 KiB head limit, and never END_HEADERS.
    let mut field = vec![0x00, 0x03, b'x', b'-', b'a', 0x7f, 0xe9, 0x06];
    field.extend(std::iter::repeat_n(b'v', 1000));
    let _ = s.write_all(&out).await;
    let mut ended = false;
    for _ in 0..2000 {
        if s.write_all(&frame(CONTINUATION, 0, 1, &field))
            .await
            .is_err()
        {
            ended = true;
            break;
        }
    }
    assert!(
        ended || ends_with_goaway_or_close(&mut s).await,
        "a CONTINUATION flood must end in GOAWAY or a close"
    );
    still_serving(&mut f, &p).await;
}
