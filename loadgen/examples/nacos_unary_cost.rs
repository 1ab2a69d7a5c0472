//! The cost of one Nacos unary call on both ends of loadgen's Nacos client, for an
//! instruction count under Callgrind: a one-node [`LocalCluster`] (its runtime on the
//! thread `node0`) and `--connections` [`NacosClient`]s on this process's main thread (a
//! current-thread runtime), one call in flight each, `--calls` in all.
//!
//! ```text
//! cargo build --release -p loadgen --example nacos_unary_cost
//! valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.%p \
//!     target/release/examples/nacos_unary_cost --request register --calls 2000
//! ```
//!
//! `--request register` (the default) registers each connection's instance in one of 8
//! services in turn, the `InstanceRequest` of `nacos_register`; `query` reads a service of
//! one instance (`ServiceQueryRequest`, answered from the answer cache); `health` sends
//! `HealthCheckRequest`s. As with `server/examples/unary_cost.rs`, take two runs with
//! different `--calls` and divide the difference of a thread's totals by the difference
//! of the calls: the main thread's is the client's cost per call (the calling task and
//! the client's HTTP/2 connection task), `node0`'s the server's (the SDK connection's
//! task; without replication: the cluster has one node).

use distro_server::{LocalCluster, ServerConfig};
use loadgen::protocol::nacos::{ClientConfig, Dialer, Instance, NacosClient, ServiceName};

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

fn main() -> anyhow::Result<()> {
    let mut request = "register".to_string();
    let mut calls = 2000usize;
    let mut connections = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
        };
        match a.as_str() {
            "--request" => request = value("--request")?,
            "--calls" => calls = value("--calls")?.parse()?,
            "--connections" => connections = value("--connections")?.parse()?,
            other => anyhow::bail!(
                "unknown argument {other}: --request register|query|health, --calls N, \
                 --connections N"
            ),
        }
    }
    if !["register", "query", "health"].contains(&request.as_str()) {
        anyhow::bail!("--request must be register, query or health, not {request}");
    }
    if connections == 0 || calls < connections {
        anyhow::bail!("--connections must be at least 1 and at most --calls");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answered = rt.block_on(async {
        let cluster = LocalCluster::start(1, ServerConfig::default(), 1).await?;
        let server = cluster.sdk_addr(0);
        let config = ClientConfig::default();
        let dialer = Dialer::for_target(server.ip(), config.connect_timeout);
        let services: Vec<ServiceName> = (0..8)
            .map(|s| ServiceName::new(format!("unary-cost-{s}")))
            .collect();
        let mut tasks = Vec::new();
        for c in 0..connections {
            let client = NacosClient::connect(&config, &dialer, server, c).await?;
            let instance = Instance::new(format!("10.0.{}.{}", c >> 8, c & 255), 8080);
            let prepared: Vec<_> = match request.as_str() {
                "register" => services
                    .iter()
                    .map(|s| client.requests().register(s, &instance))
                    .collect(),
                "query" => {
                    // The queried service has this connection's instance.
                    client
                        .call(&client.requests().register(&services[0], &instance))
                        .await?;
                    vec![client.requests().query(&services[0], "", false)]
                }
                _ => vec![client.health_check().clone()],
            };
            let n = calls / connections + usize::from(c < calls % connections);
            tasks.push(tokio::spawn(async move {
                let mut ok = 0usize;
                for r in prepared.iter().cycle().take(n) {
                    if client.call(r).await.is_ok() {
                        ok += 1;
                    }
                }
                (client, ok)
            }));
        }
        let mut answered = 0;
        let mut clients = Vec::new();
        for t in tasks {
            let (client, ok) = t.await?;
            answered += ok;
            clients.push(client);
        }
        drop(clients);
        cluster.shutdown().await;
        anyhow::Ok(answered)
    })?;
    println!("calls={calls} answered={answered} connections={connections} request={request}");
    Ok(())
}
