//! Table tests of the balancing rules (`Balancer`'s public API only), and the fixture the
//! other test modules share.

use std::sync::Arc;

use super::{Balancer, MemberId, Policy};

pub(super) const POLICIES: [Policy; 2] = [Policy::RoundRobin, Policy::LeastLoad];

/// A balancer over members addressed by position, as the rules are stated. Ids are taken in
/// position order, so ties break towards the lower position.
pub(super) struct Fixture {
    pub(super) b: Arc<Balancer>,
    pub(super) ids: Vec<MemberId>,
}

impl Fixture {
    pub(super) fn new(policy: Policy, weights: &[u32]) -> Fixture {
        let ids: Vec<MemberId> = weights.iter().map(|_| MemberId::fresh()).collect();
        let members: Vec<(MemberId, u32)> = ids.iter().copied().zip(weights.to_vec()).collect();
        Fixture {
            b: Arc::new(Balancer::new(policy, &members)),
            ids,
        }
    }

    /// The id at `i`; out of range, a fresh id that is no member.
    pub(super) fn id(&self, i: usize) -> MemberId {
        self.ids.get(i).copied().unwrap_or_else(MemberId::fresh)
    }

    pub(super) fn position(&self, id: MemberId) -> usize {
        let i = self.ids.iter().position(|&m| m == id);
        i.expect("a pick names a member")
    }

    pub(super) fn pick(&self) -> Option<usize> {
        self.b.pick().map(|p| self.position(p.id))
    }

    pub(super) fn pick_excluding(&self, tried: &[usize]) -> Option<usize> {
        let tried: Vec<MemberId> = tried.iter().map(|&i| self.id(i)).collect();
        let picked = self.b.pick_where(|id| !tried.contains(&id));
        picked.map(|p| self.position(p.id))
    }

    pub(super) fn release(&self, i: usize) {
        self.b.release(self.id(i));
    }

    pub(super) fn set_healthy(&self, i: usize, healthy: bool) {
        self.b.set_healthy(self.id(i), healthy);
    }

    pub(super) fn set_permille(&self, i: usize, permille: u32) {
        self.b.set_permille(self.id(i), permille);
    }

    pub(super) fn in_flight(&self, i: usize) -> u64 {
        self.b.state(self.id(i)).map_or(0, |s| s.in_flight)
    }

    pub(super) fn is_healthy(&self, i: usize) -> bool {
        self.b.state(self.id(i)).is_some_and(|s| s.healthy)
    }
}

/// `n` picks, each released before the next: least load then behaves as round robin.
pub(super) fn picks(f: &Fixture, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let i = f.pick().expect("a healthy backend exists");
            f.release(i);
            i
        })
        .collect()
}

pub(super) fn counts(seq: &[usize], len: usize) -> Vec<u32> {
    let mut c = vec![0; len];
    for &i in seq {
        c[i] += 1;
    }
    c
}

#[test]
fn weights_5_1_1_are_interleaved() {
    for policy in POLICIES {
        let b = Fixture::new(policy, &[5, 1, 1]);
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
        let b = Fixture::new(policy, &[3, 1]);
        assert_eq!(picks(&b, 8), [0, 0, 1, 0, 0, 0, 1, 0], "{policy:?}");
    }
}

#[test]
fn single_backend_takes_everything() {
    for policy in POLICIES {
        let b = Fixture::new(policy, &[7]);
        assert_eq!(b.b.len(), 1);
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
        let empty = Fixture::new(policy, &[]);
        assert!(empty.b.is_empty());
        assert_eq!(empty.pick(), None);
        let b = Fixture::new(policy, &[1, 2]);
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
        let b = Fixture::new(policy, &[1, 5, 1]);
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
        let b = Fixture::new(policy, &[1, 1]);
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
    let b = Fixture::new(Policy::LeastLoad, &[1, 1]);
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
    let b = Fixture::new(Policy::LeastLoad, &[1, 1, 2]);
    let held: Vec<usize> = (0..4).map(|_| b.pick().unwrap()).collect();
    assert_eq!(counts(&held, 3), [1, 1, 2], "loads fill by weight");
    b.release(2);
    assert_eq!(b.pick(), Some(2), "the backend with the lowest load wins");
}

#[test]
fn slow_start_scales_the_share() {
    for policy in POLICIES {
        let b = Fixture::new(policy, &[1, 1]);
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
        let b = Fixture::new(policy, &[0, 1, 5000]);
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
        let (zero, one) = (Fixture::new(policy, &[1, 1]), Fixture::new(policy, &[1, 1]));
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
    let b = Fixture::new(Policy::LeastLoad, &[1, 1]);
    let guard = b.b.pick_guard().unwrap();
    let index = b.position(guard.id());
    assert_eq!(b.in_flight(index), 1);
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
        let f = Fixture::new(policy, &weights);
        let per_thread: Vec<Vec<u32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let f = &f;
                    s.spawn(move || {
                        let mut c = vec![0; weights.len()];
                        for _ in 0..PER_THREAD {
                            let guard = f.b.pick_guard().expect("all healthy");
                            c[f.position(guard.id())] += 1;
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
            (0..weights.len()).all(|i| f.in_flight(i) == 0),
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
