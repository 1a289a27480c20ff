//! Keep-alive HTTP/1.1 connections to one backend: a bounded stack of idle senders, newest
//! first (a warm connection is least likely to have been closed by the backend).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The body fulcrum sends to backends: the client's, or none (a retried bodiless request).
pub type ReqBody = Either<Incoming, Empty<Bytes>>;

/// Idle connections kept per backend. Enough for a busy proxy's steady state; beyond it a
/// returned connection is closed rather than kept.
const MAX_IDLE: usize = 1024;

/// An idle connection unused this long is closed: shorter than common backend keep-alive
/// timeouts (nginx 75s, Node.js 5s is the one to worry about), so the backend rarely closes
/// one just as fulcrum reuses it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// A connection's sender, ready for one request.
pub type Sender = SendRequest<ReqBody>;

#[derive(Debug, Default)]
pub struct Pool {
    idle: Mutex<Vec<(Sender, Instant)>>,
}

impl Pool {
    /// The most recently returned idle connection that is still open and not expired.
    pub fn checkout(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && sender.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    /// Returns a connection whose exchange completed.
    pub fn checkin(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }
}

/// Performs the HTTP/1.1 handshake on a fresh backend connection (plain TCP or TLS) and
/// drives it in a task.
pub async fn handshake<I>(stream: I) -> Result<Sender, hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(super::http::MAX_HEAD + 16 * 1024)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        // Errors here surface on the request that was in progress, if any.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}
