//! Accepting client connections, and the accepted socket, which joins the runtime's event
//! loop only once it has to wait.
//!
//! A short-lived client's request is usually in the socket by the time fulcrum accepts it,
//! and the response fits the socket's send buffer: such a connection is served by reads and
//! writes that never wait. Registering it with epoll and removing it again at close would be
//! two of the dozen syscalls its whole life takes, so it joins only when a read or write would
//! block (HAProxy does the same). A keep-alive connection joins at its first wait, for good.
//!
//! Two more syscalls such a connection can go without:
//! - `TCP_NODELAY` is set before the second write, not at accept. Nagle's algorithm holds a
//!   small segment back only while sent data is unacknowledged, so it never delays the first
//!   write; a connection that writes once (one response, then close) needs no setsockopt(2).
//!   nginx too sets it only once a connection is kept alive.
//! - A shutdown of the write side while the socket has not joined is left to close(2),
//!   which sends the same FIN when the socket is dropped right after, as a finished
//!   `Connection: close` exchange is. Should the socket be read or written again instead
//!   (a tunnel still copying the other way), the shutdown is made first.

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::net::SocketFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Registers a listening socket with the event loop, for `accept`.
pub fn register(listener: std::net::TcpListener) -> io::Result<AsyncFd<std::net::TcpListener>> {
    // SAFETY: the `TcpListener` owns its descriptor, so it stays open and the same until the
    // `AsyncFd` drops it, after removing it from the event loop.
    Ok(unsafe { AsyncFd::register(listener) }?)
}

/// Takes the next client from `listener`, waiting until there is one.
pub async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> io::Result<(Accepted, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        // One accept4(2) gives the socket non-blocking, close-on-exec and the peer address.
        let accepted = ready.try_io(|l| {
            let (fd, peer) = rustix::net::acceptfrom_with(
                l.get_ref(),
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            )?;
            let peer = peer
                .and_then(|p| SocketAddr::try_from(p).ok())
                .ok_or_else(|| io::Error::other("accepted a socket that is not TCP/IP"))?;
            Ok((fd, peer))
        });
        match accepted {
            Ok(Ok((fd, peer))) => {
                let socket = std::net::TcpStream::from(fd);
                let accepted = Accepted {
                    state: State::Raw(socket),
                    nagle: Nagle::Unwritten,
                    shutdown_pending: false,
                };
                return Ok((accepted, peer));
            }
            Ok(Err(e)) => return Err(e),
            // Spurious readiness: wait again.
            Err(_would_block) => {}
        }
    }
}

/// A client socket; see the module comment.
#[derive(Debug)]
pub struct Accepted {
    state: State,
    nagle: Nagle,
    /// The write side was shut while raw: close(2) will send the FIN (module comment).
    shutdown_pending: bool,
}

/// Where the socket stands with `TCP_NODELAY` (module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nagle {
    Unwritten,
    WrittenOnce,
    Off,
}

#[derive(Debug)]
enum State {
    /// Not known to the event loop; non-blocking, so reads and writes never wait.
    Raw(std::net::TcpStream),
    Joined(TcpStream),
    /// Joining failed (the error was returned then); the socket is closed.
    Broken,
}

impl Accepted {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.state {
            State::Raw(s) => s.local_addr(),
            State::Joined(s) => s.local_addr(),
            State::Broken => Err(broken()),
        }
    }

    /// The raw socket while it has not joined, to try an operation on without waiting.
    fn raw(&self) -> Option<&std::net::TcpStream> {
        match &self.state {
            State::Raw(s) => Some(s),
            _ => None,
        }
    }

    /// Registers the socket with the event loop, for an operation that must wait.
    fn join(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        if let State::Raw(_) = self.state
            && let State::Raw(s) = std::mem::replace(&mut self.state, State::Broken)
        {
            self.state = State::Joined(TcpStream::from_std(s)?);
        }
        match &mut self.state {
            State::Joined(s) => Ok(Pin::new(s)),
            _ => Err(broken()),
        }
    }

    /// Makes a shutdown left to close(2) now: the socket is in use again.
    fn shutdown_now(&mut self) {
        if std::mem::take(&mut self.shutdown_pending)
            && let Some(s) = self.raw()
        {
            let _ = s.shutdown(Shutdown::Write);
        }
    }

    /// Called before each write: turns Nagle's algorithm off before the second one.
    fn before_write(&mut self) {
        self.shutdown_now();
        if self.nagle == Nagle::WrittenOnce {
            self.nagle = Nagle::Off;
            // Without it small writes can wait for the client's delayed ACK; the write
            // itself still works, so a failure here is no reason to fail it.
            let _ = match &self.state {
                State::Raw(s) => s.set_nodelay(true),
                State::Joined(s) => s.set_nodelay(true),
                State::Broken => Ok(()),
            };
        }
    }

    /// One write: on the raw socket unless it would block, else through the event loop.
    fn write_with(
        &mut self,
        raw: impl FnOnce(&std::net::TcpStream) -> io::Result<usize>,
        joined: impl FnOnce(Pin<&mut TcpStream>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        self.before_write();
        let r = match self.raw().map(raw).and_then(unless_blocked) {
            Some(r) => Poll::Ready(r),
            None => match self.join() {
                Ok(s) => joined(s),
                Err(e) => Poll::Ready(Err(e)),
            },
        };
        if self.nagle == Nagle::Unwritten && matches!(r, Poll::Ready(Ok(_))) {
            self.nagle = Nagle::WrittenOnce;
        }
        r
    }
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "socket could not join the event loop",
    )
}

