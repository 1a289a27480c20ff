//! `[[listener]]`: each one checked, then the set (unique names, binds that can all be
//! bound, no clash with `[admin]`).

use super::Cx;
use super::routes::undefined;
use crate::config::addr::binds_conflict;
use crate::config::error::quote;
use crate::config::raw;
use crate::config::{
    Admin, ConfigError, Listener, ListenerTimeouts, Protocol, Upstream, UpstreamProtocol,
};
use std::ops::RangeInclusive;

const MAX_CONNECTIONS: RangeInclusive<i64> = 1..=10_000_000;

impl Cx<'_> {
    pub(super) fn listeners(
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
        let protocol_span = l.protocol.span();
        let protocol = self.choice(
            &ctx,
            "protocol",
            Some(l.protocol),
            "",
            &[("tcp", Protocol::Tcp), ("http", Protocol::Http)],
        )?;
        let upstream = match &l.upstream {
            Some(u) if !upstreams.iter().any(|x| &x.name == u.get_ref()) => {
                return Err(self.err(u.span(), undefined(&ctx, u.get_ref(), upstreams)));
            }
            Some(u)
                if protocol == Protocol::Tcp
                    && let Some(h2) = upstreams.iter().find(|x| {
                        &x.name == u.get_ref() && x.protocol != UpstreamProtocol::Http1
                    }) =>
            {
                return Err(self.err(
                    u.span(),
                    format!(
                        "{ctx}upstream {} speaks {} to its backends, which a tcp listener \
                         cannot (it copies bytes; use an http listener, or an upstream \
                         without `protocol`)",
                        quote(u.get_ref()),
                        h2.protocol.as_str()
                    ),
                ));
            }
            Some(u) => Some(u.get_ref().clone()),
            None if protocol == Protocol::Tcp => {
                return Err(self.err(
                    protocol_span,
                    format!("{ctx}a tcp listener needs `upstream` (the upstream it sends to)"),
                ));
            }
            None => None,
        };
        if protocol == Protocol::Tcp
            && let Some(first) = l.route.first()
        {
            return Err(self.err(
                first.span(),
                format!(
                    "{ctx}routes are for http listeners (a tcp listener sends every \
                     connection to its `upstream`)"
                ),
            ));
        }
        let routes = self.routes(&ctx, l.route, upstreams)?;
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
            upstream,
            routes,
            name,
            bind,
            protocol,
            max_connections,
            timeouts,
            proxy_protocol: l.proxy_protocol.unwrap_or(raw::DEFAULT_PROXY_PROTOCOL),
            tls,
        })
    }
}
