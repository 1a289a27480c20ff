//! Wiring: bind the listeners, start accepting, apply reloads, and drain on shutdown.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::listener::{self, Running};
use crate::upstream::{BuildError, Snapshot};

/// State every task of the process shares.
#[derive(Debug)]
pub struct Shared {
    /// The running configuration and live upstreams, swapped whole by a reload.
    pub state: ArcSwap<Snapshot>,
    /// Set at the first shutdown signal: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// Cancelled when listeners stop: HTTP connections finish their request and close.
    pub graceful: CancellationToken,
    /// Cancelled at the drain deadline: every connection still open is cut off.
    pub kill: CancellationToken,
    /// Every client connection of every listener, current or removed by a reload.
    pub connections: TaskTracker,
    /// One health checker per backend of the running configuration.
    pub checkers: crate::health::Checkers,
    /// Open client connections per running listener (by name), for `/status` and `/metrics`;
    /// republished at start and by each reload (`publish_active`).
    pub active: ArcSwap<HashMap<String, Arc<AtomicU64>>>,
}

impl Shared {
    /// The shared state of a process running `snapshot` (published here: its balancers are
    /// the ones backends report to). Health checkers are not started: `checkers.reconcile`.
    pub fn new(snapshot: Snapshot, checkers: crate::health::Checkers) -> Arc<Shared> {
        snapshot.publish();
        Arc::new(Shared {
            state: ArcSwap::from_pointee(snapshot),
            draining: AtomicBool::new(false),
            graceful: CancellationToken::new(),
            kill: CancellationToken::new(),
            connections: TaskTracker::new(),
            checkers,
            active: ArcSwap::default(),
        })
    }

    /// Publishes the running listeners' connection counts for the admin listener.
    pub fn publish_active(&self, running: &HashMap<String, Running>) {
        let counts = running
            .iter()
            .map(|(name, r)| (name.clone(), Arc::clone(&r.active)))
            .collect();
        self.active.store(Arc::new(counts));
    }

    /// A listener removed (or replaced) by a reload: it stops accepting at once; its HTTP
    /// connections are asked to close after their request; whatever is still open after
    /// `shutdown_timeout` is cut off.
    pub fn retire(&self, old: Running, removed: bool) {
        old.stop.cancel();
        if removed {
            old.graceful.cancel();
            let timeout = self.state.load().config.runtime.shutdown_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                old.kill.cancel();
            });
        }
    }
}

/// What the process asks of the server (from signals in `main`, or from tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    Shutdown,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener \"{name}\": cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("[admin]: cannot bind {addr}: {source}")]
    AdminBind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Runs the proxy until `Control::Shutdown` (or the sender is dropped), then drains.
pub async fn run(config: Config, mut control: mpsc::Receiver<Control>) -> Result<(), StartError> {
    let config = Arc::new(config);
    let resolved = crate::resolve::lookup(&config, None).await?;
    let snapshot = Snapshot::build(Arc::clone(&config), None, resolved)?;
    // Bind everything before serving anything: a bad bind fails the start, not half of it.
    let mut sockets = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let socket = listener::bind(l.bind).map_err(|source| StartError::Bind {
            name: l.name.clone(),
            addr: l.bind,
            source,
        })?;
        sockets.push((l, socket));
    }
    let admin_bind_error = |addr| move |source| StartError::AdminBind { addr, source };
    let admin = match &config.admin {
        Some(a) => Some((
            a.bind,
            listener::bind(a.bind).map_err(admin_bind_error(a.bind))?,
        )),
        None => None,
    };
    let shared = Shared::new(snapshot, crate::health::Checkers::new());
    shared.checkers.reconcile(&shared);
    // Installed before any listener records; only with [admin], which is what exposes it.
    let metrics = admin.as_ref().and_then(|_| crate::metrics::install());
    let mut running: HashMap<String, Running> = HashMap::new();
    for (l, socket) in sockets {
        let r = listener::spawn(l, socket, None, Arc::clone(&shared)).map_err(|source| {
            StartError::Bind {
                name: l.name.clone(),
                addr: l.bind,
                source,
            }
        })?;
        tracing::info!(listener = %l.name, bind = %l.bind, protocol = l.protocol.as_str(), "listening");
        running.insert(l.name.clone(), r);
    }
    shared.publish_active(&running);
    // The admin listener outlives the drain: /readyz must answer 503 during `shutdown_delay`.
    let admin_stop = CancellationToken::new();
    if let Some((addr, socket)) = admin {
        crate::admin::spawn(socket, Arc::clone(&shared), metrics, admin_stop.clone())
            .map_err(admin_bind_error(addr))?;
        tracing::info!(bind = %addr, "admin listener up");
    }

    let (watch_tx, mut watched) = mpsc::channel(1);
    let watcher = tokio::spawn(crate::watch::watch(Arc::clone(&shared), watch_tx));
    // Re-resolved host names come back here, so that this loop stays the one writer of the
    // snapshot and a re-resolution never races a reload.
    let (resolve_tx, mut resolved) = mpsc::channel(1);
    let resolver = tokio::spawn(crate::resolve::watch(Arc::clone(&shared), resolve_tx));
    loop {
        let c = tokio::select! {
            c = control.recv() => c.unwrap_or(Control::Shutdown),
            Some(c) = watched.recv() => c,
            Some(found) = resolved.recv() => {
                crate::resolve::apply(&shared, found);
                continue;
            }
        };
        match c {
            Control::Reload => crate::reload::reload(&shared, &mut running).await,
            Control::Shutdown => break,
        }
    }
    watcher.abort();
    resolver.abort();
    drain(&shared, running).await;
    admin_stop.cancel();
    Ok(())
}

/// The shutdown sequence (README, "Operations"): not ready at once, keep serving for
/// `shutdown_delay`, stop accepting, let open work finish within `shutdown_timeout`.
async fn drain(shared: &Shared, running: HashMap<String, Running>) {
    let runtime = shared.state.load().config.runtime.clone();
    shared
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    if !runtime.shutdown_delay.is_zero() {
        tracing::info!(delay = ?runtime.shutdown_delay, "shutting down: not ready, still serving");
        tokio::time::sleep(runtime.shutdown_delay).await;
    }
    tracing::info!("shutting down: stopped accepting, draining open connections");
    // Dropping each listener's socket makes its port refuse new clients at once.
    for r in running.into_values() {
        r.stop.cancel();
    }
    shared.graceful.cancel();
    shared.connections.close();
    if tokio::time::timeout(runtime.shutdown_timeout, shared.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?runtime.shutdown_timeout, "drain deadline reached, closing the rest");
        shared.kill.cancel();
    }
    shared.checkers.stop_all();
}
