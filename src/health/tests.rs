//! The checker loop on a paused tokio clock with a fake probe: timing of checks, thresholds,
//! trials of `check = "none"`, slow start, and the registry across a reload.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::checker::{jittered, share};
use super::{Checkers, Probe};
use crate::config::Config;
use crate::snapshot::{Live, Snapshot};
use crate::upstream::{Trial, Upstream};

const A: &str = "127.0.0.1:9001";
const B: &str = "127.0.0.1:9002";

fn config(backends: &[&str], extra: &str) -> Arc<Config> {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    let text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
         upstream = \"app\"\n\n[upstream.app]\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    );
    Arc::new(Config::from_toml(&text, Path::new("t.toml")).expect("test config is valid"))
}

/// The running snapshot and its checkers, as the server holds them.
struct Harness {
    state: Arc<Live>,
    checkers: Checkers,
}

fn shared(config: Arc<Config>, probe: Probe) -> Harness {
    let snapshot = Snapshot::build(config, None, Default::default()).expect("build snapshot");
    snapshot.publish();
    Harness {
        state: Arc::new(Live::from_pointee(snapshot)),
        checkers: Checkers::with_probe(probe),
    }
}

/// A probe that records when each backend was checked and fails while `failing` is set.
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<(String, Instant)>>>,
    failing: Arc<AtomicBool>,
}

impl Fake {
    fn probe(&self) -> Probe {
        let me = self.clone();
        Arc::new(move |target, _| {
            me.calls
                .lock()
                .unwrap()
                .push((target.label.to_string(), Instant::now()));
            let fail = me.failing.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    Err("fake: refused".into())
                } else {
                    Ok(())
                }
            })
        })
    }

    fn times(&self, addr: &str) -> Vec<Instant> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(a, _)| a == addr)
            .map(|(_, t)| *t)
            .collect()
    }
}

fn app(shared: &Harness) -> Arc<Upstream> {
    Arc::clone(&shared.state.load().upstreams["app"])
}

#[test]
fn slow_start_share_grows_from_ten_percent_to_full() {
    let total = Duration::from_secs(10);
    assert_eq!(share(Duration::ZERO, total), 100, "starts at 10%");
    assert_eq!(share(Duration::from_secs(5), total), 550, "halfway is 55%");
    assert_eq!(share(total, total), 1000, "full weight at the end");
    assert_eq!(share(Duration::from_secs(99), total), 1000);
    assert_eq!(share(Duration::ZERO, Duration::ZERO), 1000, "no slow start");
}

#[test]
fn jitter_stays_within_ten_percent_and_spreads_checks() {
    let interval = Duration::from_secs(2);
    let mut seen = std::collections::HashSet::new();
    for round in 0..200 {
        for addr in [A, B] {
            let d = jittered(interval, addr, round);
            assert!(
                d >= interval.mul_f64(0.9) && d <= interval.mul_f64(1.1),
                "jitter must stay within ±10%: {d:?}"
            );
            seen.insert(d);
        }
    }
    assert!(seen.len() > 100, "jitter must vary by backend and round");
}

#[tokio::test(start_paused = true)]
async fn first_check_at_start_then_every_interval_with_jitter() {
    let fake = Fake::default();
    let s = shared(
        config(&[A], "[upstream.app.health]\ninterval = \"1s\""),
        fake.probe(),
    );
    let t0 = Instant::now();
    s.checkers.reconcile(&s.state);
    sleep(Duration::from_millis(5500)).await;
    let times = fake.times(A);
    assert_eq!(times.first(), Some(&t0), "the first check runs at start");
    assert!(times.len() >= 5, "a check every interval: {}", times.len());
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(900) && gap <= Duration::from_millis(1100),
            "checks must be interval ±10% apart: {gap:?}"
        );
    }
    s.checkers.stop_all();
}

