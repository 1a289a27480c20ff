//! Accept loops: one task per listener socket, a connection limit, backoff when the process
//! runs out of file descriptors, and a task per client connection that the drain waits for:
//! it reads the PROXY header and does the TLS handshake before the proxy takes over.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::config::Protocol;
use crate::proxy_protocol::{self, Addresses, Prefixed};
use crate::server::Shared;

mod accepted;
pub use accepted::Accepted;

/// Pending connections the kernel keeps for us beyond `max_connections` (nginx: 511).
const BACKLOG: i32 = 1024;

/// Binds `addr` for a listener: SO_REUSEADDR so a restart does not wait for TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Where the client speaks first, the kernel hands over a connection only once its first
/// bytes are in (TCP_DEFER_ACCEPT; nginx's `deferred`, HAProxy's `defer-accept`). The first
/// read then finds the request, and a connection that is served and closed in one go never
/// joins epoll: no registration, no readiness wake-up, no deregistration. A client that stays
/// silent is handed over after about a second (the kernel's first SYN-ACK retransmission,
/// answered) and meets the listener's timeouts as before. Set on every (re)start of the accept
/// loop, so a kept socket whose listener changed protocol on reload follows.
#[cfg(target_os = "linux")]
fn defer_accept(socket: &std::net::TcpListener, on: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs: libc::c_int = on.into();
    // SAFETY: an open socket, and an int option passed with its own size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_accept(_: &std::net::TcpListener, _: bool) -> io::Result<()> {
    Ok(())
}

/// A running accept loop.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    pub bind: SocketAddr,
    /// Stops accepting; open connections go on.
    pub stop: CancellationToken,
    /// Asks this listener's HTTP connections to finish their request and close.
    pub graceful: CancellationToken,
    /// Cuts this listener's connections off (the drain deadline passed).
    pub kill: CancellationToken,
    pub active: Arc<AtomicU64>,
    /// `max_connections`, and what it was set to. A listener that stays across a reload keeps
    /// it, so connections from before the reload still count against it.
    limit: Arc<Limit>,
    max: usize,
    /// Kept so a reload can hand the same socket to a listener that stays.
    pub socket: Arc<std::net::TcpListener>,
}

/// Starts accepting on `socket` for the listener `conf` of the running configuration;
/// `previous` is the same listener before a reload (same bind), whose connection count and
/// limit carry over.
pub fn spawn(
    conf: &crate::config::Listener,
    socket: std::net::TcpListener,
    previous: Option<&Running>,
    shared: Arc<Shared>,
) -> io::Result<Running> {
    let name = conf.name.clone();
    if let Err(e) = defer_accept(&socket, conf.client_speaks_first()) {
        // Only a saving: the listener works the same without it.
        tracing::warn!(listener = %name, error = %e, "cannot defer accepting");
    }
    let socket = Arc::new(socket);
    let listener = accepted::register(socket.try_clone()?)?;
    // Last, once nothing can fail: a failed spawn leaves the running listener as it was.
    let max = conf.max_connections.max(1);
    let limit = match previous {
        Some(p) => {
            p.limit.resize(p.max, max);
            Arc::clone(&p.limit)
        }
        None => Arc::new(Limit::new(max)),
    };
    let running = Running {
        name: name.clone(),
        bind: conf.bind,
        stop: CancellationToken::new(),
        graceful: shared.graceful.child_token(),
        kill: shared.kill.child_token(),
        active: previous.map(|p| Arc::clone(&p.active)).unwrap_or_default(),
        limit: Arc::clone(&limit),
        max,
        socket,
    };
    let stop = running.stop.clone();
    let graceful = running.graceful.clone();
    let kill = running.kill.clone();
    let active = Arc::clone(&running.active);
    tokio::spawn(async move {
        let name: Arc<str> = Arc::from(name);
        let conns = Conns {
            graceful,
            kill,
            active,
        };
        accept_loop(listener, name, limit, stop, conns, shared).await;
    });
    Ok(running)
}

/// `max_connections` as permits, one per open connection. A lower limit after a reload cannot
/// take back the permits that open connections hold: those are owed, and connections that
/// end pay them off before any permit becomes free again, so the new limit holds once enough
/// have ended.
#[derive(Debug)]
struct Limit {
    permits: Arc<Semaphore>,
    /// Permits still to be taken out of circulation after a lowering.
    owed: AtomicUsize,
}

impl Limit {
    fn new(max: usize) -> Limit {
        Limit {
            permits: Arc::new(Semaphore::new(max)),
            owed: AtomicUsize::new(0),
        }
    }

