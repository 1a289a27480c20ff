//! The earliest-deadline-first schedule behind `Balancer`, single-threaded; `Balancer` wraps
//! it in a mutex.
//!
//! Round robin picks the earliest slot; least load picks the lowest `in_flight / W` and,
//! among equal loads, the earliest slot. Both come from one ordered index of keys
//! `(load, deadline, id)` (load is 0 for round robin), so a pick is two O(log n) tree
//! operations and a hash lookup, never a scan.

use std::collections::BTreeSet;

use super::member::{Member, Ratio};
use super::{FULL, IdMap, MemberId, Picked, Policy, State, Trial};

/// Once virtual time reaches this, its whole part is subtracted from every deadline (O(n),
/// at most once per 2^20 picks). This keeps numerators below ~2^42 (2^20 × 2·10^6) for any
/// uptime instead of creeping towards `u64::MAX`; shifting by whole units keeps every member
/// on its grid, so the order and the window property are unchanged.
const RENORMALIZE_AT: u64 = 1 << 20;

/// `(load, deadline, id)`: the id makes keys unique and breaks ties the same way in every
/// period, which the window property needs.
type Key = (Ratio, Ratio, MemberId);

fn key(policy: Policy, id: MemberId, m: &Member) -> Key {
    let load = match policy {
        Policy::RoundRobin => Ratio::ZERO,
        Policy::LeastLoad => m.load(),
    };
    (load, m.deadline(), id)
}

#[derive(Debug)]
pub(super) struct Schedule {
    policy: Policy,
    members: IdMap<Member>,
    /// Keys of the queued members only (`Member::queued`).
    queue: BTreeSet<Key>,
    /// Virtual time: the latest deadline picked. Recoveries, newcomers and weight changes
    /// start from it, so a member never "catches up" a burst of slots it missed.
    now: Ratio,
}

impl Schedule {
    pub(super) fn new(policy: Policy) -> Schedule {
        Schedule {
            policy,
            members: IdMap::default(),
            queue: BTreeSet::new(),
            now: Ratio::ZERO,
        }
    }

    /// Sets policy and membership: listed members are kept with their state (their weight
    /// changed in place), new ones join at the current virtual time, the rest leave (a
    /// release for one of them is then ignored). O(n log n), once per reload.
    pub(super) fn apply(&mut self, policy: Policy, members: &[(MemberId, u32)]) {
        let now = self.now;
        let mut next = IdMap::with_capacity_and_hasher(members.len(), Default::default());
        for &(id, weight) in members {
            let weight = weight.clamp(1, super::member::MAX_WEIGHT);
            let member = match self.members.remove(&id).or_else(|| next.remove(&id)) {
                Some(mut m) => {
                    if m.weight != weight {
                        m.regrid(now, |m| m.weight = weight);
                    }
                    m
                }
                None => Member::joining(weight, now),
            };
            next.insert(id, member);
        }
        self.policy = policy;
        self.members = next;
        self.rebuild_queue();
    }

    fn rebuild_queue(&mut self) {
        let policy = self.policy;
        self.queue = self
            .members
            .iter()
            .filter(|(_, m)| m.queued())
            .map(|(&id, m)| key(policy, id, m))
            .collect();
    }

    /// Takes `id` out of the queue (if queued), lets `f` change it, and queues it again (if
    /// queued then), so the queue key always matches the member's state. `None` for a
    /// member that is not in the schedule.
    fn requeue<R>(&mut self, id: MemberId, f: impl FnOnce(&mut Member, Ratio) -> R) -> Option<R> {
        let m = self.members.get_mut(&id)?;
        if m.queued() {
            self.queue.remove(&key(self.policy, id, m));
        }
        let out = f(m, self.now);
        if m.queued() {
            self.queue.insert(key(self.policy, id, m));
        }
        Some(out)
    }

    /// Picks the first queued member that `accept` takes, in key order.
    pub(super) fn pick(&mut self, mut accept: impl FnMut(MemberId) -> bool) -> Option<Picked> {
        let &(_, deadline, id) = self.queue.iter().find(|k| accept(k.2))?;
        if deadline > self.now {
            self.now = deadline;
        }
        let policy = self.policy;
        let trial = self.requeue(id, |m, now| {
            m.in_flight = m.in_flight.saturating_add(1);
            // Under least load, a member that stayed busy while others were picked has a
            // deadline far behind `now` and would win every tie until it caught up: it is
            // taken as picked in its first slot after `now` instead. (Round robin's pick
            // is behind `now` only when failover skipped earlier slots; those keep their turn.)
            if policy == Policy::LeastLoad && m.deadline() < now {
                m.next = m.slot_after(now);
            }
            m.next = m.next.saturating_add(2);
            // A down member is queued only while open for its trial: this pick is the trial,
            // and it leaves the queue until the trial's outcome is known.
            let trial = !m.healthy;
            if trial {
                m.trial = Trial::Taken;
            }
            trial
        })?;
        if self.now.num >= self.now.den.saturating_mul(RENORMALIZE_AT) {
            self.renormalize();
        }
        Some(Picked { id, trial })
    }

