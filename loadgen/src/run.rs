//! Running a scenario: a whole run, from the cluster to the report.
//!
//! [`run`] starts an embedded [`LocalCluster`] when no targets are given ([`cluster`]: in
//! this process or in a child one), connects the protocol and goes through the phases of
//! [`run_with_cluster`], one method of `Run` each:
//!
//! 1. *prepare*: announce the run, create its directory and the state the lanes share;
//! 2. *watch*: open the watch streams (probes, pushes) and the tracker they feed;
//! 3. *connect*: a protocol with a connection per client opens them (`connect.json`);
//! 4. *start the load*: the phases' clock (measuring starts after `warmup`), the lanes,
//!    the marker task and the faults of `--chaos`;
//! 5. *register and hold*: register every client, hold them for `duration` (the register
//!    scenario stops once registered), stop;
//! 6. *drain*: wait for the last probe and for the faults to settle;
//! 7. *check the nodes*: wait for the embedded cluster's nodes to agree;
//! 8. *stop the lanes*, which kept their clients alive until then;
//! 9. *report*: finish the recording, write the run directory and the history row.
//!
//! The run's figures leave out `warmup`.
//!
//! Ctrl-C or SIGTERM ([`interrupt`], `RunConfig::interrupt`) stops a run within seconds
//! whatever it is doing: while the cluster starts or the clients connect, the run ends
//! with an error; from the measured phases on, the load stops at once, nothing waits for
//! the last probes, the faults or the members' agreement (checked once), the lanes are
//! stopped without their drain, and the report covers what was measured (marked
//! interrupted, never clean). Either way the embedded cluster is stopped and its files
//! removed.
//!
//! The parts: [`config`] says what a run does, [`driver`] holds the lanes that simulate
//! the clients (woken as [`timer`] says: a timerfd of their own, tokio's timer or the
//! pacing thread of [`pacer`], `--pacer`), [`markers`] the replication probes and push measurements, [`chaos`] the
//! faults applied to the embedded cluster during a run (`--chaos`), [`cluster_process`]
//! the embedded cluster in a child process (`--cluster-process`), [`embedded`] its nodes
//! (wherever they run), `etcd_cluster` the embedded etcd cluster of `--protocol etcd` (the
//! `etcd` feature), [`zookeeper_cluster`] the embedded ZooKeeper ensemble of
//! `--protocol zookeeper`.

pub mod chaos;
pub mod cluster;
pub mod cluster_process;
pub mod config;
pub mod driver;
pub mod embedded;
#[cfg(feature = "etcd")]
pub mod etcd_cluster;
pub mod interrupt;
pub mod markers;
pub(crate) mod member_processes;
pub mod outages;
pub mod pacer;
pub mod preflight;
pub mod server_usage;
pub mod systems;
pub mod timer;
pub mod zookeeper_cluster;

use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use distro_server::LocalCluster;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::measure::op::Op;
use crate::measure::recorder::{Recorder, RecorderConfig, Ticker};
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
use timer::{Pacing, Timers};

/// The connect phase's figures in a run directory (protocols with a connection per client).
pub const CONNECT_FILE: &str = "connect.json";
/// Most watch streams (subscribers) of a run, in all nodes.
pub const MAX_WATCH_STREAMS: usize = 100_000;
/// A watch stream that ended is opened again after this; after a failed attempt, twice
/// the previous wait, up to [`WATCH_RETRY_MAX`].
const WATCH_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to open a watch stream.
const WATCH_RETRY_MAX: Duration = Duration::from_secs(4);
/// How long the push scenario waits for its subscribers to subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(120);
/// After an interrupt, how long the one check of the nodes may take.
const INTERRUPTED_CHECK: Duration = Duration::from_secs(2);

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
    /// Stopped early by Ctrl-C or SIGTERM: the figures cover the run until then.
    pub interrupted: bool,
}

impl RunOutcome {
    /// No errors, every probe replicated (and at least one seen on another node, with a
    /// lag sample or before its acknowledgement, as etcd often shows them), nodes agree at
    /// the end, every fault (`--chaos`) was applied, recovered from and lost no
    /// registration, and the run was not interrupted.
    pub fn is_clean(&self) -> bool {
        let s = &self.summary;
        !self.interrupted
            && s.totals.errors == 0
            && s.replication_lag.unreplicated == 0
            && s.replication_lag.sightings() > 0
            && self.nodes_converged.is_none_or(|(ok, _)| ok)
            && self.faults.iter().all(FaultSummary::is_clean)
    }

