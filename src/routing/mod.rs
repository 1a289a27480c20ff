//! Content switching: which route of an http listener a request takes. Built once per
//! snapshot from the listener's `[[listener.route]]`; a lookup is a few hash probes (exact
//! host, each parent of the host for wildcards, the path's first segment) and the remaining
//! conditions of the few routes they find, however many routes there are.
//!
//! It knows requests only as their host, path, method and headers, and routes' targets as
//! `U` (the live upstream in the proxy, anything in benches and tests).

mod host;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};

use crate::config::{self, HeaderRules, HostPattern, Redirect, RouteMatch};
use crate::metrics::SeriesKey;

/// foldhash, not std's SipHash: a request's host is hashed once or more per lookup, and the
/// tables hold only names from the config file, so a client cannot grow their chains.
type HashMap<K, V> = foldhash::HashMap<K, V>;

pub use crate::config::normalize_path as normalize;
pub use host::host_key;

/// A listener's routes with their host index.
#[derive(Debug)]
pub struct Router<U> {
    /// Shared, so a request holds its route across the exchange without the snapshot.
    routes: Vec<Arc<Route<U>>>,
    /// Routes by exact host (lowercase), in file order.
    exact: HashMap<Box<str>, Vec<u32>>,
    /// Routes by wildcard suffix (`example.com` for `*.example.com`), in file order.
    suffix: HashMap<Box<str>, Vec<u32>>,
    /// Routes without a host condition whose path starts with a known segment, by that
    /// segment (`api` for `/api/v1`), in file order.
    by_segment: HashMap<Box<str>, Vec<u32>>,
    /// Routes without a host condition and without such a segment (no path, or `/`), in
    /// file order.
    any_host: Vec<u32>,
}

/// One route, ready to answer.
#[derive(Debug)]
pub struct Route<U> {
    /// The `route` metric label.
    pub name: Arc<str>,
    when: RouteMatch,
    pub action: Action<U>,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// Requests this route answered, for `/status`; carried across reloads by name.
    pub requests: Arc<AtomicU64>,
    /// Its request series' key; carried across reloads by name, like `requests`.
    pub series: SeriesKey,
}

#[derive(Debug)]
pub enum Action<U> {
    /// Forward to `upstream`; `strip` is the path prefix to remove first.
    Upstream {
        upstream: U,
        strip: Option<Box<str>>,
    },
    Redirect(Redirect),
    Respond {
        status: StatusCode,
        body: Bytes,
    },
}

/// What a lookup reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// As `host_key` makes it: lowercase, no port, no trailing dot.
    pub host: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl<U> Default for Router<U> {
    fn default() -> Self {
        Router {
            routes: Vec::new(),
            exact: HashMap::default(),
            suffix: HashMap::default(),
            by_segment: HashMap::default(),
            any_host: Vec::new(),
        }
    }
}

