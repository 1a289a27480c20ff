//! The serde shapes of the file, one struct per TOML table of the file, and the defaults of
//! every key as named consts.
//!
//! Nothing here judges a value: enums, durations and addresses stay text, numbers stay `i64`,
//! so that `validate/` can say which key of which listener or upstream is wrong, with the
//! bad value and the range. `deny_unknown_fields` everywhere: a typo must not pass silently.
//! Values that a later check needs to point at are kept `Spanned`.

use super::ConfigError;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::Path;
use toml::Spanned;

pub const DEFAULT_WORKER_THREADS: i64 = 0;
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "30s";
pub const DEFAULT_SHUTDOWN_DELAY: &str = "0s";
pub const DEFAULT_WATCH_CONFIG: bool = false;
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:9901";
pub const DEFAULT_LOG_LEVEL: &str = "info";
pub const DEFAULT_LOG_FORMAT: &str = "text";
pub const DEFAULT_LOG_ACCESS: bool = false;
/// Far above what one process serves well, low enough that a flood of clients cannot exhaust
/// file descriptors before the accept queue pushes back.
pub const DEFAULT_MAX_CONNECTIONS: i64 = 10_000;
pub const DEFAULT_HEADER_READ: &str = "10s";
pub const DEFAULT_IDLE: &str = "60s";
pub const DEFAULT_PROXY_PROTOCOL: bool = false;
pub const DEFAULT_MIN_VERSION: &str = "1.2";
pub const DEFAULT_SESSION_RESUMPTION: bool = true;
/// ALPN of http listeners when `alpn` is not set; tcp listeners advertise none.
pub const DEFAULT_HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];
pub const DEFAULT_BALANCE: &str = "round_robin";
pub const DEFAULT_WEIGHT: i64 = 1;
pub const DEFAULT_RESOLVE_INTERVAL: &str = "0s";
pub const DEFAULT_CONNECT_TIMEOUT: &str = "1s";
pub const DEFAULT_RESPONSE_TIMEOUT: &str = "30s";
pub const DEFAULT_RETRIES: i64 = 2;
pub const DEFAULT_SEND_PROXY_PROTOCOL: &str = "off";
pub const DEFAULT_SLOW_START: &str = "0s";
pub const DEFAULT_UPSTREAM_PROTOCOL: &str = "http1";
pub const DEFAULT_MAX_STREAMS: i64 = 100;
pub const DEFAULT_CHECK: &str = "tcp";
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";
pub const DEFAULT_HEALTH_INTERVAL: &str = "2s";
pub const DEFAULT_HEALTH_TIMEOUT: &str = "1s";
pub const DEFAULT_UNHEALTHY_THRESHOLD: i64 = 3;
pub const DEFAULT_HEALTHY_THRESHOLD: i64 = 2;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    #[serde(default)]
    pub runtime: RawRuntime,
    /// `None`: the table was omitted, the admin listener is disabled.
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub listener: Vec<RawListener>,
    #[serde(default)]
    pub upstream: BTreeMap<Spanned<String>, RawUpstream>,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub worker_threads: Option<Spanned<i64>>,
    pub shutdown_timeout: Option<Spanned<DurationText>>,
    pub shutdown_delay: Option<Spanned<DurationText>>,
    pub watch_config: Option<bool>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<Spanned<String>>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub access: Option<bool>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Spanned<String>,
    pub bind: Spanned<String>,
    pub protocol: Spanned<String>,
    /// Required for tcp; for http the default of requests no route matches.
    pub upstream: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub proxy_protocol: Option<bool>,
    pub tls: Option<RawListenerTls>,
    /// `[[listener.route]]`, in file order.
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
}

/// One `[[listener.route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<Vec<Spanned<String>>>>,
    pub path: Option<Spanned<String>>,
    pub path_exact: Option<Spanned<String>>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub headers: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub upstream: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<bool>>,
    pub redirect: Option<Spanned<RawRedirect>>,
    pub respond: Option<Spanned<RawRespond>>,
    pub request_headers: Option<RawHeaderRules>,
    pub response_headers: Option<RawHeaderRules>,
}

/// A route's `redirect = { scheme, host, port, path, status }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedirect {
    pub scheme: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub status: Option<Spanned<i64>>,
}

/// A route's `respond = { status, body }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRespond {
    pub status: Spanned<i64>,
    pub body: Option<Spanned<String>>,
}

/// `request_headers` / `response_headers = { set = { NAME = "value" }, remove = ["NAME"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderRules {
    #[serde(default)]
    pub set: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// A listener's `timeouts = { header_read = "10s", idle = "60s" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub header_read: Option<Spanned<DurationText>>,
    pub idle: Option<Spanned<DurationText>>,
}

/// `[listener.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Spanned<Vec<RawCertificate>>,
    pub min_version: Option<Spanned<String>>,
    pub session_resumption: Option<bool>,
    pub alpn: Option<Vec<Spanned<String>>>,
}

/// One `{ cert = "...", key = "..." }` of `certificates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// `[upstream.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub balance: Option<Spanned<String>>,
    pub backends: Spanned<Vec<RawBackend>>,
    pub resolve_interval: Option<Spanned<DurationText>>,
    pub connect_timeout: Option<Spanned<DurationText>>,
    pub response_timeout: Option<Spanned<DurationText>>,
    pub retries: Option<Spanned<i64>>,
    pub send_proxy_protocol: Option<Spanned<String>>,
    pub slow_start: Option<Spanned<DurationText>>,
    pub protocol: Option<Spanned<String>>,
    pub max_streams: Option<Spanned<i64>>,
    pub tls: Option<RawUpstreamTls>,
    #[serde(default)]
    pub health: RawHealth,
}

/// One `{ addr = "...", weight = N }` of `backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub addr: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
}

/// `[upstream.NAME.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub server_name: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
}

/// `[upstream.NAME.health]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub check: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub service: Option<Spanned<String>>,
    pub interval: Option<Spanned<DurationText>>,
    pub timeout: Option<Spanned<DurationText>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    pub healthy_threshold: Option<Spanned<i64>>,
}

/// The text of a duration such as `"250ms"`; parsed in `validate/values.rs`. Only a string is
/// accepted, so that `timeout = 5` fails with a message that shows the right form instead of
/// guessing a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(DURATION_FORM)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_owned()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "durations are strings with a unit: write \"{v}s\" or \"{v}ms\" instead of {v}"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "durations are strings with a unit: write \"{v}s\" or \"{v}ms\" instead of {v}"
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "durations are strings with a unit: write \"{v}s\" instead of {v}"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// How a duration is written, for error messages.
pub const DURATION_FORM: &str = "a duration string such as \"250ms\", \"2s\" or \"1m\"";

/// Parses the TOML text into the raw shapes; syntax errors, unknown keys, missing required
/// keys and wrong types are reported here.
pub fn parse(text: &str, path: &Path) -> Result<Raw, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))
}
