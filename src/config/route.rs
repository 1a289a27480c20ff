//! A listener's routes as validated: what a request must look like (`RouteMatch`) and what
//! the route does with it (`Action`), plus the rule that finds a route no request can reach
//! (`RouteMatch::covers`), which `fulcrum check` and every reload apply.

use http::{HeaderName, HeaderValue, Method, StatusCode};

/// One `[[listener.route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique within the listener: the `route` metric label.
    pub name: String,
    pub when: RouteMatch,
    pub action: Action,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
}

/// The conditions of a route; each one omitted matches every request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteMatch {
    /// Any of these; empty = any host.
    pub hosts: Vec<HostPattern>,
    pub path: Option<PathMatch>,
    /// Any of these; empty = any method.
    pub methods: Vec<Method>,
    /// Every one present with exactly this value.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A `host` entry, lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, kept as `example.com`: any name that ends in `.example.com`.
    Suffix(String),
}

/// `path` or `path_exact`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// On segment boundaries; kept without a trailing `/` (but `/` itself), so `/v1/` and
    /// `/v1` both match `/v1`, `/v1/` and `/v1/x`.
    Prefix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Forward to this upstream; `strip_prefix` removes the matched `path` prefix first.
    Upstream {
        name: String,
        strip_prefix: bool,
    },
    Redirect(Redirect),
    Respond {
        status: StatusCode,
        body: String,
    },
}

impl Action {
    /// The upstream this route sends to, if it sends anywhere.
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Action::Upstream { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Where a redirect points: each part `None` keeps the request's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub status: StatusCode,
}

/// `set` replaces every field of that name (or adds it); `remove` drops them. Removal comes
/// first; a name is never in both (checked).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

impl HostPattern {
    /// Whether every host this one matches, `other` matches too.
    fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Suffix(s), HostPattern::Exact(b)) => suffix_of(b, s),
            (HostPattern::Suffix(s), HostPattern::Suffix(t)) => t == s || suffix_of(t, s),
            (HostPattern::Exact(_), HostPattern::Suffix(_)) => false,
        }
    }

    /// Whether `host` (lowercase, no port, no trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(e) => e == host,
            HostPattern::Suffix(s) => suffix_of(host, s),
        }
    }
}

/// `name` is `x.SUFFIX` for some non-empty `x`.
fn suffix_of(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes().get(name.len() - suffix.len() - 1) == Some(&b'.')
}

impl PathMatch {
    /// Whether `path` (the request's, without its query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(e) => e == path,
            PathMatch::Prefix(p) => under(path, p),
        }
    }

    fn covers(&self, other: &PathMatch) -> bool {
        match (self, other) {
            (PathMatch::Prefix(p), PathMatch::Prefix(q) | PathMatch::Exact(q)) => under(q, p),
            (PathMatch::Exact(e), PathMatch::Exact(f)) => e == f,
            (PathMatch::Exact(_), PathMatch::Prefix(_)) => false,
        }
    }
}

/// `path` is `prefix` or lies below it on a segment boundary.
pub fn under(path: &str, prefix: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

impl RouteMatch {
    /// Whether every request that `other` matches, this matches too: a route with `other`
    /// after one with `self` can never be reached.
    pub fn covers(&self, other: &RouteMatch) -> bool {
        let hosts = self.hosts.is_empty()
            || (!other.hosts.is_empty()
                && other
                    .hosts
                    .iter()
                    .all(|o| self.hosts.iter().any(|s| s.covers(o))));
        let path = match (&self.path, &other.path) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(s), Some(o)) => s.covers(o),
        };
        let methods = self.methods.is_empty()
            || (!other.methods.is_empty()
                && other.methods.iter().all(|m| self.methods.contains(m)));
        let headers = self.headers.iter().all(|h| other.headers.contains(h));
        hosts && path && methods && headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(h: &str) -> HostPattern {
        HostPattern::Exact(h.into())
    }
    fn suffix(h: &str) -> HostPattern {
        HostPattern::Suffix(h.into())
    }
    fn prefix(p: &str) -> Option<PathMatch> {
        Some(PathMatch::Prefix(p.into()))
    }

    #[test]
    fn a_prefix_matches_on_segment_boundaries_only() {
        let p = PathMatch::Prefix("/v1".into());
        for yes in ["/v1", "/v1/", "/v1/x"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in ["/v10", "/v", "/", "/x/v1"] {
            assert!(!p.matches(no), "{no}");
        }
        assert!(PathMatch::Prefix("/".into()).matches("/anything"));
        assert!(PathMatch::Exact("/healthz".into()).matches("/healthz"));
        assert!(!PathMatch::Exact("/healthz".into()).matches("/healthz/"));
    }

    #[test]
    fn a_wildcard_needs_at_least_one_label_before_its_suffix() {
        let w = suffix("example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(!w.matches(".example.com"));
    }

    #[test]
    fn covering_is_checked_condition_by_condition() {
        let any = RouteMatch::default();
        let api = RouteMatch {
            hosts: vec![exact("api.example.com")],
            ..RouteMatch::default()
        };
        assert!(any.covers(&api), "a catch-all shadows everything after it");
        assert!(!api.covers(&any));
        let wild = RouteMatch {
            hosts: vec![suffix("example.com")],
            ..RouteMatch::default()
        };
        assert!(wild.covers(&api));
        let v1 = RouteMatch {
            path: prefix("/v1"),
            ..RouteMatch::default()
        };
        let v1_users = RouteMatch {
            path: prefix("/v1/users"),
            ..RouteMatch::default()
        };
        assert!(v1.covers(&v1_users));
        assert!(!v1_users.covers(&v1));
        assert!(!v1.covers(&RouteMatch {
            path: prefix("/v10"),
            ..RouteMatch::default()
        }));
        let get = RouteMatch {
            methods: vec![Method::GET],
            ..v1.clone()
        };
        assert!(!get.covers(&v1), "fewer methods do not cover all of them");
        assert!(v1.covers(&get));
        let canary = RouteMatch {
            headers: vec![(
                HeaderName::from_static("x-canary"),
                HeaderValue::from_static("1"),
            )],
            ..v1.clone()
        };
        assert!(v1.covers(&canary), "a header narrows the later route");
        assert!(
            !canary.covers(&v1),
            "a header condition does not cover its absence"
        );
    }
}
