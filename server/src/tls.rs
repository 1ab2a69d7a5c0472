//! TLS of a node (rustls with ring): HTTPS on the main port and TLS on the SDK port
//! (`--tls-cert`, `--tls-key`) and mutual TLS between nodes on the cluster port (`--cluster-tls-cert`,
//! `--cluster-tls-key`, `--cluster-tls-ca`).
//!
//! On the cluster port every node presents its certificate to its peers and accepts only
//! peers whose certificate is signed by the cluster CA, both as server and as client; a
//! node dials a peer by its member address, so each node's certificate must name its
//! member IP (a subjectAltName of type IP). Mutual TLS is an alternative or an addition to
//! `--cluster-token`.
//!
//! Handshakes run here ([`handshakes`]), one task each under a deadline, never in the
//! accept loop; a refused handshake is logged at warn with the port, the peer address
//! and rustls's reason (`invalid peer certificate: UnknownIssuer`, `... Expired`, ...).

use futures::StreamExt as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Bound on one TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificate chain and key (PEM) of the main port's HTTPS.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpTls {
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for HttpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpTls(..)")
    }
}

impl HttpTls {
    /// From PEM text, checked as the server will load it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let t = Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        };
        t.acceptor()?;
        Ok(t)
    }

    /// From the files of `--tls-cert` and `--tls-key`; errors name the flag and file.
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        Self::from_pem(&read("--tls-cert", cert)?, &read("--tls-key", key)?)
            .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))
    }

    /// The acceptor of the main port (ALPN h2 and http/1.1, no client certificates).
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        acceptor(&self.cert_pem, &self.key_pem, None, &[b"h2", b"http/1.1"])
    }

    /// The acceptor of the SDK port (ALPN h2 only: gRPC; no client certificates).
    pub fn sdk_acceptor(&self) -> Result<TlsAcceptor, String> {
        acceptor(&self.cert_pem, &self.key_pem, None, &[b"h2"])
    }
}

