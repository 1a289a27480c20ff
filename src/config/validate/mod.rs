//! Raw shapes to validated types: every rule of the file checked once, each failure located
//! at the value it rejects and worded as `listener "web": what is wrong (the fix)`.
//!
//! This file holds the pass over the whole file and the small tables (`[runtime]`, `[admin]`,
//! `[log]`); each larger table has its own file, and `values.rs` the checks of single values
//! that they all share.

mod actions;
mod health;
mod listeners;
mod routes;
mod tls;
mod upstreams;
mod values;

use super::raw::{self, Raw};
use super::{Admin, Config, ConfigError, Log, LogFormat, LogLevel, Runtime};
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::sync::Arc;

const WORKER_THREADS: RangeInclusive<i64> = 0..=1024;

pub fn validate(raw: Raw, text: &str, path: &Path) -> Result<Config, ConfigError> {
    let cx = Cx {
        text,
        path,
        system_roots: None,
    };
    cx.check(raw, path)
}

/// What every check needs: the text to locate errors in, and the system roots, loaded once.
struct Cx<'a> {
    text: &'a str,
    path: &'a Path,
    system_roots: Option<Arc<rustls::RootCertStore>>,
}

impl Cx<'_> {
    fn err(&self, span: Range<usize>, message: String) -> ConfigError {
        ConfigError::at(self.path, self.text, span, message)
    }

    fn check(mut self, raw: Raw, path: &Path) -> Result<Config, ConfigError> {
        let runtime = self.runtime(raw.runtime)?;
        let admin = match raw.admin {
            Some(a) => Some(Admin {
                bind: match &a.bind {
                    Some(b) => self.bind("admin: ", b)?,
                    None => default_admin_bind(),
                },
            }),
            None => None,
        };
        let log = self.log(raw.log)?;
        let mut upstreams = Vec::with_capacity(raw.upstream.len());
        for (name, u) in raw.upstream {
            upstreams.push(self.upstream(name, u)?);
        }
        // BTreeMap order already; sorted again so the invariant does not hang on that.
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        let listeners = self.listeners(raw.listener, admin.as_ref(), &upstreams)?;
        let warnings = warnings(&listeners, &upstreams);
        Ok(Config {
            path: path.to_path_buf(),
            runtime,
            admin,
            log,
            listeners,
            upstreams,
            warnings,
        })
    }

    fn runtime(&self, r: raw::RawRuntime) -> Result<Runtime, ConfigError> {
        let ctx = "runtime: ";
        Ok(Runtime {
            worker_threads: self.int(
                ctx,
                "worker_threads",
                r.worker_threads,
                raw::DEFAULT_WORKER_THREADS,
                WORKER_THREADS,
            )? as usize,
            shutdown_timeout: self.duration(
                ctx,
                "shutdown_timeout",
                r.shutdown_timeout,
                raw::DEFAULT_SHUTDOWN_TIMEOUT,
                false,
            )?,
            shutdown_delay: self.duration(
                ctx,
                "shutdown_delay",
                r.shutdown_delay,
                raw::DEFAULT_SHUTDOWN_DELAY,
                false,
            )?,
            watch_config: r.watch_config.unwrap_or(raw::DEFAULT_WATCH_CONFIG),
        })
    }

    fn log(&self, l: raw::RawLog) -> Result<Log, ConfigError> {
        let ctx = "log: ";
        let levels = [
            ("error", LogLevel::Error),
            ("warn", LogLevel::Warn),
            ("info", LogLevel::Info),
            ("debug", LogLevel::Debug),
            ("trace", LogLevel::Trace),
        ];
        let formats = [("text", LogFormat::Text), ("json", LogFormat::Json)];
        Ok(Log {
            level: self.choice(ctx, "level", l.level, raw::DEFAULT_LOG_LEVEL, &levels)?,
            format: self.choice(ctx, "format", l.format, raw::DEFAULT_LOG_FORMAT, &formats)?,
            access: l.access.unwrap_or(raw::DEFAULT_LOG_ACCESS),
        })
    }
}

/// A warning for each upstream that no listener or route sends to (it is health-checked and
/// shown, but no request reaches it: a typo in a route, or a leftover), and for each http
/// listener that can only answer 404.
fn warnings(
    listeners: &[crate::config::Listener],
    upstreams: &[crate::config::Upstream],
) -> Vec<String> {
    let used = |name: &str| {
        listeners.iter().any(|l| {
            l.upstream.as_deref() == Some(name)
                || l.routes.iter().any(|r| r.action.upstream() == Some(name))
        })
    };
    let upstreams = upstreams.iter().filter(|u| !used(&u.name)).map(|u| {
        format!(
            "upstream \"{}\" is not used by any listener or route",
            u.name
        )
    });
    let only_404 = listeners
        .iter()
        .filter(|l| l.protocol == crate::config::Protocol::Http)
        .filter(|l| l.upstream.is_none() && l.routes.is_empty())
        .map(|l| {
            format!(
                "listener \"{}\" has neither an upstream nor routes: it answers every request 404",
                l.name
            )
        });
    upstreams.chain(only_404).collect()
}

/// `raw::DEFAULT_ADMIN_BIND`, which is a valid address (checked by a test).
fn default_admin_bind() -> SocketAddr {
    raw::DEFAULT_ADMIN_BIND
        .parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9901)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_admin_bind_is_valid() {
        assert!(raw::DEFAULT_ADMIN_BIND.parse::<SocketAddr>().is_ok());
    }
}
