//! Registrations per second through the Nacos 2.x protocol (one real gRPC connection per
//! simulated SDK client) and through the native batched API, against an embedded 3-node
//! LocalCluster, in one process.
//!
//! ```text
//! cargo run --release -p loadgen --example nacos_register -- \
//!     --protocol nacos --connections 10000 --rounds 10 [--inflight 1] [--node-threads 1] \
//!     [--sdk-reuseport 1] [--transparent-huge-pages 1]
//! cargo run --release -p loadgen --example nacos_register -- \
//!     --protocol native --instances 100000 [--batch 500] [--channels 8] [--inflight 4]
//! ```
//!
//! Nacos: opens `--connections` connections (spread over the nodes and over source
//! addresses 127.0.0.2..), then each connection registers one instance in each of
//! `--rounds` services (one `InstanceRequest` per registration, `--inflight` at a time per
//! connection). Native: `--instances` ip:port clients registered in batches of `--batch`,
//! `--inflight` batches per channel. Both print the rate at which registrations were
//! acknowledged and the rate at which they were visible on all three nodes.
//!
//! `--sync-batch N`, `--sync-bytes N`, `--sync-inflight N` set the cluster's sync batch
//! limits (`batch_max_entries`, `batch_max_bytes`, `max_inflight_batches`) instead of the
//! defaults, to measure the replication pipeline's widths.
//!
//! `--client-threads N` (default 2) sets the runtime threads of the load side (the SDK
//! clients), which share the machine with the cluster.
//!
//! `--split 1` (Nacos only) runs the cluster in a child process: with both ends of every
//! connection in one process, 10,000 connections need more than a 20,000 open-file limit.

