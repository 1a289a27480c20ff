//! One request: its upstream from the snapshot current when it arrives, the answer (the
//! backend's or fulcrum's own), its metrics and access log line.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::body::{RespBody, local, respond};
use super::forward::forward;
use super::serve::Conn;
use crate::proxy::activity::InProgress;

/// One request: route, pick, send with failover, and answer.
pub(super) async fn handle(
    req: Request<Incoming>,
    conn: &Conn,
    in_progress: InProgress,
) -> Response<RespBody> {
    let started = Instant::now();
    // The upstream is held for the request, not the snapshot's guard: the exchange awaits.
    let (upstream, log_access) = {
        let snapshot = conn.live.load();
        let upstream = snapshot
            .listener(&conn.client.listener)
            .and_then(|(_, state)| state.upstream.clone());
        (upstream, snapshot.config.log.access)
    };
    let Some(upstream) = upstream else {
        return local(StatusCode::SERVICE_UNAVAILABLE, in_progress);
    };
    // Only the access log needs these; skip the copies when it is off.
    let access = log_access.then(|| (req.method().clone(), req.uri().path().to_owned()));
    let upstream = &upstream;
    let (resp, backend) = match forward(req, conn, upstream).await {
        Ok(f) => {
            let backend = Arc::clone(&f.backend);
            (respond(f, upstream, in_progress), Some(backend))
        }
        Err((status, last)) => (local(status, in_progress), last),
    };
    let status = resp.status();
    crate::metrics::request(
        &conn.client.listener,
        &upstream.name,
        backend.as_deref().map(|b| (&b.series, &b.addr)),
        status,
        started.elapsed(),
    );
    if let Some((method, path)) = access {
        tracing::info!(
            target: "access",
            listener = %conn.client.listener,
            client = %conn.client.addrs.client,
            method = %method,
            path = %path,
            status = status.as_u16(),
            upstream = %upstream.name,
            backend = backend.as_ref().map_or("none", |b| &*b.addr),
            duration_us = started.elapsed().as_micros() as u64,
            // The response body's size when known up front (Content-Length); streamed
            // bodies are counted in `bytes_total` instead.
            bytes = resp.body().size_hint().exact(),
            "http request"
        );
    }
    resp
}
