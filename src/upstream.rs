//! The live state of upstreams: each backend's address, weight, health and counters, and the
//! balancer that picks among them. Built from the validated config; a backend that stays
//! across a reload (same upstream, same addr) is carried over with its state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::balance::{Balancer, Policy};
use crate::config;
use crate::health::Tracker;
use crate::proxy::pool::Pool;

/// One backend of one upstream, shared by every listener that uses the upstream.
#[derive(Debug)]
pub struct Backend {
    /// The upstream's name, for metric labels and logs.
    pub upstream: Arc<str>,
    /// As written in the config: the `backend` label.
    pub addr: Arc<str>,
    /// Where fulcrum connects.
    pub dial: SocketAddr,
    pub weight: AtomicU32,
    /// Outstanding requests (http) or open sessions (tcp): the load numerator R.
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    healthy: AtomicBool,
    /// Consecutive outcomes, turned into up/down decisions by the health thresholds.
    pub tracker: Tracker,
    /// Idle keep-alive HTTP connections to this backend.
    pub pool: Pool,
}

impl Backend {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// An upstream of the running configuration: its settings, backends and balancer.
#[derive(Debug)]
pub struct Upstream {
    pub conf: config::Upstream,
    pub name: Arc<str>,
    pub backends: Vec<Arc<Backend>>,
    balancer: Arc<Balancer>,
    /// `Some` when backends are reached over TLS (`[upstream.NAME.tls]`), built once here.
    pub tls: Option<crate::tls::ClientTls>,
}

/// One request or session placed on a backend. Dropping it ends the in-flight unit, so no
/// early return can leak load (the balancer's count and the backend's gauge move together).
#[derive(Debug)]
pub struct Lease {
    pub backend: Arc<Backend>,
    pub index: usize,
    balancer: Arc<Balancer>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.balancer.release(self.index);
        self.backend.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors building an upstream's live state.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("upstream \"{upstream}\": backend \"{addr}\" does not resolve: {reason}")]
    Resolve {
        upstream: String,
        addr: String,
        reason: String,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl Upstream {
    /// Builds the live upstream from its config; backends found in `previous` (same addr) are
    /// carried over with their health and counters.
    pub fn build(
        conf: &config::Upstream,
        previous: Option<&Upstream>,
    ) -> Result<Upstream, BuildError> {
        let name: Arc<str> = Arc::from(conf.name.as_str());
        let mut backends = Vec::with_capacity(conf.backends.len());
        for b in &conf.backends {
            let kept =
                previous.and_then(|p| p.backends.iter().find(|old| &*old.addr == b.addr.as_str()));
            if let Some(old) = kept {
                old.weight.store(b.weight, Ordering::Relaxed);
                backends.push(Arc::clone(old));
                continue;
            }
            backends.push(Arc::new(Backend {
                upstream: Arc::clone(&name),
                addr: Arc::from(b.addr.as_str()),
                dial: resolve(conf, b)?,
                weight: AtomicU32::new(b.weight),
                in_flight: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                healthy: AtomicBool::new(true),
                tracker: Tracker::new(),
                pool: Pool::default(),
            }));
        }
        let policy = match conf.balance {
            config::Balance::RoundRobin => Policy::RoundRobin,
            config::Balance::LeastLoad => Policy::LeastLoad,
        };
        let weights: Vec<u32> = conf.backends.iter().map(|b| b.weight).collect();
        let balancer = Arc::new(Balancer::new(policy, &weights));
        for (i, b) in backends.iter().enumerate() {
            if !b.is_healthy() {
                balancer.set_healthy(i, false);
            }
        }
        let tls = match &conf.tls {
            Some(t) => Some(crate::tls::ClientTls::build(&conf.name, t)?),
            None => None,
        };
        Ok(Upstream {
            conf: conf.clone(),
            name,
            backends,
            balancer,
            tls,
        })
    }

    /// Picks a healthy backend not in `tried`; `None` when there is none.
    pub fn pick(&self, tried: &[usize]) -> Option<Lease> {
        let index = if tried.is_empty() {
            self.balancer.pick()?
        } else {
            self.balancer.pick_excluding(tried)?
        };
        let Some(backend) = self.backends.get(index) else {
            self.balancer.release(index);
            return None;
        };
        backend.in_flight.fetch_add(1, Ordering::Relaxed);
        backend.requests.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            backend: Arc::clone(backend),
            index,
            balancer: Arc::clone(&self.balancer),
        })
    }

