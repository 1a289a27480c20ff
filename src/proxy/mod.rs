//! The request path after the listener: a tcp session (`tcp`) or an http connection (`http`)
//! takes a backend of its upstream through the one failover loop (`failover`), which opens
//! backend connections (`backend`: connect, PROXY header, TLS).

pub mod activity;
pub mod backend;
pub mod cancelled;
pub mod failover;
pub mod gather;
pub mod http;
pub mod tcp;

/// The backends a request or session has tried, in order. The usual few stay on the stack:
/// a heap allocation per request for this list would be a measurable share of its cost.
pub type Tried = smallvec::SmallVec<[usize; 4]>;
