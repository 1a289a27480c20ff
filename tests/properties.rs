//! The properties that the fuzz targets in `fuzz/` check, run with the normal suite: whatever
//! a client sends, fulcrum answers in HTTP or closes the connection, promptly, without a
//! panic, and forwards nothing that breaks a forwarding rule (`fulcrum::fuzzing` says how).
//! Arbitrary text through `Config::from_toml` is covered in `tests/config.rs`.

use fulcrum::fuzzing::HttpHead;
use proptest::prelude::*;
use tokio::runtime::Runtime;

/// A current-thread runtime (as the fuzz target uses) and the harness's backend on it.
fn harness() -> (Runtime, HttpHead) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let head = rt.block_on(HttpHead::start()).expect("in-process backend");
    (rt, head)
}

#[test]
fn the_harness_reaches_the_backend() {
    // Without this, the properties below could pass by never getting past a 400.
    let (rt, head) = harness();
    // The trailing byte keeps the first request from meeting EOF while in flight (hyper
    // drops a request whose client closed: see fuzz/README.md).
    let out = rt
        .block_on(head.run(b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\nG"))
        .expect("a plain GET breaks no rule");
    assert!(
        out.starts_with(b"HTTP/1.1 204 "),
        "a plain GET must be answered by the backend: {}",
        String::from_utf8_lossy(&out)
    );
}

/// One of `fixed`, or now and then a string of the regex `noise`.
fn piece(fixed: &[&'static str], noise: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        4 => prop::sample::select(fixed.to_vec()).prop_map(str::to_owned),
        1 => noise.prop_map(|s: String| s),
    ]
    .boxed()
}

/// Request lines and header fields built from the pieces that steer `prepare`: hop-by-hop
/// and framing headers, absolute and odd targets, upgrades, with some noise.
fn request_head() -> impl Strategy<Value = Vec<u8>> {
    let method = piece(&["GET", "POST", "HEAD", "CONNECT", "OPTIONS"], "[A-Z]{1,8}");
    let target = piece(
        &[
            "/",
            "/status/502",
            "*",
            "http://user@example.com:8080/a?b",
            "https://[::1]",
            "example.com:443",
        ],
        "[!-~]{0,24}",
    );
    let version = prop_oneof![
        6 => Just("HTTP/1.1".to_owned()),
        2 => Just("HTTP/1.0".to_owned()),
        1 => "[ -~]{0,9}",
    ];
    let name = piece(
        &[
            "Host",
            "Connection",
            "Upgrade",
            "Transfer-Encoding",
            "Content-Length",
            "TE",
            "Trailer",
            "Keep-Alive",
            "Proxy-Connection",
            "Expect",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Hop",
        ],
        "[!-9;-~]{1,12}",
    );
    let value = piece(
        &[
            "upgrade",
            "close, x-hop, host",
            "keep-alive",
            "chunked",
            "gzip, chunked",
            "3",
            "-1",
            "websocket",
            "100-continue",
            "10.0.0.1, 10.0.0.2",
        ],
        "[ -~]{0,16}",
    );
    let field = (name, value).prop_map(|(n, v)| format!("{n}: {v}"));
    let eol = piece(&["\r\n"], "\n");
    (
        method,
        target,
        version,
        prop::collection::vec(field, 0..12),
        eol,
        "[ -~]{0,24}",
    )
        .prop_map(
            |(m, t, v, fields, eol, rest): (
                String,
                String,
                String,
                Vec<String>,
                String,
                String,
            )| {
                let mut head = format!("{m} {t} {v}{eol}");
                for f in fields {
                    head.push_str(&f);
                    head.push_str(&eol);
                }
                head.push_str(&eol);
                head.push_str(&rest);
                head.into_bytes()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_bytes_are_answered_in_http_or_closed(input in prop::collection::vec(any::<u8>(), 0..512)) {
        let (rt, head) = harness();
        let out = rt.block_on(head.run(&input));
        prop_assert!(out.is_ok(), "{}", out.err().unwrap_or_default());
    }

}

proptest! {
    // Well-formed heads with a rare shape (two Host fields, say) need more cases; each is
    // well under a millisecond.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_heads_are_answered_in_http_or_closed(input in request_head()) {
        let (rt, head) = harness();
        let out = rt.block_on(head.run(&input));
        prop_assert!(out.is_ok(), "{}: {:?}", out.err().unwrap_or_default(), String::from_utf8_lossy(&input));
    }
}
