//! What the demo runs, read from `conf/demo.toml` with fulcrum's own config loader, so the
//! file and the demo cannot disagree: where everything listens, the HTTP backends of the
//! upstreams "web" and "api" with the part each one plays, and the path the api route takes.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use fulcrum::config::{Action, Config, PathMatch, Protocol};

/// One HTTP backend the demo starts: its upstream in the config, its name, its time to answer.
pub struct Role {
    pub upstream: &'static str,
    pub name: &'static str,
    pub delay: Duration,
}

/// Every HTTP backend, each upstream's in the file's order. Upstream "web" comes first: the
/// victim and the reload's new weights are its.
pub const ROLES: [Role; 5] = [
    role("web", "fast", 1),
    role("web", "medium", 5),
    role("web", "slow", 20),
    role("api", "api-1", 2),
    role("api", "api-2", 2),
];
/// How many HTTP backends there are.
pub const N: usize = ROLES.len();

const fn role(upstream: &'static str, name: &'static str, ms: u64) -> Role {
    Role {
        upstream,
        name,
        delay: Duration::from_millis(ms),
    }
}

/// Where everything listens, from `conf/demo.toml`.
pub struct Plan {
    pub web: SocketAddr,
    pub tcp: SocketAddr,
    pub admin: Option<SocketAddr>,
    /// The address of each of `ROLES`.
    pub backends: [SocketAddr; N],
    pub weights: [u32; N],
    pub echo: SocketAddr,
    /// The `path` of the route to upstream "api" (as validated: `/api`, no trailing `/`),
    /// which fulcrum strips before forwarding.
    pub api_prefix: String,
}

impl Plan {
    pub fn from_config(config: &Config) -> Result<Plan> {
        let listener = |p| config.listeners.iter().find(|l| l.protocol == p);
        let http = listener(Protocol::Http).context("no http listener")?;
        let upstream = |name| {
            config
                .upstream(name)
                .with_context(|| format!("no [upstream.{name}]"))
        };
        let mut backends = Vec::with_capacity(N);
        let mut weights = Vec::with_capacity(N);
        for (i, r) in ROLES.iter().enumerate() {
            // Its place among the roles of the same upstream is its place in the file.
            let nth = ROLES[..i]
                .iter()
                .filter(|o| o.upstream == r.upstream)
                .count();
            let want = ROLES.iter().filter(|o| o.upstream == r.upstream).count();
            let b = upstream(r.upstream)?.backends.get(nth);
            let addr = b.and_then(|b| b.ip).with_context(|| {
                format!("upstream {} needs {want} ip:port backends", r.upstream)
            })?;
            backends.push(addr);
            weights.push(b.map_or(1, |b| b.weight));
        }
        let api_prefix = http
            .routes
            .iter()
            .find_map(|r| match (&r.action, &r.when.path) {
                (
                    Action::Upstream {
                        name,
                        strip_prefix: true,
                    },
                    Some(PathMatch::Prefix(p)),
                ) if name == "api" && p != "/" => Some(p.clone()),
                _ => None,
            })
            .context("no route to upstream api with a `path` and `strip_prefix = true`")?;
        Ok(Plan {
            web: http.bind,
            tcp: listener(Protocol::Tcp).context("no tcp listener")?.bind,
            admin: config.admin.as_ref().map(|a| a.bind),
            backends: backends
                .try_into()
                .map_err(|_| anyhow::anyhow!("one address per backend"))?,
            weights: weights
                .try_into()
                .map_err(|_| anyhow::anyhow!("one weight per backend"))?,
            echo: upstream("echo")?
                .backends
                .first()
                .and_then(|b| b.ip)
                .context("upstream echo needs an ip:port backend")?,
            api_prefix,
        })
    }
}
