//! The admin listener of the real binary: probes, Prometheus metrics, `/status`, logs.

mod support;
#[path = "support/web.rs"]
mod web;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use support::{Fulcrum, Toml, closed_addr, free_port, wait_for_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use web::{Sample, get, http_backend, parse_prometheus, value};

/// Ports of one test's fulcrum.
struct Ports {
    admin: SocketAddr,
    web: SocketAddr,
    l4: SocketAddr,
    lonely: SocketAddr,
}

/// `web` (http) and `l4` (tcp) proxy to `app` = [live, dead]; `lonely` (http) proxies to an
/// upstream whose only backend refuses. Passive failures only, so tests control health.
fn config(live: SocketAddr, dead: SocketAddr) -> (Toml, Ports) {
    let p = || SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ports = Ports {
        admin: p(),
        web: p(),
        l4: p(),
        lonely: p(),
    };
    let toml = Toml::new()
        .admin(ports.admin.port())
        .listener("web", ports.web.port(), "http", "app")
        .listener("l4", ports.l4.port(), "tcp", "app")
        .listener("lonely", ports.lonely.port(), "http", "lonely")
        .upstream("app", [(live, 2), (dead, 1)])
        .health("check = \"none\"\ninterval = \"1h\"")
        .upstream("lonely", [dead])
        .health("check = \"none\"\ninterval = \"1h\"");
    (toml, ports)
}

async fn scrape(admin: SocketAddr) -> Vec<Sample> {
    let (status, body) = get(admin, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "/metrics must answer 200");
    parse_prometheus(&body)
}

async fn status_json(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = get(admin, "/status").await.expect("GET /status");
    assert_eq!(status, 200, "/status must answer 200");
    serde_json::from_str(&body).expect("/status must be JSON")
}

/// Sends requests through `web` until the dead backend of `app` is marked down.
async fn mark_dead_down(ports: &Ports, dead: SocketAddr) {
    let dead = dead.to_string();
    wait_for_async("the refusing backend to be marked down", || async {
        let (code, _) = get(ports.web, "/").await.ok()?;
        assert_eq!(code, 200, "a request must fail over to the live backend");
        let samples = scrape(ports.admin).await;
        let healthy = value(
            &samples,
            "fulcrum_backend_healthy",
            &[("upstream", "app"), ("backend", &dead)],
        );
        (healthy == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_list_every_family_with_its_labels() {
    let live = http_backend("live").await;
    let dead = closed_addr();
    let (toml, ports) = config(live, dead);
    let _f = Fulcrum::start(&toml);
    get(ports.web, "/").await.expect("one request");
    let samples = scrape(ports.admin).await;
    let expected: &[(&str, &[&str])] = &[
        ("fulcrum_connections_total", &["listener"]),
        ("fulcrum_active_connections", &["listener"]),
        (
            "fulcrum_requests_total",
            &["listener", "route", "upstream", "backend", "code"],
        ),
        (
            "fulcrum_request_duration_seconds_bucket",
            &["listener", "upstream", "le"],
        ),
        (
            "fulcrum_request_duration_seconds_sum",
            &["listener", "upstream"],
        ),
        (
            "fulcrum_request_duration_seconds_count",
            &["listener", "upstream"],
        ),
        ("fulcrum_backend_healthy", &["upstream", "backend"]),
        ("fulcrum_backend_in_flight", &["upstream", "backend"]),
        (
            "fulcrum_backend_failures_total",
            &["upstream", "backend", "kind"],
        ),
        ("fulcrum_failovers_total", &["upstream"]),
        (
            "fulcrum_health_checks_total",
            &["upstream", "backend", "result"],
        ),
        ("fulcrum_bytes_total", &["listener", "direction"]),
        ("fulcrum_config_reloads_total", &["result"]),
    ];
    for (family, labels) in expected {
        let of_family: Vec<&Sample> = samples.iter().filter(|s| s.name == *family).collect();
        assert!(!of_family.is_empty(), "/metrics must list {family}");
        let want: BTreeSet<&str> = labels.iter().copied().collect();
        for s in of_family {
            let got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
            assert_eq!(
                got, want,
                "{family} must have exactly its documented labels"
            );
        }
    }
    let known: BTreeSet<&str> = expected.iter().map(|(f, _)| *f).collect();
    for s in &samples {
        assert!(
            known.contains(s.name.as_str()),
            "unexpected family {}",
            s.name
        );
    }
    // Sub-millisecond resolution: a bucket below 1ms exists.
    assert!(
        samples
            .iter()
            .any(|s| s.name == "fulcrum_request_duration_seconds_bucket"
                && s.labels
                    .get("le")
                    .and_then(|l| l.parse::<f64>().ok())
                    .is_some_and(|le| le < 0.001)),
        "request_duration_seconds must have buckets below 1ms"
    );
    for (direction, kind) in [("rx", "connect"), ("tx", "timeout")] {
        assert!(
            value(
                &samples,
                "fulcrum_bytes_total",
                &[("listener", "l4"), ("direction", direction)]
            )
            .is_some(),
            "bytes_total must be listed for every listener before traffic"
        );
        assert!(
            value(
                &samples,
                "fulcrum_backend_failures_total",
                &[("upstream", "app"), ("kind", kind)]
            )
            .is_some(),
            "backend_failures_total must be listed for every kind before failures"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_health_gauges_follow_traffic_failovers_and_reloads() {
    let live = http_backend("live").await;
    let dead = closed_addr();
    let (toml, ports) = config(live, dead);
    let f = Fulcrum::start(&toml);
    let (live_s, dead_s) = (live.to_string(), dead.to_string());
    let before = scrape(ports.admin).await;
    assert_eq!(
        value(&before, "fulcrum_backend_healthy", &[("backend", &dead_s)]),
        Some(1.0),
        "backends start healthy"
    );
    mark_dead_down(&ports, dead).await;
    for _ in 0..5 {
        let (code, body) = get(ports.web, "/").await.expect("request");
        assert_eq!(
            (code, body.as_str()),
            (200, "live"),
            "the live backend answers"
        );
    }
    // One tcp session through l4, to the live backend.
    let mut s = TcpStream::connect(ports.l4).await.expect("connect l4");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read");
    assert!(
        answer.ends_with(b"live"),
        "the tcp session reaches the live backend"
    );
    drop(s); // both sides closed: the session ends and is counted

    // The session's bytes are counted when fulcrum sees it end, just after the client does.
    let m = wait_for_async("the tcp session's bytes to be counted", || async {
        let m = scrape(ports.admin).await;
        let tx = value(
            &m,
            "fulcrum_bytes_total",
            &[("listener", "l4"), ("direction", "tx")],
        );
        (tx > Some(0.0)).then_some(m)
    })
    .await;
    let requests = value(
        &m,
        "fulcrum_requests_total",
        &[
            ("listener", "web"),
            ("upstream", "app"),
            ("backend", &live_s),
            ("code", "2xx"),
        ],
    )
    .expect("requests_total of the live backend");
    assert!(requests >= 6.0, "every answered request counts: {requests}");
    let count = value(
        &m,
        "fulcrum_request_duration_seconds_count",
        &[("listener", "web"), ("upstream", "app")],
    );
    assert_eq!(count, Some(requests), "every answered request is timed");
    let failures = value(
        &m,
        "fulcrum_backend_failures_total",
        &[
            ("backend", &dead_s),
            ("upstream", "app"),
            ("kind", "connect"),
        ],
    );
    assert_eq!(
        failures,
        Some(3.0),
        "three refused connects mark the backend down"
    );
    let failovers = value(&m, "fulcrum_failovers_total", &[("upstream", "app")]);
    assert_eq!(
        failovers,
        Some(3.0),
        "each refused connect moved the request on"
    );
    assert_eq!(
        value(&m, "fulcrum_backend_healthy", &[("backend", &live_s)]),
        Some(1.0),
        "the live backend stays up"
    );
    for listener in ["web", "l4"] {
        for direction in ["rx", "tx"] {
            let b = value(
                &m,
                "fulcrum_bytes_total",
                &[("listener", listener), ("direction", direction)],
            );
            assert!(
                b > Some(0.0),
                "{listener} {direction} bytes must count: {b:?}"
            );
        }
    }
    assert_eq!(
        value(&m, "fulcrum_connections_total", &[("listener", "l4")]),
        Some(1.0)
    );

    f.signal(libc::SIGHUP);
    f.wait_for_log("configuration reloaded");
    let m = scrape(ports.admin).await;
    assert_eq!(
        value(&m, "fulcrum_config_reloads_total", &[("result", "success")]),
        Some(1.0),
        "a reload counts"
    );
    assert_eq!(
        value(
            &m,
            "fulcrum_backend_healthy",
            &[("backend", &dead_s), ("upstream", "app")]
        ),
        Some(0.0),
        "a backend that stays across a reload keeps its health"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_naming_the_upstream_that_lost_its_last_backend() {
    let live = http_backend("live").await;
    let dead = closed_addr();
    let (toml, ports) = config(live, dead);
    let _f = Fulcrum::start(&toml);
    assert_eq!(
        get(ports.admin, "/readyz").await.expect("readyz").0,
        200,
        "ready at start"
    );
    let (code, body) = wait_for_async("/readyz to turn 503", || async {
        let _ = get(ports.lonely, "/").await;
        let r = get(ports.admin, "/readyz").await.ok()?;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert_eq!(code, 503);
    assert!(
        body.contains("\"lonely\""),
        "the body names the upstream: {body:?}"
    );
    assert!(
        !body.contains("\"app\""),
        "app still has a healthy backend: {body:?}"
    );
    let (code, body) = get(ports.admin, "/healthz").await.expect("healthz");
    assert_eq!(
        (code, body.trim()),
        (200, "ok"),
        "/healthz answers while the process runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_during_the_shutdown_delay_while_serving_goes_on() {
    let live = http_backend("live").await;
    let other = http_backend("other").await;
    let (toml, ports) = config(live, other);
    let toml = toml.runtime("shutdown_delay = \"30s\"");
    let f = Fulcrum::start(&toml);
    assert_eq!(get(ports.admin, "/readyz").await.expect("readyz").0, 200);
    f.signal(libc::SIGTERM);
    let (code, body) = wait_for_async("/readyz to turn 503 on SIGTERM", || async {
        let r = get(ports.admin, "/readyz").await.ok()?;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("draining"), "the body says why: {body:?}");
    let (code, _) = get(ports.web, "/").await.expect("request during the delay");
    assert_eq!(code, 200, "listeners keep serving during shutdown_delay");
    assert_eq!(get(ports.admin, "/healthz").await.expect("healthz").0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_listeners_upstreams_and_live_backend_state() {
    let live = http_backend("live").await;
    let dead = closed_addr();
    let (toml, ports) = config(live, dead);
    let f = Fulcrum::start(&toml);
    mark_dead_down(&ports, dead).await;
    // A tcp session held open: one active connection on l4, one in flight on the live backend.
    let _held = TcpStream::connect(ports.l4).await.expect("connect l4");
    let s = wait_for_async("the held session to show in /status", || async {
        let s = status_json(ports.admin).await;
        let l4 = s["listeners"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == "l4")?
            .clone();
        let live_in_flight = s["upstreams"]
            .as_array()?
            .iter()
            .find(|u| u["name"] == "app")?["backends"][0]["in_flight"]
            .clone();
        // The connection is counted at accept, the lease only once the backend is dialled.
        (l4["active_connections"] == 1 && live_in_flight == 1).then_some(s)
    })
    .await;
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["config"]["path"], f.config.display().to_string());
    assert!(
        s["config"]["loaded_at"].as_u64() > Some(1_600_000_000),
        "loaded_at is Unix seconds"
    );
    let listeners = s["listeners"].as_array().expect("listeners");
    let web = listeners.iter().find(|l| l["name"] == "web").expect("web");
    assert_eq!(web["bind"], ports.web.to_string());
    assert_eq!(web["protocol"], "http");
    let l4 = listeners.iter().find(|l| l["name"] == "l4").expect("l4");
    assert_eq!(l4["protocol"], "tcp");
    let app = s["upstreams"]
        .as_array()
        .expect("upstreams")
        .iter()
        .find(|u| u["name"] == "app")
        .expect("app");
    assert_eq!(app["balance"], "round_robin");
    let backends = app["backends"].as_array().expect("backends");
    let l = &backends[0];
    assert_eq!(l["addr"], live.to_string());
    assert_eq!(
        (l["weight"].as_u64(), l["healthy"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(l["in_flight"], 1, "the held session is in flight");
    assert_eq!(l["load"].as_f64(), Some(0.5), "load = in_flight / weight");
    assert!(l["requests"].as_u64() >= Some(3), "requests count: {l}");
    assert_eq!(l["failures"], 0);
    let d = &backends[1];
    assert_eq!(d["addr"], dead.to_string());
    assert_eq!(d["healthy"], false, "the refusing backend is down");
    assert_eq!(d["failures"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_answer_and_unknown_ones_are_404() {
    let live = http_backend("live").await;
    let other = http_backend("other").await;
    let (toml, ports) = config(live, other);
    let _f = Fulcrum::start(&toml);
    let (code, page) = get(ports.admin, "/").await.expect("GET /");
    assert_eq!(code, 200);
    assert!(
        page.contains("<html") && page.contains("/status"),
        "/ is the status page"
    );
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no external assets"
    );
    for path in ["/nope", "/metrics/x", "/healthz/", "/status.json"] {
        assert_eq!(
            get(ports.admin, path).await.expect("GET").0,
            404,
            "{path} must be 404"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_valid_json_object_per_line_with_access_lines() {
    let live = http_backend("live").await;
    let dead = closed_addr();
    let (toml, ports) = config(live, dead);
    let toml = toml.log("format = \"json\"\naccess = true");
    let f = Fulcrum::start(&toml);
    get(ports.web, "/some/path").await.expect("request");
    let mut s = TcpStream::connect(ports.l4).await.expect("connect l4");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read");
    drop(s);
    f.wait_for_log("\"tcp session\"");
    let lines: Vec<serde_json::Value> = f
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let http = lines
        .iter()
        .find(|l| l["message"] == "http request" && l["path"] == "/some/path")
        .expect("an access line per http request");
    for key in [
        "client",
        "method",
        "status",
        "upstream",
        "backend",
        "duration_us",
        "bytes",
    ] {
        assert!(!http[key].is_null(), "http access line needs {key}: {http}");
    }
    assert_eq!(http["status"], 200);
    assert_eq!(http["bytes"], 4, "the response size");
    let tcp = lines
        .iter()
        .find(|l| l["message"] == "tcp session")
        .expect("an access line per tcp session");
    for key in ["client", "backend", "rx", "tx", "duration_ms", "end"] {
        assert!(!tcp[key].is_null(), "tcp access line needs {key}: {tcp}");
    }
    assert_eq!(tcp["backend"], live.to_string());
    let end = tcp["end"].as_str().unwrap_or_default();
    assert!(
        ["closed", "idle", "error"].contains(&end),
        "the end in the config's snake case: {tcp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_bind_that_fails_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let live = http_backend("live").await;
    let (toml, _) = config(live, closed_addr());
    let toml = toml.admin(taken.local_addr().expect("addr").port());
    let path = toml.write(&support::temp_dir("admin-bind"));
    let mut f = Fulcrum::spawn(&path);
    f.wait_for_log("[admin]: cannot bind");
    assert_eq!(
        f.wait_exit(),
        Some(1),
        "a start that cannot bind [admin] fails"
    );
}
