//! One request: its route (or the listener's default) from the snapshot current when it
//! arrives, the answer (the backend's, a redirect or fixed answer, or fulcrum's own error),
//! the route's response header rules, its metrics and access log line.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::body::{RespBody, fixed, local, respond};
use super::forward::forward;
use super::message;
use super::outgoing::Rewrite;
use super::route::{apply, authority, location, status_text, with_path};
use super::serve::Conn;
use crate::config::Redirect;
use crate::metrics::SeriesKey;
use crate::proxy::activity::InProgress;
use crate::routing::{self, Action, host_key, normalize};
use crate::snapshot::Snapshot;
use crate::upstream::{Backend, Upstream};

type Route = routing::Route<Arc<Upstream>>;

/// The `route` and `upstream` label of an answer no route or upstream gave.
static NONE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("none"));

/// Where a request goes, decided under one snapshot load.
enum Decision {
    Route(Arc<Route>),
    /// No route matched: the listener's `upstream`, and the key of its request series.
    Default(Arc<Upstream>, SeriesKey),
    /// fulcrum answers this itself, before any route.
    Refuse(StatusCode),
    /// A redirect or respond route matched a request that fails the checks forwarding would
    /// have made: fulcrum refuses it, as that route's answer.
    Malformed(Arc<Route>, StatusCode),
}

impl Decision {
    /// What the metrics say answered: the route, the upstream, and the key of the series.
    fn labels(
        &self,
    ) -> (
        Option<&Arc<Route>>,
        Option<&Arc<Upstream>>,
        Option<SeriesKey>,
    ) {
        match self {
            Decision::Route(r) => match &r.action {
                Action::Upstream { upstream, .. } => (Some(r), Some(upstream), Some(r.series)),
                _ => (Some(r), None, Some(r.series)),
            },
            Decision::Default(u, key) => (None, Some(u), Some(*key)),
            Decision::Malformed(r, _) => (Some(r), None, Some(r.series)),
            Decision::Refuse(_) => (None, None, None),
        }
    }
}

