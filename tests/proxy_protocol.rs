//! The PROXY protocol with the real binary: headers accepted on listeners, headers sent to
//! backends. Every expected header is written out byte by byte from HAProxy's
//! proxy-protocol.txt, never built with the code under test.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use support::{Fulcrum, Toml, free_port, http_backend, wait_for_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The v2 signature, 12 bytes.
const SIG: &[u8] = b"\r\n\r\n\x00\r\nQUIT\n";

/// What every test's config starts from.
fn base() -> Toml {
    Toml::new().runtime("shutdown_timeout = \"2s\"")
}

fn at(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A raw backend that records every byte of every connection. With `http`, it answers each
/// complete request head with `200` and body `ok`, keeping the connection open.
#[derive(Clone)]
struct Recorder {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    async fn start(http: bool) -> Recorder {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let rec = Recorder {
            addr: l.local_addr().expect("addr"),
            conns: Arc::default(),
        };
        let conns = Arc::clone(&rec.conns);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let index = {
                    let mut c = conns.lock().unwrap();
                    c.push(Vec::new());
                    c.len() - 1
                };
                let conns = Arc::clone(&conns);
                tokio::spawn(async move {
                    let mut answered = 0;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let heads = {
                            let mut c = conns.lock().unwrap();
                            c[index].extend_from_slice(&buf[..n]);
                            complete_heads(&c[index])
                        };
                        while http && answered < heads {
                            answered += 1;
                            let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            if s.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        rec
    }

    fn conns(&self) -> Vec<Vec<u8>> {
        self.conns.lock().unwrap().clone()
    }

    /// Waits until `n` connections were seen and each satisfies `done`.
    async fn wait(&self, n: usize, done: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        wait_for_async(&format!("{n} recorded backend connections"), || async {
            let c = self.conns();
            (c.len() >= n && c.iter().all(|b| done(b))).then_some(c)
        })
        .await
    }
}

/// Request heads complete in `data`: each ends in a blank line after its request line (a v2
/// header's signature also holds `\r\n\r\n`, so counting starts at the first `GET `).
fn complete_heads(data: &[u8]) -> usize {
    let Some(start) = data.windows(4).position(|w| w == b"GET ") else {
        return 0;
    };
    data[start..]
        .windows(4)
        .filter(|w| w == b"\r\n\r\n")
        .count()
}

/// Sends `bytes` on a fresh connection to `addr` and reads until it closes.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_all(&mut s).await
}

async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

const GET_HEADERS: &[u8] = b"GET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// v2 PROXY over TCP/IPv4: 192.0.2.1:56324 -> 198.51.100.2:443.
fn v2_tcp4() -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    h.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb]);
    h
}

