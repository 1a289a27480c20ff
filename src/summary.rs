//! The one-screen summary `fulcrum check` prints for a valid file.

use std::fmt::Write;

use crate::config::{Config, Protocol};

pub fn render(config: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}: ok", config.path.display());
    for l in &config.listeners {
        let proto = match (l.protocol, l.tls.is_some()) {
            (Protocol::Http, false) => "http",
            (Protocol::Http, true) => "https",
            (Protocol::Tcp, false) => "tcp",
            (Protocol::Tcp, true) => "tcp+tls",
        };
        let _ = writeln!(
            s,
            "listener {:?} {} {} -> upstream {:?}",
            l.name, proto, l.bind, l.upstream
        );
    }
    for u in &config.upstreams {
        let backends: Vec<String> = u
            .backends
            .iter()
            .map(|b| format!("{} (weight {})", b.addr, b.weight))
            .collect();
        let _ = writeln!(
            s,
            "upstream {:?} {}, health {}: {}",
            u.name,
            u.balance.as_str(),
            u.health.check.as_str(),
            backends.join(", ")
        );
    }
    match &config.admin {
        Some(a) => {
            let _ = writeln!(s, "admin {}", a.bind);
        }
        None => {
            let _ = writeln!(s, "admin off");
        }
    }
    s
}
