//! The one failover rule, for tcp sessions and http requests alike: pick a healthy backend not
//! tried yet, make the attempt, record a failure (`Upstream::fail`), and go on to another
//! backend while `retries` allow and the attempt can be made again.

use std::future::Future;
use std::sync::Arc;

use super::Tried;
use super::backend::ConnectError;
use crate::upstream::{Backend, Failure, Lease, Upstream};

/// One try of some work on one backend: a tcp session's connect, an http request's exchange.
pub trait Attempt {
    type Output;
    /// Why the work stops without it being any backend's fault (a client's broken body).
    type Abort;

    fn run(
        &mut self,
        upstream: &Upstream,
        lease: &Lease,
    ) -> impl Future<Output = Outcome<Self::Output, Self::Abort>> + Send;
}

/// What became of one attempt.
pub enum Outcome<T, A> {
    /// The backend answered. What the answer says of its health is the caller's to record.
    Done(T),
    /// The backend failed; `again`: the work can still be sent to another backend.
    Failed(Failure, bool),
    /// The backend refused the work before doing any of it (an HTTP/2 stream refused, or
    /// above a `GOAWAY`'s last id): no failure, and it goes again, to any backend, this one
    /// included on another connection, at most `MAX_REFUSED` times.
    Refused,
    /// Ours: no file descriptors, ephemeral ports or memory. Nobody's failure, and no other
    /// backend would fare better.
    Local,
    /// Stop, no backend at fault.
    Abort(A),
}

impl<T, A> From<ConnectError> for Outcome<T, A> {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Backend(failure) => Outcome::Failed(failure, true),
            ConnectError::Local => Outcome::Local,
        }
    }
}

/// Why no backend did the work.
#[derive(Debug)]
pub enum End<A> {
    /// No healthy backend at all: http answers 503, tcp closes at once.
    NoHealthy,
    /// Every backend tried (up to `retries` more) failed; `timeout`: the last one by
    /// `response_timeout` (http answers 504, else 502).
    Failed {
        last: Arc<Backend>,
        timeout: bool,
    },
    Aborted(A, Arc<Backend>),
}

/// Refused attempts one piece of work may meet: a backend that restarts gracefully refuses
/// what it has not started once, a second and third refusal are rare, and more means
/// something is wrong that trying again will not fix.
const MAX_REFUSED: usize = 3;

/// Runs `attempt` on backends of `upstream` until one answers, failing over up to `retries`
/// times; each move to another backend counts as a failover. The answer comes with its lease.
pub async fn run<A: Attempt>(
    upstream: &Upstream,
    attempt: &mut A,
) -> Result<(A::Output, Lease), End<A::Abort>> {
    let mut tried = Tried::default();
    let mut failed: Option<(Arc<Backend>, bool)> = None;
    let mut refused = 0;
    let attempts = (upstream.conf.retries as usize).saturating_add(1);
    while tried.len() < attempts {
        let Some(lease) = upstream.pick(tried.as_slice()) else {
            break;
        };
        if !tried.is_empty() {
            crate::metrics::failover(&upstream.name);
        }
        tried.push(lease.index);
        match attempt.run(upstream, &lease).await {
            Outcome::Done(output) => return Ok((output, lease)),
            Outcome::Abort(why) => return Err(End::Aborted(why, Arc::clone(&lease.backend))),
            Outcome::Failed(failure, again) => {
                upstream.fail(&lease, failure);
                failed = Some((Arc::clone(&lease.backend), failure == Failure::Timeout));
                if !again {
                    break;
                }
            }
            Outcome::Refused => {
                // Not a try: the backend stays eligible (another of its connections may
                // take it), and `retries` is not spent.
                tried.pop();
                failed = Some((Arc::clone(&lease.backend), false));
                refused += 1;
                if refused > MAX_REFUSED {
                    break;
                }
            }
            Outcome::Local => {
                tracing::warn!(upstream = %upstream.name, "connect failed for want of local resources");
                failed = Some((Arc::clone(&lease.backend), false));
                break;
            }
        }
    }
    Err(match failed {
        Some((last, timeout)) => End::Failed { last, timeout },
        None => End::NoHealthy,
    })
}
