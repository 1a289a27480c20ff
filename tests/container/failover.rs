//! A backend container that stops answering, under steady load: paused (`docker pause`:
//! packets reach a frozen process, nothing is refused), stopped, or disconnected from the
//! network. fulcrum must mark it down by its health checks' timeout and move the traffic
//! to the other backend, then take it back once it returns.
//!
//! A request already sent to a backend that then stops answering waits `response_timeout`
//! and, being idempotent and bodiless, is sent to the other backend: no request fails.

use std::time::{Duration, Instant};

use crate::docker::docker;
use crate::load::{Load, Report};
use crate::support::wait_for;
use crate::{TwoBackends, healthy, one_at_a_time, skip, wait_served};

#[derive(Clone, Copy, Debug)]
enum Fault {
    Pause,
    Stop,
    Disconnect,
}

/// When it happened, and the load's report.
struct Run {
    fault: Instant,
    report: Report,
}

/// Load, the fault on b1, b1 marked down, b2 alone serving, b1 back and serving again.
fn fault_and_recover(fault: Fault) -> Run {
    let s = TwoBackends::start(&format!("{fault:?}").to_lowercase(), 1, 1, "0s");
    let (b1, b2) = (s.b1.name.as_str(), s.b2.name.as_str());
    let label = format!("{b1}:8080");
    let load = Load::start(s.web, 3, Duration::from_millis(10));
    wait_served(&load, b1, Instant::now(), 10);
    let t_fault = Instant::now();
    match fault {
        Fault::Pause => docker(&["pause", b1]),
        Fault::Stop => docker(&["stop", "-t", "5", b1]),
        Fault::Disconnect => docker(&["network", "disconnect", &s.net.name, b1]),
    };
    wait_for(&format!("{b1} to be marked down after {fault:?}"), || {
        (healthy(s.admin, &label) == Some(false)).then_some(())
    });
    let t_down = Instant::now();
    wait_served(&load, b2, t_down, 30);
    let t_heal = Instant::now();
    match fault {
        Fault::Pause => docker(&["unpause", b1]),
        Fault::Stop => docker(&["start", b1]),
        Fault::Disconnect => docker(&["network", "connect", &s.net.name, b1]),
    };
    wait_served(&load, b1, t_heal, 10);
    let report = load.stop();
    eprintln!(
        "{fault:?}: marked down after {:?}; {} requests, {} failed",
        t_down - t_fault,
        report.outcomes.len(),
        report.failures().len()
    );
    Run {
        fault: t_fault,
        report,
    }
}

/// No idempotent request fails, whatever the fault: each is sent elsewhere.
fn assert_no_failure(run: &Run, what: &str) {
    assert!(
        run.report.failures().is_empty(),
        "{what} must fail no idempotent request: {}",
        run.report.describe_failures(run.fault)
    );
}

#[test]
fn stopped_backend_container_is_marked_down_and_back_with_no_failed_request() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    assert_no_failure(&fault_and_recover(Fault::Stop), "a stopped backend");
}

#[test]
fn paused_backend_container_is_marked_down_by_timeout_and_traffic_moves_on() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    assert_no_failure(&fault_and_recover(Fault::Pause), "a paused backend");
}

#[test]
fn disconnected_backend_container_is_marked_down_and_back() {
    if skip() {
        return;
    }
    let _alone = one_at_a_time();
    assert_no_failure(
        &fault_and_recover(Fault::Disconnect),
        "a disconnected backend",
    );
}
