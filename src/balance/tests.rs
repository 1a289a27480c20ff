//! Table and property tests of the balancing rules (`Balancer`'s public API only).

use std::sync::Arc;

use proptest::prelude::*;

use super::{Balancer, Policy};

const POLICIES: [Policy; 2] = [Policy::RoundRobin, Policy::LeastLoad];

/// `n` picks, each released before the next: least load then behaves as round robin.
fn picks(b: &Balancer, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let i = b.pick().expect("a healthy backend exists");
            b.release(i);
            i
        })
        .collect()
}

fn counts(seq: &[usize], len: usize) -> Vec<u32> {
    let mut c = vec![0; len];
    for &i in seq {
        c[i] += 1;
    }
    c
}

#[test]
fn weights_5_1_1_are_interleaved() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[5, 1, 1]);
        let seq = picks(&b, 21);
        assert_eq!(
            &seq[..7],
            &[0, 0, 0, 1, 2, 0, 0],
            "{policy:?}: the light backends must sit inside the heavy one's run, not after it"
        );
        assert_eq!(&seq[..14], &[&seq[..7], &seq[..7]].concat(), "period is 7");
    }
}

#[test]
fn weights_3_1_match_nginx() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[3, 1]);
        assert_eq!(picks(&b, 8), [0, 0, 1, 0, 0, 0, 1, 0], "{policy:?}");
    }
}

#[test]
fn single_backend_takes_everything() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[7]);
        assert_eq!(b.len(), 1);
        for n in 1..=5 {
            assert_eq!(b.pick(), Some(0));
            assert_eq!(b.in_flight(0), n, "every pick counts one in flight");
        }
        for _ in 0..9 {
            b.release(0);
        }
        assert_eq!(b.in_flight(0), 0, "release saturates at 0");
    }
}

#[test]
fn no_healthy_backend_gives_none() {
    for policy in POLICIES {
        let empty = Balancer::new(policy, &[]);
        assert!(empty.is_empty());
        assert_eq!(empty.pick(), None);
        let b = Balancer::new(policy, &[1, 2]);
        b.set_healthy(0, false);
        b.set_healthy(1, false);
        assert_eq!(
            b.pick(),
            None,
            "balancer must not pick an unhealthy backend"
        );
        assert_eq!(b.pick_excluding(&[]), None);
        b.set_healthy(1, true);
        assert_eq!(b.pick(), Some(1));
    }
}

#[test]
fn unhealthy_backend_is_never_picked_and_keeps_its_in_flight() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[1, 5, 1]);
        assert_eq!(b.pick(), Some(1));
        b.set_healthy(1, false);
        assert!(!b.is_healthy(1));
        assert!(picks(&b, 50).iter().all(|&i| i != 1), "{policy:?}");
        assert_eq!(b.in_flight(1), 1, "in flight survives going down");
        b.release(1);
        assert_eq!(b.in_flight(1), 0);
    }
}

#[test]
fn recovered_backend_does_not_burst() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[1, 1]);
        b.set_healthy(1, false);
        picks(&b, 100);
        b.set_healthy(1, true);
        let seq = picks(&b, 10);
        assert!(
            seq.windows(2).all(|w| w[0] != w[1]),
            "{policy:?}: a recovered backend must rejoin the rotation, not catch up: {seq:?}"
        );
    }
}

#[test]
fn busy_backend_does_not_burst_when_it_frees_up() {
    let b = Balancer::new(Policy::LeastLoad, &[1, 1]);
    assert_eq!(b.pick(), Some(0));
    assert!(
        picks(&b, 100).iter().all(|&i| i == 1),
        "idle backend wins on load"
    );
    b.release(0);
    let seq = picks(&b, 10);
    assert!(seq.windows(2).all(|w| w[0] != w[1]), "{seq:?}");
}

#[test]
fn least_load_prefers_the_idle_backend() {
    let b = Balancer::new(Policy::LeastLoad, &[1, 1, 2]);
    let held: Vec<usize> = (0..4).map(|_| b.pick().unwrap()).collect();
    assert_eq!(counts(&held, 3), [1, 1, 2], "loads fill by weight");
    b.release(2);
    assert_eq!(b.pick(), Some(2), "the backend with the lowest load wins");
}

#[test]
fn slow_start_scales_the_share() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[1, 1]);
        b.set_permille(0, 100);
        assert_eq!(counts(&picks(&b, 1100), 2), [100, 1000], "{policy:?}");
        b.set_permille(0, 1000);
        picks(&b, 3);
        let seq = picks(&b, 200);
        let c = counts(&seq, 2);
        assert!(
            c[0].abs_diff(c[1]) <= 2,
            "{policy:?}: back to equal shares: {c:?}"
        );
    }
}

#[test]
fn out_of_range_input_is_ignored_or_clamped() {
    for policy in POLICIES {
        let b = Balancer::new(policy, &[0, 1, 5000]);
        b.release(9);
        b.set_healthy(9, false);
        b.set_permille(9, 10);
        b.set_permille(0, u32::MAX);
        assert_eq!(b.in_flight(9), 0);
        assert!(!b.is_healthy(9));
        assert_eq!(
            counts(&picks(&b, 1002), 3),
            [1, 1, 1000],
            "weights clamp to 1..=1000"
        );
        let (zero, one) = (
            Balancer::new(policy, &[1, 1]),
            Balancer::new(policy, &[1, 1]),
        );
        zero.set_permille(0, 0);
        one.set_permille(0, 1);
        assert_eq!(
            picks(&zero, 3000),
            picks(&one, 3000),
            "permille clamps to 1..=1000"
        );
    }
}

