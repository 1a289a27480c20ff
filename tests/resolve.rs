//! Backends given by host name (`resolve_interval`): every address is a backend, and the
//! set follows DNS. The real fulcrum runs in a private mount namespace whose `/etc/hosts` is
//! a temporary file the test rewrites (and whose `nsswitch.conf` says `hosts: files`, so no
//! lookup ever leaves the machine). Backends listen on 127.0.0.2..4, one port for all.
//! Needs `unshare --mount` (root): elsewhere the tests print a note and pass, except in CI.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use support::{
    Fulcrum, HttpBackend, Toml, free_port, get, http_backend_on, wait_for, wait_for_async,
};

const NAME: &str = "app.fulcrum.test";

/// Whether this machine lets us make a mount namespace; panics in CI when it does not.
fn namespaces_allowed() -> bool {
    let ok = Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the resolve tests: `unshare --mount` is not permitted (run as root)"
        );
        eprintln!("note: skipping: `unshare --mount` is not permitted here (needs root)");
    }
    ok
}

/// The hosts file fulcrum sees, rewritten in place: truncate and write keep the inode, so
/// the bind mount shows the new content.
struct Hosts {
    path: PathBuf,
}

impl Hosts {
    fn new(dir: &Path) -> Hosts {
        let h = Hosts {
            path: dir.join("hosts"),
        };
        h.set(&[]);
        h
    }

    /// `NAME` resolves to 127.0.0.N for each N.
    fn set(&self, last_octets: &[u8]) {
        let mut text = String::from("127.0.0.1 localhost\n");
        for n in last_octets {
            text.push_str(&format!("127.0.0.{n} {NAME}\n"));
        }
        std::fs::write(&self.path, text).expect("rewrite the hosts file in place");
    }
}

/// Starts fulcrum with `toml` in a mount namespace that sees `hosts` as `/etc/hosts`.
fn start(dir: &Path, hosts: &Hosts, toml: &Toml) -> Fulcrum {
    let config = toml.write(dir);
    let nsswitch = dir.join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files\n").expect("write nsswitch.conf");
    let script = format!(
        "mount --bind '{}' /etc/hosts && mount --bind '{}' /etc/nsswitch.conf && exec '{}' -c '{}'",
        hosts.path.display(),
        nsswitch.display(),
        support::BIN,
        config.display()
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "sh", "-c", &script]);
    Fulcrum::spawn_command(command, &config)
}

fn config(web: u16, port: u16, interval: &str) -> Toml {
    Toml::new()
        .listener("web", web, "http", "app")
        .upstream("app", [format!("{NAME}:{port}")])
        .set(&format!("resolve_interval = \"{interval}\"\nretries = 2"))
        .health("check = \"none\"\ninterval = \"1h\"\nunhealthy_threshold = 1")
}

/// A port free on 127.0.0.2, .3 and .4 at once.
fn shared_port() -> u16 {
    wait_for("a port free on 127.0.0.2..4", || {
        let port = free_port();
        let held: Vec<_> = (2..=4)
            .filter_map(|n| {
                std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, n], port))).ok()
            })
            .collect();
        (held.len() == 3).then_some(port)
    })
}

async fn backend(n: u8, port: u16, tag: &'static str) -> HttpBackend {
    http_backend_on(SocketAddr::from(([127, 0, 0, n], port)), tag).await
}

