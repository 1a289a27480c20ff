//! Metric names, declared once with their help texts, and the calls that record them.
//! Without an installed recorder (no `[admin]`), every call is a cheap no-op.

use std::sync::Arc;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

pub const CONNECTIONS_TOTAL: &str = "fulcrum_connections_total";
pub const ACTIVE_CONNECTIONS: &str = "fulcrum_active_connections";
pub const REQUESTS_TOTAL: &str = "fulcrum_requests_total";
pub const REQUEST_DURATION: &str = "fulcrum_request_duration_seconds";
pub const BACKEND_HEALTHY: &str = "fulcrum_backend_healthy";
pub const BACKEND_IN_FLIGHT: &str = "fulcrum_backend_in_flight";
pub const BACKEND_FAILURES_TOTAL: &str = "fulcrum_backend_failures_total";
pub const FAILOVERS_TOTAL: &str = "fulcrum_failovers_total";
pub const HEALTH_CHECKS_TOTAL: &str = "fulcrum_health_checks_total";
pub const BYTES_TOTAL: &str = "fulcrum_bytes_total";
pub const CONFIG_RELOADS_TOTAL: &str = "fulcrum_config_reloads_total";

/// Registers the help text of every family (called once, when a recorder is installed).
pub fn describe() {
    describe_counter!(CONNECTIONS_TOTAL, "client connections accepted");
    describe_gauge!(ACTIVE_CONNECTIONS, "client connections open now");
    describe_counter!(REQUESTS_TOTAL, "http requests answered, by status class");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "time from request head to response head"
    );
    describe_gauge!(BACKEND_HEALTHY, "1 when the backend is up, 0 when down");
    describe_gauge!(
        BACKEND_IN_FLIGHT,
        "requests or sessions open on the backend (load R)"
    );
    describe_counter!(
        BACKEND_FAILURES_TOTAL,
        "failed live exchanges with a backend, by kind"
    );
    describe_counter!(
        FAILOVERS_TOTAL,
        "requests or sessions moved to another backend"
    );
    describe_counter!(HEALTH_CHECKS_TOTAL, "active health checks, by result");
    describe_counter!(
        BYTES_TOTAL,
        "plaintext bytes read from (rx) and written to (tx) clients"
    );
    describe_counter!(CONFIG_RELOADS_TOTAL, "configuration reloads, by result");
}

pub fn failover(upstream: &Arc<str>) {
    counter!(FAILOVERS_TOTAL, "upstream" => Arc::clone(upstream)).increment(1);
}

pub fn backend_failure(upstream: &Arc<str>, backend: &Arc<str>, kind: &'static str) {
    counter!(BACKEND_FAILURES_TOTAL, "upstream" => Arc::clone(upstream),
        "backend" => Arc::clone(backend), "kind" => kind)
    .increment(1);
}

pub fn backend_healthy(upstream: &Arc<str>, backend: &Arc<str>, healthy: bool) {
    gauge!(BACKEND_HEALTHY, "upstream" => Arc::clone(upstream), "backend" => Arc::clone(backend))
        .set(if healthy { 1.0 } else { 0.0 });
}

pub fn health_check(upstream: &Arc<str>, backend: &Arc<str>, pass: bool) {
    let result = if pass { "pass" } else { "fail" };
    counter!(HEALTH_CHECKS_TOTAL, "upstream" => Arc::clone(upstream),
        "backend" => Arc::clone(backend), "result" => result)
    .increment(1);
}

pub fn config_reload(success: bool) {
    let result = if success { "success" } else { "failure" };
    counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
}

pub fn connection_opened(listener: &Arc<str>) {
    counter!(CONNECTIONS_TOTAL, "listener" => Arc::clone(listener)).increment(1);
    gauge!(ACTIVE_CONNECTIONS, "listener" => Arc::clone(listener)).increment(1.0);
}

pub fn connection_closed(listener: &Arc<str>) {
    gauge!(ACTIVE_CONNECTIONS, "listener" => Arc::clone(listener)).decrement(1.0);
}

pub fn bytes(listener: &Arc<str>, rx: u64, tx: u64) {
    counter!(BYTES_TOTAL, "listener" => Arc::clone(listener), "direction" => "rx").increment(rx);
    counter!(BYTES_TOTAL, "listener" => Arc::clone(listener), "direction" => "tx").increment(tx);
}

/// One answered HTTP request. `backend` is `None` when fulcrum answered without one (503).
pub fn request(
    listener: &Arc<str>,
    upstream: &Arc<str>,
    backend: Option<&Arc<str>>,
    status: http::StatusCode,
    duration: std::time::Duration,
) {
    let code = match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let backend: metrics::SharedString = match backend {
        Some(b) => Arc::clone(b).into(),
        None => "none".into(),
    };
    counter!(REQUESTS_TOTAL, "listener" => Arc::clone(listener), "upstream" => Arc::clone(upstream),
        "backend" => backend, "code" => code)
    .increment(1);
    metrics::histogram!(REQUEST_DURATION, "listener" => Arc::clone(listener),
        "upstream" => Arc::clone(upstream))
    .record(duration.as_secs_f64());
}
