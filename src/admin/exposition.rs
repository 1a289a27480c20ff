//! `/metrics`: the exporter's text, with the gauges brought up to date from the running
//! snapshot first, and without the series of listeners, upstreams and backends that a reload
//! or a re-resolution removed (the exporter has no way to forget a series: they are left out
//! of the text instead).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{counter, gauge, histogram};

use crate::metrics::{
    ACTIVE_CONNECTIONS, BACKEND_FAILURES_TOTAL, BACKEND_HEALTHY, BACKEND_IN_FLIGHT, BYTES_TOTAL,
    CONFIG_RELOADS_TOTAL, CONNECTIONS_TOTAL, FAILOVERS_TOTAL, HEALTH_CHECKS_TOTAL,
    REQUEST_DURATION,
};
use crate::snapshot::Snapshot;
use crate::upstream::Failure;

/// Brings the gauges up to date with the live state just before a render, and registers every
/// family's series at zero so a scrape shows each of them from the start (a counter that
/// appears only at its first event breaks `rate()` and alerting on absence).
pub fn refresh(snapshot: &Snapshot) {
    for result in ["success", "failure"] {
        counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(0);
    }
    for (l, state) in snapshot.listeners() {
        let name = l.name.clone();
        counter!(CONNECTIONS_TOTAL, "listener" => name.clone()).increment(0);
        let open = state.active.load(Ordering::Relaxed);
        gauge!(ACTIVE_CONNECTIONS, "listener" => name.clone()).set(open as f64);
        for direction in ["rx", "tx"] {
            counter!(BYTES_TOTAL, "listener" => name.clone(), "direction" => direction)
                .increment(0);
        }
        if l.protocol == crate::config::Protocol::Http {
            // Creating the handle registers the histogram; it renders with count 0.
            for upstream in sends_to(l) {
                let _ = histogram!(REQUEST_DURATION, "listener" => name.clone(),
                    "upstream" => upstream.to_owned());
            }
        }
    }
    for u in snapshot.upstreams.values() {
        counter!(FAILOVERS_TOTAL, "upstream" => Arc::clone(&u.name)).increment(0);
        for b in &u.backends {
            let (up, addr) = (Arc::clone(&u.name), Arc::clone(&b.addr));
            let state = b.state();
            gauge!(BACKEND_HEALTHY, "upstream" => up.clone(), "backend" => addr.clone())
                .set(if state.healthy { 1.0 } else { 0.0 });
            gauge!(BACKEND_IN_FLIGHT, "upstream" => up.clone(), "backend" => addr.clone())
                .set(state.in_flight as f64);
            for kind in Failure::ALL {
                counter!(BACKEND_FAILURES_TOTAL, "upstream" => up.clone(),
                    "backend" => addr.clone(), "kind" => kind.as_str())
                .increment(0);
            }
            for result in ["pass", "fail"] {
                counter!(HEALTH_CHECKS_TOTAL, "upstream" => up.clone(),
                    "backend" => addr.clone(), "result" => result)
                .increment(0);
            }
        }
    }
}

/// The upstreams a listener sends to: its default and its routes'.
fn sends_to(l: &crate::config::Listener) -> HashSet<&str> {
    l.routes
        .iter()
        .filter_map(|r| r.action.upstream())
        .chain(l.upstream.as_deref())
        .collect()
}

/// What a listener's series may name now: each of its routes with the upstream it sends to
/// ("none" for no route, and for no upstream), and those upstreams alone.
struct Current<'a> {
    upstreams: HashSet<&'a str>,
    routes: HashSet<(&'a str, &'a str)>,
}

