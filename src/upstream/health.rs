//! A backend's health as the upstream changes it: up and down (with the log line and gauge),
//! slow start, the trial of `check = "none"`, and the outcomes that decide them (passive:
//! live traffic; active: checks) through the thresholds.

use std::sync::atomic::Ordering;

use super::{SLOW_START_FLOOR, Trial, Upstream};

impl Upstream {
    /// Marks backend `index` up or down. Returns true when that changed its state; a change
    /// closes any trial, starts a slow start (when configured) and wakes the checker. The
    /// caller logs it (`set_up`, `set_down` do).
    pub fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        let Some(backend) = self.backends.get(index) else {
            return false;
        };
        let (balancer, id) = (&backend.balancer, backend.id);
        // The share is lowered in the same step that schedules the backend, so no pick sees
        // it at full weight; the checker ramps it from here.
        let changed = if healthy && !self.conf.slow_start.is_zero() {
            balancer.recover(id, SLOW_START_FLOOR)
        } else {
            balancer.set_healthy(id, healthy)
        };
        if changed {
            backend.changed.notify_one();
        }
        changed
    }

    /// Slow start: backend `index` gets `permille` (1..=1000) of its weight.
    pub fn set_permille(&self, index: usize, permille: u32) {
        if let Some(b) = self.backends.get(index) {
            b.balancer.set_permille(b.id, permille);
        }
    }

    /// `check = "none"`: puts down backend `index` back in the balancer for one trial. A trial
    /// taken but never decided (a session that neither failed nor ended) must not keep the
    /// backend down for good: it is opened again.
    pub fn open_trial(&self, index: usize) {
        if let Some(b) = self.backends.get(index) {
            b.balancer.open_trial(b.id);
        }
    }

    /// Ends any trial of backend `index` (its upstream no longer has `check = "none"`): active
    /// checks alone bring it back.
    pub fn close_trial(&self, index: usize) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        b.balancer.close_trial(b.id, Trial::Open);
        b.balancer.close_trial(b.id, Trial::Taken);
    }

    /// Marks backend `index` down and logs why, if it was up.
    pub fn set_down(&self, index: usize, reason: &str) {
        if self.set_healthy(index, false)
            && let Some(b) = self.backends.get(index)
        {
            tracing::info!(upstream = %self.name, addr = %b.addr, reason, "backend down");
            crate::metrics::backend_healthy(&self.name, &b.addr, false);
        }
    }

    /// Marks backend `index` up and logs it, if it was down.
    pub fn set_up(&self, index: usize) {
        if self.set_healthy(index, true)
            && let Some(b) = self.backends.get(index)
        {
            tracing::info!(upstream = %self.name, addr = %b.addr, "backend up");
            crate::metrics::backend_healthy(&self.name, &b.addr, true);
        }
    }

    pub fn has_healthy_backend(&self) -> bool {
        self.backends.iter().any(|b| b.is_healthy())
    }
}

impl Upstream {
    /// Passive health: a live connection or response to backend `index` failed. Enough in a
    /// row mark it down; a failed trial keeps it down for another `interval`. Called by
    /// `Upstream::fail`, which also counts and logs it (and by the health unit tests).
    pub(crate) fn record_failure(&self, index: usize, kind: &'static str) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        b.failures.fetch_add(1, Ordering::Relaxed);
        if b.balancer.close_trial(b.id, Trial::Taken) {
            tracing::debug!(upstream = %self.name, addr = %b.addr, reason = kind, "trial failed");
            b.changed.notify_one();
        }
        self.record(index, false, kind);
    }

    /// A live exchange with backend `index` succeeded: the failure count starts again, and a
    /// trial that succeeds marks the backend up.
    pub fn record_success(&self, index: usize) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        b.tracker.reset_failures();
        if b.trial() == Trial::Taken {
            self.set_up(index);
        }
    }

    /// The outcome of an active check of backend `index`.
    pub fn record_check(&self, index: usize, pass: bool, reason: &str) {
        if let Some(b) = self.backends.get(index) {
            crate::metrics::health_check(&self.name, &b.addr, pass);
            if pass {
                b.passed_check.store(true, Ordering::Relaxed);
            }
        }
        self.record(index, pass, reason);
    }

    /// Feeds one outcome to the thresholds and applies the change they decide.
    fn record(&self, index: usize, ok: bool, reason: &str) {
        let Some(b) = self.backends.get(index) else {
            return;
        };
        let h = &self.conf.health;
        match b.tracker.record(
            ok,
            b.is_healthy(),
            h.unhealthy_threshold,
            h.healthy_threshold,
        ) {
            Some(true) => self.set_up(index),
            Some(false) => self.set_down(index, reason),
            None => {}
        }
    }
}
