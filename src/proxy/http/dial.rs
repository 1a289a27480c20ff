//! A new HTTP connection to a backend: HTTP/1.1, or HTTP/2 by prior knowledge (`h2c`), by
//! ALPN over TLS (`h2`), or whichever ALPN picks (`auto`); driven in its own task.

use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::noticed::Noticed;
use crate::config::UpstreamProtocol;
use crate::proxy::backend::{BackendIo, ConnectError, connect};
use crate::proxy::gather::Gathered;
use crate::proxy_protocol::Addresses;
use crate::upstream::multiplex::{H2Sender, Heard};
use crate::upstream::pool::Sender;
use crate::upstream::{Backend, Failure, Upstream};

/// A fresh backend connection, of the HTTP version it speaks.
pub(super) enum Dialed {
    H1(Sender),
    H2(H2Sender, Heard),
}

/// Response heads up to this size are read (fulcrum's own request limit and room to spare).
const MAX_RESPONSE_HEAD: usize = super::MAX_HEAD + 16 * 1024;

/// Opens a connection to `backend` (TLS and PROXY header as the upstream says) and speaks the
/// upstream's protocol on it, within `connect_timeout` for the connection and the handshake.
///
/// Boxed: opening (TCP, TLS, the handshake) is a state machine of kilobytes that only a new
/// connection needs; inline, it made every request's future 1.4 KB larger (5.8 KB, not 4.4).
pub(super) fn dial<'a>(
    backend: &'a Backend,
    upstream: &'a Upstream,
    addrs: &'a Addresses,
) -> std::pin::Pin<Box<impl Future<Output = Result<Dialed, ConnectError>> + Send + 'a>> {
    Box::pin(open(backend, upstream, addrs))
}

async fn open(
    backend: &Backend,
    upstream: &Upstream,
    addrs: &Addresses,
) -> Result<Dialed, ConnectError> {
    let io = connect(backend, upstream, addrs).await?;
    let h2 = match upstream.conf.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::H2c => true,
        UpstreamProtocol::H2 | UpstreamProtocol::Auto => {
            let alpn_h2 = match &io {
                tokio_util::either::Either::Right(tls) => {
                    tls.0.get_ref().1.alpn_protocol() == Some(b"h2")
                }
                tokio_util::either::Either::Left(_) => false,
            };
            if !alpn_h2 && upstream.conf.protocol == UpstreamProtocol::H2 {
                tracing::debug!(upstream = %upstream.name, backend = %backend.addr, "backend did not choose h2 by ALPN");
                return Err(ConnectError::Backend(Failure::Protocol));
            }
            alpn_h2
        }
    };
    handshake(io, h2)
        .await
        .map_err(|_| ConnectError::Backend(Failure::Connect))
}

/// The HTTP handshake on a connected stream; plain TCP and TLS each get their own connection
/// type, so plain TCP pays nothing for TLS.
async fn handshake(io: BackendIo, h2: bool) -> Result<Dialed, hyper::Error> {
    use tokio_util::either::Either::{Left, Right};
    match (io, h2) {
        (Left(tcp), false) => speak_h1(TokioIo::new(Gathered(tcp))).await,
        (Right(tls), false) => speak_h1(TokioIo::new(Gathered(tls))).await,
        (Left(tcp), true) => speak_h2(tcp).await,
        (Right(tls), true) => speak_h2(tls).await,
    }
}

async fn speak_h1<I>(io: I) -> Result<Dialed, hyper::Error>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        // Errors here surface on the request that was in progress, if any.
        let _ = conn.with_upgrades().await;
    });
    Ok(Dialed::H1(sender))
}

async fn speak_h2<S>(io: S) -> Result<Dialed, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let heard = Heard::default();
    let io = TokioIo::new(Gathered(Noticed::new(io, heard.clone())));
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_RESPONSE_HEAD as u32)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        // Errors here surface on the streams that were in progress.
        let _ = conn.await;
    });
    Ok(Dialed::H2(sender, heard))
}
