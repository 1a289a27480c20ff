//! Health checking and failover of the real binary with hyper backends on 127.0.0.1. Short
//! intervals (100 ms) keep every test quick; every wait polls with a deadline.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::{Fulcrum, HealthBackend, Toml, free_port, http_get, wait_for_async};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(100);
const UNHEALTHY: u32 = 2;

/// An http and a tcp listener on one upstream of `backends`, checked by `check` every 100 ms.
struct Proxy {
    fulcrum: Fulcrum,
    http: SocketAddr,
    tcp: SocketAddr,
}

fn start(backends: &[&HealthBackend], check: &str, extra: &str) -> Proxy {
    let (http, tcp) = (free_port(), free_port());
    let fulcrum = Fulcrum::start(&config(http, tcp, backends, check, extra));
    Proxy {
        fulcrum,
        http: ([127, 0, 0, 1], http).into(),
        tcp: ([127, 0, 0, 1], tcp).into(),
    }
}

fn config(http: u16, tcp: u16, backends: &[&HealthBackend], check: &str, extra: &str) -> Toml {
    Toml::new()
        .runtime("shutdown_timeout = \"1s\"")
        .listener("web", http, "http", "app")
        .listener("l4", tcp, "tcp", "app")
        .upstream("app", backends.iter().map(|b| b.addr))
        .set(extra)
        .health(&format!(
            "check = \"{check}\"\npath = \"/healthz\"\ninterval = \"{}ms\"\ntimeout = \"{}ms\"\n\
             unhealthy_threshold = {UNHEALTHY}\nhealthy_threshold = 2",
            INTERVAL.as_millis(),
            TIMEOUT.as_millis(),
        ))
}

/// One tcp session carrying an HTTP request: the body the backend answered, or "" when the
/// proxy closed the connection without an answer.
async fn tcp_session(proxy: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).await?;
    let text = String::from_utf8_lossy(&all).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

