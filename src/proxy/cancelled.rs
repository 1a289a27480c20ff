//! Waiting on a `CancellationToken` from a future that is polled often.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pin_project_lite::pin_project! {
    /// `token.cancelled()` that is cheap to poll again. A waiting `Notified` takes the
    /// token's waiter-list lock on every poll, and a connection task is polled several times
    /// per request, each time polling the listener-wide tokens it selects on: this polls the
    /// inner future only when the task's waker changed, otherwise only checks the flag.
    pub struct Cancelled<'a> {
        token: &'a CancellationToken,
        #[pin]
        inner: WaitForCancellationFuture<'a>,
        waker: Option<Waker>,
    }
}

/// See `Cancelled`.
pub fn cancelled(token: &CancellationToken) -> Cancelled<'_> {
    Cancelled {
        token,
        inner: token.cancelled(),
        waker: None,
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            // Registered with this very waker: cancelling wakes it, and the flag above
            // answers then.
            return Poll::Pending;
        }
        let r = this.inner.poll(cx);
        if r.is_pending() {
            *this.waker = Some(cx.waker().clone());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancelling_wakes_a_waiter_polled_again_and_again() {
        let token = CancellationToken::new();
        let mut wait = Box::pin(cancelled(&token));
        for _ in 0..3 {
            assert!(futures_util::poll!(wait.as_mut()).is_pending());
        }
        let other = token.clone();
        tokio::spawn(async move { other.cancel() });
        tokio::time::timeout(std::time::Duration::from_secs(20), wait)
            .await
            .expect("cancel wakes the waiter");
    }
}
