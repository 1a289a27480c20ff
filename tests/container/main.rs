//! fulcrum's image on a real Docker engine (`cargo test --test container`): the image the
//! repository's Dockerfile builds (`--target prebuilt`, from the binary under test), in
//! front of backend containers on a network each test makes itself. Load comes from the
//! host through ports published on 127.0.0.1 only; every container and network is removed
//! when its test ends, pass or fail.
//!
//! The engine needs no registry: the base image is made from Debian's packages with
//! debootstrap the first time (docker.rs), then kept. `FULCRUM_SKIP_CONTAINER_TESTS=1` skips
//! them where no engine runs.

#[path = "../support/mod.rs"]
mod support;

mod docker;
mod failover;
mod load;
mod sidecar;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use docker::{ConfigDir, Container, Network, backend, docker, image, unique};
use load::{Load, count_backends, get};
use support::wait_for;

/// The time from `/readyz` failing to the endpoint's removal reaching every client. The
/// scenarios keep the load on for this long after fulcrum turns unready: the platform's lag,
/// played out, not a wait for something to happen.
pub const ENDPOINT_LAG: Duration = Duration::from_secs(1);

/// One scenario at a time: each runs several containers and a steady load, and on a 2-core
/// machine two at once would starve the health checks whose timing they observe.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// True where the tests must not run (no engine); said on stderr so a skip is never silent.
pub fn skip() -> bool {
    let skip = std::env::var_os("FULCRUM_SKIP_CONTAINER_TESTS").is_some();
    if skip {
        eprintln!("FULCRUM_SKIP_CONTAINER_TESTS is set: container test skipped");
    }
    skip
}

/// The config the two-backend tests mount: health checks fast enough that a backend that
/// stops answering is marked down within about a second, and `response_timeout` (1s) well
/// inside the load's own request timeout.
fn two_backends(b1: &str, w1: u32, b2: &str, w2: u32, shutdown_delay: &str) -> String {
    format!(
        r#"
[runtime]
shutdown_delay = "{shutdown_delay}"
shutdown_timeout = "5s"
watch_config = false

[admin]
bind = "0.0.0.0:9901"

[[listener]]
name = "web"
bind = "0.0.0.0:8080"
protocol = "http"
upstream = "app"

[upstream.app]
backends = [{{ addr = "{b1}:8080", weight = {w1} }}, {{ addr = "{b2}:8080", weight = {w2} }}]
# Container names, resolved by Docker's DNS; again every second, as a restarted or
# reconnected container may come back on another address.
resolve_interval = "1s"
connect_timeout = "300ms"
response_timeout = "1s"
retries = 1

[upstream.app.health]
check = "http"
path = "/healthz"
interval = "300ms"
timeout = "1s"
unhealthy_threshold = 2
healthy_threshold = 1
"#
    )
}

/// fulcrum's container in front of two backend containers on a network of its own. Fields
/// drop in order: fulcrum, the backends, then the network they were attached to.
pub struct TwoBackends {
    pub fulcrum: Container,
    pub b1: Container,
    pub b2: Container,
    pub config: ConfigDir,
    pub net: Network,
    pub web: SocketAddr,
    pub admin: SocketAddr,
}

impl TwoBackends {
    pub fn start(tag: &str, w1: u32, w2: u32, shutdown_delay: &str) -> TwoBackends {
        let image = image();
        let net = Network::create(tag);
        let on_net = ["--network", net.name.as_str()];
        let b1 = backend(&unique("b1"), &on_net, 8080);
        let b2 = backend(&unique("b2"), &on_net, 8080);
        let config = ConfigDir::new(&two_backends(&b1.name, w1, &b2.name, w2, shutdown_delay));
        let fulcrum = Container::run(
            &unique("fulcrum"),
            &[
                "--network",
                &net.name,
                "-p",
                "127.0.0.1::8080",
                "-p",
                "127.0.0.1::9901",
                "-v",
                &config.mount(),
                image,
            ],
        );
        let (web, admin) = (fulcrum.port(8080), fulcrum.port(9901));
        wait_ready(&fulcrum, admin);
        TwoBackends {
            fulcrum,
            b1,
            b2,
            config,
            net,
            web,
            admin,
        }
    }
}

