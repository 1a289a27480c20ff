//! What a route does besides forwarding: its redirect and fixed answers, its header rules,
//! and the prefix it strips from the path.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, StatusCode};

use crate::config::{HeaderRules, Redirect};

/// The host a request names: `:authority` (HTTP/2, absolute form) or `Host`.
pub(super) fn authority<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(header::HOST)?.to_str().ok(),
    }
}

/// `set` replaces, `remove` drops; removal first (a name is never in both).
pub(super) fn apply(rules: &HeaderRules, headers: &mut HeaderMap) {
    for name in &rules.remove {
        headers.remove(name);
    }
    for (name, value) in &rules.set {
        headers.insert(name.clone(), value.clone());
    }
}

/// The request target with `prefix` (a route's `path`, which it matched on a segment
/// boundary) removed, keeping one leading `/` and the query: `/v1` on `/v1/users?a` ->
/// `/users?a`, on `/v1` -> `/`.
pub(super) fn strip(uri: &Uri, prefix: &str) -> Option<Uri> {
    let path = uri.path();
    let rest = path.strip_prefix(prefix)?;
    with_path(uri, if rest.is_empty() { "/" } else { rest })
}

/// `uri` with its path replaced, its query kept.
pub(super) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Where a redirect sends the client: the request's own scheme, host, port and path with the
/// route's parts put in, and the query kept. `None` when the request names no host and the
/// route gives none.
pub(super) fn location(
    to: &Redirect,
    uri: &Uri,
    authority: Option<&str>,
    scheme: &str,
) -> Option<HeaderValue> {
    let (own_host, own_port) = match authority {
        Some(a) => split_port(a),
        None => ("", None),
    };
    let host = to.host.as_deref().unwrap_or(own_host);
    if host.is_empty() {
        return None;
    }
    let new_scheme = to.scheme.as_deref().unwrap_or(scheme);
    // The Host's port stays while the scheme does; a new scheme has its own default port.
    let port = match to.port {
        Some(p) => Some(p),
        None if new_scheme == scheme => own_port,
        None => None,
    };
    let default = if new_scheme == "https" { 443 } else { 80 };
    let path = to.path.as_deref().unwrap_or(uri.path());
    let mut out = format!("{new_scheme}://{host}");
    if let Some(p) = port.filter(|p| *p != default) {
        out.push(':');
        out.push_str(&p.to_string());
    }
    out.push_str(path);
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(q);
    }
    HeaderValue::try_from(out).ok()
}

/// `host:port` -> (`host`, port); `[v6]:port` keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    let split = if authority.starts_with('[') {
        authority
            .find("]:")
            .map(|i| (authority.get(..=i), authority.get(i + 2..)))
    } else {
        authority.rsplit_once(':').map(|(h, p)| (Some(h), Some(p)))
    };
    match split {
        Some((Some(h), Some(p))) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// The body of a redirect: its status line, as fulcrum's other short answers.
pub(super) fn status_text(status: StatusCode) -> Bytes {
    Bytes::from(format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    ))
}

#[cfg(test)]
mod tests;
