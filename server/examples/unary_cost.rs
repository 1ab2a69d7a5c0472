//! The server's cost of one Nacos unary call, for an instruction count under Callgrind:
//! the SDK port's own transport (`--transport h2`, what the node serves) or the tonic
//! server it replaced (`--transport tonic`), on a thread of its own named `server`, with
//! the clients (`--connections` tonic channels, one `HealthCheckRequest` in flight each,
//! `--calls` in all) on another thread.
//!
//! ```text
//! cargo build --release -p distro-server --example unary_cost
//! valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.%p \
//!     target/release/examples/unary_cost --transport h2 --calls 2000
//! ```
//!
//! Callgrind writes one file per thread; the server thread's `totals:` over `--calls` is
//! the cost per call plus the start and stop spread over the calls: take two runs with
//! different `--calls` and divide the difference of their totals by the difference of
//! their calls.
//!
//! `--tls` puts TLS on the SDK port (as `--tls-cert`/`--tls-key` do; a certificate made at
//! start with rcgen, for 127.0.0.1) and the clients dial it with https, trusting it. What
//! TLS costs per call is the per-call figure with `--tls` minus the one without; what it
//! costs per new connection (the handshake), the same difference of the per-connection
//! figure: two runs with the same `--calls` and different `--connections`, the difference
//! of their totals over the difference of their connections. results/tls.md has the
//! figures and the commands.

use distro_core::{Config, MemberList, Node};
use distro_server::nacos::{NacosConfig, NacosFrontend};
use distro_server::proto::nacos::request_client::RequestClient;
use distro_server::proto::nacos::{Metadata, Payload};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut transport = "h2".to_string();
    let mut calls = 2000usize;
    let mut connections = 10usize;
    let mut tls = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
        };
        match a.as_str() {
            "--transport" => transport = value("--transport")?,
            "--calls" => calls = value("--calls")?.parse()?,
            "--connections" => connections = value("--connections")?.parse()?,
            "--tls" => tls = true,
            other => anyhow::bail!(
                "unknown argument {other}: --transport h2|tonic, --calls N, --connections N, --tls"
            ),
        }
    }
    if transport != "h2" && transport != "tonic" {
        anyhow::bail!("--transport must be h2 or tonic, not {transport}");
    }
    if connections == 0 || calls < connections {
        anyhow::bail!("--connections must be at least 1 and at most --calls");
    }
    if tls && transport != "h2" {
        anyhow::bail!("--tls is for --transport h2 (the SDK port the node serves)");
    }
    // A self-signed certificate for 127.0.0.1: the server's identity and the clients' root.
    let cert = if tls {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
        Some((c.cert.pem(), c.signing_key.serialize_pem()))
    } else {
        None
    };
    let server_cert = cert.clone();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::Builder::new().name("server".into()).spawn(
        move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let node = Arc::new(Node::new(
                    Config::default(),
                    MemberList::new("127.0.0.1:8848", &[])?,
                    distro_server::clock::system()(),
                )?);
                let config = NacosConfig {
                    detection_interval: Duration::from_secs(3600),
                    ..NacosConfig::default()
                };
                let nacos = Arc::new(NacosFrontend::new(
                    node,
                    config,
                    distro_server::clock::system(),
                )?);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?)?;
                let n = nacos.clone();
                let shutdown = async move {
                    let _ = stop_rx.await;
                    n.shutdown().await;
                };
                if transport == "h2" {
                    let mut port = distro_server::sdk_port::SdkPort::new(nacos);
                    if let Some((cert, key)) = server_cert {
                        let tls = distro_server::tls::HttpTls::from_pem(&cert, &key)
                            .map_err(anyhow::Error::msg)?;
                        port = port.tls(tls.sdk_acceptor().map_err(anyhow::Error::msg)?);
                    }
                    port.serve(listener, shutdown).await;
                } else {
                    tonic::transport::Server::builder()
                        .tcp_nodelay(true)
                        .http2_keepalive_interval(Some(Duration::from_secs(30)))
                        .add_service(nacos.request_service())
                        .add_service(nacos.bi_stream_service())
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            shutdown,
                        )
                        .await?;
                }
                Ok(())
            })
        },
    )?;
    let addr = addr_rx.recv()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answered = rt.block_on(async move {
        let mut tasks = Vec::new();
        for c in 0..connections {
            let channel = match &cert {
                Some((pem, _)) => {
                    let root = tonic::transport::Certificate::from_pem(pem);
                    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
                        .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(root))?
                }
                None => tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?,
            }
            .connect()
            .await?;
            let mut client = RequestClient::new(channel);
            let n = calls / connections + usize::from(c < calls % connections);
            tasks.push(tokio::spawn(async move {
                let mut ok = 0usize;
                for _ in 0..n {
                    let p = Payload {
                        metadata: Some(Metadata {
                            r#type: "HealthCheckRequest".into(),
                            client_ip: String::new(),
                            headers: Default::default(),
                        }),
                        body: Some(prost_types::Any {
                            type_url: String::new(),
                            value: b"{}".to_vec(),
                        }),
                    };
                    if client.request(p).await.is_ok() {
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut answered = 0;
        for t in tasks {
            answered += t.await?;
        }
        anyhow::Ok(answered)
    })?;
    let _ = stop_tx.send(());
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    println!("calls={calls} answered={answered} connections={connections} tls={tls}");
    Ok(())
}
