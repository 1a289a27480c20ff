//! Test support: the real fulcrum binary started from a TOML string, and in-process
//! backends on 127.0.0.1. Every wait polls with a deadline; nothing sleeps hoping.

#![allow(dead_code)]

pub mod ca;
mod config;

pub use config::Toml;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Long enough for a loaded 2-core CI machine; a passing test never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A free port on 127.0.0.1 for fulcrum to take, from below the kernel's ephemeral range
/// (32768 and up). A port that bind(0) gave is free only until an outgoing connection's local
/// end takes it, and then fulcrum fails to start; ports down here are only ever handed out by
/// this counter. Each test process starts at its own place in the range.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = u16::try_from(LOW + (start + n) % SPAN).expect("below 32768");
        // Taken by something else (a fulcrum not yet gone): try the next.
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// An address on 127.0.0.1 that refuses connections.
pub fn closed_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr")
}

/// A unique temporary directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fulcrum-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async form of `wait_for`.
pub async fn wait_for_async<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The fulcrum binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_fulcrum");

/// The real fulcrum process, killed when dropped.
pub struct Fulcrum {
    pub child: Child,
    pub config: PathBuf,
    pub log: Arc<Mutex<String>>,
}

impl Fulcrum {
    /// Writes `toml` to a file and starts `fulcrum -c FILE`; returns once every listener in
    /// the file logged that it is listening.
    pub fn start(toml: &Toml) -> Fulcrum {
        let config = toml.write(&temp_dir("conf"));
        let f = Fulcrum::spawn(&config);
        let listeners = toml.to_string().matches("[[listener]]").count();
        f.wait_for_log_count("listening", listeners);
        f
    }

    /// Starts `fulcrum -c config` without waiting.
    pub fn spawn(config: &std::path::Path) -> Fulcrum {
        Fulcrum::spawn_wrapped(config, &[])
    }

    /// Starts `WRAPPER... fulcrum -c config` (e.g. `prlimit --nofile=64:64`) without waiting.
    pub fn spawn_wrapped(config: &std::path::Path, wrapper: &[&str]) -> Fulcrum {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        command.arg("-c").arg(config);
        Fulcrum::spawn_command(command, config)
    }

    /// Starts `command`, which must end up exec'ing fulcrum with `-c config` in the same
    /// process (a wrapper such as `unshare ... sh -c 'exec FULCRUM -c CONFIG'`), so that
    /// signals and the kill on drop reach fulcrum itself.
    pub fn spawn_command(mut command: Command, config: &std::path::Path) -> Fulcrum {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start fulcrum");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("FULCRUM_TEST_LOG").is_some() {
                    eprintln!("fulcrum: {line}");
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Fulcrum {
            child,
            config: config.to_path_buf(),
            log,
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `needle` appears in the log at least `count` times.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) {
        let start = Instant::now();
        while self.log().matches(needle).count() < count {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {count}x {needle:?} in fulcrum's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_for_log(&self, needle: &str) {
        self.wait_for_log_count(needle, 1)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let r = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(r, 0, "kill({sig}) failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        wait_for("fulcrum to exit", || {
            self.child.try_wait().expect("try_wait").map(|s| s.code())
        })
    }
}

impl Drop for Fulcrum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP backend that writes its tag then keeps `mode`'s behaviour.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Writes the tag and a newline, then closes.
    TagThenClose,
    /// Writes the tag and a newline, then holds the connection open until the client closes.
    TagThenHold,
    /// Echoes everything back; closes its write side when the client does.
    Echo,
    /// Reads to EOF, then answers `got N` and closes (half-close check).
    CountThenAnswer,
}

