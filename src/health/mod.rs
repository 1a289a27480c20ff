//! Health: which backends get traffic.
//!
//! The threshold counting itself is part of a backend's state (`upstream::Tracker`): outcomes
//! of checks and of live traffic both land there.
//! - `probe`: one active check, tcp (connect), http (`GET path`, 2xx or 3xx passes) or grpc
//!   (`grpc.health.v1.Health/Check`, SERVING passes); `over_h2` speaks HTTP/2 for upstreams
//!   whose protocol is HTTP/2.
//! - `checker`: one task per (upstream, backend) of the running configuration: checks every
//!   `interval`, opens the trial of a down backend when `check = "none"`, and ramps a backend
//!   that comes back up through its slow start. `Checkers` starts and stops them to match
//!   the running configuration.

mod checker;
mod over_h2;
mod probe;

pub use checker::{Checkers, Probe};
pub use probe::{Target, probe};

#[cfg(test)]
mod tests;
