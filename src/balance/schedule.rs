//! The earliest-deadline-first schedule behind `Balancer`, single-threaded; `Balancer` wraps
//! it in a mutex.
//!
//! Backend `i` with scaled weight `W = weight * permille` has its k-th slot at virtual time
//! `(2k-1) / (2W)`, kept as an exact rational: an odd numerator over `2W`. Round robin picks
//! the earliest slot; least load picks the lowest `in_flight / W` and, among equal loads, the
//! earliest slot. Both come from one ordered index of keys `(load, deadline, index)` (load is
//! 0 for round robin), so a pick is two O(log n) tree operations, never a scan.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use super::{FULL, Policy};

/// Weights are 1..=1000 by config; the clamp keeps the numeric bounds below true anyway.
const MAX_WEIGHT: u32 = 1000;

/// Once virtual time reaches this, its whole part is subtracted from every deadline (O(n),
/// at most once per 2^20 picks). This keeps numerators below ~2^42 (2^20 × 2·10^6) for any
/// uptime instead of creeping towards `u64::MAX`; shifting by whole units keeps every backend
/// on its grid, so the order and the window property are unchanged.
const RENORMALIZE_AT: u64 = 1 << 20;

/// A non-negative rational `num / den` with `den > 0`, compared exactly: floats would make
/// equal loads compare unequal and break the tie-breaking that gives the window property.
#[derive(Debug, Clone, Copy)]
struct Ratio {
    num: u64,
    den: u64,
}

