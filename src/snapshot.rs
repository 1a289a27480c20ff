//! The running configuration as one immutable value: the validated config, the live upstreams,
//! each listener's upstream, TLS acceptor and connection count. A reload or a re-resolution
//! builds a new one off the hot path and swaps it in whole (`Live`); whatever stays the same
//! is carried over from the previous one, so its state (health, counters, TLS session keys)
//! survives.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;

use crate::config;
use crate::metrics::SeriesKey;
use crate::resolve::Resolved;
use crate::routing::Router;
use crate::tls::Acceptor;
use crate::upstream::{BuildError, Upstream, Upstreams};

/// The handle every part holds to the running snapshot: one atomic load per use, no lock.
pub type Live = ArcSwap<Snapshot>;

/// The running configuration: one immutable snapshot, swapped whole by a reload.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<config::Config>,
    pub upstreams: Upstreams,
    /// What the host names of `config` resolved to: the addresses behind `upstreams`, and
    /// what a name keeps when a later lookup fails.
    pub resolved: Resolved,
    /// Seconds since the Unix epoch at load time, for `/status`.
    pub loaded_at: u64,
    /// The live part of each of `config.listeners`, in the same order.
    listeners: Vec<ListenerState>,
}

/// What a listener of the running configuration needs besides its settings.
pub struct ListenerState {
    /// The listener's `upstream` (for http, the default of requests no route matches), looked
    /// up once here: hashing the upstream's name per request would be a measurable cost.
    pub upstream: Option<Arc<Upstream>>,
    /// http: the routes, their targets looked up the same way.
    pub router: Router<Arc<Upstream>>,
    /// The request series key of answers no route gave; kept while the listener keeps its
    /// name.
    pub series: SeriesKey,
    /// `Some` with `[listener.tls]`. Kept across reloads that leave the TLS settings as they
    /// were, so ticket keys and the session cache survive and clients resume.
    pub acceptor: Option<Acceptor>,
    /// Open client connections, for `/status` and `/metrics`; carried over while the listener
    /// keeps its name and bind (its accept loop and connections go on).
    pub active: Arc<AtomicU64>,
}

impl std::fmt::Debug for ListenerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerState")
            .field("upstream", &self.upstream.as_ref().map(|u| &u.name))
            .field("routes", &self.router.routes().len())
            .field("tls", &self.acceptor.is_some())
            .field("active", &self.active)
            .finish()
    }
}

/// A listener of the snapshot: its settings and its live part.
pub type Route<'a> = (&'a config::Listener, &'a ListenerState);

impl Snapshot {
    /// Builds the live state of `config` with its host names' addresses from `resolved`
    /// (`resolve::lookup`; empty when every backend is an IP address), carrying backends,
    /// acceptors and connection counts over from `previous`. Touches nothing `previous`
    /// serves with: a build that fails, or is never published, changes nothing.
    pub fn build(
        config: Arc<config::Config>,
        previous: Option<&Snapshot>,
        resolved: Resolved,
    ) -> Result<Snapshot, BuildError> {
        let upstreams =
            crate::upstream::build_all(&config, previous.map(|p| &p.upstreams), &resolved)?;
        let loaded_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let before = previous.and_then(|p| p.listener(&l.name));
            let acceptor = match &l.tls {
                None => None,
                Some(tls) => match before {
                    Some((old, state)) if old.tls.as_ref().is_some_and(|o| same_tls(o, tls)) => {
                        state.acceptor.clone()
                    }
                    _ => Some(crate::tls::acceptor(&l.name, tls)?),
                },
            };
            let active = match before {
                Some((old, state)) if old.bind == l.bind => Arc::clone(&state.active),
                _ => Arc::default(),
            };
            let router = Router::build(
                &l.routes,
                |name| upstreams.get(name).cloned(),
                before.map(|(_, state)| &state.router),
            );
            listeners.push(ListenerState {
                upstream: l.upstream.as_ref().and_then(|u| upstreams.get(u).cloned()),
                router,
                series: before.map_or_else(SeriesKey::fresh, |(_, state)| state.series),
                acceptor,
                active,
            });
        }
        Ok(Snapshot {
            config,
            upstreams,
            resolved,
            loaded_at,
            listeners,
        })
    }

    /// Applies this snapshot's membership, weights and policies to the balancers (see
    /// `Upstream::publish`); call right before storing it.
    pub fn publish(&self) {
        for u in self.upstreams.values() {
            u.publish();
        }
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<Route<'_>> {
        self.config
            .listeners
            .iter()
            .zip(&self.listeners)
            .find(|(l, _)| l.name == name)
    }

    /// The listener bound to `bind`.
    pub fn listener_on(&self, bind: std::net::SocketAddr) -> Option<Route<'_>> {
        self.listeners().find(|(l, _)| l.bind == bind)
    }

    /// Every listener with its live part, in config order.
    pub fn listeners(&self) -> impl Iterator<Item = Route<'_>> {
        self.config.listeners.iter().zip(&self.listeners)
    }
}

/// Whether two `[listener.tls]` serve the same certificates the same way, so the acceptor
/// (and its session keys) can stay.
fn same_tls(a: &config::ListenerTls, b: &config::ListenerTls) -> bool {
    a.min_version == b.min_version
        && a.session_resumption == b.session_resumption
        && a.alpn == b.alpn
        && a.certificates.len() == b.certificates.len()
        && a.certificates.iter().zip(&b.certificates).all(|(x, y)| {
            x.cert_path == y.cert_path && x.key_path == y.key_path && x.key.cert == y.key.cert
        })
}