    /// Changes the limit from `from` to `to` connections.
    fn resize(&self, from: usize, to: usize) {
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
    async fn acquire(self: &Arc<Self>) -> Option<Slot> {
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
struct Slot {
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

/// What the connections of one accept loop share.
struct Conns {
    graceful: CancellationToken,
    kill: CancellationToken,
    active: Arc<AtomicU64>,
}

async fn accept_loop(
    listener: AsyncFd<std::net::TcpListener>,
    name: Arc<str>,
    limit: Arc<Limit>,
    stop: CancellationToken,
    conns: Conns,
    shared: Arc<Shared>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        // Over the limit, further clients wait in the kernel's accept queue.
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            s = limit.acquire() => match s {
                Some(s) => s,
                None => return,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            r = accepted::accept(&listener) => match r {
                Ok(ok) => ok,
                Err(e) => {
                    if is_resource_exhaustion(&e) {
                        // EMFILE and friends: spinning would burn a core and log a flood.
                        tracing::warn!(listener = %name, error = %e, "accept failed, backing off");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(5);
        crate::metrics::connection_opened(&name);
        conns.active.fetch_add(1, Ordering::Relaxed);
        let shared2 = Arc::clone(&shared);
        let name = Arc::clone(&name);
        let active = Arc::clone(&conns.active);
        let graceful = conns.graceful.clone();
        let kill = conns.kill.clone();
        shared.connections.spawn(async move {
            tokio::select! {
                () = handle(stream, peer, &name, &shared2, &graceful) => {}
                () = crate::proxy::cancelled::cancelled(&kill) => {}
            }
            active.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

/// Serves one client connection with the listener's current settings: the PROXY header
/// first when the listener expects one, then the TLS handshake on a TLS listener, with the
/// certificates of the snapshot current at accept time.
async fn handle(
    stream: Accepted,
    peer: SocketAddr,
    name: &Arc<str>,
    shared: &Arc<Shared>,
    graceful: &CancellationToken,
) {
    let (acceptor, header_read, expect_header, bind) = {
        let snapshot = shared.state.load();
        let Some((conf, _)) = snapshot.route(name) else {
            return;
        };
        let acceptor = snapshot.acceptors.get(name).cloned();
        (
            acceptor,
            conf.timeouts.header_read,
            conf.proxy_protocol,
            conf.bind,
        )
    };
    // One deadline for all that comes before the payload: a client that stalls the PROXY
    // header and then the handshake must not hold a connection slot twice as long.
    let deadline = Instant::now() + header_read;
    // The listener's own address is its bind, unless that is a wildcard: only then does
    // it take a getsockname(2) per connection to learn which address the client reached.
    let local = if bind.ip().is_unspecified() {
        stream.local_addr().unwrap_or(bind)
    } else {
        bind
    };
    let mut addrs = Addresses {
        client: peer,
        listener: local,
    };
    let stream = if expect_header {
        match timeout_at(deadline, proxy_protocol::read_header(stream)).await {
            Ok(Ok((stream, source))) => {
                // v1 UNKNOWN and v2 LOCAL announce no one: the peer stays the client.
                addrs.client = source.unwrap_or(peer);
                stream
            }
            Ok(Err(e)) => {
                tracing::debug!(listener = %name, client = %peer, error = %e, "PROXY header refused");
                return;
            }
            Err(_) => {
                tracing::debug!(listener = %name, client = %peer, "PROXY header timed out");
                return;
            }
        }
    } else {
        Prefixed::new(Bytes::new(), stream)
    };
    match acceptor {
        None => serve(stream, "http", addrs, name, shared, graceful).await,
        // Boxed: a TLS session's state is kilobytes, which every plain connection's task
        // would otherwise carry (and copy when it is spawned).
        Some(acceptor) => Box::pin(async move {
            // A client that stalls the handshake is cut off like one that stalls its request
            // head: it must not hold a connection slot for longer.
            match timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let tls = crate::tls::CloseAsEof(tls);
                    serve(tls, "https", addrs, name, shared, graceful).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = %name, client = %addrs.client, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(listener = %name, client = %addrs.client, "TLS handshake timed out");
                }
            }
        })
        .await,
    }
}

/// Proxies a client connection, plain or the plaintext side of TLS (`proto` "https").
async fn serve<I>(
    stream: I,
    proto: &'static str,
    addrs: Addresses,
    name: &Arc<str>,
    shared: &Arc<Shared>,
    graceful: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let snapshot = shared.state.load_full();
    let Some((conf, upstream)) = snapshot.route(name) else {
        return;
    };
    match conf.protocol {
        Protocol::Tcp => {
            let started = tokio::time::Instant::now();
            let s = crate::proxy::tcp::serve(stream, upstream, conf.timeouts.idle, &addrs).await;
            crate::metrics::bytes(name, s.rx, s.tx);
            if snapshot.config.log.access {
                tracing::info!(
                    target: "access",
                    listener = %name,
                    client = %addrs.client,
                    backend = s.backend.as_deref().unwrap_or("none"),
                    rx = s.rx,
                    tx = s.tx,
                    duration_ms = started.elapsed().as_millis() as u64,
                    end = ?s.end,
                    "tcp session"
                );
            }
        }
        Protocol::Http => {
            let timeouts = conf.timeouts.clone();
            drop(snapshot);
            crate::proxy::http::serve(
                stream,
                addrs,
                Arc::clone(name),
                Arc::clone(shared),
                graceful.clone(),
                &timeouts,
                proto,
            )
            .await;
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn deferred(socket: &std::net::TcpListener) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut secs: libc::c_int = -1;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: an open socket, and an int option read with its own size.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&raw mut secs).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt: {}", io::Error::last_os_error());
        secs
    }

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

    #[test]
    fn accepting_is_deferred_until_data_and_undone_for_a_server_first_protocol() {
        let socket = bind(([127, 0, 0, 1], 0).into()).expect("bind");
        assert_eq!(deferred(&socket), 0, "off for a fresh socket");
        defer_accept(&socket, true).expect("on");
        assert!(deferred(&socket) > 0, "on for a client-first listener");
        defer_accept(&socket, false).expect("off");
        assert_eq!(
            deferred(&socket),
            0,
            "off again after a reload to plain tcp"
        );
    }
}
