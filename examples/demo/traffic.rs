//! The demo's clients: keep-alive HTTP clients that tell backends apart by `x-backend`, and a
//! TCP session now and then. Every answer that is not a 200 from a backend of the upstream the
//! path routes to (with the api prefix stripped, as `x-path` shows), and every broken
//! connection, is a failure.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::plan::{N, ROLES};

/// Pause between two requests of one client: it keeps the demo to a few thousand requests a
/// second, so that it does not take over a small machine (or a debug build of fulcrum).
const THINK: Duration = Duration::from_millis(2);
/// Longer than demo.toml's `response_timeout` (5 s), after which fulcrum answers 504 itself:
/// a request that takes longer means fulcrum is stuck, and counts as a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// A TCP session through the tcp listener this often.
const TCP_EVERY: Duration = Duration::from_millis(1500);
/// One request in this many goes to the api route.
const API_EVERY: u64 = 4;

/// What the clients saw.
#[derive(Default)]
pub struct Stats {
    /// Latencies (µs) of the current second, per backend of `ROLES`; the table takes them
    /// every second.
    pub window: [Vec<u32>; N],
    /// Answers per backend since the start.
    pub totals: [u64; N],
    pub failures: u64,
    /// The first few failures, for the summary.
    pub samples: Vec<String>,
    pub tcp_ok: u64,
    pub tcp_failed: u64,
}

pub type Shared = Arc<Mutex<Stats>>;

pub fn lock(stats: &Shared) -> MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

fn fail(stats: &Shared, why: String) {
    let mut s = lock(stats);
    s.failures += 1;
    if s.samples.len() < 5 {
        s.samples.push(why);
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(sender: &mut Sender, path: &str) -> Result<hyper::Response<Bytes>> {
    sender.ready().await?;
    let req = hyper::Request::get(path)
        .header("host", "demo.fulcrum")
        .body(Empty::new())?;
    let (head, body) = sender.send_request(req).await?.into_parts();
    Ok(hyper::Response::from_parts(
        head,
        body.collect().await?.to_bytes(),
    ))
}

/// One GET on a fresh connection within 500 ms: the body of a 2xx answer.
pub async fn fetch(addr: SocketAddr, path: &str) -> Result<String> {
    let resp = timeout(Duration::from_millis(500), async {
        get(&mut connect(addr).await?, path).await
    })
    .await??;
    if !resp.status().is_success() {
        bail!("{path}: {}", resp.status());
    }
    Ok(String::from_utf8_lossy(resp.body()).into_owned())
}

/// One keep-alive client: a request at a time, a new connection only after a failure. Every
/// `API_EVERY`th request goes below `api` (the api route's prefix), the others to `/`.
pub async fn client(fulcrum: SocketAddr, api: Arc<str>, stats: Shared, stop: CancellationToken) {
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let mut sender = match connect(fulcrum).await {
            Ok(s) => s,
            Err(e) => {
                fail(&stats, format!("connect to fulcrum: {e}"));
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while !stop.is_cancelled() {
            n += 1;
            // What the backend must see: the route strips the prefix, the query stays.
            let (path, upstream, seen) = if n.is_multiple_of(API_EVERY) {
                let seen = format!("/users?n={n}");
                (format!("{api}{seen}"), "api", seen)
            } else {
                ("/".to_owned(), "web", "/".to_owned())
            };
            let started = Instant::now();
            let answer = timeout(REQUEST_TIMEOUT, get(&mut sender, &path))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")));
            let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
            let backend = answer
                .as_ref()
                .ok()
                .filter(|r| r.status() == 200)
                .filter(|r| {
                    r.headers()
                        .get("x-path")
                        .is_some_and(|p| p == seen.as_str())
                })
                .and_then(|r| {
                    let name = r.headers().get("x-backend")?.to_str().ok()?;
                    ROLES
                        .iter()
                        .position(|o| o.name == name && o.upstream == upstream)
                });
            match (answer, backend) {
                (_, Some(i)) => {
                    let mut s = lock(&stats);
                    s.window[i].push(us);
                    s.totals[i] += 1;
                }
                (Ok(r), None) => {
                    let body = String::from_utf8_lossy(r.body()).into_owned();
                    let saw = r.headers().get("x-path");
                    fail(
                        &stats,
                        format!(
                            "{path}: answer {} {body:?}, backend saw {saw:?}",
                            r.status()
                        ),
                    );
                    break;
                }
                (Err(e), None) => {
                    fail(&stats, format!("request: {e:#}"));
                    break;
                }
            }
            sleep(THINK).await;
        }
    }
}

/// A TCP session through fulcrum every `TCP_EVERY`: what comes back must be what was sent.
pub async fn tcp_sessions(fulcrum: SocketAddr, stats: Shared, stop: CancellationToken) {
    for n in 1u64.. {
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep(TCP_EVERY) => {}
        }
        let sent = format!("session {n}: hello through fulcrum\n");
        let session = async {
            let mut s = TcpStream::connect(fulcrum).await?;
            s.write_all(sent.as_bytes()).await?;
            s.shutdown().await?;
            let mut back = Vec::new();
            s.read_to_end(&mut back).await?;
            ensure!(back == sent.as_bytes(), "echo returned {back:?}");
            Ok(())
        };
        let ok = matches!(timeout(Duration::from_secs(2), session).await, Ok(Ok(())));
        let mut s = lock(&stats);
        if ok {
            s.tcp_ok += 1;
        } else {
            s.tcp_failed += 1;
        }
    }
}
