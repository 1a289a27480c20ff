//! Raw shapes to validated types: every rule of the file checked once, each failure located
//! at the value it rejects and worded as `listener "web": what is wrong (the fix)`.

use super::addr::{binds_conflict, parse_backend_addr};
use super::error::quote;
use super::pem::{self, Which};
use super::raw::{self, DurationText, Raw};
use super::*;
use std::ops::{Range, RangeInclusive};
use toml::Spanned;

/// No timeout or interval is longer. Far beyond any useful setting, and it keeps
/// `Instant + duration` from overflowing (a panic) wherever a duration is used.
const MAX_DURATION: Duration = Duration::from_secs(31_557_600);
const WORKER_THREADS: RangeInclusive<i64> = 0..=1024;
const WEIGHT: RangeInclusive<i64> = 1..=1000;
const THRESHOLD: RangeInclusive<i64> = 1..=100;
/// More retries than this only add latency: each one is a different backend.
const RETRIES: RangeInclusive<i64> = 0..=100;
const MAX_CONNECTIONS: RangeInclusive<i64> = 1..=10_000_000;
/// An ALPN protocol id is 1..=255 bytes (RFC 7301 §3.1).
const MAX_ALPN_LEN: usize = 255;

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

/// Where a raw value sits in the text; `0..0` for a default, which never fails a check.
fn span_of<T>(v: &Option<Spanned<T>>) -> Range<usize> {
    v.as_ref().map_or(0..0, Spanned::span)
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
        Ok(Config {
            path: path.to_path_buf(),
            runtime,
            admin,
            log,
            listeners,
            upstreams,
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

    fn listeners(
        &mut self,
        raw: Vec<raw::RawListener>,
        admin: Option<&Admin>,
        upstreams: &[Upstream],
    ) -> Result<Vec<Listener>, ConfigError> {
        if raw.is_empty() {
            return Err(ConfigError::whole(
                self.path,
                "no [[listener]] is defined (add one: [[listener]] with name, bind, protocol \
                 and upstream)"
                    .to_owned(),
            ));
        }
        let mut out: Vec<Listener> = Vec::with_capacity(raw.len());
        for l in raw {
            let name_span = l.name.span();
            let bind_span = l.bind.span();
            let listener = self.listener(l, upstreams)?;
            if out.iter().any(|o| o.name == listener.name) {
                return Err(self.err(
                    name_span,
                    format!(
                        "listener {} is defined twice (listener names must be unique)",
                        quote(&listener.name)
                    ),
                ));
            }
            if let Some(other) = out.iter().find(|o| binds_conflict(o.bind, listener.bind)) {
                return Err(self.err(
                    bind_span,
                    format!(
                        "listener {}: bind \"{}\" conflicts with listener {} (bind \"{}\"); \
                         give each listener its own address",
                        quote(&listener.name),
                        listener.bind,
                        quote(&other.name),
                        other.bind
                    ),
                ));
            }
            if let Some(admin) = admin.filter(|a| binds_conflict(a.bind, listener.bind)) {
                return Err(self.err(
                    bind_span,
                    format!(
                        "listener {}: bind \"{}\" conflicts with [admin] bind \"{}\"; \
                         give each listener its own address",
                        quote(&listener.name),
                        listener.bind,
                        admin.bind
                    ),
                ));
            }
            out.push(listener);
        }
        Ok(out)
    }

    fn listener(
        &mut self,
        l: raw::RawListener,
        upstreams: &[Upstream],
    ) -> Result<Listener, ConfigError> {
        let name = l.name.get_ref().clone();
        if name.trim().is_empty() {
            return Err(self.err(
                l.name.span(),
                "listener name is empty (give each listener a unique name, e.g. \"web\")"
                    .to_owned(),
            ));
        }
        let ctx = format!("listener {}: ", quote(&name));
        let bind = self.bind(&ctx, &l.bind)?;
        let protocol = self.choice(
            &ctx,
            "protocol",
            Some(l.protocol),
            "",
            &[("tcp", Protocol::Tcp), ("http", Protocol::Http)],
        )?;
        let upstream = l.upstream.get_ref();
        if !upstreams.iter().any(|u| &u.name == upstream) {
            let defined = if upstreams.is_empty() {
                "no [upstream.NAME] table is defined".to_owned()
            } else {
                let names: Vec<String> = upstreams.iter().map(|u| quote(&u.name)).collect();
                format!("defined: {}", names.join(", "))
            };
            return Err(self.err(
                l.upstream.span(),
                format!(
                    "{ctx}upstream {} is not defined ({defined})",
                    quote(upstream)
                ),
            ));
        }
        let max_connections = self.int(
            &ctx,
            "max_connections",
            l.max_connections,
            raw::DEFAULT_MAX_CONNECTIONS,
            MAX_CONNECTIONS,
        )? as usize;
        let timeouts = ListenerTimeouts {
            header_read: self.duration(
                &ctx,
                "timeouts.header_read",
                l.timeouts.header_read,
                raw::DEFAULT_HEADER_READ,
                true,
            )?,
            idle: self.duration(
                &ctx,
                "timeouts.idle",
                l.timeouts.idle,
                raw::DEFAULT_IDLE,
                true,
            )?,
        };
        let tls = match l.tls {
            Some(t) => Some(self.listener_tls(&ctx, protocol, t)?),
            None => None,
        };
        Ok(Listener {
            upstream: upstream.clone(),
            name,
            bind,
            protocol,
            max_connections,
            timeouts,
            proxy_protocol: l.proxy_protocol.unwrap_or(raw::DEFAULT_PROXY_PROTOCOL),
            tls,
        })
    }

    fn listener_tls(
        &self,
        ctx: &str,
        protocol: Protocol,
        t: raw::RawListenerTls,
    ) -> Result<ListenerTls, ConfigError> {
        if t.certificates.get_ref().is_empty() {
            return Err(self.err(
                t.certificates.span(),
                format!(
                    "{ctx}tls.certificates is empty (add at least one \
                     {{ cert = \"site.crt\", key = \"site.key\" }})"
                ),
            ));
        }
        let mut certificates = Vec::new();
        for c in t.certificates.into_inner() {
            let cert_path = PathBuf::from(c.cert.get_ref());
            let key_path = PathBuf::from(c.key.get_ref());
            let loaded = pem::load_certificate(&cert_path, &key_path).map_err(|(which, m)| {
                let span = match which {
                    Which::Cert => c.cert.span(),
                    Which::Key => c.key.span(),
                };
                self.err(span, format!("{ctx}{m}"))
            })?;
            certificates.push(loaded);
        }
        let min_version = self.choice(
            ctx,
            "tls.min_version",
            t.min_version,
            raw::DEFAULT_MIN_VERSION,
            &[("1.2", TlsVersion::V1_2), ("1.3", TlsVersion::V1_3)],
        )?;
        let alpn = match t.alpn {
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for p in list {
                    let len = p.get_ref().len();
                    if len == 0 || len > MAX_ALPN_LEN {
                        return Err(self.err(
                            p.span(),
                            format!(
                                "{ctx}tls.alpn entry {} must be 1..={MAX_ALPN_LEN} bytes long \
                                 (e.g. \"h2\" or \"http/1.1\")",
                                quote(p.get_ref())
                            ),
                        ));
                    }
                    out.push(p.into_inner());
                }
                out
            }
            None if protocol == Protocol::Http => raw::DEFAULT_HTTP_ALPN
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            None => Vec::new(),
        };
        Ok(ListenerTls {
            certificates,
            min_version,
            session_resumption: t
                .session_resumption
                .unwrap_or(raw::DEFAULT_SESSION_RESUMPTION),
            alpn,
        })
    }

    fn upstream(
        &mut self,
        name: Spanned<String>,
        u: raw::RawUpstream,
    ) -> Result<Upstream, ConfigError> {
        if name.get_ref().trim().is_empty() {
            return Err(self.err(
                name.span(),
                "upstream name is empty (name the table, e.g. [upstream.app])".to_owned(),
            ));
        }
        let name = name.into_inner();
        let ctx = format!("upstream {}: ", quote(&name));
        let balance = self.choice(
            &ctx,
            "balance",
            u.balance,
            raw::DEFAULT_BALANCE,
            &[
                ("round_robin", Balance::RoundRobin),
                ("least_load", Balance::LeastLoad),
            ],
        )?;
        if u.backends.get_ref().is_empty() {
            return Err(self.err(
                u.backends.span(),
                format!(
                    "{ctx}backends is empty (add at least one {{ addr = \"127.0.0.1:9001\" }})"
                ),
            ));
        }
        let mut backends: Vec<BackendConf> = Vec::with_capacity(u.backends.get_ref().len());
        for b in u.backends.into_inner() {
            let span = b.addr.span();
            let backend = self.backend(&ctx, b)?;
            let same = |o: &&BackendConf| {
                o.port == backend.port && o.host.eq_ignore_ascii_case(&backend.host)
            };
            if let Some(other) = backends.iter().find(same) {
                // Health and counters are kept per (upstream, addr): two entries would share
                // them, and the weight says the same thing.
                return Err(self.err(
                    span,
                    format!(
                        "{ctx}backend {} is listed twice (as {} before; list it once \
                         with a larger weight)",
                        quote(&backend.addr),
                        quote(&other.addr)
                    ),
                ));
            }
            backends.push(backend);
        }
        let send_proxy_protocol = self.choice(
            &ctx,
            "send_proxy_protocol",
            u.send_proxy_protocol,
            raw::DEFAULT_SEND_PROXY_PROTOCOL,
            &[
                ("off", ProxyProtocol::Off),
                ("v1", ProxyProtocol::V1),
                ("v2", ProxyProtocol::V2),
            ],
        )?;
        let tls = match u.tls {
            Some(t) => Some(self.upstream_tls(&ctx, t)?),
            None => None,
        };
        Ok(Upstream {
            balance,
            backends,
            resolve_interval: self.duration(
                &ctx,
                "resolve_interval",
                u.resolve_interval,
                raw::DEFAULT_RESOLVE_INTERVAL,
                false,
            )?,
            connect_timeout: self.duration(
                &ctx,
                "connect_timeout",
                u.connect_timeout,
                raw::DEFAULT_CONNECT_TIMEOUT,
                true,
            )?,
            response_timeout: self.duration(
                &ctx,
                "response_timeout",
                u.response_timeout,
                raw::DEFAULT_RESPONSE_TIMEOUT,
                true,
            )?,
            retries: self.int(&ctx, "retries", u.retries, raw::DEFAULT_RETRIES, RETRIES)? as u32,
            send_proxy_protocol,
            slow_start: self.duration(
                &ctx,
                "slow_start",
                u.slow_start,
                raw::DEFAULT_SLOW_START,
                false,
            )?,
            tls,
            health: self.health(&ctx, u.health)?,
            name,
        })
    }

    fn backend(&self, ctx: &str, b: raw::RawBackend) -> Result<BackendConf, ConfigError> {
        let weight = self.int(ctx, "backend weight", b.weight, raw::DEFAULT_WEIGHT, WEIGHT)? as u32;
        let addr = b.addr.get_ref();
        let (host, port, ip) = parse_backend_addr(addr).map_err(|why| {
            self.err(
                b.addr.span(),
                format!("{ctx}backend addr {} is not valid: {why}", quote(addr)),
            )
        })?;
        Ok(BackendConf {
            addr: addr.clone(),
            host,
            port,
            ip,
            weight,
        })
    }

    fn upstream_tls(
        &mut self,
        ctx: &str,
        t: raw::RawUpstreamTls,
    ) -> Result<UpstreamTls, ConfigError> {
        if let Some(sn) = &t.server_name {
            let valid = rustls::pki_types::ServerName::try_from(sn.get_ref().as_str()).is_ok();
            if !valid {
                return Err(self.err(
                    sn.span(),
                    format!(
                        "{ctx}tls.server_name {} is not a DNS name or an IP address",
                        quote(sn.get_ref())
                    ),
                ));
            }
        }
        let (ca, roots) = match &t.ca {
            Some(ca) => {
                let path = PathBuf::from(ca.get_ref());
                let roots = pem::load_roots(&path)
                    .map_err(|m| self.err(ca.span(), format!("{ctx}tls.ca: {m}")))?;
                (Some(path), Arc::new(roots))
            }
            None => {
                let roots = self
                    .system_roots
                    .get_or_insert_with(|| Arc::new(pem::system_roots()))
                    .clone();
                (None, roots)
            }
        };
        Ok(UpstreamTls {
            server_name: t.server_name.map(Spanned::into_inner),
            ca,
            roots,
        })
    }

    fn health(&self, ctx: &str, h: raw::RawHealth) -> Result<Health, ConfigError> {
        let check = self.choice(
            ctx,
            "health.check",
            h.check,
            raw::DEFAULT_CHECK,
            &[
                ("tcp", Check::Tcp),
                ("http", Check::Http),
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
        Ok(Health {
            check,
            path,
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

    /// An `ip:port` to listen on.
    fn bind(&self, ctx: &str, v: &Spanned<String>) -> Result<SocketAddr, ConfigError> {
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
    fn int(
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
    fn duration(
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
    fn choice<T: Copy>(
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