use distro_server::proto::distro as pb;
use distro_server::{LocalCluster, ServerConfig};
use loadgen::protocol::nacos::{
    ClientConfig, ConnectPlan, Dialer, Instance, NacosClient, ServiceName, connect_many,
    raise_nofile,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

// As the server binary: the cluster in this process allocates as it would in production.
#[global_allocator]
static GLOBAL: alloc_trim::Mimalloc = alloc_trim::Mimalloc;

struct Args {
    protocol: String,
    connections: usize,
    rounds: usize,
    inflight: usize,
    instances: usize,
    batch: usize,
    channels: usize,
    node_threads: usize,
    /// Runtime threads of the load (client) side.
    client_threads: usize,
    /// The nodes' SDK ports on one `SO_REUSEPORT` socket per node thread.
    sdk_reuseport: bool,
    /// The nodes' `reclaim_batch` (removed store entries a thread gathers per shard before
    /// they are freed).
    reclaim_batch: usize,
    /// Transparent huge pages for the process (and the `--split` child), as the binaries'
    /// `--transparent-huge-pages`; off by default like theirs.
    huge_pages: bool,
    /// Run the cluster in a child process (each process has its own open-file limit).
    split: bool,
    /// Child mode: run the cluster, print its addresses, exit when stdin closes.
    serve: bool,
    /// The cluster's sync batch limits (`None`: the protocol's defaults).
    sync_batch: Option<usize>,
    sync_bytes: Option<usize>,
    sync_inflight: Option<usize>,
}

impl Args {
    /// The cluster's configuration: the defaults with the `--sync-*` overrides.
    fn server_config(&self) -> ServerConfig {
        let mut c = ServerConfig::default();
        if let Some(n) = self.sync_batch {
            c.protocol.batch_max_entries = n;
        }
        if let Some(n) = self.sync_bytes {
            c.protocol.batch_max_bytes = n;
        }
        if let Some(n) = self.sync_inflight {
            c.protocol.max_inflight_batches = n;
        }
        c.protocol.reclaim_batch = self.reclaim_batch;
        c.sdk_reuseport = self.sdk_reuseport;
        c
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        protocol: "nacos".into(),
        connections: 1_000,
        rounds: 10,
        inflight: 1,
        instances: 100_000,
        batch: 500,
        channels: 8,
        node_threads: 1,
        client_threads: 2,
        sdk_reuseport: false,
        reclaim_batch: distro_core::config::DEFAULT_RECLAIM_BATCH,
        huge_pages: false,
        split: false,
        serve: false,
        sync_batch: None,
        sync_bytes: None,
        sync_inflight: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag}: a value is required"))?;
        let num = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag}: {value:?} is not a count: {e}"))
        };
        match flag.as_str() {
            "--protocol" => a.protocol = value.clone(),
            "--connections" => a.connections = num()?,
            "--rounds" => a.rounds = num()?,
            "--inflight" => a.inflight = num()?.max(1),
            "--instances" => a.instances = num()?,
            "--batch" => a.batch = num()?.max(1),
            "--channels" => a.channels = num()?.max(1),
            "--node-threads" => a.node_threads = num()?.max(1),
            "--client-threads" => a.client_threads = num()?.max(1),
            "--sdk-reuseport" => a.sdk_reuseport = num()? != 0,
            "--reclaim-batch" => a.reclaim_batch = num()?.max(1),
            "--transparent-huge-pages" => a.huge_pages = num()? != 0,
            "--split" => a.split = num()? != 0,
            "--serve" => a.serve = num()? != 0,
            "--sync-batch" => a.sync_batch = Some(num()?),
            "--sync-bytes" => a.sync_bytes = Some(num()?),
            "--sync-inflight" => a.sync_inflight = Some(num()?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // As the binaries by default: no 2 MiB page zeroed per first touch.
    alloc_trim::set_transparent_huge_pages(args.huge_pages)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

/// Child mode: the cluster, until stdin closes.
async fn serve(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let limit = raise_nofile(args.connections as u64 + 4_096)?;
    eprintln!("cluster process: {limit}");
    let cluster = LocalCluster::start(3, args.server_config(), args.node_threads).await?;
    // A node still loading its start-up snapshot turns Nacos clients away ("Server is
    // starting"): connections planned for it would fail over to the others, and the probe
    // of that node would find no connection to ask.
    loadgen::run::embedded::wait_loaded(&cluster).await?;
    let sdk: Vec<String> = (0..3).map(|i| cluster.sdk_addr(i).to_string()).collect();
    println!("READY {}", sdk.join(","));
    use std::io::Write as _;
    std::io::stdout().flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    })
    .await?;
    cluster.shutdown().await;
    Ok(())
}

/// Parent of `--split 1`: the cluster in a child process, load from this one.
async fn split(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::BufRead as _;
    let limit = raise_nofile(args.connections as u64 + 4_096)?;
    eprintln!("load process: {limit}");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--serve",
            "1",
            "--connections",
            &args.connections.to_string(),
        ])
        .args(["--node-threads", &args.node_threads.to_string()])
        .args([
            "--sdk-reuseport",
            if args.sdk_reuseport { "1" } else { "0" },
        ])
        .args(["--reclaim-batch", &args.reclaim_batch.to_string()])
        .args(
            [
                ("--sync-batch", args.sync_batch),
                ("--sync-bytes", args.sync_bytes),
                ("--sync-inflight", args.sync_inflight),
            ]
            .into_iter()
            .filter_map(|(flag, v)| v.map(|v| [flag.to_string(), v.to_string()]))
            .flatten(),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no child stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let servers: Vec<SocketAddr> = line
        .trim()
        .strip_prefix("READY ")
        .ok_or_else(|| format!("the cluster process said {line:?}"))?
        .split(',')
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let result = split_measure(args, &servers, child.id()).await;
    drop(child.stdin.take());
    let _ = child.wait();
    result
}

