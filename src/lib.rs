//! fulcrum: a layer-4 / layer-7 load-balancing proxy.
//!
//! # Layout
//! - `config`: the TOML file, parsed then validated once into types that cannot be wrong.
//! - `balance`: the pure balancing core (smooth weighted round robin, least load).

pub mod balance;
pub mod config;
