//! Member lists that change while the node runs: the watched `--members-file` and the
//! re-resolved `--members-dns`.
//!
//! The member list of a node is the union of three sources: `--members` (fixed), the
//! lines of `--members-file`, and the addresses `--members-dns NAME:PORT` resolves to.
//! [`watch`] reads the file every `file_interval` (1 s) and resolves the name every
//! `dns_interval` (5 s), through the system's resolver or, with a `dns_server`, by asking
//! that server ([`super::dns_query`]); when the union changes it hands it to [`Node::set_members`],
//! which moves ownership (see `distro_core::node::membership`). A file that does not parse
//! is logged with its line and reason, and the list in force is kept; so is a name that
//! does not resolve, or resolves to nothing (more likely a DNS hiccup than a cluster
//! without members). A file is taken once two reads 50 ms apart agree, so a file being
//! rewritten in place is not read half-written (writing a new file and renaming it over
//! the old one is better still).

use crate::clock::Clock;
use distro_core::Node;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default period of `--members-file` reads.
pub const DEFAULT_FILE_INTERVAL: Duration = Duration::from_secs(1);
/// Default period of `--members-dns` resolutions.
pub const DEFAULT_DNS_INTERVAL: Duration = Duration::from_secs(5);

/// Where the member list comes from while the node runs.
#[derive(Debug, Clone)]
pub struct MemberSources {
    /// `--members`: always members.
    pub fixed: Vec<String>,
    /// `--members-file`, read again every `file_interval`.
    pub file: Option<PathBuf>,
    /// `--members-dns NAME:PORT`, resolved again every `dns_interval`.
    pub dns: Option<String>,
    /// `--members-dns-server`: the DNS server to ask instead of the system's resolver.
    pub dns_server: Option<std::net::SocketAddr>,
    /// Period of file reads.
    pub file_interval: Duration,
    /// Period of DNS resolutions.
    pub dns_interval: Duration,
}

impl MemberSources {
    /// Whether anything can change (a file or a name to watch).
    pub fn is_dynamic(&self) -> bool {
        self.file.is_some() || self.dns.is_some()
    }
}

/// Parses a members file: one `host:port` per line, `#` starts a comment, blank lines are
/// skipped. An error names the line and the reason.
pub fn parse_members_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let entry = line.split('#').next().unwrap_or_default().trim();
        if entry.is_empty() {
            continue;
        }
        let ok = entry.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty()
                && !h.contains(char::is_whitespace)
                && p.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(format!(
                "line {}: {entry:?} is not host:port (a port 1-65535)",
                n + 1
            ));
        }
        out.push(entry.to_string());
    }
    Ok(out)
}

/// Reads and parses the members file at `path`.
pub fn read_members_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    parse_members_file(&text)
}

/// Splits `spec` into NAME and PORT; an error says what is wrong.
pub fn split_spec(spec: &str) -> Result<(&str, u16), String> {
    let (host, port) = spec
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("{spec:?} is not NAME:PORT"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port:?} is not 1-65535"))?;
    Ok((host, port))
}

/// Resolves `spec` (NAME:PORT) into sorted `ip:port` entries: through the system's
/// resolver, or by asking `server` for the name's A records (an IP address as NAME is
/// taken as it is).
pub async fn resolve(
    spec: &str,
    server: Option<std::net::SocketAddr>,
) -> Result<Vec<String>, String> {
    let (host, port) = split_spec(spec)?;
    let found: BTreeSet<String> = match server {
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| e.to_string())?
            .map(|a| a.to_string())
            .collect(),
        Some(_) if host.parse::<std::net::IpAddr>().is_ok() => {
            [format!("{host}:{port}")].into_iter().collect()
        }
        Some(server) => super::dns_query::query_a(server, host)
            .await?
            .into_iter()
            .map(|ip| format!("{ip}:{port}"))
            .collect(),
    };
    Ok(found.into_iter().collect())
}

