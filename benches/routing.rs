//! The cost of finding a request's route.
//! - `hosts/N`: N exact-host routes (what `../shared/bench/compare --scenarios http-routes`
//!   runs with 1,000), requests rotating over every host; found by hashing, so 1,000 routes
//!   should cost about what 10 do.
//! - `mixed/N`: N routes, a third each exact hosts, `*.` wildcards and path prefixes with a
//!   method, requests rotating over all of them: a wildcard costs a hash probe per label of
//!   the request's host, a path route a check of each route with no host in file order.
//!
//! Both include `host_key` (the port dropped, case folded) as a request pays it.
//! Run: `cargo bench --bench routing -- --warm-up-time 1 --measurement-time 2`

use std::fmt::Write;
use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fulcrum::config::Config;
use fulcrum::routing::{Request, Router, host_key};
use http::{HeaderMap, Method};

/// The router of one listener with `routes` (TOML tables) over upstream `a`.
fn router(routes: &str) -> Router<()> {
    let toml = format!(
        "[upstream.a]\nbackends = [{{ addr = \"127.0.0.1:1\" }}]\n[[listener]]\nname = \"web\"\n\
         bind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n{routes}"
    );
    let config = Config::from_toml(&toml, Path::new("bench.toml")).expect("valid routes");
    Router::build(&config.listeners[0].routes, |_| Some(()), None)
}

fn hosts(c: &mut Criterion) {
    let mut group = c.benchmark_group("hosts");
    for n in [10usize, 100, 1000] {
        let mut routes = String::new();
        for i in 1..=n {
            let _ = writeln!(
                routes,
                "[[listener.route]]\nhost = [\"h{i}.example\"]\nupstream = \"a\""
            );
        }
        let r = router(&routes);
        let requests: Vec<String> = (1..=n).map(|i| format!("h{i}.example:8080")).collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            let headers = HeaderMap::new();
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % requests.len();
                let host = host_key(&requests[next]);
                let req = Request {
                    host: &host,
                    path: "/",
                    method: &Method::GET,
                    headers: &headers,
                };
                black_box(r.lookup(black_box(&req)).is_some())
            });
        });
    }
    group.finish();
}

fn mixed(c: &mut Criterion) {
    let mut group = c.benchmark_group("mixed");
    for n in [10usize, 100, 1000] {
        let mut routes = String::new();
        let mut requests = Vec::new();
        for i in 0..n {
            match i % 3 {
                0 => {
                    let _ = writeln!(
                        routes,
                        "[[listener.route]]\nhost = [\"h{i}.example\"]\nupstream = \"a\""
                    );
                    requests.push((format!("h{i}.example"), "/".to_owned()));
                }
                1 => {
                    let _ = writeln!(
                        routes,
                        "[[listener.route]]\nhost = [\"*.w{i}.example\"]\nupstream = \"a\""
                    );
                    requests.push((format!("api.w{i}.example"), "/".to_owned()));
                }
                _ => {
                    let _ = writeln!(
                        routes,
                        "[[listener.route]]\npath = \"/p{i}\"\nmethods = [\"GET\"]\nupstream = \"a\""
                    );
                    requests.push(("site.example".to_owned(), format!("/p{i}/x")));
                }
            }
        }
        let r = router(&routes);
        group.bench_with_input(BenchmarkId::from_parameter(n), &r, |b, r| {
            let headers = HeaderMap::new();
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % requests.len();
                let (host, path) = &requests[next];
                let host = host_key(host);
                let req = Request {
                    host: &host,
                    path,
                    method: &Method::GET,
                    headers: &headers,
                };
                black_box(r.lookup(black_box(&req)).is_some())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, hosts, mixed);
criterion_main!(benches);
