//! Layer 4: one client connection becomes one backend session; bytes are copied both ways
//! until both sides close, a half-close is passed on, and `idle` ends a silent session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::activity::{Activity, Metered};
use super::backend::{BackendIo, connect};
use super::failover::{self, Attempt, End as NoBackend, Outcome};
use crate::proxy_protocol::Addresses;
use crate::upstream::{Failure, Lease, Upstream};

mod blamed;
use blamed::Blamed;

/// Buffer per direction: large enough that bulk transfers make few syscalls, small enough
/// that 10,000 open sessions stay within a few hundred MiB.
const BUF_SIZE: usize = 32 * 1024;

/// How a session ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Closed,
    Idle,
    Error,
    NoBackend,
}

impl End {
    /// The access log's spelling, snake case like the config's.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::Error => "error",
            End::NoBackend => "no_backend",
        }
    }
}

/// What one session did.
#[derive(Debug)]
pub struct Session {
    pub backend: Option<Arc<str>>,
    pub rx: u64,
    pub tx: u64,
    pub end: End,
}

/// Proxies one client connection (plain TCP, or the plaintext side of TLS) to a backend of
/// `upstream`; `addrs` is what a PROXY header to the backend announces.
pub async fn serve<C>(client: C, upstream: &Upstream, idle: Duration, addrs: &Addresses) -> Session
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut backend, lease) = match failover::run(upstream, &mut Dial(addrs)).await {
        Ok(ok) => ok,
        Err(e) => {
            if let NoBackend::NoHealthy = e {
                tracing::debug!(upstream = %upstream.name, "no healthy backend, closing client");
            }
            return Session {
                backend: None,
                rx: 0,
                tx: 0,
                end: End::NoBackend,
            };
        }
    };
    let activity = Activity::new();
    let mut c = Metered {
        io: client,
        activity: Arc::clone(&activity),
    };
    let mut b = Blamed::new(&mut backend);
    let end = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut b, BUF_SIZE, BUF_SIZE) => match r {
            Ok(_) => End::Closed,
            Err(_) => End::Error,
        },
        () = activity.idle(idle) => End::Idle,
    };
    let answered = activity.written.load(Ordering::Relaxed) > 0;
    // Only the backend's own errors count against it, and only before it sent anything: a
    // client that resets, or a session that broke later, says nothing of its health.
    if b.failed && !answered {
        upstream.fail(&lease, Failure::Reset);
    } else if end == End::Closed || answered {
        upstream.record_success(lease.index);
    }
    Session {
        backend: Some(Arc::clone(&lease.backend.addr)),
        rx: activity.read.load(Ordering::Relaxed),
        tx: activity.written.load(Ordering::Relaxed),
        end,
    }
}

/// A session's attempt on a backend: the connection.
struct Dial<'a>(&'a Addresses);

impl Attempt for Dial<'_> {
    type Output = BackendIo;
    type Abort = std::convert::Infallible;

    async fn run(&mut self, upstream: &Upstream, lease: &Lease) -> Outcome<BackendIo, Self::Abort> {
        match connect(&lease.backend, upstream, self.0).await {
            Ok(io) => Outcome::Done(io),
            Err(e) => e.into(),
        }
    }
}
