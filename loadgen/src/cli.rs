//! The `loadgen` command line: a run (the default), `merge`, `check` and `compare`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::measure::op::Op;
use crate::parse::{Shard, parse_count, parse_duration, parse_rate, parse_shard, parse_target};
use crate::report::check::{CheckThresholds, OpThresholds};
use crate::run::chaos::Schedule;
use crate::run::systems::System;
use crate::run::{ProtocolKind, RunConfig, Scenario};

/// Examples printed after the options.
const EXAMPLES: &str = "\
Examples:
  loadgen --clients 20k --duration 15s --rate 10k
      20,000 clients against an embedded 3-node cluster: registered at 10,000/s, then held
      15 s with heartbeats; report under results/runs/
  loadgen --scenario query --clients 10k --duration 10s --rate 2k
      queries at 2,000/s while 10,000 clients are held
  loadgen --clients 20k --duration 60s --chaos kill:2@10s,restart:2@25s,partition:3@35s-45s
      faults during the hold: per-fault errors, recovery time and lost registrations
  loadgen --protocol nacos --targets 10.0.0.1:8848,10.0.0.2:8848 --clients 5k --duration 30s
      real Nacos 2.x SDK connections against a running cluster
  loadgen check results/runs/<run> --baseline results/baselines/ci-steady.json --max-p99-rise 1
      compare a run with a baseline; exit 1 on a regression
  loadgen merge a b --out merged
      one report from shard runs (--shard 0/2, --shard 1/2)
  loadgen compare --systems distro,etcd,zookeeper --clients 10k --duration 20s
      the same workload against embedded distro, etcd and ZooKeeper clusters in turn;
      compare.json, compare.html and a table side by side (etcd: --features etcd)

Formats of every output file: loadgen/REPORTS.md";

/// Load generator for Distro and Nacos 2.x clusters.
///
/// With no subcommand, runs a scenario: with no --targets against an embedded cluster
/// started in this process, otherwise against the given nodes. Writes a report under
/// `results/runs/<timestamp>-<scenario>/` and prints a summary table.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    args_conflicts_with_subcommands = true,
    after_help = EXAMPLES,
    after_long_help = EXAMPLES
)]
pub struct Cli {
    /// A subcommand; none runs a scenario.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Run options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Merges shard runs (their latency.hlog, summary.json, timeline.csv) into one report.
    Merge {
        /// Run directories of the shards.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Compares a run with a baseline summary; exits 1 on a regression.
    Check {
        /// The run: its directory or its summary.json.
        run: PathBuf,
        /// The baseline summary.json.
        #[arg(long)]
        baseline: PathBuf,
        /// Largest allowed fall of throughput, as a fraction (0.5: to half).
        #[arg(long, default_value_t = crate::DEFAULT_MAX_THROUGHPUT_DROP)]
        max_throughput_drop: f64,
        /// Largest allowed rise of corrected p99, as a fraction (2.0: to three times).
        #[arg(long, default_value_t = crate::DEFAULT_MAX_P99_RISE)]
        max_p99_rise: f64,
        /// Largest allowed rise of replication lag p99, as a fraction.
        #[arg(long, alias = "max-convergence-p99-rise", default_value_t = crate::DEFAULT_MAX_P99_RISE)]
        max_replication_lag_p99_rise: f64,
        /// A p99 rise smaller than this (µs) never fails.
        #[arg(long, default_value_t = 0)]
        p99_slack_us: u64,
        /// A limit for one operation, overriding the two above for it:
        /// OP:throughput-drop=F or OP:p99-rise=F (e.g. beat:p99-rise=1,query:throughput-drop=0.2).
        #[arg(long, value_delimiter = ',', value_parser = parse_op_limit)]
        limit: Vec<OpLimit>,
    },
    /// Runs the same workload against distro, etcd and ZooKeeper in turn, each on an
    /// embedded cluster started for it (distro's nodes in a child process; etcd and
    /// ZooKeeper from their Debian packages), and writes one report of them side by side
    /// (compare.json, compare.html; each system's run in OUT/SYSTEM/). The run options
    /// are those of a run; --protocol and --targets do not apply.
    Compare {
        /// Systems to run, in order, comma-separated: distro, etcd (a loadgen built with
        /// --features etcd), zookeeper.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "distro,etcd,zookeeper"
        )]
        systems: Vec<System>,
        /// Run options (as for a run).
        #[command(flatten)]
        run: Box<RunArgs>,
    },
    /// Internal: the embedded cluster of `--cluster-process`, run by loadgen itself in a
    /// child process (see `loadgen::cluster_process`).
    #[command(name = "cluster-serve", hide = true)]
    ClusterServe {
        /// Nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Runtime threads per node.
        #[arg(long, default_value_t = 1)]
        node_threads: usize,
        /// One `SO_REUSEPORT` SDK-port socket per node thread.
        #[arg(long)]
        sdk_reuseport: bool,
        /// Open files to allow (raises the soft limit).
        #[arg(long, default_value_t = 65_536)]
        descriptors: u64,
        /// The nodes' TLS certificate (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The nodes' TLS key.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
}

