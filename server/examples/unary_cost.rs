//! The server's cost of one Nacos unary call, for an instruction count under Callgrind:
//! the SDK port's own transport (`--transport h2`: its HTTP/2 on h2wire, what the node
//! serves) or the tonic server it replaced (`--transport tonic`), on a thread of its own
//! named `server`, with the clients (`--connections` tonic channels, one call in flight
//! each, `--calls` in all) on another thread.
//!
//! `--request` picks the call: `health` (`HealthCheckRequest`, the default), `register`
//! (`InstanceRequest` registering the same instance in one of 8 services in turn, the JSON
//! loadgen's Nacos client sends) or `query` (`ServiceQueryRequest` of a service with one
//! instance, answered from the answer cache). For `register` and `query` each connection
//! first sets itself up as an SDK does (`ServerCheckRequest`, `ConnectionSetupRequest` on
//! the bi-stream, wait for `SetupAckRequest`) and registers the queried instance; that is
//! per-connection work, the same for both `--calls`, so the difference leaves it out.
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
use distro_server::proto::nacos::bi_request_stream_client::BiRequestStreamClient;
use distro_server::proto::nacos::request_client::RequestClient;
use distro_server::proto::nacos::{Metadata, Payload};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

fn main() -> anyhow::Result<()> {
    let mut transport = "h2".to_string();
    let mut calls = 2000usize;
    let mut connections = 10usize;
    let mut tls = false;
    let mut request = "health".to_string();
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
            "--request" => request = value("--request")?,
            other => anyhow::bail!(
                "unknown argument {other}: --transport h2|tonic, --calls N, --connections N, \
                 --tls, --request health|register|query"
            ),
        }
    }
    if transport != "h2" && transport != "tonic" {
        anyhow::bail!("--transport must be h2 or tonic, not {transport}");
    }
    if connections == 0 || calls < connections {
        anyhow::bail!("--connections must be at least 1 and at most --calls");
    }
    if !["health", "register", "query"].contains(&request.as_str()) {
        anyhow::bail!("--request must be health, register or query, not {request}");
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
    let label = request.clone();
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
            let mut client = RequestClient::new(channel.clone());
            if request != "health" {
                set_up(&mut client, BiRequestStreamClient::new(channel), c).await?;
            }
            let n = calls / connections + usize::from(c < calls % connections);
            let request = request.clone();
            tasks.push(tokio::spawn(async move {
                let mut ok = 0usize;
                for k in 0..n {
                    let p = match request.as_str() {
                        "register" => register(c, k % 8),
                        "query" => query(),
                        _ => payload("HealthCheckRequest", "", b"{}".to_vec()),
                    };
                    if client
                        .request(p)
                        .await
                        .is_ok_and(|r| succeeded(r.get_ref()))
                    {
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
        // Stopped while this runtime still runs, so that the clients see their streams end.
        let _ = stop_tx.send(());
        tokio::task::spawn_blocking(move || server.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
        anyhow::Ok(answered)
    })?;
    println!(
        "calls={calls} answered={answered} connections={connections} tls={tls} request={label}"
    );
    Ok(())
}

/// A request payload of class `type_name` from `client_ip` around `json`.
fn payload(type_name: &str, client_ip: &str, json: Vec<u8>) -> Payload {
    Payload {
        metadata: Some(Metadata {
            r#type: type_name.into(),
            client_ip: client_ip.into(),
            headers: Default::default(),
        }),
        body: Some(prost_types::Any {
            type_url: String::new(),
            value: json,
        }),
    }
}

/// Whether a reply is a success (`resultCode` 200), not an `ErrorResponse`.
fn succeeded(reply: &Payload) -> bool {
    reply
        .body
        .as_ref()
        .is_some_and(|b| b.value.starts_with(br#"{"resultCode":200,"#))
}

/// Connection `c`'s registration of its instance in service `unary-cost-{service}`, the
/// body loadgen's Nacos client sends (`loadgen/src/protocol/nacos/message.rs`).
fn register(c: usize, service: usize) -> Payload {
    let json = format!(
        r#"{{"headers":{{}},"namespace":"public","serviceName":"unary-cost-{service}","groupName":"DEFAULT_GROUP","type":"registerInstance","instance":{{"ip":"10.0.{}.{}","port":8080,"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,"clusterName":"DEFAULT","metadata":{{}}}},"module":"naming"}}"#,
        c >> 8,
        c & 255
    );
    payload("InstanceRequest", "127.0.0.1", json.into_bytes())
}

/// The query of service `unary-cost-0` (every connection registers in it first).
fn query() -> Payload {
    let json = br#"{"headers":{},"namespace":"public","serviceName":"unary-cost-0","groupName":"DEFAULT_GROUP","cluster":"","healthyOnly":false,"udpPort":0,"module":"naming"}"#;
    payload("ServiceQueryRequest", "127.0.0.1", json.to_vec())
}

/// Sets connection `c` up as an SDK does (server check, setup on the bi-stream, wait for
/// the server's `SetupAckRequest`), then registers its instance in `unary-cost-0`.
async fn set_up(
    client: &mut RequestClient<tonic::transport::Channel>,
    mut bi: BiRequestStreamClient<tonic::transport::Channel>,
    c: usize,
) -> anyhow::Result<()> {
    let check = payload(
        "ServerCheckRequest",
        "127.0.0.1",
        br#"{"headers":{},"module":"internal"}"#.to_vec(),
    );
    client.request(check).await?;
    let setup = payload(
        "ConnectionSetupRequest",
        "127.0.0.1",
        br#"{"headers":{},"clientVersion":"unary-cost","labels":{},"abilityTable":{},"tenant":"public","module":"internal"}"#
            .to_vec(),
    );
    // The stream stays open (its sender is kept in the spawned task) as the connection's.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(setup).await?;
    let mut inbound = bi
        .request_bi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let ack = inbound.message().await?;
    anyhow::ensure!(
        ack.and_then(|a| a.metadata)
            .is_some_and(|m| m.r#type == "SetupAckRequest"),
        "connection {c}: no SetupAckRequest"
    );
    tokio::spawn(async move {
        let _tx = tx;
        while let Ok(Some(_)) = inbound.message().await {}
    });
    let r = client.request(register(c, 0)).await?;
    anyhow::ensure!(
        succeeded(r.get_ref()),
        "connection {c}: the first registration failed"
    );
    Ok(())
}
