//! The balancing core: which backend gets the next request or session. Pure algorithms over
//! backend indices and weights, no I/O, no sockets.
//!
//! # Schedule
//! An earliest-deadline-first schedule over virtual time (as Envoy does for weighted round
//! robin): backend `i` of weight `w` owns the slots `(2k-1) / 2w`, k = 1, 2, ... The half
//! offset puts the `w` slots of each unit interval `(p-1, p)` in its middle, so the backends
//! interleave (weights 3,1 give `0 0 1 0`, as nginx's smooth weighted round robin does), and
//! shifting by one unit maps the slot set onto itself: the pick sequence repeats with period
//! `sum(weights)`, so *every* window of `sum(weights)` consecutive picks holds each backend
//! exactly `w` times. Ties go to the lower index, the same in every period.
//!
//! - `RoundRobin` picks the earliest slot and ignores load.
//! - `LeastLoad` picks the lowest `in_flight / weight` (exact rationals, `L = R / C`), the
//!   earliest slot among equal loads (nginx `least_conn`). Released between picks, all loads
//!   are 0 and it is exactly round robin.
//!
//! Slow start scales weights to `weight * permille`, which stays integral for 10% of weight 1.
//! A pick costs O(log n): the healthy backends sit in one ordered set keyed by
//! `(load, deadline, index)`, updated on pick and (least load) on release.

mod schedule;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use schedule::Schedule;

/// The balancing policy of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastLoad,
}

/// Scale of effective weights: slow start sets a backend to 100..=1000 permille of its weight.
pub const FULL: u32 = 1000;

/// A thread-safe scheduler over backends `0..len`.
#[derive(Debug)]
pub struct Balancer {
    len: usize,
    policy: Policy,
    /// One short critical section per call: a couple of B-tree operations, no allocation
    /// beyond a tree node, no I/O.
    schedule: Mutex<Schedule>,
}

impl Balancer {
    /// All backends start healthy, in flight 0, at full weight. `weights` are 1..=1000; a
    /// weight outside is clamped into that range rather than rejected (config validates).
    pub fn new(policy: Policy, weights: &[u32]) -> Balancer {
        Balancer {
            len: weights.len(),
            policy,
            schedule: Mutex::new(Schedule::new(policy, weights)),
        }
    }

    /// The schedule is consistent after every statement that can panic (none should), so a
    /// poisoned lock is used as is: the proxy keeps balancing instead of failing every request.
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Picks a healthy backend and counts one in flight on it; `None` when none is healthy.
    pub fn pick(&self) -> Option<usize> {
        self.lock().pick(&[])
    }

    /// As `pick`, skipping the indices in `tried` (failover: no backend twice per request).
    pub fn pick_excluding(&self, tried: &[usize]) -> Option<usize> {
        self.lock().pick(tried)
    }

    /// Ends one in-flight unit on `index` (a pick's request or session ended). Saturates at 0;
    /// an index out of range is ignored.
    pub fn release(&self, index: usize) {
        self.lock().release(index);
    }

    /// Picks and returns a guard that releases on drop.
    pub fn pick_guard(self: &Arc<Self>) -> Option<Pick> {
        let index = self.pick()?;
        Some(Pick {
            balancer: Arc::clone(self),
            index,
        })
    }

    /// Takes `index` out of scheduling or puts it back. A backend put back starts at the
    /// current virtual time: it does not get a burst for the slots it missed. Its in-flight
    /// count is kept throughout.
    pub fn set_healthy(&self, index: usize, healthy: bool) {
        self.lock().set_healthy(index, healthy);
    }

    /// Slow start: the effective weight becomes `weight * permille / 1000`, permille 1..=1000
    /// (clamped).
    pub fn set_permille(&self, index: usize, permille: u32) {
        self.lock().set_permille(index, permille);
    }

    /// Seeds the in-flight count of `index`: a reload builds a new balancer while requests
    /// picked from the old one are still open, and least load must see them.
    pub fn set_in_flight(&self, index: usize, n: u64) {
        self.lock().set_in_flight(index, n);
    }

    /// Requests or sessions picked on `index` and not yet released; 0 out of range.
    pub fn in_flight(&self, index: usize) -> u64 {
        self.lock().in_flight(index)
    }

    /// Whether `index` is scheduled; false out of range.
    pub fn is_healthy(&self, index: usize) -> bool {
        self.lock().is_healthy(index)
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One in-flight unit on a backend, released when dropped.
#[derive(Debug)]
pub struct Pick {
    balancer: Arc<Balancer>,
    index: usize,
}

impl Pick {
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.balancer.release(self.index);
    }
}