/// Options of a run.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Wire protocol.
    #[arg(help_heading = "Target", long, value_enum, default_value_t = ProtocolKind::Native)]
    pub protocol: ProtocolKind,
    /// Scenario.
    #[arg(help_heading = "Workload", long, value_enum, default_value_t = Scenario::Steady)]
    pub scenario: Scenario,
    /// Simulated clients in all (all shards): 100000, 100k, 1m.
    #[arg(help_heading = "Workload", long, default_value = "100k", value_parser = parse_count)]
    pub clients: u64,
    /// Services the clients register in.
    #[arg(help_heading = "Workload", long, default_value = "1000", value_parser = parse_count)]
    pub services: u64,
    /// Instances per client (in consecutive services).
    #[arg(help_heading = "Workload", long, default_value_t = 1)]
    pub instances_per_client: u32,
    /// Seed of every random choice (default: from the clock; printed).
    #[arg(help_heading = "Workload", long)]
    pub seed: Option<u64>,
    /// Main ports of a running cluster, host:port,... (SDK port = main + 1000). None:
    /// start an embedded cluster.
    #[arg(help_heading = "Target", long, value_delimiter = ',', value_parser = parse_target)]
    pub targets: Vec<String>,
    /// TLS to the targets' SDK ports (those started with --tls-cert/--tls-key), or with
    /// --protocol etcd to the members' client URLs (https://), trusting only the CA
    /// certificates of this PEM file. With --targets, or with --tls-cert and --tls-key.
    /// Not with --protocol zookeeper.
    #[arg(help_heading = "Target", long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The embedded nodes (or etcd members) serve TLS with this PEM certificate (it must
    /// name 127.0.0.1) and --tls-key; needs --tls-ca. Not with --targets.
    #[arg(
        help_heading = "Target",
        long,
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        help_heading = "Target",
        long,
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// `--protocol etcd`: the lease a client's keys are put with: per-client (a lease per
    /// client, kept alive by its heartbeats: an instance registering itself) or shared:N
    /// (N leases in all, each renewed every 5 s by a keep-alive of its own: a process
    /// registering many instances; `shared` is shared:1).
    #[arg(help_heading = "Target", long, default_value = "per-client")]
    pub etcd_lease: crate::protocol::mapping::EtcdLease,
    /// `--protocol zookeeper`: the session a client's znodes live in: shared:N (N sessions
    /// per member shared by the clients; `shared` is shared:16) or per-client (a session
    /// and a connection per client, as Curator's service discovery has).
    #[arg(help_heading = "Target", long, default_value = "shared:16")]
    pub zk_sessions: crate::protocol::mapping::ZkSessions,
    /// Nodes of the embedded cluster.
    #[arg(help_heading = "Target", long, default_value_t = 3)]
    pub nodes: usize,
    /// Runtime threads per embedded node.
    #[arg(help_heading = "Target", long, default_value_t = 1)]
    pub node_threads: usize,
    /// The embedded nodes' SDK ports listen on one `SO_REUSEPORT` socket per node thread
    /// (each with its own accept loop) instead of one socket.
    #[arg(help_heading = "Target", long)]
    pub sdk_reuseport: bool,
    /// Run the embedded cluster in a child process (loadgen re-executes itself), so that
    /// each side of the connections has its own open-file limit. Automatic with
    /// `--protocol nacos` when both ends of every client connection would not fit in this
    /// process's hard limit.
    #[arg(help_heading = "Target", long)]
    pub cluster_process: bool,
    /// Channels per node (native), i.e. sender lanes.
    #[arg(help_heading = "Target", long, default_value_t = 2)]
    pub connections: usize,
    /// Items per request batch (0: the protocol's maximum; default 1000). Given with
    /// `--scenario query`, also the services asked for in one request: one native
    /// `QueryBatch` of N services (Nacos, which has no batch query: N `ServiceQueryRequest`s
    /// sent together); without it, one query per request.
    #[arg(help_heading = "Target", long)]
    pub batch: Option<usize>,
    /// Requests in flight per lane and node (the closed model's concurrency).
    #[arg(help_heading = "Target", long, default_value_t = 2)]
    pub concurrency: usize,
    /// Open-model rate per second of the scenario's main operation (registrations; queries
    /// for `query`; changes for `push`): 5000, 20k. None: closed model.
    #[arg(help_heading = "Rates", allow_negative_numbers = true, long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Queries per second while holding (steady, churn, push).
    #[arg(help_heading = "Rates", allow_negative_numbers = true, long, default_value = "0", value_parser = parse_rate)]
    pub query_rate: f64,
    /// Clients leaving and re-registering per second while holding (churn default: 1 %
    /// of the clients per second).
    #[arg(help_heading = "Rates", allow_negative_numbers = true, long, value_parser = parse_rate)]
    pub churn_rate: Option<f64>,
    /// How long a churned client stays away.
    #[arg(help_heading = "Workload", long, default_value = "1s", value_parser = parse_duration)]
    pub churn_down: Duration,
    /// Subscriber streams per node (push).
    #[arg(help_heading = "Workload", long, default_value_t = 1)]
    pub subscribers: usize,
    /// Services the push subscribers watch.
    #[arg(help_heading = "Workload", long, default_value_t = 10)]
    pub watch_services: u32,
    /// Left out of the figures (from the start).
    #[arg(help_heading = "Workload", long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long to hold the clients after registering them.
    #[arg(help_heading = "Workload", long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Heartbeat period of every client.
    #[arg(help_heading = "Workload", long, default_value = "5s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Per-request timeout.
    #[arg(help_heading = "Target", long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Retries of a failed request, each on the next node.
    #[arg(help_heading = "Target", long, default_value_t = 5)]
    pub retries: u8,
    /// Heartbeats and queries further behind schedule than this are dropped (counted).
    #[arg(help_heading = "Rates", long, default_value = "5s", value_parser = parse_duration)]
    pub max_lag: Duration,
    /// How the lanes of open-model queries sent as requests of their own (`--rate` or
    /// `--query-rate` without `--batch`) wake for them: `tick` (tokio's timer: 1 ms
    /// resolution, so a query goes out up to about 1 ms late, and the queries due within a
    /// tick share a wake-up), `timerfd` (a timerfd per lane, armed at the next query's
    /// instant, woken by the lane's own runtime worker from epoll: each query goes out
    /// within microseconds, at the price of a wake-up per query on both ends, see the
    /// README) or `thread` (a pacing thread, as precise, with a cross-thread wake-up per
    /// query besides). The summary's `lateness` rows say how late the sends were.
    #[arg(help_heading = "Rates", long, value_enum, default_value_t = crate::run::timer::Pacing::default())]
    pub pacer: crate::run::timer::Pacing,
    /// Let the kernel back this process's memory (the embedded cluster's nodes and the load
    /// side; inherited by `--cluster-process` children) with transparent huge pages. Off by
    /// default, as `distro-server`'s `--transparent-huge-pages` (see the README).
    #[arg(help_heading = "Target", long)]
    pub transparent_huge_pages: bool,
    /// Replication probe period.
    #[arg(help_heading = "Faults and probes", long, default_value = "1s", value_parser = parse_duration)]
    pub probe_interval: Duration,
    /// How long to wait for a replication probe, for the nodes' recovery after a fault and
    /// for their agreement at the end.
    #[arg(help_heading = "Faults and probes", long, default_value = "30s", value_parser = parse_duration)]
    pub converge_timeout: Duration,
    /// Run slice i of n of the client id space (several loadgen processes, one cluster).
    #[arg(help_heading = "Workload", long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Output directory (default: `results/runs/<timestamp>-<scenario>`).
    #[arg(help_heading = "Output", long)]
    pub out: Option<PathBuf>,
    /// History file the run's row is appended to.
    #[arg(help_heading = "Output", long, default_value = "results/history.csv")]
    pub history: PathBuf,
    /// Do not append to the history file.
    #[arg(help_heading = "Output", long)]
    pub no_history: bool,
    /// Exit 3 unless the run had no error, every probe replicated and (embedded cluster)
    /// every node holds the same state at the end.
    #[arg(help_heading = "Output", long)]
    pub require_clean: bool,
    /// Plain progress lines instead of a bar.
    #[arg(help_heading = "Output", long)]
    pub plain: bool,
    /// Faults applied to the embedded cluster during the hold phase, comma-separated:
    /// kill:N@T (stop node N at once, as kill -9), restart:N@T (start killed node N again,
    /// empty; it loads a snapshot), partition:N@T1-T2 (cut N's peer traffic both ways;
    /// clients still reach it), pause:N@T1-T2 (freeze N, as kill -STOP then -CONT: no
    /// protocol answers, no peer traffic); and membership changes join:N@T (start N new
    /// nodes and add them to every node's member list) and leave:N@T (take the N
    /// highest-numbered members out of the list, wait for their handover, stop them),
    /// not mixed with the others. N counts from 1 (node 1 is the first of --nodes); times (500ms, 20s, 1m) count from the start of the hold phase, once every
    /// client is registered, and must fall within --duration. Example:
    /// kill:2@20s,restart:2@40s,partition:1@60s-90s,pause:3@100s-105s. Not with --targets or
    /// --cluster-process.
    #[arg(help_heading = "Faults and probes", long, value_parser = Schedule::parse)]
    pub chaos: Option<Schedule>,
}

