//! One pick + release through `Balancer` at 2..1000 members, both policies.
//! The schedule is O(log n) per pick, so 1000 members should cost at most ~3x 10 members.
//!
//! Run: `cargo bench --bench balance -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::balance::{Balancer, MemberId, Policy};

const POLICIES: [(&str, Policy); 2] = [
    ("round_robin", Policy::RoundRobin),
    ("least_load", Policy::LeastLoad),
];

fn pick_release(c: &mut Criterion) {
    for (name, policy) in POLICIES {
        let mut group = c.benchmark_group(format!("pick_release/{name}"));
        for n in [2u32, 10, 100, 1000] {
            let members: Vec<(MemberId, u32)> =
                (0..n).map(|i| (MemberId::fresh(), 1 + i % 7)).collect();
            let balancer = Balancer::new(policy, &members);
            // Some load so least_load's order is not just the deadline order.
            for _ in 0..n / 2 {
                balancer.pick();
            }
            group.bench_with_input(BenchmarkId::from_parameter(n), &balancer, |b, balancer| {
                b.iter(|| {
                    let picked = balancer.pick().expect("all healthy");
                    balancer.release(black_box(picked.id));
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick_release);
criterion_main!(benches);
