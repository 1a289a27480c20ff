//! One client connection, from accept to the proxy: the PROXY header first when the listener
//! expects one, then the TLS handshake on a TLS listener, then layer 4 or layer 7.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::Accepted;
use crate::config::Protocol;
use crate::proxy_protocol::{self, Addresses, Prefixed};
use crate::snapshot::{Live, Snapshot};

/// Serves one client connection with the settings of the snapshot current at accept time
/// (loaded once here: the TLS certificates, timeouts and, for tcp, the upstream).
pub async fn handle(
    stream: Accepted,
    peer: SocketAddr,
    name: &Arc<str>,
    bind: SocketAddr,
    live: &Arc<Live>,
    graceful: &CancellationToken,
) {
    let snapshot = live.load_full();
    // A reload that renamed the listener hands its socket to a new accept loop; a client
    // this loop accepted in between is served as the new listener's.
    let Some((conf, state)) = snapshot
        .listener(name)
        .or_else(|| snapshot.listener_on(bind))
    else {
        return;
    };
    let renamed: Arc<str>;
    let name = if *conf.name == **name {
        name
    } else {
        renamed = Arc::from(conf.name.as_str());
        &renamed
    };
    let acceptor = state.acceptor.clone();
    // One deadline for all that comes before the payload: a client that stalls the PROXY
    // header and then the handshake must not hold a connection slot twice as long.
    let deadline = Instant::now() + conf.timeouts.header_read;
    // The listener's own address is its bind, unless that is a wildcard: only then does
    // it take a getsockname(2) per connection to learn which address the client reached.
    let local = if conf.bind.ip().is_unspecified() {
        stream.local_addr().unwrap_or(conf.bind)
    } else {
        conf.bind
    };
    let mut addrs = Addresses {
        client: peer,
        listener: local,
    };
    let stream = if conf.proxy_protocol {
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
    let session = Session {
        snapshot,
        addrs,
        name,
        live,
        graceful,
    };
    match acceptor {
        None => session.serve(stream, "http", None).await,
        // Boxed: a TLS session's state is kilobytes, which every plain connection's task
        // would otherwise carry (and copy when it is spawned).
        Some(acceptor) => Box::pin(async move {
            // A client that stalls the handshake is cut off like one that stalls its request
            // head: it must not hold a connection slot for longer.
            match timeout_at(deadline, acceptor.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // The names of the certificate this connection was served with, which
                    // every request on it must name, once the client named a tenant (SNI).
                    // Without SNI (a client that dialled an IP address: probes, scripts) no
                    // tenant was asked for, and nginx does not refuse there either.
                    let cover = tls.get_ref().1.server_name().and_then(|n| acceptor.sni.cover(n));
                    session
                        .serve(crate::tls::CloseAsEof(tls), "https", cover)
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = %name, client = %session.addrs.client, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    tracing::debug!(listener = %name, client = %session.addrs.client, "TLS handshake timed out");
                }
            }
        })
        .await,
    }
}

/// A connection past its PROXY header and handshake, about to be proxied.
struct Session<'a> {
    snapshot: Arc<Snapshot>,
    addrs: Addresses,
    name: &'a Arc<str>,
    live: &'a Arc<Live>,
    graceful: &'a CancellationToken,
}

impl Session<'_> {
    /// Proxies the connection, plain or the plaintext side of TLS (`proto` "https", `cover`
    /// the names of its certificate).
    async fn serve<I>(self, stream: I, proto: &'static str, cover: Option<Arc<crate::tls::Cover>>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some((conf, state)) = self.snapshot.listener(self.name) else {
            return;
        };
        match conf.protocol {
            Protocol::Tcp => {
                let Some(upstream) = &state.upstream else {
                    return;
                };
                let started = tokio::time::Instant::now();
                let s = crate::proxy::tcp::serve(stream, upstream, conf.timeouts.idle, &self.addrs)
                    .await;
                crate::metrics::bytes(self.name, s.rx, s.tx);
                if self.snapshot.config.log.access {
                    tracing::info!(
                        target: "access",
                        listener = %self.name,
                        client = %self.addrs.client,
                        backend = s.backend.as_deref().unwrap_or("none"),
                        rx = s.rx,
                        tx = s.tx,
                        duration_ms = started.elapsed().as_millis() as u64,
                        end = s.end.as_str(),
                        "tcp session"
                    );
                }
            }
            Protocol::Http => {
                let client = crate::proxy::http::Client {
                    addrs: self.addrs,
                    listener: Arc::clone(self.name),
                    proto,
                    cover,
                    timeouts: conf.timeouts.clone(),
                };
                // Each request reads the snapshot current when it arrives.
                drop(self.snapshot);
                crate::proxy::http::serve(stream, client, Arc::clone(self.live), self.graceful)
                    .await;
            }
        }
    }
}
