//! The one-screen summary `fulcrum check` prints for a valid file.

use std::fmt::Write;

use crate::config::{Action, Config, HostPattern, PathMatch, Protocol, RouteMatch};

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
        let default = match &l.upstream {
            Some(u) => format!("upstream {u:?}"),
            None => "404".to_owned(),
        };
        let _ = writeln!(s, "listener {:?} {} {} -> {default}", l.name, proto, l.bind);
        for r in &l.routes {
            let _ = writeln!(
                s,
                "  route {:?}{} -> {}",
                r.name,
                conditions(&r.when),
                action(&r.action)
            );
        }
    }
    for u in &config.upstreams {
        let backends: Vec<String> = u
            .backends
            .iter()
            .map(|b| format!("{} (weight {})", b.addr, b.weight))
            .collect();
        let protocol = match u.protocol {
            crate::config::UpstreamProtocol::Http1 => String::new(),
            p => format!(" over {} (max_streams {})", p.as_str(), u.max_streams),
        };
        let _ = writeln!(
            s,
            "upstream {:?} {}{protocol}, health {}: {}",
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

/// A route's conditions as the file writes them, each after a space (empty: any request).
fn conditions(m: &RouteMatch) -> String {
    let mut s = String::new();
    if !m.hosts.is_empty() {
        let hosts: Vec<String> = m
            .hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(e) => e.clone(),
                HostPattern::Suffix(x) => format!("*.{x}"),
            })
            .collect();
        let _ = write!(s, " host {}", hosts.join(","));
    }
    match &m.path {
        Some(PathMatch::Prefix(p)) => {
            let _ = write!(s, " path {p}");
        }
        Some(PathMatch::Exact(p)) => {
            let _ = write!(s, " path_exact {p}");
        }
        None => {}
    }
    if !m.methods.is_empty() {
        let methods: Vec<&str> = m.methods.iter().map(|x| x.as_str()).collect();
        let _ = write!(s, " methods {}", methods.join(","));
    }
    for (name, value) in &m.headers {
        let _ = write!(s, " header {name}={}", value.to_str().unwrap_or("?"));
    }
    s
}

fn action(a: &Action) -> String {
    match a {
        Action::Upstream { name, strip_prefix } => {
            let strip = if *strip_prefix {
                " (prefix stripped)"
            } else {
                ""
            };
            format!("upstream {name:?}{strip}")
        }
        Action::Redirect(r) => format!("redirect {}", r.status.as_u16()),
        Action::Respond { status, .. } => format!("respond {}", status.as_u16()),
    }
}