    /// Lines printed after the summary table.
    pub fn epilogue(&self) -> String {
        let mut s = String::new();
        if self.interrupted {
            s.push_str(
                "interrupted (Ctrl-C or SIGTERM): the figures cover the run until then; the \
                 nodes were checked once, without waiting for them to agree\n",
            );
        }
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
                "agreement at the end: yes, every node held the same clients {:.0} ms after the load stopped (instances per node: {:?})\n",
                t.as_secs_f64() * 1e3,
                self.node_instances
            )),
            Some((false, t)) => s.push_str(&format!(
                "agreement at the end: NO, the nodes still differed after {:.1} s (instances per node: {:?})\n",
                t.as_secs_f64(),
                self.node_instances
            )),
            None => s.push_str("agreement at the end: not checked (external cluster; see the replication lag of the probes)\n"),
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
    Ok(run_measured(config).await?.0)
}

/// Runs `config` (see [`run`]); with an embedded cluster, also reads what its servers used
/// from the start of the cluster's run to its end ([`server_usage`]).
pub async fn run_measured(
    config: RunConfig,
) -> anyhow::Result<(RunOutcome, Option<server_usage::ServerUsage>)> {
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
    let nodes = if config.targets.is_empty() {
        config.nodes
    } else {
        config.targets.len()
    };
    // Every client and every watch stream is a connection with the Nacos protocol.
    let connections =
        u64::from(population.clients()) + (nodes * config.watch_streams_per_node()) as u64;
    if config.protocol == ProtocolKind::Nacos {
        let wanted = connections + crate::protocol::nacos::DESCRIPTOR_MARGIN;
        match crate::protocol::nacos::raise_nofile(wanted) {
            Ok(l) if !l.is_enough() => eprintln!("loadgen: WARNING: {l}"),
            Ok(_) => {}
            Err(e) => eprintln!("loadgen: WARNING: cannot read the open-file limit: {e}"),
        }
    }
    let cluster = if config.targets.is_empty() {
        // Dropping a start under way stops the members started so far.
        match config
            .interrupt
            .or_stop(Box::pin(Embedded::start(&config, connections)))
            .await
        {
            Some(c) => Some(c?),
            None => anyhow::bail!(interrupt::STOPPED_BEFORE_LOAD),
        }
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
        query_batch: config.query_batch,
        tls: config.tls.clone(),
        etcd_lease: config.etcd_lease,
        zk_sessions: config.zk_sessions,
    };
    // An external cluster's SDK ports, or an embedded cluster's TLS, checked first (distro
    // and Nacos: etcd and ZooKeeper have no SDK port at main + 1000, and their clients say
    // which member they cannot reach).
    if matches!(config.protocol, ProtocolKind::Native | ProtocolKind::Nacos)
        && (cluster.is_none() || ctx.tls.is_some())
        && let Err(e) = preflight::check_reachable(&ctx).await
    {
        if let Some(c) = cluster {
            c.shutdown().await;
        }
        return Err(e);
    }
    let usage_start = cluster.as_ref().map(|c| {
        let (pids, own) = c.server_processes();
        let reading = server_usage::read(&pids);
        (pids, own, reading)
    });
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
        #[cfg(feature = "etcd")]
        ProtocolKind::Etcd => match crate::protocol::etcd::EtcdProtocol::connect(&ctx).await {
            Ok(proto) => run_with_cluster(Arc::new(proto), &ctx, &config, nodes).await,
            Err(e) => Err(e),
        },
        #[cfg(not(feature = "etcd"))]
        ProtocolKind::Etcd => Err(anyhow::anyhow!(config::NO_ETCD)),
        ProtocolKind::Zookeeper => {
            match crate::protocol::zookeeper::ZookeeperProtocol::connect(&ctx).await {
                Ok(proto) => run_with_cluster(Arc::new(proto), &ctx, &config, nodes).await,
                Err(e) => Err(e),
            }
        }
    };
    let usage = usage_start.map(|(pids, own, start)| {
        let end = server_usage::read(&pids);
        server_usage::ServerUsage::between(pids, own, start, end)
    });
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    Ok((result?, usage))
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
/// external cluster (`None`), phase by phase (see the module documentation).
pub async fn run_with_cluster<P: Protocol>(
    proto: Arc<P>,
    ctx: &Context,
    config: &RunConfig,
    cluster: Option<ClusterRef<'_>>,
) -> anyhow::Result<RunOutcome> {
    let run = Run::prepare(proto, ctx, config, cluster)?;
    let watching = run.watch()?;
    let connect = match config.interrupt.or_stop(Box::pin(run.connect())).await {
        Some(c) => c?,
        None => {
            watching.close();
            anyhow::bail!(interrupt::STOPPED_BEFORE_LOAD);
        }
    };
    run.await_subscribers(&watching).await;
    let mut load = run.start_load(&watching)?;
    let registration = run.register_and_hold(&mut load, &watching).await?;
    let faults = run.drain(&mut load, watching).await;
    let (nodes_converged, node_instances) = run.check_nodes().await;
    run.stop_lanes(load.lanes).await;
    let summary = run.report(load.ticker, faults.as_ref())?;
    let shared = &run.shared;
    Ok(RunOutcome {
        faults: summary.faults.clone(),
        summary,
        out_dir: run.out_dir,
        nodes_converged,
        node_instances,
        failovers: shared.failovers.load(Relaxed),
        window_cuts: shared.window_cuts.load(Relaxed),
        registered: shared.registered.load(Relaxed),
        registration,
        connect,
        interrupted: config.interrupt.is_set(),
    })
}