/// Waits until the log has a line holding every one of `needles`; returns when it was seen.
async fn wait_for_line(f: &Fulcrum, needles: &[&str]) -> Instant {
    wait_for_async(&format!("a log line with {needles:?}"), || async {
        f.log()
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n)))
            .then(Instant::now)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_is_marked_down_while_traffic_fails_over_and_comes_back_up() {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    let p = start(&[&a, &b], "http", "");
    let b_addr = b.addr.to_string();

    b.stop();
    let stopped = Instant::now();
    let (http, tcp) = (p.http, p.tcp);
    let traffic = tokio::spawn(async move {
        for i in 0..200 {
            let (status, body) = http_get(http).await.expect("http request through fulcrum");
            assert_eq!(
                (status, body.as_str()),
                (200, "a"),
                "request {i} must fail over to the live backend"
            );
        }
        for i in 0..100 {
            let body = tcp_session(tcp).await.expect("tcp session through fulcrum");
            assert!(
                body.ends_with('a'),
                "session {i} must fail over to the live backend: {body:?}"
            );
        }
    });
    let down = wait_for_line(&p.fulcrum, &["backend down", &b_addr]).await;
    // Checks every 100 ms (±10%), each bounded by 100 ms, two failures; plus slack for a
    // loaded machine and the 10 ms log polling.
    let bound = INTERVAL.mul_f64(1.1) * UNHEALTHY + TIMEOUT + Duration::from_millis(700);
    assert!(
        down - stopped < bound,
        "a stopped backend must be marked down within unhealthy_threshold x interval + \
         timeout: {:?}",
        down - stopped
    );
    traffic.await.expect("every request and session succeeded");

    b.restart().await;
    wait_for_line(&p.fulcrum, &["backend up", &b_addr]).await;
    wait_for_async("traffic to reach the returning backend", || async {
        let (_, body) = http_get(p.http).await.ok()?;
        (body == "b").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_check_answered_503_marks_the_backend_down() {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    let p = start(&[&a, &b], "http", "");
    let b_addr = b.addr.to_string();
    b.set_health(503);
    wait_for_line(&p.fulcrum, &["backend down", &b_addr, "status 503"]).await;
    for _ in 0..20 {
        let (status, body) = http_get(p.http).await.expect("request");
        assert_eq!(
            (status, body.as_str()),
            (200, "a"),
            "a down backend gets no traffic"
        );
    }
    b.set_health(204);
    wait_for_line(&p.fulcrum, &["backend up", &b_addr]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_http_answers_503_and_tcp_closes_at_once() {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    let p = start(&[&a, &b], "http", "");
    a.set_health(500);
    b.set_health(500);
    wait_for_line(&p.fulcrum, &["backend down", &a.addr.to_string()]).await;
    wait_for_line(&p.fulcrum, &["backend down", &b.addr.to_string()]).await;
    let at_once = Duration::from_secs(2);
    let (status, _) = tokio::time::timeout(at_once, http_get(p.http))
        .await
        .expect("503 must come at once")
        .expect("request");
    assert_eq!(status, 503, "no healthy backend: http answers 503");
    let body = tokio::time::timeout(at_once, tcp_session(p.tcp))
        .await
        .expect("the tcp client must be closed at once")
        .unwrap_or_default();
    assert_eq!(body, "", "no healthy backend: tcp closes without an answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passive_backend_gets_a_trial_after_interval_and_returns() {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    let p = start(&[&a, &b], "none", "");
    let b_addr = b.addr.to_string();
    b.stop();
    // Live failures (refused connects) mark it down; every request still succeeds.
    for _ in 0..10 {
        let (status, body) = http_get(p.http).await.expect("request");
        assert_eq!(
            (status, body.as_str()),
            (200, "a"),
            "failover to the live backend"
        );
    }
    wait_for_line(&p.fulcrum, &["backend down", &b_addr]).await;
    b.restart().await;
    wait_for_async("a trial request to bring the backend back", || async {
        let (_, body) = http_get(p.http).await.ok()?;
        (body == "b").then_some(())
    })
    .await;
    wait_for_line(&p.fulcrum, &["backend up", &b_addr]).await;
}

/// The share of requests `b` gets rises over consecutive windows after it comes back.
async fn slow_start_grows_the_share(balance: &str) {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    let extra = format!("balance = \"{balance}\"\nslow_start = \"2s\"");
    let p = start(&[&a, &b], "http", &extra);
    let b_addr = b.addr.to_string();
    b.set_health(503);
    wait_for_line(&p.fulcrum, &["backend down", &b_addr]).await;
    b.set_health(200);
    wait_for_line(&p.fulcrum, &["backend up", &b_addr]).await;
    const WINDOW: usize = 40;
    let mut shares = Vec::new();
    let started = Instant::now();
    loop {
        let mut to_b = 0;
        for _ in 0..WINDOW {
            let (status, body) = http_get(p.http).await.expect("request");
            assert_eq!(status, 200);
            to_b += usize::from(body == "b");
        }
        let share = to_b as f64 / WINDOW as f64;
        shares.push(share);
        if share >= 0.45 {
            break;
        }
        assert!(
            started.elapsed() < support::DEADLINE,
            "b's share never reached its full weight: {shares:?}"
        );
    }
    assert!(
        shares.len() >= 2 && shares[0] < 0.3,
        "a returning backend starts with a small share: {shares:?}"
    );
    assert!(
        shares.last() > shares.first(),
        "the share must grow over slow start: {shares:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_grows_the_share_of_a_returning_backend_round_robin() {
    slow_start_grows_the_share("round_robin").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_grows_the_share_of_a_returning_backend_least_load() {
    slow_start_grows_the_share("least_load").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_starts_checks_of_added_backends_and_keeps_the_state_of_kept_ones() {
    let a = HealthBackend::start("a").await;
    let b = HealthBackend::start("b").await;
    let c = HealthBackend::start("c").await;
    let p = start(&[&a, &b], "http", "");
    b.set_health(503);
    wait_for_line(&p.fulcrum, &["backend down", &b.addr.to_string()]).await;
    c.set_health(503);
    let (http, tcp) = (p.http.port(), p.tcp.port());
    std::fs::write(
        &p.fulcrum.config,
        config(http, tcp, &[&a, &b, &c], "http", "").to_string(),
    )
    .expect("rewrite config");
    p.fulcrum.signal(libc::SIGHUP);
    p.fulcrum.wait_for_log("configuration reloaded");
    wait_for_line(&p.fulcrum, &["backend down", &c.addr.to_string()]).await;
    for _ in 0..20 {
        let (status, body) = http_get(p.http).await.expect("request");
        assert_eq!(
            (status, body.as_str()),
            (200, "a"),
            "a kept backend stays down across a reload; an added one is checked"
        );
    }
    let log = p.fulcrum.log();
    assert_eq!(
        log.matches("backend down").count(),
        2,
        "no backend goes down twice or wrongly: {log}"
    );
    assert!(!log.contains("backend up"), "nothing came up: {log}");
}
