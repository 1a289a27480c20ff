//! HTTP/2 connections to one backend, shared by concurrent requests: each carries at most
//! `max_streams` streams at once, another is opened when all are full, and one without
//! streams for a while is closed (by a sweep that runs while the backend has connections).
//! Shared connections are opened one at a time per backend, so a burst of requests to a cold
//! backend shares the first connection instead of opening one each.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
    conns: Arc<Mutex<Conns>>,
    /// Held while a shared connection is opened; what the last opening failed with, and
    /// when.
    dialing: tokio::sync::Mutex<Option<(Instant, DialFailure)>>,
    /// `auto`: the backend's ALPN chose HTTP/1.1 when last asked, so its requests take
    /// HTTP/1.1 connections without waiting for a shared opening.
    speaks_h1: AtomicBool,
}

#[derive(Debug, Default)]
struct Conns {
    list: Vec<Shared>,
    /// A sweep task runs (while there are connections).
    sweeping: bool,
}

impl Conns {
    /// Drops closed connections and those without streams for `IDLE_TIMEOUT`.
    fn sweep(&mut self, now: Instant) {
        self.list.retain(|c| {
            !c.sender.is_closed()
                && (c.streams.load(Ordering::Acquire) > 0
                    || now.saturating_duration_since(c.last_used) < IDLE_TIMEOUT)
        });
    }
}

/// Why the last opening failed, for the requests that waited on it: the backend's failure, or
/// `None` when fulcrum ran out of a local resource.
pub type DialFailure = Option<Failure>;

/// Whether the backend has sent anything on a connection (set by its reader).
#[derive(Debug, Clone, Default)]
pub struct Heard(Arc<AtomicBool>);

impl Heard {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Shared {
    sender: H2Sender,
    heard: Heard,
    key: Key,
    streams: Arc<AtomicU32>,
    last_used: Instant,
}

/// One stream's place on a shared connection, given back when dropped (when the response
/// body ends or the request is abandoned).
#[derive(Debug)]
pub struct Stream {
    pub sender: H2Sender,
    /// The backend has sent something on this stream's connection.
    pub heard: Heard,
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

/// Held while one shared connection is opened; dropping it lets the next waiter in.
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
    /// out. Closed connections are passed over here and dropped by the sweep.
    pub fn checkout(&self, key: &Key, max: u32) -> Option<Stream> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let best = conns
            .list
            .iter_mut()
            .filter(|c| c.key == *key && c.sender.is_ready() && !c.sender.is_closed())
            .filter(|c| c.streams.load(Ordering::Acquire) < max)
            .max_by_key(|c| c.streams.load(Ordering::Acquire))?;
        best.last_used = Instant::now();
        best.streams.fetch_add(1, Ordering::AcqRel);
        Some(Stream {
            sender: best.sender.clone(),
            heard: best.heard.clone(),
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
    pub fn add(&self, key: Key, sender: H2Sender, heard: Heard) -> Stream {
        let streams = Arc::new(AtomicU32::new(1));
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.list.push(Shared {
            sender: sender.clone(),
            heard: heard.clone(),
            key,
            streams: Arc::clone(&streams),
            last_used: Instant::now(),
        });
        if !conns.sweeping {
            conns.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(&self.conns)));
        }
        Stream {
            sender,
            heard,
            streams,
        }
    }

    /// `auto`: whether the backend chose HTTP/1.1 when last dialled.
    pub fn speaks_h1(&self) -> bool {
        self.speaks_h1.load(Ordering::Relaxed)
    }

    pub fn set_speaks_h1(&self, h1: bool) {
        self.speaks_h1.store(h1, Ordering::Relaxed);
    }
}

/// Drops a backend's closed connections and closes its idle ones, every `IDLE_TIMEOUT`, also
/// when no request comes any more (it went down, or its traffic moved). Ends with the last
/// connection, or with the backend.
async fn sweep(conns: Weak<Mutex<Conns>>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT).await;
        let Some(conns) = conns.upgrade() else {
            return;
        };
        let mut conns = conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.sweep(Instant::now());
        if conns.list.is_empty() {
            conns.sweeping = false;
            return;
        }
    }
}
