//! How the comparison's systems map a simulated client onto their keep-alive units:
//! `--etcd-lease` (which lease an etcd client's keys are put with) and `--zk-sessions`
//! (which session a ZooKeeper client's znodes live in).
//!
//! * etcd, [`EtcdLease::PerClient`] (the default): a lease per client, kept alive by the
//!   client's heartbeats: a service instance that registers itself, as gRPC naming
//!   resolvers, Kratos and go-micro do. [`EtcdLease::Shared`]: `N` leases in all, client `c`
//!   on lease `c mod N`, kept alive by a keep-alive of its own for all its clients: a process
//!   (an agent, a gateway) registering many instances under one lease.
//! * ZooKeeper, [`ZkSessions::Shared`] (the default, 16 per member): a pool of sessions per
//!   member that the clients' operations share, as etcd's channels and distro's native
//!   lanes are shared; [`ZkSessions::PerClient`]: a session (and a TCP connection) per
//!   client, opened before the measured phases: Curator's service discovery, where every
//!   instance holds its own session and ephemeral znode.

use std::fmt;

/// Sessions per member of `--zk-sessions shared` without a count.
pub const DEFAULT_ZK_SESSIONS_PER_MEMBER: usize = 16;

/// `--etcd-lease`: see the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EtcdLease {
    /// A lease per client, kept alive by its heartbeats.
    #[default]
    PerClient,
    /// This many leases in all (client `c` on lease `c mod N`), each kept alive every
    /// [`SHARED_LEASE_RENEWAL`] by a keep-alive of its own, whatever its clients do.
    Shared(u32),
}

/// In `--etcd-lease shared` mode, how often each shared lease is renewed: a third of its
/// 15 s TTL, as etcd's client libraries renew a lease. A client's heartbeat sends no
/// request: it is answered from the lease's state.
pub const SHARED_LEASE_RENEWAL: std::time::Duration = std::time::Duration::from_secs(5);

/// `--zk-sessions`: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZkSessions {
    /// A session per client.
    PerClient,
    /// This many sessions per member, shared by the clients sent there.
    Shared(usize),
}

impl Default for ZkSessions {
    fn default() -> Self {
        ZkSessions::Shared(DEFAULT_ZK_SESSIONS_PER_MEMBER)
    }
}

/// `per-client`, or `shared` with an optional `:N` (N >= 1).
fn parse_mode(option: &str, s: &str, shared_default: u64) -> Result<Option<u64>, String> {
    let usage = "use per-client, shared or shared:N (N >= 1)";
    match s.split_once(':') {
        None if s == "per-client" => Ok(None),
        None if s == "shared" => Ok(Some(shared_default)),
        Some(("shared", n)) => match n.parse::<u64>() {
            Ok(n) if n >= 1 && n <= u64::from(u32::MAX) => Ok(Some(n)),
            _ => Err(format!(
                "{option} {s:?}: {n:?} is not a count of at least 1; {usage}"
            )),
        },
        _ => Err(format!("{option} {s:?}: unknown mode; {usage}")),
    }
}

impl std::str::FromStr for EtcdLease {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match parse_mode("--etcd-lease", s, 1)? {
            None => EtcdLease::PerClient,
            Some(n) => EtcdLease::Shared(n as u32),
        })
    }
}

impl std::str::FromStr for ZkSessions {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(
            match parse_mode("--zk-sessions", s, DEFAULT_ZK_SESSIONS_PER_MEMBER as u64)? {
                None => ZkSessions::PerClient,
                Some(n) => ZkSessions::Shared(n as usize),
            },
        )
    }
}

impl fmt::Display for EtcdLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdLease::PerClient => f.write_str("per-client"),
            EtcdLease::Shared(n) => write!(f, "shared:{n}"),
        }
    }
}

impl fmt::Display for ZkSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZkSessions::PerClient => f.write_str("per-client"),
            ZkSessions::Shared(n) => write!(f, "shared:{n}"),
        }
    }
}

impl EtcdLease {
    /// What the mode means, for the comparison's report.
    pub fn describe(self) -> String {
        match self {
            EtcdLease::PerClient => {
                "a lease per client, kept alive by its heartbeats (--etcd-lease per-client)".into()
            }
            EtcdLease::Shared(n) => format!(
                "{n} lease(s) shared by all clients, each renewed every 5 s by a keep-alive of \
                 its own; a client's heartbeat is answered without a request (--etcd-lease \
                 shared:{n})"
            ),
        }
    }
}

impl ZkSessions {
    /// What the mode means, for the comparison's report.
    pub fn describe(self) -> String {
        match self {
            ZkSessions::PerClient => {
                "a session (and a connection) per client (--zk-sessions per-client)".into()
            }
            ZkSessions::Shared(n) => format!(
                "{n} sessions per member shared by the clients, a heartbeat an `exists` on \
                 the client's znode (--zk-sessions shared:{n})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_back() {
        for (s, e) in [
            ("per-client", EtcdLease::PerClient),
            ("shared", EtcdLease::Shared(1)),
            ("shared:4", EtcdLease::Shared(4)),
        ] {
            assert_eq!(s.parse::<EtcdLease>(), Ok(e));
        }
        for (s, z) in [
            ("per-client", ZkSessions::PerClient),
            ("shared", ZkSessions::Shared(16)),
            ("shared:2", ZkSessions::Shared(2)),
        ] {
            assert_eq!(s.parse::<ZkSessions>(), Ok(z));
        }
        assert_eq!(EtcdLease::Shared(3).to_string(), "shared:3");
        assert_eq!(ZkSessions::default().to_string(), "shared:16");
        assert_eq!(EtcdLease::default().to_string(), "per-client");
    }

    #[test]
    fn bad_modes_name_the_option_and_the_reason() {
        let e = "shared:0".parse::<EtcdLease>().expect_err("zero");
        assert!(
            e.contains("--etcd-lease") && e.contains("at least 1"),
            "{e}"
        );
        let e = "pool".parse::<ZkSessions>().expect_err("unknown");
        assert!(
            e.contains("--zk-sessions") && e.contains("unknown mode"),
            "{e}"
        );
        let e = "shared:x".parse::<ZkSessions>().expect_err("not a number");
        assert!(e.contains("\"x\""), "{e}");
    }
}
