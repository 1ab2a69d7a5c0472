//! The cost of one loadgen query on both ends, for an instruction count under Callgrind,
//! through the same [`Protocol`] code a run uses (`--protocol native` or `nacos`): a
//! one-node [`LocalCluster`] (its runtime on the thread `node0`) and the load generator's
//! protocol client on this process's main thread (a current-thread runtime).
//!
//! `--clients` clients (10 by default) register in `--services` services (1 by default:
//! every query reads a service of `--clients` instances, as a run of 10k clients over 1,000
//! services reads about 10), then `--lanes` tasks (2) send `--calls` queries in all, one
//! in flight each, every query a batch of its own (as `--rate` sends them).
//!
//! ```text
//! cargo build --release -p loadgen --example query_cost
//! valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=cg.%p \
//!     target/release/examples/query_cost --protocol nacos --calls 2000
//! ```
//!
//! Take two runs with different `--calls` and divide the difference of a thread's totals
//! by the difference of the calls: the main thread's is the client's cost per query,
//! `node0`'s the server's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distro_server::{LocalCluster, ServerConfig};
use loadgen::population::Population;
use loadgen::protocol::nacos::NacosProtocol;
use loadgen::protocol::native::NativeProtocol;
use loadgen::protocol::{Batch, Context, Item, Kind, Outcome, Protocol};

#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

struct Args {
    protocol: String,
    calls: usize,
    clients: u32,
    services: u32,
    lanes: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        protocol: "native".to_owned(),
        calls: 2000,
        clients: 10,
        services: 1,
        lanes: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--protocol" => a.protocol = value()?,
            "--calls" => a.calls = value()?.parse()?,
            "--clients" => a.clients = value()?.parse()?,
            "--services" => a.services = value()?.parse()?,
            "--lanes" => a.lanes = value()?.parse()?,
            other => anyhow::bail!(
                "unknown argument {other}: --protocol native|nacos, --calls N, --clients N, \
                 --services N, --lanes N"
            ),
        }
    }
    anyhow::ensure!(
        a.clients >= 1 && a.services >= 1 && a.lanes >= 1,
        "--clients, --services and --lanes must be at least 1"
    );
    Ok(a)
}

fn item(client: u32, service: u32, kind: Kind) -> Item {
    Item {
        client,
        service,
        kind,
        attempt: 0,
        intended: Instant::now(),
    }
}

/// Registers every client, then sends the queries; returns the queries answered.
async fn drive<P: Protocol>(proto: Arc<P>, a: &Args) -> anyhow::Result<usize> {
    let mut register = Batch::new(0);
    register
        .items
        .extend((0..a.clients).map(|c| item(c, 0, Kind::Register)));
    let done = proto.execute(0, register).await;
    let failed = done.outcomes.iter().filter(|o| **o != Outcome::Ok).count();
    anyhow::ensure!(failed == 0, "{failed} registrations failed");
    let lanes: Vec<_> = (0..a.lanes)
        .map(|lane| {
            let proto = proto.clone();
            let n = a.calls / a.lanes + usize::from(lane < a.calls % a.lanes);
            let services = a.services;
            tokio::spawn(async move {
                let mut ok = 0;
                let mut batch = Batch::new(0);
                for k in 0..n {
                    batch.items.clear();
                    batch
                        .items
                        .push(item(0, (k as u32 + lane as u32) % services, Kind::Query));
                    batch = proto.execute(lane, batch).await;
                    ok += usize::from(batch.outcomes.first() == Some(&Outcome::Ok));
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for l in lanes {
        ok += l.await?;
    }
    Ok(ok)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answered = rt.block_on(async {
        let cluster = LocalCluster::start(1, ServerConfig::default(), 1).await?;
        let ctx = Context {
            targets: cluster.server_list(),
            population: Arc::new(
                Population::new(1, u64::from(a.clients), a.services, 1, 0)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            lanes: a.lanes,
            timeout: Duration::from_secs(10),
            query_batch: 1,
            tls: None,
            etcd_lease: Default::default(),
            zk_sessions: Default::default(),
        };
        let answered = match a.protocol.as_str() {
            "native" => drive(Arc::new(NativeProtocol::connect(&ctx).await?), &a).await?,
            "nacos" => drive(Arc::new(NacosProtocol::connect(&ctx).await?), &a).await?,
            other => anyhow::bail!("--protocol must be native or nacos, not {other}"),
        };
        cluster.shutdown().await;
        anyhow::Ok(answered)
    })?;
    println!(
        "calls={} answered={answered} protocol={} clients={} services={} lanes={}",
        a.calls, a.protocol, a.clients, a.services, a.lanes
    );
    Ok(())
}