impl RunArgs {
    /// The run's configuration.
    pub fn config(&self) -> Result<RunConfig, String> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                % 1_000_000_007
        });
        let services = u32::try_from(self.services)
            .map_err(|_| format!("--services: {} is too many", self.services))?;
        Ok(RunConfig {
            protocol: self.protocol,
            scenario: self.scenario,
            clients: self.clients,
            services,
            instances_per_client: self.instances_per_client,
            seed,
            targets: self.targets.clone(),
            tls: match &self.tls_ca {
                Some(path) => {
                    Some(crate::tls::TargetTls::from_file(path).map_err(|e| format!("{e:#}"))?)
                }
                None => None,
            },
            node_tls: match (&self.tls_cert, &self.tls_key) {
                (Some(cert), Some(key)) => {
                    let files = crate::tls::NodeTlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                    };
                    files.load().map_err(|e| format!("{e:#}"))?;
                    Some(files)
                }
                _ => None,
            },
            etcd_lease: self.etcd_lease,
            zk_sessions: self.zk_sessions,
            nodes: self.nodes,
            node_threads: self.node_threads,
            sdk_reuseport: self.sdk_reuseport,
            cluster_process: self.cluster_process,
            connections: self.connections,
            batch: self.batch.unwrap_or(1000),
            query_batch: match (self.scenario, self.batch) {
                (Scenario::Query, Some(0)) => distro_server::native::MAX_QUERIES_PER_REQUEST,
                (Scenario::Query, Some(n)) => n,
                _ => 1,
            },
            concurrency: self.concurrency,
            rate: self.rate,
            query_rate: self.query_rate,
            churn_rate: self.churn_rate,
            churn_down: self.churn_down,
            subscribers: self.subscribers,
            watch_services: self.watch_services,
            warmup: self.warmup,
            duration: self.duration,
            heartbeat: self.heartbeat,
            timeout: self.timeout,
            retries: self.retries,
            max_lag: self.max_lag,
            pacer: self.pacer,
            probe_interval: self.probe_interval,
            converge_timeout: self.converge_timeout,
            shard: self.shard.unwrap_or_default(),
            out: self.out.clone(),
            history: (!self.no_history).then(|| self.history.clone()),
            progress: !self.plain,
            progress_every: crate::DEFAULT_PLAIN_EVERY,
            chaos: self.chaos.clone(),
            interrupt: Default::default(),
        })
    }
}

