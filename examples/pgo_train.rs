//! The load a profile-guided build of fulcrum learns from (`scripts/pgo-build.sh`): every path
//! the benchmarks take, on 127.0.0.1 and bounded in count. HTTP keep-alive and one request per
//! connection, a 1 MiB response, TLS keep-alive and full handshakes, layer-4 keep-alive and a
//! bulk stream, idle connections, multiplexed HTTP/2 to HTTP/2 (h2c) backends. Code no path here reaches is laid out as cold: keep it in
//! step with what fulcrum is used for.
//!
//! Usage: `pgo_train FULCRUM_BINARY` (an instrumented build; it writes its profile on exit).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

/// The small response body, as in the benchmarks.
const SMALL: &[u8] = b"0123456789012345678901234567890123456789012345678901234567890123";
const BIG: usize = 1024 * 1024;

fn main() -> Result<()> {
    let bin = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: pgo_train FULCRUM_BINARY")?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(&bin))
}

async fn run(bin: &Path) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fulcrum-pgo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let backends = [http_backend().await?, http_backend().await?];
    let h2_backends = [h2_backend().await?, h2_backend().await?];
    let sink = sink_backend().await?;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    std::fs::write(dir.join("cert.pem"), ck.cert.pem())?;
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem())?;
    let ports = [
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    ];
    let [web, tls, l4, bulk, routed, h2c] = ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let config = dir.join("fulcrum.toml");
    let text = config_text(&dir, &ports, &backends, sink) + &h2c_config(ports[5], &h2_backends);
    std::fs::write(&config, text)?;
    let mut proc = Proc::start(bin, &config, &dir.join("fulcrum.log"))?;
    proc.wait_ready(web).await?;

    let started = Instant::now();
    let roots = {
        let mut r = rustls::RootCertStore::empty();
        r.add(ck.cert.der().clone())?;
        r
    };
    let tls_config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    keep_alive(web, 64, 400, "/").await?;
    per_connection(web, 32, 4000).await?;
    keep_alive(web, 8, 16, "/big").await?;
    routed_hosts(routed, 32, 400).await?;
    keep_alive(l4, 32, 300, "/").await?;
    tls_keep_alive(tls, &tls_config, 32, 200).await?;
    tls_handshakes(tls, &tls_config, 16, 40).await?;
    bulk_stream(bulk, 128 * 1024 * 1024).await?;
    idle_connections(web, 500).await?;
    multiplexed(h2c, 8, 16, 400).await?;
    println!("trained in {:.1} s", started.elapsed().as_secs_f64());
    let ended = proc.terminate().await;
    let _ = std::fs::remove_dir_all(&dir);
    ended
}

fn config_text(
    dir: &Path,
    ports: &[u16; 6],
    backends: &[SocketAddr; 2],
    sink: SocketAddr,
) -> String {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    format!(
        r#"[runtime]
worker_threads = 1
shutdown_timeout = "2s"

[[listener]]
name = "web"
bind = "127.0.0.1:{web}"
protocol = "http"
upstream = "app"

[[listener]]
name = "tls"
bind = "127.0.0.1:{tls}"
protocol = "http"
upstream = "app"
[listener.tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]

[[listener]]
name = "l4"
bind = "127.0.0.1:{l4}"
protocol = "tcp"
upstream = "app"

[[listener]]
name = "bulk"
bind = "127.0.0.1:{bulk}"
protocol = "tcp"
upstream = "sink"

[[listener]]
name = "routed"
bind = "127.0.0.1:{routed}"
protocol = "http"
{routes}

[upstream.app]
backends = [{{ addr = "{a}" }}, {{ addr = "{b}" }}]
[upstream.app.health]
check = "none"

[upstream.sink]
backends = [{{ addr = "{sink}" }}]
[upstream.sink.health]
check = "none"
"#,
        web = ports[0],
        tls = ports[1],
        l4 = ports[2],
        bulk = ports[3],
        routed = ports[4],
        routes = routes(),
        cert = cert.display(),
        key = key.display(),
        a = backends[0],
        b = backends[1],
    )
}

/// The h2c listener and its upstream of HTTP/2 backends (the h2c-upstream scenario).
fn h2c_config(port: u16, backends: &[SocketAddr; 2]) -> String {
    format!(
        r#"
[[listener]]
name = "h2c"
bind = "127.0.0.1:{port}"
protocol = "http"
upstream = "h2"

[upstream.h2]
protocol = "h2c"
backends = [{{ addr = "{a}" }}, {{ addr = "{b}" }}]
[upstream.h2.health]
check = "none"
"#,
        a = backends[0],
        b = backends[1],
    )
}

/// An HTTP/2 (h2c) backend answering the 64-byte body.
async fn h2_backend() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(SMALL),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc),
            );
        }
    });
    Ok(addr)
}

