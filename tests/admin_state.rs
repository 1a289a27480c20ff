//! What the admin listener says as the configuration changes: `config.last_reload`, series
//! of removed backends and listeners leaving `/metrics`, and readiness at start.

mod support;
#[path = "support/web.rs"]
mod web;

use std::net::SocketAddr;

use support::{Fulcrum, Toml, closed_addr, free_port, wait_for_async};
use web::{get, http_backend, parse_prometheus};

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

async fn status_json(admin: SocketAddr) -> serde_json::Value {
    let (status, body) = get(admin, "/status").await.expect("GET /status");
    assert_eq!(status, 200, "/status must answer 200");
    serde_json::from_str(&body).expect("/status must be JSON")
}

/// Every label value of every sample in `/metrics`.
async fn label_values(admin: SocketAddr) -> Vec<(String, String)> {
    let (status, body) = get(admin, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    parse_prometheus(&body)
        .into_iter()
        .flat_map(|s| s.labels.into_iter())
        .collect()
}

/// Reloads `f` with `toml` and waits for the `count`th log line of its `result`.
fn reload(f: &Fulcrum, toml: &Toml, result: &str, count: usize) {
    std::fs::write(&f.config, toml.to_string()).expect("rewrite config");
    f.signal(libc::SIGHUP);
    let done = if result == "success" {
        "configuration reloaded"
    } else {
        "reload failed"
    };
    f.wait_for_log_count(done, count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_reload_shows_a_failure_until_the_next_success() {
    let backend = http_backend("b").await;
    let (admin, web) = (free_port(), free_port());
    let good = Toml::http(web, &[backend]).admin(admin);
    let f = Fulcrum::start(&good);
    let s = status_json(addr(admin)).await;
    assert!(
        s["config"]["last_reload"].is_null(),
        "null before any reload: {s}"
    );

    let bad = good.clone().set("retries = \"many\"");
    reload(&f, &bad, "failure", 1);
    let s = status_json(addr(admin)).await;
    let last = &s["config"]["last_reload"];
    assert_eq!(last["result"], "failure", "{s}");
    let error = last["error"].as_str().expect("the error line");
    assert!(
        error.contains("retries"),
        "the error names the key: {error}"
    );
    assert!(
        last["at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "an RFC 3339 UTC time: {last}"
    );

    reload(&f, &good, "success", 1);
    let s = status_json(addr(admin)).await;
    assert_eq!(s["config"]["last_reload"]["result"], "success", "{s}");
    assert!(
        s["config"]["last_reload"]["error"].is_null(),
        "a success clears the error: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_of_removed_backends_and_listeners_leave_metrics() {
    let (kept, gone) = (http_backend("kept").await, http_backend("gone").await);
    let (admin, web, extra) = (free_port(), free_port(), free_port());
    let both = Toml::http(web, &[kept, gone])
        .admin(admin)
        .listener("extra", extra, "http", "app");
    let f = Fulcrum::start(&both);
    for _ in 0..4 {
        get(addr(web), "/").await.expect("request");
        get(addr(extra), "/").await.expect("request");
    }
    let before = label_values(addr(admin)).await;
    let gone_label = ("backend".to_owned(), gone.to_string());
    let extra_label = ("listener".to_owned(), "extra".to_owned());
    assert!(before.contains(&gone_label), "the backend has series");
    assert!(before.contains(&extra_label), "the listener has series");

    let one = Toml::http(web, &[kept]).admin(admin);
    reload(&f, &one, "success", 1);
    let after = label_values(addr(admin)).await;
    assert!(
        !after.contains(&gone_label),
        "a removed backend's series are gone (no `healthy 1` left behind)"
    );
    assert!(
        !after.contains(&extra_label),
        "a removed listener's series are gone"
    );
    assert!(
        after.contains(&("backend".to_owned(), kept.to_string())),
        "the kept backend's series stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_with_active_checks_is_ready_only_once_a_check_passed() {
    let admin = free_port();
    // The only backend refuses; it is marked down only after three failed checks.
    let down = Toml::http(free_port(), &[closed_addr()])
        .admin(admin)
        .health("check = \"tcp\"\ninterval = \"1h\"");
    let _f = Fulcrum::start(&down);
    let (code, body) = get(addr(admin), "/readyz").await.expect("readyz");
    assert_eq!(
        code, 503,
        "not ready before any check passed, although the backend starts healthy: {body}"
    );
    assert!(
        body.contains("\"app\""),
        "the body names the upstream: {body}"
    );

    let backend = http_backend("up").await;
    let admin = free_port();
    let up = Toml::http(free_port(), &[backend])
        .admin(admin)
        .health("check = \"tcp\"\ninterval = \"1h\"");
    let _g = Fulcrum::start(&up);
    wait_for_async(
        "/readyz to answer 200 once the first check passed",
        || async {
            let (code, _) = get(addr(admin), "/readyz").await.ok()?;
            (code == 200).then_some(())
        },
    )
    .await;
}
