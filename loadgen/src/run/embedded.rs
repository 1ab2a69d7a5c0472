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
///
/// With `joining` (`Some(k)`, for `--chaos` joins and leaves), the members come from a
/// members file in a new temporary directory ([`LocalCluster::members_file`], removed by
/// [`remove_members_file`]) that names the `nodes` started, and `k` more nodes have their
/// ports reserved, to join later ([`LocalCluster::write_members`], then
/// [`LocalCluster::restart`]).
pub async fn start(
    nodes: usize,
    runtime: NodeRuntime,
    tls: Option<distro_server::tls::HttpTls>,
    joining: Option<usize>,
) -> anyhow::Result<LocalCluster> {
    let mut config = ServerConfig {
        http_tls: tls,
        sdk_reuseport: runtime.sdk_reuseport,
        ..ServerConfig::default()
    };
    let threads = runtime.threads.max(1);
    let Some(spare) = joining else {
        let cluster = LocalCluster::start(nodes, config, threads).await?;
        wait_loaded(&cluster).await?;
        return Ok(cluster);
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("loadgen-members-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    config.members_file = Some(dir.join("cluster.conf"));
    let cluster = LocalCluster::start_some(nodes + spare, config, threads, 0).await?;
    let first: Vec<usize> = (0..nodes).collect();
    cluster.write_members(&first)?;
    for i in first {
        cluster.restart(i).await?;
    }
    wait_loaded(&cluster).await?;
    Ok(cluster)
}

/// Removes the members file of a cluster started by [`start`] with `joining`, and its
/// directory (nothing without one).
pub fn remove_members_file(cluster: &LocalCluster) {
    if let Some(dir) = cluster.members_file().and_then(|f| f.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
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
/// owner's clients and equal instance counts. Returns the instance counts. After joins and
/// leaves the running nodes are the members present (a leaver stops once it has left).
pub fn nodes_agree(cluster: &LocalCluster) -> (bool, Vec<usize>) {
    let nodes: Vec<_> = (0..cluster.len()).filter_map(|i| cluster.node(i)).collect();
    let counts: Vec<usize> = nodes.iter().map(|n| n.registry().instances()).collect();
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