/// `clients` h2c connections, each with `streams` GETs in flight until `requests` each are
/// done, as h2load sends them.
async fn multiplexed(
    addr: SocketAddr,
    clients: usize,
    streams: usize,
    requests: usize,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        for _ in 0..streams {
            let mut sender = sender.clone();
            tasks.spawn(async move {
                for _ in 0..requests / streams {
                    let req = hyper::Request::get(format!("http://{addr}/"))
                        .body(Empty::<Bytes>::new())?;
                    let resp = sender.send_request(req).await?;
                    if !resp.status().is_success() {
                        bail!("h2c: {}", resp.status());
                    }
                    resp.into_body().collect().await?;
                }
                anyhow::Ok(())
            });
        }
    }
    join_all(tasks).await
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An HTTP/1.1 backend: `/big` answers 1 MiB, anything else the 64-byte body.
async fn http_backend() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = if req.uri().path() == "/big" {
                            Bytes::from(vec![b'x'; BIG])
                        } else {
                            Bytes::from_static(SMALL)
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body)))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A backend that reads and discards, as iperf3's server does.
async fn sink_backend() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut s, &mut tokio::io::sink()).await;
            });
        }
    });
    Ok(addr)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn handshake<S>(stream: S) -> Result<Sender>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(sender: &mut Sender, path: &str) -> Result<()> {
    get_from(sender, "localhost", path).await
}

/// One GET for `path` of `host`, its body read.
async fn get_from(sender: &mut Sender, host: &str, path: &str) -> Result<()> {
    sender.ready().await?;
    let req = hyper::Request::get(path)
        .header("host", host)
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("{path}: {}", resp.status());
    }
    resp.into_body().collect().await?;
    Ok(())
}

/// The routed listener's routes: one per host of `ROUTED_HOSTS`, as an edge with many sites
/// (the benchmark's http-routes scenario) has them.
fn routes() -> String {
    (1..=ROUTED_HOSTS)
        .map(|i| format!("[[listener.route]]\nhost = [\"h{i}.example\"]\nupstream = \"app\"\n"))
        .collect()
}

const ROUTED_HOSTS: usize = 1000;

/// `clients` keep-alive connections, each sending `requests` GETs that rotate over the
/// routed listener's hosts.
async fn routed_hosts(addr: SocketAddr, clients: usize, requests: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        tasks.spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut sender = handshake(stream).await?;
            for r in 0..requests {
                let host = format!("h{}.example", 1 + (c * requests + r) % ROUTED_HOSTS);
                get_from(&mut sender, &host, "/").await?;
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await
}

/// `clients` connections, each sending `requests` GETs for `path` one after another.
async fn keep_alive(
    addr: SocketAddr,
    clients: usize,
    requests: usize,
    path: &'static str,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let mut sender = handshake(stream).await?;
            for _ in 0..requests {
                get(&mut sender, path).await?;
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await
}

/// `requests` GETs spread over `clients` tasks, each on a fresh connection with
/// `Connection: close`.
async fn per_connection(addr: SocketAddr, clients: usize, requests: usize) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            for _ in 0..requests / clients {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    .await?;
                let mut out = Vec::new();
                s.read_to_end(&mut out).await?;
                if !out.starts_with(b"HTTP/1.1 200") {
                    bail!("Connection: close request failed");
                }
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await
}

async fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    Ok(tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await?)
}

async fn tls_keep_alive(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    clients: usize,
    requests: usize,
) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let config = Arc::clone(config);
        tasks.spawn(async move {
            let mut sender = handshake(tls_connect(addr, &config).await?).await?;
            for _ in 0..requests {
                get(&mut sender, "/").await?;
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await
}

/// Full handshakes: resumption is off in the client, so none is resumed.
async fn tls_handshakes(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    clients: usize,
    each: usize,
) -> Result<()> {
    let mut full = (**config).clone();
    full.resumption = rustls::client::Resumption::disabled();
    let full = Arc::new(full);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let config = Arc::clone(&full);
        tasks.spawn(async move {
            for _ in 0..each {
                let mut sender = handshake(tls_connect(addr, &config).await?).await?;
                get(&mut sender, "/").await?;
            }
            anyhow::Ok(())
        });
    }
    join_all(tasks).await
}

/// One stream of `bytes` through a layer-4 listener.
async fn bulk_stream(addr: SocketAddr, bytes: usize) -> Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    let chunk = vec![0u8; 128 * 1024];
    let mut sent = 0;
    while sent < bytes {
        s.write_all(&chunk).await?;
        sent += chunk.len();
    }
    s.shutdown().await?;
    Ok(())
}

/// `count` connections that each make one request and then stay open, idle, a moment.
async fn idle_connections(addr: SocketAddr, count: usize) -> Result<()> {
    let mut open = Vec::with_capacity(count);
    for _ in 0..count {
        let mut sender = handshake(TcpStream::connect(addr).await?).await?;
        get(&mut sender, "/").await?;
        open.push(sender);
    }
    sleep(Duration::from_millis(200)).await;
    drop(open);
    Ok(())
}

async fn join_all(mut tasks: tokio::task::JoinSet<Result<()>>) -> Result<()> {
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// The fulcrum process; killed if training ends early.
struct Proc(Child);

impl Proc {
    fn start(bin: &Path, config: &Path, log: &Path) -> Result<Proc> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Proc(child))
    }

    async fn wait_ready(&mut self, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait()? {
                bail!("fulcrum exited at start ({status})");
            }
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            sleep(Duration::from_millis(20)).await;
        }
        bail!("fulcrum did not listen on {addr} within 10 s")
    }

    /// SIGTERM and the wait for a clean exit, which is when the profile is written.
    async fn terminate(&mut self) -> Result<()> {
        let pid = i32::try_from(self.0.id())?;
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        let status = timeout(Duration::from_secs(10), async {
            loop {
                if let Some(status) = self.0.try_wait()? {
                    return anyhow::Ok(status);
                }
                sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .context("fulcrum did not exit within 10 s of SIGTERM")??;
        if !status.success() {
            bail!("fulcrum exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
