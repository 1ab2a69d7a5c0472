//! The embedded etcd cluster (`--protocol etcd` without `--targets`): real `etcd`
//! processes on loopback, started from the installed binary (Debian: `etcd-server`).
//!
//! [`EtcdCluster::start`] asks the OS for a client and a peer port per member, starts the
//! members with fresh data directories under one temporary directory, and waits until
//! every member answers and knows a leader. Each member runs in its own process group, so
//! a Ctrl-C at the terminal reaches only the load generator, which finishes the run and
//! then stops the members. [`EtcdCluster::shutdown`] (or dropping the cluster, on an
//! error) kills every member, waits for it, and removes the temporary directory with the
//! data and the members' logs. With a certificate and key ([`EtcdCluster::start_tls`],
//! `--tls-cert`, `--tls-key`), the members serve their client URLs over TLS (`https://`;
//! the peer URLs stay plaintext on loopback), and the cluster reads them with the CA of
//! `--tls-ca`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::member_processes::{MemberProcesses, free_ports};
use crate::tls::{NodeTlsFiles, TargetTls};
use anyhow::Context as _;
use etcd_client::{Client, ConnectOptions, GetOptions};

/// The binary started for each member (looked up on `PATH`).
pub const ETCD_BINARY: &str = "etcd";

/// How long the members may take to elect a leader and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running embedded etcd cluster. See the module documentation.
pub struct EtcdCluster {
    /// The members' processes, data directories and logs (killed and removed when
    /// dropped).
    members: MemberProcesses,
    /// The members' client addresses (`127.0.0.1:port`).
    targets: Vec<String>,
    /// TLS on the client URLs: the CA loadgen trusts.
    tls: Option<TargetTls>,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("targets", &self.targets)
            .finish()
    }
}

impl EtcdCluster {
    /// Starts `members` etcd members and waits until each answers and knows a leader.
    /// A missing `etcd` binary is an error naming the Debian package.
    pub async fn start(members: usize) -> anyhow::Result<Self> {
        Self::start_with(Path::new(ETCD_BINARY), members).await
    }

    /// [`start`](Self::start) with the members' client URLs over TLS with `files` (a
    /// certificate naming 127.0.0.1), read with the CA `ca`.
    pub async fn start_tls(
        members: usize,
        tls: Option<(&NodeTlsFiles, &TargetTls)>,
    ) -> anyhow::Result<Self> {
        Self::start_inner(Path::new(ETCD_BINARY), members, tls).await
    }

    /// [`start`](Self::start) with the binary `etcd` (a path, or a name looked up on
    /// `PATH`).
    pub async fn start_with(etcd: &Path, members: usize) -> anyhow::Result<Self> {
        Self::start_inner(etcd, members, None).await
    }

    async fn start_inner(
        etcd: &Path,
        members: usize,
        tls: Option<(&NodeTlsFiles, &TargetTls)>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=9).contains(&members),
            "--nodes: an embedded etcd cluster has 1 to 9 members, not {members}"
        );
        let ports = free_ports(2 * members)?;
        let (client_ports, peer_ports) = ports.split_at(members);
        let initial: Vec<String> = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let initial = initial.join(",");
        let token = format!("loadgen-{}", std::process::id());
        let cluster = EtcdCluster {
            members: MemberProcesses::new("etcd", "etcd")?,
            targets: client_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
            tls: tls.map(|(_, ca)| ca.clone()),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        for i in 0..members {
            let data = cluster.members.dir().join(format!("m{i}.data"));
            let client_url = format!("{scheme}://127.0.0.1:{}", client_ports[i]);
            let peer_url = format!("http://127.0.0.1:{}", peer_ports[i]);
            let mut cmd = Command::new(etcd);
            cmd.arg("--name")
                .arg(format!("m{i}"))
                .arg("--data-dir")
                .arg(&data)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--logger", "zap"]);
            if let Some((files, _)) = tls {
                cmd.arg("--cert-file")
                    .arg(&files.cert)
                    .arg("--key-file")
                    .arg(&files.key);
            }
            cluster.members.spawn(i, cmd, || {
                format!(
                    "--protocol etcd: the `{}` binary was not found; install the Debian \
                     package etcd-server (apt-get install etcd-server), or give --targets \
                     of a running etcd cluster",
                    etcd.display()
                )
            })?;
        }
        // On an error below, dropping `cluster` kills the members and removes the files.
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Waits until every member answers a status request and knows a leader.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(1));
        for (i, t) in self.targets.iter().enumerate() {
            loop {
                if let Some(status) = self.members.exited() {
                    anyhow::bail!(
                        "an etcd member exited while starting ({status}); its log:\n{}",
                        self.members.log_tail(i)
                    );
                }
                let ready = match self.connect(t, options.clone()).await {
                    Ok(mut c) => c.status().await.is_ok_and(|s| s.leader() != 0),
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "etcd member {i} ({t}) was not ready within {READY_TIMEOUT:?}; its log:\n{}",
                    self.members.log_tail(i)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// A client of the member at `target`, over TLS if the members serve it.
    async fn connect(
        &self,
        target: &str,
        options: ConnectOptions,
    ) -> Result<Client, etcd_client::Error> {
        let (url, options) = match &self.tls {
            Some(ca) => (format!("https://{target}"), options.with_tls(ca.tonic())),
            None => (format!("http://{target}"), options),
        };
        Client::connect([url], Some(options)).await
    }

    /// The members' client addresses (`host:port`), as `--targets` takes them.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The directory holding the members' data and logs (removed at the end).
    pub fn dir(&self) -> Option<&Path> {
        Some(self.members.dir())
    }

    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members.pids()
    }

    /// Whether every member holds the same registrations: the number of keys under
    /// `/services/` read locally on each member (serializable reads). Returns that and
    /// each member's count.
    pub async fn agree(&self) -> anyhow::Result<(bool, Vec<usize>)> {
        let mut counts = Vec::with_capacity(self.targets.len());
        for t in &self.targets {
            let mut c = self
                .connect(t, ConnectOptions::new())
                .await
                .with_context(|| format!("cannot connect to the etcd member {t}"))?;
            let r = c
                .get(
                    "/services/",
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_count_only()
                            .with_serializable(),
                    ),
                )
                .await
                .with_context(|| format!("cannot count the keys on the etcd member {t}"))?;
            counts.push(usize::try_from(r.count()).unwrap_or(0));
        }
        let ok = counts.windows(2).all(|w| w[0] == w[1]);
        Ok((ok, counts))
    }

    /// Kills every member, waits for them and removes the data directories.
    pub async fn shutdown(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}
