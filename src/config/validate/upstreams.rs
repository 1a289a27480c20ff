//! `[upstream.NAME]`: balance, backends (each address once), timeouts, retries and the
//! PROXY header sent; its `tls` and `health` tables are checked in their own files.

use super::Cx;
use crate::config::addr::parse_backend_addr;
use crate::config::error::quote;
use crate::config::raw;
use crate::config::{
    BackendConf, Balance, Check, ConfigError, ProxyProtocol, Upstream, UpstreamProtocol,
};
use std::ops::RangeInclusive;
use toml::Spanned;

const WEIGHT: RangeInclusive<i64> = 1..=1000;
/// More retries than this only add latency: each one is a different backend.
const RETRIES: RangeInclusive<i64> = 0..=100;
/// HTTP/2 servers commonly allow 100 to 250 concurrent streams; beyond a few thousand one
/// connection's flow-control window is the limit, not the stream count.
const MAX_STREAMS: RangeInclusive<i64> = 1..=10_000;

impl Cx<'_> {
    pub(super) fn upstream(
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
        if name.get_ref() == "none" {
            return Err(self.err(
                name.span(),
                "upstream name \"none\" is not allowed: the metrics use it for answers no \
                 upstream gave (pick another name)"
                    .to_owned(),
            ));
        }
        let name_span = name.span();
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
        let protocol_span = u.protocol.as_ref().map(Spanned::span);
        let protocol = self.choice(
            &ctx,
            "protocol",
            u.protocol,
            raw::DEFAULT_UPSTREAM_PROTOCOL,
            &[
                ("http1", UpstreamProtocol::Http1),
                ("h2c", UpstreamProtocol::H2c),
                ("h2", UpstreamProtocol::H2),
                ("auto", UpstreamProtocol::Auto),
            ],
        )?;
        let max_streams = self.int(
            &ctx,
            "max_streams",
            u.max_streams,
            raw::DEFAULT_MAX_STREAMS,
            MAX_STREAMS,
        )? as u32;
        let tls = match u.tls {
            Some(t) => Some(self.upstream_tls(&ctx, t)?),
            None => None,
        };
        let protocol_at = protocol_span.unwrap_or_else(|| name_span.clone());
        match (protocol, &tls) {
            (UpstreamProtocol::H2c, Some(_)) => {
                return Err(self.err(
                    protocol_at,
                    format!(
                        "{ctx}protocol \"h2c\" is HTTP/2 without TLS, but [upstream.{name}.tls] \
                         is present (use protocol = \"h2\" for HTTP/2 over TLS, or remove the \
                         tls table)"
                    ),
                ));
            }
            (UpstreamProtocol::H2 | UpstreamProtocol::Auto, None) => {
                return Err(self.err(
                    protocol_at,
                    format!(
                        "{ctx}protocol {} needs TLS to the backends: add [upstream.{name}.tls] \
                         (or use protocol = \"h2c\" for HTTP/2 without TLS)",
                        quote(protocol.as_str())
                    ),
                ));
            }
            _ => {}
        }
        let health_check_span = u.health.check.as_ref().map(Spanned::span);
        let health = self.health(&ctx, u.health)?;
        if health.check == Check::Grpc && protocol == UpstreamProtocol::Http1 {
            return Err(self.err(
                health_check_span.unwrap_or(name_span),
                format!(
                    "{ctx}health.check \"grpc\" speaks HTTP/2, but the upstream's protocol is \
                     \"http1\" (set protocol = \"h2c\", \"h2\" or \"auto\")"
                ),
            ));
        }
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
            protocol,
            max_streams,
            tls,
            health,
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
}
