//! Raising the open-file limit. A node holds a descriptor per connection on each of its
//! ports (`distro-server` raises the limit for `--max-tcp-connections` at start), and a
//! load generator holds one per simulated Nacos client, plus the other end of each when
//! the cluster is embedded in the same process.

use rlimit::Resource;

/// What [`raise_nofile`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit before.
    pub before: u64,
    /// Soft limit now.
    pub now: u64,
    /// Hard limit now.
    pub hard: u64,
    /// How many descriptors were asked for.
    pub wanted: u64,
}

impl NofileLimit {
    /// Whether the soft limit now covers what was asked for.
    pub fn is_enough(&self) -> bool {
        self.now >= self.wanted
    }
}

impl std::fmt::Display for NofileLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_enough() {
            write!(
                f,
                "open-file limit {} (was {}, wanted {})",
                self.now, self.before, self.wanted
            )
        } else {
            write!(
                f,
                "open-file limit is {} (hard limit {}), below the {} descriptors this run needs: \
                 connections will fail with EMFILE; raise it (ulimit -n, or run as root)",
                self.now, self.hard, self.wanted
            )
        }
    }
}

/// Raises `RLIMIT_NOFILE`'s soft limit to at least `wanted`, and the hard limit too when
/// that is allowed (as root). Never lowers anything. An error only when the limit cannot
/// even be read; a limit that stays too low is reported by [`NofileLimit::is_enough`].
pub fn raise_nofile(wanted: u64) -> std::io::Result<NofileLimit> {
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    let mut result = NofileLimit {
        before: soft,
        now: soft,
        hard,
        wanted,
    };
    if soft >= wanted {
        return Ok(result);
    }
    if hard < wanted && rlimit::setrlimit(Resource::NOFILE, wanted, wanted).is_ok() {
        result.now = wanted;
        result.hard = wanted;
        return Ok(result);
    }
    let target = wanted.min(hard);
    if target > soft && rlimit::setrlimit(Resource::NOFILE, target, hard).is_ok() {
        result.now = target;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_never_lowers_and_reports() {
        let (soft, _) = rlimit::getrlimit(Resource::NOFILE).expect("readable");
        let r = raise_nofile(soft / 2).expect("readable");
        assert_eq!(r.now, soft);
        assert!(r.is_enough());
        assert!(r.to_string().starts_with("open-file limit"));
        let r = raise_nofile(soft + 10).expect("readable");
        assert!(r.now >= soft);
        assert_eq!(r.is_enough(), r.now >= soft + 10);
    }
}