/// `Some(r)` unless `r` says the operation would have to wait.
fn unless_blocked<T>(r: io::Result<T>) -> Option<io::Result<T>> {
    match r {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            None
        }
        r => Some(r),
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shutdown_now();
        if let Some(s) = this.raw() {
            // SAFETY: `recv` only writes to the buffer, never de-initializes it.
            let dst = unsafe { buf.unfilled_mut() };
            if let Some(r) = unless_blocked(socket2::SockRef::from(s).recv(dst)) {
                return Poll::Ready(r.map(|n| {
                    // SAFETY: `recv` initialized the first `n` bytes of `dst`.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                }));
            }
        }
        match this.join() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_with(|mut s| s.write(buf), |s| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_with(
            |mut s| s.write_vectored(bufs),
            |s| s.poll_write_vectored(cx, bufs),
        )
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Joined(s) => Pin::new(s).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Raw(_) => {
                this.shutdown_pending = true;
                Poll::Ready(Ok(()))
            }
            State::Joined(s) => Pin::new(s).poll_shutdown(cx),
            State::Broken => Poll::Ready(Err(broken())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const DEADLINE: Duration = Duration::from_secs(20);

    /// A listener on 127.0.0.1, a client connected to it, and the accepted socket.
    async fn pair() -> (Accepted, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let listener = register(l).expect("register");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = accept(&listener).await.expect("accept");
        (accepted, client)
    }

    fn joined(a: &Accepted) -> bool {
        matches!(a.state, State::Joined(_))
    }

    /// Waits until the client's bytes are in the accepted socket.
    async fn wait_readable(a: &Accepted) {
        let raw = a.raw().expect("still raw");
        let mut probe = [0u8; 1];
        tokio::time::timeout(DEADLINE, async {
            while !matches!(raw.peek(&mut probe), Ok(1..)) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the client's bytes arrive");
    }

    #[tokio::test]
    async fn a_read_that_finds_data_does_not_join_the_event_loop() {
        let (mut a, mut client) = pair().await;
        client.write_all(b"GET").await.expect("write");
        wait_readable(&a).await;
        let mut buf = [0u8; 3];
        a.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"GET");
        assert!(!joined(&a), "a read that need not wait stays off epoll");
    }

    #[tokio::test]
    async fn a_read_that_must_wait_joins_and_completes() {
        let (mut a, mut client) = pair().await;
        let read = tokio::spawn(async move {
            let mut buf = [0u8; 2];
            a.read_exact(&mut buf).await.expect("read");
            (a, buf)
        });
        tokio::task::yield_now().await;
        client.write_all(b"hi").await.expect("write");
        let (a, buf) = tokio::time::timeout(DEADLINE, read)
            .await
            .expect("the read completes once bytes arrive")
            .expect("task");
        assert_eq!(&buf, b"hi");
        assert!(joined(&a), "a read that had to wait joined the event loop");
    }

    #[tokio::test]
    async fn nagle_goes_off_before_the_second_write() {
        let (mut a, _client) = pair().await;
        let nodelay = |a: &Accepted| a.raw().expect("raw").nodelay().expect("nodelay");
        a.write_all(b"one").await.expect("first write");
        assert!(!nodelay(&a), "the first write needs no setsockopt");
        a.write_all(b"two").await.expect("second write");
        assert!(nodelay(&a), "TCP_NODELAY is on from the second write");
    }

    #[tokio::test]
    async fn a_shutdown_while_raw_is_sent_by_close() {
        let (mut a, mut client) = pair().await;
        a.write_all(b"bye").await.expect("write");
        a.shutdown().await.expect("shutdown");
        assert!(a.shutdown_pending, "the FIN is left to close(2)");
        drop(a);
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, client.read_to_end(&mut got))
            .await
            .expect("the client sees the end")
            .expect("read");
        assert_eq!(got, b"bye");
    }

    #[tokio::test]
    async fn a_socket_used_again_after_its_shutdown_sends_the_fin_at_once() {
        let (mut a, mut client) = pair().await;
        a.shutdown().await.expect("shutdown");
        client.write_all(b"x").await.expect("client writes");
        wait_readable(&a).await;
        let mut buf = [0u8; 1];
        a.read_exact(&mut buf).await.expect("read");
        // `a` is still open: the client's end-of-stream comes from the real shutdown.
        let mut got = Vec::new();
        tokio::time::timeout(DEADLINE, client.read_to_end(&mut got))
            .await
            .expect("the client sees the end while the socket is open")
            .expect("read");
        assert!(got.is_empty());
        drop(a);
    }
}
