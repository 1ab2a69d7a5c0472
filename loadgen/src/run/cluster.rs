//! The cluster a run drives: embedded (started for the run, in this process or in a
//! child process) or external (`--targets`, no [`ClusterRef`]).
//!
//! `Embedded` starts and stops an embedded cluster; a [`ClusterRef`] is what the rest of
//! the run sees of it: whether its nodes agree at the end, and, in this process, the nodes
//! the faults of `--chaos` are applied to.

use distro_server::LocalCluster;

use super::cluster_process::{self, ClusterProcess};
use super::config::{ProtocolKind, RunConfig};
use super::embedded;
#[cfg(feature = "etcd")]
use super::etcd_cluster::EtcdCluster;
use super::zookeeper_cluster::ZookeeperEnsemble;
use crate::protocol::nacos::DESCRIPTOR_MARGIN;

/// The cluster a run started: in this process, or in a child process.
pub(crate) enum Embedded {
    /// In this process.
    InProcess(Box<LocalCluster>),
    /// In a child process.
    Process(ClusterProcess),
    /// `etcd` processes (`--protocol etcd`).
    #[cfg(feature = "etcd")]
    Etcd(EtcdCluster),
    /// ZooKeeper processes (`--protocol zookeeper`).
    Zookeeper(ZookeeperEnsemble),
}

impl Embedded {
    /// Starts the embedded cluster of `config` for `clients` connections (clients and watch
    /// streams), in a child process if asked or if a Nacos run's connections (both ends)
    /// would not fit in this process's open-file limit.
    pub(crate) async fn start(config: &RunConfig, clients: u64) -> anyhow::Result<Embedded> {
        if config.protocol == ProtocolKind::Etcd {
            #[cfg(feature = "etcd")]
            return Ok(Embedded::Etcd(
                EtcdCluster::start_tls(
                    config.nodes,
                    config.node_tls.as_ref().zip(config.tls.as_ref()),
                )
                .await?,
            ));
            #[cfg(not(feature = "etcd"))]
            anyhow::bail!(super::config::NO_ETCD);
        }
        if config.protocol == ProtocolKind::Zookeeper {
            return Ok(Embedded::Zookeeper(
                ZookeeperEnsemble::start(config.nodes).await?,
            ));
        }
        let nacos = config.protocol == ProtocolKind::Nacos;
        let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(u64::MAX, |(_, h)| h);
        let too_many = nacos && !cluster_process::fits_in_process(clients, hard);
        if config.cluster_process || too_many {
            if too_many && !config.cluster_process {
                println!(
                    "loadgen: the cluster runs in a child process: {clients} Nacos connections \
                     need {} descriptors in one process, the hard limit is {hard}",
                    2 * clients + DESCRIPTOR_MARGIN
                );
            }
            let exe = std::env::current_exe()
                .map_err(|e| anyhow::anyhow!("cannot find this executable to re-run: {e}"))?;
            let descriptors = clients + DESCRIPTOR_MARGIN;
            let tls = config.node_tls.as_ref();
            let p =
                ClusterProcess::start(&exe, config.nodes, config.node_runtime(), descriptors, tls)
                    .await?;
            return Ok(Embedded::Process(p));
        }
        if nacos {
            // Both ends of every connection are in this process.
            let wanted = 2 * clients + DESCRIPTOR_MARGIN;
            match crate::protocol::nacos::raise_nofile(wanted) {
                Ok(l) if !l.is_enough() => eprintln!("loadgen: WARNING: {l}"),
                Ok(_) => {}
                Err(e) => eprintln!("loadgen: WARNING: cannot read the open-file limit: {e}"),
            }
        }
        let tls = config.node_tls.as_ref().map(|t| t.load()).transpose()?;
        let joining = config
            .chaos
            .as_ref()
            .filter(|s| s.changes_members())
            .map(|s| s.joined());
        let c = embedded::start(config.nodes, config.node_runtime(), tls, joining).await?;
        Ok(Embedded::InProcess(Box::new(c)))
    }

    /// The nodes' main addresses (`host:port`), as `--targets` takes them: those running
    /// (not the nodes that `--chaos` joins later).
    pub(crate) fn targets(&self) -> Vec<String> {
        match self {
            Embedded::InProcess(c) => (0..c.len())
                .filter(|&i| c.is_running(i))
                .map(|i| c.http_addr(i).to_string())
                .collect(),
            Embedded::Process(p) => p.targets().to_vec(),
            #[cfg(feature = "etcd")]
            Embedded::Etcd(e) => e.targets().to_vec(),
            Embedded::Zookeeper(z) => z.targets().to_vec(),
        }
    }

