//! The admin listener: probes for the container platform (`/healthz`, `/readyz`), Prometheus
//! metrics (`/metrics`), the live state as JSON (`/status`) and a status page over it (`/`).
//!
//! It is a separate small HTTP/1.1 server, not one of the proxy's listeners: its connections
//! are not tracked by the drain (a scraper's keep-alive connection must not hold a shutdown
//! open), and it keeps answering through `shutdown_delay` so `/readyz` can say 503.

mod exposition;
mod state;
mod status;

pub use state::{LastReload, State};

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The status page: one self-contained file (inline CSS and JS, no external assets).
const STATUS_PAGE: &str = include_str!("status.html");
/// A client that sends no complete request head within this time is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often histogram samples are folded into their buckets between scrapes, so memory stays
/// bounded when nobody scrapes (the exporter's own default period).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What every admin request needs.
struct Admin {
    state: Arc<State>,
    metrics: Option<PrometheusHandle>,
    /// One render at a time: each scrape refreshes the gauges and renders as one step.
    render: std::sync::Mutex<()>,
}

/// Starts serving on `socket` until `stop` is cancelled.
pub fn spawn(
    socket: std::net::TcpListener,
    state: Arc<State>,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(socket)?;
    if let Some(handle) = metrics.clone() {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => handle.run_upkeep(),
                }
            }
        });
    }
    let admin = Arc::new(Admin {
        state,
        metrics,
        render: std::sync::Mutex::new(()),
    });
    tokio::spawn(accept_loop(listener, admin, stop));
    Ok(())
}

async fn accept_loop(listener: TcpListener, admin: Arc<Admin>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(ok) => ok,
                Err(e) => {
                    // Out of file descriptors: wait instead of spinning on the error.
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tokio::spawn(serve(stream, Arc::clone(&admin), stop.clone()));
    }
}

async fn serve(stream: TcpStream, admin: Arc<Admin>, stop: CancellationToken) {
    let service = hyper::service::service_fn(move |req| {
        let admin = Arc::clone(&admin);
        async move { Ok::<_, Infallible>(route(&req, &admin)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        () = stop.cancelled() => {}
    }
}

/// The whole admin API, one flat match.
fn route(req: &Request<Incoming>, admin: &Admin) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => readyz(&admin.state),
        "/metrics" => metrics(admin),
        "/status" => json(&status::build(&admin.state)),
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            STATUS_PAGE.into(),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// 200 when every upstream is ready and the process is not draining; else 503 with one line
/// per reason, so a failing probe says why.
fn readyz(state: &State) -> Response<Full<Bytes>> {
    let reasons = state.not_ready();
    if reasons.is_empty() {
        return text(StatusCode::OK, "ready\n".into());
    }
    let body: String = reasons.iter().map(|r| format!("{r}\n")).collect();
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

fn metrics(admin: &Admin) -> Response<Full<Bytes>> {
    let body = match &admin.metrics {
        Some(handle) => {
            let _one = admin
                .render
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let snapshot = admin.state.live.load();
            exposition::refresh(&snapshot);
            exposition::current_only(&handle.render(), &snapshot)
        }
        None => String::new(),
    };
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        body.into(),
    )
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => reply(StatusCode::OK, "application/json", body.into()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", body.into())
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Probes and the status page must always see the live state.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
