//! WebSocket and other upgrades: after `101 Switching Protocols` the client and backend
//! connections become one byte tunnel, run under the client connection's task.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::serve::Conn;
use crate::proxy::activity::{Activity, Metered};
use crate::proxy::cancelled::cancelled;
use crate::upstream::Lease;

/// See `Conn::tunnels`.
pub(super) struct Tunnels {
    pub tracker: TaskTracker,
    /// Cancelled when the connection task ends or is cut off: tunnels stop with it.
    stop: CancellationToken,
}

/// Stops the connection's tunnels when its task ends, also when the drain deadline cuts it off.
pub(super) struct StopTunnels(pub Arc<Conn>);

impl Drop for StopTunnels {
    fn drop(&mut self) {
        if let Some(t) = self.0.tunnels.get() {
            t.stop.cancel();
        }
    }
}

/// After `101 Switching Protocols` both connections become one byte tunnel.
/// The tunnel runs under its client connection: it holds the lease (so least load sees it),
/// ends when silent for `idle` or when the connection is cut off, and counts its bytes.
pub(super) fn tunnel(
    conn: &Conn,
    client: hyper::upgrade::OnUpgrade,
    backend: hyper::upgrade::OnUpgrade,
    lease: Lease,
) {
    let tunnels = conn.tunnels.get_or_init(|| Tunnels {
        tracker: TaskTracker::new(),
        stop: CancellationToken::new(),
    });
    let stop = tunnels.stop.clone();
    let idle = conn.client.timeouts.idle;
    let listener = Arc::clone(&conn.client.listener);
    tunnels.tracker.spawn(async move {
        let (Ok(c), Ok(b)) = (client.await, backend.await) else {
            return;
        };
        let activity = Activity::new();
        let mut c = Metered {
            io: TokioIo::new(c),
            activity: Arc::clone(&activity),
        };
        let mut b = TokioIo::new(b);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut c, &mut b) => {}
            () = activity.idle(idle) => {}
            () = cancelled(&stop) => {}
        }
        drop(lease);
        crate::metrics::bytes(
            &listener,
            activity.read.load(Ordering::Relaxed),
            activity.written.load(Ordering::Relaxed),
        );
    });
}
