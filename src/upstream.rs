//! The live state of upstreams: each backend's address, weight, health and counters, and the
//! balancer that picks among them. Built from the validated config and the addresses its host
//! names resolved to (`resolve`); a backend that stays across a reload or a re-resolution
//! (same upstream, same label, same dial address) is carried over with its state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

use arc_swap::ArcSwapOption;

use crate::balance::{Balancer, FULL, Policy};
use crate::config;
use crate::resolve::Resolved;

mod failure;
mod link;
pub mod pool;
mod tracker;

pub use failure::Failure;
use pool::Pool;
pub use tracker::Tracker;

/// Slow start begins at 10% of a backend's weight (`slow_start` in conf/fulcrum.toml), in
/// permille.
pub const SLOW_START_FLOOR: u32 = 100;

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
    pub weight: AtomicU32,
    /// Outstanding requests (http) or open sessions (tcp): the load numerator R.
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    healthy: AtomicBool,
    /// Whether an active check has ever passed: readiness waits for one.
    passed_check: AtomicBool,
    /// Consecutive outcomes, turned into up/down decisions by the health thresholds.
    pub tracker: Tracker,
    /// Idle keep-alive HTTP connections to this backend.
    pub pool: Pool,
    /// `check = "none"`: whether a down backend is open for its one trial (see `Trial`).
    trial: AtomicU8,
    /// Slow start: the share of its weight it gets now, 100..=1000; carried across a reload.
    permille: AtomicU32,
    /// Woken on every up/down change and failed trial, so the backend's checker can start a
    /// slow start or arm the next trial without polling.
    pub changed: Notify,
    /// Its place in the balancer of the running configuration. Releases and health changes
    /// go there even from a request picked before a reload, so the newest balancer's counts
    /// stay exact.
    slot: ArcSwapOption<Slot>,
    /// Cached handles of this backend's request metrics, so a request skips the registry.
    pub series: crate::metrics::BackendSeries,
}

/// A backend's balancer and index in it.
#[derive(Debug)]
struct Slot {
    balancer: Arc<Balancer>,
    index: usize,
}

impl Backend {
    /// The backend `label` of `previous` when it still dials `dial` (a name with one address
    /// keeps its label when that address changes, but is then another backend), with its
    /// weight updated; else a new one, healthy, counters at zero.
    fn carry_or_new(
        upstream: &Arc<str>,
        previous: Option<&Upstream>,
        conf: &config::BackendConf,
        label: String,
        dial: SocketAddr,
    ) -> Arc<Backend> {
        let weight = conf.weight;
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
            weight: AtomicU32::new(weight),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            passed_check: AtomicBool::new(false),
            tracker: Tracker::new(),
            pool: Pool::default(),
            trial: AtomicU8::new(Trial::Closed as u8),
            permille: AtomicU32::new(FULL),
            changed: Notify::new(),
            slot: ArcSwapOption::empty(),
            series: Default::default(),
        })
    }

    /// Runs `f` on the backend's current balancer and index.
    fn schedule(&self, f: impl FnOnce(&Balancer, usize)) {
        if let Some(slot) = &*self.slot.load() {
            f(&slot.balancer, slot.index);
        }
    }
}

/// The trial of a down backend of a `check = "none"` upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Trial {
    /// No trial: a down backend is out of the balancer.
    Closed = 0,
    /// Back in the balancer, waiting for the next pick to become the trial.
    Open = 1,
    /// Picked: out of the balancer again until the trial's outcome is recorded.
    Taken = 2,
}

impl Backend {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn has_passed_a_check(&self) -> bool {
        self.passed_check.load(Ordering::Relaxed)
    }

    pub fn trial(&self) -> Trial {
        match self.trial.load(Ordering::Relaxed) {
            1 => Trial::Open,
            2 => Trial::Taken,
            _ => Trial::Closed,
        }
    }

    /// The share of its weight it gets, in permille (slow start ramps it up).
    pub fn permille(&self) -> u32 {
        self.permille.load(Ordering::Relaxed)
    }

