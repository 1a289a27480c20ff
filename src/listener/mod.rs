//! Accept loops: one task per listener socket, a connection limit, backoff when the process
//! runs out of file descriptors, and a task per client connection that the drain waits for
//! (`connection`: the PROXY header and the TLS handshake before the proxy takes over).
//! `set` keeps the running listeners and changes them as a reload says.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::snapshot::Live;

mod accepted;
mod connection;
mod limit;
mod set;

pub use accepted::Accepted;
use limit::Limit;
pub use set::{BindError, Listeners, Prepared};

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

/// What every client connection of every listener answers to: made once by the server, so
/// that the drain reaches connections of listeners a reload has removed too.
#[derive(Debug, Default)]
pub struct Drain {
    /// Cancelled when listeners stop: HTTP connections finish their request and close.
    pub graceful: CancellationToken,
    /// Cancelled at the drain deadline: every connection still open is cut off.
    pub kill: CancellationToken,
    /// Every client connection, current or of a listener a reload removed.
    pub connections: TaskTracker,
}

/// A running accept loop.
#[derive(Debug)]
pub struct Running {
    pub name: String,
    pub bind: SocketAddr,
    /// Stops accepting; open connections go on.
    stop: CancellationToken,
    /// Asks this listener's HTTP connections to finish their request and close.
    graceful: CancellationToken,
    /// Cuts this listener's connections off (the drain deadline passed).
    kill: CancellationToken,
    /// `max_connections`, and what it was set to. A listener that stays across a reload keeps
    /// it, so connections from before the reload still count against it.
    limit: Arc<Limit>,
    max: usize,
    /// Whether accepting is deferred until the client's first bytes.
    deferred: bool,
    /// Kept so a reload can hand the same socket to a listener that moves to another name.
    socket: Arc<std::net::TcpListener>,
}

/// A listener socket registered with the event loop, ready for its accept loop: everything
/// that can fail about starting a listener, done before a reload publishes anything.
#[derive(Debug)]
pub struct Ready {
    socket: Arc<std::net::TcpListener>,
    fd: AsyncFd<std::net::TcpListener>,
}

impl Ready {
    /// Registers `socket` (bound by `bind`, or shared with a running listener).
    pub fn new(socket: std::net::TcpListener) -> io::Result<Ready> {
        let socket = Arc::new(socket);
        let fd = accepted::register(socket.try_clone()?)?;
        Ok(Ready { socket, fd })
    }
}

impl Running {
    /// Starts accepting for the listener `conf` of the running configuration (`live` holds
    /// it).
    fn start(
        conf: &crate::config::Listener,
        ready: Ready,
        live: &Arc<Live>,
        drain: &Drain,
    ) -> Running {
        let max = conf.max_connections.max(1);
        let mut running = Running {
            name: conf.name.clone(),
            bind: conf.bind,
            stop: CancellationToken::new(),
            graceful: drain.graceful.child_token(),
            kill: drain.kill.child_token(),
            limit: Arc::new(Limit::new(max)),
            max,
            deferred: false,
            socket: ready.socket,
        };
        // Set either way: a socket handed over from another listener may have it on.
        running.deferred = !conf.client_speaks_first();
        running.set_deferred(conf);
        let active = live
            .load()
            .listener(&conf.name)
            .map(|(_, state)| Arc::clone(&state.active))
            .unwrap_or_default();
        let accept = Accept {
            name: Arc::from(conf.name.as_str()),
            bind: conf.bind,
            limit: Arc::clone(&running.limit),
            stop: running.stop.clone(),
            graceful: running.graceful.clone(),
            kill: running.kill.clone(),
            active,
            live: Arc::clone(live),
            connections: drain.connections.clone(),
        };
        tokio::spawn(accept.run(ready.fd));
        running
    }

    /// Applies new settings of a listener that keeps its name and bind: its accept loop and
    /// open connections go on, and each new connection reads the settings from the snapshot.
    fn update(&mut self, conf: &crate::config::Listener) {
        let max = conf.max_connections.max(1);
        self.limit.resize(self.max, max);
        self.max = max;
        self.set_deferred(conf);
    }

    fn set_deferred(&mut self, conf: &crate::config::Listener) {
        let on = conf.client_speaks_first();
        if on == self.deferred {
            return;
        }
        match defer_accept(&self.socket, on) {
            Ok(()) => self.deferred = on,
            // Only a saving: the listener works the same without it.
            Err(e) => tracing::warn!(listener = %self.name, error = %e, "cannot defer accepting"),
        }
    }

    /// A listener a reload removed (or moved): it stops accepting at once, its HTTP
    /// connections are asked to close after their request, and whatever is still open after
    /// `shutdown_timeout` is cut off.
    fn retire(self, shutdown_timeout: Duration) {
        self.stop.cancel();
        self.graceful.cancel();
        tokio::spawn(async move {
            tokio::time::sleep(shutdown_timeout).await;
            self.kill.cancel();
        });
    }

    /// Stops accepting: the drain at shutdown.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// One listener's accept loop and what its connections share.
struct Accept {
    name: Arc<str>,
    bind: SocketAddr,
    limit: Arc<Limit>,
    stop: CancellationToken,
    graceful: CancellationToken,
    kill: CancellationToken,
    active: Arc<AtomicU64>,
    live: Arc<Live>,
    connections: TaskTracker,
}

impl Accept {
    async fn run(self, listener: AsyncFd<std::net::TcpListener>) {
        let mut backoff = Duration::from_millis(5);
        loop {
            // Over the limit, further clients wait in the kernel's accept queue.
            let slot = tokio::select! {
                () = self.stop.cancelled() => return,
                s = self.limit.acquire() => match s {
                    Some(s) => s,
                    None => return,
                },
            };
            let (stream, peer) = tokio::select! {
                () = self.stop.cancelled() => return,
                r = accepted::accept(&listener) => match r {
                    Ok(ok) => ok,
                    Err(e) => {
                        if is_resource_exhaustion(&e) {
                            // EMFILE and friends: spinning would burn a core and log a flood.
                            tracing::warn!(listener = %self.name, error = %e, "accept failed, backing off");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                        continue;
                    }
                },
            };
            backoff = Duration::from_millis(5);
            crate::metrics::connection_opened(&self.name);
            self.active.fetch_add(1, Ordering::Relaxed);
            let name = Arc::clone(&self.name);
            let bind = self.bind;
            let live = Arc::clone(&self.live);
            let active = Arc::clone(&self.active);
            let graceful = self.graceful.clone();
            let kill = self.kill.clone();
            self.connections.spawn(async move {
                tokio::select! {
                    () = connection::handle(stream, peer, &name, bind, &live, &graceful) => {}
                    () = crate::proxy::cancelled::cancelled(&kill) => {}
                }
                active.fetch_sub(1, Ordering::Relaxed);
                drop(slot);
            });
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
