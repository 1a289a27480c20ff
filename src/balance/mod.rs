//! The balancing core: which backend gets the next request or session. Pure algorithms over
//! backend indices and weights, no I/O, no sockets. (STUB: to be implemented.)

use std::sync::Arc;

/// The balancing policy of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    LeastLoad,
}

/// Scale of effective weights: slow start sets a backend to 100..=1000 permille of its weight.
pub const FULL: u32 = 1000;

/// A thread-safe scheduler over backends `0..len`.
#[derive(Debug)]
pub struct Balancer {}

impl Balancer {
    /// All backends start healthy, in flight 0, at full weight. `weights` are 1..=1000.
    pub fn new(policy: Policy, weights: &[u32]) -> Balancer {
        let _ = (policy, weights);
        todo!()
    }
    /// Picks a healthy backend and counts one in flight on it; `None` when none is healthy.
    pub fn pick(&self) -> Option<usize> {
        todo!()
    }
    /// As `pick`, skipping the indices in `tried` (failover: no backend twice per request).
    pub fn pick_excluding(&self, tried: &[usize]) -> Option<usize> {
        let _ = tried;
        todo!()
    }
    /// Ends one in-flight unit on `index` (a pick's request or session ended).
    pub fn release(&self, index: usize) {
        let _ = index;
        todo!()
    }
    /// Picks and returns a guard that releases on drop.
    pub fn pick_guard(self: &Arc<Self>) -> Option<Pick> {
        todo!()
    }
    pub fn set_healthy(&self, index: usize, healthy: bool) {
        let _ = (index, healthy);
        todo!()
    }
    /// Slow start: the effective weight becomes `weight * permille / 1000`, permille 1..=1000.
    pub fn set_permille(&self, index: usize, permille: u32) {
        let _ = (index, permille);
        todo!()
    }
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One in-flight unit on a backend, released when dropped.
#[derive(Debug)]
pub struct Pick {
    balancer: Arc<Balancer>,
    index: usize,
}

impl Pick {
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.balancer.release(self.index);
    }
}