/// A run under way: what its phases share. [`run_with_cluster`] calls the phases in order:
/// [`prepare`](Run::prepare), [`watch`](Run::watch), [`connect`](Run::connect),
/// [`start_load`](Run::start_load), [`register_and_hold`](Run::register_and_hold),
/// [`drain`](Run::drain), [`check_nodes`](Run::check_nodes),
/// [`stop_lanes`](Run::stop_lanes), [`report`](Run::report).
struct Run<'a, P> {
    proto: Arc<P>,
    config: &'a RunConfig,
    cluster: Option<ClusterRef<'a>>,
    /// Nodes (targets).
    nodes: usize,
    pop: Arc<Population>,
    /// This shard's clients.
    slice: Range<u32>,
    out_dir: PathBuf,
    shared: Arc<Shared>,
    phase_tx: watch::Sender<Phase>,
    /// When the hold phase began (the progress bar follows it).
    hold_clock: crate::report::progress::HoldClock,
    phase_rx: watch::Receiver<Phase>,
}

/// The watch streams: one per node for probes (and pushes), plus extra push subscribers.
struct Watching {
    /// The markers they see.
    tracker: Arc<Tracker>,
    tasks: Vec<JoinHandle<()>>,
    /// Nodes whose watch streams keep failing.
    outages: Arc<outages::Outages>,
    /// Subscriber streams per node.
    subscribers: usize,
    /// The push changes go to services `0..push_services`.
    push_services: u32,
    /// Watchers whose stream has been open (subscribed) at least once.
    subscribed: Arc<AtomicUsize>,
}

impl Watching {
    /// Stops the watch streams.
    fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The faults of `--chaos` being applied, until they are settled.
type Faults<'a> = Pin<Box<dyn Future<Output = chaos::Outcome> + Send + 'a>>;

/// The load, once started.
struct Load<'a> {
    /// When the phases started (the warm-up with them).
    t0: Instant,
    /// When measuring starts (the end of the warm-up).
    measure_at: Instant,
    /// The recorder's ticker, once measuring.
    ticker: Option<Ticker>,
    lanes: Vec<JoinHandle<()>>,
    markers: JoinHandle<()>,
    faults: Option<Faults<'a>>,
    /// What the faults gave, once settled.
    faults_outcome: Option<chaos::Outcome>,
}

impl<'a, P: Protocol> Run<'a, P> {
    /// Announces the run, creates its output directory and the state the lanes share.
    fn prepare(
        proto: Arc<P>,
        ctx: &'a Context,
        config: &'a RunConfig,
        cluster: Option<ClusterRef<'a>>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.chaos.is_none() || cluster.and_then(ClusterRef::local).is_some(),
            "--chaos needs the embedded cluster in this process"
        );
        let nodes = ctx.targets.len();
        let pop = ctx.population.clone();
        let slice = config.shard.range(pop.clients());
        println!(
            "loadgen: scenario {} protocol {} clients {} (shard {}: {} clients) seed {}\n         against {}",
            config.scenario.name(),
            proto.name(),
            config.clients,
            config.shard,
            slice.len(),
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
        Ok(Run {
            proto,
            config,
            cluster,
            nodes,
            pop,
            slice,
            out_dir,
            shared,
            phase_tx,
            hold_clock: Default::default(),
            phase_rx,
        })
    }