/// Starts a TCP backend on 127.0.0.1 and returns its address.
pub async fn tcp_backend(tag: &'static str, mode: Mode) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                match mode {
                    Mode::TagThenClose => {
                        let _ = s.write_all(format!("{tag}\n").as_bytes()).await;
                    }
                    Mode::TagThenHold => {
                        let _ = s.write_all(format!("{tag}\n").as_bytes()).await;
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                        // Hold on even after the client's EOF, as a long session would.
                        std::future::pending::<()>().await;
                    }
                    Mode::Echo => {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    }
                    Mode::CountThenAnswer => {
                        let mut all = Vec::new();
                        let _ = s.read_to_end(&mut all).await;
                        let _ = s.write_all(format!("got {}", all.len()).as_bytes()).await;
                    }
                }
            });
        }
    });
    addr
}

/// Connects to `addr` and reads one line (a backend's tag).
pub async fn read_tag(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = s.read(&mut byte).await?;
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// An HTTP/1.1 backend built on hyper, answering by path:
/// `/` its tag; `/headers` the request head as it arrived; `/echo` the request body;
/// `/status/N` status N; `/sleep/MS` after a delay; `/big/N` N bytes; `/cut` a response that
/// breaks after a few bytes; `/ws` a `101` then an echo tunnel; `/204`, `/304`.
pub struct HttpBackend {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Requests answered so far.
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl HttpBackend {
    /// Stops accepting and closes the listening socket (open connections end as they end).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

pub async fn http_backend(tag: &'static str) -> HttpBackend {
    http_backend_on("127.0.0.1:0".parse().expect("addr"), tag).await
}

pub async fn http_backend_on(addr: SocketAddr, tag: &'static str) -> HttpBackend {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = TcpListener::bind(addr).await.expect("bind http backend");
    let addr = l.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
    tokio::spawn(async move {
        loop {
            let (s, _) = tokio::select! {
                a = l.accept() => match a { Ok(a) => a, Err(_) => return },
                _ = stopped.changed() => return,
            };
            c.fetch_add(1, Ordering::Relaxed);
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    r.fetch_add(1, Ordering::Relaxed);
                    answer(req, tag)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    HttpBackend {
        addr,
        connections,
        requests,
        stop,
    }
}

type TestBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

fn full(b: impl Into<bytes::Bytes>) -> TestBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn answer(
    mut req: hyper::Request<hyper::body::Incoming>,
    tag: &'static str,
) -> Result<hyper::Response<TestBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    use hyper::body::Frame;
    let path = req.uri().path().to_owned();
    let mut resp = hyper::Response::new(full(tag));
    resp.headers_mut()
        .insert("x-backend", hyper::header::HeaderValue::from_static(tag));
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (first, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match first {
        "headers" => {
            let mut head = format!("{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                head.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            *resp.body_mut() = full(head);
        }
        "echo" => {
            *resp.body_mut() = req.into_body().map_err(std::io::Error::other).boxed();
        }
        "count" => {
            let n = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            *resp.body_mut() = full(format!("got {n}"));
        }
        "status" => {
            *resp.status_mut() = hyper::StatusCode::from_u16(arg.parse().unwrap_or(500))
                .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        }
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
        }
        "big" => {
            *resp.body_mut() = full(vec![b'x'; arg.parse().unwrap_or(0)]);
        }
        "cut" => {
            let frames: Vec<Result<Frame<bytes::Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(bytes::Bytes::from_static(b"partial"))),
                Err(std::io::Error::other("cut")),
            ];
            let stream = futures_util::stream::iter(frames);
            *resp.body_mut() = http_body_util::StreamBody::new(stream).boxed();
            resp.headers_mut().insert(
                "content-length",
                hyper::header::HeaderValue::from_static("1000"),
            );
        }
        "204" => {
            *resp.status_mut() = hyper::StatusCode::NO_CONTENT;
            *resp.body_mut() = full("");
        }
        "304" => {
            *resp.status_mut() = hyper::StatusCode::NOT_MODIFIED;
            *resp.body_mut() = full("");
        }
        "ws" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let io = hyper_util::rt::TokioIo::new(up);
                    let (mut r, mut w) = tokio::io::split(io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            *resp.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
            *resp.body_mut() = full("");
            resp.headers_mut().insert(
                "upgrade",
                hyper::header::HeaderValue::from_static("websocket"),
            );
            resp.headers_mut().insert(
                "connection",
                hyper::header::HeaderValue::from_static("upgrade"),
            );
        }
        _ => {}
    }
    Ok(resp)
}

/// A raw HTTP exchange on a fresh connection: sends `request` bytes, reads until the
/// peer closes or `deadline` passes, returns everything read.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A minimal HTTP/1.1 client response.
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive HTTP/1.1 client connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.expect("connect to fulcrum");
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: &'static [u8]) -> Reply {
        self.try_request(method, path, body)
            .await
            .expect("request through fulcrum")
    }

    pub async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: &'static [u8],
    ) -> Result<Reply, hyper::Error> {
        use http_body_util::BodyExt;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "fulcrum.test")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(body)))
            .expect("request");
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// An HTTP/2 client on `io` (a TCP stream with prior knowledge, or TLS whose ALPN chose h2),
/// its connection driven in a task.
pub async fn h2_client<B, S>(io: S) -> hyper::client::conn::http2::SendRequest<B>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .expect("http2 handshake");
    tokio::spawn(conn);
    sender
}

