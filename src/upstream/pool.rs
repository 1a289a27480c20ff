//! Keep-alive HTTP/1.1 connections to one backend: bounded stacks of idle senders, newest
//! first (a warm connection is least likely to have been closed by the backend), one stack
//! shared by all clients and one per client announced by a PROXY header.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

use crate::config::ProxyProtocol;
use crate::proxy_protocol::Addresses;

/// The body fulcrum sends to backends: the client's; none (a retried bodiless request); or
/// the client's, kept so that a stream an HTTP/2 backend refused can be sent again.
pub type ReqBody = Either<Incoming, Either<Empty<Bytes>, super::replay::Replay>>;

/// Idle connections kept per backend. Enough for a busy proxy's steady state; beyond it a
/// returned connection is closed rather than kept.
const MAX_IDLE: usize = 1024;

/// An idle connection unused this long is closed: shorter than common backend keep-alive
/// timeouts (nginx 75s, Node.js 5s is the one to worry about), so the backend rarely closes
/// one just as fulcrum reuses it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A connection's sender, ready for one request.
pub type Sender = SendRequest<ReqBody>;

/// Which idle connections a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// How the connection was opened (`Upstream::link`): one opened before a reload changed
    /// TLS or the PROXY protocol is never handed out again.
    pub link: u64,
    /// `None`: a connection any client may use. `Some`: one that began with a PROXY header
    /// announcing these addresses; the backend takes every request on it as that client's,
    /// so it must carry no one else's.
    pub client: Option<(ProxyProtocol, Addresses)>,
}

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Idle>,
}

#[derive(Debug, Default)]
struct Idle {
    /// Client `None`, kept apart from `by_key`: it is the key of nearly every request, and
    /// hashing it on every checkout and checkin would be a measurable cost.
    shared: Vec<(Sender, Instant)>,
    /// The link of the connections in `shared`: the newest any checkin has brought.
    shared_link: u64,
    by_key: HashMap<Key, Vec<(Sender, Instant)>>,
    /// Connections held across all keys, at most `MAX_IDLE`.
    count: usize,
    /// The last sweep of expired connections: a client that left never asks for its own
    /// connections again, so they are dropped by a sweep rather than a checkout.
    swept: Option<Instant>,
}

impl Idle {
    /// Drops closed and expired connections of every key.
    fn sweep(&mut self, now: Instant) {
        let alive = |(s, since): &(Sender, Instant)| {
            !s.is_closed() && now.saturating_duration_since(*since) < IDLE_TIMEOUT
        };
        self.shared.retain(alive);
        self.by_key.retain(|_, list| {
            list.retain(alive);
            !list.is_empty()
        });
        self.count = self.shared.len() + self.by_key.values().map(Vec::len).sum::<usize>();
        self.swept = Some(now);
    }

    fn list(&mut self, key: &Key) -> Option<&mut Vec<(Sender, Instant)>> {
        match key.client {
            None if key.link == self.shared_link => Some(&mut self.shared),
            None => None,
            Some(_) => self.by_key.get_mut(key),
        }
    }
}

impl Pool {
    /// The most recently returned idle connection for `key` that is open, not expired and
    /// ready for a request. One that is not ready yet stays where it is: it is still settling
    /// from its last exchange (its response body just ended and its task has not caught up),
    /// or still sending a request body its backend answered early. Taking it would make this
    /// request wait on that; dropping it would close a good connection.
    pub fn checkout(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.list(key)?;
        let now = Instant::now();
        let mut found = None;
        let mut removed = 0;
        // Newest last: returned in order, so below an expired one all are expired too.
        let mut i = list.len();
        while let Some(at) = i.checked_sub(1) {
            i = at;
            let Some((sender, since)) = list.get(at) else {
                break;
            };
            if now.saturating_duration_since(*since) >= IDLE_TIMEOUT {
                removed += list.drain(..=at).count();
                break;
            }
            if sender.is_closed() {
                list.remove(at);
                removed += 1;
            } else if sender.is_ready() {
                found = Some(list.remove(at).0);
                removed += 1;
                break;
            }
        }
        if list.is_empty() && key.client.is_some() {
            idle.by_key.remove(key);
        }
        idle.count = idle.count.saturating_sub(removed);
        found
    }

    /// Returns a connection whose exchange completed, under the key it was checked out by.
    pub fn checkin(&self, key: Key, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if idle.count >= MAX_IDLE
            || idle
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= IDLE_TIMEOUT)
        {
            idle.sweep(now);
        }
        if key.client.is_none() && key.link != idle.shared_link {
            // A connection of an older link is not kept; one of a newer link retires the
            // older connections.
            if key.link < idle.shared_link {
                return;
            }
            let dropped = idle.shared.len();
            idle.shared.clear();
            idle.count = idle.count.saturating_sub(dropped);
            idle.shared_link = key.link;
        }
        if idle.count < MAX_IDLE {
            match key.client {
                None => idle.shared.push((sender, now)),
                Some(_) => idle.by_key.entry(key).or_default().push((sender, now)),
            }
            idle.count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::client::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn read_head(s: &mut TcpStream) {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.expect("read"), 1, "request head");
            head.push(b[0]);
        }
    }

    const KEY: Key = Key {
        link: 1,
        client: None,
    };

    fn get() -> hyper::Request<ReqBody> {
        hyper::Request::builder()
            .uri("/")
            .header("host", "b")
            .body(Either::Right(Either::Left(Empty::new())))
            .expect("request")
    }

    #[tokio::test]
    async fn a_busy_connection_is_left_in_the_pool_until_it_is_ready() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (rest_tx, rest_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            read_head(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
                .await
                .expect("first half");
            let _ = rest_rx.await;
            s.write_all(b"cd").await.expect("second half");
            read_head(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .expect("second response");
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(get()).await.expect("response head");
        // Back in the pool while its exchange is not over: not ready.
        let pool = Pool::default();
        pool.checkin(KEY, sender);
        assert!(
            pool.checkout(&KEY).is_none(),
            "a busy connection is not handed out"
        );
        rest_tx.send(()).expect("backend");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"abcd", "the first response is whole");
        // Kept, not closed: once its task has seen the response end, it is handed out.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sender = loop {
            if let Some(s) = pool.checkout(&KEY) {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the connection never became ready"
            );
            tokio::task::yield_now().await;
        };
        let resp = sender.send_request(get()).await.expect("second response");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(
            &body[..],
            b"ok",
            "the same connection carried a second request"
        );
    }
}
