//! One backend of an upstream: where it is, its counters and idle connections, and its
//! member of the upstream's balancer, which holds its scheduling state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use super::Upstream;
use super::multiplex::Multiplex;
use super::pool::Pool;
use super::tracker::Tracker;
use crate::balance::{Balancer, FULL, MemberId, State, Trial};
use crate::config;

/// One backend of one upstream, shared by every listener that uses the upstream.
#[derive(Debug)]
pub struct Backend {
    /// The upstream's name, for metric labels and logs.
    pub upstream: Arc<str>,
    /// The `backend` label and the backend's key across rebuilds: the addr as written, or
    /// `WRITTEN/IP:PORT` for one of several addresses of a host name (see `resolve`).
    pub addr: Arc<str>,
    /// Where fulcrum connects.
    pub dial: SocketAddr,
    /// The backend's `addr` exactly as written in the config (also for a name that stands for
    /// several backends): the `Host` of http checks.
    pub written: Arc<str>,
    /// The host part of `written` (no port, no brackets): the TLS name when the upstream sets
    /// no `server_name`.
    pub host: Arc<str>,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Whether an active check has ever passed: readiness waits for one.
    pub(super) passed_check: AtomicBool,
    /// Consecutive outcomes, turned into up/down decisions by the health thresholds.
    pub tracker: Tracker,
    /// Idle keep-alive HTTP/1.1 connections to this backend.
    pub pool: Pool,
    /// Shared HTTP/2 connections to this backend.
    pub multiplex: Multiplex,
    /// Woken on every up/down change and failed trial, so the backend's checker can start a
    /// slow start or arm the next trial without polling.
    pub changed: Notify,
    /// Its upstream's balancer (the same across reloads) and its member there: the one place
    /// its scheduling state lives, for picks, releases and every reader alike.
    pub(super) balancer: Arc<Balancer>,
    pub(super) id: MemberId,
    /// Cached handles of this backend's request metrics, so a request skips the registry.
    pub series: crate::metrics::BackendSeries,
}

impl Backend {
    /// The backend `label` of `previous` when it still dials `dial` (a name with one address
    /// keeps its label when that address changes, but is then another backend); else a new
    /// member of `balancer`, counters at zero (it joins the schedule at `publish`).
    pub(super) fn carry_or_new(
        upstream: &Arc<str>,
        previous: Option<&Upstream>,
        balancer: &Arc<Balancer>,
        conf: &config::BackendConf,
        label: String,
        dial: SocketAddr,
    ) -> Arc<Backend> {
        let kept = previous.and_then(|p| {
            p.backends
                .iter()
                .find(|old| *old.addr == *label && old.dial == dial)
        });
        if let Some(old) = kept {
            // Its weight changes at `publish`: a reload that fails later must not touch it.
            return Arc::clone(old);
        }
        Arc::new(Backend {
            upstream: Arc::clone(upstream),
            addr: Arc::from(label),
            dial,
            written: Arc::from(conf.addr.as_str()),
            host: Arc::from(conf.host.as_str()),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            passed_check: AtomicBool::new(false),
            tracker: Tracker::new(),
            pool: Pool::default(),
            multiplex: Multiplex::default(),
            changed: Notify::new(),
            balancer: Arc::clone(balancer),
            id: MemberId::fresh(),
            series: Default::default(),
        })
    }
}

/// What a backend that is no member of its balancer reports: one of a build not published
/// (yet) reads as it will join, up, idle, at full share; its weight is not scheduled yet.
const NOT_A_MEMBER: State = State {
    weight: 0,
    permille: FULL,
    healthy: true,
    trial: Trial::Closed,
    in_flight: 0,
};

impl Backend {
    /// Its scheduling state, read from its balancer in one step.
    pub fn state(&self) -> State {
        self.balancer.state(self.id).unwrap_or(NOT_A_MEMBER)
    }

    pub fn is_healthy(&self) -> bool {
        self.state().healthy
    }

    pub fn has_passed_a_check(&self) -> bool {
        self.passed_check.load(Ordering::Relaxed)
    }

    pub fn trial(&self) -> Trial {
        self.state().trial
    }

    /// The share of its weight it gets, in permille (slow start ramps it up).
    pub fn permille(&self) -> u32 {
        self.state().permille
    }

    /// The weight it is scheduled with.
    pub fn weight(&self) -> u32 {
        self.state().weight
    }

    /// Outstanding requests (http) or open sessions (tcp): the load numerator R.
    pub fn in_flight(&self) -> u64 {
        self.state().in_flight
    }
}