    pub(super) fn release(&mut self, id: MemberId) {
        let policy = self.policy;
        match self.members.get_mut(&id) {
            None | Some(Member { in_flight: 0, .. }) => {}
            // The key holds no load: no need to touch the queue.
            Some(m) if !m.queued() || policy == Policy::RoundRobin => m.in_flight -= 1,
            Some(_) => {
                self.requeue(id, |m, _| m.in_flight -= 1);
            }
        }
    }

    /// Up or down; true when that changed it. A change closes any trial; coming up, the
    /// member rejoins at `now` at `permille` of its weight (`None` keeps its share).
    pub(super) fn set_healthy(
        &mut self,
        id: MemberId,
        healthy: bool,
        permille: Option<u32>,
    ) -> bool {
        if self.members.get(&id).is_none_or(|m| m.healthy == healthy) {
            return false;
        }
        self.requeue(id, |m, now| {
            m.trial = Trial::Closed;
            m.healthy = healthy;
            if healthy {
                if let Some(p) = permille.map(|p| p.clamp(1, FULL)) {
                    m.regrid(now, |m| m.permille = p);
                }
                m.rejoin(now);
            }
        });
        true
    }

    pub(super) fn set_permille(&mut self, id: MemberId, permille: u32) {
        let permille = permille.clamp(1, FULL);
        if self.members.get(&id).is_none_or(|m| m.permille == permille) {
            return;
        }
        self.requeue(id, |m, now| m.regrid(now, |m| m.permille = permille));
    }

    /// Opens the trial of a down member (again, when one taken was never decided); false
    /// when it is up or already open.
    pub(super) fn open_trial(&mut self, id: MemberId) -> bool {
        if self
            .members
            .get(&id)
            .is_none_or(|m| m.healthy || m.trial == Trial::Open)
        {
            return false;
        }
        self.requeue(id, |m, now| {
            m.trial = Trial::Open;
            m.rejoin(now);
        });
        true
    }

    /// Moves the trial of `id` from `from` to `Closed`; false when it was not in `from`.
    pub(super) fn close_trial(&mut self, id: MemberId, from: Trial) -> bool {
        if self.members.get(&id).is_none_or(|m| m.trial != from) {
            return false;
        }
        self.requeue(id, |m, _| m.trial = Trial::Closed);
        true
    }

    pub(super) fn state(&self, id: MemberId) -> Option<State> {
        self.members.get(&id).map(Member::state)
    }

    pub(super) fn policy(&self) -> Policy {
        self.policy
    }

    pub(super) fn len(&self) -> usize {
        self.members.len()
    }

    /// Subtracts the whole part of `now` from all times (see `RENORMALIZE_AT`).
    fn renormalize(&mut self) {
        let whole = self.now.num / self.now.den;
        self.now.num -= whole * self.now.den;
        for m in self.members.values_mut() {
            // Even (a multiple of 2W, the deadline's denominator), so the numerator stays odd.
            // A stale deadline of a member out of the queue bottoms out at the first slot;
            // rejoining lifts it.
            let shift = whole.saturating_mul(m.deadline().den);
            m.next = m.next.checked_sub(shift).filter(|&n| n > 0).unwrap_or(1);
        }
        self.rebuild_queue();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renormalizing_keeps_the_sequence() {
        let members: Vec<(MemberId, u32)> =
            [3, 1, 2].iter().map(|&w| (MemberId::fresh(), w)).collect();
        let mut plain = Schedule::new(Policy::RoundRobin);
        let mut shifted = Schedule::new(Policy::RoundRobin);
        plain.apply(Policy::RoundRobin, &members);
        shifted.apply(Policy::RoundRobin, &members);
        for step in 0..60 {
            if step % 7 == 3 {
                shifted.renormalize();
            }
            let a = plain.pick(|_| true).map(|p| p.id);
            let b = shifted.pick(|_| true).map(|p| p.id);
            assert_eq!(a, b, "shifting virtual time must not change the order");
        }
        assert!(shifted.now < Ratio { num: 1, den: 1 });
    }
}