impl<U> Router<U> {
    /// The router of `routes`; `upstream` finds a route's target by name (a route whose
    /// target it cannot find is left out: validation makes that impossible). Request
    /// counts of routes that keep their name are carried over from `previous`.
    pub fn build(
        routes: &[config::Route],
        upstream: impl Fn(&str) -> Option<U>,
        previous: Option<&Router<U>>,
    ) -> Router<U> {
        let mut router = Router::default();
        // By name, once: a reload of 1,000 routes must not compare every pair.
        let before: HashMap<&str, &Route<U>> = previous
            .map(|p| p.routes.iter().map(|o| (&*o.name, &**o)).collect())
            .unwrap_or_default();
        for r in routes {
            let action = match &r.action {
                config::Action::Upstream { name, strip_prefix } => {
                    let Some(upstream) = upstream(name) else {
                        continue;
                    };
                    let strip = match (&r.when.path, strip_prefix) {
                        (Some(config::PathMatch::Prefix(p)), true) if p != "/" => {
                            Some(p.as_str().into())
                        }
                        _ => None,
                    };
                    Action::Upstream { upstream, strip }
                }
                config::Action::Redirect(to) => Action::Redirect(to.clone()),
                config::Action::Respond { status, body } => Action::Respond {
                    status: *status,
                    body: Bytes::from(body.clone()),
                },
            };
            let index = router.routes.len() as u32;
            if r.when.hosts.is_empty() {
                match r.when.path.as_ref().and_then(first_segment_of_route) {
                    Some(seg) => router.by_segment.entry(seg.into()).or_default().push(index),
                    None => router.any_host.push(index),
                }
            }
            for h in &r.when.hosts {
                let (map, key) = match h {
                    HostPattern::Exact(e) => (&mut router.exact, e),
                    HostPattern::Suffix(s) => (&mut router.suffix, s),
                };
                let list = map.entry(key.as_str().into()).or_default();
                // A route naming one host twice is listed once.
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
            let before = before.get(r.name.as_str());
            let requests = before.map_or_else(Arc::default, |o| Arc::clone(&o.requests));
            let series = before.map_or_else(SeriesKey::fresh, |o| o.series);
            router.routes.push(Arc::new(Route {
                name: Arc::from(r.name.as_str()),
                when: r.when.clone(),
                action,
                request_headers: r.request_headers.clone(),
                response_headers: r.response_headers.clone(),
                requests,
                series,
            }));
        }
        router
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every route, in file order.
    pub fn routes(&self) -> &[Arc<Route<U>>] {
        &self.routes
    }

    /// The first route, in file order, that `req` matches.
    pub fn lookup(&self, req: &Request<'_>) -> Option<&Arc<Route<U>>> {
        if self.routes.is_empty() {
            return None;
        }
        // Each list is in file order: the first match of each is its best, and the earliest
        // of those wins. A list stops as soon as it cannot beat what was found.
        let mut best: Option<u32> = None;
        let mut scan = |list: &[u32]| {
            for &i in list {
                if best.is_some_and(|b| i >= b) {
                    return;
                }
                if self
                    .routes
                    .get(i as usize)
                    .is_some_and(|r| r.rest_matches(req))
                {
                    best = Some(i);
                    return;
                }
            }
        };
        // A longer name is no DNS name (RFC 1035 §2.3.4) and matches no host route; the
        // bound also keeps the walk over its parents cheap whatever a client sends.
        let host_ok = req.host.len() <= MAX_HOST;
        if host_ok && let Some(list) = self.exact.get(req.host) {
            scan(list);
        }
        if host_ok && !self.suffix.is_empty() {
            let mut rest = req.host;
            while let Some((label, parent)) = rest.split_once('.') {
                if label.is_empty() {
                    break;
                }
                if let Some(list) = self.suffix.get(parent) {
                    scan(list);
                }
                rest = parent;
            }
        }
        if !self.by_segment.is_empty()
            && let Some(list) = self.by_segment.get(first_segment(req.path))
        {
            scan(list);
        }
        scan(&self.any_host);
        best.and_then(|i| self.routes.get(i as usize))
    }
}

/// The longest host name a host route can match.
const MAX_HOST: usize = 253;

/// The first segment of a request path: `api` of `/api/v1?x`, empty for `/`.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or(rest)
}

/// The first segment every path a route's path condition matches starts with; `None` for
/// the prefix `/`, which matches every path.
fn first_segment_of_route(p: &config::PathMatch) -> Option<&str> {
    match p {
        config::PathMatch::Prefix(prefix) if prefix == "/" => None,
        config::PathMatch::Prefix(path) | config::PathMatch::Exact(path) => {
            Some(first_segment(path))
        }
    }
}

impl<U> Route<U> {
    /// Every condition but the host, which the index has already matched.
    fn rest_matches(&self, req: &Request<'_>) -> bool {
        let w = &self.when;
        w.path.as_ref().is_none_or(|p| p.matches(req.path))
            && (w.methods.is_empty() || w.methods.contains(req.method))
            && w.headers
                .iter()
                .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
    }
}