/// Waits until fulcrum's `/readyz` answers 200 (every upstream has a healthy backend).
pub fn wait_ready(fulcrum: &Container, admin: SocketAddr) {
    let start = Instant::now();
    while !matches!(get(admin, "/readyz"), Ok((200, _))) {
        assert!(
            start.elapsed() < support::DEADLINE,
            "fulcrum must become ready; its log:\n{}",
            fulcrum.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `/readyz` stops answering 200: what a platform's readiness probe sees first.
pub fn wait_unready(admin: SocketAddr) -> Instant {
    wait_for("/readyz to stop answering 200", || {
        (!matches!(get(admin, "/readyz"), Ok((200, _)))).then(Instant::now)
    })
}

/// What `fulcrum_backend_healthy` says of the backend labelled `label`.
pub fn healthy(admin: SocketAddr, label: &str) -> Option<bool> {
    let (_, metrics) = get(admin, "/metrics").ok()?;
    let needle = format!("backend=\"{label}\"");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("fulcrum_backend_healthy{") && l.contains(&needle))?;
    Some(line.trim_end().ends_with(" 1"))
}

/// Waits until the load has had `n` answers from `backend` sent at `since` or later.
pub fn wait_served(load: &Load, backend: &str, since: Instant, n: usize) {
    wait_for(&format!("{n} requests answered by {backend}"), || {
        (load.served_by_since(backend, since) >= n).then_some(())
    });
}

#[test]
fn image_runs_as_non_root_and_its_baked_in_config_serves_probes_and_an_app_container() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    let net = Network::create("baked");
    let f = Container::run(
        &unique("fulcrum"),
        &[
            "--network",
            &net.name,
            "-p",
            "127.0.0.1::8080",
            "-p",
            "127.0.0.1::9901",
            image(),
        ],
    );
    let admin = f.port(9901);
    wait_for("/healthz on the published admin port", || {
        matches!(get(admin, "/healthz"), Ok((200, _))).then_some(())
    });
    let (status, body) = get(admin, "/readyz").expect("/readyz");
    assert_eq!(
        status, 503,
        "without an `app` container /readyz must be 503: {body}"
    );
    assert!(
        body.contains("app"),
        "/readyz must name the upstream: {body}"
    );
    assert_eq!(
        f.inspect("{{.Config.User}}"),
        "10001:10001",
        "fulcrum must not run as root"
    );
    assert_eq!(docker(&["exec", &f.name, "id", "-u"]), "10001");
    assert_eq!(f.inspect("{{.Config.StopSignal}}"), "SIGTERM");
    // The baked-in backend `app:8080` is whatever answers to that name on the network.
    let app = unique("app");
    let _app = backend(
        &app,
        &["--network", &net.name, "--network-alias", "app"],
        8080,
    );
    wait_ready(&f, admin);
    let (status, body) = get(f.port(8080), "/").expect("a request through fulcrum");
    assert_eq!(
        (status, body.as_str()),
        (200, app.as_str()),
        "the app must answer"
    );
}

#[test]
fn balances_by_weight_across_backend_containers_found_by_dns_name() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    let s = TwoBackends::start("weights", 3, 1, "0s");
    let counts = count_backends(s.web, 200, "balancing across containers");
    let (n1, n2) = (counts.get(&s.b1.name), counts.get(&s.b2.name));
    // Smooth weighted round robin is exact per window of 4; a health check that is late on a
    // loaded machine may take a backend out for a moment.
    let (n1, n2) = (n1.copied().unwrap_or(0), n2.copied().unwrap_or(0));
    assert_eq!(n1 + n2, 200, "only the two backends answer: {counts:?}");
    assert!(
        n1.abs_diff(150) <= 6,
        "weights 3:1 must give 150:50, got {counts:?}"
    );
}

#[test]
fn docker_stop_under_load_drains_with_no_failed_request() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    let s = TwoBackends::start("stop", 1, 1, "3s");
    let load = Load::start(s.web, 3, Duration::from_millis(10));
    wait_served(&load, &s.b1.name, Instant::now(), 10);
    let sigterm = Instant::now();
    let name = s.fulcrum.name.clone();
    let stop = std::thread::spawn(move || docker(&["stop", "-t", "20", &name]));
    // The platform takes the endpoint out once the readiness probe fails, a moment later.
    wait_unready(s.admin);
    std::thread::sleep(ENDPOINT_LAG);
    let report = load.stop();
    stop.join().expect("docker stop");
    assert!(
        report.failures().is_empty(),
        "SIGTERM with shutdown_delay must fail no request: {}",
        report.describe_failures(sigterm)
    );
    let after = report.outcomes.iter().filter(|o| o.sent > sigterm).count();
    assert!(
        after >= 20,
        "requests after SIGTERM must be served, saw {after}"
    );
    // 0: it drained and exited by itself; docker's kill at the 20s stop timeout gives 137.
    let code = s.fulcrum.inspect("{{.State.ExitCode}}");
    assert_eq!(
        code,
        "0",
        "fulcrum must exit 0 after draining:\n{}",
        s.fulcrum.logs()
    );
}

#[test]
fn sighup_after_changing_the_mounted_config_applies_new_weights_with_no_failed_request() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    let s = TwoBackends::start("reload", 1, 1, "0s");
    let load = Load::start(s.web, 3, Duration::from_millis(10));
    wait_served(&load, &s.b2.name, Instant::now(), 10);
    let t0 = Instant::now();
    s.config
        .write(&two_backends(&s.b1.name, 1, &s.b2.name, 4, "0s"));
    docker(&["kill", "-s", "HUP", &s.fulcrum.name]);
    wait_for("fulcrum to log the reload's weight change", || {
        s.fulcrum.logs().contains("weight 1 -> 4").then_some(())
    });
    wait_served(&load, &s.b2.name, Instant::now(), 20);
    let report = load.stop();
    assert!(
        report.failures().is_empty(),
        "a reload must fail no request: {}",
        report.describe_failures(t0)
    );
    let counts = count_backends(s.web, 100, "after the reload");
    let n2 = counts.get(&s.b2.name).copied().unwrap_or(0);
    assert!(
        n2.abs_diff(80) <= 4,
        "new weights 1:4 must give 20:80, got {counts:?}"
    );
}
