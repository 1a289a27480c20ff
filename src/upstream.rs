//! The live state of upstreams: each backend's address, weight, health and counters, and the
//! balancer that picks among them. Built from the validated config and the addresses its host
//! names resolved to (`resolve`); a backend that stays across a reload or a re-resolution
//! (same upstream, same label, same dial address) is carried over with its state.
//!
//! A backend's scheduling state (weight, health, trial, slow-start share, in flight) lives in
//! one place: its member of the upstream's `Balancer`. The balancer is carried over by a
//! reload for an upstream of the same name, so releases of requests picked before the reload
//! land where the next pick looks; a build sets nothing in it, `publish` applies the new
//! membership.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

pub use crate::balance::Trial;
use crate::balance::{Balancer, FULL, IdMap, MemberId, Policy, State};
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
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Whether an active check has ever passed: readiness waits for one.
    passed_check: AtomicBool,
    /// Consecutive outcomes, turned into up/down decisions by the health thresholds.
    pub tracker: Tracker,
    /// Idle keep-alive HTTP connections to this backend.
    pub pool: Pool,
    /// Woken on every up/down change and failed trial, so the backend's checker can start a
    /// slow start or arm the next trial without polling.
    pub changed: Notify,
    /// Its upstream's balancer (the same across reloads) and its member there: the one place
    /// its scheduling state lives, for picks, releases and every reader alike.
    balancer: Arc<Balancer>,
    id: MemberId,
    /// Cached handles of this backend's request metrics, so a request skips the registry.
    pub series: crate::metrics::BackendSeries,
}

impl Backend {
    /// The backend `label` of `previous` when it still dials `dial` (a name with one address
    /// keeps its label when that address changes, but is then another backend); else a new
    /// member of `balancer`, counters at zero (it joins the schedule at `publish`).
    fn carry_or_new(
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

/// An upstream of the running configuration: its settings, backends and balancer.
#[derive(Debug)]
pub struct Upstream {
    pub conf: config::Upstream,
    pub name: Arc<str>,
    pub backends: Vec<Arc<Backend>>,
    /// Each backend's configured weight, applied to the balancer at `publish`.
    weights: Vec<u32>,
    /// The position in `backends` of each member: a pick names a member, and after a reload
    /// the balancer also has members this upstream does not know.
    positions: IdMap<usize>,
    /// Carried over from the previous upstream of this name; shared with every backend.
    balancer: Arc<Balancer>,
    /// `Some` when backends are reached over TLS (`[upstream.NAME.tls]`), built once here.
    pub tls: Option<crate::tls::ClientTls>,
    /// How fulcrum talks to the backends, as a number (`link`): part of the pool key.
    pub link: u64,
}

/// One request or session placed on a backend. Dropping it ends the in-flight unit, so no
/// early return can leak load; before or after a reload, it releases into the balancer every
/// later pick reads.
#[derive(Debug)]
pub struct Lease {
    pub backend: Arc<Backend>,
    pub index: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.balancer.release(self.backend.id);
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
    /// carried over with their counters, and its balancer with their state. Nothing shared
    /// changes until `publish`. No DNS here: a name of an upstream with
    /// `resolve_interval = 0` that `resolved` lacks is an error, one of an upstream that
    /// re-resolves has no backends until it resolves (zero backends: 503, tcp closes).
    pub fn build(
        conf: &config::Upstream,
        previous: Option<&Upstream>,
        resolved: &Resolved,
    ) -> Result<Upstream, BuildError> {
        let name: Arc<str> = Arc::from(conf.name.as_str());
        let balancer = previous.map_or_else(
            || Arc::new(Balancer::new(policy(conf), &[])),
            |p| Arc::clone(&p.balancer),
        );
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
                let backend = Backend::carry_or_new(&name, previous, &balancer, b, label, dial);
                backends.push(backend);
                weights.push(b.weight);
            }
        }
        let positions = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id, i))
            .collect();
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
            positions,
            balancer,
            tls,
        };
        Ok(upstream)
    }

    /// Makes this upstream's backends, weights and policy the balancer's: kept backends keep
    /// their state, new ones join, removed ones leave. Call right before storing the snapshot.
    pub fn publish(&self) {
        let members: Vec<(MemberId, u32)> = (self.backends.iter().map(|b| b.id))
            .zip(self.weights.iter().copied())
            .collect();
        self.balancer.apply(policy(&self.conf), &members);
    }

    /// Picks a healthy backend not in `tried`; `None` when there is none. A down backend open
    /// for its trial is picked once: the pick takes it out of the balancer again. An upstream
    /// replaced by a reload (a request failing over) picks among its own backends only.
    pub fn pick(&self, tried: &[usize]) -> Option<Lease> {
        let mut index = None;
        let picked = self.balancer.pick_where(|id| {
            index = self
                .positions
                .get(&id)
                .copied()
                .filter(|i| !tried.contains(i));
            index.is_some()
        })?;
        let Some((index, backend)) = index.and_then(|i| Some((i, self.backends.get(i)?))) else {
            self.balancer.release(picked.id);
            return None;
        };
        if picked.trial {
            // The checker re-opens a trial that is never decided (a client that went away, a
            // session that neither failed nor ended): it must know it was taken.
            backend.changed.notify_one();
        }
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
        let (balancer, id) = (&backend.balancer, backend.id);
        // The share is lowered in the same step that schedules the backend, so no pick sees
        // it at full weight; the checker ramps it from here.
        let changed = if healthy && !self.conf.slow_start.is_zero() {
            balancer.recover(id, SLOW_START_FLOOR)
        } else {
            balancer.set_healthy(id, healthy)
        };
        if changed {
            backend.changed.notify_one();
        }
        changed
    }

    /// Slow start: backend `index` gets `permille` (1..=1000) of its weight.
    pub fn set_permille(&self, index: usize, permille: u32) {
        if let Some(b) = self.backends.get(index) {
            b.balancer.set_permille(b.id, permille);
        }
    }

    /// `check = "none"`: puts down backend `index` back in the balancer for one trial. A trial
    /// taken but never decided (a session that neither failed nor ended) must not keep the
    /// backend down for good: it is opened again.
    pub fn open_trial(&self, index: usize) {
        if let Some(b) = self.backends.get(index) {
            b.balancer.open_trial(b.id);
        }
    }

    /// Ends any trial of backend `index` (its upstream no longer has `check = "none"`): active
    /// checks alone bring it back.
    pub fn close_trial(&self, index: usize) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        b.balancer.close_trial(b.id, Trial::Open);
        b.balancer.close_trial(b.id, Trial::Taken);
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