    /// Marks backend `index` up or down. Returns true when that changed its state.
    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        let Some(backend) = self.backends.get(index) else {
            return false;
        };
        let changed = backend.healthy.swap(healthy, Ordering::Relaxed) != healthy;
        if changed {
            self.balancer.set_healthy(index, healthy);
        }
        changed
    }

    /// Slow start: backend `index` gets `permille` of its weight.
    pub fn set_permille(&self, index: usize, permille: u32) {
        self.balancer.set_permille(index, permille);
    }

    pub fn has_healthy_backend(&self) -> bool {
        self.backends.iter().any(|b| b.is_healthy())
    }
}

/// The dial address of a backend: its IP literal, else the first address its name resolves to.
fn resolve(conf: &config::Upstream, b: &config::BackendConf) -> Result<SocketAddr, BuildError> {
    if let Some(ip) = b.ip {
        return Ok(ip);
    }
    use std::net::ToSocketAddrs;
    let err = |reason: String| BuildError::Resolve {
        upstream: conf.name.clone(),
        addr: b.addr.clone(),
        reason,
    };
    (b.host.as_str(), b.port)
        .to_socket_addrs()
        .map_err(|e| err(e.to_string()))?
        .next()
        .ok_or_else(|| err("no address".into()))
}

/// Every upstream of a configuration, by name.
pub type Upstreams = HashMap<String, Arc<Upstream>>;

/// Builds all upstreams of `config`, carrying backends over from `previous`.
pub fn build_all(
    config: &config::Config,
    previous: Option<&Upstreams>,
) -> Result<Upstreams, BuildError> {
    let mut out = HashMap::with_capacity(config.upstreams.len());
    for u in &config.upstreams {
        let prev = previous.and_then(|p| p.get(&u.name)).map(|a| &**a);
        out.insert(u.name.clone(), Arc::new(Upstream::build(u, prev)?));
    }
    Ok(out)
}

impl Upstream {
    /// A live connection or response to backend `index` failed (`kind`: connect, timeout,
    /// reset, or an http 502/503/504 from the backend). Enough in a row mark it down.
    pub fn record_failure(&self, index: usize, kind: &'static str) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        b.failures.fetch_add(1, Ordering::Relaxed);
        let h = &self.conf.health;
        let up = b.is_healthy();
        if b.tracker
            .record(false, up, h.unhealthy_threshold, h.healthy_threshold)
            == Some(false)
            && self.set_healthy(index, false)
        {
            tracing::info!(upstream = %self.name, addr = %b.addr, reason = kind, "backend down");
        }
    }

    /// A live exchange with backend `index` succeeded: the failure count starts again.
    pub fn record_success(&self, index: usize) {
        if let Some(b) = self.backends.get(index) {
            b.tracker.reset_failures();
        }
    }
}

/// The running configuration: one immutable snapshot, swapped whole by a reload.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<config::Config>,
    pub upstreams: Upstreams,
    /// TLS acceptors of the listeners with `[listener.tls]`, built with this snapshot so a
    /// reload's certificates serve the next handshake.
    pub acceptors: crate::tls::Acceptors,
    /// Seconds since the Unix epoch at load time, for `/status`.
    pub loaded_at: u64,
}

impl Snapshot {
    /// Builds the live state of `config`, carrying backends over from `previous`.
    pub fn build(
        config: Arc<config::Config>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, BuildError> {
        let upstreams = build_all(&config, previous.map(|p| &p.upstreams))?;
        let acceptors = crate::tls::Acceptors::build(&config)?;
        let loaded_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Snapshot {
            config,
            upstreams,
            acceptors,
            loaded_at,
        })
    }

    /// The listener named `name` and its upstream.
    pub fn route(&self, name: &str) -> Option<(&config::Listener, &Arc<Upstream>)> {
        let l = self.config.listeners.iter().find(|l| l.name == name)?;
        Some((l, self.upstreams.get(&l.upstream)?))
    }
}
