//! The sidecar pattern of `examples/kubernetes/sidecar.yaml`, stopped as Kubernetes stops a
//! pod: fulcrum and the application share one network namespace (held by a `pause`-like
//! container, as a pod's is), and on deletion the kubelet sends SIGTERM to every container
//! at the same moment, except that it first runs the `preStop` hook of a container that has
//! one and waits for it. The manifest gives the application `preStop: sleep` longer than
//! fulcrum's `shutdown_delay`, so the application still answers while fulcrum drains.
//!
//! The test does exactly that with the manifest's own fulcrum config and preStop, their
//! durations scaled down (`SCALE`), the load stopping 1s after `/readyz` turns 503 (the
//! endpoint's removal). The application exits at once on SIGTERM, as most do. Without the preStop, the same run must
//! fail requests: the test shows the ordering matters, not only that it holds.

use std::time::{Duration, Instant};

use crate::docker::{BASE, ConfigDir, Container, Network, backend, docker, image, unique};
use crate::load::{Load, Report};
use crate::{ENDPOINT_LAG, one_at_a_time, skip, support, wait_ready, wait_served, wait_unready};

/// The manifest's durations are scaled by this for the test: 5s of `shutdown_delay` and 10s
/// of preStop become 2s and 4s.
const SCALE: f64 = 0.4;

/// What `examples/kubernetes/sidecar.yaml` prescribes, scaled: fulcrum's config (its
/// `shutdown_delay` scaled, the rest as written) and the application's preStop sleep.
fn manifest() -> (String, Duration) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/kubernetes/sidecar.yaml"
    );
    let yaml = std::fs::read_to_string(path).expect("read sidecar.yaml");
    let config = support::embedded_configs(&yaml)
        .pop()
        .expect("sidecar.yaml's config");
    let seconds = |line: &str| -> f64 {
        let digits: String = line.chars().filter(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no seconds in {line:?}"))
    };
    let delay_line = config
        .lines()
        .find(|l| l.starts_with("shutdown_delay"))
        .expect("sidecar.yaml's config sets shutdown_delay")
        .to_owned();
    let delay = seconds(&delay_line);
    let pre_stop = yaml
        .lines()
        .skip_while(|l| !l.contains("preStop:"))
        .find(|l| l.contains("seconds:"))
        .map(seconds)
        .expect("sidecar.yaml gives the application a preStop sleep");
    assert!(
        pre_stop > delay,
        "the application's preStop ({pre_stop}s) must outlast shutdown_delay ({delay}s)"
    );
    let scaled = format!("shutdown_delay = \"{}ms\"", (delay * SCALE * 1000.0) as u64);
    let config = config.replace(&delay_line, &scaled);
    let pre_stop = Duration::from_secs_f64(pre_stop * SCALE);
    assert!(
        Duration::from_secs_f64(delay * SCALE) > ENDPOINT_LAG,
        "the scaled shutdown_delay must outlast the endpoint's removal"
    );
    (config, pre_stop)
}

/// One pod under load, deleted; `pre_stop` is the application's hook, if it has one.
fn delete_pod_under_load(tag: &str, with_pre_stop: bool) -> (Report, Instant) {
    let image = image();
    let (toml, pre_stop) = manifest();
    let pre_stop = with_pre_stop.then_some(pre_stop);
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
    let config = ConfigDir::new(&toml);
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
    eprintln!(
        "pod deleted (preStop {pre_stop:?}): {} requests, {}",
        report.outcomes.len(),
        report.describe_failures(deleted)
    );
    drop((fulcrum, app, pod, config, net));
    (report, deleted)
}

#[test]
fn sidecar_with_the_applications_pre_stop_survives_pod_deletion_with_no_failed_request() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    let (report, deleted) = delete_pod_under_load("sidecar", true);
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
    let _alone = one_at_a_time();
    let (report, deleted) = delete_pod_under_load("noprestop", false);
    assert!(
        !report.failures().is_empty(),
        "the application stopping with fulcrum must fail requests during shutdown_delay \
         (else the sidecar test proves nothing); {} requests after the deletion",
        report.outcomes.iter().filter(|o| o.sent > deleted).count()
    );
}
