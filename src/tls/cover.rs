//! The names a served certificate covers: a request on a TLS connection must name one of them
//! (else 421), so a connection opened for one tenant never reaches another.

use std::net::IpAddr;

use crate::config::Certificate;

/// One certificate's DNS names and IP addresses, ready to compare with request hosts.
#[derive(Debug, Default)]
pub struct Cover {
    /// Lowercase, no trailing dot.
    exact: Vec<String>,
    /// Parents of `*.` names: `example.com` for `*.example.com` (one label, RFC 6125 §6.4.3).
    wildcard: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Cover {
    pub fn new(c: &Certificate) -> Cover {
        let mut cover = Cover {
            ips: c.ip_names.clone(),
            ..Cover::default()
        };
        for name in &c.dns_names {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => cover.wildcard.push(parent.to_owned()),
                None => cover.exact.push(name),
            }
        }
        cover
    }

    /// The certificate's exact DNS names, lowercase, without a trailing dot.
    pub fn exact(&self) -> impl Iterator<Item = &str> {
        self.exact.iter().map(String::as_str)
    }

    /// The parents of its `*.` names: `example.com` for `*.example.com`.
    pub fn wildcard_parents(&self) -> impl Iterator<Item = &str> {
        self.wildcard.iter().map(String::as_str)
    }

    /// Whether `host` (as `routing::host_key` makes it) is one of the certificate's names.
    pub fn covers(&self, host: &str) -> bool {
        if self.exact.iter().any(|e| e == host) {
            return true;
        }
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return self.ips.contains(&ip);
        }
        match host.split_once('.') {
            Some((label, parent)) if !label.is_empty() => self.wildcard.iter().any(|w| w == parent),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cover;

    fn cover(dns: &[&str], ips: &[&str]) -> Cover {
        let mut c = Cover::default();
        for d in dns {
            match d.strip_prefix("*.") {
                Some(parent) => c.wildcard.push(parent.to_owned()),
                None => c.exact.push((*d).to_owned()),
            }
        }
        c.ips = ips.iter().map(|i| i.parse().expect("ip")).collect();
        c
    }

    #[test]
    fn names_wildcards_of_one_label_and_ip_addresses_are_covered() {
        let c = cover(&["site.test", "*.b.test"], &["127.0.0.1", "::1"]);
        for yes in ["site.test", "x.b.test", "127.0.0.1", "[::1]"] {
            assert!(c.covers(yes), "{yes}");
        }
        for no in [
            "b.test",
            "x.y.b.test",
            "other.test",
            "127.0.0.2",
            "[::2]",
            "",
        ] {
            assert!(!c.covers(no), "{no}");
        }
    }
}