/// One GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::connect(addr).await.request("GET", path, b"").await
}

/// An HTTP/1.1 backend on hyper: `GET /healthz` answers the status set with `set_health`
/// (200 at first), every other request `200` with the backend's tag as body. It can be
/// stopped (its port refuses, open connections are cut) and started again on the same port.
pub struct HealthBackend {
    pub addr: SocketAddr,
    pub tag: &'static str,
    health: Arc<std::sync::atomic::AtomicU16>,
    stop: Mutex<tokio_util::sync::CancellationToken>,
}

impl HealthBackend {
    pub async fn start(tag: &'static str) -> HealthBackend {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let b = HealthBackend {
            addr: l.local_addr().expect("addr"),
            tag,
            health: Arc::new(std::sync::atomic::AtomicU16::new(200)),
            stop: Mutex::new(tokio_util::sync::CancellationToken::new()),
        };
        b.serve(l);
        b
    }

    pub fn set_health(&self, status: u16) {
        self.health
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes the port and cuts every open connection.
    pub fn stop(&self) {
        self.stop.lock().unwrap().cancel();
    }

    /// Listens on the same port again.
    pub async fn restart(&self) {
        *self.stop.lock().unwrap() = tokio_util::sync::CancellationToken::new();
        let l = wait_for_async("the backend's port to bind again", || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await;
        self.serve(l);
    }

    fn serve(&self, l: TcpListener) {
        let stop = self.stop.lock().unwrap().clone();
        let health = Arc::clone(&self.health);
        let tag = self.tag;
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    () = stop.cancelled() => return,
                    r = l.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => return,
                    },
                };
                let stop = stop.clone();
                let health = Arc::clone(&health);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let status = if req.uri().path() == "/healthz" {
                                health.load(std::sync::atomic::Ordering::SeqCst)
                            } else {
                                200
                            };
                            async move {
                                hyper::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Full::new(bytes::Bytes::from(tag)))
                            }
                        },
                    );
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), service);
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
    }
}

/// `GET /` on a new connection to `addr` (`Connection: close`): the status and the body.
pub async fn http_get(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `fulcrum.toml: |` blocks of a YAML file, dedented.
pub fn embedded_configs(yaml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = yaml.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_end().ends_with("fulcrum.toml: |") {
            let key_indent = line.len() - line.trim_start().len();
            let mut block = Vec::new();
            for l in &lines[i + 1..] {
                let indent = l.len() - l.trim_start().len();
                if !l.trim().is_empty() && indent <= key_indent {
                    break;
                }
                block.push(*l);
            }
            let strip = block
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.len() - l.trim_start().len())
                .min()
                .unwrap_or(0);
            let text: Vec<&str> = block.iter().map(|l| l.get(strip..).unwrap_or("")).collect();
            out.push(text.join("\n"));
        }
    }
    out
}
