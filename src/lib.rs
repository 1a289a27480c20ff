//! fulcrum: a layer-4 / layer-7 load-balancing proxy.
//!
//! The data flow: a listener task accepts a client connection (`listener`); the connection
//! becomes a tcp session or an http connection (`proxy`); per session or per request the
//! upstream (`upstream`) picks a healthy backend through the balancing core (`balance`) and
//! leases it; the one failover loop (`proxy::failover`) opens a backend connection and moves
//! on to another backend when it fails. The health checker (`health`) marks backends up and
//! down. The validated configuration (`config`) and the live upstreams form one snapshot
//! (`snapshot`) that a reload (`reload`) swaps atomically.
//!
//! # Layout
//! Modules depend on the ones above them only; `server` wires them and nothing imports it.
//! - `config`: the TOML file, parsed then validated once into types that cannot be wrong.
//! - `balance`: the pure balancing core (smooth weighted round robin, least load), no I/O;
//!   the one owner of each backend's health, trial, slow-start share and in-flight count.
//! - `tls`, `proxy_protocol`, `resolve`: rustls for both sides, the PROXY header, host names.
//! - `metrics`, `logging`, `summary`: what the process tells the operator.
//! - `routing`: which route of an http listener a request takes (host index, conditions).
//! - `upstream`: live backends (address, counters, idle connections, their balancer member), the pick and
//!   its lease, the one place a backend failure is recorded.
//! - `snapshot`: the running configuration and the handle (`Live`) every part reads it by.
//! - `health`: probes and the per-backend checker tasks.
//! - `proxy`: tcp sessions, http connections and requests, backend connections, failover.
//! - `listener`: accept loops, connection limits, the PROXY header and TLS handshake per
//!   connection, and the set of running listeners a reload changes.
//! - `reload`: SIGHUP and re-resolution: load, validate, build, prepare, swap, commit.
//! - `admin`: health and readiness probes, `/metrics`, `/status`, the status page.
//! - `watch`: `watch_config`: a reload when the file changes.
//! - `server`: wiring, the control loop, the drain on shutdown.
//! - `process`: the runtime and the open-file limit the binary sets up before serving.
//! - `fuzzing` (hidden): the in-memory HTTP path that `fuzz/` and the property tests drive.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod admin;
pub mod balance;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod resolve;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod summary;
pub mod tls;
pub mod upstream;
pub mod watch;
