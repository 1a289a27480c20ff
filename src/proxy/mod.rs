//! The path shared by both protocols: pick a backend, connect within `connect_timeout`, and
//! on refusal or timeout fail over to another healthy backend not yet tried.

pub mod activity;
pub mod cancelled;
pub mod failure;
pub mod gather;
pub mod http;
pub mod message;
pub mod pool;
pub mod tcp;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use self::failure::{ConnectError, Failure, fail_connect};
use crate::proxy_protocol::Addresses;
use crate::tls::CloseAsEof;
use crate::upstream::{Backend, Lease, Upstream};

/// A backend connection: plain TCP, or TLS when the upstream has `[tls]`. Boxed because a
/// TLS session's state is kilobytes that plain connections should not carry.
pub type BackendIo = Either<TcpStream, Box<CloseAsEof<TlsStream<TcpStream>>>>;

/// The backends a request or session has tried, in order. The usual few stay on the stack:
/// a heap allocation per request for this list would be a measurable share of its cost.
pub type Tried = smallvec::SmallVec<[usize; 4]>;

/// Why no backend connection could be had.
#[derive(Debug)]
pub enum DialError {
    /// No healthy backend at all: http answers 503, tcp closes at once.
    NoHealthy,
    /// Every backend tried (up to `retries` more) failed: http answers 502.
    Failed,
}

/// Connects to a backend of `upstream` for the client of `addrs`, failing over up to `retries`
/// times. Each failure counts against its backend; each move to another backend is a
/// failover.
pub async fn dial(upstream: &Upstream, addrs: &Addresses) -> Result<(BackendIo, Lease), DialError> {
    let mut tried = Tried::default();
    let mut failed_any = false;
    let attempts = upstream.conf.retries.saturating_add(1);
    for attempt in 0..attempts {
        let Some(lease) = upstream.pick(tried.as_slice()) else {
            break;
        };
        if attempt > 0 {
            crate::metrics::failover(&upstream.name);
        }
        tried.push(lease.index);
        match connect(&lease.backend, upstream, addrs).await {
            Ok(stream) => return Ok((stream, lease)),
            Err(e) => {
                fail_connect(upstream, &lease, e);
                failed_any = true;
                if e == ConnectError::Local {
                    break;
                }
            }
        }
    }
    if failed_any {
        Err(DialError::Failed)
    } else {
        Err(DialError::NoHealthy)
    }
}

/// One connection attempt, the PROXY header (with `send_proxy_protocol`, naming `addrs`) and
/// the TLS handshake included, within `connect_timeout`; the error is the failure `kind`
/// label. A backend certificate that fails verification is a `connect` failure, so the
/// request fails over as for a refused connection.
pub async fn connect(
    backend: &Backend,
    upstream: &Upstream,
    addrs: &Addresses,
) -> Result<BackendIo, ConnectError> {
    let attempt = async {
        let mut stream = TcpStream::connect(backend.dial)
            .await
            .map_err(|e| connect_error_kind(&e))?;
        // Small requests and responses must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        // The header comes before anything else, TLS included: the backend reads it off the
        // raw connection, as fulcrum does on a listener.
        if let Some(header) =
            crate::proxy_protocol::header(upstream.conf.send_proxy_protocol, addrs)
        {
            stream
                .write_all(&header)
                .await
                .map_err(|_| ConnectError::Backend(Failure::Connect))?;
        }
        if upstream.tls.is_none() {
            return Ok(Either::Left(stream));
        }
        match crate::tls::connect_tls(upstream, stream, backend).await {
            Ok(tls) => Ok(Either::Right(Box::new(CloseAsEof(tls)))),
            Err(e) => {
                tracing::debug!(upstream = %upstream.name, backend = %backend.addr, error = %e, "backend TLS handshake failed");
                Err(ConnectError::Backend(Failure::Connect))
            }
        }
    };
    timeout(upstream.conf.connect_timeout, attempt)
        .await
        .unwrap_or(Err(ConnectError::Backend(Failure::Timeout)))
}

/// `Local` when the process or system ran out of something, else the backend's `Connect`.
fn connect_error_kind(e: &std::io::Error) -> ConnectError {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL) => {
            ConnectError::Local
        }
        _ => ConnectError::Backend(Failure::Connect),
    }
}