#[tokio::test(start_paused = true)]
async fn failing_checks_mark_down_at_the_threshold_and_passes_mark_up() {
    let fake = Fake::default();
    fake.failing.store(true, Ordering::SeqCst);
    let s = shared(
        config(
            &[A, B],
            "[upstream.app.health]\ninterval = \"1s\"\nunhealthy_threshold = 3\nhealthy_threshold = 2",
        ),
        fake.probe(),
    );
    s.checkers.reconcile(&s.state);
    // Checks at 0, ~1 and ~2 s (±10% each): the third failure is at 1.8..=2.2 s.
    sleep(Duration::from_millis(1700)).await;
    assert!(
        app(&s).backends[0].is_healthy(),
        "two failures are below the threshold"
    );
    sleep(Duration::from_millis(600)).await;
    assert!(
        !app(&s).backends[0].is_healthy(),
        "the third failure marks down"
    );
    assert!(
        !app(&s).has_healthy_backend(),
        "both backends fail their checks"
    );
    assert!(
        app(&s).pick(&[]).is_none(),
        "a down backend is never picked"
    );
    fake.failing.store(false, Ordering::SeqCst);
    // Passes at 2.7..=3.3 s and 3.6..=4.4 s.
    sleep(Duration::from_millis(1200)).await;
    assert!(
        !app(&s).backends[0].is_healthy(),
        "one pass is below the threshold"
    );
    sleep(Duration::from_millis(1000)).await;
    assert!(app(&s).backends[0].is_healthy(), "the second pass marks up");
    assert!(app(&s).pick(&[]).is_some(), "an up backend is picked again");
    s.checkers.stop_all();
}

#[tokio::test(start_paused = true)]
async fn a_live_success_resets_the_failure_count() {
    let s = shared(
        config(
            &[A, B],
            "[upstream.app.health]\ncheck = \"none\"\nunhealthy_threshold = 2",
        ),
        Fake::default().probe(),
    );
    let up = app(&s);
    up.record_failure(0, "connect");
    up.record_success(0);
    up.record_failure(0, "connect");
    assert!(
        up.backends[0].is_healthy(),
        "a success in between restarts the count"
    );
    up.record_failure(0, "connect");
    assert!(
        !up.backends[0].is_healthy(),
        "two failures in a row mark down"
    );
}

#[tokio::test(start_paused = true)]
async fn check_none_gives_a_down_backend_one_trial_after_interval() {
    let s = shared(
        config(
            &[A, B],
            "[upstream.app.health]\ncheck = \"none\"\ninterval = \"1s\"\nunhealthy_threshold = 1",
        ),
        Fake::default().probe(),
    );
    s.checkers.reconcile(&s.state);
    let up = app(&s);
    up.record_failure(0, "connect");
    assert!(!up.backends[0].is_healthy());
    sleep(Duration::from_millis(900)).await;
    let picks: Vec<usize> = (0..10)
        .filter_map(|_| up.pick(&[]).map(|l| l.index))
        .collect();
    assert!(!picks.contains(&0), "no trial before interval: {picks:?}");

    sleep(Duration::from_millis(200)).await;
    assert_eq!(
        up.backends[0].trial(),
        Trial::Open,
        "a trial after interval"
    );
    let leases: Vec<_> = (0..10).filter_map(|_| up.pick(&[])).collect();
    let trials: Vec<_> = leases.iter().filter(|l| l.index == 0).collect();
    assert_eq!(trials.len(), 1, "exactly one request is the trial");
    up.record_failure(0, "connect");
    drop(leases);
    assert!(!up.backends[0].is_healthy(), "a failed trial keeps it down");

    sleep(Duration::from_millis(900)).await;
    assert_eq!(
        up.backends[0].trial(),
        Trial::Closed,
        "down for another interval"
    );
    sleep(Duration::from_millis(200)).await;
    let lease = (0..3)
        .filter_map(|_| up.pick(&[]))
        .find(|l| l.index == 0)
        .expect("the next trial is picked");
    up.record_success(lease.index);
    assert!(
        up.backends[0].is_healthy(),
        "a successful trial marks it up"
    );
    s.checkers.stop_all();
}