    /// The processes its servers run in, and whether that is this (the load generator's)
    /// process.
    pub(crate) fn server_processes(&self) -> (Vec<u32>, bool) {
        match self {
            Embedded::InProcess(_) => (vec![std::process::id()], true),
            Embedded::Process(p) => (vec![p.pid()], false),
            #[cfg(feature = "etcd")]
            Embedded::Etcd(e) => (e.pids(), false),
            Embedded::Zookeeper(z) => (z.pids(), false),
        }
    }

    /// What the run checks and applies faults to.
    pub(crate) fn as_ref(&self) -> ClusterRef<'_> {
        match self {
            Embedded::InProcess(c) => ClusterRef::InProcess(c),
            Embedded::Process(p) => ClusterRef::Process(p),
            #[cfg(feature = "etcd")]
            Embedded::Etcd(e) => ClusterRef::Etcd(e),
            Embedded::Zookeeper(z) => ClusterRef::Zookeeper(z),
        }
    }

    /// Stops the nodes (and the child process).
    pub(crate) async fn shutdown(self) {
        match self {
            Embedded::InProcess(c) => {
                embedded::remove_members_file(&c);
                (*c).shutdown().await
            }
            Embedded::Process(p) => p.shutdown().await,
            #[cfg(feature = "etcd")]
            Embedded::Etcd(e) => e.shutdown().await,
            Embedded::Zookeeper(z) => z.shutdown().await,
        }
    }
}

/// The embedded cluster of a run, to check at the end that its nodes agree.
#[derive(Clone, Copy)]
pub enum ClusterRef<'a> {
    /// In this process.
    InProcess(&'a LocalCluster),
    /// In a child process.
    Process(&'a ClusterProcess),
    /// `etcd` processes.
    #[cfg(feature = "etcd")]
    Etcd(&'a EtcdCluster),
    /// ZooKeeper processes.
    Zookeeper(&'a ZookeeperEnsemble),
}

impl<'a> From<&'a LocalCluster> for ClusterRef<'a> {
    fn from(c: &'a LocalCluster) -> Self {
        ClusterRef::InProcess(c)
    }
}

impl<'a> ClusterRef<'a> {
    /// The cluster, when it runs in this process.
    pub fn local(self) -> Option<&'a LocalCluster> {
        match self {
            ClusterRef::InProcess(c) => Some(c),
            ClusterRef::Process(_) => None,
            #[cfg(feature = "etcd")]
            ClusterRef::Etcd(_) => None,
            ClusterRef::Zookeeper(_) => None,
        }
    }

    /// How often the final check asks [`ClusterRef::agree`]: every 10 ms in process (a
    /// few loads per node: the figure is the agreement's time to 10 ms), every 50 ms
    /// where each asking is a request to every member.
    pub fn agreement_poll(self) -> std::time::Duration {
        match self {
            ClusterRef::InProcess(_) => std::time::Duration::from_millis(10),
            _ => std::time::Duration::from_millis(50),
        }
    }

    /// Whether every node holds the same clients, and each node's instance count (see
    /// [`embedded::nodes_agree`]).
    pub async fn agree(self) -> anyhow::Result<(bool, Vec<usize>)> {
        match self {
            ClusterRef::InProcess(c) => Ok(embedded::nodes_agree(c)),
            ClusterRef::Process(p) => p.agree().await,
            #[cfg(feature = "etcd")]
            ClusterRef::Etcd(e) => e.agree().await,
            ClusterRef::Zookeeper(z) => z.agree().await,
        }
    }

    /// How the run's first line names the cluster.
    pub(crate) fn describe(self, nodes: usize, targets: &[String]) -> String {
        match self {
            ClusterRef::InProcess(_) => {
                format!("an embedded {nodes}-node cluster ({})", targets.join(","))
            }
            ClusterRef::Process(p) => format!(
                "an embedded {nodes}-node cluster in child process {} ({})",
                p.pid(),
                targets.join(",")
            ),
            #[cfg(feature = "etcd")]
            ClusterRef::Etcd(e) => format!(
                "an embedded {nodes}-member etcd cluster, processes {:?} ({})",
                e.pids(),
                targets.join(",")
            ),
            ClusterRef::Zookeeper(z) => format!(
                "an embedded {nodes}-member ZooKeeper ensemble, processes {:?} ({})",
                z.pids(),
                targets.join(",")
            ),
        }
    }
}
