//! TLS to the targets (`--tls-ca FILE`): every connection loadgen opens to a target's SDK
//! port is a TLS connection (rustls with ring, ALPN h2) that trusts only the CA
//! certificates of the file; the server name checked is the target's host (an IP
//! address or a DNS name, as given in `--targets`).
//!
//! The native protocol hands the CA to tonic ([`TargetTls::tonic`]); the Nacos protocol's
//! own HTTP/2 client and the preflight wrap their TCP streams with
//! [`TargetTls::connect`]. [`explain`] turns a refused handshake into a reason with a hint.
//!
//! The embedded cluster serves TLS when given a certificate and key ([`NodeTlsFiles`],
//! `--tls-cert`, `--tls-key`, with `--tls-ca` for loadgen's side), e.g. to measure what
//! TLS costs.

use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The CA that the targets' certificates are checked against. Cheap to clone.
#[derive(Clone)]
pub struct TargetTls {
    ca_pem: Arc<str>,
    connector: TlsConnector,
}

impl std::fmt::Debug for TargetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetTls(..)")
    }
}

impl TargetTls {
    /// From a PEM bundle of CA certificates; the error says what is wrong with it.
    pub fn from_pem(ca_pem: &str) -> Result<Self, String> {
        let roots = distro_server::tls::roots(ca_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            ca_pem: ca_pem.into(),
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// From the file of `--tls-ca`; errors name the flag and the file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--tls-ca: cannot read {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", path.display()))
    }

    /// The same trust for tonic (the native protocol; the server name is the URI's host).
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&*self.ca_pem))
    }

    /// The connector (rustls, ALPN h2, this trust).
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// TLS handshake on `io` with the server `host` (an IP address or a DNS name).
    pub async fn connect<IO>(&self, io: IO, host: &str) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = server_name(host)?;
        self.connector.connect(name, io).await
    }
}

/// The certificate and key files of the embedded nodes (`--tls-cert`, `--tls-key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTlsFiles {
    /// PEM certificate chain; it must name 127.0.0.1 (an IP subjectAltName).
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

impl NodeTlsFiles {
    /// The nodes' TLS settings; errors name the flag and the file.
    pub fn load(&self) -> anyhow::Result<distro_server::tls::HttpTls> {
        distro_server::tls::HttpTls::from_files(&self.cert, &self.key)
    }
}

/// The host of `target` (`host:port`, `[v6]:port`), without brackets.
pub fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn server_name(host: &str) -> std::io::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a valid TLS server name: {e}"),
        )
    })
}

/// The reason a TLS handshake failed, with a hint at the likely cause.
pub fn explain(e: &std::io::Error) -> String {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            format!("{e} (the target's certificate is not signed by a CA of --tls-ca)")
        }
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        )) => format!("{e} (the target's certificate does not name the host given in --targets)"),
        Some(rustls::Error::InvalidCertificate(_)) => e.to_string(),
        _ => {
            format!("{e} (is the target serving TLS, i.e. started with --tls-cert and --tls-key?)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_pem_is_named_and_hosts_are_split() {
        assert!(TargetTls::from_pem("").unwrap_err().contains("CERTIFICATE"));
        let bad = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        assert!(TargetTls::from_pem(bad).is_err());
        assert_eq!(host_of("127.0.0.1:8848"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8848"), "::1");
        assert_eq!(host_of("node-1.example:8848"), "node-1.example");
        assert!(server_name("::1").is_ok());
    }
}
