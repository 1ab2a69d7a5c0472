//! The processes of an embedded cluster of another system (the etcd cluster of
//! `--protocol etcd`, the ZooKeeper ensemble): one per member, each in its own process
//! group (a terminal's Ctrl-C reaches only the load generator), its stderr in a log file
//! under one temporary directory. Dropping [`MemberProcesses`] (at the end, on an error,
//! after Ctrl-C) kills every member still running, waits for it and removes the directory.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::Context as _;
use parking_lot::Mutex;

/// The members' processes and their directory. See the module documentation.
pub(crate) struct MemberProcesses {
    /// What the members are, for messages ("etcd", "ZooKeeper").
    system: &'static str,
    children: Mutex<Vec<Child>>,
    /// Data, configuration and logs; `None` only while dropping.
    dir: Option<tempfile::TempDir>,
}

impl MemberProcesses {
    /// No members yet, and a fresh temporary directory named `loadgen-<prefix>-...`.
    pub(crate) fn new(system: &'static str, prefix: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("loadgen-{prefix}-"))
            .tempdir()
            .with_context(|| {
                format!("cannot create a temporary directory for the {system} members")
            })?;
        Ok(Self {
            system,
            children: Mutex::new(Vec::new()),
            dir: Some(dir),
        })
    }

    /// The directory holding the members' files.
    pub(crate) fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new(""), tempfile::TempDir::path)
    }

    /// Member `i`'s log file.
    pub(crate) fn log_path(&self, i: usize) -> PathBuf {
        self.dir().join(format!("member-{i}.log"))
    }

    /// Starts member `i` with `cmd` (its stderr to [`log_path`](Self::log_path)); when the
    /// program is not found, the error is `not_found`.
    pub(crate) fn spawn(
        &self,
        i: usize,
        mut cmd: Command,
        not_found: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let log_path = self.log_path(i);
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let spawned = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => {
                self.children.lock().push(child);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(anyhow::anyhow!(not_found())),
            Err(e) => Err(e).context(format!(
                "cannot start {} member {i} ({})",
                self.system,
                cmd.get_program().to_string_lossy()
            )),
        }
    }

    /// The exit status of a member that has exited, if any.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        self.children
            .lock()
            .iter_mut()
            .find_map(|c| c.try_wait().ok().flatten())
    }

    /// The last 20 lines of member `i`'s log.
    pub(crate) fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The members' process ids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.children.lock().iter().map(Child::id).collect()
    }
}

impl Drop for MemberProcesses {
    fn drop(&mut self) {
        for child in self.children.lock().iter_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
        {
            eprintln!(
                "loadgen: cannot remove the {} members' directory: {e}",
                self.system
            );
        }
    }
}

/// `n` distinct free loopback ports, chosen by the OS. Held only while chosen: another
/// process could take one before a member binds it, which that member's start reports.
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot bind a loopback port for an embedded cluster member")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot read a bound port")
}
