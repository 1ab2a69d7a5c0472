//! Memory under hostile input: N clients each register a random service name (with a
//! random metadata key and value) through the native API of a standalone node, then
//! deregister; the process's RSS and the node's interned names are printed before, at the
//! peak and once the tombstones and empty services have expired.
//!
//! ```sh
//! cargo run --release -p distro-server --example name_churn -- 1000000 [seed] [reclaim-batch]
//! ```
//!
//! The node keeps deletions' tombstones and empty services for 1 s here (60 s by default)
//! so that the run takes seconds, and sends no heartbeats (their timeouts are an hour).
//! Runs its runtime as `distro-server` does, with the park hook that gives the allocator's
//! free pages back after a burst (`alloc-trim`). What stays after is what does not shrink:
//! the service map and the store's client maps, sized for the peak (the interner's and
//! the tombstone tables shrink; the last line but two says what they are sized for). The
//! RSS each second after the deregistrations, and 10 s later, shows when memory came back.
//! Figures: `results/memory.md`.
//!
//! With `NAME_CHURN_MAX_GROWTH_MIB=M` set, the run fails (exit 1) unless every name was
//! reclaimed and the RSS 10 s after is within M MiB of the RSS before: `.ci/run` checks a
//! run of 1,000,000 names that way.

use distro_server::proto::distro as pb;
use distro_server::{Listeners, ServerConfig};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

const BATCH: usize = 1_000;

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

fn registration(k: usize, rng: &mut distro_core::rng::SplitMix64) -> pb::Registration {
    pb::Registration {
        service: Some(pb::ServiceRef {
            namespace: String::new(),
            group: String::new(),
            name: format!("churn-{:016x}", rng.next_u64()),
        }),
        instance: Some(pb::Instance {
            ip: format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255),
            port: 80 + (k >> 24) as u32,
            weight: 1.0,
            healthy: true,
            enabled: true,
            metadata: [(
                format!("k-{:x}", rng.next_u64()),
                format!("v-{:x}", rng.next_u64()),
            )]
            .into(),
            ..Default::default()
        }),
    }
}

#[derive(Clone, Copy, Debug)]
enum Write {
    Register,
    Deregister,
}

