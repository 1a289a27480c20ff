//! What a reload changes, worded for the operator's log.

use crate::config::{Config, Listener};

/// What a reload changes, one line per change, for the operator.
pub fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            None => out.push(format!("listener \"{}\" added on {}", l.name, l.bind)),
            Some(o) if o.bind != l.bind => out.push(format!(
                "listener \"{}\" moved from {} to {}",
                l.name, o.bind, l.bind
            )),
            Some(o) => {
                if o.upstream != l.upstream
                    || o.protocol != l.protocol
                    || o.max_connections != l.max_connections
                    || o.timeouts != l.timeouts
                    || o.proxy_protocol != l.proxy_protocol
                {
                    out.push(format!("listener \"{}\" settings changed", l.name));
                }
                let certs = |t: &Option<crate::config::ListenerTls>| {
                    t.as_ref().map(|t| {
                        t.certificates
                            .iter()
                            .map(|c| c.key.cert.clone())
                            .collect::<Vec<_>>()
                    })
                };
                if certs(&o.tls) != certs(&l.tls) {
                    out.push(format!("listener \"{}\" certificates replaced", l.name));
                }
                routes(o, l, &mut out);
            }
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            out.push(format!("listener \"{}\" removed from {}", o.name, o.bind));
        }
    }
    for u in &new.upstreams {
        let Some(o) = old.upstream(&u.name) else {
            out.push(format!("upstream \"{}\" added", u.name));
            continue;
        };
        for b in &u.backends {
            match o.backends.iter().find(|ob| ob.addr == b.addr) {
                None => out.push(format!("upstream \"{}\": backend {} added", u.name, b.addr)),
                Some(ob) if ob.weight != b.weight => out.push(format!(
                    "upstream \"{}\": backend {} weight {} -> {}",
                    u.name, b.addr, ob.weight, b.weight
                )),
                Some(_) => {}
            }
        }
        for ob in &o.backends {
            if !u.backends.iter().any(|b| b.addr == ob.addr) {
                out.push(format!(
                    "upstream \"{}\": backend {} removed",
                    u.name, ob.addr
                ));
            }
        }
        if o.balance != u.balance
            || o.connect_timeout != u.connect_timeout
            || o.response_timeout != u.response_timeout
            || o.retries != u.retries
            || o.send_proxy_protocol != u.send_proxy_protocol
            || o.slow_start != u.slow_start
            || o.protocol != u.protocol
            || o.max_streams != u.max_streams
            || o.health != u.health
            || o.resolve_interval != u.resolve_interval
            || o.tls.is_some() != u.tls.is_some()
        {
            out.push(format!("upstream \"{}\" settings changed", u.name));
        }
    }
    for o in &old.upstreams {
        if new.upstream(&o.name).is_none() {
            out.push(format!("upstream \"{}\" removed", o.name));
        }
    }
    out
}

/// Routes added, removed and changed, by name, and a new order of those that stayed (order
/// decides which route wins).
fn routes(old: &Listener, new: &Listener, out: &mut Vec<String>) {
    for r in &new.routes {
        match old.routes.iter().find(|o| o.name == r.name) {
            None => out.push(format!(
                "listener \"{}\": route \"{}\" added",
                new.name, r.name
            )),
            Some(o) if o != r => out.push(format!(
                "listener \"{}\": route \"{}\" changed",
                new.name, r.name
            )),
            Some(_) => {}
        }
    }
    for o in &old.routes {
        if !new.routes.iter().any(|r| r.name == o.name) {
            out.push(format!(
                "listener \"{}\": route \"{}\" removed",
                new.name, o.name
            ));
        }
    }
    let kept = |a: &Listener, b: &Listener| -> Vec<String> {
        a.routes
            .iter()
            .filter(|r| b.routes.iter().any(|o| o.name == r.name))
            .map(|r| r.name.clone())
            .collect()
    };
    if kept(old, new) != kept(new, old) {
        out.push(format!("listener \"{}\": routes reordered", new.name));
    }
}
