//! Configuration: the TOML file (`conf/fulcrum.toml` documents every key), parsed and then
//! validated once into the types below, which cannot be wrong. The proxy path never re-checks
//! anything here.
//!
//! `raw.rs` holds the serde shapes of the file (`deny_unknown_fields`, spans kept where a
//! later check needs a location); `validate/` turns them into these types; `pem.rs` loads
//! and checks the TLS files they name; `error.rs` renders every problem as
//! `PATH:LINE:COL: what is wrong and how to fix it`.

mod addr;
mod error;
mod keys;
mod path;
mod pem;
mod raw;
mod route;
mod validate;

pub use error::ConfigError;
pub use path::normalize as normalize_path;
pub use route::{Action, HeaderRules, HostPattern, PathMatch, Redirect, Route, RouteMatch};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The whole validated configuration: one immutable snapshot.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (as given), for logs and `/status`.
    pub path: PathBuf,
    pub runtime: Runtime,
    /// `None`: the admin listener is disabled (the table was omitted).
    pub admin: Option<Admin>,
    pub log: Log,
    pub listeners: Vec<Listener>,
    /// Sorted by name; every `Listener::upstream` and route upstream names one of these.
    pub upstreams: Vec<Upstream>,
    /// What is valid but likely a mistake (an upstream nothing uses): printed by `check`,
    /// logged at start and reload.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// 0 = one per CPU core.
    pub worker_threads: usize,
    pub shutdown_timeout: Duration,
    pub shutdown_delay: Duration,
    pub watch_config: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub level: LogLevel,
    pub format: LogFormat,
    pub access: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub protocol: Protocol,
    /// Name of an entry of `Config::upstreams` (checked); always set for tcp. For http the
    /// default of requests no route matches (`None`: 404).
    pub upstream: Option<String>,
    /// At least 1.
    pub max_connections: usize,
    pub timeouts: ListenerTimeouts,
    /// Every connection starts with a PROXY protocol v1 or v2 header naming the client.
    pub proxy_protocol: bool,
    pub tls: Option<ListenerTls>,
    /// http only: tried in this order, the first that matches wins.
    pub routes: Vec<Route>,
}

impl Listener {
    /// Whether a client sends the first bytes on this listener: an HTTP request, a TLS
    /// ClientHello or a PROXY header. A plain TCP listener may carry a protocol where the
    /// server speaks first (SMTP, MySQL).
    pub fn client_speaks_first(&self) -> bool {
        self.protocol == Protocol::Http || self.tls.is_some() || self.proxy_protocol
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Http,
}

impl Protocol {
    /// As the file spells it: for logs, `check` and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTimeouts {
    /// http: the request head must be complete within this time; any listener: the PROXY
    /// header and the TLS handshake, together.
    pub header_read: Duration,
    /// Closes a connection with no traffic (tcp) or no request in progress (http).
    pub idle: Duration,
}

#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// At least one; the first is the default for clients without SNI or with an unknown one.
    pub certificates: Vec<Certificate>,
    pub min_version: TlsVersion,
    pub session_resumption: bool,
    /// ALPN protocols in order of preference, e.g. `["h2", "http/1.1"]`.
    pub alpn: Vec<String>,
}

/// A certificate chain and its key, loaded from PEM files and checked to match.
#[derive(Clone)]
pub struct Certificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The DNS names of the leaf certificate (subjectAltName, else CN), wildcards as written.
    pub dns_names: Vec<String>,
    /// The IP addresses of its subjectAltName: a client that reaches fulcrum by address.
    pub ip_names: Vec<std::net::IpAddr>,
    pub key: Arc<rustls::sign::CertifiedKey>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("dns_names", &self.dns_names)
            .field("ip_names", &self.ip_names)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub balance: Balance,
    /// At least one.
    pub backends: Vec<BackendConf>,
    pub resolve_interval: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub retries: u32,
    pub send_proxy_protocol: ProxyProtocol,
    pub slow_start: Duration,
    /// What fulcrum speaks to the backends (http listeners).
    pub protocol: UpstreamProtocol,
    /// HTTP/2: streams one backend connection carries at once before another is opened.
    pub max_streams: u32,
    pub tls: Option<UpstreamTls>,
    pub health: Health,
}

/// `protocol` of an upstream: HTTP/1.1, or HTTP/2 with prior knowledge (cleartext), over TLS,
/// or whichever the backend's ALPN picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    H2c,
    H2,
    Auto,
}

impl UpstreamProtocol {
    /// As the file spells it: for logs, `check` and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::H2 => "h2",
            UpstreamProtocol::Auto => "auto",
        }
    }

    /// Every connection is HTTP/2, so nothing but HTTP/2 (no Upgrade) can be sent.
    pub fn h2_only(self) -> bool {
        matches!(self, UpstreamProtocol::H2c | UpstreamProtocol::H2)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastLoad,
}

impl Balance {
    /// As the file spells it: for logs, `check` and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastLoad => "least_load",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConf {
    /// As written in the file: the `backend` metric label and the name in logs.
    pub addr: String,
    /// Host part of `addr` (an IP address or a DNS name), without brackets.
    pub host: String,
    pub port: u16,
    /// `Some` when `host` is an IP address literal.
    pub ip: Option<SocketAddr>,
    /// 1..=1000.
    pub weight: u32,
}

/// The PROXY protocol header fulcrum sends first on each backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    Off,
    V1,
    V2,
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// SNI and the name verified; `None`: the backend's host.
    pub server_name: Option<String>,
    pub ca: Option<PathBuf>,
    /// `ca`'s certificates, or the system's trust roots.
    pub roots: Arc<rustls::RootCertStore>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub check: Check,
    /// Path of the http check, starts with `/`.
    pub path: String,
    /// The service a grpc check asks about ("" = the whole server).
    pub service: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// 1..=100.
    pub unhealthy_threshold: u32,
    /// 1..=100.
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Tcp,
    Http,
    /// `grpc.health.v1.Health/Check` over the upstream's HTTP/2.
    Grpc,
    None,
}

impl Check {
    /// As the file spells it: for logs and `check`.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Tcp => "tcp",
            Check::Http => "http",
            Check::Grpc => "grpc",
            Check::None => "none",
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`: the one code path of start-up, `fulcrum check`
    /// and reload.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates `text`; `path` names the file in errors, and relative
    /// certificate paths are taken relative to the current directory.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = raw::parse(text, path)?;
        validate::validate(raw, text, path)
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}
