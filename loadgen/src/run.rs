//! Running a scenario: a whole run, from the cluster to the report.
//!
//! [`run`] starts an embedded [`LocalCluster`] when no targets are given, connects the
//! protocol, starts the watchers, the marker task and the lanes, moves through the phases
//! (register, then hold for `duration`, then stop), waits for the last probe and for the
//! nodes to agree, and writes the report. The run's figures leave out `warmup`.
//!
//! The parts: [`driver`] holds the lanes that simulate the clients, [`markers`] the
//! convergence probes and push measurements, [`chaos`] the faults applied to the
//! embedded cluster during a run (`--chaos`), [`cluster_process`] the embedded cluster in
//! a child process (`--cluster-process`), [`embedded`] its nodes (wherever they run).

pub mod chaos;
pub mod cluster;
pub mod cluster_process;
pub mod config;
pub mod driver;
pub mod embedded;
pub mod markers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use distro_server::LocalCluster;
use tokio::sync::watch;

use crate::measure::op::Op;
use crate::measure::recorder::{Recorder, RecorderConfig};
use crate::population::Population;
use crate::protocol::connect_phase::ConnectReport;
use crate::protocol::native::NativeProtocol;
use crate::protocol::{Context, Protocol};
use crate::report::faults::FaultSummary;
use crate::report::summary::Summary;
use crate::{INTERVAL_LOG_FILE, Progress, RunInfo};
use chaos::{Chaos, run_schedule};
pub use cluster::ClusterRef;
use cluster::Embedded;
pub use config::{ProtocolKind, RunConfig, Scenario};
use driver::{LaneConfig, Phase, Shared, run_lane};
use markers::{MarkerConfig, Tracker, Watcher, run_markers};

/// The connect phase's figures in a run directory (protocols with a connection per client).
pub const CONNECT_FILE: &str = "connect.json";

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The summary written.
    pub summary: Summary,
    /// Where the report is.
    pub out_dir: PathBuf,
    /// `--chaos`: each fault's figures (also in the summary).
    pub faults: Vec<FaultSummary>,
    /// Embedded cluster: whether every node held the same state at the end, and how long
    /// after the load stopped they agreed.
    pub nodes_converged: Option<(bool, Duration)>,
    /// Instances each node held at the end (embedded cluster).
    pub node_instances: Vec<usize>,
    /// Items retried on another node.
    pub failovers: u64,
    /// Times a lane halved its window to a node (backpressure).
    pub window_cuts: u64,
    /// Clients registered at the end.
    pub registered: i64,
    /// How long the registration phase took (from the start, warm-up included), if it
    /// ended.
    pub registration: Option<Duration>,
    /// The connect phase, for a protocol with a connection per client.
    pub connect: Option<ConnectReport>,
}

impl RunOutcome {
    /// No errors, every probe converged (and at least one measured), nodes agree, and every
    /// fault (`--chaos`) was applied, converged and lost no registration.
    pub fn is_clean(&self) -> bool {
        let s = &self.summary;
        s.totals.errors == 0
            && s.convergence.unconverged == 0
            && s.convergence.count > 0
            && self.nodes_converged.is_none_or(|(ok, _)| ok)
            && self.faults.iter().all(FaultSummary::is_clean)
    }

    /// Lines printed after the summary table.
    pub fn epilogue(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.connect {
            s.push_str(&c.line());
        }
        if let Some(t) = self.registration {
            s.push_str(&format!(
                "registration phase: {:.2} s, {:.0} clients/s\n",
                t.as_secs_f64(),
                self.registered.max(0) as f64 / t.as_secs_f64().max(1e-9)
            ));
        }
        s.push_str(&format!(
            "clients registered at the end: {}   failovers: {}   window cuts: {}\n",
            self.registered, self.failovers, self.window_cuts
        ));
        match self.nodes_converged {
            Some((true, t)) => s.push_str(&format!(
                "nodes converged: yes, {:.0} ms after the load stopped (instances per node: {:?})\n",
                t.as_secs_f64() * 1e3,
                self.node_instances
            )),
            Some((false, t)) => s.push_str(&format!(
                "nodes converged: NO within {:.1} s (instances per node: {:?})\n",
                t.as_secs_f64(),
                self.node_instances
            )),
            None => s.push_str("nodes converged: not checked (external cluster; see the probes)\n"),
        }
        s.push_str(&format!(
            "report: {}\n",
            self.out_dir.join(crate::REPORT_FILE).display()
        ));
        s
    }
}