async fn split_measure(
    args: &Args,
    servers: &[SocketAddr],
    child: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    if args.protocol != "nacos" {
        return Err("--split 1 supports --protocol nacos".into());
    }
    let child_cpu = || cpu_seconds_of(&format!("/proc/{child}/stat"));
    let child_before = child_cpu();
    let (start, acked, connections, cpu_before) = nacos(args, servers).await?;
    let ack_secs = acked.duration_since(start).as_secs_f64();
    let expected = args.connections * args.rounds;
    // Visible everywhere: the services hold every instance on every node.
    let services: Vec<ServiceName> = (0..args.rounds)
        .map(|r| ServiceName::new(format!("bench-{r}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    for s in servers {
        let probe = connections
            .iter()
            .find(|c| c.server() == *s)
            .ok_or("no connection to a node")?;
        loop {
            let mut total = 0;
            for svc in &services {
                let r = probe.call(&probe.requests().query(svc, "", false)).await?;
                total += r.service_info()?.hosts.len();
            }
            if total >= expected {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{s} shows {total} of {expected} within 120 s").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let all_secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before + child_cpu() - child_before;
    println!(
        "protocol=nacos split=1 registrations={expected} acked_in={ack_secs:.3}s acked_per_s={:.0} \
         replicated_in={all_secs:.3}s replicated_per_s={:.0} cpu_us_per_registration={:.1}",
        expected as f64 / ack_secs,
        expected as f64 / all_secs,
        cpu * 1e6 / expected as f64
    );
    Ok(())
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.serve {
        return serve(&args).await;
    }
    if args.split {
        return split(&args).await;
    }
    // Both ends of every connection are in this process.
    let limit = raise_nofile(2 * args.connections as u64 + 4_096)?;
    eprintln!("{limit}");
    let cluster = LocalCluster::start(3, args.server_config(), args.node_threads).await?;
    // Loaded before the first connection, as in `serve`.
    loadgen::run::embedded::wait_loaded(&cluster).await?;
    let nodes: Vec<_> = (0..3).filter_map(|i| cluster.node(i)).collect();
    let expected = match args.protocol.as_str() {
        "nacos" => args.connections * args.rounds,
        "native" => args.instances,
        other => return Err(format!("--protocol: {other:?} is not nacos or native").into()),
    };
    let servers: Vec<SocketAddr> = (0..3).map(|i| cluster.sdk_addr(i)).collect();
    // The Nacos connections stay open until the run is measured.
    let (start, acked, _connections, cpu_before) = if args.protocol == "nacos" {
        nacos(&args, &servers).await?
    } else {
        native(&args, &servers).await?
    };
    let ack_secs = acked.duration_since(start).as_secs_f64();
    // Visible everywhere: every node holds every instance.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nodes
        .iter()
        .all(|n| n.registry().stats().instances >= expected)
    {
        if Instant::now() > deadline {
            let held: Vec<usize> = nodes
                .iter()
                .map(|n| n.registry().stats().instances)
                .collect();
            return Err(
                format!("not replicated within 120 s: nodes hold {held:?} of {expected}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let all_secs = start.elapsed().as_secs_f64();
    // CPU time of the whole process (cluster and clients) from the first registration sent.
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "protocol={} registrations={expected} acked_in={ack_secs:.3}s acked_per_s={:.0} \
         replicated_in={all_secs:.3}s replicated_per_s={:.0} cpu_us_per_registration={:.1}",
        args.protocol,
        expected as f64 / ack_secs,
        expected as f64 / all_secs,
        cpu * 1e6 / expected as f64
    );
    cluster.shutdown().await;
    Ok(())
}

/// (first send, last acknowledgement, connections to keep open, CPU seconds at the start).
type Measured = (Instant, Instant, Vec<Arc<NacosClient>>, f64);

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, 100 Hz ticks).
fn cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// User + system CPU seconds of the process whose `stat` file is `path`.
fn cpu_seconds_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// Connects, then registers; returns (first send, last acknowledgement, the connections).
async fn nacos(
    args: &Args,
    servers: &[SocketAddr],
) -> Result<Measured, Box<dyn std::error::Error>> {
    let config = Arc::new(ClientConfig::default());
    let dialer = Dialer::for_target(servers[0].ip(), config.connect_timeout);
    let t = Instant::now();
    let mut plan = ConnectPlan::new(servers.to_vec(), args.connections);
    plan.parallel = 512;
    let mut clients = Vec::with_capacity(args.connections);
    for (i, r) in connect_many(config, dialer, &plan)
        .await
        .into_iter()
        .enumerate()
    {
        clients.push(r.map_err(|e| format!("connection {i}: {e}"))?);
    }
    eprintln!(
        "{} connections in {:.2}s",
        clients.len(),
        t.elapsed().as_secs_f64()
    );
    // Requests are built before the clock starts.
    let services: Vec<ServiceName> = (0..args.rounds)
        .map(|r| ServiceName::new(format!("bench-{r}")))
        .collect();
    let work: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let inst = Instance::new(
                format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                8080,
            );
            let reqs: Vec<_> = services
                .iter()
                .map(|s| c.requests().register(s, &inst))
                .collect();
            (Arc::new(c), reqs)
        })
        .collect();
    let errors = Arc::new(AtomicU64::new(0));
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (client, reqs) in work {
        for lane in 0..args.inflight {
            let (client, reqs, errors) = (client.clone(), reqs.clone(), errors.clone());
            let step = args.inflight;
            tasks.spawn(async move {
                for r in reqs.iter().skip(lane).step_by(step) {
                    if client.call(r).await.is_err() {
                        errors.fetch_add(1, Relaxed);
                    }
                }
                client
            });
        }
    }
    let mut keep = Vec::new();
    while let Some(done) = tasks.join_next().await {
        keep.push(done?);
    }
    let acked = Instant::now();
    let e = errors.load(Relaxed);
    if e > 0 {
        return Err(format!("{e} registrations failed").into());
    }
    Ok((start, acked, keep, cpu))
}

/// Registers `--instances` ip:port clients in batches; returns (first send, last ack).
async fn native(
    args: &Args,
    servers: &[SocketAddr],
) -> Result<Measured, Box<dyn std::error::Error>> {
    let mut channels = Vec::new();
    for k in 0..args.channels {
        let ch = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            servers[k % servers.len()]
        ))?
        .tcp_nodelay(true)
        .connect()
        .await?;
        channels.push(pb::registry_client::RegistryClient::new(ch));
    }
    let batches: Vec<pb::RegisterRequest> = (0..args.instances)
        .collect::<Vec<_>>()
        .chunks(args.batch)
        .map(|chunk| pb::RegisterRequest {
            registrations: chunk
                .iter()
                .map(|&i| pb::Registration {
                    service: Some(pb::ServiceRef {
                        namespace: String::new(),
                        group: String::new(),
                        name: format!("native-{}", i % 100),
                    }),
                    instance: Some(pb::Instance {
                        ip: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                        port: 8080,
                        weight: 1.0,
                        healthy: true,
                        enabled: true,
                        cluster: "DEFAULT".into(),
                        ..Default::default()
                    }),
                })
                .collect(),
        })
        .collect();
    let queue = Arc::new(parking_lot::Mutex::new(batches));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for ch in &channels {
        for _ in 0..args.inflight {
            let (mut ch, queue, failed) = (ch.clone(), queue.clone(), failed.clone());
            tasks.spawn(async move {
                loop {
                    let Some(batch) = queue.lock().pop() else {
                        return;
                    };
                    match ch.register(batch).await {
                        Ok(r) => {
                            let bad = r.get_ref().results.iter().filter(|x| x.code != 200).count();
                            failed.fetch_add(bad as u64, Relaxed);
                        }
                        Err(_) => {
                            failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    let acked = Instant::now();
    let f = failed.load(Relaxed);
    if f > 0 {
        return Err(format!("{f} native registrations failed").into());
    }
    Ok((start, acked, Vec::new(), cpu))
}
