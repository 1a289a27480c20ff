//! The pure threshold counter that turns outcomes into up/down decisions (as rust-rpxy's:
//! `record` returns `Some` only on a change), kept apart from probes and tasks.

use std::sync::atomic::{AtomicU32, Ordering};

/// Consecutive failures and passes of one backend. Outcomes of checks and of live traffic
/// both land here; thresholds come from the upstream's config at each call, so a reload that
/// changes them applies to the next outcome.
#[derive(Debug, Default)]
pub struct Tracker {
    failures: AtomicU32,
    passes: AtomicU32,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// A live success: it resets the failure count but is not a passing check.
    pub fn reset_failures(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Records one outcome for a backend that is currently `up`; returns `Some(new state)`
    /// only when the thresholds say the state changes.
    pub fn record(&self, ok: bool, up: bool, unhealthy: u32, healthy: u32) -> Option<bool> {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            let passes = self
                .passes
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            (!up && passes >= healthy).then(|| {
                self.passes.store(0, Ordering::Relaxed);
                true
            })
        } else {
            self.passes.store(0, Ordering::Relaxed);
            let failures = self
                .failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            (up && failures >= unhealthy).then(|| {
                self.failures.store(0, Ordering::Relaxed);
                false
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_mark_down_and_passes_mark_up() {
        let t = Tracker::new();
        assert_eq!(t.record(false, true, 3, 2), None);
        assert_eq!(t.record(false, true, 3, 2), None);
        assert_eq!(
            t.record(false, true, 3, 2),
            Some(false),
            "third failure marks down"
        );
        assert_eq!(t.record(true, false, 3, 2), None);
        assert_eq!(
            t.record(true, false, 3, 2),
            Some(true),
            "second pass marks up"
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t = Tracker::new();
        t.record(false, true, 2, 2);
        t.record(true, true, 2, 2);
        assert_eq!(
            t.record(false, true, 2, 2),
            None,
            "count restarted after a success"
        );
        assert_eq!(t.record(false, true, 2, 2), Some(false));
    }
}
