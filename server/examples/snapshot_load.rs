//! Measures a snapshot load of a large cluster: fill a 3-node LocalCluster with N ip:port
//! clients through the native API, kill one node, restart it empty and time its load.
//!
//! ```sh
//! cargo run --release -p distro-server --example snapshot_load -- 1000000
//! ```
//!
//! Prints the registration rate, the time until every node held every client, the load
//! (clients, bytes, chunks, seconds, from the node's own log line) and the process RSS.

use distro_server::proto::distro as pb;
use distro_server::{LocalCluster, ServerConfig};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const BATCH: usize = 1_000;
const STREAMS: usize = 8;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn registration(k: usize) -> pb::Registration {
    pb::Registration {
        service: Some(pb::ServiceRef {
            name: format!("service-{}", k % 1000),
            ..Default::default()
        }),
        instance: Some(pb::Instance {
            ip: format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255),
            port: 8080 + (k >> 24) as u32,
            weight: 1.0,
            healthy: true,
            enabled: true,
            ..Default::default()
        }),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_target(false)
        .with_ansi(false)
        .init();
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.replace('_', "").parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let base_rss = rss_mib();
    // These clients send no heartbeats: keep their instances for the whole measurement
    // (the default would mark them unhealthy after 15 s and delete them after 30 s).
    let mut config = ServerConfig::default();
    config.protocol.heartbeat_timeout = 3_600_000;
    config.protocol.delete_timeout = 3_600_000;
    let cluster = LocalCluster::start(3, config, 2).await?;
    let nodes: Vec<_> = (0..3).filter_map(|i| cluster.node(i)).collect();
    wait_for("loaded", Duration::from_secs(30), || {
        nodes.iter().all(|n| n.is_loaded())
    })
    .await;

    let start = Instant::now();
    let mut tasks = Vec::new();
    let retried = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for s in 0..STREAMS {
        let addr = format!("http://{}", cluster.sdk_addr(s % 3));
        let retried = retried.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = pb::registry_client::RegistryClient::connect(addr)
                .await?
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let mut i = s * BATCH;
            while i < n {
                let end = (i + BATCH).min(n);
                let mut pending: Vec<pb::Registration> = (i..end).map(registration).collect();
                // Retry what the cluster answers with a retryable code (503: owner
                // unreachable under overload; 421: views diverge), as clients do.
                let mut attempt = 0;
                while !pending.is_empty() {
                    let request = pb::RegisterRequest {
                        registrations: pending.clone(),
                    };
                    let r = c.register(request).await?.into_inner();
                    let mut again = Vec::new();
                    for (item, res) in pending.into_iter().zip(&r.results) {
                        match res.code {
                            200 => {}
                            421 | 503 => again.push(item),
                            _ => anyhow::bail!("registration failed: {} {}", res.code, res.message),
                        }
                    }
                    retried.fetch_add(again.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    pending = again;
                    attempt += 1;
                    anyhow::ensure!(attempt < 100, "registrations kept failing");
                    if !pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                i += BATCH * STREAMS;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let acked = start.elapsed();
    let everywhere = wait_for(
        "every node holds every client",
        Duration::from_secs(300),
        || nodes.iter().all(|x| x.registry().stats().clients == n),
    )
    .await;
    let rss_full = rss_mib();
    println!(
        "registered {n} clients in {:.2} s ({:.0}/s acknowledged, {} retried after 503/421); on every node {:.2} s later; RSS {:.0} MiB (+{:.0} MiB for 3 nodes, {:.0} bytes per instance per node)",
        acked.as_secs_f64(),
        n as f64 / acked.as_secs_f64(),
        retried.load(std::sync::atomic::Ordering::Relaxed),
        everywhere.as_secs_f64(),
        rss_full,
        rss_full - base_rss,
        (rss_full - base_rss) * 1024.0 * 1024.0 / 3.0 / n as f64
    );

    cluster.kill(2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restart = Instant::now();
    cluster.restart(2).await?;
    let node = cluster.node(2).expect("restarted");
    let load = wait_for("the restarted node loads", Duration::from_secs(300), || {
        node.is_loaded()
    })
    .await;
    println!(
        "restarted node loaded {} clients in {:.2} s (restart to ready: {:.2} s); see the 'snapshot loaded' line above for bytes and chunks",
        node.registry().stats().clients,
        load.as_secs_f64(),
        restart.elapsed().as_secs_f64()
    );
    cluster.shutdown().await;
    Ok(())
}
