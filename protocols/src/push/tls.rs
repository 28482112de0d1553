//! TLS for pushes (`rtmps://`, `whip+https://`): the Mozilla roots that
//! `webpki-roots` carries, plus the PEM certificates of
//! `push.tls_ca_file` for a private CA.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

/// The certificates of a PEM file, or why it cannot be read.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("reading {}: {e}", path.display()))?.collect();
    let certs = certs.map_err(|e| format!("reading {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} has no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A connector trusting the public roots and `extra`.
pub fn connector(extra: &[CertificateDer<'static>]) -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra {
        roots.add(c.clone()).map_err(|e| format!("a CA certificate is unusable: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// The name a certificate must carry for `host:port` (`[v6]:port` too):
/// a DNS name or an IP address.
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("{host:?} is not a name TLS can check: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_address() {
        assert!(matches!(server_name("live.example.com:443"), Ok(ServerName::DnsName(_))));
        assert!(matches!(server_name("127.0.0.1:4443"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("[::1]:443"), Ok(ServerName::IpAddress(_))));
        assert!(connector(&[]).is_ok());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("tidecast-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate\n").unwrap();
        assert!(read_ca_file(&dir).unwrap_err().contains("no PEM certificate"));
        let _ = std::fs::remove_file(&dir);
        assert!(read_ca_file(Path::new("/nonexistent/ca.pem")).is_err());
    }
}
