//! What a run does: its scenario, wire protocol and every parameter ([`RunConfig`]), the
//! checks of those values, and the `parameters` they become in the report.
//!
//! Built by the command line (`crate::cli`) or by a test; nothing here runs anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::chaos::Schedule;
use crate::parse::Shard;

/// Why `--protocol etcd` is refused by a loadgen built without the `etcd` feature.
#[cfg(not(feature = "etcd"))]
pub(crate) const NO_ETCD: &str = "--protocol etcd: this loadgen was built without etcd \
    support; build it with `cargo build --release -p loadgen --features etcd` (the \
    etcd-client crate compiles etcd's .proto files with protoc: apt-get install \
    protobuf-compiler; the embedded cluster needs etcd: apt-get install etcd-server)";

/// The wire protocol of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtocolKind {
    /// The native batched gRPC API (`distro.v1.Registry`).
    Native,
    /// Nacos 2.x gRPC: one SDK connection per client (handshake, health checks, pushes).
    Nacos,
    /// etcd v3 (leases and prefix watches; loadgen built with `--features etcd`); embedded: a cluster of the installed `etcd`.
    Etcd,
    /// ZooKeeper (ephemeral znodes and child watches); embedded: an ensemble of the installed `zookeeper`.
    Zookeeper,
}

impl ProtocolKind {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Native => "native",
            ProtocolKind::Nacos => "nacos",
            ProtocolKind::Etcd => "etcd",
            ProtocolKind::Zookeeper => "zookeeper",
        }
    }
}

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Register every client as fast as allowed (or at `--rate`; registered clients beat
    /// meanwhile), then report.
    Register,
    /// Register, then hold every client with heartbeats for `--duration`, with queries
    /// (`--query-rate`) and churn (`--churn-rate`) if asked.
    Steady,
    /// Steady, with clients leaving and coming back at `--churn-rate` (default: 1 % of the
    /// clients per second).
    Churn,
    /// Steady, with queries at `--rate` (open model) or `--concurrency` (closed model).
    Query,
    /// Steady, with subscribers on every node and changes at `--rate`: change-to-push
    /// latency.
    Push,
}

impl Scenario {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::Steady => "steady",
            Scenario::Churn => "churn",
            Scenario::Query => "query",
            Scenario::Push => "push",
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Wire protocol.
    pub protocol: ProtocolKind,
    /// Scenario.
    pub scenario: Scenario,
    /// Clients in the whole id space (all shards).
    pub clients: u64,
    /// Services.
    pub services: u32,
    /// Instances per client.
    pub instances_per_client: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Main ports of an external cluster; empty: start an embedded one.
    pub targets: Vec<String>,
    /// TLS to the targets, trusting this CA (`--tls-ca`; only with `targets`).
    pub tls: Option<crate::tls::TargetTls>,
    /// TLS of the embedded nodes (`--tls-cert`, `--tls-key`; needs `tls`).
    pub node_tls: Option<crate::tls::NodeTlsFiles>,
    /// etcd: which lease a client's keys are put with (`--etcd-lease`).
    pub etcd_lease: crate::protocol::mapping::EtcdLease,
    /// ZooKeeper: which session a client's znodes live in (`--zk-sessions`).
    pub zk_sessions: crate::protocol::mapping::ZkSessions,
    /// Nodes of the embedded cluster.
    pub nodes: usize,
    /// Runtime threads per embedded node.
    pub node_threads: usize,
    /// The embedded nodes' SDK ports listen on one `SO_REUSEPORT` socket per thread.
    pub sdk_reuseport: bool,
    /// Run the embedded cluster in a child process (see
    /// [`cluster_process`](super::cluster_process)); also chosen automatically for Nacos
    /// runs too large for one process's open-file limit.
    pub cluster_process: bool,
    /// Lanes (native: channels per node).
    pub connections: usize,
    /// Items per batch (0: the protocol's maximum).
    pub batch: usize,
    /// Query scenario: services asked for in one request (native: one `QueryBatch` call;
    /// Nacos: that many `ServiceQueryRequest`s together); 1: one `Query` per request.
    pub query_batch: usize,
    /// Batches in flight per lane and node (the closed model's concurrency).
    pub concurrency: usize,
    /// Open-model rate of the scenario's main operation, per second (register for
    /// register/steady/churn, queries for query, changes for push); None: as fast as the
    /// in-flight limit allows (closed model).
    pub rate: Option<f64>,
    /// Queries per second in the hold phase (steady, churn, push).
    pub query_rate: f64,
    /// Clients leaving and coming back per second (None: scenario default).
    pub churn_rate: Option<f64>,
    /// How long a churned client stays away.
    pub churn_down: Duration,
    /// Subscribers per node (push scenario).
    pub subscribers: usize,
    /// Services watched in the push scenario.
    pub watch_services: u32,
    /// Left out of the figures, from the start.
    pub warmup: Duration,
    /// Hold phase length.
    pub duration: Duration,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of a failed item, each on the next node.
    pub retries: u8,
    /// Heartbeats and queries further behind schedule are dropped.
    pub max_lag: Duration,
    /// How the lanes of open-model queries sent as requests of their own wake (see
    /// `run::timer`).
    pub pacer: super::timer::Pacing,
    /// Convergence probe period.
    pub probe_interval: Duration,
    /// Give up on a probe (or push) after this.
    pub converge_timeout: Duration,
    /// This process's slice of the client id space.
    pub shard: Shard,
    /// Output directory (None: `results/runs/<timestamp>-<scenario>`).
    pub out: Option<PathBuf>,
    /// History file to append to (None: none).
    pub history: Option<PathBuf>,
    /// Show a progress bar on a terminal (plain lines otherwise).
    pub progress: bool,
    /// Print plain progress lines this often when not on a terminal.
    pub progress_every: Duration,
    /// Faults applied to the embedded cluster (`--chaos`), from the start of the hold.
    pub chaos: Option<Schedule>,
    /// Set by Ctrl-C or SIGTERM (the binary's listener): the run stops early, reports what
    /// it measured and stops its members ([`super::interrupt`]).
    pub interrupt: super::interrupt::Interrupt,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            protocol: ProtocolKind::Native,
            scenario: Scenario::Steady,
            clients: 100_000,
            services: 1000,
            instances_per_client: 1,
            seed: 1,
            targets: Vec::new(),
            tls: None,
            node_tls: None,
            etcd_lease: Default::default(),
            zk_sessions: Default::default(),
            nodes: 3,
            node_threads: 1,
            sdk_reuseport: false,
            cluster_process: false,
            connections: 2,
            batch: 1000,
            query_batch: 1,
            concurrency: 2,
            rate: None,
            query_rate: 0.0,
            churn_rate: None,
            churn_down: Duration::from_secs(1),
            subscribers: 1,
            watch_services: 10,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            retries: 5,
            max_lag: Duration::from_secs(5),
            pacer: super::timer::Pacing::default(),
            probe_interval: Duration::from_secs(1),
            converge_timeout: Duration::from_secs(30),
            shard: Shard::default(),
            out: None,
            history: None,
            progress: true,
            progress_every: crate::DEFAULT_PLAIN_EVERY,
            chaos: None,
            interrupt: Default::default(),
        }
    }
}

