//! Metric names, declared once with their help texts, and the calls that record them.
//! Without an installed recorder (no `[admin]`), every call returns at once.
//!
//! The per-request series are looked up once per (backend, listener, route) and cached in the
//! backend (`BackendSeries`), so a request costs a hash probe and two atomic adds, not a
//! registry lookup.
//! Gauges that mirror live state (health, in-flight, open connections) are set from that state
//! when `/metrics` is rendered (`admin::exposition`), so they are exact and cost nothing per
//! request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

/// Upper bounds of the `request_duration_seconds` buckets: from 100µs, so a proxy hop on a
/// local network (well under a millisecond) is resolved, up to 10s for slow backends.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The installed recorder's handle: set at most once per process (the recorder is global).
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls return the same handle).
/// `None` when another recorder was installed first: metrics then go there, `/metrics` is empty.
pub fn install() -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &DURATION_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the metrics recorder");
                    None
                }
            }
        })
        .clone()
}

/// True once a recorder is installed: every recording call checks this first.
fn enabled() -> bool {
    matches!(RECORDER.get(), Some(Some(_)))
}

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

/// Status classes, the `code` label: index = first digit - 1.
const CODES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn code_index(status: http::StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The request series of one (listener, route, backend): a counter per status class, made at
/// the first request of that class (so a scrape lists only classes that happened), and the
/// listener's duration histogram.
struct RequestSeries {
    listener: Arc<str>,
    route: Arc<str>,
    upstream: Arc<str>,
    backend: Arc<str>,
    codes: [OnceLock<Counter>; 5],
    duration: Histogram,
}

impl RequestSeries {
    fn new(labels: Labels<'_>, backend: &Arc<str>) -> RequestSeries {
        let Labels {
            listener,
            route,
            upstream,
        } = labels;
        RequestSeries {
            listener: Arc::clone(listener),
            route: Arc::clone(route),
            upstream: Arc::clone(upstream),
            backend: Arc::clone(backend),
            codes: Default::default(),
            duration: histogram!(REQUEST_DURATION, "listener" => Arc::clone(listener),
                "upstream" => Arc::clone(upstream)),
        }
    }

    fn code(&self, index: usize) -> Option<&Counter> {
        let cell = self.codes.get(index)?;
        let code = CODES.get(index).copied().unwrap_or("5xx");
        Some(cell.get_or_init(|| {
            counter!(REQUESTS_TOTAL, "listener" => Arc::clone(&self.listener),
                "route" => Arc::clone(&self.route), "upstream" => Arc::clone(&self.upstream),
                "backend" => Arc::clone(&self.backend), "code" => code)
        }))
    }
}

/// Which (listener, route) a request series belongs to: one key per listener's default and
/// per route, kept across reloads while their names stay, so a backend finds its series by
/// one hash probe however many routes lead to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey(u64);

impl SeriesKey {
    pub fn fresh() -> SeriesKey {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        SeriesKey(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// A backend's request series per (listener, route), looked up by key and then read without
/// locks; a key seen for the first time adds a copy (rare: once per route).
#[derive(Default)]
pub struct BackendSeries(ArcSwap<foldhash::HashMap<SeriesKey, Arc<RequestSeries>>>);

impl std::fmt::Debug for BackendSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSeries")
            .field("routes", &self.0.load().len())
            .finish()
    }
}

impl BackendSeries {
    fn get(&self, key: SeriesKey, labels: Labels<'_>, backend: &Arc<str>) -> Arc<RequestSeries> {
        if let Some(s) = self.0.load().get(&key) {
            return Arc::clone(s);
        }
        let series = Arc::new(RequestSeries::new(labels, backend));
        self.0.rcu(|m| {
            let mut next = (**m).clone();
            next.entry(key).or_insert_with(|| Arc::clone(&series));
            next
        });
        series
    }
}

/// Who answered a request, as labels: its listener, route (`none`: no route matched) and
/// upstream (`none`: no upstream was involved).
#[derive(Clone, Copy)]
struct Labels<'a> {
    listener: &'a Arc<str>,
    route: &'a Arc<str>,
    upstream: &'a Arc<str>,
}

/// One answered HTTP request: `backend` is the key of its (listener, route), the backend's
/// cached series and its label; `None` when fulcrum answered without one (a 503, a redirect,
/// a 404).
pub fn request(
    listener: &Arc<str>,
    route: &Arc<str>,
    upstream: &Arc<str>,
    backend: Option<(SeriesKey, &BackendSeries, &Arc<str>)>,
    status: http::StatusCode,
    duration: std::time::Duration,
) {
    if !enabled() {
        return;
    }
    let code = code_index(status);
    let labels = Labels {
        listener,
        route,
        upstream,
    };
    match backend {
        Some((key, series, addr)) => {
            let s = series.get(key, labels, addr);
            if let Some(c) = s.code(code) {
                c.increment(1);
            }
            s.duration.record(duration.as_secs_f64());
        }
        None => {
            counter!(REQUESTS_TOTAL, "listener" => Arc::clone(listener),
                "route" => Arc::clone(route), "upstream" => Arc::clone(upstream),
                "backend" => "none", "code" => CODES.get(code).copied().unwrap_or("5xx"))
            .increment(1);
            histogram!(REQUEST_DURATION, "listener" => Arc::clone(listener),
                "upstream" => Arc::clone(upstream))
            .record(duration.as_secs_f64());
        }
    }
}

pub fn failover(upstream: &Arc<str>) {
    if enabled() {
        counter!(FAILOVERS_TOTAL, "upstream" => Arc::clone(upstream)).increment(1);
    }
}

pub fn backend_failure(upstream: &Arc<str>, backend: &Arc<str>, kind: &'static str) {
    if enabled() {
        counter!(BACKEND_FAILURES_TOTAL, "upstream" => Arc::clone(upstream),
            "backend" => Arc::clone(backend), "kind" => kind)
        .increment(1);
    }
}

/// Kept for callers that mark health; `refresh` sets the gauge from live state anyway.
pub fn backend_healthy(upstream: &Arc<str>, backend: &Arc<str>, healthy: bool) {
    if enabled() {
        gauge!(BACKEND_HEALTHY, "upstream" => Arc::clone(upstream), "backend" => Arc::clone(backend))
            .set(if healthy { 1.0 } else { 0.0 });
    }
}

pub fn health_check(upstream: &Arc<str>, backend: &Arc<str>, pass: bool) {
    if enabled() {
        let result = if pass { "pass" } else { "fail" };
        counter!(HEALTH_CHECKS_TOTAL, "upstream" => Arc::clone(upstream),
            "backend" => Arc::clone(backend), "result" => result)
        .increment(1);
    }
}

pub fn config_reload(success: bool) {
    if enabled() {
        let result = if success { "success" } else { "failure" };
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
    }
}

/// A client connection was accepted. (`active_connections` is set by `refresh` from the
/// listeners' own counts.)
pub fn connection_opened(listener: &Arc<str>) {
    if enabled() {
        counter!(CONNECTIONS_TOTAL, "listener" => Arc::clone(listener)).increment(1);
    }
}

pub fn bytes(listener: &Arc<str>, rx: u64, tx: u64) {
    if enabled() {
        counter!(BYTES_TOTAL, "listener" => Arc::clone(listener), "direction" => "rx")
            .increment(rx);
        counter!(BYTES_TOTAL, "listener" => Arc::clone(listener), "direction" => "tx")
            .increment(tx);
    }
}
