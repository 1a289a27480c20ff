//! Table tests of a member's life: membership changes (`apply`), trials, recovery with slow
//! start, and what `state` reports.

use super::tests::{Fixture, POLICIES, counts, picks};
use super::{FULL, MemberId, Policy, State, Trial};

fn members(f: &Fixture, weights: &[u32]) -> Vec<(MemberId, u32)> {
    f.ids.iter().copied().zip(weights.to_vec()).collect()
}

#[test]
fn apply_keeps_the_state_of_members_that_stay() {
    for policy in POLICIES {
        let mut f = Fixture::new(policy, &[1, 1, 1]);
        assert_eq!(f.pick(), Some(0));
        f.set_healthy(1, false);
        f.set_permille(2, 300);
        let newcomer = MemberId::fresh();
        let mut next = members(&f, &[2, 1, 1]);
        next.push((newcomer, 5));
        f.b.apply(policy, &next);
        f.ids.push(newcomer);
        let state = |i: usize| f.b.state(f.id(i)).expect("a member");
        assert_eq!((state(0).weight, state(0).in_flight), (2, 1), "{policy:?}");
        assert!(!state(1).healthy, "health stays");
        assert_eq!(state(2).permille, 300, "a slow start stays");
        let joined = State {
            weight: 5,
            permille: FULL,
            healthy: true,
            trial: Trial::Closed,
            in_flight: 0,
        };
        assert_eq!(state(3), joined, "a newcomer joins up, idle, at full share");
        f.release(0);
        assert_eq!(f.in_flight(0), 0, "a pick before the change releases here");
    }
}

#[test]
fn a_member_that_leaves_is_never_picked_and_its_release_is_ignored() {
    for policy in POLICIES {
        let f = Fixture::new(policy, &[1, 1]);
        assert_eq!(f.pick(), Some(0));
        f.b.apply(policy, &members(&f, &[1, 1])[1..]);
        assert_eq!(f.b.len(), 1);
        assert_eq!(f.b.state(f.id(0)), None, "no state for a member that left");
        f.release(0);
        assert!(picks(&f, 10).iter().all(|&i| i == 1), "{policy:?}");
    }
}

#[test]
fn a_newcomer_joins_the_rotation_without_a_burst() {
    for policy in POLICIES {
        let mut f = Fixture::new(policy, &[1, 1]);
        picks(&f, 100);
        let mut next = members(&f, &[1, 1]);
        let newcomer = MemberId::fresh();
        next.push((newcomer, 1));
        f.b.apply(policy, &next);
        f.ids.push(newcomer);
        let seq = picks(&f, 30);
        assert!(
            seq.windows(3).all(|w| counts(w, 3) == [1, 1, 1]),
            "{policy:?}: every window of 3 holds each once: {seq:?}"
        );
    }
}

#[test]
fn a_policy_change_keeps_the_in_flight_counts() {
    let f = Fixture::new(Policy::RoundRobin, &[1, 1]);
    assert_eq!(f.pick(), Some(0), "held: round robin ignores it");
    f.b.apply(Policy::LeastLoad, &members(&f, &[1, 1]));
    assert_eq!(f.b.policy(), Policy::LeastLoad);
    assert_eq!(f.pick(), Some(1), "least load sees the request held");
    f.b.apply(Policy::RoundRobin, &members(&f, &[1, 1]));
    f.release(0);
    f.release(1);
    assert_eq!((f.in_flight(0), f.in_flight(1)), (0, 0));
}

#[test]
fn a_weight_change_applies_from_the_next_period() {
    for policy in POLICIES {
        let f = Fixture::new(policy, &[1, 1]);
        picks(&f, 7);
        f.b.apply(policy, &members(&f, &[3, 1]));
        picks(&f, 8);
        let seq = picks(&f, 40);
        assert!(
            seq.chunks(4).all(|w| counts(w, 2) == [3, 1]),
            "{policy:?}: {seq:?}"
        );
    }
}

#[test]
fn an_open_trial_is_picked_once() {
    for policy in POLICIES {
        let f = Fixture::new(policy, &[1, 1]);
        let (down, other) = (f.id(0), f.id(1));
        f.b.set_healthy(down, false);
        assert!(!f.b.open_trial(other), "an up member has no trial");
        assert!(f.b.open_trial(down));
        assert!(!f.b.open_trial(down), "already open");
        let picked: Vec<_> = (0..2).filter_map(|_| f.b.pick()).collect();
        let trials: Vec<_> = picked.iter().filter(|p| p.id == down).collect();
        assert_eq!(trials.len(), 1, "{policy:?}: {picked:?}");
        assert!(trials.iter().all(|p| p.trial) && picked.iter().any(|p| !p.trial));
        assert_eq!(f.b.state(down).map(|s| s.trial), Some(Trial::Taken));
        assert!(
            picks(&f, 10).iter().all(|&i| i == 1),
            "taken: out of the queue"
        );

        assert!(f.b.close_trial(down, Trial::Taken), "a failed trial");
        assert!(!f.b.close_trial(down, Trial::Taken));
        assert!(f.b.open_trial(down));
        assert!(f.b.close_trial(down, Trial::Open), "checks resumed");
        assert!(
            picks(&f, 10).iter().all(|&i| i == 1),
            "closed: out of the queue"
        );

        assert!(f.b.open_trial(down));
        assert!(f.b.set_healthy(down, true));
        assert_eq!(f.b.state(down).map(|s| s.trial), Some(Trial::Closed));
        assert!(f.b.pick().is_some_and(|p| !p.trial));
    }
}

#[test]
fn recover_sets_the_share_with_the_health() {
    let f = Fixture::new(Policy::RoundRobin, &[1, 1]);
    let id = f.id(0);
    assert!(!f.b.recover(id, 100), "already up: nothing changes");
    assert_eq!(f.b.state(id).map(|s| s.permille), Some(FULL));
    f.b.set_healthy(id, false);
    assert!(f.b.recover(id, 100));
    let state = f.b.state(id).expect("a member");
    assert!(state.healthy && state.permille == 100);
    assert_eq!(counts(&picks(&f, 1100), 2), [100, 1000]);
}

#[test]
fn state_of_a_stranger_is_none_and_changes_to_it_are_ignored() {
    let f = Fixture::new(Policy::LeastLoad, &[1]);
    let stranger = MemberId::fresh();
    assert_eq!(f.b.state(stranger), None);
    assert!(!f.b.set_healthy(stranger, false));
    assert!(!f.b.open_trial(stranger));
    assert!(!f.b.close_trial(stranger, Trial::Closed));
    f.b.release(stranger);
    assert_eq!(picks(&f, 3), [0, 0, 0]);
}
