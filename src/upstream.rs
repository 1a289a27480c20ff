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
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use crate::balance::Trial;
use crate::balance::{Balancer, IdMap, MemberId, Policy};
use crate::config;
use crate::resolve::Resolved;

mod backend;
mod failure;
mod health;
mod link;
pub mod multiplex;
pub mod pool;
pub mod replay;
mod tracker;

pub use backend::Backend;
pub use failure::Failure;
pub use tracker::Tracker;

/// Slow start begins at 10% of a backend's weight (`slow_start` in conf/fulcrum.toml), in
/// permille.
pub const SLOW_START_FLOOR: u32 = 100;

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
            Some(t) => Some(crate::tls::ClientTls::build(&conf.name, t, conf.protocol)?),
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

#[cfg(test)]
mod tests;
