//! Re-resolution (`resolve_interval`): fresh addresses of the running configuration's names
//! become a new snapshot, built and swapped as a reload would.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::health::Checkers;
use crate::resolve::Resolved;
use crate::snapshot::{Live, Snapshot};

/// Control loop: applies fresh answers from `resolve::watch`. When they change what any name of the
/// running configuration resolves to, rebuilds the snapshot as a reload would (publish,
/// store, reconcile the checkers) and logs each backend added or removed.
pub fn apply(live: &Arc<Live>, checkers: &Checkers, found: Resolved) {
    let current = live.load_full();
    let used = crate::resolve::names(current.config.upstreams.iter());
    let mut next = current.resolved.clone();
    // Answers for names a reload dropped meanwhile are of no use.
    next.extend(found.into_iter().filter(|(k, _)| used.contains(k)));
    if next == current.resolved {
        return;
    }
    let snapshot = match Snapshot::build(Arc::clone(&current.config), Some(&current), next) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("re-resolution not applied, keeping the running backends: error: {e}");
            return;
        }
    };
    let changes = backend_changes(&current, &snapshot);
    snapshot.publish();
    live.store(Arc::new(snapshot));
    checkers.reconcile(live);
    for line in &changes {
        tracing::info!("resolve: {line}");
    }
}

/// The backends added and removed between two snapshots, one line each, worded as the
/// reload plan words them.
pub fn backend_changes(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    // A name with one address keeps its label when that address changes: compare the
    // dial address too.
    let backends = |s: &Snapshot, name: &str| -> Vec<(Arc<str>, SocketAddr)> {
        s.upstreams.get(name).map_or_else(Vec::new, |u| {
            u.backends
                .iter()
                .map(|b| (Arc::clone(&b.addr), b.dial))
                .collect()
        })
    };
    let mut out = Vec::new();
    let mut names: Vec<&String> = new.upstreams.keys().collect();
    names.sort();
    for name in names {
        let (before, after) = (backends(old, name), backends(new, name));
        for a in after.iter().filter(|a| !before.contains(a)) {
            out.push(format!(
                "upstream \"{name}\": backend {} added",
                describe(a)
            ));
        }
        for b in before.iter().filter(|b| !after.contains(b)) {
            out.push(format!(
                "upstream \"{name}\": backend {} removed",
                describe(b)
            ));
        }
    }
    out
}

/// A backend for the operator: its label, and where it connects when the label does not say.
fn describe((label, dial): &(Arc<str>, SocketAddr)) -> String {
    let dial = dial.to_string();
    if label.ends_with(&dial) {
        label.to_string()
    } else {
        format!("{label} ({dial})")
    }
}

#[cfg(test)]
mod tests;
