use super::*;
use crate::snapshot::Snapshot;
use std::path::Path;

fn config(weights: &str) -> Arc<config::Config> {
    let text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
         upstream = \"app\"\n\n[upstream.app]\nbalance = \"least_load\"\nbackends = [{weights}]\n"
    );
    Arc::new(config::Config::from_toml(&text, Path::new("t.toml")).expect("valid config"))
}

const A: &str = "{ addr = \"127.0.0.1:1\" }";
const B: &str = "{ addr = \"127.0.0.1:2\" }";

#[test]
fn in_flight_requests_carry_over_a_reload_for_least_load() {
    let old = Snapshot::build(config(&format!("{A}, {B}")), None, Resolved::new());
    let old = old.expect("build");
    old.publish();
    let lease = old.upstreams["app"].pick(&[]).expect("pick");
    // The reload also reorders: the state must follow the backend, not its position.
    let new = Snapshot::build(config(&format!("{B}, {A}")), Some(&old), Resolved::new());
    let new = new.expect("rebuild");
    new.publish();
    let app = &new.upstreams["app"];
    let busy = app
        .backends
        .iter()
        .position(|b| Arc::ptr_eq(b, &lease.backend));
    let busy = busy.expect("carried over");
    let next = app.pick(&[]).expect("pick after reload");
    assert_ne!(
        next.index, busy,
        "least_load must see the request still open from before the reload"
    );
    assert_eq!(app.backends[busy].in_flight(), 1);
    drop(next);
    drop(lease);
    assert_eq!(
        app.backends[busy].in_flight(),
        0,
        "a release after the reload lands in the running balancer"
    );
}

#[test]
fn a_build_changes_nothing_running_until_it_is_published() {
    let old = Snapshot::build(config(&format!("{A}, {B}")), None, Resolved::new());
    let old = old.expect("build");
    old.publish();
    let heavy_a = "{ addr = \"127.0.0.1:1\", weight = 5 }, { addr = \"127.0.0.1:3\" }";
    let new = Snapshot::build(config(heavy_a), Some(&old), Resolved::new()).expect("build");
    let (a, c) = (
        &new.upstreams["app"].backends[0],
        &new.upstreams["app"].backends[1],
    );
    assert_eq!(a.weight(), 1, "a weight changes at publish only");
    assert_eq!(c.state().weight, 0, "a new backend is no member yet");
    let seq: Vec<usize> = (0..4)
        .filter_map(|_| old.upstreams["app"].pick(&[]).map(|l| l.index))
        .collect();
    assert_eq!(seq, [0, 1, 0, 1], "the running rotation is untouched");
    new.publish();
    assert_eq!((a.weight(), c.weight()), (5, 1));
    assert_eq!(old.upstreams["app"].backends[1].state().weight, 0, "B left");
}

#[test]
fn an_upstream_replaced_by_a_reload_picks_among_its_own_backends() {
    let old = Snapshot::build(config(A), None, Resolved::new()).expect("build");
    old.publish();
    let new = Snapshot::build(config(&format!("{A}, {B}")), Some(&old), Resolved::new());
    new.expect("rebuild").publish();
    let stale = &old.upstreams["app"];
    for _ in 0..4 {
        let lease = stale.pick(&[]).expect("A is up");
        assert!(Arc::ptr_eq(&lease.backend, &stale.backends[0]));
    }
    assert!(stale.pick(&[0]).is_none(), "B is not a backend it knows");
}
