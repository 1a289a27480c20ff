//! Health: which backends get traffic.
//!
//! - `tracker`: the pure threshold counter; outcomes of checks and of live traffic both land
//!   there, and it says when a backend goes down or comes up.
//! - `probe`: one active check, tcp (connect) or http (`GET path`, 2xx or 3xx passes).
//! - `checker`: one task per (upstream, backend) of the running configuration: checks every
//!   `interval`, opens the trial of a down backend when `check = "none"`, and ramps a backend
//!   that comes back up through its slow start. `Checkers` starts and stops them to match
//!   the running configuration.

mod checker;
mod probe;
mod tracker;

pub use checker::{Checkers, Probe};
pub use probe::{Target, probe};
pub use tracker::Tracker;

/// Slow start begins at 10% of a backend's weight (`slow_start` in conf/fulcrum.toml), in permille.
pub const SLOW_START_FLOOR: u32 = 100;

#[cfg(test)]
mod tests;