fn policy(conf: &config::Upstream) -> Policy {
    match conf.balance {
        config::Balance::RoundRobin => Policy::RoundRobin,
        config::Balance::LeastLoad => Policy::LeastLoad,
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
        if b.balancer.close_trial(b.id, Trial::Taken) {
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

    const A: &str = "{ addr = \"127.0.0.1:1\" }";
    const B: &str = "{ addr = \"127.0.0.1:2\" }";

    #[test]
    fn in_flight_requests_carry_over_a_reload_for_least_load() {
        let old = Snapshot::build(config(&format!("{A}, {B}")), None, Resolved::new());
        let old = old.expect("build");
        old.publish();
        let lease = old.upstreams["app"].pick(&[]).expect("pick");
        // The reload also reorders: the state must follow the backend, not its position.
        let new = Snapshot::build(config(&format!("{B}, {A}")), Some(&old), Resolved::new());
        let new = new.expect("rebuild");
        new.publish();
        let app = &new.upstreams["app"];
        let busy = app
            .backends
            .iter()
            .position(|b| Arc::ptr_eq(b, &lease.backend));
        let busy = busy.expect("carried over");
        let next = app.pick(&[]).expect("pick after reload");
        assert_ne!(
            next.index, busy,
            "least_load must see the request still open from before the reload"
        );
        assert_eq!(app.backends[busy].in_flight(), 1);
        drop(next);
        drop(lease);
        assert_eq!(
            app.backends[busy].in_flight(),
            0,
            "a release after the reload lands in the running balancer"
        );
    }

    #[test]
    fn a_build_changes_nothing_running_until_it_is_published() {
        let old = Snapshot::build(config(&format!("{A}, {B}")), None, Resolved::new());
        let old = old.expect("build");
        old.publish();
        let heavy_a = "{ addr = \"127.0.0.1:1\", weight = 5 }, { addr = \"127.0.0.1:3\" }";
        let new = Snapshot::build(config(heavy_a), Some(&old), Resolved::new()).expect("build");
        let (a, c) = (
            &new.upstreams["app"].backends[0],
            &new.upstreams["app"].backends[1],
        );
        assert_eq!(a.weight(), 1, "a weight changes at publish only");
        assert_eq!(c.state().weight, 0, "a new backend is no member yet");
        let seq: Vec<usize> = (0..4)
            .filter_map(|_| old.upstreams["app"].pick(&[]).map(|l| l.index))
            .collect();
        assert_eq!(seq, [0, 1, 0, 1], "the running rotation is untouched");
        new.publish();
        assert_eq!((a.weight(), c.weight()), (5, 1));
        assert_eq!(old.upstreams["app"].backends[1].state().weight, 0, "B left");
    }

    #[test]
    fn an_upstream_replaced_by_a_reload_picks_among_its_own_backends() {
        let old = Snapshot::build(config(A), None, Resolved::new()).expect("build");
        old.publish();
        let new = Snapshot::build(config(&format!("{A}, {B}")), Some(&old), Resolved::new());
        new.expect("rebuild").publish();
        let stale = &old.upstreams["app"];
        for _ in 0..4 {
            let lease = stale.pick(&[]).expect("A is up");
            assert!(Arc::ptr_eq(&lease.backend, &stale.backends[0]));
        }
        assert!(stale.pick(&[0]).is_none(), "B is not a backend it knows");
    }
}