/// v2 PROXY over TCP/IPv6: [2001:db8::1]:4000 -> [2001:db8::2]:443, then a NOOP TLV.
fn v2_tcp6_with_tlv() -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0x00, 0x28]);
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    h.extend_from_slice(&[0x0f, 0xa0, 0x01, 0xbb]);
    h.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_sources_become_x_forwarded_for_at_an_http_backend() {
    let app = http_backend("app").await;
    let port = free_port();
    let _f = Fulcrum::start(
        &base()
            .listener("web", port, "http", "app")
            .set("proxy_protocol = true")
            .upstream("app", [app.addr])
            .health("check = \"none\""),
    );
    let v2_local = [SIG, b"\x20\x00\x00\x00"].concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "v1 TCP4",
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            "192.0.2.1",
        ),
        (
            "v1 TCP6",
            b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n".to_vec(),
            "2001:db8::1",
        ),
        ("v2 TCP4", v2_tcp4(), "192.0.2.1"),
        ("v2 TCP6 with a TLV", v2_tcp6_with_tlv(), "2001:db8::1"),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        ("v2 LOCAL", v2_local, "127.0.0.1"),
    ];
    for (what, header, xff) in cases {
        let reply = exchange(at(port), &[&header[..], GET_HEADERS].concat()).await;
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "{what}: the request after the header must be served: {reply}"
        );
        assert!(
            reply
                .to_ascii_lowercase()
                .contains(&format!("x-forwarded-for: {xff}\n")),
            "{what}: X-Forwarded-For must name {xff} (the announced source; the peer for \
             UNKNOWN/LOCAL): {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_header_is_closed_and_reaches_no_backend() {
    let app = http_backend("app").await;
    let port = free_port();
    let _f = Fulcrum::start(
        &base()
            .listener("web", port, "http", "app")
            .set("proxy_protocol = true\ntimeouts = { header_read = \"300ms\" }")
            .upstream("app", [app.addr])
            .health("check = \"none\""),
    );
    for (what, bytes) in [
        ("plain http", GET_HEADERS.to_vec()),
        (
            "a bad v1 line",
            [b"PROXY TCP4 192.0.2.1 nope 1 2\r\n".as_slice(), GET_HEADERS].concat(),
        ),
        (
            "v2 version 1",
            [SIG, b"\x11\x11\x00\x0c", &[0; 12], GET_HEADERS].concat(),
        ),
    ] {
        let reply = exchange(at(port), &bytes).await;
        assert_eq!(
            reply, "",
            "{what}: the connection must be closed unanswered"
        );
    }
    // A client that sends nothing is cut off at header_read.
    let mut silent = TcpStream::connect(at(port)).await.expect("connect");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(support::DEADLINE, silent.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0) | Err(_))),
        "a silent client must be closed unanswered after header_read: {closed:?}"
    );
    assert_eq!(
        app.connections.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing from a connection without a header may reach the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_split_across_writes_is_accepted() {
    let app = http_backend("app").await;
    let port = free_port();
    let _f = Fulcrum::start(
        &base()
            .listener("web", port, "http", "app")
            .set("proxy_protocol = true")
            .upstream("app", [app.addr])
            .health("check = \"none\""),
    );
    let v1: &[&[u8]] = &[
        b"PRO",
        b"XY TCP4 192.0.2.1 198.",
        b"51.100.2 56324 443\r",
        b"\nGET /headers HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ];
    let v2 = v2_tcp4();
    let v2_parts: &[&[u8]] = &[&v2[..5], &v2[5..14], &v2[14..20], &v2[20..], GET_HEADERS];
    for (what, parts) in [("v1", v1), ("v2", v2_parts)] {
        let mut s = TcpStream::connect(at(port)).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        for part in parts {
            s.write_all(part).await.expect("write part");
            // Each part goes out as a segment of its own: the next is written only once
            // fulcrum's side has acknowledged this one.
            support::wait_for_async("the part to be acknowledged", || async {
                (unsent(&s) == 0).then_some(())
            })
            .await;
        }
        let reply = read_all(&mut s).await;
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("x-forwarded-for: 192.0.2.1\n"),
            "{what}: a header that arrives in pieces must still be read whole: {reply}"
        );
    }
}

/// Bytes written on `s` that the peer has not acknowledged yet (`SIOCOUTQ`).
fn unsent(s: &TcpStream) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int through the pointer, to a live local.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc == 0 { n } else { 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_upstreams_send_the_client_and_listener_byte_exact() {
    let r1 = Recorder::start(false).await;
    let r2 = Recorder::start(false).await;
    let r3 = Recorder::start(false).await;
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let _f = Fulcrum::start(
        &base()
            .listener("l1", p1, "tcp", "v1")
            .listener("l2", p2, "tcp", "v2")
            .listener("l3", p3, "tcp", "v1_again")
            .set("proxy_protocol = true")
            .upstream("v1", [r1.addr])
            .set("send_proxy_protocol = \"v1\"")
            .health("check = \"none\"")
            .upstream("v2", [r2.addr])
            .set("send_proxy_protocol = \"v2\"")
            .health("check = \"none\"")
            .upstream("v1_again", [r3.addr])
            .set("send_proxy_protocol = \"v1\"")
            .health("check = \"none\""),
    );
    let send = |port: u16, prefix: Vec<u8>| async move {
        let mut s = TcpStream::connect(at(port)).await.expect("connect");
        let client = s.local_addr().expect("client addr").port();
        s.write_all(&[&prefix[..], b"hello"].concat())
            .await
            .expect("write");
        s.shutdown().await.expect("half-close");
        read_all(&mut s).await;
        client
    };

    let c1 = send(p1, Vec::new()).await;
    let got = r1.wait(1, |b| b.ends_with(b"hello")).await;
    let want = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {c1} {p1}\r\nhello");
    assert_eq!(
        String::from_utf8_lossy(&got[0]),
        want,
        "v1: the client's address and the listener's, then the payload"
    );

    let c2 = send(p2, Vec::new()).await;
    let got = r2.wait(1, |b| b.ends_with(b"hello")).await;
    let mut want = SIG.to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend_from_slice(&c2.to_be_bytes());
    want.extend_from_slice(&p2.to_be_bytes());
    want.extend_from_slice(b"hello");
    assert_eq!(got[0], want, "v2: PROXY, TCP over IPv4, 12 address bytes");

    // A source announced to fulcrum is the one it announces on; an IPv6 client beside the
    // IPv4 listener is named in one family, the listener IPv4-mapped.
    send(
        p3,
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
    )
    .await;
    send(p3, v2_tcp6_with_tlv()).await;
    let got = r3.wait(2, |b| b.ends_with(b"hello")).await;
    let want = [
        format!("PROXY TCP4 192.0.2.1 127.0.0.1 56324 {p3}\r\nhello"),
        format!("PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 4000 {p3}\r\nhello"),
    ];
    let got: Vec<String> = got
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert_eq!(got, want, "the announced client must be passed on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_upstreams_send_the_header_before_the_request_byte_exact() {
    let r1 = Recorder::start(true).await;
    let r2 = Recorder::start(true).await;
    let (p1, p2) = (free_port(), free_port());
    let _f = Fulcrum::start(
        &base()
            .listener("l1", p1, "http", "v1")
            .listener("l2", p2, "http", "v2")
            .upstream("v1", [r1.addr])
            .set("send_proxy_protocol = \"v1\"")
            .health("check = \"none\"")
            .upstream("v2", [r2.addr])
            .set("send_proxy_protocol = \"v2\"")
            .health("check = \"none\""),
    );
    let get = |port: u16| async move {
        let mut s = TcpStream::connect(at(port)).await.expect("connect");
        let client = s.local_addr().expect("client addr").port();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let reply = read_all(&mut s).await;
        assert!(reply.ends_with("ok"), "served: {reply}");
        client
    };

    let c1 = get(p1).await;
    let got = r1.conns();
    let want = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {c1} {p1}\r\nGET / HTTP/1.1\r\n");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(want.as_bytes()),
        "v1 header then the request: {:?}",
        String::from_utf8_lossy(&got[0])
    );

    let c2 = get(p2).await;
    let got = r2.conns();
    let mut want = SIG.to_vec();
    want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend_from_slice(&c2.to_be_bytes());
    want.extend_from_slice(&p2.to_be_bytes());
    want.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(got.len(), 1);
    assert!(
        got[0].starts_with(&want),
        "v2 header then the request: {:?}",
        got[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_that_announced_a_client_serve_only_that_client() {
    let rec = Recorder::start(true).await;
    let port = free_port();
    let _f = Fulcrum::start(
        &base()
            .listener("web", port, "http", "app")
            .upstream("app", [rec.addr])
            .set("send_proxy_protocol = \"v1\"")
            .health("check = \"none\""),
    );
    let mut ports = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(at(port)).await.expect("connect");
        ports.push(s.local_addr().expect("client addr").port());
        for _ in 0..2 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .expect("write");
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"\r\n\r\nok") {
                let n = tokio::time::timeout(support::DEADLINE, s.read(&mut buf))
                    .await
                    .expect("response in time")
                    .expect("read");
                assert!(n > 0, "fulcrum closed the keep-alive connection");
                got.extend_from_slice(&buf[..n]);
            }
        }
    }
    let conns = rec.conns();
    assert_eq!(
        conns.len(),
        2,
        "one backend connection per announced client, reused for its own second request"
    );
    for (conn, client) in conns.iter().zip(&ports) {
        let header = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {client} {port}\r\n");
        assert!(
            conn.starts_with(header.as_bytes()),
            "each connection announces its own client: {:?}",
            String::from_utf8_lossy(conn)
        );
        assert_eq!(
            complete_heads(conn),
            2,
            "both requests of a client go on the connection that announced it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_send_unknown_or_local_headers() {
    let r1 = Recorder::start(false).await;
    let r2 = Recorder::start(true).await;
    let _f = Fulcrum::start(
        &base()
            .listener("l1", free_port(), "tcp", "v1")
            .listener("l2", free_port(), "http", "v2")
            .upstream("v1", [r1.addr])
            .set("send_proxy_protocol = \"v1\"")
            .health("check = \"tcp\"\ninterval = \"100ms\"")
            .upstream("v2", [r2.addr])
            .set("send_proxy_protocol = \"v2\"")
            .health("check = \"http\"\npath = \"/healthz\"\ninterval = \"100ms\""),
    );
    let got = r1.wait(1, |b| b.len() >= 15).await;
    assert_eq!(
        got[0], b"PROXY UNKNOWN\r\n",
        "a v1 tcp check sends UNKNOWN and nothing else"
    );
    let got = r2.wait(1, |b| complete_heads(b) == 1).await;
    let want = [SIG, b"\x20\x00\x00\x00", b"GET /healthz HTTP/1.1\r\n"].concat();
    assert!(
        got[0].starts_with(&want),
        "a v2 http check sends LOCAL, then its request: {:?}",
        got[0]
    );
}
