//! Mutual TLS on the cluster port with certificates made here (rcgen): nodes with
//! certificates of the cluster CA replicate and forward to each other; a client without
//! TLS, with a certificate of another CA, or with an expired certificate is refused, and a
//! client that trusts another CA, or meets an expired server certificate, refuses the node;
//! each refusal says why.

use crate::cluster::{address_owned_by, all_hold, cluster, eventually, fast_config, register_http};
use distro_server::proto::distro as pb;
use distro_server::tls::ClusterTls;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A CA: its PEM certificate and the issuer that signs leaves.
pub(crate) struct Ca {
    pub(crate) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub(crate) fn ca(name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A certificate for 127.0.0.1 and localhost signed by `ca`, and its key (PEM); an expired
/// one was valid in 2020 only.
pub(crate) fn leaf(ca: &Ca, expired: bool) -> (String, String) {
    let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &ca.issuer).expect("signed");
    (cert.pem(), key.serialize_pem())
}

fn node_tls(ca: &Ca, expired: bool) -> ClusterTls {
    let (cert, key) = leaf(ca, expired);
    ClusterTls::from_pem(&cert, &key, &ca.pem).expect("valid PEM")
}

/// Probes the cluster port `port` over TLS trusting `trust`, presenting `identity`; the
/// error text with its causes when refused.
async fn probe(port: u16, trust: &str, identity: Option<(&str, &str)>) -> Result<(), String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(trust));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .timeout(Duration::from_secs(5));
    let channel = endpoint.connect().await.map_err(|e| chain(&e))?;
    let mut client = pb::peer_client::PeerClient::new(channel);
    client
        .probe(pb::ProbeRequest {
            from: "127.0.0.1:1".into(),
            incarnation: 1,
            loaded: true,
        })
        .await
        .map(drop)
        .map_err(|s| {
            if s.code() == tonic::Code::PermissionDenied {
                // TLS let us in: only the member check refused the made-up sender.
                return "ADMITTED".to_string();
            }
            format!(
                "{}: {}",
                s.message(),
                distro_server::cluster::peer_client::causes(&s)
            )
        })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(e) = next {
        out.push_str(": ");
        out.push_str(&e.to_string());
        next = e.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_replicate_over_mutual_tls_and_refuse_clients_without_a_good_certificate() {
    let good = ca("distro test CA");
    let mut config = fast_config();
    config.cluster_tls = Some(node_tls(&good, false));
    let c = cluster(2, config).await;
    // Forwarded to the owner and replicated, both over mutual TLS.
    let (ip, port) = address_owned_by(&c, 1);
    let (status, body) = register_http(&c, 0, "tls", &ip, port).await;
    assert_eq!(status, 200, "{body}");
    eventually("replicated over TLS", Duration::from_secs(10), || {
        all_hold(&c, &ip, port)
    })
    .await;

    let cluster_port = c.ports(0).cluster;
    let (cert, key) = leaf(&good, false);
    assert_eq!(
        probe(cluster_port, &good.pem, Some((&cert, &key))).await,
        Err("ADMITTED".to_string()),
        "a certificate of the cluster CA passes TLS"
    );
    // Plaintext HTTP/2 is not spoken on a TLS port.
    let plain =
        pb::peer_client::PeerClient::connect(format!("http://127.0.0.1:{cluster_port}")).await;
    if let Ok(mut plain) = plain {
        let e = plain
            .probe(pb::ProbeRequest::default())
            .await
            .expect_err("no TLS");
        println!("plaintext client: {e}");
    }
    // No client certificate, one of another CA, an expired one: refused by the node (its
    // log says why; the client sees its connection closed).
    let refused = [
        ("no client certificate", None),
        (
            "another CA's client certificate",
            Some(leaf(&ca("another CA"), false)),
        ),
        ("an expired client certificate", Some(leaf(&good, true))),
    ];
    for (what, identity) in refused {
        let identity = identity.as_ref().map(|(c, k)| (c.as_str(), k.as_str()));
        let e = probe(cluster_port, &good.pem, identity)
            .await
            .expect_err(what);
        println!("{what}: {e}");
        assert_ne!(e, "ADMITTED", "{what} must not pass TLS");
    }
    let other = ca("another CA");
    // A client that trusts another CA refuses the node.
    let (cert, key) = leaf(&other, false);
    let e = probe(cluster_port, &other.pem, Some((&cert, &key)))
        .await
        .expect_err("the node's certificate is not of the trusted CA");
    println!("a client trusting another CA: {e}");
    assert!(e.contains("UnknownIssuer"), "{e}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_expired_certificate_is_refused_by_its_peers() {
    let good = ca("distro test CA");
    let mut config = fast_config();
    config.cluster_tls = Some(node_tls(&good, true));
    let c = cluster(1, config).await;
    let (cert, key) = leaf(&good, false);
    let e = probe(c.ports(0).cluster, &good.pem, Some((&cert, &key)))
        .await
        .expect_err("the node's certificate expired");
    println!("expired server certificate: {e}");
    assert!(e.contains("Expired") || e.contains("expired"), "{e}");
    c.shutdown().await;
}

/// GET `path` over HTTPS (HTTP/1.1) from `addr`, trusting `ca_pem`; the status line, or
/// the TLS error.
async fn https_get(addr: std::net::SocketAddr, ca_pem: &str, path: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.map_err(|e| chain(&e))?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.map_err(|e| chain(&e))?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await.map_err(|e| chain(&e))?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

/// The binary with HTTPS on the main port and mutual TLS on the cluster port: HTTPS
/// serves, a client trusting another CA refuses it, plain HTTP gets nothing, and the
/// node logs each refused cluster handshake with its reason (another CA, expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_https_and_logs_why_it_refuses_a_peer_certificate() {
    use crate::binary::{Running, port_of};
    use std::io::{BufRead as _, BufReader};
    let dir = std::env::temp_dir().join(format!("distro-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let good = ca("distro test CA");
    let (cert, key) = leaf(&good, false);
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.to_str().expect("utf-8").to_string()
    };
    let (cert_f, key_f, ca_f) = (
        write("cert.pem", &cert),
        write("key.pem", &key),
        write("ca.pem", &good.pem),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_distro-server"))
        .args(["--port", "0", "--bind", "127.0.0.1", "--log-level", "info"])
        .args(["--tls-cert", &cert_f, "--tls-key", &key_f])
        .args(["--cluster-tls-cert", &cert_f, "--cluster-tls-key", &key_f])
        .args(["--cluster-tls-ca", &ca_f])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start distro-server");
    let stdout = child.stdout.take().expect("piped stdout");
    let _running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next_line_with = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {what:?} within 30 s"));
            if line.contains(what) {
                return line;
            }
        }
    };
    let started = next_line_with("distro node started");
    let http: std::net::SocketAddr = ([127, 0, 0, 1], port_of(&started, "http")).into();
    let cluster = port_of(&started, "cluster");

    assert_eq!(
        https_get(http, &good.pem, "/health").await,
        Ok("HTTP/1.1 200 OK".to_string())
    );
    let other = ca("another CA");
    let e = https_get(http, &other.pem, "/health")
        .await
        .expect_err("the node's certificate is not of this CA");
    assert!(e.contains("UnknownIssuer"), "{e}");
    let plain = reqwest::Client::new()
        .get(format!("http://{http}/health"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP on the HTTPS port: {plain:?}");

    let (c, k) = leaf(&other, false);
    assert_ne!(
        probe(cluster, &good.pem, Some((&c, &k))).await,
        Err("ADMITTED".to_string())
    );
    let line = next_line_with("TLS handshake refused port=\"cluster\"");
    println!("{line}");
    assert!(line.contains("UnknownIssuer"), "{line}");
    let (c, k) = leaf(&good, true);
    assert_ne!(
        probe(cluster, &good.pem, Some((&c, &k))).await,
        Err("ADMITTED".to_string())
    );
    // (the channel may retry the first refused handshake: skip to the expired one)
    let line = next_line_with("expired");
    println!("{line}");
    assert!(
        line.contains("TLS handshake refused port=\"cluster\""),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// TLS on the SDK port (`--tls-cert`/`--tls-key`, ALPN h2): over TLS, with a client that
/// trusts the test CA, a Nacos unary call, the bi-stream's setup and a native query all
/// work; a client trusting another CA refuses the node, and a plaintext client gets no
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_port_serves_nacos_and_native_grpc_over_tls() {
    use crate::nacos::harness::{DEADLINE, payload};
    use distro_server::proto::nacos::bi_request_stream_client::BiRequestStreamClient;
    use distro_server::proto::nacos::request_client::RequestClient;
    use distro_server::tls::HttpTls;
    use distro_server::{Listeners, ServerConfig};
    use serde_json::json;
    let good = ca("distro test CA");
    let (cert, key) = leaf(&good, false);
    let mut config = ServerConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        sdk_port: Some(0),
        cluster_port: Some(0),
        http_tls: Some(HttpTls::from_pem(&cert, &key).expect("valid PEM")),
        ..ServerConfig::default()
    };
    let listeners = Listeners::bind(&config).expect("bind");
    config.port = listeners.http.local_addr().expect("addr").port();
    let server = distro_server::start(config, listeners)
        .await
        .expect("server starts");
    let port = server.sdk_addr().port();
    let endpoint = |trust: &str| {
        Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .expect("uri")
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(trust)))
            .expect("tls config")
            .timeout(Duration::from_secs(5))
    };
    let channel = endpoint(&good.pem).connect().await.expect("TLS connect");

    let reply = RequestClient::new(channel.clone())
        .request(payload("ServerCheckRequest", &json!({})))
        .await
        .expect("a unary reply over TLS")
        .into_inner();
    assert_eq!(
        reply.metadata.expect("metadata").r#type,
        "ServerCheckResponse"
    );

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(payload(
        "ConnectionSetupRequest",
        &json!({"clientVersion":"tls-test","labels":{},"abilityTable":{}}),
    ))
    .await
    .expect("send setup");
    let mut inbound = BiRequestStreamClient::new(channel.clone())
        .request_bi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("a bi-stream over TLS")
        .into_inner();
    let ack = tokio::time::timeout(DEADLINE, inbound.message())
        .await
        .expect("the setup is acknowledged in time")
        .expect("stream")
        .expect("a SetupAckRequest");
    assert_eq!(ack.metadata.expect("metadata").r#type, "SetupAckRequest");

    let answer = pb::registry_client::RegistryClient::new(channel)
        .query(pb::QueryRequest {
            service: Some(pb::ServiceRef {
                namespace: String::new(),
                group: String::new(),
                name: "svc".into(),
            }),
            clusters: Vec::new(),
            healthy_only: false,
        })
        .await
        .expect("a native query over TLS");
    assert!(answer.into_inner().instances.is_empty());

    let other = ca("another CA");
    let e = endpoint(&other.pem)
        .connect()
        .await
        .expect_err("the node's certificate is not of this CA");
    let e = chain(&e);
    assert!(e.contains("UnknownIssuer"), "{e}");

    let plain = async {
        let ch = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("uri")
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        RequestClient::new(ch)
            .request(payload("ServerCheckRequest", &json!({})))
            .await
            .map_err(|e| e.to_string())
    };
    assert!(plain.await.is_err(), "plaintext gRPC on the TLS SDK port");
    drop(tx);
    server.shutdown().await;
}
