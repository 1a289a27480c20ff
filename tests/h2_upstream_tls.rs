//! HTTP/2 to backends over TLS: `protocol = "h2"` needs the backend to choose h2 by ALPN,
//! `"auto"` speaks whichever the backend chose, and http checks speak it too.

mod support;
#[path = "support/web.rs"]
mod web;

use std::net::SocketAddr;

use support::ca::{Ca, tls_backend};
use support::{Fulcrum, Toml, free_port, temp_dir, wait_for_async};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn config(port: u16, protocol: &str, backends: &[SocketAddr], ca: &Ca) -> Toml {
    let ca = ca.write(&temp_dir("h2-tls"));
    Toml::http(port, backends)
        .set(&format!("protocol = \"{protocol}\"\nretries = 0"))
        .tls(&format!("ca = '{}'", ca.display()))
}

#[tokio::test]
async fn h2_over_tls_speaks_http2_and_refuses_a_backend_without_it() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let h2 = tls_backend(&leaf, &[b"h2"], None).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "h2", &[h2], &ca));
    let r = support::get(local(port), "/").await;
    assert_eq!((r.status, r.text()), (200, "h2".to_owned()));

    let h1_only = tls_backend(&leaf, &[b"http/1.1"], None).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "h2", &[h1_only], &ca));
    let r = support::get(local(port), "/").await;
    assert_eq!(r.status, 502, "the backend did not choose h2");
}

#[tokio::test]
async fn auto_speaks_what_each_backends_alpn_chose_and_checks_it_so() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["127.0.0.1"]);
    let h2 = tls_backend(&leaf, &[b"h2", b"http/1.1"], None).await;
    let h1 = tls_backend(&leaf, &[b"http/1.1"], None).await;
    let port = free_port();
    let admin = free_port();
    let toml = config(port, "auto", &[h2, h1], &ca)
        .health("check = \"http\"\ninterval = \"100ms\"")
        .admin(admin);
    let _f = Fulcrum::start(&toml);
    // Each backend passes its http checks, in its own protocol.
    for b in [h2, h1] {
        let label = b.to_string();
        wait_for_async("checks passed", || async {
            let (_, text) = web::get(local(admin), "/metrics").await.ok()?;
            let samples = web::parse_prometheus(&text);
            let count = |result| {
                web::value(
                    &samples,
                    "fulcrum_health_checks_total",
                    &[("backend", &label), ("result", result)],
                )
            };
            assert_eq!(count("fail").unwrap_or(0.0), 0.0, "{label} failed a check");
            (count("pass")? >= 2.0).then_some(())
        })
        .await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = support::get(local(port), "/").await;
        assert_eq!(r.status, 200);
        seen.push(r.text());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["h2", "http/1.1"], "each backend in its own protocol");
}
