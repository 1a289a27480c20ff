//! Addresses in the file: backend `addr` split into host and port, and which listen
//! addresses cannot be bound together.

use std::net::{IpAddr, SocketAddr};

/// Whether two listen addresses cannot both be bound: the same port (0 picks a free one, so
/// never conflicts) on the same address, or on a wildcard address that covers the other
/// (`[::]` covers IPv4 too: Linux binds it dual-stack by default).
pub fn binds_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let covers = |w: IpAddr, other: IpAddr| {
        w.is_unspecified() && (w.is_ipv6() || w.is_ipv4() == other.is_ipv4())
    };
    a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip())
}

/// `ip:port`, `[v6]:port` or `host:port` → (host without brackets, port, the address when
/// host is an IP literal). The error says what is wrong, for the message.
pub fn parse_backend_addr(addr: &str) -> Result<(String, u16, Option<SocketAddr>), &'static str> {
    const PORT: &str = "the port must be 1..=65535 (write ip:port or host:port)";
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(PORT);
        }
        return Ok((sa.ip().to_string(), sa.port(), Some(sa)));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("the port is missing (write ip:port or host:port, e.g. \"127.0.0.1:9001\")");
    };
    if host.contains([':', '[', ']']) {
        return Err("an IPv6 address goes in brackets, e.g. \"[::1]:9001\"");
    }
    let port: u16 = port.parse().map_err(|_| PORT)?;
    if port == 0 {
        return Err(PORT);
    }
    if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
        return Err("the host is not an IP address or a DNS name (write ip:port or host:port)");
    }
    Ok((host.to_owned(), port, None))
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_`, each 1..=63 long,
/// at most 253 in all (a trailing dot allowed).
fn is_dns_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_split_into_host_port_and_ip() {
        let (host, port, ip) = parse_backend_addr("127.0.0.1:9001").unwrap();
        assert_eq!((host.as_str(), port), ("127.0.0.1", 9001));
        assert!(ip.is_some(), "an IP literal must fill ip");
        let (host, port, ip) = parse_backend_addr("[::1]:80").unwrap();
        assert_eq!((host.as_str(), port, ip.is_some()), ("::1", 80, true));
        let (host, port, ip) = parse_backend_addr("app.svc.cluster.local:8080").unwrap();
        assert_eq!(
            (host.as_str(), port, ip),
            ("app.svc.cluster.local", 8080, None)
        );
        for bad in [
            "",
            "app",
            "app:",
            "app:0",
            "app:70000",
            "::1:80",
            "a b:80",
            ":80",
            "-a:1",
        ] {
            assert!(parse_backend_addr(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn wildcard_binds_conflict_with_their_port() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(binds_conflict(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(binds_conflict(a("[::]:80"), a("127.0.0.1:80")));
        assert!(!binds_conflict(a("0.0.0.0:80"), a("[::1]:80")));
        assert!(
            !binds_conflict(a("127.0.0.1:0"), a("127.0.0.1:0")),
            "port 0 never conflicts"
        );
        assert!(!binds_conflict(a("127.0.0.1:80"), a("127.0.0.2:80")));
    }
}