/// Registers (or deregisters) the `n` clients of `seed`, in batches of [`BATCH`].
async fn send_all(
    client: &mut pb::registry_client::RegistryClient<tonic::transport::Channel>,
    n: usize,
    seed: u64,
    write: Write,
) -> anyhow::Result<()> {
    let mut rng = distro_core::rng::SplitMix64::new(seed);
    for k in (0..n).step_by(BATCH) {
        let registrations: Vec<pb::Registration> = (k..(k + BATCH).min(n))
            .map(|i| registration(i, &mut rng))
            .collect();
        let r = match write {
            Write::Register => client.register(pb::RegisterRequest { registrations }).await,
            Write::Deregister => {
                client
                    .deregister(pb::DeregisterRequest { registrations })
                    .await
            }
        }?
        .into_inner();
        if let Some(bad) = r.results.iter().find(|r| r.code != 200) {
            anyhow::bail!("{write:?} refused: {bad:?}");
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // As distro-server builds its runtime: an idle worker gives the allocator's free
    // pages back once after the store shrank.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(alloc_trim::collect_if_requested)
        .build()?
        .block_on(churn())
}

async fn churn() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|s| s.replace('_', "").parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let reclaim_batch: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(distro_core::config::DEFAULT_RECLAIM_BATCH);
    let mut config = ServerConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        sdk_port: Some(0),
        cluster_port: Some(0),
        ..ServerConfig::default()
    };
    config.protocol.peer_timeout = 1_000;
    config.protocol.tombstone_ttl = 1_000;
    config.protocol.empty_service_ttl = 1_000;
    config.protocol.health_check_interval = 200;
    // No heartbeats are sent: without these, on a slow machine the first clients would
    // turn unhealthy and expire before the last registered, and the peak would not hold
    // all of them.
    config.protocol.heartbeat_timeout = 3_600_000;
    config.protocol.delete_timeout = 3_600_000;
    config.protocol.reclaim_batch = reclaim_batch;
    config.protocol.max_clients = n.max(1);
    config.protocol.max_services_per_namespace = n.max(1);
    let listeners = Listeners::bind(&config)?;
    config.port = listeners.http.local_addr()?.port();
    let shards = config.protocol.shards;
    let node = distro_server::start(config, listeners).await?;
    let registry = node.node().registry();
    let mut client =
        pb::registry_client::RegistryClient::connect(format!("http://{}", node.sdk_addr()))
            .await?
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
    let base_rss = rss_mib();
    let base_names = registry.interner().len();
    println!(
        "name_churn: {n} clients, one random service name each, seed {seed}, {shards} shards, \
         reclaim batch {reclaim_batch}"
    );
    println!("before:  RSS {base_rss:8.1} MiB, {base_names} names interned");

    let started = Instant::now();
    send_all(&mut client, n, seed, Write::Register).await?;
    let registered = started.elapsed();
    let peak_rss = rss_mib();
    let peak_names = registry.interner().len();
    println!(
        "peak:    RSS {peak_rss:8.1} MiB, {peak_names} names interned ({:.0} B per client; registered in {:.1} s)",
        (peak_rss - base_rss) * 1_048_576.0 / n as f64,
        registered.as_secs_f64()
    );

    // The same sequence again, to deregister what was registered.
    send_all(&mut client, n, seed, Write::Deregister).await?;
    let deregistered = Instant::now();
    // Wait for the tombstones and empty services to expire and the names to be reclaimed:
    // until no service or tombstone is held and the name count has not fallen for 3 s (or
    // 180 s pass; on a busy machine one collection round of a million services takes
    // seconds, so a count that stopped falling for 3 s alone is not the end).
    let mut last = usize::MAX;
    let mut steady_since = Instant::now();
    let mut series = Vec::new();
    loop {
        if series.len() < 1 + deregistered.elapsed().as_secs() as usize {
            series.push(format!("{:.0}", rss_mib()));
        }
        let names = registry.interner().len();
        if names < last {
            last = names;
            steady_since = Instant::now();
        }
        let stats = registry.stats();
        let expired = stats.services == 0 && stats.tombstones == 0;
        if (expired && steady_since.elapsed() > Duration::from_secs(3))
            || deregistered.elapsed() > Duration::from_secs(180)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_rss = rss_mib();
    let stats = registry.stats();
    println!(
        "after:   RSS {after_rss:8.1} MiB, {last} names interned ({:.1} % of the peak's growth left; \
         {} clients, {} services, {} tombstones held; the interner sized for {} names, the \
         tombstone tables for {}; {:.0} s after the deregistrations)",
        100.0 * (after_rss - base_rss) / (peak_rss - base_rss).max(f64::MIN_POSITIVE),
        stats.clients,
        stats.services,
        stats.tombstones,
        registry.interner().capacity(),
        registry.tombstone_capacity(),
        deregistered.elapsed().as_secs_f64()
    );
    println!(
        "         RSS each second after the deregistrations, MiB: {}",
        series.join(" ")
    );
    // An idle node a while later: what a worker parking, a later collection round or
    // mimalloc's delayed purge still gave back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_rss = rss_mib();
    println!("idle:    RSS {idle_rss:8.1} MiB 10 s later");
    node.shutdown().await;
    if let Some(max) = std::env::var_os("NAME_CHURN_MAX_GROWTH_MIB") {
        let max: f64 = max
            .to_str()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("NAME_CHURN_MAX_GROWTH_MIB: not a number of MiB"))?;
        let growth = idle_rss - base_rss;
        anyhow::ensure!(
            last == base_names,
            "{} names still interned after the churn (before: {base_names})",
            last
        );
        anyhow::ensure!(
            growth <= max,
            "RSS 10 s after the churn is {growth:.1} MiB above the start, over the {max} MiB allowed"
        );
        println!(
            "check:   RSS {growth:.1} MiB above the start (at most {max}), every name reclaimed"
        );
    }
    Ok(())
}
