//! Layer 4: one client connection becomes one backend session; bytes are copied both ways
//! until both sides close, a half-close is passed on, and `idle` ends a silent session.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::DialError;
use super::io::{Activity, Metered};
use crate::proxy_protocol::Addresses;
use crate::upstream::Upstream;

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
    let (mut backend, lease) = match super::dial(upstream, addrs).await {
        Ok(ok) => ok,
        Err(e) => {
            if let DialError::NoHealthy = e {
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
    let end = tokio::select! {
        r = tokio::io::copy_bidirectional_with_sizes(&mut c, &mut backend, BUF_SIZE, BUF_SIZE) => match r {
            Ok(_) => End::Closed,
            Err(e) => {
                if super::is_disconnect(&e) && activity.written.load(Ordering::Relaxed) == 0 {
                    upstream.record_failure(lease.index, "reset");
                }
                End::Error
            }
        },
        () = activity.idle(idle) => End::Idle,
    };
    if end == End::Closed {
        upstream.record_success(lease.index);
    }
    Session {
        backend: Some(Arc::clone(&lease.backend.addr)),
        rx: activity.read.load(Ordering::Relaxed),
        tx: activity.written.load(Ordering::Relaxed),
        end,
    }
}
