//! One member of a schedule: its scheduling state and the exact arithmetic of its slots.
//!
//! A member with scaled weight `W = weight * permille` has its k-th slot at virtual time
//! `(2k-1) / (2W)`, kept as an exact rational: an odd numerator over `2W`.

use std::cmp::Ordering;

use super::{FULL, State, Trial};

/// Weights are 1..=1000 by config; the clamp keeps the numeric bounds below true anyway.
pub(super) const MAX_WEIGHT: u32 = 1000;

/// A non-negative rational `num / den` with `den > 0`, compared exactly: floats would make
/// equal loads compare unequal and break the tie-breaking that gives the window property.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ratio {
    pub(super) num: u64,
    pub(super) den: u64,
}

impl Ratio {
    pub(super) const ZERO: Ratio = Ratio { num: 0, den: 1 };
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

#[derive(Debug)]
pub(super) struct Member {
    pub(super) weight: u32,
    pub(super) permille: u32,
    pub(super) healthy: bool,
    pub(super) trial: Trial,
    pub(super) in_flight: u64,
    /// Numerator (odd) of the next deadline, over `2 * scaled()`.
    pub(super) next: u64,
}

impl Member {
    /// A member that joins at virtual time `now`: up, idle, at full share, its first slot at or
    /// after `now` (a newcomer gets no burst for the time before it joined).
    pub(super) fn joining(weight: u32, now: Ratio) -> Member {
        let mut m = Member {
            weight: weight.clamp(1, MAX_WEIGHT),
            permille: FULL,
            healthy: true,
            trial: Trial::Closed,
            in_flight: 0,
            next: 1,
        };
        m.next = m.slot_at_or_after(now);
        m
    }

    /// Whether picks may land here: up, or down but open for its one trial.
    pub(super) fn queued(&self) -> bool {
        self.healthy || self.trial == Trial::Open
    }

    pub(super) fn state(&self) -> State {
        State {
            weight: self.weight,
            permille: self.permille,
            healthy: self.healthy,
            trial: self.trial,
            in_flight: self.in_flight,
        }
    }

    /// `weight * permille`: integer even for 10% of weight 1, at most 10^6.
    fn scaled(&self) -> u64 {
        u64::from(self.weight) * u64::from(self.permille)
    }

    pub(super) fn deadline(&self) -> Ratio {
        Ratio {
            num: self.next,
            den: 2 * self.scaled(),
        }
    }

    pub(super) fn load(&self) -> Ratio {
        Ratio {
            num: self.in_flight,
            den: self.scaled(),
        }
    }

    /// Numerator of this member's first slot at or after `t`: the smallest odd `m` with
    /// `m / 2W >= t`.
    pub(super) fn slot_at_or_after(&self, t: Ratio) -> u64 {
        let x = (2 * u128::from(self.scaled()) * u128::from(t.num)).div_ceil(u128::from(t.den));
        u64::try_from(x | 1).unwrap_or(u64::MAX)
    }

    /// Numerator of this member's first slot strictly after `t`.
    pub(super) fn slot_after(&self, t: Ratio) -> u64 {
        let x = 2 * u128::from(self.scaled()) * u128::from(t.num) / u128::from(t.den) + 1;
        u64::try_from(x | 1).unwrap_or(u64::MAX)
    }

    /// Changes the scaled weight (`change` sets weight or permille). The pending slot keeps
    /// its time, rounded up onto the new grid (no bonus pick), but waits at most about one new
    /// period: a member ramping up from 10% does not sit out the long gap of its old weight.
    /// A small inexactness, only while the weight changes.
    pub(super) fn regrid(&mut self, now: Ratio, change: impl FnOnce(&mut Member)) {
        let pending = self.deadline();
        change(self);
        let earliest = self.slot_at_or_after(now);
        self.next = self
            .slot_at_or_after(pending)
            .clamp(earliest, earliest.saturating_add(2));
    }

    /// Back in the queue at `now` (up again, or open for a trial): it does not catch up a
    /// burst of the slots it missed.
    pub(super) fn rejoin(&mut self, now: Ratio) {
        self.next = self.next.max(self.slot_at_or_after(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_rounds_up_to_odd_numerator() {
        let b = Member::joining(2, Ratio::ZERO);
        assert_eq!(b.next, 1);
        // Grid of W = 2000: slots (2k-1)/4000.
        assert_eq!(b.slot_at_or_after(Ratio::ZERO), 1);
        assert_eq!(b.slot_at_or_after(Ratio { num: 1, den: 4000 }), 1);
        assert_eq!(b.slot_at_or_after(Ratio { num: 2, den: 4000 }), 3);
        assert_eq!(b.slot_at_or_after(Ratio { num: 1, den: 1 }), 4001);
        assert_eq!(b.slot_after(Ratio::ZERO), 1);
        assert_eq!(b.slot_after(Ratio { num: 1, den: 4000 }), 3);
        assert_eq!(b.slot_after(Ratio { num: 2, den: 4000 }), 3);
    }

    #[test]
    fn a_member_joining_later_starts_at_the_current_time() {
        let b = Member::joining(2, Ratio { num: 5, den: 2 });
        assert_eq!(
            b.deadline(),
            Ratio {
                num: 10001,
                den: 4000
            }
        );
    }
}
