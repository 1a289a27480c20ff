//! fulcrum: a layer-4 / layer-7 load-balancing proxy.
//!
//! A listener task accepts client connections (`listener`); per connection (tcp) or per
//! request (http) the balancing core (`balance`) picks a healthy backend of the listener's
//! upstream (`upstream`); the proxy (`proxy`) connects, failing over to another backend when
//! a connect fails, and copies bytes or HTTP messages both ways. The health checker
//! (`health`) marks backends up and down. The validated configuration (`config`) and the
//! live upstreams form one snapshot that a reload (`reload`) swaps atomically.
//!
//! # Layout
//! - `config`: the TOML file, parsed then validated once into types that cannot be wrong.
//! - `balance`: the pure balancing core (smooth weighted round robin, least load), no I/O;
//!   the one owner of each backend's health, trial, slow-start share and in-flight count.
//! - `upstream`: live backends (address, counters, their member of the balancer) and the
//!   running snapshot.
//! - `health`: threshold counting, probes and the per-backend checker tasks.
//! - `listener`: accept loops with a connection limit and accept backoff, TLS handshakes.
//! - `tls`: rustls for listeners (SNI certificate choice) and for TLS backends.
//! - `proxy`: dial with failover (`mod`), layer 4 (`tcp`), layer 7 (`http`), what a message
//!   must look like to pass (`message`).
//! - `proxy_protocol`: the PROXY protocol header, read from clients and sent to backends.
//! - `server`: wiring, the control loop, the drain on shutdown.
//! - `resolve`: backends given by host name, one per address, re-resolved every
//!   `resolve_interval`.
//! - `reload`: SIGHUP: load, validate, build, swap, or keep the old and say why.
//! - `watch`: `watch_config`: the same reload when the file changes.
//! - `admin`: the admin listener: health and readiness probes, `/metrics`, `/status`, `/`.
//! - `metrics`, `logging`, `summary`: what the process tells the operator.
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
pub mod proxy;
pub mod proxy_protocol;
pub mod reload;
pub mod resolve;
pub mod server;
pub mod summary;
pub mod tls;
pub mod upstream;
pub mod watch;