/// The lines of `text` that belong to the running configuration: a sample whose `listener`,
/// `route`, `upstream`, (`listener`, `upstream`) or (`upstream`, `backend`) labels name
/// something `snapshot` no longer has is left out; comments and everything else pass.
pub fn current_only(text: &str, snapshot: &Snapshot) -> String {
    let listeners: HashMap<&str, Current<'_>> = snapshot
        .config
        .listeners
        .iter()
        .map(|l| {
            let mut routes: HashSet<(&str, &str)> = l
                .routes
                .iter()
                .map(|r| (r.name.as_str(), r.action.upstream().unwrap_or("none")))
                .collect();
            // No route matched: the default upstream answered, or fulcrum itself.
            routes.insert(("none", "none"));
            routes.extend(l.upstream.as_deref().map(|u| ("none", u)));
            let upstreams = routes.iter().map(|(_, u)| *u).collect();
            (l.name.as_str(), Current { upstreams, routes })
        })
        .collect();
    let backends: HashMap<&str, HashSet<&str>> = snapshot
        .upstreams
        .iter()
        .map(|(name, u)| (name.as_str(), u.backends.iter().map(|b| &*b.addr).collect()))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with('#') || is_current(line, &listeners, &backends) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn is_current(
    line: &str,
    listeners: &HashMap<&str, Current<'_>>,
    backends: &HashMap<&str, HashSet<&str>>,
) -> bool {
    let labels = labels(line);
    let get = |key: &str| {
        labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };
    if let Some(l) = get("listener") {
        let Some(now) = listeners.get(l) else {
            return false;
        };
        // A listener's series of an upstream it no longer sends to, or of a removed route.
        let stale = match (get("route"), get("upstream")) {
            (Some(r), Some(u)) => !now.routes.contains(&(r, u)),
            (None, Some(u)) => !now.upstreams.contains(u),
            _ => false,
        };
        if stale {
            return false;
        }
    }
    match (get("upstream"), get("backend")) {
        (Some("none"), _) => true,
        (Some(u), backend) => match backends.get(u) {
            None => false,
            Some(known) => backend.is_none_or(|b| b == "none" || known.contains(b)),
        },
        (None, _) => true,
    }
}

/// The labels of one sample line, `name{k="v",...} value`, values unescaped.
fn labels(line: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let Some(open) = line.find('{') else {
        return out;
    };
    let mut rest = line.get(open + 1..).unwrap_or("");
    while let Some(eq) = rest.find("=\"") {
        let key = rest.get(..eq).unwrap_or("").trim_start_matches(',');
        let mut value = String::new();
        let mut chars = rest.get(eq + 2..).unwrap_or("").char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => break,
                },
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                other => value.push(other),
            }
        }
        let Some(end) = end else {
            break;
        };
        out.push((key, value));
        rest = rest.get(end..).unwrap_or("");
        if rest.starts_with('}') {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::{Current, is_current, labels};

    #[test]
    fn only_series_of_what_runs_now_are_current() {
        let web = Current {
            upstreams: HashSet::from(["app", "none"]),
            routes: HashSet::from([("api", "app"), ("api", "none"), ("none", "none")]),
        };
        let listeners = HashMap::from([("web", web)]);
        let backends = HashMap::from([
            ("app", HashSet::from(["10.0.0.1:80"])),
            ("old", HashSet::new()),
        ]);
        let current = |line: &str| is_current(line, &listeners, &backends);
        assert!(current(
            r#"r{listener="web",upstream="app",backend="10.0.0.1:80"} 1"#
        ));
        assert!(current(
            r#"r{listener="web",upstream="app",backend="none"} 1"#
        ));
        assert!(current(r#"reloads{result="success"} 1"#));
        assert!(!current(r#"r{listener="gone"} 1"#), "a removed listener");
        assert!(
            !current(r#"r{upstream="app",backend="10.0.0.2:80"} 1"#),
            "a removed backend"
        );
        assert!(!current(r#"f{upstream="gone"} 1"#), "a removed upstream");
        assert!(
            !current(r#"d{listener="web",upstream="old"} 1"#),
            "an upstream the listener no longer sends to"
        );
        assert!(current(
            r#"r{listener="web",route="api",upstream="app",backend="10.0.0.1:80"} 1"#
        ));
        assert!(current(
            r#"r{listener="web",route="none",upstream="none",backend="none"} 1"#
        ));
        assert!(
            !current(r#"r{listener="web",route="gone",upstream="app",backend="none"} 1"#),
            "a removed route"
        );
        assert!(
            !current(r#"r{listener="web",route="api",upstream="old",backend="none"} 1"#),
            "an upstream the route no longer sends to"
        );
    }

    #[test]
    fn labels_are_read_with_their_escapes() {
        let line = r#"fulcrum_x{upstream="a\"b",backend="10.0.0.1:80"} 1"#;
        let got = labels(line);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("upstream", "a\"b".to_owned()));
        assert_eq!(got[1], ("backend", "10.0.0.1:80".to_owned()));
        assert!(labels("fulcrum_y 3").is_empty());
    }
}
