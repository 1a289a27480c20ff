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
//! - `balance`: the pure balancing core (smooth weighted round robin, least load), no I/O.
//! - `upstream`: live backends (health, in-flight, counters) and the running snapshot.
//! - `health`: threshold counting, probes and the per-backend checker tasks.
//! - `listener`: accept loops with a connection limit and accept backoff.
//! - `proxy`: dial with failover (`mod`), layer 4 (`tcp`), layer 7 (`http`).
//! - `server`: wiring, the control loop, the drain on shutdown.
//! - `reload`: SIGHUP: load, validate, build, swap, or keep the old and say why.
//! - `watch`: `watch_config`: the same reload when the file changes.
//! - `metrics`, `logging`, `summary`: what the process tells the operator.
//! - `fuzzing` (hidden): the in-memory HTTP path that `fuzz/` and the property tests drive.

pub mod balance;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod summary;
pub mod upstream;
pub mod watch;
