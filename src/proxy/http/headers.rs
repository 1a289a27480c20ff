//! Header rules: hop-by-hop fields that never pass, upgrades, and the values fulcrum adds.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(super) const HOP_COUNT: usize = 6;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded. `Trailer` is not one: it announces
/// the trailer fields end to end, and hyper sends a body's trailers only when it names them.
pub(super) const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `X-Forwarded-For`, `X-Forwarded-Proto`.
pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// True when the client asks to switch protocols (WebSocket).
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes `Connection`, the headers it names and the other hop-by-hop headers. One pass
/// over the fields finds what is there (most messages carry none, or only `Connection`),
/// instead of a hash lookup for each of the seven names on every message.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass to learn which fixed hop-by-hop fields are present: most messages carry
    // none, or only `Connection`, and a lookup per name would cost more than the pass.
    let mut present = [false; HOP_COUNT];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = hop_index(name)
            && let Some(p) = present.get_mut(i)
        {
            *p = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    // The fields a `Connection` field names go too. Its values are read as it is removed:
    // one lookup for the field every message has, where reading and then removing took two.
    // The usual tokens (`close`, `keep-alive`, `upgrade`) name no field or a listed one.
    let mut named: Vec<HeaderName> = Vec::new();
    if present[0]
        && let header::Entry::Occupied(field) = headers.entry(header::CONNECTION)
    {
        let (_, values) = field.remove_entry_mult();
        for value in values {
            named.extend(
                value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .map(<[u8]>::trim_ascii)
                    .filter(|t| {
                        !t.is_empty()
                            && !t.eq_ignore_ascii_case(b"close")
                            && !HOP_BY_HOP
                                .iter()
                                .any(|h| t.eq_ignore_ascii_case(h.as_str().as_bytes()))
                    })
                    .filter_map(|t| HeaderName::from_bytes(t).ok()),
            );
        }
    }
    // `Connection`, first in the list, is gone already.
    for (name, _) in HOP_BY_HOP.iter().zip(present).skip(1).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    for name in named {
        headers.remove(name);
    }
}

/// The place of `name` in `HOP_BY_HOP`: one `match` on the name, where comparing it with
/// each of the seven costs more on every field of every message.
fn hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "transfer-encoding" => Some(4),
        "upgrade" => Some(5),
        _ => None,
    }
}

/// Joins several `cookie` fields into one, separated by `; `.
pub(super) fn join_cookies(headers: &mut HeaderMap) {
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// An IP address as a header value. IPv4 is formatted by hand: through `Display` it cost
/// more than the rest of a connection's setup.
pub(super) fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let mut buf = [0u8; 64];
    let len = match ip {
        std::net::IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(&mut buf, &mut len, b'.');
                }
                if octet >= 100 {
                    put(&mut buf, &mut len, b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(&mut buf, &mut len, b'0' + octet / 10 % 10);
                }
                put(&mut buf, &mut len, b'0' + octet % 10);
            }
            len
        }
        std::net::IpAddr::V6(_) => {
            use std::io::Write;
            let mut rest = &mut buf[..];
            match write!(rest, "{ip}") {
                Ok(()) => 64 - rest.len(),
                Err(_) => 0,
            }
        }
    };
    buf.get(..len)
        .filter(|t| !t.is_empty())
        .and_then(|t| HeaderValue::from_bytes(t).ok())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"))
}

fn put(buf: &mut [u8], len: &mut usize, b: u8) {
    if let Some(slot) = buf.get_mut(*len) {
        *slot = b;
        *len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::{HOP_BY_HOP, hop_index, ip_value};

    #[test]
    fn hop_index_agrees_with_the_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_index(&http::header::HOST), None);
    }

    #[test]
    fn ip_values_are_the_usual_text() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "255.255.255.255",
            "127.0.0.1",
            "::1",
            "2001:db8::ff00:42:8329",
        ] {
            let parsed: std::net::IpAddr = ip.parse().expect("an address");
            assert_eq!(ip_value(parsed).to_str().ok(), Some(ip));
        }
    }
}
