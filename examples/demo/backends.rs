//! The demo's backends: HTTP servers that answer with their name (and the path they were
//! asked for) after a fixed delay, and a TCP echo server. An HTTP backend can be stopped
//! (listener and connections dropped at once, as a crashed process would) and started again
//! on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

/// Binds `addr` for `what`, or says which port is taken and what to do about it.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr} for {what} (is another demo or fulcrum running?); \
             stop it or change the ports in conf/demo.toml"
        )
    })
}

/// One HTTP backend: answers every request with its name (body and `x-backend`) and the
/// request target it got (`x-path`, so clients see what a route rewrote) after `delay`.
pub struct Backend {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub delay: Duration,
    /// Total time spent answering (µs): its growth over a second is the average number of
    /// requests in flight at this backend during that second (Little's law).
    pub busy_us: Arc<AtomicU64>,
    /// Cancelled to stop; `None` while stopped.
    running: Option<CancellationToken>,
}

impl Backend {
    pub async fn start(name: &'static str, addr: SocketAddr, delay: Duration) -> Result<Backend> {
        let mut b = Backend {
            name,
            addr,
            delay,
            busy_us: Arc::default(),
            running: None,
        };
        b.restart().await?;
        Ok(b)
    }

    /// Listens again (tokio sets SO_REUSEADDR, so the closed connections' TIME_WAIT does not
    /// hold the port).
    pub async fn restart(&mut self) -> Result<()> {
        let listener = bind(self.addr, self.name).await?;
        let token = CancellationToken::new();
        let (name, delay, busy) = (self.name, self.delay, Arc::clone(&self.busy_us));
        tokio::spawn(serve(listener, name, delay, busy, token.clone()));
        self.running = Some(token);
        Ok(())
    }

    /// Drops the listener and every open connection, requests in progress included.
    pub fn stop(&mut self) {
        if let Some(token) = self.running.take() {
            token.cancel();
        }
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }
}

async fn serve(
    l: TcpListener,
    name: &'static str,
    delay: Duration,
    busy: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((s, _)) => s,
                // Out of file descriptors and the like: pause rather than spin.
                Err(_) => { sleep(Duration::from_millis(50)).await; continue }
            },
            () = stop.cancelled() => return,
        };
        let (busy, stop) = (Arc::clone(&busy), stop.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let busy = Arc::clone(&busy);
                let path = req
                    .uri()
                    .path_and_query()
                    .and_then(|p| HeaderValue::from_str(p.as_str()).ok());
                async move {
                    let started = Instant::now();
                    sleep(delay).await;
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    busy.fetch_add(us, Ordering::Relaxed);
                    let mut resp =
                        hyper::Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                    resp.headers_mut()
                        .insert("x-backend", HeaderValue::from_static(name));
                    if let Some(path) = path {
                        resp.headers_mut().insert("x-path", path);
                    }
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// The TCP backend: echoes every session, and closes its side when the client does.
pub async fn serve_echo(l: TcpListener) {
    while let Ok((mut s, _)) = l.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}
