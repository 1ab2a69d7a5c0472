//! The embedded cluster in a child process (`--cluster-process`).
//!
//! Each Nacos client holds one TCP connection, and with the cluster in the load
//! generator's process both ends of every connection count against one open-file limit
//! (a hard limit of 20,000 caps such a run below 10,000 clients). [`ClusterProcess`] runs
//! the cluster in a child process instead: the load generator re-executes itself
//! (`loadgen cluster-serve`, a hidden subcommand, so it works from `cargo run` without
//! another binary), reads the child's `READY` line with the nodes' main addresses, and then
//! drives it like `--targets`.
//!
//! The two processes talk over the child's stdin and stdout, one line each way:
//!
//! * child → parent, once: `READY host:port,host:port,…` (the nodes' main addresses);
//! * parent → child: `agree`, answered `AGREE <0|1> <instances,…>`: whether every node
//!   holds the same clients ([`nodes_agree`](super::embedded::nodes_agree)) and each node's instance count;
//! * the parent closes the child's stdin: the child stops its nodes and exits.
//!
//! No orphan is left behind: the child exits when its stdin closes, which also happens when
//! the parent dies of a signal; dropping a [`ClusterProcess`] that was not shut down kills
//! the child. The child runs in its own process group, so a Ctrl-C at the terminal reaches
//! only the load generator, which stops the load, checks the nodes and then stops the
//! child.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use parking_lot::Mutex;

use super::embedded;
use crate::protocol::nacos::DESCRIPTOR_MARGIN;

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "cluster-serve";

/// How long the child may take to start its nodes (it waits until they have loaded).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the child may take to stop after its stdin closed, before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether an embedded cluster with `clients` Nacos connections fits in this process's
/// open-file limit (two descriptors per connection), given the hard limit `hard`.
pub fn fits_in_process(clients: u64, hard: u64) -> bool {
    2 * clients + DESCRIPTOR_MARGIN <= hard
}

struct Pipes {
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// A cluster running in a child process. See the module documentation.
pub struct ClusterProcess {
    child: Mutex<Child>,
    pipes: Arc<Mutex<Pipes>>,
    targets: Vec<String>,
    pid: u32,
}

impl std::fmt::Debug for ClusterProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterProcess")
            .field("pid", &self.pid)
            .field("targets", &self.targets)
            .finish()
    }
}

impl ClusterProcess {
    /// Starts `exe cluster-serve` with `nodes` nodes running as `runtime` says,
    /// asking it to allow `descriptors` open files (and serve TLS with `tls`), and waits for
    /// its `READY` line.
    pub async fn start(
        exe: &Path,
        nodes: usize,
        runtime: super::embedded::NodeRuntime,
        descriptors: u64,
        tls: Option<&crate::tls::NodeTlsFiles>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(exe);
        command
            .arg(SUBCOMMAND)
            .args(["--nodes", &nodes.to_string()])
            .args(["--node-threads", &runtime.threads.to_string()])
            .args(["--descriptors", &descriptors.to_string()]);
        if runtime.sdk_reuseport {
            command.arg("--sdk-reuseport");
        }
        if let Some(tls) = tls {
            command.arg("--tls-cert").arg(&tls.cert);
            command.arg("--tls-key").arg(&tls.key);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a terminal's Ctrl-C goes to the load generator only.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start the cluster process {}", exe.display()))?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the cluster process has no stdin/stdout pipes");
        };
        let mut process = ClusterProcess {
            child: Mutex::new(child),
            pipes: Arc::new(Mutex::new(Pipes {
                stdin: Some(stdin),
                stdout: BufReader::new(stdout),
            })),
            targets: Vec::new(),
            pid,
        };
        // On any error below, dropping `process` kills the child.
        let pipes = process.pipes.clone();
        let read =
            tokio::task::spawn_blocking(move || read_reply(&mut pipes.lock().stdout, "READY"));
        let line = tokio::time::timeout(READY_TIMEOUT, read)
            .await
            .map_err(|_| {
                anyhow::anyhow!("the cluster process was not ready within {READY_TIMEOUT:?}")
            })?
            .context("the cluster process reader failed")?
            .context("cannot read the cluster process's output")?;
        let Some(list) = line.trim().strip_prefix("READY ") else {
            let status = process.child.lock().wait().ok();
            anyhow::bail!(
                "the cluster process (pid {pid}) said {:?} instead of READY (exit: {status:?})",
                line.trim()
            );
        };
        process.targets = list.split(',').map(str::to_owned).collect();
        anyhow::ensure!(
            process.targets.len() == nodes,
            "the cluster process announced {} nodes, not {nodes}",
            process.targets.len()
        );
        Ok(process)
    }

