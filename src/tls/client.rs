//! The client side for an upstream whose backends speak TLS: trust roots, the name verified.

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{TlsError, provider};
use crate::config::{UpstreamProtocol, UpstreamTls};

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
    /// checks are rustls's defaults (webpki), never switched off. ALPN offers what the
    /// upstream's `protocol` may speak: `h2`, `h2` then `http/1.1` (`auto`), or nothing
    /// (HTTP/1.1, as nginx and HAProxy send by default).
    pub fn build(
        name: &str,
        tls: &UpstreamTls,
        protocol: UpstreamProtocol,
    ) -> Result<ClientTls, TlsError> {
        let err = |reason: String| TlsError::Upstream {
            upstream: name.to_owned(),
            reason,
        };
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(Arc::clone(&tls.roots))
            .with_no_client_auth();
        client.alpn_protocols = match protocol {
            UpstreamProtocol::H2 | UpstreamProtocol::H2c => vec![b"h2".to_vec()],
            UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            UpstreamProtocol::Http1 => Vec::new(),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

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
