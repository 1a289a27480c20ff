//! The TLS files a configuration names, loaded and checked at validation so that a reload
//! with a missing or mismatched file is refused before anything changes.

use super::Certificate;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::Path;
use std::sync::Arc;

/// Which of the two files of a certificate entry a problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Cert,
    Key,
}

/// Loads a certificate chain and its private key, checks that the key belongs to the leaf
/// certificate, and reads the leaf's DNS names. The error says which file is at fault.
pub fn load_certificate(cert_path: &Path, key_path: &Path) -> Result<Certificate, (Which, String)> {
    let chain = read_certs(cert_path, "certificate file").map_err(|m| (Which::Cert, m))?;
    let Some(leaf) = chain.first() else {
        return Err((
            Which::Cert,
            format!(
                "{} contains no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)",
                quoted(cert_path)
            ),
        ));
    };
    let (dns_names, ip_names) =
        names(leaf).map_err(|m| (Which::Cert, format!("{}: {m}", quoted(cert_path))))?;
    let key = read_key(key_path).map_err(|m| (Which::Key, m))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => (
            Which::Key,
            format!(
                "key {} does not match certificate {} (use the key the certificate was issued for)",
                quoted(key_path),
                quoted(cert_path)
            ),
        ),
        e => (
            Which::Key,
            format!("key {} cannot be used: {e}", quoted(key_path)),
        ),
    })?;
    Ok(Certificate {
        cert_path: cert_path.to_path_buf(),
        key_path: key_path.to_path_buf(),
        dns_names,
        ip_names,
        key: Arc::new(certified),
    })
}

/// The certificates of a CA file as trust roots; at least one must be usable.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = read_certs(path, "ca file")?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{} contains no usable CA certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            quoted(path)
        ));
    }
    Ok(roots)
}

/// The system's trust roots. None found is not an error: a configuration with its own `ca`
/// everywhere must still load on a host without a system store, and verification against an
/// empty store fails loudly per connection.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// Largest PEM file read: a long chain is a few KiB. With the regular-file check it keeps a
/// wrong path (`/dev/zero`, a FIFO) from exhausting memory or blocking a reload for good.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// `what` names the file's role in the message: "certificate file", "key file", "ca file".
fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let fail = |why: String| format!("cannot read {what} {}: {why}", quoted(path));
    let io = |e: std::io::Error| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
            _ => e.to_string().to_lowercase(),
        })
    };
    // Checked before opening: opening a FIFO for reading waits for a writer.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(fail("not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(fail(format!(
            "larger than {} KiB, not a PEM file",
            MAX_PEM_FILE / 1024
        )));
    }
    Ok(bytes)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path, what)?;
    rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", quoted(path)))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_file(path, "key file")?;
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(format!(
            "{} contains no private key (expected a PEM \"BEGIN PRIVATE KEY\" block)",
            quoted(path)
        )),
        Err(e) => Err(format!("{} is not valid PEM: {e}", quoted(path))),
    }
}

/// The leaf's DNS names from subjectAltName, else its common name, wildcards as written; and
/// the IP addresses of its subjectAltName.
type Names = (Vec<String>, Vec<std::net::IpAddr>);

fn names(leaf: &CertificateDer<'_>) -> Result<Names, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("the first certificate's subjectAltName cannot be parsed: {e}"))?;
    let Some(san) = san else {
        let cn = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .collect();
        return Ok((cn, Vec::new()));
    };
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for n in &san.value.general_names {
        match n {
            GeneralName::DNSName(name) => dns.push((*name).to_owned()),
            GeneralName::IPAddress(b) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                    ips.push(v4.into());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                    ips.push(v6.into());
                }
            }
            _ => {}
        }
    }
    Ok((dns, ips))
}

fn quoted(path: &Path) -> String {
    super::error::quote_whole(&path.to_string_lossy())
}