    /// Moves the trial from `from` to `to`; false when it was not in `from`.
    fn move_trial(&self, from: Trial, to: Trial) -> bool {
        self.trial
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// An upstream of the running configuration: its settings, backends and balancer.
#[derive(Debug)]
pub struct Upstream {
    pub conf: config::Upstream,
    pub name: Arc<str>,
    pub backends: Vec<Arc<Backend>>,
    /// Each backend's configured weight, applied to the shared `Backend` at `publish`.
    weights: Vec<u32>,
    balancer: Arc<Balancer>,
    /// `Some` when backends are reached over TLS (`[upstream.NAME.tls]`), built once here.
    pub tls: Option<crate::tls::ClientTls>,
    /// How fulcrum talks to the backends, as a number (`link`): part of the pool key.
    pub link: u64,
}

/// One request or session placed on a backend. Dropping it ends the in-flight unit, so no
/// early return can leak load (the balancer's count and the backend's gauge move together).
#[derive(Debug)]
pub struct Lease {
    pub backend: Arc<Backend>,
    pub index: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.schedule(|b, i| b.release(i));
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors building an upstream's live state (raised by `resolve::lookup` too).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl Upstream {
    /// Builds the live upstream from its config, a host name standing for every address it
    /// has in `resolved`; backends found in `previous` (same label and dial address) are
    /// carried over with their health and counters. No DNS here: a name of an upstream with
    /// `resolve_interval = 0` that `resolved` lacks is an error, one of an upstream that
    /// re-resolves has no backends until it resolves (zero backends: 503, tcp closes).
    pub fn build(
        conf: &config::Upstream,
        previous: Option<&Upstream>,
        resolved: &Resolved,
    ) -> Result<Upstream, BuildError> {
        let name: Arc<str> = Arc::from(conf.name.as_str());
        let mut backends = Vec::with_capacity(conf.backends.len());
        let mut weights = Vec::with_capacity(conf.backends.len());
        for b in &conf.backends {
            let expanded = crate::resolve::expand(b, resolved);
            if expanded.is_empty() && conf.resolve_interval.is_zero() {
                return Err(BuildError::Resolve(crate::resolve::ResolveError {
                    upstream: conf.name.clone(),
                    addr: b.addr.clone(),
                    reason: "not resolved".into(),
                }));
            }
            for (label, dial) in expanded {
                backends.push(Backend::carry_or_new(&name, previous, b, label, dial));
                weights.push(b.weight);
            }
        }
        let policy = match conf.balance {
            config::Balance::RoundRobin => Policy::RoundRobin,
            config::Balance::LeastLoad => Policy::LeastLoad,
        };
        let balancer = Arc::new(Balancer::new(policy, &weights));
        let tls = match &conf.tls {
            Some(t) => Some(crate::tls::ClientTls::build(&conf.name, t)?),
            None => None,
        };
        let upstream = Upstream {
            link: link::of(conf, previous),
            conf: conf.clone(),
            name,
            backends,
            weights,
            balancer,
            tls,
        };
        upstream.sync_balancer();
        Ok(upstream)
    }

    /// Copies each backend's live state into this upstream's balancer: down (unless open for
    /// a trial), any slow start in progress, and requests still open from before a reload
    /// (least load must count them; their release lands here through the slot).
    fn sync_balancer(&self) {
        for (i, b) in self.backends.iter().enumerate() {
            self.balancer
                .set_healthy(i, b.is_healthy() || b.trial() == Trial::Open);
            self.balancer.set_permille(i, b.permille());
            self.balancer
                .set_in_flight(i, b.in_flight.load(Ordering::Relaxed));
        }
    }

    /// Makes this upstream the running one for its backends: their weights, and their slot
    /// pointing at this balancer. State that changed since the build (a backend that went
    /// down or up, requests that ended) is copied again once the slots point here, so no
    /// change is lost in between.
    pub fn publish(&self) {
        for (index, b) in self.backends.iter().enumerate() {
            if let Some(&w) = self.weights.get(index) {
                b.weight.store(w, Ordering::Relaxed);
            }
            b.slot.store(Some(Arc::new(Slot {
                balancer: Arc::clone(&self.balancer),
                index,
            })));
        }
        self.sync_balancer();
    }

    /// Picks a healthy backend not in `tried`; `None` when there is none. A down backend open
    /// for its trial is picked once: the pick takes it out of the balancer again.
    pub fn pick(&self, tried: &[usize]) -> Option<Lease> {
        let mut skip: Option<Vec<usize>> = None;
        let (index, backend) = loop {
            let excluded = skip.as_deref().unwrap_or(tried);
            let index = if excluded.is_empty() {
                self.balancer.pick()?
            } else {
                self.balancer.pick_excluding(excluded)?
            };
            let Some(backend) = self.backends.get(index) else {
                self.balancer.release(index);
                return None;
            };
            if backend.is_healthy() {
                break (index, backend);
            }
            if backend.move_trial(Trial::Open, Trial::Taken) {
                self.balancer.set_healthy(index, false);
                // The checker re-opens a trial that is never decided (a client that went
                // away, a session that neither failed nor ended): it must know it was taken.
                backend.changed.notify_one();
                break (index, backend);
            }
            // Another request took the trial a moment ago: look elsewhere.
            self.balancer.release(index);
            skip.get_or_insert_with(|| tried.to_vec()).push(index);
        };
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            backend: Arc::clone(backend),
            index,
        })
    }

