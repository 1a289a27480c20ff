//! TLS with rustls: the server side of listeners (certificate chosen by SNI) and the client
//! side of upstreams whose backends speak TLS.
//!
//! Both are built once per configuration snapshot, never per connection: a reload builds new
//! ones from the certificates it just loaded, so the next handshake serves a replaced
//! certificate while open connections keep the session they have.

mod client;
mod cover;
mod eof;
mod sni;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use tokio_rustls::TlsAcceptor;

use crate::config::{ListenerTls, TlsVersion};

pub use client::ClientTls;
pub use cover::Cover;
pub use eof::CloseAsEof;
pub use sni::SniResolver;

/// TLS sessions a listener remembers for resumption by session ID (TLS 1.2 clients without
/// ticket support): ~1 KiB each, so a few MiB at most per listener.
const SESSION_CACHE: usize = 4096;

/// Errors setting up TLS for a configuration (the files were already checked by validation,
/// so these are rare: a provider that cannot make ticket keys, say).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("listener \"{listener}\": cannot set up TLS: {reason}")]
    Listener { listener: String, reason: String },
    #[error("upstream \"{upstream}\": cannot set up TLS: {reason}")]
    Upstream { upstream: String, reason: String },
}

/// The crypto provider for both sides: aws-lc-rs, because on x86_64 its handshakes (ECDHE,
/// RSA and ECDSA signatures) are faster than ring's, and handshakes are what a TLS-terminating
/// proxy spends its CPU on.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS listener's acceptor and the certificate choice it makes, which tells what names a
/// connection's certificate covers.
#[derive(Clone)]
pub struct Acceptor {
    pub acceptor: TlsAcceptor,
    pub sni: Arc<SniResolver>,
}

/// The TLS acceptor of listener `name`: built once per listener and kept by the snapshot
/// while its TLS settings stay the same.
pub fn acceptor(name: &str, tls: &ListenerTls) -> Result<Acceptor, TlsError> {
    let sni = Arc::new(SniResolver::new(&tls.certificates));
    let server = server_config(tls, Arc::clone(&sni)).map_err(|e| TlsError::Listener {
        listener: name.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Acceptor {
        acceptor: TlsAcceptor::from(Arc::new(server)),
        sni,
    })
}

/// The rustls server configuration of one listener.
fn server_config(tls: &ListenerTls, sni: Arc<SniResolver>) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        // A client offering only TLS 1.2 gets a protocol_version alert from rustls.
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(sni);
    server.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    if tls.session_resumption {
        server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        server.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    } else {
        // Every handshake is a full one: no tickets (the builder's ticketer never makes any),
        // no TLS 1.3 tickets sent, no session-ID cache.
        server.send_tls13_tickets = 0;
        server.session_storage = Arc::new(NoServerSessionStorage {});
    }
    Ok(server)
}