/// Reads the file twice, 50 ms apart, until both reads agree (at most a few tries).
async fn read_stable(path: &std::path::Path) -> Result<Vec<String>, String> {
    let mut last = read_members_file(path);
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again = read_members_file(path);
        if again == last {
            return last;
        }
        last = again;
    }
    Err("it kept changing while being read".to_string())
}

/// Watches `sources` and hands every change of the union to `node`, until `stop`.
pub async fn watch(
    node: Arc<Node>,
    sources: MemberSources,
    clock: Clock,
    stop: impl std::future::Future<Output = ()>,
) {
    if !sources.is_dynamic() {
        return;
    }
    let period = match (&sources.file, &sources.dns) {
        (Some(_), Some(_)) => sources.file_interval.min(sources.dns_interval),
        (Some(_), None) => sources.file_interval,
        _ => sources.dns_interval,
    }
    .max(Duration::from_millis(10));
    let start = tokio::time::Instant::now();
    let mut interval = tokio::time::interval_at(start, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let ticks = tokio_stream::wrappers::IntervalStream::new(interval);
    watch_ticks(node, sources, clock, stop, start, ticks).await;
}

/// [`watch`] on `ticks` (the ticks' scheduled instants, the first at `start`), until
/// `stop` or the last tick.
async fn watch_ticks(
    node: Arc<Node>,
    sources: MemberSources,
    clock: Clock,
    stop: impl std::future::Future<Output = ()>,
    start: tokio::time::Instant,
    ticks: impl tokio_stream::Stream<Item = tokio::time::Instant>,
) {
    use tokio_stream::StreamExt as _;
    tokio::pin!(stop);
    tokio::pin!(ticks);
    // Sources fall due by the ticks' scheduled instants, never by when this task woke:
    // with the wake-up time, a tick that woke a few microseconds earlier after its
    // deadline than the one before it found the source not yet due and skipped it for a
    // whole period, so one node read a changed file a second after the others (their
    // views of the members, hence their routing, stayed apart for up to two periods).
    let mut file_entries: Option<Vec<String>> = None;
    let mut file_error: Option<String> = None;
    let mut dns_entries: Option<Vec<String>> = None;
    let mut next_file = start;
    let mut next_dns = start;
    loop {
        let tick = tokio::select! {
            _ = &mut stop => return,
            tick = ticks.next() => match tick {
                Some(tick) => tick,
                None => return,
            },
        };
        if let Some(path) = &sources.file
            && tick >= next_file
        {
            next_file = tick + sources.file_interval;
            match read_stable(path).await {
                Ok(entries) => {
                    file_error = None;
                    file_entries = Some(entries);
                }
                Err(e) => {
                    if file_error.as_ref() != Some(&e) {
                        tracing::error!(file = %path.display(), error = %e,
                            "--members-file is not valid; keeping the member list in force");
                    }
                    file_error = Some(e);
                }
            }
        }
        if let Some(spec) = &sources.dns
            && tick >= next_dns
        {
            next_dns = tick + sources.dns_interval;
            match resolve(spec, sources.dns_server).await {
                Ok(entries) if !entries.is_empty() => dns_entries = Some(entries),
                Ok(_) => tracing::warn!(name = %spec,
                    "--members-dns resolved to no address; keeping the member list in force"),
                Err(e) => tracing::warn!(name = %spec, error = %e,
                    "--members-dns did not resolve; keeping the member list in force"),
            }
        }
        // Until every source has been read once, the union is not known.
        if (sources.file.is_some() && file_entries.is_none())
            || (sources.dns.is_some() && dns_entries.is_none())
        {
            continue;
        }
        let mut union: BTreeSet<String> = sources.fixed.iter().cloned().collect();
        union.extend(file_entries.iter().flatten().cloned());
        union.extend(dns_entries.iter().flatten().cloned());
        let union: Vec<String> = union.into_iter().collect();
        apply(&node, &union, clock());
    }
}

/// Hands `list` to `node`, logging what changed.
pub fn apply(node: &Node, list: &[String], now: u64) {
    let before: BTreeSet<String> = node.members().addrs().into_iter().collect();
    match node.set_members(list, now) {
        Ok(false) => {}
        Ok(true) => {
            let members = node.members();
            let after: BTreeSet<String> = members.addrs().into_iter().collect();
            let joined: Vec<&String> = after.difference(&before).collect();
            let left: Vec<&String> = before.difference(&after).collect();
            tracing::info!(
                ?joined,
                ?left,
                members = after.len(),
                version = members.version(),
                "member list changed"
            );
            if members.is_leaving() {
                tracing::warn!(
                    "this node is not in the member list any more: it owns nothing and hands its clients over"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "member list rejected; keeping the one in force"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_file_parses_with_comments_and_names_a_bad_line() {
        let ok = parse_members_file("# cluster\n10.0.0.1:8848\n\n 10.0.0.2:8848 # two\n").unwrap();
        assert_eq!(ok, vec!["10.0.0.1:8848", "10.0.0.2:8848"]);
        let e = parse_members_file("10.0.0.1:8848\n10.0.0.2\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("10.0.0.2"), "{e}");
        let e = parse_members_file("10.0.0.1:0\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("port"), "{e}");
    }

    #[tokio::test]
    async fn a_name_resolves_with_its_port() {
        let found = resolve("localhost:8848", None).await.unwrap();
        assert!(
            !found.is_empty() && found.iter().all(|a| a.ends_with(":8848")),
            "{found:?}"
        );
        assert!(
            resolve("localhost", None)
                .await
                .unwrap_err()
                .contains("NAME:PORT")
        );
        assert!(
            resolve("localhost:0", None)
                .await
                .unwrap_err()
                .contains("port")
        );
    }

    /// Every tick at which the file falls due reads it, whenever the task wakes: the
    /// ticks below are handed in at once (their task wakes "early", long before the
    /// instants they stand for, as a tick woken less late than the one before it did).
    /// Before the fix a source fell due by the wake-up time, and the second tick skipped
    /// the file: a node then read a changed file a period after the others.
    #[tokio::test]
    async fn the_file_is_read_at_every_tick_it_falls_due_however_late_the_task_wakes() {
        use distro_core::{Config, MemberList};
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("members");
        let me = "127.0.0.1:8848";
        let write = |n: u16| {
            let lines: Vec<String> = (0..n)
                .map(|i| format!("127.0.0.1:{}\n", 8848 + i))
                .collect();
            std::fs::write(&file, lines.concat()).expect("members file");
        };
        write(2);
        let node = Arc::new(
            Node::new(
                Config::default(),
                MemberList::new(me, &[]).expect("list"),
                1,
            )
            .expect("node"),
        );
        let every = Duration::from_secs(1);
        let sources = MemberSources {
            fixed: vec![me.to_string()],
            file: Some(file.clone()),
            dns: None,
            dns_server: None,
            file_interval: every,
            dns_interval: Duration::from_secs(5),
        };
        let (tick, ticks) = tokio::sync::mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        let task = tokio::spawn(watch_ticks(
            node.clone(),
            sources,
            crate::clock::system(),
            std::future::pending(),
            start,
            tokio_stream::wrappers::UnboundedReceiverStream::new(ticks),
        ));
        // Waits (10 s at most) until the node has `n` members.
        let members = |n: usize| {
            let node = node.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while node.members().len() != n {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the file naming {n} members was not read: the node has {}",
                        node.members().len()
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        for k in 0..4u32 {
            write(2 + k as u16);
            tick.send(start + every * k).expect("the watch runs");
            members(2 + k as usize).await;
        }
        drop(tick);
        task.await.expect("the watch ends with its ticks");
    }
}
