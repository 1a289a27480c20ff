//! What the admin listener reads: the running snapshot, whether the process drains, and how
//! the last reload went. The server writes the last two; nothing here reaches back into it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;

use crate::snapshot::Live;

/// The admin listener's handle on the process.
#[derive(Debug)]
pub struct State {
    pub live: Arc<Live>,
    /// Set at the first shutdown signal: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    last_reload: Mutex<Option<LastReload>>,
}

/// `config.last_reload` of `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct LastReload {
    /// RFC 3339, UTC.
    pub at: String,
    /// "success" or "failure".
    pub result: &'static str,
    /// The error line of a failed reload.
    pub error: Option<String>,
}

impl State {
    pub fn new(live: Arc<Live>) -> State {
        State {
            live,
            draining: AtomicBool::new(false),
            last_reload: Mutex::new(None),
        }
    }

    /// The process stops being ready: the first step of the drain.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records the outcome of a reload (or re-resolution failure) for `/status`.
    pub fn reloaded(&self, outcome: &Result<(), String>) {
        let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let last = match outcome {
            Ok(()) => LastReload {
                at,
                result: "success",
                error: None,
            },
            Err(e) => LastReload {
                at,
                result: "failure",
                error: Some(e.clone()),
            },
        };
        *self
            .last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(last);
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        self.last_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the process is not ready, one line per reason; empty when it is. An upstream is
    /// ready when one of its backends is healthy and, with active checks, has passed a check:
    /// a pod whose backends nobody has looked at yet is not Ready.
    pub fn not_ready(&self) -> Vec<String> {
        if self.is_draining() {
            return vec!["draining".into()];
        }
        let snapshot = self.live.load();
        let mut down: Vec<String> = snapshot
            .upstreams
            .values()
            .filter_map(|u| {
                if !u.has_healthy_backend() {
                    Some(format!("upstream \"{}\" has no healthy backend", u.name))
                } else if u.conf.health.check != crate::config::Check::None
                    && !u
                        .backends
                        .iter()
                        .any(|b| b.has_passed_a_check() && b.is_healthy())
                {
                    Some(format!(
                        "upstream \"{}\" has no backend checked yet",
                        u.name
                    ))
                } else {
                    None
                }
            })
            .collect();
        down.sort_unstable();
        down
    }
}
