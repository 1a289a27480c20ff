//! The cost of balancing, both policies.
//! - `pick_release/POLICY/N`: one pick + release through `Balancer` at 2..1000 members. The
//!   schedule is O(log n) per pick, so 1000 members should cost at most ~3x 10 members.
//! - `contended/POLICY/T`: pick + release (`Upstream::pick`, the `Lease` dropped) on one
//!   upstream of 10 backends from T threads at once. Time is per pick + release as each
//!   thread sees it; throughput counts all threads' picks. Every pick and release takes the
//!   upstream's one lock, and this shows what that costs.
//!
//! Run: `cargo bench --bench balance -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fulcrum::balance::{Balancer, MemberId, Policy};
use fulcrum::config::Config;
use fulcrum::resolve::Resolved;
use fulcrum::snapshot::Snapshot;

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

/// A published snapshot whose upstream `app` has 10 backends of weights 1..=3.
fn ten_backends(balance: &str) -> Snapshot {
    let backends: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "{{ addr = \"127.0.0.1:{}\", weight = {} }}",
                9001 + i,
                1 + i % 3
            )
        })
        .collect();
    let text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
         upstream = \"app\"\n\n[upstream.app]\nbalance = \"{balance}\"\nbackends = [{}]\n",
        backends.join(", ")
    );
    let config = Config::from_toml(&text, Path::new("bench.toml")).expect("valid config");
    let snapshot = Snapshot::build(Arc::new(config), None, Resolved::new()).expect("build");
    snapshot.publish();
    snapshot
}

fn contended(c: &mut Criterion) {
    for (name, _) in POLICIES {
        let snapshot = ten_backends(name);
        let upstream = &snapshot.upstreams["app"];
        let mut group = c.benchmark_group(format!("contended/{name}"));
        for threads in [1usize, 2, 4, 8] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &n| {
                b.iter_custom(|iters| {
                    // Threads are spawned outside the timed span; all start at the barrier.
                    let start = Barrier::new(n + 1);
                    let mut began = None;
                    std::thread::scope(|s| {
                        for _ in 0..n {
                            s.spawn(|| {
                                start.wait();
                                for _ in 0..iters {
                                    drop(black_box(upstream.pick(&[]).expect("all healthy")));
                                }
                            });
                        }
                        start.wait();
                        began = Some(Instant::now());
                    });
                    began.map_or(Duration::ZERO, |t| t.elapsed())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pick_release, contended);
criterion_main!(benches);