    /// Marks backend `index` up or down. Returns true when that changed its state; a change
    /// closes any trial, starts a slow start (when configured) and wakes the checker. The
    /// caller logs it (`set_up`, `set_down` do).
    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        let Some(backend) = self.backends.get(index) else {
            return false;
        };
        let changed = backend.healthy.swap(healthy, Ordering::AcqRel) != healthy;
        if changed {
            backend.trial.store(Trial::Closed as u8, Ordering::Release);
            // The share is lowered before the backend is scheduled, so no pick sees it at full
            // weight; the checker ramps it from here.
            if healthy && !self.conf.slow_start.is_zero() {
                self.set_permille(index, SLOW_START_FLOOR);
            }
            backend.schedule(|b, i| b.set_healthy(i, healthy));
            backend.changed.notify_one();
        }
        changed
    }

    /// Slow start: backend `index` gets `permille` (1..=1000) of its weight.
    pub fn set_permille(&self, index: usize, permille: u32) {
        let permille = permille.clamp(1, FULL);
        if let Some(b) = self.backends.get(index) {
            b.permille.store(permille, Ordering::Relaxed);
            b.schedule(|b, i| b.set_permille(i, permille));
        }
    }

    /// `check = "none"`: puts down backend `index` back in the balancer for one trial.
    pub fn open_trial(&self, index: usize) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        if b.is_healthy() {
            return;
        }
        // A trial taken but never decided (a session that neither failed nor ended) must
        // not keep the backend down for good: it is opened again.
        if b.move_trial(Trial::Closed, Trial::Open) || b.move_trial(Trial::Taken, Trial::Open) {
            b.schedule(|b, i| b.set_healthy(i, true));
        }
    }

    /// Ends any trial of backend `index` (its upstream no longer has `check = "none"`): active
    /// checks alone bring it back.
    pub fn close_trial(&self, index: usize) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        if b.move_trial(Trial::Open, Trial::Closed) && !b.is_healthy() {
            b.schedule(|b, i| b.set_healthy(i, false));
        }
        b.move_trial(Trial::Taken, Trial::Closed);
    }

    /// Marks backend `index` down and logs why, if it was up.
    pub fn set_down(&self, index: usize, reason: &str) {
        if self.set_healthy(index, false)
            && let Some(b) = self.backends.get(index)
        {
            tracing::info!(upstream = %self.name, addr = %b.addr, reason, "backend down");
            crate::metrics::backend_healthy(&self.name, &b.addr, false);
        }
    }

    /// Marks backend `index` up and logs it, if it was down.
    pub fn set_up(&self, index: usize) {
        if self.set_healthy(index, true)
            && let Some(b) = self.backends.get(index)
        {
            tracing::info!(upstream = %self.name, addr = %b.addr, "backend up");
            crate::metrics::backend_healthy(&self.name, &b.addr, true);
        }
    }

    pub fn has_healthy_backend(&self) -> bool {
        self.backends.iter().any(|b| b.is_healthy())
    }
}