/// The thresholds of `loadgen check`.
pub fn thresholds(
    max_throughput_drop: f64,
    max_p99_rise: f64,
    max_replication_lag_p99_rise: f64,
    p99_slack_us: u64,
    limits: &[OpLimit],
) -> CheckThresholds {
    let default = OpThresholds {
        max_throughput_drop,
        max_p99_rise,
    };
    let mut per_op = std::collections::BTreeMap::new();
    for l in limits {
        let t: &mut OpThresholds = per_op.entry(l.op).or_insert(default);
        match l.kind {
            LimitKind::ThroughputDrop => t.max_throughput_drop = l.value,
            LimitKind::P99Rise => t.max_p99_rise = l.value,
        }
    }
    CheckThresholds {
        default,
        per_op,
        max_replication_lag_p99_rise,
        p99_slack_us,
    }
}

/// Which limit an [`OpLimit`] sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// Largest allowed fall of throughput, as a fraction.
    ThroughputDrop,
    /// Largest allowed rise of corrected p99, as a fraction.
    P99Rise,
}

/// `check --limit OP:KIND=F`: one operation's limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpLimit {
    /// The operation.
    pub op: Op,
    /// The limit.
    pub kind: LimitKind,
    /// Its value, a fraction of the baseline.
    pub value: f64,
}

