//! A listener's certificate, chosen by the name the client asks for (SNI).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::cover::Cover;
use crate::config;

/// Picks a listener's certificate by the client's SNI: an exact DNS name first, then a
/// `*.example.com` wildcard (one label, as RFC 6125 §6.4.3 allows), else the first
/// certificate. Names are compared case-insensitively; the first certificate naming a
/// name wins.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, usize>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, usize>,
    /// Each certificate with the names it covers; the first is the default.
    certs: Vec<(Arc<CertifiedKey>, Arc<Cover>)>,
}

impl SniResolver {
    pub fn new(certificates: &[config::Certificate]) -> SniResolver {
        let certs: Vec<(Arc<CertifiedKey>, Arc<Cover>)> = certificates
            .iter()
            .map(|c| (Arc::clone(&c.key), Arc::new(Cover::new(c))))
            .collect();
        // The names as `Cover` spells them (lowercase, no trailing dot, wildcards by parent).
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, (_, cover)) in certs.iter().enumerate() {
            for name in cover.exact() {
                exact.entry(name.to_owned()).or_insert(i);
            }
            for parent in cover.wildcard_parents() {
                wildcard.entry(parent.to_owned()).or_insert(i);
            }
        }
        SniResolver {
            exact,
            wildcard,
            certs,
        }
    }

    /// The index of the certificate for SNI `name` (`None`: no SNI sent).
    fn index(&self, name: Option<&str>) -> usize {
        let found = name.and_then(|n| {
            let n = n.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(&n).or_else(|| {
                let (_, parent) = n.split_once('.')?;
                self.wildcard.get(parent)
            })
        });
        found.copied().unwrap_or(0)
    }

    /// The certificate for SNI `name` (`None`: no SNI sent).
    pub fn pick(&self, name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        self.certs.get(self.index(name)).map(|(k, _)| Arc::clone(k))
    }

    /// The names covered by the certificate served for SNI `name`.
    pub fn cover(&self, name: &str) -> Option<Arc<Cover>> {
        self.certs
            .get(self.index(Some(name)))
            .map(|(_, c)| Arc::clone(c))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::provider;

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
            ip_names: Vec::new(),
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
}