/// Every upstream of a configuration, by name.
pub type Upstreams = HashMap<String, Arc<Upstream>>;

/// Builds all upstreams of `config`, carrying backends over from `previous`.
pub fn build_all(
    config: &config::Config,
    previous: Option<&Upstreams>,
    resolved: &Resolved,
) -> Result<Upstreams, BuildError> {
    let mut out = HashMap::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        let prev = previous.and_then(|p| p.get(&u.name)).map(|a| &**a);
        out.insert(
            u.name.clone(),
            Arc::new(Upstream::build(u, prev, resolved)?),
        );
    }
    Ok(out)
}

impl Upstream {
    /// Passive health: a live connection or response to backend `index` failed. Enough in a
    /// row mark it down; a failed trial keeps it down for another `interval`. Called by
    /// `Upstream::fail`, which also counts and logs it (and by the health unit tests).
    pub(crate) fn record_failure(&self, index: usize, kind: &'static str) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        b.failures.fetch_add(1, Ordering::Relaxed);
        if b.move_trial(Trial::Taken, Trial::Closed) {
            tracing::debug!(upstream = %self.name, addr = %b.addr, reason = kind, "trial failed");
            b.changed.notify_one();
        }
        self.record(index, false, kind);
    }

    /// A live exchange with backend `index` succeeded: the failure count starts again, and a
    /// trial that succeeds marks the backend up.
    pub fn record_success(&self, index: usize) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        b.tracker.reset_failures();
        if b.trial() == Trial::Taken {
            self.set_up(index);
        }
    }

    /// The outcome of an active check of backend `index`.
    pub fn record_check(&self, index: usize, pass: bool, reason: &str) {
        if let Some(b) = self.backends.get(index) {
            crate::metrics::health_check(&self.name, &b.addr, pass);
            if pass {
                b.passed_check.store(true, Ordering::Relaxed);
            }
        }
        self.record(index, pass, reason);
    }

    /// Feeds one outcome to the thresholds and applies the change they decide.
    fn record(&self, index: usize, ok: bool, reason: &str) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        let h = &self.conf.health;
        match b.tracker.record(
            ok,
            b.is_healthy(),
            h.unhealthy_threshold,
            h.healthy_threshold,
        ) {
            Some(true) => self.set_up(index),
            Some(false) => self.set_down(index, reason),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use std::path::Path;

    fn config(weights: &str) -> Arc<config::Config> {
        let text = format!(
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
             upstream = \"app\"\n\n[upstream.app]\nbalance = \"least_load\"\nbackends = [{weights}]\n"
        );
        Arc::new(config::Config::from_toml(&text, Path::new("t.toml")).expect("valid config"))
    }

    #[test]
    fn in_flight_requests_carry_over_a_reload_for_least_load() {
        let both = "{ addr = \"127.0.0.1:1\" }, { addr = \"127.0.0.1:2\" }";
        let old = Snapshot::build(config(both), None, Resolved::new()).expect("build");
        old.publish();
        let lease = old.upstreams["app"].pick(&[]).expect("pick");
        let busy = lease.index;
        let new = Snapshot::build(config(both), Some(&old), Resolved::new()).expect("rebuild");
        new.publish();
        let app = &new.upstreams["app"];
        let next = app.pick(&[]).expect("pick after reload");
        assert_ne!(
            next.index, busy,
            "least_load must see the request still open from before the reload"
        );
        drop(next);
        drop(lease);
        assert_eq!(
            app.balancer.in_flight(busy),
            0,
            "a release after the reload lands in the running balancer"
        );
    }
}
