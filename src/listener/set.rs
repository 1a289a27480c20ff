//! The running listeners, and how a reload changes them in two steps: `prepare` does all
//! that can fail (binding new addresses, registering sockets) while the old configuration
//! still serves alone; `commit`, after the new snapshot is published, cannot fail.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Drain, Ready, Running};
use crate::config::{Config, Listener};
use crate::snapshot::Live;

/// Every running accept loop, by listener name.
#[derive(Debug, Default)]
pub struct Listeners {
    running: HashMap<String, Running>,
}

/// Why a listener cannot start.
#[derive(Debug, thiserror::Error)]
#[error("listener \"{name}\": cannot bind {addr}: {source}")]
pub struct BindError {
    pub name: String,
    pub addr: SocketAddr,
    pub source: io::Error,
}

/// What a reload will do to the listeners, with all that can fail already done.
#[derive(Debug)]
pub struct Prepared {
    /// Listeners that need a new accept loop (new, renamed or moved), ready to start.
    start: Vec<(Listener, Ready)>,
}

impl Listeners {
    /// Binds every listener of `config` (a start): all before any serves, so a bad bind fails
    /// the start, not half of it.
    pub fn bind_all(config: &Config) -> Result<Prepared, BindError> {
        Listeners::default().prepare(config)
    }

    /// Readies a new accept loop for every listener of `config` that is not running with the
    /// same name and bind. A bind that stays is handed over (same socket, no refused
    /// connection); any other is bound now.
    pub fn prepare(&self, config: &Config) -> Result<Prepared, BindError> {
        let mut start = Vec::new();
        for l in &config.listeners {
            if self.keeps(l) {
                continue;
            }
            let by_bind = self.running.values().find(|r| r.bind == l.bind);
            let ready = match by_bind {
                Some(r) => r.socket.try_clone(),
                None => super::bind(l.bind),
            }
            .and_then(Ready::new)
            .map_err(|source| BindError {
                name: l.name.clone(),
                addr: l.bind,
                source,
            })?;
            start.push((l.clone(), ready));
        }
        Ok(Prepared { start })
    }

    /// Whether listener `l` runs already with the same name and bind: it keeps its accept
    /// loop, connection count and limit.
    fn keeps(&self, l: &Listener) -> bool {
        self.running.get(&l.name).is_some_and(|r| r.bind == l.bind)
    }

    /// Brings the running listeners in line with `config`, whose snapshot `live` now holds:
    /// listeners that stay get their new settings, prepared ones start, the rest stop
    /// accepting. Connections of a listener that is gone (or moved) are asked to close and
    /// are cut off after `shutdown_timeout`; those of a listener that stays go on.
    pub fn commit(&mut self, config: &Config, prepared: Prepared, live: &Arc<Live>, drain: &Drain) {
        let mut next = HashMap::with_capacity(config.listeners.len());
        for l in &config.listeners {
            if self.keeps(l)
                && let Some(mut r) = self.running.remove(&l.name)
            {
                r.update(l);
                next.insert(l.name.clone(), r);
            }
        }
        for (l, ready) in prepared.start {
            let r = Running::start(&l, ready, live, drain);
            tracing::info!(listener = %l.name, bind = %l.bind, protocol = l.protocol.as_str(), "listening");
            next.insert(l.name.clone(), r);
        }
        for (_, old) in self.running.drain() {
            old.retire(config.runtime.shutdown_timeout);
        }
        self.running = next;
    }

    /// Stops every accept loop (the drain at shutdown); their connections go on.
    pub fn stop_all(&mut self) {
        for (_, r) in self.running.drain() {
            r.stop();
        }
    }
}