fn label(port: u16, n: u8) -> String {
    format!("{NAME}:{port}/127.0.0.{n}:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_of_a_name_is_a_backend_that_gets_traffic() {
    if !namespaces_allowed() {
        return;
    }
    let dir = support::temp_dir("resolve-both");
    let port = shared_port();
    let (b2, b3) = (backend(2, port, "b2").await, backend(3, port, "b3").await);
    let hosts = Hosts::new(&dir);
    hosts.set(&[2, 3]);
    let web = free_port();
    let f = start(&dir, &hosts, &config(web, port, "0s"));
    f.wait_for_log("listening");
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    for _ in 0..10 {
        assert_eq!(get(addr, "/").await.status, 200);
    }
    assert_eq!(
        (
            b2.requests.load(Ordering::Relaxed),
            b3.requests.load(Ordering::Relaxed)
        ),
        (5, 5),
        "both addresses of the name are backends of weight 1, shared round robin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_follow_dns_and_the_ones_that_stay_keep_their_state() {
    if !namespaces_allowed() {
        return;
    }
    let dir = support::temp_dir("resolve-follow");
    let port = shared_port();
    // Nothing listens on 127.0.0.2: its backend goes down at the first request and, with
    // `check = "none"` and an hour's interval, stays down unless it loses its state.
    let (b3, b4) = (backend(3, port, "b3").await, backend(4, port, "b4").await);
    let hosts = Hosts::new(&dir);
    hosts.set(&[2, 3]);
    let web = free_port();
    let f = start(&dir, &hosts, &config(web, port, "100ms"));
    f.wait_for_log("listening");
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    let down_lines = |f: &Fulcrum| {
        f.log()
            .lines()
            .filter(|l| l.contains("backend down") && l.contains(&label(port, 2)))
            .count()
    };
    for _ in 0..4 {
        assert_eq!(get(addr, "/").await.status, 200, "the refusal fails over");
    }
    f.wait_for_log(&format!(
        "backend down upstream=app addr={}",
        label(port, 2)
    ));

    hosts.set(&[2, 3, 4]);
    f.wait_for_log(&format!("backend {} added", label(port, 4)));
    wait_for_async("the new address to get traffic", || async {
        assert_eq!(get(addr, "/").await.status, 200);
        (b4.requests.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;

    hosts.set(&[2, 4]);
    f.wait_for_log(&format!("backend {} removed", label(port, 3)));
    let before = b3.requests.load(Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(get(addr, "/").await.status, 200);
    }
    assert_eq!(
        b3.requests.load(Ordering::Relaxed),
        before,
        "a removed address gets no more requests"
    );
    assert_eq!(
        down_lines(&f),
        1,
        "127.0.0.2 stayed in DNS, so it keeps its state (down) across both rebuilds"
    );
    assert!(
        !f.log()
            .contains(&format!("backend {} added", label(port, 2))),
        "a backend that stays is not added again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_gone_from_dns_leaves_metrics() {
    if !namespaces_allowed() {
        return;
    }
    let dir = support::temp_dir("resolve-metrics");
    let port = shared_port();
    let (b2, b3) = (backend(2, port, "b2").await, backend(3, port, "b3").await);
    let hosts = Hosts::new(&dir);
    // Two addresses stay after the change: with one left, its label would be the bare name.
    hosts.set(&[2, 3, 4]);
    let b4 = backend(4, port, "b4").await;
    let (web, admin) = (free_port(), free_port());
    let f = start(&dir, &hosts, &config(web, port, "100ms").admin(admin));
    f.wait_for_log("listening");
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    let metrics = || async move {
        let reply = get(([127, 0, 0, 1], admin).into(), "/metrics").await;
        assert_eq!(reply.status, 200);
        String::from_utf8_lossy(&reply.body).into_owned()
    };
    wait_for_async("every address to be counted in /metrics", || async {
        assert_eq!(get(addr, "/").await.status, 200);
        // Served, so each has request counters too, not only the health gauges.
        let served = [&b2, &b3, &b4]
            .iter()
            .all(|b| b.requests.load(Ordering::Relaxed) > 0);
        let text = metrics().await;
        (served && (2..=4).all(|n| text.contains(&label(port, n)))).then_some(())
    })
    .await;

    hosts.set(&[3, 4]);
    f.wait_for_log(&format!("backend {} removed", label(port, 2)));
    let text = metrics().await;
    assert!(
        !text.contains(&label(port, 2)),
        "a re-resolution that removes an address removes its series:\n{text}"
    );
    assert!(
        text.contains(&label(port, 3)) && text.contains(&label(port, 4)),
        "the addresses that stay keep their series"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_not_resolving_yet_joins_later_and_keeps_its_address_through_a_failure() {
    if !namespaces_allowed() {
        return;
    }
    let dir = support::temp_dir("resolve-late");
    let port = shared_port();
    let b3 = backend(3, port, "b3").await;
    let hosts = Hosts::new(&dir);
    let web = free_port();
    let f = start(&dir, &hosts, &config(web, port, "100ms"));
    f.wait_for_log("listening");
    f.wait_for_log("does not resolve");
    let addr: SocketAddr = ([127, 0, 0, 1], web).into();
    assert_eq!(
        get(addr, "/").await.status,
        503,
        "an upstream with no backends yet answers 503"
    );

    hosts.set(&[3]);
    f.wait_for_log(&format!("backend {NAME}:{port} (127.0.0.3:{port}) added"));
    assert_eq!(get(addr, "/").await.text(), "b3");

    // Warned once per failing spell; one may already have been warned before the name came.
    let warning = "backend name does not resolve, keeping its last known addresses";
    let earlier = f.log().matches(warning).count();
    hosts.set(&[]);
    f.wait_for_log_count(warning, earlier + 1);
    for _ in 0..5 {
        assert_eq!(
            get(addr, "/").await.text(),
            "b3",
            "a failed lookup must not empty the upstream"
        );
    }
    assert!(b3.requests.load(Ordering::Relaxed) >= 6);
    assert!(!f.log().contains("removed"), "nothing was removed");
}

#[test]
fn a_name_that_does_not_resolve_fails_the_start_without_resolve_interval() {
    if !namespaces_allowed() {
        return;
    }
    let dir = support::temp_dir("resolve-fail");
    let hosts = Hosts::new(&dir);
    let port = free_port();
    let mut f = start(&dir, &hosts, &config(free_port(), port, "0s"));
    assert_eq!(f.wait_exit(), Some(1), "the start fails");
    let log = f.log();
    assert!(
        log.contains(&format!(
            "error: upstream \"app\": backend \"{NAME}:{port}\" does not resolve"
        )),
        "the error names the backend: {log}"
    );
}
