//! Revisions: the version of a client's state, a hybrid logical clock (see
//! [`Revision`]).

use crate::member::MemberId;
use crate::time::Millis;

/// A client's version. Totally ordered; an owner's restart never makes it go backwards.
///
/// A revision is a hybrid logical clock: layout `logical << 10 | member`, where a new
/// revision's `logical` is the larger of one more than the client's previous revision
/// (tombstones included) and the *floor* `now_ms << 12` of the issuing owner (never below
/// `incarnation_ms << 12`, the wall-clock start of its process). Consequences:
///
/// * per client, revisions strictly increase, whoever issues them;
/// * a restarted owner, which remembers nothing, still issues revisions above every one
///   its previous incarnation issued (unless that issued more than 4,096 changes of one
///   client per millisecond of downtime, or the wall clock went backwards);
/// * when two owners write the same client concurrently (divergent member views during a
///   partition), the later write in wall-clock time wins, as a client would expect; the
///   member bits make their revisions distinct, so ties are impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision of nothing.
    pub const ZERO: Revision = Revision(0);
    const MEMBER_BITS: u32 = 10;
    const FLOOR_SHIFT: u32 = 12;

    /// The floor of logical revisions of an owner started at `incarnation_ms`.
    pub fn floor(incarnation_ms: Millis) -> u64 {
        incarnation_ms << Self::FLOOR_SHIFT
    }

    /// Builds a revision.
    pub fn new(logical: u64, member: MemberId) -> Self {
        Revision((logical << Self::MEMBER_BITS) | u64::from(member.0))
    }

    /// The logical part.
    pub fn logical(self) -> u64 {
        self.0 >> Self::MEMBER_BITS
    }

    /// The member that issued it.
    pub fn member(self) -> MemberId {
        MemberId((self.0 & ((1 << Self::MEMBER_BITS) - 1)) as u16)
    }

    /// The next revision after `prev` issued by `member` with logical floor `floor`.
    pub fn next(prev: Revision, floor: u64, member: MemberId) -> Revision {
        Revision::new(prev.logical().saturating_add(1).max(floor), member)
    }
}
