//! Headers written out byte by byte from proxy-protocol.txt, not built with the parser.

use std::net::SocketAddr;

use proptest::prelude::*;
use tokio::io::AsyncReadExt;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const V1_TCP4: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n";

/// v2 PROXY, TCP over IPv4, 192.0.2.1:56324 -> 198.51.100.2:443.
fn v2_tcp4() -> Vec<u8> {
    let mut h = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    h.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb]);
    h
}

#[test]
fn v1_and_v2_headers_are_parsed_with_their_length_and_source() {
    let mut v2_tlv = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x10".to_vec();
    v2_tlv.extend_from_slice(&[192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb]);
    // A NOOP TLV (type 0x04) of one byte.
    v2_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x2a]);
    let v2_local = b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    let cases: Vec<(Vec<u8>, usize, Option<SocketAddr>)> = vec![
        (
            V1_TCP4.to_vec(),
            V1_TCP4.len(),
            Some(addr("192.0.2.1:56324")),
        ),
        (
            V1_TCP6.to_vec(),
            V1_TCP6.len(),
            Some(addr("[2001:db8::1]:4000")),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), 15, None),
        (v2_tcp4(), 28, Some(addr("192.0.2.1:56324"))),
        (v2_tlv.clone(), 32, Some(addr("192.0.2.1:56324"))),
        (v2_local, 16, None),
    ];
    for (header, len, source) in cases {
        let mut with_payload = header.clone();
        with_payload.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let parsed = parse(&with_payload).expect("valid header");
        assert_eq!(
            parsed,
            Some(Parsed { len, source }),
            "header {header:?} must parse to its own length and source, payload untouched"
        );
        for cut in 0..header.len() {
            let partial = header.get(..cut).expect("cut within header");
            assert!(
                matches!(parse(partial), Ok(None)),
                "a header cut at {cut} of {header:?} must wait for more bytes"
            );
        }
    }
}

#[test]
fn anything_else_is_refused() {
    let mut v2_too_long = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x10\x01".to_vec();
    v2_too_long.extend_from_slice(&[0; 12]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("http", b"GET / HTTP/1.1\r\n".to_vec()),
        ("tls", vec![0x16, 0x03, 0x01, 0x00, 0xa5]),
        ("lowercase", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec()),
        ("bad ip", b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n".to_vec()),
        ("family mismatch", b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec()),
        (
            "port range",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 2\r\n".to_vec(),
        ),
        (
            "no crlf within 107",
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
        ),
        (
            "v2 version 3",
            b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x00".to_vec(),
        ),
        (
            "v2 short addresses",
            b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04".to_vec(),
        ),
        ("v2 over 4 KiB", v2_too_long),
    ];
    for (what, bytes) in cases {
        assert!(parse(&bytes).is_err(), "{what}: {bytes:?} must be refused");
    }
}

#[tokio::test]
async fn bytes_after_the_header_are_read_back_first() {
    let input = [V1_TCP4, b"hello"].concat();
    let (mut io, source) = read_header(&input[..]).await.expect("header read");
    assert_eq!(source, Some(addr("192.0.2.1:56324")));
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.expect("read payload");
    assert_eq!(
        rest, b"hello",
        "the payload read with the header must not be lost"
    );
}

#[tokio::test]
async fn a_stream_that_ends_or_overflows_before_a_header_is_refused() {
    assert!(matches!(
        read_header(&b"PROXY TCP4 "[..]).await,
        Err(Error::Closed)
    ));
    let endless = vec![b'\r'; MAX_HEADER * 2];
    assert!(read_header(&endless[..]).await.is_err());
}

#[test]
fn headers_to_backends_are_byte_exact() {
    let v4 = Addresses {
        client: addr("127.0.0.1:50000"),
        listener: addr("127.0.0.2:8080"),
    };
    assert_eq!(header(ProxyProtocol::Off, &v4), None);
    assert_eq!(
        header(ProxyProtocol::V1, &v4).as_deref(),
        Some(&b"PROXY TCP4 127.0.0.1 127.0.0.2 50000 8080\r\n"[..])
    );
    let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 2, 0xc3, 0x50, 0x1f, 0x90]);
    assert_eq!(header(ProxyProtocol::V2, &v4), Some(v2));

    let mixed = Addresses {
        client: addr("[2001:db8::1]:4000"),
        listener: addr("127.0.0.1:80"),
    };
    assert_eq!(
        header(ProxyProtocol::V1, &mixed).as_deref(),
        Some(&b"PROXY TCP6 2001:db8::1 ::ffff:127.0.0.1 4000 80\r\n"[..]),
        "one header names one family: the IPv4 side is mapped"
    );
    let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v2.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]);
    v2.extend_from_slice(&[0x0f, 0xa0, 0x00, 0x50]);
    assert_eq!(header(ProxyProtocol::V2, &mixed), Some(v2));

    assert_eq!(local(ProxyProtocol::V1), Some(&b"PROXY UNKNOWN\r\n"[..]));
    assert_eq!(
        local(ProxyProtocol::V2),
        Some(&b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00"[..])
    );
}

#[test]
fn what_fulcrum_sends_it_reads_back() {
    let v6 = Addresses {
        client: addr("[2001:db8::7]:65535"),
        listener: addr("[::1]:443"),
    };
    for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
        let h = header(version, &v6).expect("a header");
        let parsed = parse(&h).expect("own header valid");
        assert_eq!(
            parsed,
            Some(Parsed {
                len: h.len(),
                source: Some(v6.client)
            })
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Network input: any bytes, after any prefix a real header starts with, parse or are
    /// refused without a panic, and a parsed length never exceeds the input.
    #[test]
    fn parse_never_panics(
        lead in prop::sample::select(vec![&b""[..], b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ",
            b"\r\n\r\n\x00\r\nQUIT\n", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11"]),
        tail in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let input = [lead, &tail[..]].concat();
        if let Ok(Some(p)) = parse(&input) {
            prop_assert!(p.len <= input.len());
        }
    }
}
