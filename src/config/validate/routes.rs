//! `[[listener.route]]`: each route's conditions checked (its redirect, fixed answer and header
//! rules in `actions.rs`), then the list as a whole (unique names, no route that an earlier
//! one shadows).

use std::ops::Range;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::Cx;
use crate::config::error::{line_col, quote};
use crate::config::normalize_path;
use crate::config::raw::RawRoute;
use crate::config::{Action, ConfigError, HostPattern, PathMatch, Route, RouteMatch, Upstream};

impl Cx<'_> {
    /// The routes of listener `ctx`, in file order.
    pub(super) fn routes(
        &self,
        ctx: &str,
        raw: Vec<Spanned<RawRoute>>,
        upstreams: &[Upstream],
    ) -> Result<Vec<Route>, ConfigError> {
        let mut out: Vec<(Route, Range<usize>)> = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let span = r.span();
            let route = self.route(ctx, i + 1, r.into_inner(), span.clone(), upstreams)?;
            if let Some((_, at)) = out.iter().find(|(o, _)| o.name == route.name) {
                let (line, _) = line_col(self.text, at.start);
                return Err(self.err(
                    span,
                    format!(
                        "{ctx}route {} is defined twice (also on line {line}; route names \
                         must be unique within a listener)",
                        quote(&route.name)
                    ),
                ));
            }
            if let Some((earlier, at)) = out.iter().find(|(o, _)| o.when.covers(&route.when)) {
                let (line, col) = line_col(self.text, at.start);
                return Err(self.err(
                    span,
                    format!(
                        "{ctx}route {} can never match: route {} ({line}:{col}) comes first \
                         and matches every request it would (move it above {}, or narrow {})",
                        quote(&route.name),
                        quote(&earlier.name),
                        quote(&earlier.name),
                        quote(&earlier.name)
                    ),
                ));
            }
            out.push((route, span));
        }
        Ok(out.into_iter().map(|(r, _)| r).collect())
    }

    fn route(
        &self,
        listener: &str,
        position: usize,
        r: RawRoute,
        span: Range<usize>,
        upstreams: &[Upstream],
    ) -> Result<Route, ConfigError> {
        let name = match &r.name {
            Some(n) if n.get_ref().trim().is_empty() || n.get_ref() == "none" => {
                return Err(self.err(
                    n.span(),
                    format!(
                        "{listener}route name {} is not allowed (empty, or \"none\", which the \
                         metrics use for requests no route matched)",
                        quote(n.get_ref())
                    ),
                ));
            }
            Some(n) => n.get_ref().clone(),
            None => format!("route-{position}"),
        };
        let ctx = format!("{listener}route {}: ", quote(&name));
        let when = self.route_match(&ctx, &r)?;
        let actions = [
            r.upstream.is_some(),
            r.redirect.is_some(),
            r.respond.is_some(),
        ];
        if actions.iter().filter(|a| **a).count() != 1 {
            return Err(self.err(
                span,
                format!("{ctx}give exactly one of upstream, redirect or respond"),
            ));
        }
        let strip_prefix = r.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
        if let Some(s) = &r.strip_prefix
            && *s.get_ref()
            && (r.upstream.is_none() || r.path.is_none())
        {
            return Err(self.err(
                s.span(),
                format!("{ctx}strip_prefix needs `path` and `upstream` (it removes the matched prefix before forwarding)"),
            ));
        }
        let action = if let Some(u) = &r.upstream {
            if !upstreams.iter().any(|x| &x.name == u.get_ref()) {
                return Err(self.err(u.span(), undefined(&ctx, u.get_ref(), upstreams)));
            }
            Action::Upstream {
                name: u.get_ref().clone(),
                strip_prefix,
            }
        } else if let Some(rd) = r.redirect {
            Action::Redirect(self.redirect(&ctx, rd.into_inner())?)
        } else if let Some(rs) = r.respond {
            self.respond(&ctx, rs.into_inner())?
        } else {
            return Err(self.err(
                span,
                format!("{ctx}give one of upstream, redirect or respond"),
            ));
        };
        Ok(Route {
            name,
            when,
            action,
            request_headers: self.header_rules(&ctx, "request_headers", r.request_headers)?,
            response_headers: self.header_rules(&ctx, "response_headers", r.response_headers)?,
        })
    }

    fn route_match(&self, ctx: &str, r: &RawRoute) -> Result<RouteMatch, ConfigError> {
        let mut when = RouteMatch::default();
        if let Some(hosts) = &r.host {
            if hosts.get_ref().is_empty() {
                return Err(self.err(
                    hosts.span(),
                    format!("{ctx}host is an empty list (omit it to match any host)"),
                ));
            }
            for h in hosts.get_ref() {
                when.hosts.push(self.host_pattern(ctx, h)?);
            }
        }
        when.path = match (&r.path, &r.path_exact) {
            (Some(_), Some(e)) => {
                return Err(self.err(e.span(), format!("{ctx}give path or path_exact, not both")));
            }
            (Some(p), None) => Some(PathMatch::Prefix(
                normalize_prefix(&self.route_path(ctx, "path", p)?).to_owned(),
            )),
            (None, Some(e)) => Some(PathMatch::Exact(self.route_path(ctx, "path_exact", e)?)),
            (None, None) => None,
        };
        if let Some(methods) = &r.methods {
            for m in methods.get_ref() {
                let text = m.get_ref();
                let method = Method::from_bytes(text.as_bytes())
                    .ok()
                    .filter(|_| !text.bytes().any(|b| b.is_ascii_lowercase()));
                let Some(method) = method else {
                    return Err(self.err(
                        m.span(),
                        format!(
                            "{ctx}method {} is not an HTTP method (methods are upper case, \
                             e.g. \"GET\")",
                            quote(text)
                        ),
                    ));
                };
                when.methods.push(method);
            }
        }
        if let Some(headers) = &r.headers {
            for (name, value) in headers.get_ref() {
                let field = self.field(ctx, name, value.span())?;
                let v = self.header_value(&format!("{ctx}headers.{name}: "), value)?;
                when.headers.push((field, v));
            }
        }
        Ok(when)
    }

    /// A header value of a condition or a rule; `ctx` names the key.
    pub(super) fn header_value(
        &self,
        ctx: &str,
        value: &Spanned<String>,
    ) -> Result<HeaderValue, ConfigError> {
        HeaderValue::from_str(value.get_ref()).map_err(|_| {
            self.err(
                value.span(),
                format!(
                    "{ctx}{} is not a valid header value",
                    quote(value.get_ref())
                ),
            )
        })
    }

    /// A `host` entry: a name, `*.` and a suffix, or an IP address; no port.
    pub(super) fn host_pattern(
        &self,
        ctx: &str,
        h: &Spanned<String>,
    ) -> Result<HostPattern, ConfigError> {
        let text = h.get_ref().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let ip = name.starts_with('[') && name.ends_with(']');
        let ok = !name.is_empty()
            && (ip
                && !wild
                && name[1..name.len() - 1]
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok()
                || name.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }));
        if !ok {
            return Err(self.err(
                h.span(),
                format!(
                    "{ctx}host {} is not a host name (write \"api.example.com\" or \
                     \"*.example.com\", without a port)",
                    quote(h.get_ref())
                ),
            ));
        }
        Ok(if wild {
            HostPattern::Suffix(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    pub(super) fn path<'a>(
        &self,
        ctx: &str,
        key: &str,
        p: &'a Spanned<String>,
    ) -> Result<&'a str, ConfigError> {
        let text = p.get_ref();
        let valid = text.starts_with('/')
            && !text.contains(['?', '#'])
            && text.parse::<http::uri::PathAndQuery>().is_ok();
        if !valid {
            return Err(self.err(
                p.span(),
                format!(
                    "{ctx}{key} {} is not a path (it starts with \"/\" and has no query, e.g. \
                     \"/api/\")",
                    quote(text)
                ),
            ));
        }
        Ok(text)
    }

    /// A path a route matches, in the form request paths are matched in (`normalize_path`),
    /// so that `/a//b` or `/%7Euser` can match, and the shadow check compares like with like.
    fn route_path(&self, ctx: &str, key: &str, p: &Spanned<String>) -> Result<String, ConfigError> {
        let text = self.path(ctx, key, p)?;
        match normalize_path(text) {
            Some(n) => Ok(n.into_owned()),
            None => Err(self.err(
                p.span(),
                format!(
                    "{ctx}{key} {} climbs above the root with \"..\"",
                    quote(text)
                ),
            )),
        }
    }

    pub(super) fn field(
        &self,
        ctx: &str,
        name: &str,
        span: Range<usize>,
    ) -> Result<HeaderName, ConfigError> {
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            self.err(
                span,
                format!("{ctx}{} is not a valid header name", quote(name)),
            )
        })
    }
}

/// `/v1/` and `/v1` match the same requests: kept without the trailing `/`.
fn normalize_prefix(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/" } else { t }
}

/// The error for an upstream name that no `[upstream.NAME]` defines.
pub(super) fn undefined(ctx: &str, name: &str, upstreams: &[Upstream]) -> String {
    let defined = if upstreams.is_empty() {
        "no [upstream.NAME] table is defined".to_owned()
    } else {
        let names: Vec<String> = upstreams.iter().map(|u| quote(&u.name)).collect();
        format!("defined: {}", names.join(", "))
    };
    format!("{ctx}upstream {} is not defined ({defined})", quote(name))
}
