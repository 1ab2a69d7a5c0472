//! Cluster members: the configured list, each member's state, and the probe rules.
//!
//! Members are identified by the `ip:port` of their main port, exactly as in Nacos's
//! `cluster.conf`. The list is sorted by address when a node is built, so every node given
//! the same list numbers the members identically; a [`MemberId`] is an index into it.

use crate::name::Name;
use std::fmt;

/// Index of a member in the sorted member list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(pub u16);

impl MemberId {
    /// The index as `usize`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The health of a member as seen by this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// The last probe succeeded.
    Up,
    /// The last probe failed, but fewer than the threshold in a row. Still routed to.
    Suspicious,
    /// The threshold of consecutive probes failed. Not routed to.
    Down,
}

impl MemberState {
    /// Whether routing includes a member in this state (UP and SUSPICIOUS, as Nacos).
    pub fn is_routable(self) -> bool {
        !matches!(self, MemberState::Down)
    }

    /// The state as a lower-case word (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Suspicious => "suspicious",
            MemberState::Down => "down",
        }
    }
}

/// The member list: sorted, deduplicated addresses and which one is this node.
#[derive(Debug, Clone)]
pub struct MemberList {
    addrs: Vec<Name>,
    me: MemberId,
}

/// Why a member list was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberListError {
    /// This node's own address is not in the list.
    #[error("this node's address {0} is not in the member list")]
    SelfMissing(String),
    /// An entry is not of the form `host:port`.
    #[error("member address {0:?} is not host:port")]
    BadAddress(String),
    /// More members than the protocol supports.
    #[error("too many members: {0} (at most {max})", max = MAX_MEMBERS)]
    TooMany(usize),
}

/// Most members in one cluster: member ids are packed into 10 bits of a revision.
pub const MAX_MEMBERS: usize = 1024;

impl MemberList {
    /// Builds the list from `addrs` (any order, duplicates allowed) and this node's address.
    /// An empty `addrs` means standalone: the list is just this node.
    pub fn new(me: &str, addrs: &[String]) -> Result<Self, MemberListError> {
        let mut all: Vec<String> = addrs.iter().map(|a| a.trim().to_string()).collect();
        all.retain(|a| !a.is_empty());
        if all.is_empty() {
            all.push(me.to_string());
        }
        for a in &all {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(MemberListError::BadAddress(a.clone()));
            }
        }
        all.sort();
        all.dedup();
        if all.len() > MAX_MEMBERS {
            return Err(MemberListError::TooMany(all.len()));
        }
        let idx = all
            .iter()
            .position(|a| a == me)
            .ok_or_else(|| MemberListError::SelfMissing(me.to_string()))?;
        Ok(Self {
            addrs: all.iter().map(|a| Name::new(a)).collect(),
            me: MemberId(idx as u16),
        })
    }

    /// This node.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// Number of members, this node included.
    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Whether the list is empty (never true for a built list).
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// Whether this node is alone (standalone mode).
    pub fn is_standalone(&self) -> bool {
        self.addrs.len() == 1
    }

    /// The address of `id`.
    pub fn addr(&self, id: MemberId) -> &Name {
        &self.addrs[id.index()]
    }

    /// The id of the member at `addr`.
    pub fn find(&self, addr: &str) -> Option<MemberId> {
        self.addrs
            .binary_search_by(|a| a.as_str().cmp(addr))
            .ok()
            .map(|i| MemberId(i as u16))
    }

    /// All members, this node included, in address order.
    pub fn ids(&self) -> impl Iterator<Item = MemberId> + '_ {
        (0..self.addrs.len()).map(|i| MemberId(i as u16))
    }

    /// All members except this node.
    pub fn peers(&self) -> impl Iterator<Item = MemberId> + '_ {
        let me = self.me;
        self.ids().filter(move |&m| m != me)
    }
}

/// The probe bookkeeping of one peer: the state machine of issue "membership".
#[derive(Debug, Clone)]
pub(crate) struct PeerHealth {
    pub(crate) state: MemberState,
    pub(crate) consecutive_failures: u32,
    pub(crate) probe_in_flight: bool,
}

impl PeerHealth {
    pub(crate) fn new() -> Self {
        Self {
            // Optimistic start, as Nacos: a member is routable until a probe fails.
            state: MemberState::Up,
            consecutive_failures: 0,
            probe_in_flight: false,
        }
    }

    /// Applies a probe result; returns the new state if it changed.
    pub(crate) fn on_probe(&mut self, ok: bool, down_after: u32) -> Option<MemberState> {
        self.probe_in_flight = false;
        let before = self.state;
        if ok {
            self.consecutive_failures = 0;
            self.state = MemberState::Up;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.state = if self.consecutive_failures >= down_after {
                MemberState::Down
            } else {
                MemberState::Suspicious
            };
        }
        (self.state != before).then_some(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_finds_self() {
        let l = MemberList::new(
            "10.0.0.2:8848",
            &[
                "10.0.0.3:8848".into(),
                "10.0.0.1:8848".into(),
                "10.0.0.2:8848".into(),
            ],
        )
        .unwrap();
        assert_eq!(l.me(), MemberId(1));
        assert_eq!(l.addr(MemberId(0)).as_str(), "10.0.0.1:8848");
        assert_eq!(l.find("10.0.0.3:8848"), Some(MemberId(2)));
        assert_eq!(l.peers().count(), 2);
    }

    #[test]
    fn bad_lists_are_rejected() {
        assert!(matches!(
            MemberList::new("a:1", &["b:1".into()]),
            Err(MemberListError::SelfMissing(_))
        ));
        assert!(matches!(
            MemberList::new("a:1", &["a:1".into(), "nope".into()]),
            Err(MemberListError::BadAddress(_))
        ));
        assert!(MemberList::new("a:1", &[]).unwrap().is_standalone());
    }

    #[test]
    fn probe_state_machine() {
        let mut h = PeerHealth::new();
        assert_eq!(h.on_probe(false, 3), Some(MemberState::Suspicious));
        assert_eq!(h.on_probe(false, 3), None);
        assert_eq!(h.on_probe(false, 3), Some(MemberState::Down));
        assert_eq!(h.on_probe(true, 3), Some(MemberState::Up));
    }
}
