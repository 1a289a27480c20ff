//! How fulcrum talks to an upstream's backends (TLS identity and trust, the PROXY protocol,
//! the HTTP version), as a number: pooled connections carry the number they were opened
//! under, so a reload that changes how fulcrum talks to a backend never reuses a connection
//! opened the old way.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Upstream;
use crate::config;

/// The next number for a new way of talking; 0 is never given (an empty pool's).
static NEXT: AtomicU64 = AtomicU64::new(1);

/// The link of `conf`: that of `previous` when it talks to its backends the same way, else a
/// new one.
pub fn of(conf: &config::Upstream, previous: Option<&Upstream>) -> u64 {
    match previous {
        Some(p) if same(&p.conf, conf) => p.link,
        _ => NEXT.fetch_add(1, Ordering::Relaxed),
    }
}

fn same(a: &config::Upstream, b: &config::Upstream) -> bool {
    let tls = match (&a.tls, &b.tls) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            x.server_name == y.server_name && x.ca == y.ca && x.roots.roots == y.roots.roots
        }
        _ => false,
    };
    tls && a.send_proxy_protocol == b.send_proxy_protocol && a.protocol == b.protocol
}
