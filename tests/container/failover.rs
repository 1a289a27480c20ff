//! A backend container that stops answering, under steady load: paused (`docker pause`:
//! packets reach a frozen process, nothing is refused), stopped, or disconnected from the
//! network. fulcrum must mark it down by its health checks' timeout and move the traffic
//! to the other backend, then take it back once it returns.
//!
//! What fulcrum does today with a request already sent to a backend that then stops
//! answering: it waits `response_timeout` and answers 504; it does not send an idempotent
//! request elsewhere after a timeout (only after a refused connect or a connection broken
//! before the response). A pause or a disconnect can catch requests in that state, so their
//! tests allow 504s sent before the backend was marked down, and none after;
//! `paused_backend_costs_no_idempotent_request` states the stricter rule and is ignored
//! until the proxy retries such requests.

use std::time::{Duration, Instant};

use crate::docker::docker;
use crate::load::{Load, Report};
use crate::support::wait_for;
use crate::{TwoBackends, healthy, skip, wait_served};

#[derive(Clone, Copy, Debug)]
enum Fault {
    Pause,
    Stop,
    Disconnect,
}

/// When it happened, and the load's report.
struct Run {
    fault: Instant,
    down: Instant,
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
        down: t_down,
        report,
    }
}

/// Failures allowed: none after the backend was marked down, and before it only the 504 of
/// a request that had reached it and then timed out.
fn assert_only_timeouts_before_down(run: &Run, what: &str) {
    for f in run.report.failures() {
        assert!(
            f.sent < run.down && f.result.as_ref().unwrap_err().starts_with("status 504"),
            "{what}: a request may fail only with 504 before the backend is marked down: {}",
            run.report.describe_failures(run.fault)
        );
    }
}

#[test]
fn stopped_backend_container_is_marked_down_and_back_with_no_failed_request() {
    if skip() {
        return;
    }
    let run = fault_and_recover(Fault::Stop);
    assert!(
        run.report.failures().is_empty(),
        "a stopped backend must fail no idempotent request: {}",
        run.report.describe_failures(run.fault)
    );
}

#[test]
fn paused_backend_container_is_marked_down_by_timeout_and_traffic_moves_on() {
    if skip() {
        return;
    }
    let run = fault_and_recover(Fault::Pause);
    assert_only_timeouts_before_down(&run, "a paused backend");
}

#[test]
fn disconnected_backend_container_is_marked_down_and_back() {
    if skip() {
        return;
    }
    let run = fault_and_recover(Fault::Disconnect);
    assert_only_timeouts_before_down(&run, "a disconnected backend");
}

#[test]
#[ignore = "fulcrum answers 504 to an idempotent request whose backend times out; no retry"]
fn paused_backend_costs_no_idempotent_request() {
    let run = fault_and_recover(Fault::Pause);
    assert!(
        run.report.failures().is_empty(),
        "a paused backend must fail no idempotent request: {}",
        run.report.describe_failures(run.fault)
    );
}