    /// The nodes' main addresses (`host:port`), as `--targets` takes them.
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks the child whether every node holds the same clients; returns that and each
    /// node's instance count (as [`nodes_agree`](super::embedded::nodes_agree)).
    pub async fn agree(&self) -> anyhow::Result<(bool, Vec<usize>)> {
        let pipes = self.pipes.clone();
        let line = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut p = pipes.lock();
            let stdin = p
                .stdin
                .as_mut()
                .ok_or_else(|| std::io::Error::other("the cluster process was stopped"))?;
            stdin.write_all(b"agree\n")?;
            stdin.flush()?;
            read_reply(&mut p.stdout, "AGREE")
        })
        .await
        .context("the cluster process reader failed")?
        .context("cannot talk to the cluster process")?;
        parse_agree(&line).ok_or_else(|| {
            anyhow::anyhow!("the cluster process answered {:?} to agree", line.trim())
        })
    }

    /// Closes the child's stdin so that it stops its nodes, waits for it to exit (killing
    /// it after 15 s).
    pub async fn shutdown(self) {
        let this = self;
        let _ = tokio::task::spawn_blocking(move || {
            this.pipes.lock().stdin.take();
            this.wait_or_kill(EXIT_TIMEOUT);
        })
        .await;
    }

    fn wait_or_kill(&self, within: Duration) {
        let mut child = self.child.lock();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        let mut child = self.child.lock();
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The next line starting with `prefix` or `ERROR` (other lines are passed on to this
/// process's stdout); an empty string at the end of the output.
fn read_reply(out: &mut BufReader<ChildStdout>, prefix: &str) -> std::io::Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 || line.starts_with(prefix) || line.starts_with("ERROR") {
            return Ok(line);
        }
        print!("{line}");
    }
}

fn parse_agree(line: &str) -> Option<(bool, Vec<usize>)> {
    let mut words = line.split_whitespace();
    if words.next()? != "AGREE" {
        return None;
    }
    let ok = match words.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let counts = match words.next() {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|c| c.parse().ok())
            .collect::<Option<Vec<usize>>>()?,
    };
    Some((ok, counts))
}

fn agree_line(ok: bool, counts: &[usize]) -> String {
    let list: Vec<String> = counts.iter().map(usize::to_string).collect();
    format!("AGREE {} {}\n", u8::from(ok), list.join(","))
}

/// The child's side (`loadgen cluster-serve`): starts the cluster, prints `READY`, answers
/// `agree`, stops when stdin closes. Returns an error to print if the cluster cannot
/// start.
pub async fn serve(
    nodes: usize,
    runtime: embedded::NodeRuntime,
    descriptors: u64,
    tls: Option<crate::tls::NodeTlsFiles>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=32).contains(&nodes),
        "--nodes: must be in 1..=32, not {nodes}"
    );
    match crate::protocol::nacos::raise_nofile(descriptors) {
        Ok(l) if !l.is_enough() => eprintln!("loadgen cluster process: WARNING: {l}"),
        Ok(_) => {}
        Err(e) => eprintln!("loadgen cluster process: cannot read the open-file limit: {e}"),
    }
    let tls = tls.map(|t| t.load()).transpose()?;
    let cluster = embedded::start(nodes, runtime, tls, None).await?;
    let cluster = Arc::new(cluster);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", cluster.server_list().join(","))?;
        out.flush()?;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    // stdin is read on a thread of its own: a blocking read, ended by EOF.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.blocking_send(line.trim().to_owned()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    while let Some(cmd) = rx.recv().await {
        let answer = match cmd.as_str() {
            "agree" => {
                let (ok, counts) = embedded::nodes_agree(&cluster);
                agree_line(ok, &counts)
            }
            other => format!("ERROR unknown command {other:?}\n"),
        };
        let mut out = std::io::stdout().lock();
        if out
            .write_all(answer.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    if let Ok(c) = Arc::try_unwrap(cluster) {
        c.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agree_lines_round_trip() {
        assert_eq!(
            parse_agree(&agree_line(true, &[3, 3, 3])),
            Some((true, vec![3, 3, 3]))
        );
        assert_eq!(
            parse_agree(&agree_line(false, &[1, 2])),
            Some((false, vec![1, 2]))
        );
        assert_eq!(parse_agree("AGREE 1 "), Some((true, vec![])));
        assert_eq!(parse_agree("AGREE 2 1"), None);
        assert_eq!(parse_agree("READY x"), None);
        assert_eq!(parse_agree("AGREE 1 a,b"), None);
    }

    #[test]
    fn in_process_fit_counts_both_ends() {
        assert!(fits_in_process(1_000, 20_000));
        assert!(!fits_in_process(10_000, 20_000));
        assert!(fits_in_process(10_000, 1 << 20));
    }
}
