//! Wiring: build the first snapshot, bind the listeners, start accepting, run the control
//! loop (reloads, re-resolutions), and drain on shutdown. Every part gets the narrow handle
//! it needs from here; nothing imports this module back.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::Config;
use crate::health::Checkers;
use crate::listener::{BindError, Drain, Listeners};
use crate::reload::{self, Parts};
use crate::snapshot::{Live, Snapshot};
use crate::upstream::BuildError;

pub use crate::reload::Control;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("[admin]: cannot bind {addr}: {source}")]
    AdminBind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Runs the proxy until `Control::Shutdown` (or the sender is dropped), then drains.
pub async fn run(config: Config, mut control: mpsc::Receiver<Control>) -> Result<(), StartError> {
    let config = Arc::new(config);
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let resolved = crate::resolve::lookup(&config, None)
        .await
        .map_err(BuildError::from)?;
    let snapshot = Snapshot::build(Arc::clone(&config), None, resolved)?;
    // Bind everything before serving anything: a bad bind fails the start, not half of it.
    let prepared = Listeners::bind_all(&config)?;
    let admin_bind_error = |addr| move |source| StartError::AdminBind { addr, source };
    let admin_socket = match &config.admin {
        Some(a) => Some((
            a.bind,
            crate::listener::bind(a.bind).map_err(admin_bind_error(a.bind))?,
        )),
        None => None,
    };
    snapshot.publish();
    let live = Arc::new(Live::from_pointee(snapshot));
    let checkers = Checkers::new();
    checkers.reconcile(&live);
    // Installed before any listener records; only with [admin], which is what exposes it.
    let metrics = admin_socket
        .as_ref()
        .and_then(|_| crate::metrics::install());
    let drain = Drain::default();
    let mut listeners = Listeners::default();
    listeners.commit(&config, prepared, &live, &drain);
    // The admin listener outlives the drain: /readyz must answer 503 during `shutdown_delay`.
    let state = Arc::new(admin::State::new(Arc::clone(&live)));
    let admin_stop = CancellationToken::new();
    if let Some((addr, socket)) = admin_socket {
        admin::spawn(socket, Arc::clone(&state), metrics, admin_stop.clone())
            .map_err(admin_bind_error(addr))?;
        tracing::info!(bind = %addr, "admin listener up");
    }

    let (watch_tx, mut watched) = mpsc::channel(1);
    let watcher = tokio::spawn(crate::watch::watch(Arc::clone(&live), watch_tx));
    // Re-resolved host names come back here, so that this loop stays the one writer of the
    // snapshot and a re-resolution never races a reload.
    let (resolve_tx, mut resolved) = mpsc::channel(1);
    let config_of = {
        let live = Arc::clone(&live);
        move || Arc::clone(&live.load().config)
    };
    let resolver = tokio::spawn(crate::resolve::watch(config_of, resolve_tx));
    loop {
        let c = tokio::select! {
            c = control.recv() => c.unwrap_or(Control::Shutdown),
            Some(c) = watched.recv() => c,
            Some(found) = resolved.recv() => {
                reload::resolved::apply(&live, &checkers, found);
                continue;
            }
        };
        match c {
            Control::Reload => {
                let parts = Parts {
                    live: &live,
                    listeners: &mut listeners,
                    checkers: &checkers,
                    drain: &drain,
                };
                state.reloaded(&reload::reload(parts).await);
            }
            Control::Shutdown => break,
        }
    }
    watcher.abort();
    resolver.abort();
    shut_down(&live, &state, listeners, &drain).await;
    checkers.stop_all();
    admin_stop.cancel();
    Ok(())
}

/// The shutdown sequence (README, "Operations"): not ready at once, keep serving for
/// `shutdown_delay`, stop accepting, let open work finish within `shutdown_timeout`.
async fn shut_down(live: &Live, state: &admin::State, mut listeners: Listeners, drain: &Drain) {
    let runtime = live.load().config.runtime.clone();
    state.set_draining();
    if !runtime.shutdown_delay.is_zero() {
        tracing::info!(delay = ?runtime.shutdown_delay, "shutting down: not ready, still serving");
        tokio::time::sleep(runtime.shutdown_delay).await;
    }
    tracing::info!("shutting down: stopped accepting, draining open connections");
    // Dropping each listener's socket makes its port refuse new clients at once.
    listeners.stop_all();
    drain.graceful.cancel();
    drain.connections.close();
    if tokio::time::timeout(runtime.shutdown_timeout, drain.connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?runtime.shutdown_timeout, "drain deadline reached, closing the rest");
        drain.kill.cancel();
    }
}
