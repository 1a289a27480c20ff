//! The balancing core: which backend gets the next request or session. Pure algorithms over
//! members and weights, no I/O, no sockets.
//!
//! # State
//! A `Balancer` is the one owner of its members' scheduling state: weight, health, trial,
//! slow-start share (permille) and in-flight count. Nothing else keeps a copy: readers (admin,
//! metrics, health checks) ask the balancer. A member has a `MemberId` that never changes and
//! is never reused, so the balancer can be kept across reloads (`apply` sets the new
//! membership, weights and policy) and a release for a member that left is simply ignored.
//!
//! # Schedule
//! An earliest-deadline-first schedule over virtual time (as Envoy does for weighted round
//! robin): a member of weight `w` owns the slots `(2k-1) / 2w`, k = 1, 2, ... The half
//! offset puts the `w` slots of each unit interval `(p-1, p)` in its middle, so the members
//! interleave (weights 3,1 give `0 0 1 0`, as nginx's smooth weighted round robin does), and
//! shifting by one unit maps the slot set onto itself: the pick sequence repeats with period
//! `sum(weights)`, so *every* window of `sum(weights)` consecutive picks holds each member
//! exactly `w` times. Ties go to the lower id (the older member), the same in every period.
//!
//! - `RoundRobin` picks the earliest slot and ignores load.
//! - `LeastLoad` picks the lowest `in_flight / weight` (exact rationals, `L = R / C`), the
//!   earliest slot among equal loads (nginx `least_conn`). Released between picks, all loads
//!   are 0 and it is exactly round robin.
//!
//! Slow start scales weights to `weight * permille`, which stays integral for 10% of weight 1.
//! A member that comes back (up again, open for a trial, or new) starts at the current
//! virtual time: no burst for the slots it missed. A down member open for its trial is
//! picked once, then leaves the queue until the outcome is known.
//! A pick costs O(log n): the queued members sit in one ordered set keyed by
//! `(load, deadline, id)`, updated on pick and (least load) on release.

#[cfg(test)]
mod lifecycle_tests;
mod member;
#[cfg(test)]
mod proptests;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use schedule::Schedule;

/// The balancing policy of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastLoad,
}

/// Scale of effective weights: slow start sets a member to 100..=1000 permille of its weight.
pub const FULL: u32 = 1000;

/// A member's identity in its balancer, for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(u64);

impl MemberId {
    /// A new id, unique in the process. Taking one touches no balancer, so building a
    /// configuration that is never published changes nothing shared.
    pub fn fresh() -> MemberId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        MemberId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Hashes a `MemberId` with one multiply (Fibonacci hashing): ids are sequential, and SipHash
/// would cost about as much as the rest of a pick.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by member id.
pub type IdMap<V> = HashMap<MemberId, V, BuildHasherDefault<IdHasher>>;

/// The trial of a down member (`check = "none"` upstreams).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trial {
    /// No trial: a down member is out of the queue.
    Closed,
    /// Back in the queue, waiting for the next pick to become the trial.
    Open,
    /// Picked: out of the queue again until the trial's outcome is recorded.
    Taken,
}

/// A member's scheduling state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// 1..=1000.
    pub weight: u32,
    /// The share of its weight it gets now (slow start), 1..=1000.
    pub permille: u32,
    pub healthy: bool,
    pub trial: Trial,
    /// Requests or sessions picked here and not yet released.
    pub in_flight: u64,
}

/// The outcome of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    pub id: MemberId,
    /// The pick took the trial of a down member.
    pub trial: bool,
}

/// A thread-safe scheduler over a set of members.
pub struct Balancer {
    /// One short critical section per call: a couple of B-tree operations and a hash lookup,
    /// no allocation beyond a tree node, no I/O.
    schedule: Mutex<Schedule>,
}

