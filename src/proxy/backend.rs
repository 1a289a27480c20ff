//! A connection to a backend: TCP, the PROXY header when the upstream sends one, and TLS when
//! it has `[tls]`, all within `connect_timeout`.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::proxy_protocol::Addresses;
use crate::tls::CloseAsEof;
use crate::upstream::{Backend, Failure, Upstream};

/// A backend connection: plain TCP, or TLS when the upstream has `[tls]`. Boxed because a
/// TLS session's state is kilobytes that plain connections should not carry.
pub type BackendIo = Either<TcpStream, Box<CloseAsEof<TlsStream<TcpStream>>>>;

/// Why no connection to a backend could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// The backend's fault: counted against it, and another backend may be tried.
    Backend(Failure),
    /// Ours: no file descriptors, ephemeral ports or memory. Not the backend's fault, so not
    /// counted against it, and not worth trying on another backend.
    Local,
}

/// One connection attempt, the PROXY header (with `send_proxy_protocol`, naming `addrs`) and
/// the TLS handshake included, within `connect_timeout`. A backend certificate that fails
/// verification is a `connect` failure, so the request fails over as for a refused
/// connection.
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
        let Some(tls) = &upstream.tls else {
            return Ok(Either::Left(stream));
        };
        match tls.connect(&backend.host, stream).await {
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