/// One request: route, pick, send with failover, and answer.
pub(super) async fn handle(
    mut req: Request<Incoming>,
    conn: &Conn,
    in_progress: InProgress,
) -> Response<RespBody> {
    let started = Instant::now();
    // The route (or upstream) is held for the request, not the snapshot's guard: the
    // exchange awaits.
    let (decision, log_access) = {
        let snapshot = conn.live.load();
        (
            decide(&mut req, conn, &snapshot),
            snapshot.config.log.access,
        )
    };
    // Only the access log needs these; skip the copies when it is off.
    let access = log_access.then(|| (req.method().clone(), req.uri().path().to_owned()));
    let grpc = super::grpc::is_grpc(req.headers());
    let (mut resp, backend) = match &decision {
        Decision::Refuse(status) => (own(*status, grpc, in_progress), None),
        Decision::Malformed(_, status) => (local(*status, in_progress), None),
        Decision::Default(upstream, _) => {
            send(req, conn, upstream, &Rewrite::default(), grpc, in_progress).await
        }
        Decision::Route(r) => match &r.action {
            Action::Upstream { upstream, strip } => {
                let rewrite = Rewrite {
                    strip: strip.as_deref(),
                    headers: Some(&r.request_headers).filter(|h| !h.is_empty()),
                };
                send(req, conn, upstream, &rewrite, grpc, in_progress).await
            }
            Action::Redirect(to) => (redirect(to, &req, conn, in_progress), None),
            Action::Respond { status, body } => (fixed(*status, body.clone(), in_progress), None),
        },
    };
    let (route, upstream, key) = decision.labels();
    if let Some(r) = route {
        if !r.response_headers.is_empty() {
            apply(&r.response_headers, resp.headers_mut());
        }
        r.requests.fetch_add(1, Ordering::Relaxed);
    }
    let status = resp.status();
    let route_label = route.map_or(&*NONE, |r| &r.name);
    let upstream_label = upstream.map_or(&*NONE, |u| &u.name);
    crate::metrics::request(
        &conn.client.listener,
        route_label,
        upstream_label,
        backend
            .as_deref()
            .zip(key)
            .map(|(b, key)| (key, &b.series, &b.addr)),
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
            route = %route_label,
            upstream = %upstream_label,
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

/// The route of `req`, or what fulcrum answers before any route: 421 on a TLS connection
/// whose certificate does not cover the request's host, 405 for CONNECT, 404 when nothing
/// matches and the listener has no default. On a listener with routes, the path is matched
/// (and forwarded) in its normal form.
fn decide(req: &mut Request<Incoming>, conn: &Conn, snapshot: &Snapshot) -> Decision {
    let Some((_, state)) = snapshot.listener(&conn.client.listener) else {
        return Decision::Refuse(StatusCode::SERVICE_UNAVAILABLE);
    };
    // fulcrum is not a forward proxy: CONNECT would ask it to open a tunnel to wherever the
    // client names, which only configured backends may ever be.
    if req.method() == Method::CONNECT {
        return Decision::Refuse(StatusCode::METHOD_NOT_ALLOWED);
    }
    // What fulcrum answers itself must be a valid request first: forwarding checks the rest.
    let refuse = |req: &Request<Incoming>, status: StatusCode| {
        let checked = message::check_head(req.method(), req.uri(), req.headers());
        Decision::Refuse(checked.err().unwrap_or(status))
    };
    let routed = !state.router.is_empty();
    if routed {
        match normalize(req.uri().path()) {
            None => return Decision::Refuse(StatusCode::BAD_REQUEST),
            Some(Cow::Borrowed(_)) => {}
            Some(Cow::Owned(path)) => match with_path(req.uri(), &path) {
                Some(uri) => *req.uri_mut() = uri,
                None => return Decision::Refuse(StatusCode::BAD_REQUEST),
            },
        }
    }
    let host = if conn.client.cover.is_some() || routed {
        authority(req).map(host_key)
    } else {
        None
    };
    if let (Some(cover), Some(host)) = (&conn.client.cover, &host)
        && !cover.covers(host)
    {
        return refuse(req, StatusCode::MISDIRECTED_REQUEST);
    }
    if routed {
        let facts = routing::Request {
            host: host.as_deref().unwrap_or(""),
            path: req.uri().path(),
            method: req.method(),
            headers: req.headers(),
        };
        if let Some(route) = state.router.lookup(&facts) {
            let route = Arc::clone(route);
            if !matches!(route.action, Action::Upstream { .. })
                && let Err(status) = message::check_head(req.method(), req.uri(), req.headers())
            {
                return Decision::Malformed(route, status);
            }
            return Decision::Route(route);
        }
    }
    match &state.upstream {
        Some(u) => Decision::Default(Arc::clone(u), state.series),
        None => refuse(req, StatusCode::NOT_FOUND),
    }
}

/// The request forwarded to `upstream`: the backend's answer and the backend, or fulcrum's
/// error and the last backend tried.
async fn send(
    req: Request<Incoming>,
    conn: &Conn,
    upstream: &Arc<Upstream>,
    rewrite: &Rewrite<'_>,
    grpc: bool,
    in_progress: InProgress,
) -> (Response<RespBody>, Option<Arc<Backend>>) {
    match forward(req, conn, upstream, rewrite).await {
        Ok(f) => {
            let backend = Arc::clone(&f.backend);
            (respond(f, upstream, in_progress), Some(backend))
        }
        Err((status, last)) => (own(status, grpc, in_progress), last),
    }
}

/// fulcrum's own answer: a gRPC status to a gRPC request, else a short plain-text page.
fn own(status: StatusCode, grpc: bool, in_progress: InProgress) -> Response<RespBody> {
    if grpc {
        super::grpc::answer(status, in_progress)
    } else {
        local(status, in_progress)
    }
}

/// A redirect route's answer: its status and `Location`, or 400 when the request names no
/// host to send the client to and the route gives none.
fn redirect(
    to: &Redirect,
    req: &Request<Incoming>,
    conn: &Conn,
    in_progress: InProgress,
) -> Response<RespBody> {
    match location(to, req.uri(), authority(req), conn.client.proto) {
        Some(loc) => {
            let mut resp = fixed(to.status, status_text(to.status), in_progress);
            resp.headers_mut().insert(http::header::LOCATION, loc);
            resp
        }
        None => local(StatusCode::BAD_REQUEST, in_progress),
    }
}
