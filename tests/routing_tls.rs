//! Tenants stay apart on TLS listeners: a request must name a host that the certificate its
//! connection was served with covers (else 421), while HTTP/2 connection reuse across the
//! names a certificate does cover keeps working and is routed per request.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::ca::{Ca, client_config, tls_connect};
use support::{Fulcrum, HttpBackend, Toml, free_port, http_backend, temp_dir};

/// A TLS http listener with certificates for `a.test` (and 127.0.0.1) and `*.b.test`, routing `a.test` to
/// `a`, `x.b.test` to `x` and `y.b.test` to `y`.
async fn tenants(tag: &str) -> (Fulcrum, SocketAddr, Ca, Vec<HttpBackend>) {
    let dir = temp_dir(tag);
    let ca = Ca::new();
    let a = ca.leaf(&["a.test", "127.0.0.1"]).write(&dir, "a");
    let b = ca.leaf(&["*.b.test"]).write(&dir, "b");
    let (ba, bx, by) = (
        http_backend("a").await,
        http_backend("x").await,
        http_backend("y").await,
    );
    let port = free_port();
    let toml = Toml::new()
        .routed("web", port)
        .tls(&format!("certificates = [{a}, {b}]"))
        .route("host = [\"a.test\"]\nupstream = \"a\"")
        .route("host = [\"x.b.test\"]\nupstream = \"x\"")
        .route("host = [\"y.b.test\"]\nupstream = \"y\"")
        .upstream("a", [ba.addr])
        .upstream("x", [bx.addr])
        .upstream("y", [by.addr]);
    let f = Fulcrum::start(&toml);
    // The backends live as long as the test holds them.
    (
        f,
        SocketAddr::from(([127, 0, 0, 1], port)),
        ca,
        vec![ba, bx, by],
    )
}

/// Sends GETs for each of `hosts` on one HTTP/2 connection opened with SNI `sni`: the status
/// and body of each.
async fn over_one_h2_connection(
    addr: SocketAddr,
    ca: &Ca,
    sni: &str,
    hosts: &[&str],
) -> Vec<(u16, String)> {
    let config = client_config(ca, rustls::ALL_VERSIONS, &["h2"]);
    let s = tls_connect(addr, sni, config).await.expect("TLS handshake");
    let mut sender = support::h2_client(s).await;
    let mut out = Vec::new();
    for host in hosts {
        let req = hyper::Request::get(format!("https://{host}/"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2 response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        out.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_certificate_does_not_cover_gets_421() {
    let (_f, addr, ca, _backends) = tenants("route-421").await;
    let got = over_one_h2_connection(addr, &ca, "a.test", &["a.test", "x.b.test"]).await;
    assert_eq!(got[0], (200, "a".to_owned()));
    assert_eq!(
        got[1],
        (421, "421 Misdirected Request\n".to_owned()),
        "a connection served a.test's certificate never reaches the b.test tenant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_serves_every_name_its_certificate_covers() {
    let (_f, addr, ca, _backends) = tenants("route-reuse").await;
    let got =
        over_one_h2_connection(addr, &ca, "x.b.test", &["x.b.test", "y.b.test", "a.test"]).await;
    assert_eq!(got[0], (200, "x".to_owned()));
    assert_eq!(
        got[1],
        (200, "y".to_owned()),
        "the wildcard covers y.b.test too"
    );
    assert_eq!(got[2].0, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sent_no_sni_named_no_tenant_and_is_not_refused() {
    let (_f, addr, ca, _backends) = tenants("route-no-sni").await;
    // An IP address is never sent as SNI (RFC 6066 §3): the default certificate is served.
    let got = over_one_h2_connection(addr, &ca, "127.0.0.1", &["a.test", "x.b.test"]).await;
    assert_eq!(got, [(200, "a".to_owned()), (200, "x".to_owned())]);
}
