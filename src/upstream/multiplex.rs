//! HTTP/2 connections to one backend, shared by concurrent requests: each carries at most
//! `max_streams` streams at once, another is opened when all are full, and one unused for a
//! while is closed. Opening is one at a time per backend, so a burst of requests to a cold
//! backend shares the first connection instead of opening one each.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use tokio::time::Instant;

use super::Failure;
use super::pool::{Key, ReqBody};

/// A connection without streams for this long is closed (as idle HTTP/1.1 connections are).
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// What sends on an HTTP/2 backend connection; clones share the connection.
pub type H2Sender = SendRequest<ReqBody>;

#[derive(Debug, Default)]
pub struct Multiplex {
    conns: Mutex<Vec<Shared>>,
    /// Held while a connection is opened; what the last opening failed with, and when.
    dialing: tokio::sync::Mutex<Option<(Instant, DialFailure)>>,
}

/// Why the last opening failed, for the requests that waited on it: the backend's failure, or
/// `None` when fulcrum ran out of a local resource.
pub type DialFailure = Option<Failure>;

#[derive(Debug)]
struct Shared {
    sender: H2Sender,
    key: Key,
    streams: Arc<AtomicU32>,
    last_used: Instant,
}

/// One stream's place on a shared connection, given back when dropped (when the response
/// body ends or the request is abandoned).
#[derive(Debug)]
pub struct Stream {
    pub sender: H2Sender,
    streams: Arc<AtomicU32>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The right to open a connection, or why the opening just tried (while this request waited)
/// failed.
pub enum Dial<'a> {
    Open(Opening<'a>),
    Failed(DialFailure),
}

/// Held while one connection is opened; `Multiplex::add` or dropping it lets the next waiter
/// in.
pub struct Opening<'a> {
    guard: tokio::sync::MutexGuard<'a, Option<(Instant, DialFailure)>>,
}

impl Opening<'_> {
    /// Tells requests that waited on this opening that it failed.
    pub fn failed(mut self, why: DialFailure) {
        *self.guard = Some((Instant::now(), why));
    }
}

impl Multiplex {
    /// A stream on an open connection for `key` with room for one more (fewer than `max`
    /// streams), the busiest such first: traffic packs onto few connections and the rest idle
    /// out. Closed and idle-expired connections are dropped on the way.
    pub fn checkout(&self, key: &Key, max: u32) -> Option<Stream> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        conns.retain(|c| {
            !c.sender.is_closed()
                && (c.streams.load(Ordering::Acquire) > 0
                    || now.saturating_duration_since(c.last_used) < IDLE_TIMEOUT)
        });
        let best = conns
            .iter_mut()
            .filter(|c| c.key == *key && c.sender.is_ready())
            .filter(|c| c.streams.load(Ordering::Acquire) < max)
            .max_by_key(|c| c.streams.load(Ordering::Acquire))?;
        best.last_used = now;
        best.streams.fetch_add(1, Ordering::AcqRel);
        Some(Stream {
            sender: best.sender.clone(),
            streams: Arc::clone(&best.streams),
        })
    }

    /// Waits for the right to open a connection. A request that waited while another's
    /// opening failed gets that failure instead: it would fail the same way, one
    /// `connect_timeout` later.
    pub async fn dial(&self) -> Dial<'_> {
        let since = Instant::now();
        let guard = self.dialing.lock().await;
        match *guard {
            Some((at, why)) if at >= since => Dial::Failed(why),
            _ => Dial::Open(Opening { guard }),
        }
    }

    /// Adds a connection opened for `key` and takes its first stream.
    pub fn add(&self, opening: Opening<'_>, key: Key, sender: H2Sender) -> Stream {
        let streams = Arc::new(AtomicU32::new(1));
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.push(Shared {
            sender: sender.clone(),
            key,
            streams: Arc::clone(&streams),
            last_used: Instant::now(),
        });
        drop(conns);
        let mut guard = opening.guard;
        *guard = None;
        Stream { sender, streams }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.iter().filter(|c| !c.sender.is_closed()).count()
    }
}
