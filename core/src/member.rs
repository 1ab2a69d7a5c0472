//! Cluster members: the configured list, each member's state, and the probe rules.
//!
//! Members are identified by the `ip:port` of their main port, exactly as in Nacos's
//! `cluster.conf`. The list can change while a node runs (members join and leave); a
//! [`MemberId`] is a slot that keeps its address for the node's life (see
//! [`MemberList`]).

use crate::name::Name;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A member's slot in this node's member table (see [`MemberList`]).
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

/// The address of every member id this process has assigned: append-only, so an id
/// keeps its meaning for the whole life of the process, whatever the list becomes. Shared
/// by every version of a node's [`MemberList`].
#[derive(Debug)]
pub(crate) struct Slots(Box<[OnceLock<Name>]>);

impl Slots {
    /// The address of `id`.
    pub(crate) fn addr(&self, id: MemberId) -> &Name {
        self.0[id.index()]
            .get()
            .expect("a member id is only handed out with its address")
    }
}

/// The member list: which members there are now, the address of each id, and which one is
/// this node.
///
/// **Member ids.** An id is a slot: the list given at start fills slots 0.. in address
/// order (so nodes started with the same list number members alike); a member added later
/// takes the next free slot; a member that leaves keeps its slot (its address, for the
/// replicas it still owns here) and gets it back if it returns. Ids are local to a node:
/// peers name members by address on the wire. The number of slots is fixed when the node
/// starts ([`MemberList::with_slots`]; it sizes the per-member tables of the node).
#[derive(Debug, Clone)]
pub struct MemberList {
    slots: Arc<Slots>,
    /// Slots assigned so far (`slots[..assigned]` are set).
    assigned: usize,
    /// The current members, in address order.
    current: Vec<MemberId>,
    me: MemberId,
    version: u64,
    /// The peers as a bit mask, when every one's index is below 64 (what the sync
    /// scheduler takes, see [`MemberList::peer_mask`]).
    peer_mask: Option<u64>,
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
    /// Every member slot of this node is taken (by current members and members that
    /// left); restart the node with more slots.
    #[error("no free member slot for {0} (all {1} slots assigned since this node started)")]
    NoSlot(String, usize),
}

/// Most members in one cluster: member ids are packed into 10 bits of a revision.
pub const MAX_MEMBERS: usize = 1024;

/// Member slots of a node unless configured: how many distinct addresses it can know over
/// its life (members joining and leaving included).
pub const DEFAULT_MEMBER_SLOTS: usize = 32;

/// Trims, drops empty entries, checks `host:port`, sorts and deduplicates.
fn normalize(me: &str, addrs: &[String], need_me: bool) -> Result<Vec<String>, MemberListError> {
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
    if need_me && !all.iter().any(|a| a == me) {
        return Err(MemberListError::SelfMissing(me.to_string()));
    }
    Ok(all)
}

/// `current` but `me` as a bit mask, if every index is below 64.
fn peer_mask(current: &[MemberId], me: MemberId) -> Option<u64> {
    current
        .iter()
        .filter(|&&m| m != me)
        .try_fold(0u64, |mask, m| {
            1u64.checked_shl(u32::from(m.0)).map(|b| mask | b)
        })
}

/// Peers a [`MemberList::word`] holds: those of the slots below this (bits `0..58`);
/// `me` takes the six bits above.
pub(crate) const WORD_PEERS: u32 = 58;

/// `me` in a word is below this (`63` would make [`NO_WORD`] a valid word).
const WORD_ME_MAX: u64 = 63;

/// The word of a list whose peers or `me` do not fit one.
pub(crate) const NO_WORD: u64 = u64::MAX;

/// This node's id and the peer mask of a [`MemberList::word`] (`None` for [`NO_WORD`]).
#[inline]
pub(crate) fn unpack_word(word: u64) -> Option<(MemberId, u64)> {
    if word == NO_WORD {
        return None;
    }
    Some((
        MemberId((word >> WORD_PEERS) as u16),
        word & ((1 << WORD_PEERS) - 1),
    ))
}

impl MemberList {
    /// Builds the list from `addrs` (any order, duplicates allowed) and this node's address,
    /// with [`DEFAULT_MEMBER_SLOTS`] slots (or as many as `addrs` needs). An empty `addrs`
    /// means standalone: the list is just this node.
    pub fn new(me: &str, addrs: &[String]) -> Result<Self, MemberListError> {
        Self::with_slots(me, addrs, DEFAULT_MEMBER_SLOTS)
    }