impl RunConfig {
    /// Watch streams the run opens per node: `--subscribers` in the push scenario, else
    /// one (the replication probes').
    pub fn watch_streams_per_node(&self) -> usize {
        if self.scenario == Scenario::Push {
            self.subscribers.max(1)
        } else {
            1
        }
    }

    /// How every embedded node runs (`--node-threads`, `--sdk-reuseport`).
    pub fn node_runtime(&self) -> super::embedded::NodeRuntime {
        super::embedded::NodeRuntime {
            threads: self.node_threads.max(1),
            sdk_reuseport: self.sdk_reuseport,
        }
    }

    /// Every parameter, as the report's `parameters`.
    pub fn parameters(&self, nodes: usize, embedded: bool) -> BTreeMap<String, String> {
        let mut p = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            p.insert(k.to_owned(), v);
        };
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        put("protocol", self.protocol.name().into());
        put("scenario", self.scenario.name().into());
        put("clients", self.clients.to_string());
        put("services", self.services.to_string());
        put(
            "instances_per_client",
            self.instances_per_client.to_string(),
        );
        put("seed", self.seed.to_string());
        put(
            "targets",
            if embedded {
                format!("embedded:{nodes}")
            } else {
                self.targets.join(",")
            },
        );
        put("nodes", nodes.to_string());
        if self.tls.is_some() {
            put("tls", "on".into());
        }
        // The mapping of the system driven (a comparison records both).
        if self.protocol == ProtocolKind::Etcd {
            put("etcd_lease", self.etcd_lease.to_string());
        }
        if self.protocol == ProtocolKind::Zookeeper {
            put("zk_sessions", self.zk_sessions.to_string());
        }
        if embedded {
            put("node_threads", self.node_threads.to_string());
            if self.sdk_reuseport {
                put("sdk_reuseport", "on".into());
            }
        }
        put("connections", self.connections.to_string());
        put("batch", self.batch.to_string());
        put("concurrency", self.concurrency.to_string());
        put(
            "rate",
            self.rate.map_or("closed".into(), |r| format!("{r}")),
        );
        put("query_rate", format!("{}", self.query_rate));
        put("churn_rate", format!("{}", self.churn_rate()));
        put("subscribers", self.subscribers.to_string());
        put("warmup", secs(self.warmup));
        put("duration", secs(self.duration));
        put("heartbeat", secs(self.heartbeat));
        put("timeout", secs(self.timeout));
        put("retries", self.retries.to_string());
        if self.own_request_queries() {
            put("pacer", self.pacer.name().into());
        }
        put("probe_interval", secs(self.probe_interval));
        put("shard", self.shard.to_string());
        if self.scenario == Scenario::Push {
            put("watch_services", self.watch_services.to_string());
        }
        if let Some(c) = &self.chaos {
            let entries: Vec<&str> = c.faults.iter().map(|f| f.entry.as_str()).collect();
            put("chaos", entries.join(","));
        }
        p
    }

    /// Whether queries go out as requests of their own on an open schedule (`--rate` with
    /// `--scenario query`, or `--query-rate`, without `--batch`): their lanes wake as
    /// `--pacer` says.
    pub fn own_request_queries(&self) -> bool {
        let open = match self.scenario {
            Scenario::Query => self.rate.is_some(),
            _ => self.query_rate > 0.0,
        };
        open && self.query_batch <= 1
    }

    /// Clients leaving and coming back per second: `churn_rate`, or the scenario's default.
    pub(crate) fn churn_rate(&self) -> f64 {
        match (self.churn_rate, self.scenario) {
            (Some(r), _) => r,
            (None, Scenario::Churn) => (self.clients as f64 / f64::from(self.shard.count)) / 100.0,
            (None, _) => 0.0,
        }
    }

    /// Checks every value, with an error naming the flag and the reason.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        #[cfg(not(feature = "etcd"))]
        anyhow::ensure!(self.protocol != ProtocolKind::Etcd, NO_ETCD);
        anyhow::ensure!(self.clients > 0, "--clients: must be at least 1");
        anyhow::ensure!(
            self.targets.is_empty() || self.targets.len() <= 255,
            "--targets: at most 255 nodes"
        );
        anyhow::ensure!(
            self.node_tls.is_none() || self.targets.is_empty(),
            "--tls-cert/--tls-key: they are for the embedded cluster, not with --targets"
        );
        anyhow::ensure!(
            self.tls.is_none() || !self.targets.is_empty() || self.node_tls.is_some(),
            "--tls-ca: the embedded cluster serves TLS only with --tls-cert and --tls-key"
        );
        anyhow::ensure!(
            self.node_tls.is_none() || self.tls.is_some(),
            "--tls-cert/--tls-key: loadgen needs --tls-ca, the CA that signed the certificate"
        );
        anyhow::ensure!(
            self.tls.is_none() || self.protocol != ProtocolKind::Zookeeper,
            "--tls-ca: not supported with --protocol zookeeper (the tokio-zookeeper crate has \
             no TLS)"
        );
        anyhow::ensure!(
            self.node_tls.is_none() || self.protocol != ProtocolKind::Zookeeper,
            "--tls-cert/--tls-key: not supported with --protocol zookeeper (the \
             tokio-zookeeper crate has no TLS)"
        );
        anyhow::ensure!(
            (1..=32).contains(&self.nodes),
            "--nodes: must be in 1..=32, not {}",
            self.nodes
        );
        anyhow::ensure!(
            (1..=256).contains(&self.connections),
            "--connections: must be in 1..=256"
        );
        anyhow::ensure!(self.concurrency >= 1, "--concurrency: must be at least 1");
        anyhow::ensure!(
            (1..=distro_server::native::MAX_QUERIES_PER_REQUEST).contains(&self.query_batch),
            "--batch: a query batch holds 1..={} services, not {}",
            distro_server::native::MAX_QUERIES_PER_REQUEST,
            self.query_batch
        );
        anyhow::ensure!(!self.heartbeat.is_zero(), "--heartbeat: must be positive");
        anyhow::ensure!(
            self.rate.is_none_or(|r| r > 0.0),
            "--rate: must be positive"
        );
        anyhow::ensure!(
            !self.probe_interval.is_zero(),
            "--probe-interval: must be positive"
        );
        if let Some(chaos) = &self.chaos {
            anyhow::ensure!(
                self.targets.is_empty(),
                "--chaos: faults are applied to the embedded cluster; it cannot be used with --targets"
            );
            anyhow::ensure!(
                self.scenario != Scenario::Register,
                "--chaos: the register scenario has no hold phase to apply faults in"
            );
            anyhow::ensure!(
                !self.cluster_process,
                "--chaos: faults are applied to a cluster in this process; it cannot be used with --cluster-process"
            );
            chaos
                .check(self.nodes, self.duration)
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the `etcd` feature, `--protocol etcd` is refused before anything starts,
    /// with how to build a loadgen that has it.
    #[cfg(not(feature = "etcd"))]
    #[test]
    fn etcd_without_the_feature_says_how_to_build_it() {
        let c = RunConfig {
            protocol: ProtocolKind::Etcd,
            ..RunConfig::default()
        };
        let e = c.validate().expect_err("no etcd support").to_string();
        assert!(e.contains("--features etcd"), "{e}");
        assert!(e.contains("protobuf-compiler"), "{e}");
    }

    /// With it, the protocol passes validation like the others.
    #[cfg(feature = "etcd")]
    #[test]
    fn etcd_with_the_feature_is_accepted() {
        let c = RunConfig {
            protocol: ProtocolKind::Etcd,
            ..RunConfig::default()
        };
        c.validate().expect("etcd is built in");
    }
}
