//! TLS with rustls: the server side of listeners (certificate chosen by SNI) and the client
//! side of upstreams whose backends speak TLS.
//!
//! Both are built once per configuration snapshot, never per connection: a reload builds new
//! ones from the certificates it just loaded, so the next handshake serves a replaced
//! certificate while open connections keep the session they have.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{self, ListenerTls, TlsVersion, UpstreamTls};

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

/// The TLS acceptor of listener `name`: built once per listener and kept by the snapshot
/// while its TLS settings stay the same.
pub fn acceptor(name: &str, tls: &ListenerTls) -> Result<TlsAcceptor, TlsError> {
    let server = server_config(tls).map_err(|e| TlsError::Listener {
        listener: name.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The rustls server configuration of one listener.
fn server_config(tls: &ListenerTls) -> Result<ServerConfig, rustls::Error> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        // A client offering only TLS 1.2 gets a protocol_version alert from rustls.
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(&tls.certificates)));
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

/// Picks a listener's certificate by the client's SNI: an exact DNS name first, then a
/// `*.example.com` wildcard (one label, as RFC 6125 §6.4.3 allows), else the first
/// certificate. Names are compared case-insensitively; the first certificate naming a
/// name wins.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub fn new(certificates: &[config::Certificate]) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in certificates {
            for name in &c.dns_names {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent.to_owned()),
                    None => (&mut exact, name),
                };
                map.entry(key).or_insert_with(|| Arc::clone(&c.key));
            }
        }
        SniResolver {
            exact,
            wildcard,
            default: certificates.first().map(|c| Arc::clone(&c.key)),
        }
    }

    /// The certificate for SNI `name` (`None`: no SNI sent).
    pub fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let found = name.and_then(|n| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&n).or_else(|| {
                let (_, parent) = n.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.or(self.default.as_ref()).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// The client side for one upstream's backends: its trust roots and the name to verify.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    /// `server_name` of the config; `None`: each backend's own host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the client configuration of upstream `name` once; its certificate and name
    /// checks are rustls's defaults (webpki), never switched off.
    pub fn build(name: &str, tls: &UpstreamTls) -> Result<ClientTls, TlsError> {
        let err = |reason: String| TlsError::Upstream {
            upstream: name.to_owned(),
            reason,
        };
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(Arc::clone(&tls.roots))
            .with_no_client_auth();
        let server_name = match &tls.server_name {
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| err(e.to_string()))?),
            None => None,
        };
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    /// The name sent as SNI and verified for a backend whose host is `host`.
    fn name_for(&self, host: &str) -> io::Result<ServerName<'static>> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => host_name(host),
        }
    }

    /// What an http health check of the backend on `host` needs to speak TLS to it, verified
    /// as the proxy's own connections are.
    pub fn target(&self, host: &str) -> io::Result<(TlsConnector, ServerName<'static>)> {
        Ok((self.connector.clone(), self.name_for(host)?))
    }

    /// Opens TLS over a connected `stream` to the backend on `host`, verifying its
    /// certificate; one that fails verification is an `InvalidData` error.
    pub async fn connect(&self, host: &str, stream: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let name = self.name_for(host)?;
        self.connector.connect(name, stream).await
    }
}

/// A backend's host (as the config split it off its `addr`: no port, no brackets) as a TLS
/// name: an IP address is checked against the certificate's IP entries, a DNS name against
/// its names. The host, not the backend's label: a name standing for several addresses
/// labels each `NAME:PORT/IP:PORT`, and its certificate still names `NAME`.
fn host_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A TLS stream on which a peer that closes TCP without `close_notify` reads as a clean end
/// of stream. Many clients and servers skip the alert; rustls reports that as an
/// `UnexpectedEof` error, which would end a tcp session as a failure (and count a `reset`
/// against a healthy backend) instead of passing the close on, as nginx and HAProxy do.
/// Message framing is HTTP's business, and hyper still sees a truncated message as one.
#[derive(Debug)]
pub struct CloseAsEof<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for CloseAsEof<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CloseAsEof<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate entry for `names` with a fresh key (the resolver only compares keys).
    fn cert(names: &[&str]) -> config::Certificate {
        let ck = rcgen::generate_simple_self_signed(vec![names[0].to_owned()]).expect("rcgen");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let signer = provider()
            .key_provider
            .load_private_key(key)
            .expect("signing key");
        config::Certificate {
            cert_path: "t.crt".into(),
            key_path: "t.key".into(),
            dns_names: names.iter().map(|n| (*n).to_owned()).collect(),
            key: Arc::new(CertifiedKey::new(vec![ck.cert.der().clone()], signer)),
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first_certificate() {
        let first = cert(&["a.example.com"]);
        let wild = cert(&["*.example.com"]);
        let other = cert(&["b.example.com", "www.example.org"]);
        let r = SniResolver::new(&[first.clone(), wild.clone(), other.clone()]);
        let is = |name: Option<&str>, c: &config::Certificate| {
            let got = r.pick(name).expect("a certificate");
            assert!(
                Arc::ptr_eq(&got, &c.key),
                "SNI {name:?} must pick {:?}",
                c.dns_names
            );
        };
        is(Some("a.example.com"), &first);
        is(Some("B.Example.COM"), &other);
        is(Some("www.example.org."), &other);
        is(Some("c.example.com"), &wild);
        // A wildcard covers one label only, and not the bare parent.
        is(Some("x.c.example.com"), &first);
        is(Some("example.com"), &first);
        is(Some("unknown.test"), &first);
        is(None, &first);
    }

    #[test]
    fn backend_host_becomes_the_tls_name() {
        let dns = host_name("app.internal").expect("dns name");
        assert!(matches!(dns, ServerName::DnsName(ref n) if n.as_ref() == "app.internal"));
        let v4 = host_name("127.0.0.1").expect("ip");
        assert!(
            matches!(v4, ServerName::IpAddress(_)),
            "an IP is checked as an IP"
        );
        let v6 = host_name("::1").expect("ip");
        assert!(
            matches!(v6, ServerName::IpAddress(_)),
            "an IPv6 address is checked as an IP"
        );
    }
}