impl Ratio {
    const ZERO: Ratio = Ratio { num: 0, den: 1 };
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        // Both products fit: u64 × u64 < 2^128.
        (u128::from(self.num) * u128::from(other.den))
            .cmp(&(u128::from(other.num) * u128::from(self.den)))
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ratio {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Ratio {}

/// `(load, deadline, index)`: the index makes keys unique and breaks ties the same way in
/// every period, which the window property needs.
type Key = (Ratio, Ratio, usize);

#[derive(Debug)]
struct Backend {
    weight: u32,
    permille: u32,
    healthy: bool,
    in_flight: u64,
    /// Numerator (odd) of the next deadline, over `2 * scaled()`.
    next: u64,
}

impl Backend {
    /// `weight * permille`: integer even for 10% of weight 1, at most 10^6.
    fn scaled(&self) -> u64 {
        u64::from(self.weight) * u64::from(self.permille)
    }

    fn deadline(&self) -> Ratio {
        Ratio {
            num: self.next,
            den: 2 * self.scaled(),
        }
    }

    fn load(&self) -> Ratio {
        Ratio {
            num: self.in_flight,
            den: self.scaled(),
        }
    }

    /// Numerator of this backend's first slot at or after `t`: the smallest odd `m` with
    /// `m / 2W >= t`.
    fn slot_at_or_after(&self, t: Ratio) -> u64 {
        let x = (2 * u128::from(self.scaled()) * u128::from(t.num)).div_ceil(u128::from(t.den));
        u64::try_from(x | 1).unwrap_or(u64::MAX)
    }

    /// Numerator of this backend's first slot strictly after `t`.
    fn slot_after(&self, t: Ratio) -> u64 {
        let x = 2 * u128::from(self.scaled()) * u128::from(t.num) / u128::from(t.den) + 1;
        u64::try_from(x | 1).unwrap_or(u64::MAX)
    }
}

#[derive(Debug)]
pub(super) struct Schedule {
    policy: Policy,
    backends: Vec<Backend>,
    /// Keys of the healthy backends only.
    queue: BTreeSet<Key>,
    /// Virtual time: the latest deadline picked. Recoveries and weight changes start from it,
    /// so a backend never "catches up" a burst of slots it missed.
    now: Ratio,
}

impl Schedule {
    pub(super) fn new(policy: Policy, weights: &[u32]) -> Schedule {
        let backends = weights
            .iter()
            .map(|&w| Backend {
                weight: w.clamp(1, MAX_WEIGHT),
                permille: FULL,
                healthy: true,
                in_flight: 0,
                next: 1,
            })
            .collect();
        let mut schedule = Schedule {
            policy,
            backends,
            queue: BTreeSet::new(),
            now: Ratio::ZERO,
        };
        schedule.queue = (0..schedule.backends.len())
            .filter_map(|i| schedule.key(i))
            .collect();
        schedule
    }

    /// The queue key of backend `i`; `None` only for an index out of range.
    fn key(&self, i: usize) -> Option<Key> {
        let b = self.backends.get(i)?;
        let load = match self.policy {
            Policy::RoundRobin => Ratio::ZERO,
            Policy::LeastLoad => b.load(),
        };
        Some((load, b.deadline(), i))
    }

    /// Removes `i` from the queue (if healthy), lets `f` change it, and queues it again (if
    /// healthy then), so the queue key always matches the backend's state.
    fn requeue(&mut self, i: usize, f: impl FnOnce(&mut Backend, Ratio)) {
        let now = self.now;
        let Some(b) = self.backends.get_mut(i) else {
            return;
        };
        let was_healthy = b.healthy;
        if was_healthy && let Some(key) = self.key(i) {
            self.queue.remove(&key);
        }
        if let Some(b) = self.backends.get_mut(i) {
            f(b, now);
        }
        if self.backends.get(i).is_some_and(|b| b.healthy)
            && let Some(key) = self.key(i)
        {
            self.queue.insert(key);
        }
    }

    pub(super) fn pick(&mut self, tried: &[usize]) -> Option<usize> {
        let &(_, deadline, i) = self.queue.iter().find(|k| !tried.contains(&k.2))?;
        if deadline > self.now {
            self.now = deadline;
        }
        let policy = self.policy;
        self.requeue(i, |b, now| {
            b.in_flight = b.in_flight.saturating_add(1);
            // Under least load, a backend that stayed busy while others were picked has a
            // deadline far behind `now` and would win every tie until it caught up: it is
            // taken as picked in its first slot after `now` instead. (Round robin's pick
            // is behind `now` only when failover skipped earlier slots; those keep their turn.)
            if policy == Policy::LeastLoad && b.deadline() < now {
                b.next = b.slot_after(now);
            }
            b.next = b.next.saturating_add(2);
        });
        if self.now.num >= self.now.den.saturating_mul(RENORMALIZE_AT) {
            self.renormalize();
        }
        Some(i)
    }

    pub(super) fn release(&mut self, i: usize) {
        match self.backends.get(i) {
            None | Some(Backend { in_flight: 0, .. }) => {}
            Some(b) if !b.healthy || self.policy == Policy::RoundRobin => {
                if let Some(b) = self.backends.get_mut(i) {
                    b.in_flight -= 1;
                }
            }
            Some(_) => self.requeue(i, |b, _| b.in_flight -= 1),
        }
    }

    pub(super) fn set_in_flight(&mut self, i: usize, n: u64) {
        if self.backends.get(i).is_some_and(|b| b.in_flight != n) {
            self.requeue(i, |b, _| b.in_flight = n);
        }
    }

    pub(super) fn set_healthy(&mut self, i: usize, healthy: bool) {
        if self.backends.get(i).is_none_or(|b| b.healthy == healthy) {
            return;
        }
        self.requeue(i, |b, now| {
            b.healthy = healthy;
            if healthy {
                b.next = b.next.max(b.slot_at_or_after(now));
            }
        });
    }

    pub(super) fn set_permille(&mut self, i: usize, permille: u32) {
        let permille = permille.clamp(1, FULL);
        if self.backends.get(i).is_none_or(|b| b.permille == permille) {
            return;
        }
        self.requeue(i, |b, now| {
            // The pending slot keeps its time, rounded up onto the new grid (no bonus pick),
            // but waits at most about one new period: a backend ramping up from 10% does not
            // sit out the long gap of its old weight. A small inexactness, only while ramping.
            let pending = b.deadline();
            b.permille = permille;
            let earliest = b.slot_at_or_after(now);
            b.next = b
                .slot_at_or_after(pending)
                .clamp(earliest, earliest.saturating_add(2));
        });
    }

    pub(super) fn in_flight(&self, i: usize) -> u64 {
        self.backends.get(i).map_or(0, |b| b.in_flight)
    }

    pub(super) fn is_healthy(&self, i: usize) -> bool {
        self.backends.get(i).is_some_and(|b| b.healthy)
    }

    /// Subtracts the whole part of `now` from all times (see `RENORMALIZE_AT`).
    fn renormalize(&mut self) {
        let whole = self.now.num / self.now.den;
        self.now.num -= whole * self.now.den;
        for b in &mut self.backends {
            // Even (a multiple of 2W), so the numerator stays odd. A stale deadline of an
            // unhealthy backend bottoms out at the first slot; recovery lifts it to `now`.
            let shift = whole.saturating_mul(2 * b.scaled());
            b.next = b.next.checked_sub(shift).filter(|&n| n > 0).unwrap_or(1);
        }
        self.queue = (0..self.backends.len())
            .filter(|&i| self.backends.get(i).is_some_and(|b| b.healthy))
            .filter_map(|i| self.key(i))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renormalizing_keeps_the_sequence() {
        let weights = [3, 1, 2];
        let mut plain = Schedule::new(Policy::RoundRobin, &weights);
        let mut shifted = Schedule::new(Policy::RoundRobin, &weights);
        for step in 0..60 {
            if step % 7 == 3 {
                shifted.renormalize();
            }
            let a = plain.pick(&[]);
            let b = shifted.pick(&[]);
            assert_eq!(a, b, "shifting virtual time must not change the order");
        }
        assert!(shifted.now < Ratio { num: 1, den: 1 });
    }

    #[test]
    fn slot_rounds_up_to_odd_numerator() {
        let b = Backend {
            weight: 2,
            permille: FULL,
            healthy: true,
            in_flight: 0,
            next: 1,
        };
        // Grid of W = 2000: slots (2k-1)/4000.
        assert_eq!(b.slot_at_or_after(Ratio::ZERO), 1);
        assert_eq!(b.slot_at_or_after(Ratio { num: 1, den: 4000 }), 1);
        assert_eq!(b.slot_at_or_after(Ratio { num: 2, den: 4000 }), 3);
        assert_eq!(b.slot_at_or_after(Ratio { num: 1, den: 1 }), 4001);
        assert_eq!(b.slot_after(Ratio::ZERO), 1);
        assert_eq!(b.slot_after(Ratio { num: 1, den: 4000 }), 3);
        assert_eq!(b.slot_after(Ratio { num: 2, den: 4000 }), 3);
    }
}
