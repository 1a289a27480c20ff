//! Reload: read and validate the file completely, build the new state off the hot path, bind
//! new listeners, then publish it with one atomic swap. Everything that can fail happens
//! before the swap, so any failure keeps the running configuration untouched.
//!
//! - `plan`: what a reload changes, for the log.
//! - `resolved`: re-resolution of host names, applied the same way.

mod plan;
pub mod resolved;

use std::sync::Arc;

use crate::config::Config;
use crate::health::Checkers;
use crate::listener::{Drain, Listeners};
use crate::snapshot::{Live, Snapshot};

pub use plan::describe_changes;

/// What the process asks of the server (from signals in `main`, from `watch`, or from tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Reload,
    Shutdown,
}

/// The parts a reload changes, all owned by the control loop.
pub struct Parts<'a> {
    pub live: &'a Arc<Live>,
    pub listeners: &'a mut Listeners,
    pub checkers: &'a Checkers,
    pub drain: &'a Drain,
}

/// Reloads from the running configuration's path. Counts and logs the outcome, and returns
/// it (the error line on failure) for `/status`: a bad file must not disturb serving.
pub async fn reload(parts: Parts<'_>) -> Result<(), String> {
    // Counted before the log line, so whoever reads the line sees the count.
    match try_reload(parts).await {
        Ok(changes) => {
            crate::metrics::config_reload(true);
            tracing::info!(changes, "configuration reloaded");
            Ok(())
        }
        Err(e) => {
            crate::metrics::config_reload(false);
            tracing::error!("reload failed, keeping the running configuration: error: {e}");
            Err(e)
        }
    }
}

async fn try_reload(parts: Parts<'_>) -> Result<usize, String> {
    let current = parts.live.load_full();
    // Reading and checking the file (PEM parsing, the system's trust roots) blocks: off the
    // runtime's threads, so a one-worker sidecar keeps serving through a reload.
    let path = current.config.path.clone();
    let config = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|e| format!("config loader stopped: {e}"))?
        .map_err(|e| e.to_string())?;
    let config = Arc::new(config);
    // Names are looked up again (off the runtime's threads); one that fails keeps its last
    // addresses when its upstream re-resolves, and fails the reload when it does not.
    let resolved = crate::resolve::lookup(&config, Some(&current.resolved))
        .await
        .map_err(|e| e.to_string())?;
    let snapshot = Snapshot::build(Arc::clone(&config), Some(&current), resolved)
        .map_err(|e| e.to_string())?;
    // New binds are bound and registered before anything changes, so a bind failure leaves
    // the old configuration whole.
    let prepared = parts
        .listeners
        .prepare(&config)
        .map_err(|e| e.to_string())?;

    // Nothing below can fail.
    let plan = describe_changes(&current.config, &config);
    snapshot.publish();
    parts.live.store(Arc::new(snapshot));
    parts.checkers.reconcile(parts.live);
    parts
        .listeners
        .commit(&config, prepared, parts.live, parts.drain);
    for line in &plan {
        tracing::info!("reload: {line}");
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    Ok(plan.len())
}