impl std::fmt::Debug for Balancer {
    /// Short: every backend of an upstream holds its balancer, and printing all members once
    /// per backend would be quadratic.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Balancer");
        // `try_lock`: printing must never wait for (or deadlock on) a pick.
        if let Ok(s) = self.schedule.try_lock() {
            d.field("policy", &s.policy()).field("members", &s.len());
        }
        d.finish_non_exhaustive()
    }
}

impl Balancer {
    /// A balancer over `members` (id, weight), all up, idle, at full share. Weights are
    /// 1..=1000; one outside is clamped into that range rather than rejected (config
    /// validates).
    pub fn new(policy: Policy, members: &[(MemberId, u32)]) -> Balancer {
        let mut schedule = Schedule::new(policy);
        schedule.apply(policy, members);
        Balancer {
            schedule: Mutex::new(schedule),
        }
    }

    /// The schedule is consistent after every statement that can panic (none should), so a
    /// poisoned lock is used as is: the proxy keeps balancing instead of failing every request.
    fn lock(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `members` (id, weight) the membership and `policy` the policy. Members listed
    /// before keep their health, trial, share, in-flight count and place in the rotation;
    /// new ones join up and idle at the current virtual time; the others leave.
    pub fn apply(&self, policy: Policy, members: &[(MemberId, u32)]) {
        self.lock().apply(policy, members);
    }

    /// Picks a queued member and counts one in flight on it; `None` when there is none.
    pub fn pick(&self) -> Option<Picked> {
        self.lock().pick(|_| true)
    }

    /// As `pick`, among the members `accept` takes (failover: no backend twice per request),
    /// asked in pick order. O(log n) plus one call per member passed over.
    pub fn pick_where(&self, accept: impl FnMut(MemberId) -> bool) -> Option<Picked> {
        self.lock().pick(accept)
    }

    /// Ends one in-flight unit on `id` (a pick's request or session ended). Saturates at 0; a
    /// member not in the balancer (any more) is ignored.
    pub fn release(&self, id: MemberId) {
        self.lock().release(id);
    }

    /// Picks and returns a guard that releases on drop.
    pub fn pick_guard(self: &Arc<Self>) -> Option<Pick> {
        let id = self.pick()?.id;
        Some(Pick {
            balancer: Arc::clone(self),
            id,
        })
    }

    /// Takes `id` out of scheduling or puts it back; true when that changed its health. A
    /// change closes any trial. Its in-flight count is kept throughout.
    pub fn set_healthy(&self, id: MemberId, healthy: bool) -> bool {
        self.lock().set_healthy(id, healthy, None)
    }

    /// As `set_healthy(id, true)`, the share set to `permille` in the same step (slow start),
    /// so no pick sees the member at full weight.
    pub fn recover(&self, id: MemberId, permille: u32) -> bool {
        self.lock().set_healthy(id, true, Some(permille))
    }

    /// Slow start: the effective weight becomes `weight * permille / 1000`, permille 1..=1000
    /// (clamped).
    pub fn set_permille(&self, id: MemberId, permille: u32) {
        self.lock().set_permille(id, permille);
    }

    /// Puts a down member back in the queue for one trial (again, when a trial taken was
    /// never decided); false when it is up or its trial already open.
    pub fn open_trial(&self, id: MemberId) -> bool {
        self.lock().open_trial(id)
    }

    /// Moves the trial of `id` from `from` to `Trial::Closed`, out of the queue; false when
    /// it was not in `from`.
    pub fn close_trial(&self, id: MemberId, from: Trial) -> bool {
        self.lock().close_trial(id, from)
    }

    /// The state of member `id`; `None` when it is not (or no longer) a member.
    pub fn state(&self, id: MemberId) -> Option<State> {
        self.lock().state(id)
    }

    pub fn policy(&self) -> Policy {
        self.lock().policy()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One in-flight unit on a member, released when dropped.
#[derive(Debug)]
pub struct Pick {
    balancer: Arc<Balancer>,
    id: MemberId,
}

impl Pick {
    pub fn id(&self) -> MemberId {
        self.id
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.balancer.release(self.id);
    }
}