fn read(flag: &str, p: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(p)
        .map_err(|e| anyhow::anyhow!("cannot read {flag} {}: {e}", p.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of the CA in `ca_pem` (at least one): the trust of the cluster's
/// mutual TLS, and of loadgen's `--tls-ca`. Errors name what is wrong.
pub fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let c = c.map_err(|e| format!("invalid CA PEM: {e}"))?;
        roots
            .add(c)
            .map_err(|e| format!("invalid CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("invalid CA PEM: no CERTIFICATE block".into());
    }
    Ok(roots)
}

/// The certificate chain (at least one) and private key of `cert_pem`/`key_pem`: what a
/// node presents, as a server and to its peers. Errors name what is wrong.
type KeyPair = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn identity(cert_pem: &str, key_pem: &str) -> Result<KeyPair, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("invalid certificate PEM: no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("invalid private key PEM: {e}"))?;
    Ok((certs, key))
}

/// A TLS acceptor presenting `cert_pem`/`key_pem`, requiring a client certificate signed
/// by `client_ca_pem` when given, offering `alpn`. Errors name what is wrong.
fn acceptor(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
    alpn: &[&[u8]],
) -> Result<TlsAcceptor, String> {
    let (certs, key) = identity(cert_pem, key_pem)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match client_ca_pem {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| format!("invalid CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS connections of `incoming` (connections of `port`): each handshake runs in its
/// own task under [`HANDSHAKE_TIMEOUT`]; refused ones are logged and dropped. The stream
/// stops accepting when its reader is dropped.
pub fn handshakes<IO, S>(
    incoming: S,
    acceptor: TlsAcceptor,
    port: &'static str,
) -> impl futures::Stream<Item = std::io::Result<TlsStream<IO>>> + Send + 'static
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static + Connected<ConnectInfo = TcpConnectInfo>,
    S: futures::Stream<Item = std::io::Result<IO>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<TlsStream<IO>>>(64);
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let io = tokio::select! {
                _ = tx.closed() => return,
                io = incoming.next() => match io {
                    Some(Ok(io)) => io,
                    Some(Err(_)) => continue,
                    None => return,
                },
            };
            let peer = io.connect_info().remote_addr();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(port, peer = ?peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::warn!(port, peer = ?peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The main port's listener with TLS, for `axum::serve`.
pub struct HttpsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<crate::admission::Guarded>, std::net::SocketAddr)>,
    local: std::net::SocketAddr,
}

impl HttpsListener {
    /// TLS over the connections of `inner`.
    pub fn new(
        inner: crate::admission::HttpListener,
        acceptor: TlsAcceptor,
    ) -> std::io::Result<Self> {
        use axum::serve::Listener as _;
        let local = inner.local_addr()?;
        let incoming = futures::stream::unfold(inner, |mut l| async move {
            let (io, _) = l.accept().await;
            Some((Ok(io), l))
        });
        let mut tls = Box::pin(handshakes(incoming, acceptor, "main"));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    _ = tx.closed() => return,
                    s = tls.next() => s,
                };
                match s {
                    Some(Ok(s)) => {
                        let peer = s.get_ref().0.connect_info().remote_addr();
                        let peer =
                            peer.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                        if tx.send((s, peer)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(_)) => continue,
                    None => return,
                }
            }
        });
        Ok(Self { rx, local })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<crate::admission::Guarded>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended: wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// PEM certificate chain, key and CA of mutual TLS on the cluster port.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterTls {
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterTls(..)")
    }
}

impl ClusterTls {
    /// From PEM text; each must hold at least one PEM block of the right kind, named in
    /// the error when it does not, and they must make a TLS identity.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, String> {
        let check = |what: &str, pem: &str, kinds: &[&str]| {
            if kinds
                .iter()
                .any(|k| pem.contains(&format!("-----BEGIN {k}-----")))
            {
                Ok(())
            } else {
                Err(format!(
                    "invalid {what}: no PEM block of type {}",
                    kinds.join(" or ")
                ))
            }
        };
        check("cluster TLS certificate", cert_pem, &["CERTIFICATE"])?;
        check(
            "cluster TLS key",
            key_pem,
            &["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"],
        )?;
        check("cluster TLS CA", ca_pem, &["CERTIFICATE"])?;
        let t = Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            ca_pem: ca_pem.to_string(),
        };
        t.acceptor()?;
        Ok(t)
    }

    /// From the files at `cert`, `key` and `ca`; errors name the file.
    pub fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Self::from_pem(
            &read("--cluster-tls-cert", cert)?,
            &read("--cluster-tls-key", key)?,
            &read("--cluster-tls-ca", ca)?,
        )
        .map_err(anyhow::Error::msg)
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// The cluster port's server side: present our certificate, require a client
    /// certificate signed by the CA (ALPN h2).
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        acceptor(&self.cert_pem, &self.key_pem, Some(&self.ca_pem), &[b"h2"])
    }

    /// The peer calls' side on our own HTTP/2 connections: trust only the CA, present our
    /// certificate (ALPN h2). Errors name what is wrong.
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, String> {
        let (certs, key) = identity(&self.cert_pem, &self.key_pem)?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots(&self.ca_pem)?)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// The peer clients' side: trust only the CA, present our certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_the_right_block_is_named() {
        let cert = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n";
        let e = ClusterTls::from_pem(key, key, cert).unwrap_err();
        assert!(
            e.contains("certificate") && e.contains("CERTIFICATE"),
            "{e}"
        );
        let e = ClusterTls::from_pem(cert, cert, cert).unwrap_err();
        assert!(e.contains("key"), "{e}");
        let e = ClusterTls::from_pem(cert, key, "").unwrap_err();
        assert!(e.contains("CA"), "{e}");
        let e = HttpTls::from_pem(cert, key).unwrap_err();
        assert!(e.contains("TLS identity") || e.contains("invalid"), "{e}");
    }
}