#[tokio::test(start_paused = true)]
async fn check_none_trial_also_for_the_only_backend() {
    let s = shared(
        config(
            &[A],
            "[upstream.app.health]\ncheck = \"none\"\ninterval = \"1s\"\nunhealthy_threshold = 1",
        ),
        Fake::default().probe(),
    );
    s.checkers.reconcile(&s.state);
    let up = app(&s);
    up.record_failure(0, "reset");
    assert!(up.pick(&[]).is_none(), "the only backend is down");
    sleep(Duration::from_millis(1100)).await;
    let trial = up.pick(&[]).expect("the trial goes to the only backend");
    assert!(up.pick(&[]).is_none(), "one trial at a time");
    up.record_success(trial.index);
    assert!(up.pick(&[]).is_some(), "up after a successful trial");
    s.checkers.stop_all();
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_returning_backend_from_ten_percent_to_full() {
    let s = shared(
        config(
            &[A, B],
            "slow_start = \"2s\"\n[upstream.app.health]\ncheck = \"none\"\ninterval = \"1s\"\n\
             unhealthy_threshold = 1",
        ),
        Fake::default().probe(),
    );
    s.checkers.reconcile(&s.state);
    let up = app(&s);
    up.record_failure(0, "connect");
    sleep(Duration::from_millis(1100)).await;
    let lease = (0..3)
        .filter_map(|_| up.pick(&[]))
        .find(|l| l.index == 0)
        .expect("trial");
    up.record_success(lease.index);
    let b = &up.backends[0];
    assert_eq!(b.permille(), 100, "a returning backend starts at 10%");
    let mut last = 100;
    let mut rises = 0;
    for _ in 0..25 {
        sleep(Duration::from_millis(100)).await;
        let p = b.permille();
        assert!(p >= last, "the share never falls during slow start");
        rises += usize::from(p > last);
        last = p;
    }
    assert!(rises >= 10, "the share grows in steps: {rises}");
    assert_eq!(last, 1000, "full weight after slow_start");
    s.checkers.stop_all();
}

#[tokio::test(start_paused = true)]
async fn reconcile_keeps_running_checkers_and_follows_added_and_removed_backends() {
    const C: &str = "127.0.0.1:9003";
    let fake = Fake::default();
    let s = shared(
        config(&[A, B], "[upstream.app.health]\ninterval = \"1s\""),
        fake.probe(),
    );
    s.checkers.reconcile(&s.state);
    sleep(Duration::from_millis(10)).await;
    assert_eq!((fake.times(A).len(), fake.times(B).len()), (1, 1));

    // A reload: B removed, C added, A stays (and keeps its Backend).
    let kept = Arc::clone(&app(&s).backends[0]);
    let next = Snapshot::build(
        config(&[A, C], "[upstream.app.health]\ninterval = \"1s\""),
        Some(&s.state.load()),
        Default::default(),
    )
    .expect("build");
    next.publish();
    s.state.store(Arc::new(next));
    s.checkers.reconcile(&s.state);
    assert!(
        Arc::ptr_eq(&kept, &app(&s).backends[0]),
        "A is carried over"
    );
    sleep(Duration::from_millis(10)).await;
    assert_eq!(
        fake.times(A).len(),
        1,
        "a kept backend gets no new first check"
    );
    assert_eq!(fake.times(C).len(), 1, "a new backend is checked at once");
    assert_eq!(s.checkers.len(), 2);
    assert!(!s.checkers.contains("app", B), "B's checker stopped");

    sleep(Duration::from_millis(3000)).await;
    assert_eq!(
        fake.times(B).len(),
        1,
        "a removed backend is not checked again"
    );
    assert!(fake.times(A).len() >= 3, "A keeps being checked");
    s.checkers.stop_all();
    assert!(s.checkers.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_checker_acts_on_the_upstream_of_the_current_snapshot() {
    let fake = Fake::default();
    fake.failing.store(true, Ordering::SeqCst);
    let health = "[upstream.app.health]\ninterval = \"1s\"\nunhealthy_threshold = 2";
    let s = shared(config(&[A, B], health), fake.probe());
    s.checkers.reconcile(&s.state);
    sleep(Duration::from_millis(10)).await;
    // A reload rebuilds the upstream (new balancer) around the same backends.
    let next = Snapshot::build(
        config(&[B, A], health),
        Some(&s.state.load()),
        Default::default(),
    )
    .expect("build");
    next.publish();
    s.state.store(Arc::new(next));
    s.checkers.reconcile(&s.state);
    sleep(Duration::from_millis(1200)).await;
    let up = app(&s);
    assert!(
        up.pick(&[]).is_none(),
        "the second failure must take both backends out of the new balancer"
    );
    s.checkers.stop_all();
}