/// Runs `config`. See the module documentation.
pub async fn run(config: RunConfig) -> anyhow::Result<RunOutcome> {
    config.validate()?;
    let population = Arc::new(
        Population::new(
            config.seed,
            config.clients,
            config.services,
            config.instances_per_client,
            config.shard.index,
        )
        .map_err(anyhow::Error::msg)?,
    );
    let cluster = if config.targets.is_empty() {
        Some(Embedded::start(&config, u64::from(population.clients())).await?)
    } else {
        None
    };
    let targets = match &cluster {
        Some(c) => c.targets(),
        None => config.targets.clone(),
    };
    let ctx = Context {
        targets,
        population,
        lanes: config.connections,
        timeout: config.timeout,
    };
    let nodes = cluster.as_ref().map(Embedded::as_ref);
    let result = match config.protocol {
        ProtocolKind::Native => match NativeProtocol::connect(&ctx).await {
            Ok(proto) => run_with_cluster(Arc::new(proto), &ctx, &config, nodes).await,
            Err(e) => Err(e),
        },
        ProtocolKind::Nacos => match crate::protocol::nacos::NacosProtocol::connect(&ctx).await {
            Ok(proto) => run_with_cluster(Arc::new(proto), &ctx, &config, nodes).await,
            Err(e) => Err(e),
        },
    };
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    result
}

/// Runs with a connected protocol.
pub async fn run_with<P: Protocol>(
    proto: Arc<P>,
    ctx: &Context,
    config: &RunConfig,
    cluster: Option<&LocalCluster>,
) -> anyhow::Result<RunOutcome> {
    run_with_cluster(proto, ctx, config, cluster.map(ClusterRef::from)).await
}

