//! Property tests of the balancing rules: the window property, before and after a change of
//! membership; only queued members picked; least load never picks a heavier member.

use proptest::prelude::*;

use super::tests::{Fixture, POLICIES, counts, picks};
use super::{MemberId, Policy};

/// 1..=20 weights in 1..=1000 with a sum of at most 5000 (scaled down when above).
fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..=1000, 1..=20).prop_map(|mut w| {
        let sum: u32 = w.iter().sum();
        if sum > 5000 {
            w.iter_mut().for_each(|x| *x = (*x * 5000 / sum).max(1));
        }
        w
    })
}

#[derive(Debug, Clone)]
enum Op {
    Pick,
    /// Release the n-th (mod count) outstanding pick.
    Release(usize),
    Flip(usize),
    Exclude(Vec<usize>),
    OpenTrial(usize),
}

fn ops(len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => Just(Op::Pick),
        3 => any::<usize>().prop_map(Op::Release),
        1 => (0..len).prop_map(Op::Flip),
        1 => prop::collection::vec(0..len, 0..4).prop_map(Op::Exclude),
        1 => (0..len).prop_map(Op::OpenTrial),
    ];
    prop::collection::vec(op, 0..300)
}

/// The window property from `f`'s state on: one exact window plus period `sum` makes every
/// window in between exact.
fn assert_windows(f: &Fixture, w: &[u32], policy: Policy) -> Result<(), TestCaseError> {
    let sum = w.iter().sum::<u32>() as usize;
    let seq = picks(f, 2 * sum);
    prop_assert_eq!(counts(&seq[..sum], w.len()), w.to_vec(), "{:?}", policy);
    prop_assert!(
        (0..sum).all(|j| seq[j] == seq[j + sum]),
        "{:?}: period",
        policy
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_window_of_sum_picks_holds_each_backend_weight_times(
        w in weights(),
        offset in 0usize..5000,
    ) {
        let sum = w.iter().sum::<u32>() as usize;
        for policy in POLICIES {
            let f = Fixture::new(policy, &w);
            picks(&f, offset % sum);
            assert_windows(&f, &w, policy)?;
        }
    }

    /// A reload keeps some members (with new weights), drops others and adds newcomers: the
    /// rotation is exact again once virtual time has passed everyone's first new slot (within
    /// two periods).
    #[test]
    fn every_window_is_exact_again_after_a_membership_change(
        w in weights(),
        next in weights(),
        keep in prop::collection::vec(any::<bool>(), 20),
        offset in 0usize..5000,
    ) {
        let sum = w.iter().sum::<u32>() as usize;
        for policy in POLICIES {
            let mut f = Fixture::new(policy, &w);
            picks(&f, offset % sum);
            let ids: Vec<MemberId> = (0..next.len())
                .map(|i| match f.ids.get(i) {
                    Some(&id) if keep[i] => id,
                    _ => MemberId::fresh(),
                })
                .collect();
            let members: Vec<(MemberId, u32)> = ids.iter().copied().zip(next.clone()).collect();
            f.b.apply(policy, &members);
            f.ids = ids;
            picks(&f, 3 * next.iter().sum::<u32>() as usize);
            assert_windows(&f, &next, policy)?;
        }
    }

    #[test]
    fn only_queued_untried_backends_are_picked(w in weights(), ops in ops(20)) {
        for policy in POLICIES {
            let f = Fixture::new(policy, &w);
            let mut healthy = vec![true; w.len()];
            let mut open = vec![false; w.len()];
            let mut held = Vec::new();
            for op in &ops {
                let tried: &[usize] = match op {
                    Op::Pick => &[],
                    Op::Exclude(tried) => tried,
                    Op::Release(n) => {
                        if !held.is_empty() {
                            f.release(held.swap_remove(n % held.len()));
                        }
                        continue;
                    }
                    Op::Flip(i) => {
                        if let Some(h) = healthy.get_mut(*i) {
                            *h = !*h;
                            open[*i] = false;
                            f.set_healthy(*i, *h);
                        }
                        continue;
                    }
                    Op::OpenTrial(i) => {
                        let opened = f.b.open_trial(f.id(*i));
                        let expected = healthy.get(*i) == Some(&false) && !open[*i];
                        prop_assert_eq!(opened, expected, "open_trial({}) of a down member", i);
                        if opened {
                            open[*i] = true;
                        }
                        continue;
                    }
                };
                let candidate = |i: usize| (healthy[i] || open[i]) && !tried.contains(&i);
                let excluded: Vec<MemberId> = tried.iter().map(|&i| f.id(i)).collect();
                match f.b.pick_where(|id| !excluded.contains(&id)) {
                    Some(p) => {
                        let i = f.position(p.id);
                        prop_assert!(candidate(i), "{:?} picked {} (tried {:?})", policy, i, tried);
                        prop_assert_eq!(p.trial, !healthy[i], "a down member's pick is its trial");
                        open[i] = false;
                        held.push(i);
                    }
                    None => prop_assert!(!(0..w.len()).any(candidate), "None with a candidate"),
                }
            }
            for i in 0..w.len() {
                let mine = held.iter().filter(|&&h| h == i).count() as u64;
                prop_assert_eq!(f.in_flight(i), mine, "in flight counts picks minus releases");
            }
        }
    }

    #[test]
    fn least_load_never_picks_a_heavier_backend(w in weights(), ops in ops(20)) {
        let f = Fixture::new(Policy::LeastLoad, &w);
        let mut held = Vec::new();
        for op in &ops {
            match op {
                Op::Release(n) if !held.is_empty() => f.release(held.swap_remove(n % held.len())),
                Op::Flip(i) if *i < w.len() => f.set_healthy(*i, !f.is_healthy(*i)),
                Op::Pick => {
                    let before: Vec<(bool, u64)> =
                        (0..w.len()).map(|j| (f.is_healthy(j), f.in_flight(j))).collect();
                    // Exact `in_flight / weight` comparison on the state before the pick.
                    let heavier = |x: usize, y: usize| {
                        u128::from(before[x].1) * u128::from(w[y])
                            > u128::from(before[y].1) * u128::from(w[x])
                    };
                    if let Some(i) = f.pick() {
                        let lighter = (0..w.len()).find(|&j| before[j].0 && heavier(i, j));
                        prop_assert_eq!(lighter, None, "picked {} over a lighter backend", i);
                        held.push(i);
                    }
                }
                _ => {}
            }
        }
    }
}
