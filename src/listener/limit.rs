//! `max_connections` of one listener, kept across reloads that keep the listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `max_connections` as permits, one per open connection. A lower limit after a reload cannot
/// take back the permits that open connections hold: those are owed, and connections that
/// end pay them off before any permit becomes free again, so the new limit holds once enough
/// have ended.
#[derive(Debug)]
pub struct Limit {
    permits: Arc<Semaphore>,
    /// Permits still to be taken out of circulation after a lowering.
    owed: AtomicUsize,
}

impl Limit {
    pub fn new(max: usize) -> Limit {
        Limit {
            permits: Arc::new(Semaphore::new(max)),
            owed: AtomicUsize::new(0),
        }
    }

    /// Changes the limit from `from` to `to` connections.
    pub fn resize(&self, from: usize, to: usize) {
        if to > from {
            let more = to - from;
            // What is still owed from an earlier lowering is simply not owed any more.
            let paid = self
                .owed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                    Some(o - o.min(more))
                })
                .map_or(0, |o| o.min(more));
            self.permits.add_permits(more - paid);
        } else if to < from {
            let fewer = from - to;
            let gone = self.permits.forget_permits(fewer);
            self.owed.fetch_add(fewer - gone, Ordering::Relaxed);
        }
    }

    /// A place for one more connection, once there is one; `None` once the limit is gone.
    pub async fn acquire(self: &Arc<Self>) -> Option<Slot> {
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok()?;
        Some(Slot {
            limit: Arc::clone(self),
            permit: Some(permit),
        })
    }
}

/// One connection's place under the limit, taken before accepting. However it is given
/// back (the connection ended, the accept failed, the accept loop stopped on a reload), it
/// first pays off what a lowering still owes.
pub struct Slot {
    limit: Arc<Limit>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let owed = self
            .limit
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1));
        if owed.is_ok() {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` connections open (or about to be: a slot taken before accepting).
    fn hold(limit: &Arc<Limit>, n: usize) -> Vec<Slot> {
        (0..n)
            .map(|_| Slot {
                limit: Arc::clone(limit),
                permit: Some(
                    Arc::clone(&limit.permits)
                        .try_acquire_owned()
                        .expect("permit"),
                ),
            })
            .collect()
    }

    #[test]
    fn a_lower_limit_holds_once_the_connections_over_it_have_ended() {
        let limit = Arc::new(Limit::new(4));
        let held = hold(&limit, 4);
        limit.resize(4, 2);
        drop(held);
        assert_eq!(limit.permits.available_permits(), 2, "lowered from 4 to 2");
        limit.resize(2, 3);
        assert_eq!(limit.permits.available_permits(), 3, "raised again");
    }

    #[test]
    fn raising_a_limit_first_cancels_what_a_lowering_still_owes() {
        let limit = Arc::new(Limit::new(4));
        let held = hold(&limit, 4);
        limit.resize(4, 1);
        limit.resize(1, 3);
        drop(held);
        assert_eq!(limit.permits.available_permits(), 3, "4 -> 1 -> 3 is 3");
    }

    #[tokio::test]
    async fn a_slot_taken_by_an_accept_loop_that_stops_pays_what_is_owed() {
        let limit = Arc::new(Limit::new(4));
        let open = hold(&limit, 3);
        // The accept loop waits in accept(2) with the fourth slot when a reload stops it.
        let parked = limit.acquire().await.expect("slot");
        limit.resize(4, 2);
        drop(parked);
        assert_eq!(limit.permits.available_permits(), 0, "3 open, limit 2");
        drop(open);
        assert_eq!(
            limit.permits.available_permits(),
            2,
            "the new limit, exactly"
        );
    }
}
