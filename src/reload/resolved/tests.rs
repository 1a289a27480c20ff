use std::path::Path;
use std::sync::atomic::Ordering;

use super::*;
use crate::config::Config;
use crate::resolve::{expand, lookup};

const NAME: &str = "app.internal";

fn config(backends: &str, interval: &str) -> Arc<Config> {
    let text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"http\"\n\
         upstream = \"app\"\n\n[upstream.app]\nbackends = [{backends}]\n\
         resolve_interval = \"{interval}\"\n"
    );
    Arc::new(Config::from_toml(&text, Path::new("t.toml")).expect("test config is valid"))
}

fn named(weight: u32) -> String {
    format!("{{ addr = \"{NAME}:3000\", weight = {weight} }}")
}

fn resolved(last_octets: &[u8]) -> Resolved {
    let addrs = last_octets
        .iter()
        .map(|&n| SocketAddr::from(([10, 0, 0, n], 3000)))
        .collect();
    Resolved::from([((NAME.to_owned(), 3000), addrs)])
}

fn labels(s: &Snapshot) -> Vec<String> {
    s.upstreams["app"]
        .backends
        .iter()
        .map(|b| b.addr.to_string())
        .collect()
}

#[test]
fn a_name_with_one_address_keeps_its_label_and_several_get_one_label_each() {
    let c = config(&named(1), "1s");
    let b = &c.upstreams[0].backends[0];
    assert_eq!(
        expand(b, &resolved(&[5])),
        vec![(format!("{NAME}:3000"), ([10, 0, 0, 5], 3000).into())],
        "one address: the label is the addr as written"
    );
    let labels: Vec<String> = expand(b, &resolved(&[5, 6]))
        .into_iter()
        .map(|(l, _)| l)
        .collect();
    assert_eq!(
        labels,
        vec![
            format!("{NAME}:3000/10.0.0.5:3000"),
            format!("{NAME}:3000/10.0.0.6:3000")
        ],
        "several addresses: WRITTEN/IP:PORT each"
    );
    let v6 = Resolved::from([(
        (NAME.to_owned(), 3000),
        vec![
            "[fd00::5]:3000".parse().expect("addr"),
            "[fd00::6]:3000".parse().expect("addr"),
        ],
    )]);
    assert_eq!(expand(b, &v6)[0].0, format!("{NAME}:3000/[fd00::5]:3000"));
    assert!(expand(b, &Resolved::new()).is_empty(), "unresolved: none");
}

#[test]
fn every_address_of_a_name_is_a_backend_of_its_weight() {
    let s = Snapshot::build(config(&named(3), "1s"), None, resolved(&[5, 6])).expect("build");
    s.publish();
    let app = &s.upstreams["app"];
    assert_eq!(app.backends.len(), 2);
    assert!(
        app.backends.iter().all(|b| b.weight() == 3),
        "each address gets the weight of the name"
    );
}

#[test]
fn a_re_resolution_keeps_the_backends_that_stay() {
    let c = config(&named(1), "1s");
    let old = Snapshot::build(Arc::clone(&c), None, resolved(&[5, 6])).expect("build");
    old.publish();
    let five = Arc::clone(&old.upstreams["app"].backends[0]);
    five.requests.store(7, Ordering::Relaxed);
    let new = Snapshot::build(Arc::clone(&c), Some(&old), resolved(&[5, 7])).expect("rebuild");
    assert!(
        Arc::ptr_eq(&five, &new.upstreams["app"].backends[0]),
        "an address that stays keeps its backend (health, counters, pool)"
    );
    assert_eq!(
        backend_changes(&old, &new),
        vec![
            "upstream \"app\": backend app.internal:3000/10.0.0.7:3000 added".to_owned(),
            "upstream \"app\": backend app.internal:3000/10.0.0.6:3000 removed".to_owned(),
        ]
    );
}

#[test]
fn a_single_address_that_moves_is_a_new_backend_under_the_same_label() {
    let c = config(&named(1), "1s");
    let old = Snapshot::build(Arc::clone(&c), None, resolved(&[5])).expect("build");
    let new = Snapshot::build(Arc::clone(&c), Some(&old), resolved(&[6])).expect("rebuild");
    let (a, b) = (
        &old.upstreams["app"].backends[0],
        &new.upstreams["app"].backends[0],
    );
    assert_eq!(
        labels(&old),
        labels(&new),
        "the label is the name as written"
    );
    assert!(
        !Arc::ptr_eq(a, b),
        "a backend must never dial another address"
    );
    assert_eq!(b.dial, SocketAddr::from(([10, 0, 0, 6], 3000)));
    assert_eq!(
        backend_changes(&old, &new),
        vec![
            "upstream \"app\": backend app.internal:3000 (10.0.0.6:3000) added".to_owned(),
            "upstream \"app\": backend app.internal:3000 (10.0.0.5:3000) removed".to_owned(),
        ]
    );
}

#[test]
fn an_unresolved_name_fails_the_build_unless_its_upstream_re_resolves() {
    let err = Snapshot::build(config(&named(1), "0s"), None, Resolved::new())
        .expect_err("resolve_interval = 0 needs every name resolved");
    assert!(err.to_string().contains("app.internal:3000"), "{err}");

    let both = format!("{}, {{ addr = \"127.0.0.1:9001\" }}", named(1));
    let s = Snapshot::build(config(&both, "1s"), None, Resolved::new()).expect("build");
    assert_eq!(
        labels(&s),
        vec!["127.0.0.1:9001"],
        "the name has no backend yet"
    );

    let s = Snapshot::build(config(&named(1), "1s"), None, Resolved::new()).expect("build");
    s.publish();
    assert!(
        s.upstreams["app"].pick(&[]).is_none(),
        "an upstream with no backends picks none, without a panic"
    );
}

#[tokio::test]
async fn lookup_resolves_nothing_for_ip_literals() {
    let c = config("{ addr = \"127.0.0.1:9001\" }", "0s");
    assert!(lookup(&c, None).await.expect("lookup").is_empty());
}