    /// As [`MemberList::new`], with room for `slots` distinct addresses over the node's
    /// life (at least the given list, at most [`MAX_MEMBERS`]).
    pub fn with_slots(me: &str, addrs: &[String], slots: usize) -> Result<Self, MemberListError> {
        let all = normalize(me, addrs, true)?;
        let n = slots.max(all.len()).min(MAX_MEMBERS);
        let table = Slots((0..n).map(|_| OnceLock::new()).collect());
        for (i, a) in all.iter().enumerate() {
            let _ = table.0[i].set(Name::new(a));
        }
        let idx = all
            .iter()
            .position(|a| a == me)
            .expect("normalize checked this node is listed");
        let current: Vec<MemberId> = (0..all.len()).map(|i| MemberId(i as u16)).collect();
        let me = MemberId(idx as u16);
        Ok(Self {
            slots: Arc::new(table),
            assigned: all.len(),
            peer_mask: peer_mask(&current, me),
            current,
            me,
            version: 0,
        })
    }

    /// The list that `addrs` describes, with the ids of this one: members already known
    /// keep their ids, new ones take free slots. A list without this node makes it
    /// *leaving* ([`MemberList::is_leaving`]): it routes nothing to itself, so it hands
    /// every ip:port client to the members.
    pub fn update(&self, addrs: &[String]) -> Result<Self, MemberListError> {
        let all = normalize(self.addr(self.me).as_str(), addrs, false)?;
        let mut assigned = self.assigned;
        let mut current = Vec::with_capacity(all.len());
        for a in &all {
            let id = match self.slot_of(a) {
                Some(id) => id,
                None => {
                    if assigned >= self.capacity() {
                        return Err(MemberListError::NoSlot(a.clone(), self.capacity()));
                    }
                    let id = MemberId(assigned as u16);
                    current.push((a.clone(), id));
                    assigned += 1;
                    continue;
                }
            };
            current.push((a.clone(), id));
        }
        // Only now, with the whole list valid: record the new addresses.
        for (a, id) in &current {
            if id.index() >= self.assigned {
                let _ = self.slots.0[id.index()].set(Name::new(a));
            }
        }
        // `all` is in address order, and so is `current`.
        let current: Vec<MemberId> = current.into_iter().map(|(_, id)| id).collect();
        Ok(Self {
            slots: self.slots.clone(),
            assigned,
            peer_mask: peer_mask(&current, self.me),
            current,
            me: self.me,
            version: self.version + 1,
        })
    }

    /// This list with `addr` known as a former member: the id it already has, or a free
    /// slot, without making it a current member (the list's version is unchanged). A node
    /// names the owner of every record it holds by a slot, and a node started after a
    /// member left was never given that member's address, yet its peers still hold (and
    /// send it, in a snapshot, a sync or a verify answer) replicas of the clients that
    /// member owned until their leases end.
    pub fn learn(&self, addr: &str) -> Result<(Self, MemberId), MemberListError> {
        if let Some(id) = self.slot_of(addr) {
            return Ok((self.clone(), id));
        }
        let addr = normalize(addr, &[addr.to_string()], false)?
            .pop()
            .expect("normalize keeps the one address it checked");
        if let Some(id) = self.slot_of(&addr) {
            return Ok((self.clone(), id));
        }
        if self.assigned >= self.capacity() {
            return Err(MemberListError::NoSlot(addr, self.capacity()));
        }
        let id = MemberId(self.assigned as u16);
        let _ = self.slots.0[id.index()].set(Name::new(&addr));
        let mut list = self.clone();
        list.assigned += 1;
        Ok((list, id))
    }

    /// This node.
    pub fn me(&self) -> MemberId {
        self.me
    }

    /// Whether this node is no longer in the list: it owns nothing and only hands over.
    pub fn is_leaving(&self) -> bool {
        !self.current.contains(&self.me)
    }

    /// Number of current members, this node included.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether the list is empty (never true for a built list).
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// Whether this node is alone (standalone mode).
    pub fn is_standalone(&self) -> bool {
        self.current == [self.me]
    }

    /// How many slots (distinct member addresses over the node's life) the node has: every
    /// member id is below it.
    pub fn capacity(&self) -> usize {
        self.slots.0.len()
    }

    /// How many times the list changed since the node started.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The address of `id` (a current member, or one that left).
    pub fn addr(&self, id: MemberId) -> &Name {
        self.slots.addr(id)
    }

    /// The address table, shared by every version of this list.
    pub(crate) fn slots(&self) -> Arc<Slots> {
        self.slots.clone()
    }

