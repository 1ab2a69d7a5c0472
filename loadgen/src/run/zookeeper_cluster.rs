//! An embedded ZooKeeper ensemble on loopback, started from the Debian package
//! `zookeeper`'s jar (`/usr/share/java/zookeeper.jar`, run with `java`): the cluster of
//! `--protocol zookeeper` when no `--targets` are given.
//!
//! [`ZookeeperEnsemble::start`] asks the OS for a client, a quorum and an election port
//! per member, writes each member's configuration and `myid` under one temporary
//! directory, starts the members (each in its own process group, so a terminal's Ctrl-C
//! reaches only the load generator) and waits until each one answers the `srvr` command as
//! leader or follower. [`ZookeeperEnsemble::shutdown`], or dropping the ensemble on an
//! error, kills every member, waits for it and removes the directory.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::member_processes::{MemberProcesses, free_ports};
use anyhow::Context as _;

/// The jar of the Debian package `zookeeper` (its manifest names the other jars).
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// The server's main class.
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// How long the members may take to start their JVMs and elect a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running embedded ZooKeeper ensemble. See the module documentation.
pub struct ZookeeperEnsemble {
    /// The members' processes, configurations, data and logs (killed and removed when
    /// dropped).
    members: MemberProcesses,
    /// The members' client addresses (`127.0.0.1:port`).
    targets: Vec<String>,
}

impl std::fmt::Debug for ZookeeperEnsemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZookeeperEnsemble")
            .field("targets", &self.targets)
            .finish()
    }
}

impl ZookeeperEnsemble {
    /// Starts `members` members from [`ZOOKEEPER_JAR`] with the `java` on `PATH`.
    pub async fn start(members: usize) -> anyhow::Result<Self> {
        Self::start_with(Path::new(ZOOKEEPER_JAR), Path::new("java"), members).await
    }

    /// [`start`](Self::start) with the jar `jar` and the JVM `java`. A missing jar or JVM
    /// is an error naming the Debian package.
    pub async fn start_with(jar: &Path, java: &Path, members: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=9).contains(&members),
            "--nodes: an embedded ZooKeeper ensemble has 1 to 9 members, not {members}"
        );
        anyhow::ensure!(
            jar.is_file(),
            "--protocol zookeeper: {} was not found; install the Debian package zookeeper \
             (apt-get install zookeeper), or give --targets of a running ensemble",
            jar.display()
        );
        let ports = free_ports(3 * members)?;
        let client_ports = &ports[..members];
        let servers: String = (0..members)
            .map(|i| {
                format!(
                    "server.{}=127.0.0.1:{}:{}\n",
                    i + 1,
                    ports[members + i],
                    ports[2 * members + i]
                )
            })
            .collect();
        let ensemble = ZookeeperEnsemble {
            members: MemberProcesses::new("ZooKeeper", "zookeeper")?,
            targets: client_ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}"))
                .collect(),
        };
        let dir = ensemble.members.dir();
        for (i, port) in client_ports.iter().enumerate() {
            let data = dir.join(format!("z{i}.data"));
            std::fs::create_dir_all(&data)
                .with_context(|| format!("cannot create {}", data.display()))?;
            std::fs::write(data.join("myid"), format!("{}\n", i + 1))
                .with_context(|| format!("cannot write {}/myid", data.display()))?;
            let cfg = dir.join(format!("z{i}.cfg"));
            std::fs::write(
                &cfg,
                format!(
                    "tickTime=500\ninitLimit=40\nsyncLimit=20\ndataDir={}\n\
                     clientPort={port}\nclientPortAddress=127.0.0.1\n\
                     maxClientCnxns=0\nadmin.enableServer=false\n\
                     4lw.commands.whitelist=srvr,ruok\n{servers}",
                    data.display()
                ),
            )
            .with_context(|| format!("cannot write {}", cfg.display()))?;
            let mut cmd = Command::new(java);
            cmd.arg("-cp")
                .arg(jar)
                .arg(format!("-Dzookeeper.log.dir={}", dir.display()))
                .arg(MAIN_CLASS)
                .arg(&cfg);
            ensemble.members.spawn(i, cmd, || {
                format!(
                    "--protocol zookeeper: `{}` was not found; install the Debian package \
                     zookeeper (it brings a JVM), or give --targets of a running ensemble",
                    java.display()
                )
            })?;
        }
        // On an error below, dropping `ensemble` kills the members and removes the files.
        ensemble.wait_ready().await?;
        Ok(ensemble)
    }

    /// Waits until every member answers `srvr` as leader or follower.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        for (i, t) in self.targets.iter().enumerate() {
            loop {
                if let Some(status) = self.members.exited() {
                    anyhow::bail!(
                        "a ZooKeeper member exited while starting ({status}); its log:\n{}",
                        self.members.log_tail(i)
                    );
                }
                let t2 = t.clone();
                let mode = tokio::task::spawn_blocking(move || mode_of(&t2))
                    .await
                    .ok()
                    .flatten();
                if matches!(mode.as_deref(), Some("leader" | "follower" | "standalone")) {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "ZooKeeper member {i} ({t}) was not serving within {READY_TIMEOUT:?}; its \
                     log:\n{}",
                    self.members.log_tail(i)
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// The members' client addresses (`host:port`).
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The directory holding the members' configurations, data and logs.
    pub fn dir(&self) -> Option<PathBuf> {
        Some(self.members.dir().to_path_buf())
    }

    /// The members' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.members.pids()
    }

    /// Each member's mode (`leader`, `follower`), from its `srvr` answer.
    pub async fn modes(&self) -> Vec<Option<String>> {
        let targets = self.targets.clone();
        tokio::task::spawn_blocking(move || targets.iter().map(|t| mode_of(t)).collect())
            .await
            .unwrap_or_default()
    }

    /// Whether every member holds the same registrations: the instance znodes under
    /// `/services`, read on each member. Returns that and each member's count.
    pub async fn agree(&self) -> anyhow::Result<(bool, Vec<usize>)> {
        let mut counts = Vec::with_capacity(self.targets.len());
        for t in &self.targets {
            counts.push(crate::protocol::zookeeper::count_instances(t).await?);
        }
        let ok = counts.windows(2).all(|w| w[0] == w[1]);
        Ok((ok, counts))
    }

    /// Kills every member, waits for them and removes the directory.
    pub async fn shutdown(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

/// The `Mode:` line of a member's answer to `srvr` (blocking, 1 s timeouts).
fn mode_of(target: &str) -> Option<String> {
    let addr = target.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"srvr").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix("Mode: "))
        .map(|m| m.trim().to_owned())
}