#[test]
fn guard_releases_on_drop() {
    let b = Arc::new(Balancer::new(Policy::LeastLoad, &[1, 1]));
    let guard = b.pick_guard().unwrap();
    assert_eq!(b.in_flight(guard.index()), 1);
    let index = guard.index();
    drop(guard);
    assert_eq!(b.in_flight(index), 0);
}

#[test]
fn balancer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Balancer>();
    assert_send_sync::<super::Pick>();
}

#[test]
fn concurrent_picks_balance_and_release() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 3000;
    let weights = [3, 1, 2, 7, 2];
    let sum: u32 = weights.iter().sum();
    for policy in POLICIES {
        let b = Arc::new(Balancer::new(policy, &weights));
        let per_thread: Vec<Vec<u32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let b = Arc::clone(&b);
                    s.spawn(move || {
                        let mut c = vec![0; weights.len()];
                        for _ in 0..PER_THREAD {
                            let guard = b.pick_guard().expect("all healthy");
                            c[guard.index()] += 1;
                        }
                        c
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total: Vec<u32> = (0..weights.len())
            .map(|i| per_thread.iter().map(|c| c[i]).sum())
            .collect();
        assert!(
            (0..weights.len()).all(|i| b.in_flight(i) == 0),
            "every guard released"
        );
        assert_eq!(total.iter().sum::<u32>() as usize, THREADS * PER_THREAD);
        if policy == Policy::RoundRobin {
            // 12000 picks = 480 full windows of 25: round robin ignores load, so the counts
            // are exact whatever the interleaving of the threads.
            let windows = (THREADS * PER_THREAD) as u32 / sum;
            let expected: Vec<u32> = weights.iter().map(|w| w * windows).collect();
            assert_eq!(
                total, expected,
                "round robin shares by weight under contention"
            );
        }
    }
}

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
}

fn ops(len: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => Just(Op::Pick),
        3 => any::<usize>().prop_map(Op::Release),
        1 => (0..len).prop_map(Op::Flip),
        1 => prop::collection::vec(0..len, 0..4).prop_map(Op::Exclude),
    ];
    prop::collection::vec(op, 0..300)
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
            let b = Balancer::new(policy, &w);
            picks(&b, offset % sum);
            let seq = picks(&b, 2 * sum);
            // One exact window plus period `sum` makes every window in between exact.
            prop_assert_eq!(counts(&seq[..sum], w.len()), w.clone(), "{:?}", policy);
            prop_assert!((0..sum).all(|j| seq[j] == seq[j + sum]), "{:?}: period", policy);
        }
    }

    #[test]
    fn only_healthy_untried_backends_are_picked(w in weights(), ops in ops(20)) {
        for policy in POLICIES {
            let b = Balancer::new(policy, &w);
            let mut healthy = vec![true; w.len()];
            let mut held = Vec::new();
            for op in &ops {
                let tried: &[usize] = match op {
                    Op::Pick => &[],
                    Op::Exclude(tried) => tried,
                    Op::Release(n) => {
                        if !held.is_empty() {
                            b.release(held.swap_remove(n % held.len()));
                        }
                        continue;
                    }
                    Op::Flip(i) => {
                        if let Some(h) = healthy.get_mut(*i) {
                            *h = !*h;
                            b.set_healthy(*i, *h);
                        }
                        continue;
                    }
                };
                let candidate = |i: usize| healthy[i] && !tried.contains(&i);
                match b.pick_excluding(tried) {
                    Some(i) => {
                        prop_assert!(candidate(i), "{:?} picked {} (tried {:?})", policy, i, tried);
                        held.push(i);
                    }
                    None => prop_assert!(!(0..w.len()).any(candidate), "None with a candidate"),
                }
            }
            for i in 0..w.len() {
                let mine = held.iter().filter(|&&h| h == i).count() as u64;
                prop_assert_eq!(b.in_flight(i), mine, "in flight counts picks minus releases");
            }
        }
    }

    #[test]
    fn least_load_never_picks_a_heavier_backend(w in weights(), ops in ops(20)) {
        let b = Balancer::new(Policy::LeastLoad, &w);
        let mut held = Vec::new();
        for op in &ops {
            match op {
                Op::Release(n) if !held.is_empty() => b.release(held.swap_remove(n % held.len())),
                Op::Flip(i) if *i < w.len() => b.set_healthy(*i, !b.is_healthy(*i)),
                Op::Pick => {
                    let before: Vec<(bool, u64)> =
                        (0..w.len()).map(|j| (b.is_healthy(j), b.in_flight(j))).collect();
                    // Exact `in_flight / weight` comparison on the state before the pick.
                    let heavier = |x: usize, y: usize| {
                        u128::from(before[x].1) * u128::from(w[y])
                            > u128::from(before[y].1) * u128::from(w[x])
                    };
                    if let Some(i) = b.pick() {
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
