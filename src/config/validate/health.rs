//! `[upstream.NAME.health]`: the kind of check, its request path, timing and thresholds.

use super::Cx;
use super::values::span_of;
use crate::config::error::quote;
use crate::config::raw;
use crate::config::{Check, ConfigError, Health};
use std::ops::RangeInclusive;
use toml::Spanned;

const THRESHOLD: RangeInclusive<i64> = 1..=100;

impl Cx<'_> {
    pub(super) fn health(&self, ctx: &str, h: raw::RawHealth) -> Result<Health, ConfigError> {
        let check = self.choice(
            ctx,
            "health.check",
            h.check,
            raw::DEFAULT_CHECK,
            &[
                ("tcp", Check::Tcp),
                ("http", Check::Http),
                ("grpc", Check::Grpc),
                ("none", Check::None),
            ],
        )?;
        let path_span = span_of(&h.path);
        let path = h
            .path
            .map_or_else(|| raw::DEFAULT_HEALTH_PATH.to_owned(), Spanned::into_inner);
        if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(self.err(
                path_span,
                format!(
                    "{ctx}health.path {} is not a request path (it starts with \"/\", \
                     e.g. \"/healthz\")",
                    quote(&path)
                ),
            ));
        }
        let service = h.service.map_or_else(String::new, Spanned::into_inner);
        Ok(Health {
            check,
            path,
            service,
            interval: self.duration(
                ctx,
                "health.interval",
                h.interval,
                raw::DEFAULT_HEALTH_INTERVAL,
                true,
            )?,
            timeout: self.duration(
                ctx,
                "health.timeout",
                h.timeout,
                raw::DEFAULT_HEALTH_TIMEOUT,
                true,
            )?,
            unhealthy_threshold: self.int(
                ctx,
                "health.unhealthy_threshold",
                h.unhealthy_threshold,
                raw::DEFAULT_UNHEALTHY_THRESHOLD,
                THRESHOLD,
            )? as u32,
            healthy_threshold: self.int(
                ctx,
                "health.healthy_threshold",
                h.healthy_threshold,
                raw::DEFAULT_HEALTHY_THRESHOLD,
                THRESHOLD,
            )? as u32,
        })
    }
}
