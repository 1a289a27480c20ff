//! TLS behaviour of the real binary: termination on http and tcp listeners, SNI, ALPN h2,
//! the minimum version, TLS to backends with verification, and certificates swapped by a
//! reload. Certificates are made per test with rcgen under a test CA.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use support::ca::{Ca, Leaf, client_config, default_client, tls_backend, tls_connect};
use support::{
    Fulcrum, Mode, Toml, free_port, http_backend, tcp_backend, temp_dir, wait_for_async,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// The leaf certificate the server presented.
fn served_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let (_, conn) = s.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// One HTTP/1.1 GET over an established TLS connection: status and body.
async fn get_over(s: TlsStream<TcpStream>, path: &str) -> (u16, String) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("http1 handshake over TLS");
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "site.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A fulcrum config: one listener (`protocol`; `listener_tls` keys make it terminate TLS)
/// and one upstream over `backends` (`upstream_tls` keys: TLS to the backends).
fn config(
    port: u16,
    protocol: &str,
    listener_tls: &str,
    backends: &[SocketAddr],
    upstream_tls: &str,
) -> Toml {
    Toml::new()
        .runtime("shutdown_timeout = \"5s\"")
        .log("level = \"debug\"")
        .listener("web", port, protocol, "app")
        .tls(listener_tls)
        .upstream("app", backends)
        .set("retries = 1")
        .health("check = \"none\"")
        .tls(upstream_tls)
}

fn proxy(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// The keys of a listener's `tls` table: `certs` (TOML entries) and `extra` keys.
fn listener_tls(certs: &[String], extra: &str) -> String {
    format!("certificates = [{}]\n{extra}", certs.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_terminated_and_forwarded_with_proto_https() {
    let dir = temp_dir("tls-https");
    let ca = Ca::new();
    let site = ca.leaf(&["site.test"]).write(&dir, "site");
    let backend = http_backend("plain").await;
    let port = free_port();
    let _f = Fulcrum::start(&config(
        port,
        "http",
        &listener_tls(&[site], ""),
        &[backend.addr],
        "",
    ));
    let s = tls_connect(proxy(port), "site.test", default_client(&ca))
        .await
        .expect("TLS handshake with fulcrum");
    let (status, head) = get_over(s, "/headers").await;
    assert_eq!(status, 200, "an https request must be proxied");
    assert!(
        head.contains("x-forwarded-proto: https"),
        "a request that came over TLS must say so to the backend: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_the_certificate_naming_the_host() {
    let dir = temp_dir("tls-sni");
    let ca = Ca::new();
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["*.b.test"]);
    let certs = [a.write(&dir, "a"), b.write(&dir, "b")];
    let backend = http_backend("x").await;
    let port = free_port();
    let _f = Fulcrum::start(&config(
        port,
        "http",
        &listener_tls(&certs, ""),
        &[backend.addr],
        "",
    ));
    let s = tls_connect(proxy(port), "www.b.test", default_client(&ca))
        .await
        .expect("handshake for www.b.test");
    assert_eq!(
        served_leaf(&s),
        b.der,
        "SNI www.b.test must get the *.b.test certificate"
    );
    let s = tls_connect(proxy(port), "A.TEST", default_client(&ca))
        .await
        .expect("handshake for a.test");
    assert_eq!(served_leaf(&s), a.der, "SNI is matched case-insensitively");
    // Without SNI the first certificate is served (the client still checks it for a.test).
    let mut no_sni = (*default_client(&ca)).clone();
    no_sni.enable_sni = false;
    let s = tls_connect(proxy(port), "a.test", Arc::new(no_sni))
        .await
        .expect("handshake without SNI");
    assert_eq!(
        served_leaf(&s),
        a.der,
        "no SNI must get the first certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_served_when_alpn_picks_h2() {
    let dir = temp_dir("tls-h2");
    let ca = Ca::new();
    let site = ca.leaf(&["site.test"]).write(&dir, "site");
    let backend = http_backend("h2-backend").await;
    let port = free_port();
    let _f = Fulcrum::start(&config(
        port,
        "http",
        &listener_tls(&[site], ""),
        &[backend.addr],
        "",
    ));
    let config = client_config(&ca, rustls::ALL_VERSIONS, &["h2", "http/1.1"]);
    let s = tls_connect(proxy(port), "site.test", config)
        .await
        .expect("TLS handshake");
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "an http listener must offer h2 by default"
    );
    let mut sender = support::h2_client(s).await;
    for path in ["/", "/headers"] {
        let req = hyper::Request::get(format!("https://site.test{path}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let body = String::from_utf8_lossy(&body);
        if path == "/" {
            assert_eq!(
                body, "h2-backend",
                "the backend's answer must come back over h2"
            );
        } else {
            assert!(
                body.contains("host: site.test"),
                "the :authority must reach the backend as Host: {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_heads_obey_the_http1_limits_per_stream() {
    let dir = temp_dir("tls-h2-limits");
    let ca = Ca::new();
    let site = ca.leaf(&["site.test"]).write(&dir, "site");
    let backend = http_backend("ok").await;
    let port = free_port();
    let _f = Fulcrum::start(&config(
        port,
        "http",
        &listener_tls(&[site], ""),
        &[backend.addr],
        "",
    ));
    let config = client_config(&ca, rustls::ALL_VERSIONS, &["h2"]);
    let s = tls_connect(proxy(port), "site.test", config)
        .await
        .expect("TLS handshake");
    let mut sender = support::h2_client(s).await;
    let mut send = |fields: usize, value_len: usize| {
        let mut req = hyper::Request::get("https://site.test/")
            .body(Empty::<Bytes>::new())
            .expect("request");
        for i in 0..fields {
            let name = hyper::header::HeaderName::try_from(format!("x-f{i}")).expect("name");
            let value = hyper::header::HeaderValue::from_str(&"v".repeat(value_len)).expect("v");
            req.headers_mut().insert(name, value);
        }
        let fut = sender.send_request(req);
        async move { fut.await.expect("an h2 response").status().as_u16() }
    };
    assert_eq!(
        send(101, 1).await,
        431,
        "more than 100 header fields must be refused"
    );
    assert_eq!(
        send(1, 30 * 1024).await,
        200,
        "a 30 KiB head passes over HTTP/2 as it does over HTTP/1"
    );
    assert_eq!(
        send(0, 0).await,
        200,
        "the connection's other streams go on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_resumption_follows_the_setting() {
    for (resumption, want) in [
        (true, rustls::HandshakeKind::Resumed),
        (false, rustls::HandshakeKind::Full),
    ] {
        let dir = temp_dir("tls-resume");
        let ca = Ca::new();
        let site = ca.leaf(&["site.test"]).write(&dir, "site");
        let backend = http_backend("x").await;
        let port = free_port();
        let _f = Fulcrum::start(&config(
            port,
            "http",
            &listener_tls(&[site], &format!("session_resumption = {resumption}")),
            &[backend.addr],
            "",
        ));
        // One client configuration: it keeps the tickets it gets in its session store.
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = client_config(&ca, &[version], &[]);
            let first = tls_connect(proxy(port), "site.test", Arc::clone(&client))
                .await
                .expect("first handshake");
            // Reading the response also reads the TLS 1.3 tickets sent after the handshake.
            assert_eq!(get_over(first, "/").await.0, 200);
            let second = tls_connect(proxy(port), "site.test", client)
                .await
                .expect("second handshake");
            assert_eq!(
                second.get_ref().1.handshake_kind(),
                Some(want),
                "session_resumption = {resumption} over {version:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls12_client_is_refused_by_a_tls13_only_listener() {
    let dir = temp_dir("tls-min");
    let ca = Ca::new();
    let site = ca.leaf(&["site.test"]).write(&dir, "site");
    let backend = http_backend("x").await;
    let port = free_port();
    let _f = Fulcrum::start(&config(
        port,
        "http",
        &listener_tls(&[site], "min_version = \"1.3\""),
        &[backend.addr],
        "",
    ));
    let only_12 = client_config(&ca, &[&rustls::version::TLS12], &[]);
    let err = tls_connect(proxy(port), "site.test", only_12)
        .await
        .expect_err("a TLS 1.2 handshake must fail against min_version 1.3");
    let alert = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .cloned();
    assert_eq!(
        alert,
        Some(rustls::Error::AlertReceived(
            rustls::AlertDescription::ProtocolVersion
        )),
        "the client must get a protocol_version alert, got {err}"
    );
    let s = tls_connect(proxy(port), "site.test", default_client(&ca))
        .await
        .expect("a TLS 1.3 client is served");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_listener_terminates_tls_and_copies_plaintext() {
    let dir = temp_dir("tls-tcp");
    let ca = Ca::new();
    let site = ca.leaf(&["db.test"]).write(&dir, "db");
    let echo = tcp_backend("echo", Mode::Echo).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(
        port,
        "tcp",
        &listener_tls(&[site], ""),
        &[echo],
        "",
    ));
    let config = client_config(&ca, rustls::ALL_VERSIONS, &["h2"]);
    let mut s = tls_connect(proxy(port), "db.test", config)
        .await
        .expect("TLS handshake with a tcp listener");
    assert_eq!(
        s.get_ref().1.alpn_protocol(),
        None,
        "a tcp listener advertises no ALPN unless configured"
    );
    s.write_all(b"ping over tls").await.expect("write");
    s.shutdown().await.expect("close_notify and half-close");
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.expect("read echo");
    assert_eq!(back, b"ping over tls", "plaintext must be copied both ways");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_closing_without_close_notify_is_a_clean_close() {
    let dir = temp_dir("tls-eof");
    let ca = Ca::new();
    let site = ca.leaf(&["db.test"]).write(&dir, "db");
    let counter = tcp_backend("count", Mode::CountThenAnswer).await;
    let port = free_port();
    let _f = Fulcrum::start(&config(
        port,
        "tcp",
        &listener_tls(&[site], ""),
        &[counter],
        "",
    ));
    let mut s = tls_connect(proxy(port), "db.test", default_client(&ca))
        .await
        .expect("TLS handshake");
    s.write_all(b"12345").await.expect("write");
    s.flush().await.expect("flush");
    // FIN on the TCP socket without a close_notify alert, as many clients do.
    s.get_mut().0.shutdown().await.expect("tcp half-close");
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back).await;
    assert_eq!(
        String::from_utf8_lossy(&back),
        "got 5",
        "a close without close_notify must be passed on as a half-close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_backends_are_verified_and_an_untrusted_one_is_failed_over() {
    let dir = temp_dir("tls-backend");
    let ca = Ca::new();
    let other_ca = Ca::new();
    // No server_name: the backend's IP address is checked against the certificate's IP entry.
    let good = tls_backend(&ca.leaf(&["127.0.0.1"]), &[], Some("verified")).await;
    let untrusted = tls_backend(&other_ca.leaf(&["127.0.0.1"]), &[], Some("untrusted")).await;
    let ca_path = ca.write(&dir);
    let upstream_tls = format!("ca = '{}'", ca_path.display());
    let port = free_port();
    let f = Fulcrum::start(&config(port, "http", "", &[untrusted, good], &upstream_tls));
    for i in 0..4 {
        let r = support::get(proxy(port), "/").await;
        assert_eq!(
            r.status, 200,
            "request {i} must fail over to the verified backend"
        );
        assert_eq!(
            r.text(),
            "verified",
            "a backend whose certificate does not verify must never answer"
        );
    }
    f.wait_for_log("backend TLS handshake failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_certificate_signed_by_another_ca_gets_502() {
    let dir = temp_dir("tls-502");
    let ca = Ca::new();
    let other_ca = Ca::new();
    let untrusted = tls_backend(
        &other_ca.leaf(&["backend.internal"]),
        &[],
        Some("untrusted"),
    )
    .await;
    let ca_path = ca.write(&dir);
    let upstream_tls = format!(
        "server_name = \"backend.internal\"\nca = '{}'",
        ca_path.display()
    );
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "http", "", &[untrusted], &upstream_tls));
    let r = support::get(proxy(port), "/").await;
    assert_eq!(
        r.status, 502,
        "an unverifiable backend certificate is a bad gateway"
    );
    assert_eq!(r.text(), "502 Bad Gateway\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_backend_named_by_server_name_serves_http_and_tcp() {
    let dir = temp_dir("tls-sn");
    let ca = Ca::new();
    let backend = tls_backend(&ca.leaf(&["backend.internal"]), &[], Some("named")).await;
    let ca_path = ca.write(&dir);
    let upstream_tls = format!(
        "server_name = \"backend.internal\"\nca = '{}'",
        ca_path.display()
    );
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "http", "", &[backend], &upstream_tls));
    let r = support::get(proxy(port), "/").await;
    assert_eq!(r.status, 200, "server_name is the name verified");
    assert_eq!(r.text(), "named");
    drop(_f);

    // The same upstream behind a tcp listener: fulcrum dials, then speaks TLS to the backend.
    let port = free_port();
    let _f = Fulcrum::start(&config(port, "tcp", "", &[backend], &upstream_tls));
    let mut s = TcpStream::connect(proxy(port)).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 200") && out.ends_with("named"),
        "a tcp session must reach the TLS backend: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_the_new_certificate_and_keeps_open_connections() {
    let dir = temp_dir("tls-reload");
    let ca = Ca::new();
    let old = ca.leaf(&["site.test"]);
    let site = old.write(&dir, "site");
    let backend = http_backend("x").await;
    let port = free_port();
    let f = Fulcrum::start(&config(
        port,
        "http",
        &listener_tls(&[site], ""),
        &[backend.addr],
        "",
    ));
    let open = tls_connect(proxy(port), "site.test", default_client(&ca))
        .await
        .expect("handshake before reload");
    assert_eq!(served_leaf(&open), old.der);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);

    let new = ca.leaf(&["site.test"]);
    new.write(&dir, "site");
    f.signal(libc::SIGHUP);
    let client = default_client(&ca);
    wait_for_async("the reloaded certificate on a new handshake", || {
        let client = Arc::clone(&client);
        let want = new.der.clone();
        async move {
            let s = tls_connect(proxy(port), "site.test", client).await.ok()?;
            (served_leaf(&s) == want).then_some(())
        }
    })
    .await;
    f.wait_for_log("certificates replaced");

    let req = hyper::Request::get("/")
        .header("host", "site.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = sender
        .send_request(req)
        .await
        .expect("a connection opened before the reload keeps working");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_of_a_tls_upstream_speak_verified_tls() {
    let dir = temp_dir("tls-check");
    let ca = Ca::new();
    let other_ca = Ca::new();
    let good = tls_backend(&ca.leaf(&["127.0.0.1"]), &[], Some("verified")).await;
    let untrusted = tls_backend(&other_ca.leaf(&["127.0.0.1"]), &[], Some("untrusted")).await;
    let ca_path = ca.write(&dir);
    let upstream_tls = format!("ca = '{}'", ca_path.display());
    let port = free_port();
    let admin = free_port();
    let toml = config(port, "http", "", &[good, untrusted], &upstream_tls)
        .health("check = \"http\"\ninterval = \"100ms\"\nunhealthy_threshold = 1")
        .admin(admin);
    let f = Fulcrum::start(&toml);
    // The untrusted backend's check fails its verification: checks do run over TLS.
    f.wait_for_log(&format!("backend down upstream=app addr={untrusted}"));
    let passed = format!(
        "fulcrum_health_checks_total{{upstream=\"app\",backend=\"{good}\",result=\"pass\"}} "
    );
    support::wait_for_async("three passing checks of the verified backend", || async {
        let m = support::get(([127, 0, 0, 1], admin).into(), "/metrics").await;
        let n: f64 = m
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(passed.as_str()))?
            .trim()
            .parse()
            .ok()?;
        (n >= 3.0).then_some(())
    })
    .await;
    let r = support::get(proxy(port), "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "verified");
    assert!(
        !f.log()
            .contains(&format!("backend down upstream=app addr={good}")),
        "the verified backend passes its http checks over TLS: {}",
        f.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_across_a_reload_that_keeps_the_certificates() {
    let dir = temp_dir("tls-resume-reload");
    let ca = Ca::new();
    let site = ca.leaf(&["site.test"]).write(&dir, "site");
    let backend = http_backend("x").await;
    let port = free_port();
    let toml = config(
        port,
        "http",
        &listener_tls(&[site], "session_resumption = true"),
        &[backend.addr],
        "",
    );
    let f = Fulcrum::start(&toml);
    for (i, version) in [&rustls::version::TLS13, &rustls::version::TLS12]
        .into_iter()
        .enumerate()
    {
        let client = client_config(&ca, &[version], &[]);
        let first = tls_connect(proxy(port), "site.test", Arc::clone(&client))
            .await
            .expect("first handshake");
        // Reading the response also reads the TLS 1.3 tickets sent after the handshake.
        assert_eq!(get_over(first, "/").await.0, 200);
        // A reload that changes the upstream, not the listener's TLS.
        let changed = toml.clone().at("app").set(&format!("retries = {}", 2 + i));
        std::fs::write(&f.config, changed.to_string()).expect("rewrite config");
        f.signal(libc::SIGHUP);
        f.wait_for_log_count("configuration reloaded", i + 1);
        let second = tls_connect(proxy(port), "site.test", client)
            .await
            .expect("handshake after the reload");
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "a session from before the reload resumes after it ({version:?})"
        );
    }
}

/// A backend on one port that speaks TLS with `leaf` to a client that starts a handshake and
/// plain HTTP to any other; it answers "tls" or "plain" accordingly.
async fn tls_or_plain_backend(leaf: &Leaf) -> SocketAddr {
    let acceptor = support::ca::acceptor(leaf, &[]);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    async fn serve<S>(s: S, tag: &'static str)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = hyper::service::service_fn(move |_req| async move {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                Bytes::from_static(tag.as_bytes()),
            )))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(s), svc)
            .await;
    }
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                if s.peek(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                // 0x16: a TLS handshake record.
                if first[0] == 0x16 {
                    let Ok(s) = acceptor.accept(s).await else {
                        return;
                    };
                    serve(s, "tls").await;
                } else {
                    serve(s, "plain").await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_turns_backend_tls_on_never_reuses_a_plaintext_connection() {
    let dir = temp_dir("tls-pool-reload");
    let ca = Ca::new();
    let backend = tls_or_plain_backend(&ca.leaf(&["127.0.0.1"])).await;
    let port = free_port();
    let plain = config(port, "http", "", &[backend], "");
    let f = Fulcrum::start(&plain);
    let mut client = support::Client::connect(proxy(port)).await;
    for _ in 0..3 {
        let r = client.request("GET", "/", b"").await;
        assert_eq!(r.text(), "plain", "before the reload");
    }
    // The pooled backend connection is plaintext and busy with this client's traffic.
    let ca_path = ca.write(&dir);
    let tls = config(
        port,
        "http",
        "",
        &[backend],
        &format!("ca = '{}'", ca_path.display()),
    );
    std::fs::write(&f.config, tls.to_string()).expect("rewrite config");
    f.signal(libc::SIGHUP);
    f.wait_for_log("configuration reloaded");
    for i in 0..5 {
        let r = client.request("GET", "/", b"").await;
        assert_eq!(
            r.text(),
            "tls",
            "request {i} after the reload must go over TLS, not a pooled plaintext connection"
        );
    }
}
