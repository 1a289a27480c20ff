//! Reload: read and validate the file completely, build the new state off the hot path,
//! bind new listeners, then publish it with one atomic swap. Any failure keeps the running
//! configuration untouched.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::listener::{self, Running};
use crate::server::Shared;
use crate::upstream::Snapshot;

/// Reloads from the running configuration's path. Errors are logged, never returned: a bad
/// file must not disturb serving.
pub async fn reload(shared: &Arc<Shared>, running: &mut HashMap<String, Running>) {
    let current = shared.state.load_full();
    // Counted before the log line, so whoever reads the line sees the count.
    match try_reload(shared, &current, running).await {
        Ok(changes) => {
            crate::metrics::config_reload(true);
            tracing::info!(changes, "configuration reloaded");
        }
        Err(e) => {
            crate::metrics::config_reload(false);
            tracing::error!("reload failed, keeping the running configuration: error: {e}");
        }
    }
}

async fn try_reload(
    shared: &Arc<Shared>,
    current: &Snapshot,
    running: &mut HashMap<String, Running>,
) -> Result<usize, String> {
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
    let snapshot =
        Snapshot::build(Arc::clone(&config), Some(current), resolved).map_err(|e| e.to_string())?;

    // Listeners whose bind stays keep their socket; only new binds are bound, all of them
    // before anything changes, so a bind failure leaves the old configuration whole.
    let by_bind: HashMap<_, _> = running.values().map(|r| (r.bind, r)).collect();
    let mut sockets = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let socket = match by_bind.get(&l.bind) {
            Some(r) => r.socket.try_clone(),
            None => listener::bind(l.bind),
        }
        .map_err(|e| format!("listener \"{}\": cannot bind {}: {e}", l.name, l.bind))?;
        sockets.push((l, socket));
    }

    let plan = describe_changes(&current.config, &config);
    snapshot.publish();
    shared.state.store(Arc::new(snapshot));
    shared.checkers.reconcile(shared);

    // A fresh accept loop per listener: the kernel queues connections that arrive between the
    // old loop stopping and the new one starting, so none is refused. Old loops' connections
    // keep going and are tracked until they end.
    let mut next = HashMap::with_capacity(sockets.len());
    for (l, socket) in sockets {
        // A listener that stays keeps counting (and limiting) the connections it has.
        let previous = running.get(&l.name).filter(|r| r.bind == l.bind);
        match listener::spawn(l, socket, previous, Arc::clone(shared)) {
            Ok(r) => {
                next.insert(l.name.clone(), r);
            }
            Err(e) => tracing::error!(listener = %l.name, error = %e, "cannot start accepting"),
        }
    }
    for (name, old) in running.drain() {
        let removed = next.get(&name).is_none_or(|n: &Running| n.bind != old.bind);
        shared.retire(old, removed);
    }
    *running = next;
    shared.publish_active(running);
    for line in &plan {
        tracing::info!("reload: {line}");
    }
    Ok(plan.len())
}

/// What a reload changes, one line per change, for the operator.
pub fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            None => out.push(format!("listener \"{}\" added on {}", l.name, l.bind)),
            Some(o) if o.bind != l.bind => out.push(format!(
                "listener \"{}\" moved from {} to {}",
                l.name, o.bind, l.bind
            )),
            Some(o) => {
                if o.upstream != l.upstream
                    || o.protocol != l.protocol
                    || o.max_connections != l.max_connections
                    || o.timeouts != l.timeouts
                    || o.proxy_protocol != l.proxy_protocol
                {
                    out.push(format!("listener \"{}\" settings changed", l.name));
                }
                let certs = |t: &Option<crate::config::ListenerTls>| {
                    t.as_ref().map(|t| {
                        t.certificates
                            .iter()
                            .map(|c| c.key.cert.clone())
                            .collect::<Vec<_>>()
                    })
                };
                if certs(&o.tls) != certs(&l.tls) {
                    out.push(format!("listener \"{}\" certificates replaced", l.name));
                }
            }
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            out.push(format!("listener \"{}\" removed from {}", o.name, o.bind));
        }
    }
    for u in &new.upstreams {
        let Some(o) = old.upstream(&u.name) else {
            out.push(format!("upstream \"{}\" added", u.name));
            continue;
        };
        for b in &u.backends {
            match o.backends.iter().find(|ob| ob.addr == b.addr) {
                None => out.push(format!("upstream \"{}\": backend {} added", u.name, b.addr)),
                Some(ob) if ob.weight != b.weight => out.push(format!(
                    "upstream \"{}\": backend {} weight {} -> {}",
                    u.name, b.addr, ob.weight, b.weight
                )),
                Some(_) => {}
            }
        }
        for ob in &o.backends {
            if !u.backends.iter().any(|b| b.addr == ob.addr) {
                out.push(format!(
                    "upstream \"{}\": backend {} removed",
                    u.name, ob.addr
                ));
            }
        }
        if o.balance != u.balance
            || o.connect_timeout != u.connect_timeout
            || o.response_timeout != u.response_timeout
            || o.retries != u.retries
            || o.send_proxy_protocol != u.send_proxy_protocol
            || o.slow_start != u.slow_start
            || o.health != u.health
            || o.resolve_interval != u.resolve_interval
            || o.tls.is_some() != u.tls.is_some()
        {
            out.push(format!("upstream \"{}\" settings changed", u.name));
        }
    }
    for o in &old.upstreams {
        if new.upstream(&o.name).is_none() {
            out.push(format!("upstream \"{}\" removed", o.name));
        }
    }
    out
}
