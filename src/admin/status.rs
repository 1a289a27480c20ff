//! `/status`: the live state as JSON, the shape the status page and monitoring read. Built
//! from one snapshot load, so a reload mid-request cannot mix two configurations.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::{LastReload, State};

#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub config: ConfigInfo,
    pub listeners: Vec<ListenerInfo>,
    pub upstreams: Vec<UpstreamInfo>,
}

#[derive(Debug, Serialize)]
pub struct ConfigInfo {
    pub path: String,
    /// Seconds since the Unix epoch when the running configuration was loaded.
    pub loaded_at: u64,
    /// null until the first reload; a failed one stays until the next success.
    pub last_reload: Option<LastReload>,
}

#[derive(Debug, Serialize)]
pub struct ListenerInfo {
    pub name: String,
    pub bind: String,
    pub protocol: &'static str,
    pub active_connections: u64,
    /// http listeners that have routes: each with the requests it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteInfo>>,
}

#[derive(Debug, Serialize)]
pub struct RouteInfo {
    pub name: String,
    /// null for redirect and respond routes.
    pub upstream: Option<String>,
    pub requests: u64,
}

#[derive(Debug, Serialize)]
pub struct UpstreamInfo {
    pub name: String,
    pub balance: &'static str,
    pub backends: Vec<BackendInfo>,
}

#[derive(Debug, Serialize)]
pub struct BackendInfo {
    pub addr: String,
    pub weight: u32,
    pub healthy: bool,
    pub in_flight: u64,
    /// `in_flight / weight`, what `least_load` compares.
    pub load: f64,
    pub requests: u64,
    pub failures: u64,
}

/// The status of the running process, listeners and upstreams in config order.
pub fn build(state: &State) -> Status {
    let snapshot = state.live.load();
    let config = &snapshot.config;
    let listeners = snapshot
        .listeners()
        .map(|(l, live)| ListenerInfo {
            name: l.name.clone(),
            bind: l.bind.to_string(),
            protocol: l.protocol.as_str(),
            active_connections: live.active.load(Ordering::Relaxed),
            routes: (!live.router.is_empty()).then(|| {
                live.router
                    .routes()
                    .iter()
                    .map(|r| RouteInfo {
                        name: r.name.to_string(),
                        upstream: match &r.action {
                            crate::routing::Action::Upstream { upstream, .. } => {
                                Some(upstream.name.to_string())
                            }
                            _ => None,
                        },
                        requests: r.requests.load(Ordering::Relaxed),
                    })
                    .collect()
            }),
        })
        .collect();
    let upstreams = config
        .upstreams
        .iter()
        .filter_map(|u| snapshot.upstreams.get(&u.name))
        .map(|u| UpstreamInfo {
            name: u.name.to_string(),
            balance: u.conf.balance.as_str(),
            backends: u
                .backends
                .iter()
                .map(|b| {
                    // One read, so load, weight and health are of the same moment.
                    let state = b.state();
                    BackendInfo {
                        addr: b.addr.to_string(),
                        weight: state.weight,
                        healthy: state.healthy,
                        in_flight: state.in_flight,
                        load: state.in_flight as f64 / f64::from(state.weight.max(1)),
                        requests: b.requests.load(Ordering::Relaxed),
                        failures: b.failures.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        config: ConfigInfo {
            path: config.path.display().to_string(),
            loaded_at: snapshot.loaded_at,
            last_reload: state.last_reload(),
        },
        listeners,
        upstreams,
    }
}
