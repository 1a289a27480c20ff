use super::*;

#[test]
fn status_lines_are_parsed_and_junk_is_refused() {
    assert_eq!(status(b"HTTP/1.1 200 OK\r\n"), Some(200));
    assert_eq!(status(b"HTTP/1.0 302 Found\r\n"), Some(302));
    assert_eq!(status(b"HTTP/1.1 503\r\n"), Some(503));
    assert_eq!(
        status(b"HTTP/2 200\r\n"),
        None,
        "only HTTP/1.x is asked for"
    );
    assert_eq!(status(b"HTTP/1.1 2x0 OK\r\n"), None);
    assert_eq!(status(b"HTTP/1.1"), None, "a cut-off line is no status");
    assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
}

#[tokio::test]
async fn a_backend_without_a_tls_name_fails_its_checks_rather_than_being_checked_in_plaintext() {
    // A backend that would pass a plaintext check: it accepts and answers 200.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dial = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    for check in [Check::Http, Check::Tcp] {
        let target = Target {
            dial,
            label: Arc::from("b"),
            host: Arc::from("b"),
            send: ProxyProtocol::Off,
            protocol: UpstreamProtocol::Http1,
            tls: Some(Err("no TLS name for the backend: invalid".to_owned())),
        };
        let health = Health {
            check,
            path: "/".to_owned(),
            service: String::new(),
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(5),
            unhealthy_threshold: 1,
            healthy_threshold: 1,
        };
        let r = probe(target, &health).await;
        let e = r.expect_err("a check that cannot speak TLS must fail");
        assert!(e.contains("no TLS name"), "{check:?}: {e}");
    }
}
