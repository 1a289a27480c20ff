//! Single values of any table: listen addresses, integers in a range, durations and choices
//! among names. One wording for each kind of mistake, wherever the key is.

use super::Cx;
use crate::config::ConfigError;
use crate::config::error::quote;
use crate::config::raw::DurationText;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::time::Duration;
use toml::Spanned;

/// No timeout or interval is longer. Far beyond any useful setting, and it keeps
/// `Instant + duration` from overflowing (a panic) wherever a duration is used.
const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// Where a raw value sits in the text; `0..0` for a default, which never fails a check.
pub(super) fn span_of<T>(v: &Option<Spanned<T>>) -> Range<usize> {
    v.as_ref().map_or(0..0, Spanned::span)
}

impl Cx<'_> {
    /// An `ip:port` to listen on.
    pub(super) fn bind(&self, ctx: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
        let text = v.get_ref();
        text.parse::<SocketAddr>().map_err(|_| {
            self.err(
                v.span(),
                format!(
                    "{ctx}bind {} is not an ip:port address (e.g. \"0.0.0.0:8080\" or \
                     \"[::]:8080\")",
                    quote(text)
                ),
            )
        })
    }

    /// An integer in `range`, `default` when the key is absent. The result is in `range`, so
    /// callers may cast it to any type that holds the range.
    pub(super) fn int(
        &self,
        ctx: &str,
        key: &str,
        v: Option<Spanned<i64>>,
        default: i64,
        range: RangeInclusive<i64>,
    ) -> Result<i64, ConfigError> {
        let span = span_of(&v);
        let n = v.map_or(default, Spanned::into_inner);
        if range.contains(&n) {
            return Ok(n);
        }
        let (lo, hi) = (range.start(), range.end());
        Err(self.err(span, format!("{ctx}{key} {n} is out of range {lo}..={hi}")))
    }

    /// A duration string, `default` when the key is absent; `positive`: 0 is refused.
    pub(super) fn duration(
        &self,
        ctx: &str,
        key: &str,
        v: Option<Spanned<DurationText>>,
        default: &str,
        positive: bool,
    ) -> Result<Duration, ConfigError> {
        let span = span_of(&v);
        let text = v.map_or_else(|| default.to_owned(), |v| v.into_inner().0);
        let d = humantime::parse_duration(text.trim()).map_err(|_| {
            self.err(
                span.clone(),
                format!(
                    "{ctx}{key} {} is not a duration (write a number and a unit, like \
                     \"250ms\", \"2s\" or \"1m\")",
                    quote(&text)
                ),
            )
        })?;
        if positive && d.is_zero() {
            return Err(self.err(
                span,
                format!(
                    "{ctx}{key} {} must be more than zero (e.g. \"1s\")",
                    quote(&text)
                ),
            ));
        }
        if d > MAX_DURATION {
            return Err(self.err(
                span,
                format!("{ctx}{key} {} is too long (at most \"1y\")", quote(&text)),
            ));
        }
        Ok(d)
    }

    /// One of `choices` by its lowercase name, `default` when the key is absent.
    pub(super) fn choice<T: Copy>(
        &self,
        ctx: &str,
        key: &str,
        v: Option<Spanned<String>>,
        default: &str,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let span = span_of(&v);
        let text = v.map_or_else(|| default.to_owned(), Spanned::into_inner);
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
            return Ok(*value);
        }
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        Err(self.err(
            span,
            format!(
                "{ctx}{key} {} is not valid (expected one of {})",
                quote(&text),
                names.join(", ")
            ),
        ))
    }
}
