//! The `tls` tables: a listener's certificates, version and ALPN; an upstream's server name
//! and trust roots.

use super::Cx;
use crate::config::error::quote;
use crate::config::pem::{self, Which};
use crate::config::raw;
use crate::config::{ConfigError, ListenerTls, Protocol, TlsVersion, UpstreamTls};
use std::path::PathBuf;
use std::sync::Arc;
use toml::Spanned;

/// An ALPN protocol id is 1..=255 bytes (RFC 7301 §3.1).
const MAX_ALPN_LEN: usize = 255;

impl Cx<'_> {
    pub(super) fn listener_tls(
        &self,
        ctx: &str,
        protocol: Protocol,
        t: raw::RawListenerTls,
    ) -> Result<ListenerTls, ConfigError> {
        if t.certificates.get_ref().is_empty() {
            return Err(self.err(
                t.certificates.span(),
                format!(
                    "{ctx}tls.certificates is empty (add at least one \
                     {{ cert = \"site.crt\", key = \"site.key\" }})"
                ),
            ));
        }
        let mut certificates = Vec::new();
        for c in t.certificates.into_inner() {
            let cert_path = PathBuf::from(c.cert.get_ref());
            let key_path = PathBuf::from(c.key.get_ref());
            let loaded = pem::load_certificate(&cert_path, &key_path).map_err(|(which, m)| {
                let span = match which {
                    Which::Cert => c.cert.span(),
                    Which::Key => c.key.span(),
                };
                self.err(span, format!("{ctx}{m}"))
            })?;
            certificates.push(loaded);
        }
        let min_version = self.choice(
            ctx,
            "tls.min_version",
            t.min_version,
            raw::DEFAULT_MIN_VERSION,
            &[("1.2", TlsVersion::V1_2), ("1.3", TlsVersion::V1_3)],
        )?;
        let alpn = match t.alpn {
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for p in list {
                    let len = p.get_ref().len();
                    if len == 0 || len > MAX_ALPN_LEN {
                        return Err(self.err(
                            p.span(),
                            format!(
                                "{ctx}tls.alpn entry {} must be 1..={MAX_ALPN_LEN} bytes long \
                                 (e.g. \"h2\" or \"http/1.1\")",
                                quote(p.get_ref())
                            ),
                        ));
                    }
                    out.push(p.into_inner());
                }
                out
            }
            None if protocol == Protocol::Http => raw::DEFAULT_HTTP_ALPN
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            None => Vec::new(),
        };
        Ok(ListenerTls {
            certificates,
            min_version,
            session_resumption: t
                .session_resumption
                .unwrap_or(raw::DEFAULT_SESSION_RESUMPTION),
            alpn,
        })
    }

    pub(super) fn upstream_tls(
        &mut self,
        ctx: &str,
        t: raw::RawUpstreamTls,
    ) -> Result<UpstreamTls, ConfigError> {
        if let Some(sn) = &t.server_name {
            let valid = rustls::pki_types::ServerName::try_from(sn.get_ref().as_str()).is_ok();
            if !valid {
                return Err(self.err(
                    sn.span(),
                    format!(
                        "{ctx}tls.server_name {} is not a DNS name or an IP address",
                        quote(sn.get_ref())
                    ),
                ));
            }
        }
        let (ca, roots) = match &t.ca {
            Some(ca) => {
                let path = PathBuf::from(ca.get_ref());
                let roots = pem::load_roots(&path)
                    .map_err(|m| self.err(ca.span(), format!("{ctx}tls.ca: {m}")))?;
                (Some(path), Arc::new(roots))
            }
            None => {
                let roots = self
                    .system_roots
                    .get_or_insert_with(|| Arc::new(pem::system_roots()))
                    .clone();
                (None, roots)
            }
        };
        Ok(UpstreamTls {
            server_name: t.server_name.map(Spanned::into_inner),
            ca,
            roots,
        })
    }
}
