//! The embedded cluster's nodes, read in the process that runs them: starting them (and
//! waiting until they have loaded), and whether they agree.
//!
//! An embedded cluster runs in this process (no `--targets`) or in the child of
//! `--cluster-process` ([`super::cluster_process`]); both start it with [`start`] and
//! check it with [`nodes_agree`] (the child when the parent asks). This file knows
//! neither of them.

use std::time::{Duration, Instant};

use distro_server::{LocalCluster, ServerConfig};

/// How long the nodes may take to load their start-up snapshots.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How every embedded node runs: its runtime threads and its SDK port's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRuntime {
    /// Runtime worker threads per node (`--node-threads`).
    pub threads: usize,
    /// One `SO_REUSEPORT` SDK-port socket per thread (`--sdk-reuseport`, see
    /// `ServerConfig::sdk_reuseport`).
    pub sdk_reuseport: bool,
}

/// Starts `nodes` nodes running as `runtime` says, with the default configuration (and
/// TLS on their main and SDK ports with `tls`), and waits until every one has loaded
/// ([`wait_loaded`]).
pub async fn start(
    nodes: usize,
    runtime: NodeRuntime,
    tls: Option<distro_server::tls::HttpTls>,
) -> anyhow::Result<LocalCluster> {
    let config = ServerConfig {
        http_tls: tls,
        sdk_reuseport: runtime.sdk_reuseport,
        ..ServerConfig::default()
    };
    let cluster = LocalCluster::start(nodes, config, runtime.threads.max(1)).await?;
    wait_loaded(&cluster).await?;
    Ok(cluster)
}

/// Waits until every node of `cluster` has loaded its start-up snapshot (a loading node
/// turns Nacos clients away with "Server is starting"), for at most a minute.
pub async fn wait_loaded(cluster: &LocalCluster) -> anyhow::Result<()> {
    let deadline = Instant::now() + LOAD_TIMEOUT;
    loop {
        let loaded = (0..cluster.len())
            .filter_map(|i| cluster.node(i))
            .all(|n| n.is_loaded());
        if loaded {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the nodes did not load their start-up snapshots within {LOAD_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether every running node of `cluster` holds the same clients: equal digests of every
/// owner's clients and equal instance counts. Returns the instance counts.
pub fn nodes_agree(cluster: &LocalCluster) -> (bool, Vec<usize>) {
    let nodes: Vec<_> = (0..cluster.len()).filter_map(|i| cluster.node(i)).collect();
    let counts: Vec<usize> = nodes
        .iter()
        .map(|n| n.registry().stats().instances)
        .collect();
    let Some(first) = nodes.first() else {
        return (true, counts);
    };
    let same_counts = counts.windows(2).all(|w| w[0] == w[1]);
    let same_digests = first.members().ids().all(|m| {
        let d = first.registry().owner_digests(m);
        nodes[1..]
            .iter()
            .all(|n| n.registry().owner_digests(m) == d)
    });
    (same_counts && same_digests, counts)
}