/// Runs with a connected protocol against `cluster` (in this process or a child one), or an
/// external cluster (`None`).
pub async fn run_with_cluster<P: Protocol>(
    proto: Arc<P>,
    ctx: &Context,
    config: &RunConfig,
    cluster: Option<ClusterRef<'_>>,
) -> anyhow::Result<RunOutcome> {
    let nodes = ctx.targets.len();
    let pop = ctx.population.clone();
    let slice = config.shard.range(pop.clients());
    let slice_len = u64::from(slice.end - slice.start);
    println!(
        "loadgen: scenario {} protocol {} clients {} (shard {}: {} clients) seed {} against {}",
        config.scenario.name(),
        proto.name(),
        config.clients,
        config.shard,
        slice_len,
        config.seed,
        match cluster {
            Some(c) => c.describe(nodes, &ctx.targets),
            None => ctx.targets.join(","),
        }
    );
    let started = SystemTime::now();
    let out_dir = config.out.clone().unwrap_or_else(|| {
        Path::new("results/runs").join(crate::run_dir_name(started, config.scenario.name()))
    });
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_dir.display()))?;

    let shared = Arc::new(Shared::new(slice.clone(), nodes));
    let (phase_tx, phase_rx) = watch::channel(Phase::Register);
    let lanes = config.connections.max(1);

    // Watchers: one per node for probes (and pushes), plus extra push subscribers.
    let push = config.scenario == Scenario::Push;
    let subs = if push { config.subscribers.max(1) } else { 1 };
    anyhow::ensure!(
        nodes * subs <= 64,
        "--subscribers: at most 64 subscriber streams in all ({nodes} nodes x {subs})"
    );
    let push_services: Vec<u32> = if push {
        (0..config.watch_services.min(pop.services())).collect()
    } else {
        Vec::new()
    };
    let mut watchers = Vec::new();
    let mut watch_sets = Vec::new();
    for node in 0..nodes {
        for j in 0..subs {
            watchers.push(Watcher {
                node,
                probe: j == 0,
            });
            let mut set = push_services.clone();
            if j == 0 {
                set.push(pop.probe_service());
            }
            watch_sets.push(set);
        }
    }
    let tracker = Arc::new(Tracker::new(
        watchers.clone(),
        shared.clone(),
        config.converge_timeout,
    ));
    let mut watcher_tasks = Vec::new();
    for (w, (watcher, set)) in watchers.iter().zip(watch_sets).enumerate() {
        let proto = proto.clone();
        let tracker = tracker.clone();
        let node = watcher.node;
        watcher_tasks.push(tokio::spawn(async move {
            loop {
                match proto.watch(node, set.clone()).await {
                    Ok(mut rx) => {
                        while let Some(ev) = rx.recv().await {
                            tracker.on_event(w, &ev);
                        }
                    }
                    Err(e) => tracing_like(&e),
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }

    // Connect phase (a connection per client): before the clock of the measured phases.
    let connect = proto.connect_clients(slice.clone()).await;
    if let Some(c) = &connect {
        print!("loadgen: {}", c.line());
        let json = serde_json::to_vec_pretty(c)?;
        let path = out_dir.join(CONNECT_FILE);
        std::fs::write(&path, json)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }

    let lane_register_rate_total = match config.scenario {
        Scenario::Query | Scenario::Push => None,
        _ => config.rate,
    };
    // Phases start now; with no warm-up the recorder exists before the first request.
    let t0 = Instant::now();
    let measure_at = t0 + config.warmup;
    let mut ticker = None;
    let start_measuring = |ticker: &mut Option<crate::Ticker>| -> anyhow::Result<()> {
        let recorder = Recorder::new(RecorderConfig {
            interval_log: Some(out_dir.join(INTERVAL_LOG_FILE)),
            ..RecorderConfig::default()
        })?;
        let expected = match config.scenario {
            Scenario::Register => None,
            _ => Some(config.duration),
        };
        let mut progress = if config.progress {
            Progress::new(expected)
        } else {
            Progress::plain(config.progress_every, Box::new(std::io::stdout()))
        };
        // Target rates of the open-model schedules (closed-model operations have none).
        let clients = slice_len as f64;
        recorder.set_target_rate(Op::Beat, clients / config.heartbeat.as_secs_f64());
        if let Some(r) = lane_register_rate_total {
            recorder.set_target_rate(Op::Register, r);
        }
        *ticker = Some(recorder.spawn_ticker(move |row| progress.update(row)));
        let _ = shared.meter.set(recorder);
        Ok(())
    };
    if config.warmup.is_zero() {
        start_measuring(&mut ticker)?;
    }

    // Lanes.
    let per_lane = |r: f64| r / lanes as f64;
    let main_rate = config.rate;
    let lane_cfg = LaneConfig {
        register_rate: match config.scenario {
            Scenario::Query | Scenario::Push => None,
            _ => main_rate.map(per_lane),
        },
        // Every scenario keeps its registered clients alive, as real clients do (a long
        // registration phase would otherwise see its first clients expire).
        heartbeat: Some(config.heartbeat),
        query_rate: match config.scenario {
            Scenario::Query => main_rate.map_or(1.0, per_lane),
            _ => per_lane(config.query_rate),
        },
        closed_queries: config.scenario == Scenario::Query && main_rate.is_none(),
        churn_rate: per_lane(config.churn_rate()),
        churn_down: config.churn_down,
        batch: if config.batch == 0 {
            proto.max_batch()
        } else {
            config.batch.min(proto.max_batch())
        }
        .max(1),
        concurrency: config.concurrency,
        congestion_latency: config.timeout * 3 / 4,
        max_lag: config.max_lag,
        retries: config.retries,
        linger: Duration::from_millis(2),
    };
    let drain = config.timeout + Duration::from_secs(1);
    let mut lane_tasks = Vec::new();
    for l in 0..lanes {
        let lo =
            slice.start + ((u64::from(slice.end - slice.start) * l as u64) / lanes as u64) as u32;
        let hi = slice.start
            + ((u64::from(slice.end - slice.start) * (l as u64 + 1)) / lanes as u64) as u32;
        lane_tasks.push(tokio::spawn(run_lane(
            l,
            proto.clone(),
            pop.clone(),
            shared.clone(),
            lane_cfg.clone(),
            lo..hi,
            phase_rx.clone(),
            drain,
        )));
    }

    // Markers.
    let marker_task = tokio::spawn(run_markers(
        proto.clone(),
        pop.clone(),
        shared.clone(),
        tracker.clone(),
        MarkerConfig {
            probe_interval: config.probe_interval,
            push_rate: if push {
                main_rate.unwrap_or(100.0)
            } else {
                0.0
            },
            push_services: push_services.len() as u32,
            nodes,
            final_wait: config.converge_timeout,
        },
        phase_rx.clone(),
    ));

    // Faults (embedded cluster only), from the start of the hold phase.
    let mut chaos = match (&config.chaos, cluster.and_then(ClusterRef::local)) {
        (Some(schedule), Some(cluster)) => Some(Box::pin(run_schedule(
            Chaos {
                cluster,
                schedule,
                shared: shared.clone(),
                population: pop.clone(),
                converge_timeout: config.converge_timeout,
            },
            phase_rx.clone(),
        ))),
        (Some(_), None) => {
            anyhow::bail!("--chaos needs the embedded cluster in this process")
        }
        (None, _) => None,
    };
    let mut chaos_outcome = None;

    let mut hold_end: Option<Instant> = None;
    let mut registration: Option<Duration> = None;
    let mut phase = Phase::Register;
    let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
    let registered_gauge_name = "clients_registered";
    loop {
        let now = Instant::now();
        if ticker.is_none() && now >= measure_at {
            start_measuring(&mut ticker)?;
        }
        if let Some(r) = shared.meter.get() {
            r.set_gauge(
                registered_gauge_name,
                shared.registered.load(Relaxed) as f64,
            );
            r.set_gauge("failovers", shared.failovers.load(Relaxed) as f64);
            r.set_gauge("window_cuts", shared.window_cuts.load(Relaxed) as f64);
            r.set_gauge("markers_pending", tracker.pending() as f64);
        }
        match phase {
            Phase::Register if shared.reg_remaining.load(Relaxed) == 0 => {
                let took = now.duration_since(t0);
                registration = Some(took);
                if let Some(r) = shared.meter.get() {
                    r.mark(&format!(
                        "{} clients registered in {:.2} s ({:.0}/s)",
                        slice_len,
                        took.as_secs_f64(),
                        slice_len as f64 / took.as_secs_f64().max(1e-9)
                    ));
                }
                if config.scenario == Scenario::Register {
                    phase = Phase::Stop;
                } else {
                    phase = Phase::Hold(now);
                    hold_end = Some(now + config.duration);
                    if let Some(r) = shared.meter.get() {
                        r.set_target_rate(Op::Register, 0.0);
                        let q = match config.scenario {
                            Scenario::Query => config.rate.unwrap_or(0.0),
                            _ => config.query_rate,
                        };
                        r.set_target_rate(Op::Query, q);
                        r.set_target_rate(Op::Deregister, config.churn_rate());
                        if push {
                            // Every change is pushed to every subscriber.
                            let per_change = (nodes * subs) as f64;
                            r.set_target_rate(Op::Push, config.rate.unwrap_or(100.0) * per_change);
                        }
                    }
                }
                let _ = phase_tx.send(phase);
            }
            Phase::Hold(_) if hold_end.is_some_and(|e| now >= e) => {
                phase = Phase::Stop;
                let _ = phase_tx.send(phase);
            }
            _ => {}
        }
        if phase == Phase::Stop {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            out = async {
                match chaos.as_mut() {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            }, if chaos_outcome.is_none() => chaos_outcome = Some(out),
            _ = &mut ctrl_c => {
                println!("loadgen: interrupted, stopping");
                phase = Phase::Stop;
                let _ = phase_tx.send(phase);
                break;
            }
        }
    }
    // The lanes keep their clients alive with heartbeats until the nodes are checked
    // (below): waiting for the last probes and for the nodes to agree can outlast the
    // heartbeat timeouts, and clients expiring meanwhile would make the nodes disagree.
    let load_done = async {
        let _ = marker_task.await;
    };
    // The faults still settling go on meanwhile.
    let chaos_done = async {
        match (chaos.as_mut(), chaos_outcome.is_none()) {
            (Some(c), true) => Some(c.await),
            _ => None,
        }
    };
    let ((), late) = tokio::join!(load_done, chaos_done);
    if late.is_some() {
        chaos_outcome = late;
    }
    for t in &watcher_tasks {
        t.abort();
    }
    // The nodes should now agree (embedded cluster).
    let stopped = Instant::now();
    let mut nodes_converged = None;
    let mut node_instances = Vec::new();
    if let Some(c) = cluster {
        loop {
            let (ok, counts, broken) = match c.agree().await {
                Ok((ok, counts)) => (ok, counts, false),
                Err(e) => {
                    eprintln!("loadgen: cannot check the nodes: {e:#}");
                    (false, Vec::new(), true)
                }
            };
            node_instances = counts;
            let waited = stopped.elapsed();
            if ok || broken || waited >= config.converge_timeout {
                nodes_converged = Some((ok, waited));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    shared.finished.store(true, Relaxed);
    for t in lane_tasks {
        let _ = t.await;
    }
    if shared.meter.get().is_none() {
        anyhow::bail!(
            "the run ended before the warm-up ({:?}) was over: nothing was measured",
            config.warmup
        );
    }
    if let Some(t) = ticker {
        t.stop();
    }
    let recorder = shared
        .meter
        .get()
        .ok_or_else(|| anyhow::anyhow!("no recorder"))?;
    let recording = recorder.finish()?;
    let info = RunInfo::detect(
        config.scenario.name(),
        config.parameters(nodes, cluster.is_some()),
    );
    let mut summary = Summary::new(&recording, &info);
    if let Some(o) = &chaos_outcome {
        summary.faults = o.summaries(recorder.start());
    }
    crate::report::write_report_with(&out_dir, &recording, &summary)?;
    if let Some(h) = &config.history {
        crate::append_history(h, &summary, &out_dir)?;
    }
    Ok(RunOutcome {
        faults: summary.faults.clone(),
        summary,
        out_dir,
        nodes_converged,
        node_instances,
        failovers: shared.failovers.load(Relaxed),
        window_cuts: shared.window_cuts.load(Relaxed),
        registered: shared.registered.load(Relaxed),
        registration,
        connect,
    })
}

fn tracing_like(e: &str) {
    eprintln!("loadgen: {e} (retrying)");
}
