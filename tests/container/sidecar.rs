//! The sidecar pattern of `examples/kubernetes/sidecar.yaml`, stopped as Kubernetes stops a
//! pod: fulcrum and the application share one network namespace (held by a `pause`-like
//! container, as a pod's is), and on deletion the kubelet sends SIGTERM to every container
//! at the same moment, except that it first runs the `preStop` hook of a container that has
//! one and waits for it. The manifest gives the application `preStop: sleep` longer than
//! fulcrum's `shutdown_delay`, so the application still answers while fulcrum drains.
//!
//! The test does exactly that, scaled down: fulcrum's `shutdown_delay` 2s, the application's
//! preStop 4s, the load stopping 1s after `/readyz` turns 503 (the endpoint's removal). The
//! application exits at once on SIGTERM, as most do. Without the preStop, the same run must
//! fail requests: the test shows the ordering matters, not only that it holds.

use std::time::{Duration, Instant};

use crate::docker::{BASE, ConfigDir, Container, Network, backend, docker, image, unique};
use crate::load::{Load, Report};
use crate::{skip, wait_ready, wait_served, wait_unready};

/// The manifest's config, scaled down: the application on 127.0.0.1:3000 of the shared
/// namespace, admin on the pod's address for the kubelet's probes.
const CONFIG: &str = r#"
[runtime]
worker_threads = 1
shutdown_delay = "2s"
shutdown_timeout = "5s"

[admin]
bind = "0.0.0.0:9901"

[[listener]]
name = "web"
bind = "0.0.0.0:8080"
protocol = "http"
upstream = "app"

[upstream.app]
backends = [{ addr = "127.0.0.1:3000" }]
connect_timeout = "500ms"
retries = 0

[upstream.app.health]
check = "http"
path = "/healthz"
interval = "1s"
"#;

/// The application's preStop sleep in the test (the manifest's 10s against 5s of delay).
const PRE_STOP: Duration = Duration::from_secs(4);

/// The time from `/readyz` failing to the endpoint's removal reaching every client.
const ENDPOINT_LAG: Duration = Duration::from_secs(1);

/// One pod under load, deleted; `pre_stop` is the application's hook, if it has one.
fn delete_pod_under_load(tag: &str, pre_stop: Option<Duration>) -> (Report, Instant) {
    let image = image();
    let net = Network::create(tag);
    // The pod's network namespace; the ports are published on it, as a pod IP is shared.
    let pod = Container::run(
        &unique("pod"),
        &[
            "--network",
            &net.name,
            "-p",
            "127.0.0.1::8080",
            "-p",
            "127.0.0.1::9901",
            "--entrypoint",
            "sleep",
            BASE,
            "infinity",
        ],
    );
    let in_pod = format!("container:{}", pod.name);
    let app = backend(&unique("app"), &["--network", &in_pod], 3000);
    let config = ConfigDir::new(CONFIG);
    let fulcrum = Container::run(
        &unique("fulcrum"),
        &["--network", &in_pod, "-v", &config.mount(), image],
    );
    let (web, admin) = (pod.port(8080), pod.port(9901));
    wait_ready(&fulcrum, admin);
    let load = Load::start(web, 3, Duration::from_millis(10));
    wait_served(&load, &app.name, Instant::now(), 20);

    // The kubelet: SIGTERM to both at once, the application's after its preStop.
    let deleted = Instant::now();
    let f = fulcrum.name.clone();
    let stop_fulcrum = std::thread::spawn(move || docker(&["stop", "-t", "15", &f]));
    let a = app.name.clone();
    let stop_app = std::thread::spawn(move || {
        if let Some(d) = pre_stop {
            std::thread::sleep(d);
        }
        docker(&["stop", "-t", "15", &a])
    });
    wait_unready(admin);
    std::thread::sleep(ENDPOINT_LAG);
    let report = load.stop();
    stop_fulcrum.join().expect("stop fulcrum");
    stop_app.join().expect("stop the application");
    if pre_stop.is_some() {
        assert_eq!(
            fulcrum.inspect("{{.State.ExitCode}}"),
            "0",
            "fulcrum must drain and exit 0:\n{}",
            fulcrum.logs()
        );
    }
    drop((fulcrum, app, pod, config, net));
    (report, deleted)
}

#[test]
fn sidecar_with_the_applications_pre_stop_survives_pod_deletion_with_no_failed_request() {
    if skip() {
        return;
    }
    let (report, deleted) = delete_pod_under_load("sidecar", Some(PRE_STOP));
    assert!(
        report.failures().is_empty(),
        "with the application's preStop outlasting shutdown_delay, deleting the pod must \
         fail no request: {}",
        report.describe_failures(deleted)
    );
    let after = report.outcomes.iter().filter(|o| o.sent > deleted).count();
    assert!(
        after >= 20,
        "requests after the deletion must be served, saw {after}"
    );
}

#[test]
fn sidecar_without_a_pre_stop_fails_requests_when_the_pod_is_deleted() {
    if skip() {
        return;
    }
    let (report, deleted) = delete_pod_under_load("noprestop", None);
    assert!(
        !report.failures().is_empty(),
        "the application stopping with fulcrum must fail requests during shutdown_delay \
         (else the sidecar test proves nothing); {} requests after the deletion",
        report.outcomes.iter().filter(|o| o.sent > deleted).count()
    );
}