/// Parses `OP:throughput-drop=F` or `OP:p99-rise=F`.
pub fn parse_op_limit(s: &str) -> Result<OpLimit, String> {
    let usage = "use OP:throughput-drop=F or OP:p99-rise=F, e.g. beat:p99-rise=1";
    let (op, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("--limit {s:?}: {usage}"))?;
    let op: Op = op.parse().map_err(|e| format!("--limit {s:?}: {e}"))?;
    let (kind, value) = rest
        .split_once('=')
        .ok_or_else(|| format!("--limit {s:?}: {usage}"))?;
    let kind = match kind {
        "throughput-drop" => LimitKind::ThroughputDrop,
        "p99-rise" => LimitKind::P99Rise,
        other => return Err(format!("--limit {s:?}: unknown limit {other:?}; {usage}")),
    };
    let value: f64 = value
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("--limit {s:?}: {value:?} is not a fraction (a number >= 0)"))?;
    Ok(OpLimit { op, kind, value })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn a_negative_rate_gets_a_clear_message() {
        let e = Cli::try_parse_from(["loadgen", "--rate", "-5"]).expect_err("negative");
        let msg = e.to_string();
        assert!(
            msg.contains("'--rate <RATE>'") && msg.contains("a rate cannot be negative"),
            "{msg}"
        );
    }

    #[test]
    fn help_is_grouped_and_ends_with_examples() {
        let help = Cli::command().render_help().to_string();
        let at = |s: &str| {
            help.find(s)
                .unwrap_or_else(|| panic!("{s} missing:\n{help}"))
        };
        assert!(at("Target:") < at("Workload:"));
        assert!(at("Workload:") < at("Rates:"));
        assert!(at("Rates:") < at("Faults and probes:"));
        assert!(at("Faults and probes:") < at("Output:"));
        assert!(at("Output:") < at("Examples:"));
    }
}
