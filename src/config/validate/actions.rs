//! What a route does besides forwarding, checked: its redirect, its fixed answer, and its
//! request and response header rules.

use http::{HeaderName, StatusCode};
use toml::Spanned;

use super::Cx;
use crate::config::error::quote;
use crate::config::raw::{RawHeaderRules, RawRedirect, RawRespond};
use crate::config::{Action, ConfigError, HeaderRules, HostPattern, Redirect};

/// Longest `respond` body: an answer of a few lines, not a file server.
const MAX_BODY: usize = 64 * 1024;
/// Fields fulcrum manages itself (framing, hop-by-hop): a header rule must not touch them.
const MANAGED: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Cx<'_> {
    pub(super) fn redirect(&self, ctx: &str, r: RawRedirect) -> Result<Redirect, ConfigError> {
        let scheme = match r.scheme {
            None => None,
            Some(s) if matches!(s.get_ref().as_str(), "http" | "https") => Some(s.into_inner()),
            Some(s) => {
                return Err(self.err(
                    s.span(),
                    format!(
                        "{ctx}redirect.scheme {} is not valid (expected \"http\" or \"https\")",
                        quote(s.get_ref())
                    ),
                ));
            }
        };
        let host = match r.host {
            None => None,
            Some(h) => match self.host_pattern(ctx, &h)? {
                HostPattern::Exact(name) => Some(name),
                HostPattern::Suffix(_) => {
                    return Err(
                        self.err(h.span(), format!("{ctx}redirect.host cannot be a wildcard"))
                    );
                }
            },
        };
        let port = match r.port {
            None => None,
            Some(p) => Some(
                u16::try_from(*p.get_ref())
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        self.err(
                            p.span(),
                            format!(
                                "{ctx}redirect.port {} is out of range 1..=65535",
                                p.get_ref()
                            ),
                        )
                    })?,
            ),
        };
        let path = match &r.path {
            None => None,
            Some(p) => Some(self.path(ctx, "redirect.path", p)?.to_owned()),
        };
        let status = match r.status {
            None => StatusCode::FOUND,
            Some(s) if matches!(*s.get_ref(), 301 | 302 | 303 | 307 | 308) => {
                StatusCode::from_u16(*s.get_ref() as u16).unwrap_or(StatusCode::FOUND)
            }
            Some(s) => {
                return Err(self.err(
                    s.span(),
                    format!("{ctx}redirect.status {} is not a redirect (expected 301, 302, 303, 307 or 308)", s.get_ref()),
                ));
            }
        };
        Ok(Redirect {
            scheme,
            host,
            port,
            path,
            status,
        })
    }

    pub(super) fn respond(&self, ctx: &str, r: RawRespond) -> Result<Action, ConfigError> {
        let code = *r.status.get_ref();
        let status = (200..=599)
            .contains(&code)
            .then(|| StatusCode::from_u16(code as u16).ok())
            .flatten()
            .ok_or_else(|| {
                self.err(
                    r.status.span(),
                    format!("{ctx}respond.status {code} is out of range 200..=599"),
                )
            })?;
        let body = match r.body {
            Some(b) if b.get_ref().len() > MAX_BODY => {
                return Err(self.err(
                    b.span(),
                    format!(
                        "{ctx}respond.body is over {} KiB (a fixed answer is short text)",
                        MAX_BODY / 1024
                    ),
                ));
            }
            Some(b) => b.into_inner(),
            None => String::new(),
        };
        Ok(Action::Respond { status, body })
    }

    pub(super) fn header_rules(
        &self,
        ctx: &str,
        key: &str,
        raw: Option<RawHeaderRules>,
    ) -> Result<HeaderRules, ConfigError> {
        let Some(raw) = raw else {
            return Ok(HeaderRules::default());
        };
        let mut rules = HeaderRules::default();
        for name in &raw.remove {
            let field = self.managed_field(ctx, key, name)?;
            rules.remove.push(field);
        }
        for (name, value) in &raw.set {
            let field = self.managed_field(ctx, key, name)?;
            if rules.remove.contains(&field) {
                return Err(self.err(
                    name.span(),
                    format!(
                        "{ctx}{key}: {} is both set and removed (keep one)",
                        quote(name.get_ref())
                    ),
                ));
            }
            let v = self.header_value(&format!("{ctx}{key}.set: "), value)?;
            rules.set.push((field, v));
        }
        Ok(rules)
    }

    /// A header name a rule may touch: not one of the framing and hop-by-hop fields.
    fn managed_field(
        &self,
        ctx: &str,
        key: &str,
        name: &Spanned<String>,
    ) -> Result<HeaderName, ConfigError> {
        let field = self.field(ctx, name.get_ref(), name.span())?;
        if MANAGED.contains(&field.as_str()) {
            return Err(self.err(
                name.span(),
                format!(
                    "{ctx}{key}: {} is a framing or hop-by-hop field that fulcrum manages itself",
                    quote(name.get_ref())
                ),
            ));
        }
        Ok(field)
    }
}