    /// The id of the current member at `addr`.
    pub fn find(&self, addr: &str) -> Option<MemberId> {
        self.current
            .binary_search_by(|&m| self.addr(m).as_str().cmp(addr))
            .ok()
            .map(|i| self.current[i])
    }

    /// The id ever assigned to `addr`: a current member or one that left.
    pub fn known(&self, addr: &str) -> Option<MemberId> {
        self.slot_of(addr)
    }

    fn slot_of(&self, addr: &str) -> Option<MemberId> {
        (0..self.assigned)
            .find(|&i| self.slots.0[i].get().is_some_and(|a| a.as_str() == addr))
            .map(|i| MemberId(i as u16))
    }

    /// Whether `id` is a current member.
    pub fn contains(&self, id: MemberId) -> bool {
        self.current.contains(&id)
    }

    /// All current members, this node included, in address order.
    pub fn ids(&self) -> impl Iterator<Item = MemberId> + Clone + '_ {
        self.current.iter().copied()
    }

    /// The peers ([`MemberList::peers`]) as a bit mask (bit `i` for the member of index
    /// `i`), if every one's index is below 64.
    pub(crate) fn peer_mask(&self) -> Option<u64> {
        self.peer_mask
    }

    /// This node's id and the peer mask packed in one word ([`unpack_word`]), or
    /// [`NO_WORD`] when they do not fit (a peer at slot [`WORD_PEERS`] or above, or no
    /// mask): what a write loads instead of the whole list (one atomic load, not a guarded
    /// pointer's).
    pub(crate) fn word(&self) -> u64 {
        match self.peer_mask {
            Some(mask) if mask >> WORD_PEERS == 0 && u64::from(self.me.0) < WORD_ME_MAX => {
                mask | u64::from(self.me.0) << WORD_PEERS
            }
            _ => NO_WORD,
        }
    }

    /// All current members except this node.
    pub fn peers(&self) -> impl Iterator<Item = MemberId> + Clone + '_ {
        let me = self.me;
        self.ids().filter(move |&m| m != me)
    }

    /// The current members' addresses, in address order.
    pub fn addrs(&self) -> Vec<String> {
        self.ids().map(|m| self.addr(m).to_string()).collect()
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
    fn the_word_holds_me_and_the_peer_mask_below_slot_58() {
        let addrs = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("10.0.{}.{}:8848", i / 200, i % 200))
                .collect()
        };
        let l = MemberList::with_slots("10.0.0.1:8848", &addrs(3), 100).unwrap();
        assert_eq!(
            unpack_word(l.word()),
            Some((l.me(), l.peer_mask().unwrap()))
        );
        // Up to slot 57 fit; a member at slot 58 does not (the mask does).
        let l = l.update(&addrs(58)).unwrap();
        assert_eq!(
            unpack_word(l.word()),
            Some((l.me(), l.peer_mask().unwrap()))
        );
        let l = l.update(&addrs(59)).unwrap();
        assert!(l.peer_mask().is_some());
        assert_eq!(l.word(), NO_WORD);
        assert_eq!(unpack_word(NO_WORD), None);
        // Back below: a word again.
        let l = l.update(&addrs(3)).unwrap();
        assert_eq!(
            unpack_word(l.word()),
            Some((l.me(), l.peer_mask().unwrap()))
        );
        // `me` at any slot below 63 fits, at 63 it does not (the word would be `NO_WORD`).
        let all = addrs(64);
        for me in &all {
            let l = MemberList::with_slots(me, &all, 100).unwrap();
            let peer = if *me == all[0] { &all[1] } else { &all[0] };
            let l = l.update(&[peer.clone(), me.clone()]).unwrap();
            let p = l.peers().next().unwrap();
            let fits = l.me().0 < 63 && p.0 < 58;
            let expect = fits.then(|| (l.me(), 1u64 << p.0));
            assert_eq!(unpack_word(l.word()), expect, "me {:?}, peer {p:?}", l.me());
        }
    }

    #[test]
    fn the_peer_mask_is_the_peers_below_64() {
        let addrs = |n: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("10.0.{}.{}:8848", i / 200, i % 200))
                .collect()
        };
        let mask = |l: &MemberList| l.peers().fold(0u64, |m, p| m | 1 << p.0);
        let l = MemberList::with_slots("10.0.0.1:8848", &addrs(3), 100).unwrap();
        assert_eq!(l.peer_mask(), Some(mask(&l)));
        assert_eq!(l.peer_mask().map(u64::count_ones), Some(2));
        // Members up to slot 63 fit; one at slot 64 does not.
        let l = l.update(&addrs(64)).unwrap();
        assert_eq!(l.peer_mask(), Some(mask(&l)));
        assert_eq!(l.peer_mask().map(u64::count_ones), Some(63));
        let l = l.update(&addrs(65)).unwrap();
        assert!(l.peers().any(|p| p.0 == 64));
        assert_eq!(l.peer_mask(), None);
        // Back below: the mask again, without the one that left.
        let l = l.update(&addrs(3)).unwrap();
        assert_eq!(l.peer_mask(), Some(mask(&l)));
        assert_eq!(l.peer_mask().map(u64::count_ones), Some(2));
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
    fn ids_stay_with_their_address_when_the_list_changes() {
        let l =
            MemberList::with_slots("b:1", &["a:1".into(), "b:1".into(), "c:1".into()], 5).unwrap();
        // c leaves, d and 0 join: the known keep their ids, the new take free slots.
        let l2 = l
            .update(&["a:1".into(), "b:1".into(), "d:1".into(), "0:1".into()])
            .unwrap();
        assert_eq!(l2.version(), 1);
        assert_eq!(l2.find("a:1"), Some(MemberId(0)));
        assert_eq!(l2.find("b:1"), Some(MemberId(1)));
        assert_eq!(l2.find("c:1"), None, "left");
        assert_eq!(
            l2.addr(MemberId(2)).as_str(),
            "c:1",
            "its slot keeps its address"
        );
        assert_eq!(l2.find("0:1"), Some(MemberId(3)));
        assert_eq!(l2.find("d:1"), Some(MemberId(4)));
        assert_eq!(
            l2.addrs(),
            vec!["0:1", "a:1", "b:1", "d:1"],
            "current members in address order"
        );
        assert_eq!(l2.me(), MemberId(1));
        // c returns to its slot; a fifth new address has none left.
        let l3 = l2.update(&["c:1".into(), "b:1".into()]).unwrap();
        assert_eq!(l3.find("c:1"), Some(MemberId(2)));
        assert_eq!(l3.peers().collect::<Vec<_>>(), vec![MemberId(2)]);
        assert_eq!(
            l3.update(&["b:1".into(), "e:1".into()]).unwrap_err(),
            MemberListError::NoSlot("e:1".into(), 5)
        );
        let leaving = l3.update(&["a:1".into()]).unwrap();
        assert!(leaving.is_leaving());
        assert_eq!(leaving.me(), MemberId(1));
        assert_eq!(leaving.peers().collect::<Vec<_>>(), vec![MemberId(0)]);
        assert_eq!(leaving.known("b:1"), Some(MemberId(1)));
        assert_eq!(leaving.find("b:1"), None);
        assert!(!leaving.is_standalone());
        assert!(matches!(
            l3.update(&["b:1".into(), "x".into()]),
            Err(MemberListError::BadAddress(_))
        ));
    }

    #[test]
    fn a_former_member_is_learned_into_a_free_slot_without_joining() {
        let l = MemberList::with_slots("b:1", &["a:1".into(), "b:1".into()], 4).unwrap();
        let (l2, c) = l.learn("c:1").unwrap();
        assert_eq!(c, MemberId(2));
        assert_eq!(l2.addr(c).as_str(), "c:1");
        assert_eq!(l2.known("c:1"), Some(c));
        assert_eq!(l2.find("c:1"), None, "not a current member");
        assert!(!l2.contains(c));
        assert_eq!(l2.ids().collect::<Vec<_>>(), l.ids().collect::<Vec<_>>());
        assert_eq!(l2.version(), l.version(), "the list did not change");
        // Known addresses keep their id; a member that joins later gets its slot back.
        assert_eq!(l2.learn("c:1").unwrap().1, c);
        assert_eq!(l2.learn("a:1").unwrap().1, MemberId(0));
        let joined = l2
            .update(&["a:1".into(), "b:1".into(), "c:1".into()])
            .unwrap();
        assert_eq!(joined.find("c:1"), Some(c));
        // The next new address takes the next slot; then there is none left.
        let (l3, d) = l2.learn("d:1").unwrap();
        assert_eq!(d, MemberId(3));
        assert_eq!(
            l3.learn("e:1").unwrap_err(),
            MemberListError::NoSlot("e:1".into(), 4)
        );
        assert!(matches!(
            l3.learn("nope"),
            Err(MemberListError::BadAddress(_))
        ));
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