    /// Whether this is the push scenario.
    fn push(&self) -> bool {
        self.config.scenario == Scenario::Push
    }

    /// Opens the watch streams (re-opened when they break) and the tracker they feed.
    fn watch(&self) -> anyhow::Result<Watching> {
        let (config, nodes, pop) = (self.config, self.nodes, &self.pop);
        let subs = config.watch_streams_per_node();
        anyhow::ensure!(
            nodes * subs <= MAX_WATCH_STREAMS,
            "--subscribers: at most {MAX_WATCH_STREAMS} subscriber streams in all \
             ({nodes} nodes x {subs})"
        );
        let push_services: Vec<u32> = if self.push() {
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
            self.shared.clone(),
            config.converge_timeout,
        ));
        let mut tasks = Vec::new();
        let outages = Arc::new(outages::Outages::new(nodes));
        let subscribed = Arc::new(AtomicUsize::new(0));
        // Thousands of subscribers must not all open their connections (handshake and
        // subscriptions) at once, nor retry in step: at most this many opening at a time,
        // and a failed one waits longer after each failure.
        let opening = Arc::new(tokio::sync::Semaphore::new(
            crate::protocol::connect_phase::CONNECT_PARALLEL,
        ));
        let started = Instant::now();
        for (w, (watcher, set)) in watchers.iter().zip(watch_sets).enumerate() {
            let proto = self.proto.clone();
            let tracker = tracker.clone();
            let node = watcher.node;
            let outages = outages.clone();
            let subscribed = subscribed.clone();
            let opening = opening.clone();
            let shared = self.shared.clone();
            // Seconds on the charts' axis (since the measured run's start), or since the
            // watches started before that.
            let now_s = move || {
                shared
                    .meter
                    .get()
                    .map_or_else(|| started.elapsed(), |r| r.elapsed())
                    .as_secs_f64()
            };
            tasks.push(tokio::spawn(async move {
                let mut first = true;
                let mut backoff = WATCH_RETRY;
                loop {
                    let opened = {
                        let _permit = opening.acquire().await;
                        proto.watch(node, set.clone()).await
                    };
                    match opened {
                        Ok(mut rx) => {
                            backoff = WATCH_RETRY;
                            if std::mem::take(&mut first) {
                                subscribed.fetch_add(1, Relaxed);
                            }
                            if let Some(line) = outages.reached(node, now_s()) {
                                eprintln!("loadgen: {line}");
                            }
                            while let Some(ev) = rx.recv().await {
                                tracker.on_event(w, &ev);
                            }
                        }
                        Err(e) => {
                            if let Some(line) = outages.failed(node, &e, now_s()) {
                                eprintln!("loadgen: {line}");
                            }
                            backoff = (backoff * 2).min(WATCH_RETRY_MAX);
                        }
                    }
                    tokio::time::sleep(backoff).await;
                }
            }));
        }
        Ok(Watching {
            tracker,
            tasks,
            outages,
            subscribers: subs,
            push_services: push_services.len() as u32,
            subscribed,
        })
    }

    /// Push scenario: waits (at most [`SUBSCRIBE_TIMEOUT`]) until every subscriber stream
    /// has subscribed, so the first changes are not counted as missed by subscribers still
    /// connecting, and prints how long they took.
    async fn await_subscribers(&self, watching: &Watching) {
        if !self.push() {
            return;
        }
        let (all, start) = (watching.tracker.watchers().len(), Instant::now());
        let mut n = watching.subscribed.load(Relaxed);
        while n < all && start.elapsed() < SUBSCRIBE_TIMEOUT && !self.config.interrupt.is_set() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            n = watching.subscribed.load(Relaxed);
        }
        println!(
            "loadgen: {n} of {all} subscribers subscribed {:.2} s after the connect phase{}",
            start.elapsed().as_secs_f64(),
            if n < all {
                " (the others' missed pushes count as not-pushed)"
            } else {
                ""
            }
        );
    }

    /// The connect phase (a protocol with a connection per client), before the clock of
    /// the measured phases: prints its figures and writes them to [`CONNECT_FILE`].
    async fn connect(&self) -> anyhow::Result<Option<ConnectReport>> {
        let connect = self.proto.connect_clients(self.slice.clone()).await;
        if let Some(c) = &connect {
            print!("loadgen: {}", c.line());
            let json = serde_json::to_vec_pretty(c)?;
            let path = self.out_dir.join(CONNECT_FILE);
            std::fs::write(&path, json)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        Ok(connect)
    }

    /// Starts the phases' clock, the lanes, the marker task and the faults (`--chaos`,
    /// applied from the start of the hold phase). With no warm-up the recorder exists
    /// before the first request.
    fn start_load(&self, watching: &Watching) -> anyhow::Result<Load<'a>> {
        let t0 = Instant::now();
        let ticker = if self.config.warmup.is_zero() {
            Some(self.start_measuring()?)
        } else {
            None
        };
        Ok(Load {
            t0,
            measure_at: t0 + self.config.warmup,
            ticker,
            lanes: self.start_lanes(),
            markers: self.start_markers(watching),
            faults: self.start_faults(),
            faults_outcome: None,
        })
    }

    /// The open-model rate of all registrations (None: closed model, or none wanted).
    fn register_rate(&self) -> Option<f64> {
        match self.config.scenario {
            Scenario::Query | Scenario::Push => None,
            _ => self.config.rate,
        }
    }

    /// Starts measuring: the recorder, streaming the interval log into the run directory,
    /// with the target rates of the open-model schedules (closed-model operations have
    /// none), and the progress display, ticking once a second.
    fn start_measuring(&self) -> anyhow::Result<Ticker> {
        let config = self.config;
        let recorder = Recorder::new(RecorderConfig {
            interval_log: Some(self.out_dir.join(INTERVAL_LOG_FILE)),
            ..RecorderConfig::default()
        })?;
        let expected = match config.scenario {
            Scenario::Register => None,
            _ => Some(config.duration),
        };
        let mut progress = if config.progress {
            Progress::new(expected).with_hold_clock(self.hold_clock.clone())
        } else {
            Progress::plain(config.progress_every, Box::new(std::io::stdout()))
        };
        let clients = self.slice.len() as f64;
        recorder.set_target_rate(Op::Beat, clients / config.heartbeat.as_secs_f64());
        match self.register_rate() {
            Some(r) => recorder.set_target_rate(Op::Register, r),
            None => recorder.set_closed_model(Op::Register),
        }
        let ticker = recorder.spawn_ticker(move |row| progress.update(row));
        let _ = self.shared.meter.set(recorder);
        Ok(ticker)
    }

    /// One lane per connection, each driving a contiguous part of the slice's clients.
    fn start_lanes(&self) -> Vec<JoinHandle<()>> {
        let (config, proto, slice) = (self.config, &self.proto, &self.slice);
        let lanes = config.connections.max(1);
        let per_lane = |r: f64| r / lanes as f64;
        let main_rate = config.rate;
        let lane_cfg = LaneConfig {
            register_rate: self.register_rate().map(per_lane),
            // Every scenario keeps its registered clients alive, as real clients do (a long
            // registration phase would otherwise see its first clients expire).
            heartbeat: Some(config.heartbeat),
            query_rate: match config.scenario {
                Scenario::Query => main_rate.map_or(1.0, per_lane),
                _ => per_lane(config.query_rate),
            },
            closed_queries: config.scenario == Scenario::Query && main_rate.is_none(),
            query_window: config.query_batch.max(1),
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
            lanes,
        };
        // Lanes of queries of their own on an open schedule wake as `--pacer` says (tokio's
        // timer sends them up to a millisecond late; see `run::timer`); others on tokio's.
        let timers = Timers::start(if lane_cfg.own_request_queries() {
            config.pacer
        } else {
            Pacing::Tick
        });
        let drain = config.timeout + Duration::from_secs(1);
        let span = u64::from(slice.end - slice.start);
        (0..lanes)
            .map(|l| {
                let lo = slice.start + ((span * l as u64) / lanes as u64) as u32;
                let hi = slice.start + ((span * (l as u64 + 1)) / lanes as u64) as u32;
                tokio::spawn(run_lane(
                    l,
                    proto.clone(),
                    self.pop.clone(),
                    self.shared.clone(),
                    lane_cfg.clone(),
                    lo..hi,
                    self.phase_rx.clone(),
                    drain,
                    timers.lane(),
                ))
            })
            .collect()
    }

    /// The marker task: replication probes, and push changes in the push scenario.
    fn start_markers(&self, watching: &Watching) -> JoinHandle<()> {
        let config = self.config;
        tokio::spawn(run_markers(
            self.proto.clone(),
            self.pop.clone(),
            self.shared.clone(),
            watching.tracker.clone(),
            MarkerConfig {
                probe_interval: config.probe_interval,
                push_rate: if self.push() {
                    config.rate.unwrap_or(100.0)
                } else {
                    0.0
                },
                push_services: watching.push_services,
                nodes: self.nodes,
                final_wait: config.converge_timeout,
            },
            self.phase_rx.clone(),
        ))
    }

    /// The faults of `--chaos`, applied to the embedded cluster in this process (checked
    /// by [`Run::prepare`]) from the start of the hold phase.
    fn start_faults(&self) -> Option<Faults<'a>> {
        let schedule = self.config.chaos.as_ref()?;
        let cluster = self.cluster.and_then(ClusterRef::local)?;
        Some(Box::pin(run_schedule(
            Chaos {
                cluster,
                schedule,
                shared: self.shared.clone(),
                population: self.pop.clone(),
                converge_timeout: self.config.converge_timeout,
            },
            self.phase_rx.clone(),
        )))
    }

    /// The measured phases: register every client, then hold them for `duration` (the
    /// register scenario stops once registered); Ctrl-C stops early. Starts measuring at
    /// the end of the warm-up, keeps the gauges, marks the end of the registration and sets
    /// the hold phase's target rates. Returns how long the registration took, if it ended.
    async fn register_and_hold(
        &self,
        load: &mut Load<'a>,
        watching: &Watching,
    ) -> anyhow::Result<Option<Duration>> {
        let (config, shared) = (self.config, &self.shared);
        let slice_len = self.slice.len();
        let mut hold_end: Option<Instant> = None;
        let mut registration: Option<Duration> = None;
        let mut phase = Phase::Register;
        let mut interrupted = Box::pin(self.config.interrupt.wait());
        let registered_gauge_name = "clients_registered";
        loop {
            let now = Instant::now();
            if load.ticker.is_none() && now >= load.measure_at {
                load.ticker = Some(self.start_measuring()?);
            }
            if let Some(r) = shared.meter.get() {
                r.set_gauge(
                    registered_gauge_name,
                    shared.registered.load(Relaxed) as f64,
                );
                r.set_gauge("failovers", shared.failovers.load(Relaxed) as f64);
                r.set_gauge("window_cuts", shared.window_cuts.load(Relaxed) as f64);
                r.set_gauge("markers_pending", watching.tracker.pending() as f64);
            }
            match phase {
                Phase::Register if shared.reg_remaining.load(Relaxed) == 0 => {
                    let took = now.duration_since(load.t0);
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
                            self.hold_clock.start(r.elapsed().as_secs_f64());
                        }
                        self.set_hold_rates(watching);
                    }
                    let _ = self.phase_tx.send(phase);
                }
                Phase::Hold(_) if hold_end.is_some_and(|e| now >= e) => {
                    phase = Phase::Stop;
                    let _ = self.phase_tx.send(phase);
                }
                _ => {}
            }
            if phase == Phase::Stop {
                break;
            }
            let (faults, faults_outcome) = (&mut load.faults, &mut load.faults_outcome);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                out = async {
                    match faults.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if faults_outcome.is_none() => *faults_outcome = Some(out),
                () = &mut interrupted => {
                    println!("loadgen: interrupted, stopping");
                    phase = Phase::Stop;
                    let _ = self.phase_tx.send(phase);
                    break;
                }
            }
        }
        Ok(registration)
    }

    /// The target rates of the hold phase, as it starts.
    fn set_hold_rates(&self, watching: &Watching) {
        let config = self.config;
        let Some(r) = self.shared.meter.get() else {
            return;
        };
        r.set_target_rate(Op::Register, 0.0);
        let q = match config.scenario {
            Scenario::Query => config.rate.unwrap_or(0.0),
            _ => config.query_rate,
        };
        r.set_target_rate(Op::Query, q);
        r.set_target_rate(Op::Deregister, config.churn_rate());
        if self.push() {
            // Every change is pushed to every subscriber.
            let per_change = (self.nodes * watching.subscribers) as f64;
            r.set_target_rate(Op::Push, config.rate.unwrap_or(100.0) * per_change);
        }
    }

    /// After the stop: waits for the marker task (its last probe and every marker) and for
    /// the faults still settling, then closes the watch streams. The lanes keep their
    /// clients alive with heartbeats until the nodes are checked: waiting for the last
    /// probes and for the nodes to agree can outlast the heartbeat timeouts, and clients
    /// expiring meanwhile would make the nodes disagree. Returns what the faults gave.
    /// Interrupted, it waits for neither (the markers are stopped, the faults dropped).
    async fn drain(&self, load: &mut Load<'a>, watching: Watching) -> Option<chaos::Outcome> {
        let markers_done = async {
            let _ = (&mut load.markers).await;
        };
        let faults_done = async {
            match (load.faults.as_mut(), load.faults_outcome.is_none()) {
                (Some(f), true) => Some(f.await),
                _ => None,
            }
        };
        let settled = async { tokio::join!(markers_done, faults_done) };
        match self.config.interrupt.or_stop(Box::pin(settled)).await {
            Some(((), late)) => {
                if late.is_some() {
                    load.faults_outcome = late;
                }
            }
            None => load.markers.abort(),
        }
        for line in watching.outages.finish() {
            eprintln!("loadgen: {line}");
        }
        watching.close();
        load.faults_outcome.take()
    }

    /// The final check (embedded cluster): whether every node holds the same state, waiting
    /// up to `converge_timeout` for them to agree and how long that took; and the instances
    /// each node holds. Interrupted, one check at most, of at most [`INTERRUPTED_CHECK`].
    async fn check_nodes(&self) -> (Option<(bool, Duration)>, Vec<usize>) {
        let Some(c) = self.cluster else {
            return (None, Vec::new());
        };
        let stopped = Instant::now();
        let interrupt = &self.config.interrupt;
        loop {
            let agree = async {
                if interrupt.is_set() {
                    tokio::time::timeout(INTERRUPTED_CHECK, c.agree())
                        .await
                        .unwrap_or_else(|_| {
                            Err(anyhow::anyhow!("no answer within {INTERRUPTED_CHECK:?}"))
                        })
                } else {
                    match interrupt.or_stop(c.agree()).await {
                        Some(answer) => answer,
                        None => Err(anyhow::anyhow!("interrupted")),
                    }
                }
            };
            let (ok, counts, broken) = match Box::pin(agree).await {
                Ok((ok, counts)) => (ok, counts, false),
                Err(e) => {
                    eprintln!("loadgen: cannot check the nodes: {e:#}");
                    (false, Vec::new(), true)
                }
            };
            let waited = stopped.elapsed();
            if ok || broken || interrupt.is_set() || waited >= self.config.converge_timeout {
                return (Some((ok, waited)), counts);
            }
            tokio::time::sleep(c.agreement_poll()).await;
        }
    }

    /// Lets the lanes stop (they kept their clients alive until now) and waits for them;
    /// interrupted, stops them at once (their requests in flight are dropped).
    async fn stop_lanes(&self, mut lanes: Vec<JoinHandle<()>>) {
        self.shared.finished.store(true, Relaxed);
        let all = futures::future::join_all(lanes.iter_mut());
        if self.config.interrupt.or_stop(all).await.is_none() {
            for t in &lanes {
                t.abort();
            }
        }
    }

    /// Finishes the recording and writes the run directory and the history row.
    fn report(
        &self,
        ticker: Option<Ticker>,
        faults: Option<&chaos::Outcome>,
    ) -> anyhow::Result<Summary> {
        let config = self.config;
        if self.shared.meter.get().is_none() {
            anyhow::bail!(
                "the run ended before the warm-up ({:?}) was over: nothing was measured",
                config.warmup
            );
        }
        if let Some(t) = ticker {
            t.stop();
        }
        let recorder = self
            .shared
            .meter
            .get()
            .ok_or_else(|| anyhow::anyhow!("no recorder"))?;
        let recording = recorder.finish()?;
        let info = RunInfo::detect(
            config.scenario.name(),
            config.parameters(self.nodes, self.cluster.is_some()),
        );
        let mut summary = Summary::new(&recording, &info);
        if let Some(o) = faults {
            summary.faults = o.summaries(recorder.start());
        }
        crate::report::write_report_with(&self.out_dir, &recording, &summary)?;
        if let Some(h) = &config.history {
            crate::append_history(h, &summary, &self.out_dir)?;
        }
        Ok(summary)
    }
}
