//! A stored client and its replicated forms.
//!
//! [`Client`] is one client's full state at one revision as this node stores it:
//! immutable once stored (a change replaces it whole), except for its owner attribution,
//! heartbeat times, index slots and lease, which are atomics. [`ClientRecord`] is the
//! same state as it travels in syncs and snapshots; [`ClientChange`] is one entry of a
//! sync batch (a state, owned or shared with the store, or a deletion).
//!
//! A client of one publication (nearly all of them) is one allocation of 112 bytes (128
//! with its reference counts, a size class of the allocator): the publication, its
//! heartbeat time and its index slot sit in it, and the service's index points at the
//! client itself. An ip:port client's id is not stored when it is the one its first
//! instance implies (`ip:port#true`, up to [`DERIVED_MAX`] bytes): [`Client::id`] writes
//! it out. A client of several publications holds each in a client of one publication of
//! its own (its *parts*, shared between its versions while unchanged), so that an index
//! slot always points at a client of one publication and a change of one publication
//! moves one slot. A test pins the sizes.

use super::NO_SLOT;
use crate::compact_form::{IdForm, ZEROS, copy_short, eight_digits, form_of_packed};
use crate::member::MemberId;
use crate::model::{
    ClientId, ClientKind, Instance, Instances, Publication, Revision, RoutingKey, decimal_digits,
    decimal_len,
};
use crate::name::{Name, id_eq, short_eq_bytes};
use crate::time::Millis;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};

/// A stored client: its full state at one revision (see the module's documentation).
pub struct Client {
    /// The id's text (its compact form's parts found when an owner stores it, or at the
    /// first encoding of a replica's, see [`Name::id_parts`]), or `None`
    /// when it is the one the first instance implies (`ip:port#true`, at most
    /// [`DERIVED_MAX`] bytes).
    id: Option<Name>,
    /// The id's stable hash (see `IdKey`): its shard, its place in the shard's table and
    /// its digest term, computed once for the client's first state.
    pub(super) id_hash: u64,
    pub(super) revision: Revision,
    pub(super) lease_base: AtomicU64,
    pub(super) owner: AtomicU16,
    /// The shard of the id (shards are at most 65,536, see [`crate::Config::shards`]).
    pub(super) shard: u16,
    /// The index slot of the publication held inline ([`Body::One`]), set while it is
    /// stored, under its shard lock.
    pub(super) slot: AtomicU32,
    pub(super) body: Body,
}

/// What a client publishes: one publication inline, or its parts (each a client of one
/// publication), sorted by service.
pub(super) enum Body {
    One(Published),
    Many(Box<[Arc<Client>]>),
}

/// One publication of a stored client with its last heartbeat (ip:port clients; owner
/// side). Dereferences to the publication.
pub struct Published {
    publication: Publication,
    pub(super) beat: AtomicU64,
}

impl Published {
    fn new(publication: Publication, beat: Millis) -> Self {
        Self {
            publication,
            beat: AtomicU64::new(beat),
        }
    }

    /// The publication.
    #[inline]
    pub fn get(&self) -> &Publication {
        &self.publication
    }

    /// Itself, which dereferences to the publication: kept for callers that cloned the
    /// `Arc<Publication>` this returned before the publication moved into its client
    /// (the simulation test does; a clone copies the publication and its beat time).
    /// Use [`Published::get`] for the publication.
    pub fn publication(&self) -> &Published {
        self
    }
}

impl Clone for Published {
    fn clone(&self) -> Self {
        Self::new(self.publication.clone(), self.beat.load(Relaxed))
    }
}

impl Deref for Published {
    type Target = Publication;
    fn deref(&self) -> &Publication {
        &self.publication
    }
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.publication, f)
    }
}

/// One publication of a replicated state, for [`Body::build`].
pub(super) enum Next {
    /// Publication `i` of the held state, unchanged (its part, or its beat time, kept).
    Held(usize),
    /// A new state of publication `i` of the held state (of the same service: its beat
    /// time kept).
    Replace(usize, Publication),
    /// A publication of a service the held state does not publish to.
    New(Publication),
}

/// The longest derived id: `ip:port#true` of up to 24 bytes (the inline [`ClientId`]; an
/// id that would be longer is stored).
pub(super) const DERIVED_MAX: usize = 24;

/// What ends an ip:port client's id (`ip:port#true`).
const IP_PORT_SUFFIX: &[u8] = b"#true";

/// Room for a derived id's text, for [`Client::id_bytes`]: `DERIVED_MAX` bytes and a
/// word, for the pieces are stored a word at a time (no copy of variable length).
pub struct IdBuf([u8; DERIVED_MAX + 8]);

impl IdBuf {
    /// An empty buffer.
    #[inline]
    pub fn new() -> Self {
        IdBuf([0; DERIVED_MAX + 8])
    }

    /// Writes `ip:port#true`, the text of a derived id (which fits); its length.
    #[inline]
    fn ip_port(&mut self, ip: &[u8], port: u16) -> usize {
        const SUFFIX: [u8; 8] = *b"#true\0\0\0";
        let b = &mut self.0;
        let l = ip.len();
        copy_short(b, ip);
        b[l] = b':';
        let (digits, n) = decimal_digits(port);
        b[l + 1..l + 9].copy_from_slice(&digits);
        b[l + 1 + n..l + 9 + n].copy_from_slice(&SUFFIX);
        l + 1 + n + IP_PORT_SUFFIX.len()
    }

    /// The first sixteen bytes of a text of `len` bytes written here, as a big-endian
    /// pair, zeros after `len`.
    #[inline]
    fn prefix(&self, len: usize) -> (u64, u64) {
        let word = |at: usize| u64::from_be_bytes(self.0[at..at + 8].try_into().expect("8"));
        // The bytes from `len` on cleared (what was stored past the text's end).
        let keep = |from: usize| match len.saturating_sub(from) {
            0 => 0,
            k @ 1..8 => !(u64::MAX >> (k * 8)),
            _ => u64::MAX,
        };
        (word(0) & keep(0), word(8) & keep(8))
    }
}

/// The first sixteen bytes of `id` as a big-endian pair, zeros after a shorter id:
/// ordered as the ids' bytes are, up to a tie (an id holds no NUL, so a shorter id that
/// is another's start orders first, as it does by bytes).
fn id_prefix(id: &[u8]) -> (u64, u64) {
    let word = |at: usize| u64::from_be_bytes(id[at..at + 8].try_into().expect("8 bytes"));
    if id.len() >= 16 {
        return (word(0), word(8));
    }
    let mut b = IdBuf::new();
    copy_short(&mut b.0, id);
    b.prefix(id.len())
}

impl Default for IdBuf {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `s` is the id `ip:port#true` of `inst` ([`ClientId::ip_port`]'s text: the
/// port in decimal without a leading zero), of at most [`DERIVED_MAX`] bytes: what a
/// client derives instead of storing its id. Compared without writing the id out (every
/// lookup of a client with a derived id asks it once): the lengths, the `:`, the suffix
/// as one word, the port's digits as one word ([`eight_digits`]), the ip a word at a
/// time.
#[inline]
pub(super) fn is_derived_id(s: &str, inst: &Instance) -> bool {
    s.len() <= DERIVED_MAX && is_ip_port_text(s, inst)
}

/// Whether `s` is `ip:port#true` of `inst`, of any length: [`is_derived_id`] of a client
/// whose id is derived (so at most [`DERIVED_MAX`] bytes, as `s` is if it is equal).
#[inline]
pub(crate) fn is_ip_port_text(s: &str, inst: &Instance) -> bool {
    ip_port_text_is(s, inst)
}

/// [`is_ip_port_text`], inlined into `Client::derived_id_is` (every derived id's lookup).
#[inline(always)]
fn ip_port_text_is(s: &str, inst: &Instance) -> bool {
    let ip = inst.ip.as_str().as_bytes();
    let (b, l) = (s.as_bytes(), ip.len());
    let n = b.len();
    // `:`, one to five digits (the first not `0`), `#true`.
    let k = n.wrapping_sub(l + 6);
    if k.wrapping_sub(1) > 4 {
        return false;
    }
    let (colon, first) = (b[l], b[l + 1]);
    if colon != b':' || first == b'0' {
        return false;
    }
    if n < 13 {
        // A host name of under seven bytes: the digits do not end a whole word.
        return is_derived_id_bytewise(b, l, inst.port) && short_eq_bytes(&b[..l], ip);
    }
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    const SUFFIX: u64 = u64::from_le_bytes(*b"\0\0\0#true");
    if word(n - 8) >> 24 != SUFFIX >> 24 {
        return false;
    }
    // The word that ends with the digits, the bytes before them made leading '0's.
    let keep = u64::MAX << ((8 - k) * 8);
    let digits = (word(n - 13) & keep) | (ZEROS & !keep);
    eight_digits(digits) == Some(u64::from(inst.port)) && short_eq_bytes(&b[..l], ip)
}

/// [`is_derived_id`]'s port and suffix check a byte at a time, for ids too short to read
/// by words; `b[l]` is the `:`.
fn is_derived_id_bytewise(b: &[u8], l: usize, port: u16) -> bool {
    let n = b.len();
    if b[n - 5..] != *b"#true" {
        return false;
    }
    let mut v: u32 = 0;
    for &c in &b[l + 1..n - 5] {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return false;
        }
        v = v * 10 + u32::from(d);
    }
    v == u32::from(port)
}

impl Body {
    /// The body of a client's next state: `pubs` in order, `old` the held state (a
    /// replaced publication keeps its beat time, an unchanged one its part).
    pub(super) fn build(
        pubs: impl IntoIterator<Item = Next, IntoIter: ExactSizeIterator>,
        old: Option<&Client>,
        now: Millis,
    ) -> Body {
        let mut pubs = pubs.into_iter();
        if pubs.len() == 1
            && let Some(next) = pubs.next()
        {
            return Body::One(Self::one(next, old, now));
        }
        Body::Many(
            pubs.map(|next| match (next, old.map(|o| &o.body)) {
                (Next::Held(i), Some(Body::Many(parts))) => parts[i].clone(),
                (next, _) => {
                    let p = Self::one(next, old, now);
                    Client::part(p.publication, p.beat.into_inner())
                }
            })
            .collect(),
        )
    }

    /// The first instance of the first publication.
    #[inline]
    fn first_instance(&self) -> Option<&Instance> {
        let p = match self {
            Body::One(p) => p,
            Body::Many(parts) => parts.first()?.single(),
        };
        match &p.instances {
            Instances::One(i) => Some(i),
            Instances::Many(v) => v.first(),
        }
    }

    /// The body of a new client publishing `publication`.
    pub(super) fn first(publication: Publication, now: Millis) -> Body {
        Body::One(Published::new(publication, now))
    }

    /// The publication `next` stands for, with its beat time.
    #[inline]
    fn one(next: Next, old: Option<&Client>, now: Millis) -> Published {
        let held = |i: usize| match old.map(|o| o.publications().get(i)) {
            Some(Some(p)) => p,
            _ => panic!("held publication {i} of a client that has none such"),
        };
        let (publication, beat) = match next {
            Next::Held(i) => {
                let p = held(i);
                (p.publication.clone(), p.beat.load(Relaxed))
            }
            Next::Replace(i, publication) => (publication, held(i).beat.load(Relaxed)),
            Next::New(publication) => (publication, now),
        };
        Published::new(publication, beat)
    }
}

impl Client {
    /// A client to be stored (its slots are `NO_SLOT` until it is), built in its `Arc`.
    /// The id is stored only if the first instance does not imply it, as `shared` (a
    /// stored text of the same id to share, if there is one) or else the text `old`
    /// stores; `old` is the state it replaces (of the same id), whose derived id is this
    /// one's if its first instance has the same ip and port. A text not stored before
    /// has its compact parts found here ([`Name::id_parts`]), once, not by every flush.
    /// (Not written as `new_with` of a closure returning `body`: that cost a registration
    /// 16 instructions, +0.7 %.)
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: &str,
        shared: Option<&Name>,
        old: Option<&Client>,
        id_hash: u64,
        revision: Revision,
        lease_base: Millis,
        owner: MemberId,
        shard: u32,
        body: Body,
    ) -> Arc<Self> {
        let id = Self::id_to_store(id, shared, old, body.first_instance());
        Arc::new(Self::literal(
            id, id_hash, revision, lease_base, owner, shard, body,
        ))
    }

    /// The client of these fields, not yet stored (its slot `NO_SLOT`): the literal of
    /// every constructor but [`Client::first_one`] (through it a new client cost 4
    /// instructions more), always inlined so that each builds its client in place.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn literal(
        id: Option<Name>,
        id_hash: u64,
        revision: Revision,
        lease_base: Millis,
        owner: MemberId,
        shard: u32,
        body: Body,
    ) -> Self {
        Self {
            id,
            id_hash,
            revision,
            lease_base: AtomicU64::new(lease_base),
            owner: AtomicU16::new(owner.0),
            shard: u16::try_from(shard).expect("at most 65,536 shards"),
            slot: AtomicU32::new(NO_SLOT),
            body,
        }
    }

    /// [`Client::new`] of the body `body` makes (but the id text's compact parts left to be
    /// found at its first encoding: see [`Client::id_stored`]), made in the client as it is
    /// built (a replica's state of several publications, or of a new service: a body of
    /// one publication goes through [`Client::replica_one`]), and the client made in its
    /// allocation ([`arc_slots::ArcPlace`]: not built on the stack and copied twice on its
    /// way into the `Arc`).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn new_with(
        id: &str,
        shared: Option<&Name>,
        old: Option<&Client>,
        id_hash: u64,
        revision: Revision,
        lease_base: Millis,
        owner: MemberId,
        shard: u32,
        body: impl FnOnce() -> Body,
    ) -> Arc<Self> {
        let place = arc_slots::ArcPlace::new();
        let body = body();
        let id = Self::id_stored::<false>(id, shared, old, body.first_instance());
        place.write(Self::literal(
            id, id_hash, revision, lease_base, owner, shard, body,
        ))
    }

    /// The id a replica's client of `id` stores when its first instance is `first` and
    /// it replaces `old` (see [`Client::new_with`]: the text's compact parts not found).
    #[inline(always)]
    pub(super) fn replica_id(
        id: &str,
        old: Option<&Client>,
        first: Option<&Instance>,
    ) -> Option<Name> {
        Self::id_stored::<false>(id, None, old, first)
    }

    /// The id a new client stores (see [`Client::new`]): `None` if `first`, its first
    /// instance, implies it; else `shared`, the text `old` stores, or a new text, its
    /// compact parts ([`Name::id_parts`]) found now (an owner's client: its flushes read
    /// them).
    #[inline(always)]
    fn id_to_store(
        id: &str,
        shared: Option<&Name>,
        old: Option<&Client>,
        first: Option<&Instance>,
    ) -> Option<Name> {
        Self::id_stored::<true>(id, shared, old, first)
    }

    /// [`Client::id_to_store`], the compact parts of the text found (`FIND`) or not: a
    /// replica's client ([`Client::new_with`], [`Client::replica_id`]) leaves them, as no
    /// flush of this node reads them while another member owns it. A new text's parts are
    /// then found at its first encoding ([`Name::id_parts`]: a snapshot chunk, or the
    /// flush of a client this node took over), not for every new client a replica stores
    /// (a parse of ~290 instructions); a held client's text keeps what it knows.
    #[inline(always)]
    fn id_stored<const FIND: bool>(
        id: &str,
        shared: Option<&Name>,
        old: Option<&Client>,
        first: Option<&Instance>,
    ) -> Option<Name> {
        let derived = match (old.filter(|o| o.id.is_none()), first) {
            // The same id, derived from the same ip and port: no need to read it.
            (Some(o), Some(i)) if o.first_instance().is_some_and(|h| h.same_address(i)) => true,
            (_, Some(i)) => is_derived_id(id, i),
            (_, None) => false,
        };
        // The held state's stored text is this id's (it is of the same id): shared
        // without a comparison.
        let held = old.and_then(|o| o.id.as_ref());
        let id = (!derived).then(|| match (shared, held) {
            (Some(n), _) if n.as_str() == id => n.clone(),
            (_, Some(n)) => n.clone(),
            _ => Name::new(id),
        });
        if FIND && let Some(n) = &id {
            n.find_id_parts_now(held);
        }
        id
    }

    /// A part of a client of several publications: a client of just `publication`, held
    /// by its service's index (it has no id, revision or owner of its own).
    fn part(publication: Publication, beat: Millis) -> Arc<Self> {
        Arc::new(Self::literal(
            None,
            0,
            Revision::ZERO,
            0,
            MemberId(0),
            0,
            Body::One(Published::new(publication, beat)),
        ))
    }

    /// The publication of a client of one (a part, or what an index slot holds).
    #[inline]
    pub(super) fn single(&self) -> &Published {
        match &self.body {
            Body::One(p) => p,
            Body::Many(_) => panic!("a client of several publications in an index slot"),
        }
    }

    /// The client of one publication that holds publication `i` of `this` (itself, or
    /// its part): what `i`'s index slot points at.
    #[inline]
    pub(super) fn holder(this: &Arc<Client>, i: usize) -> &Arc<Client> {
        match &this.body {
            Body::One(_) => this,
            Body::Many(parts) => &parts[i],
        }
    }

    /// The first instance of the first publication.
    #[inline]
    fn first_instance(&self) -> Option<&Instance> {
        self.body.first_instance()
    }

    /// The client id (written out when it is derived from the first instance: see the
    /// module's documentation; such an id is inline, no allocation).
    pub fn id(&self) -> ClientId {
        match (&self.id, self.first_instance()) {
            (Some(n), _) => ClientId::of_name(n),
            (None, Some(i)) => ClientId::ip_port(&i.ip, i.port),
            (None, None) => unreachable!("a derived id without an instance"),
        }
    }

    /// The id's text ([`Client::id`]'s) as bytes: the stored text, or a derived id
    /// written into `buf` (on the stack: no allocation, no formatting machinery).
    #[inline]
    pub fn id_bytes<'a>(&'a self, buf: &'a mut IdBuf) -> &'a [u8] {
        match (&self.id, self.first_instance()) {
            (Some(n), _) => n.as_bytes(),
            (None, Some(i)) => {
                let len = buf.ip_port(i.ip.as_bytes(), i.port);
                &buf.0[..len]
            }
            (None, None) => unreachable!("a derived id without an instance"),
        }
    }

    /// The first sixteen bytes of the id as a big-endian pair, zeros after a shorter id:
    /// ordered as the ids' bytes are, up to a tie (a derived id is written on the stack,
    /// a word at a time).
    #[inline]
    pub fn id_prefix(&self) -> (u64, u64) {
        match (&self.id, self.first_instance()) {
            (Some(n), _) => id_prefix(n.as_bytes()),
            (None, Some(i)) => {
                let mut b = IdBuf::new();
                let len = b.ip_port(i.ip.as_bytes(), i.port);
                b.prefix(len)
            }
            (None, None) => unreachable!("a derived id without an instance"),
        }
    }

    /// The id's length in bytes (without writing a derived id out).
    #[inline]
    pub fn id_len(&self) -> usize {
        match &self.id {
            Some(n) => n.len(),
            None => match self.first_instance() {
                Some(i) => i.ip.len() + 1 + decimal_len(i.port) + IP_PORT_SUFFIX.len(),
                None => unreachable!("a derived id without an instance"),
            },
        }
    }

    /// For an ip:port client, its routing key ([`ClientId::routing_key`] of its id),
    /// without writing a derived id out: the pieces of `ip:port` (or the ip's text
    /// before a `#` it would hold, where the id's first `#` would be).
    #[inline]
    pub fn routing_key(&self) -> Option<RoutingKey<'_>> {
        match (&self.id, self.first_instance()) {
            (Some(n), _) => {
                crate::model::first_hash_sign(n.as_bytes()).map(|k| RoutingKey::Text(&n[..k]))
            }
            (None, Some(i)) => Some(match crate::model::first_hash_sign(i.ip.as_bytes()) {
                Some(k) => RoutingKey::Text(&i.ip.as_str()[..k]),
                None => RoutingKey::IpPort(i.ip.as_str(), i.port),
            }),
            (None, None) => unreachable!("a derived id without an instance"),
        }
    }

    /// The kind of the client, derived from its id (without writing a derived id out:
    /// that is an ip:port client's).
    #[inline]
    pub fn kind(&self) -> ClientKind {
        match &self.id {
            None => ClientKind::IpPort,
            Some(n) if crate::model::first_hash_sign(n.as_bytes()).is_some() => ClientKind::IpPort,
            Some(_) => ClientKind::Connection,
        }
    }

    /// Whether the id is `ip:port#true` of the first instance, not stored (its compact
    /// form is `IdForm::IpPort`).
    #[inline]
    pub fn id_is_derived(&self) -> bool {
        self.id.is_none()
    }

    /// The stored id text (`None` when it is derived).
    pub fn stored_id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// How the id travels in the compact peer layout
    /// ([`crate::compact_form::id_form`] of the id and the first instance), read from
    /// the parts stored with the text: the ip:port form when the id is derived.
    #[inline(always)]
    pub fn id_form(&self) -> IdForm {
        match &self.id {
            None => IdForm::IpPort,
            Some(n) => match self.first_instance() {
                Some(first) => form_of_packed(n.id_parts(), n, first),
                None => IdForm::String,
            },
        }
    }

    /// Whether the id is `s` (compared without writing a derived id out).
    /// Not inlined: a lookup that inlines it grows past what the table's probe loop
    /// inlines into.
    #[inline(never)]
    pub fn id_is(&self, s: &str) -> bool {
        match &self.id {
            Some(n) => id_eq(n, s),
            None => self.derived_id_is(s),
        }
    }

    /// [`Client::id_is`] of a derived id, jumped to (a stored id's compare does not pay for
    /// its registers), [`is_ip_port_text`] inlined (its call cost ~10 a lookup).
    #[inline(never)]
    fn derived_id_is(&self, s: &str) -> bool {
        self.first_instance().is_some_and(|i| ip_port_text_is(s, i))
    }

    /// Whether `other` has the same id (compared without writing a derived id out).
    pub(super) fn same_id(&self, other: &Client) -> bool {
        match (&self.id, &other.id) {
            (Some(a), Some(b)) => a == b,
            (Some(a), None) => other.id_is(a),
            (None, Some(b)) => self.id_is(b),
            (None, None) => match (self.first_instance(), other.first_instance()) {
                (Some(a), Some(b)) => a.port == b.port && a.ip == b.ip,
                _ => false,
            },
        }
    }

    /// Asks for the lines of the stored client `c` (its `Arc`'s allocation: the counts and
    /// the 112 bytes of the client, two lines) ahead of a read of it. Only a hint.
    #[inline(always)]
    pub(crate) fn prefetch(c: &Arc<Client>) {
        let at = Arc::as_ptr(c).cast::<u8>();
        arc_slots::prefetch(at);
        arc_slots::prefetch(at.wrapping_add(64));
    }

    /// The id's stable hash ([`crate::hash::stable_hash64`] of the id, as `IdKey` has it).
    #[inline]
    pub(crate) fn id_hash(&self) -> u64 {
        self.id_hash
    }
    /// The revision of this state.
    pub fn revision(&self) -> Revision {
        self.revision
    }
    /// The shard of the client id.
    pub fn shard(&self) -> u32 {
        u32::from(self.shard)
    }
    /// What the client publishes, sorted by service.
    #[inline]
    pub fn publications(&self) -> Publications<'_> {
        Publications(&self.body)
    }
    /// The member this node attributes the client to. Inlined: the encoder asks it of
    /// every client it sends (called across the crates, it cost the call and spills).
    #[inline]
    pub fn owner(&self) -> MemberId {
        MemberId(self.owner.load(Relaxed))
    }
    /// Number of instances published; a client of one publication's without the walk
    /// (every replacement counts two states: the walk cost ~15 a count).
    #[inline]
    pub fn instance_count(&self) -> usize {
        match &self.body {
            Body::One(p) => p.instances.len(),
            Body::Many(_) => self.publications().iter().map(|p| p.instances.len()).sum(),
        }
    }
    /// Last heartbeat of publication `i`.
    pub(crate) fn last_beat(&self, i: usize) -> Millis {
        self.publications()[i].beat.load(Relaxed)
    }
    pub(crate) fn lease_base(&self) -> Millis {
        self.lease_base.load(Relaxed)
    }
    pub(crate) fn renew_lease(&self, now: Millis) {
        self.lease_base.fetch_max(now, Relaxed);
    }
    /// The body of the next state with publication `i` replaced by `p` (of the same
    /// service: its beat time kept); the other parts shared.
    pub(super) fn body_replacing(&self, i: usize, p: Publication) -> Body {
        match &self.body {
            Body::One(o) => Body::One(Published::new(p, o.beat.load(Relaxed))),
            Body::Many(parts) => {
                let mut p = Some(p);
                Body::Many(
                    parts
                        .iter()
                        .enumerate()
                        .map(|(k, c)| match p.take_if(|_| k == i) {
                            Some(p) => Client::part(p, c.single().beat.load(Relaxed)),
                            None => c.clone(),
                        })
                        .collect(),
                )
            }
        }
    }

    /// The body of the next state with `p` (of a service this one does not publish to)
    /// inserted at `i`.
    pub(super) fn body_inserting(&self, i: usize, p: Publication, now: Millis) -> Body {
        let mut parts: Vec<Arc<Client>> = match &self.body {
            Body::One(o) => vec![Client::part(o.publication.clone(), o.beat.load(Relaxed))],
            Body::Many(parts) => parts.to_vec(),
        };
        parts.insert(i, Client::part(p, now));
        Body::Many(parts.into_boxed_slice())
    }

    /// The body of the next state without publication `i` (of at least two).
    pub(super) fn body_removing(&self, i: usize) -> Body {
        let Body::Many(parts) = &self.body else {
            panic!("removing the only publication is a deletion")
        };
        if parts.len() == 2 {
            let left = parts[1 - i].single();
            return Body::One(Published::new(
                left.publication.clone(),
                left.beat.load(Relaxed),
            ));
        }
        let mut v = parts.to_vec();
        v.remove(i);
        Body::Many(v.into_boxed_slice())
    }

    /// [`ClientChange::size_hint`] of the change that sends this state (inlined into the
    /// flush, which asks it of every client it sends: always, as out of line the call
    /// cost ~10 instructions a client): the derived id's length without writing it out;
    /// one publication (nearly every client) without an iterator.
    #[inline(always)]
    pub fn size_hint(&self) -> usize {
        16 + self.id_len()
            + match &self.body {
                Body::One(p) => publication_hint(p),
                Body::Many(parts) => parts.iter().map(|c| publication_hint(c.single())).sum(),
            }
    }

    /// The full state as a record, for sync and snapshot.
    pub fn to_record(&self) -> ClientRecord {
        self.record_with(self.id())
    }
    /// [`Client::to_record`] with the id written out already.
    pub fn record_with(&self, id: ClientId) -> ClientRecord {
        debug_assert!(self.id_is(id.as_str()));
        ClientRecord {
            id,
            revision: self.revision,
            owner: self.owner(),
            publications: self
                .publications()
                .iter()
                .map(|p| Arc::new(p.publication.clone()))
                .collect(),
        }
    }
}

/// Two clients are equal when they hold the same state: id, revision, owner and
/// publications (heartbeat times, lease and index slots aside), as their records are.
impl PartialEq for Client {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.publications(), other.publications());
        self.same_id(other)
            && self.revision == other.revision
            && self.owner() == other.owner()
            && a.len() == b.len()
            && a.iter()
                .zip(b.iter())
                .all(|(a, b)| a.publication == b.publication)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id())
            .field("revision", &self.revision)
            .field("owner", &self.owner())
            .field("publications", &self.publications())
            .finish()
    }
}

/// The full state of one client as replicated: every publication at one revision.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRecord {
    /// Client id.
    pub id: ClientId,
    /// Revision of this state.
    pub revision: Revision,
    /// The member the sender attributes the client to.
    pub owner: MemberId,
    /// What the client publishes.
    pub publications: Vec<Arc<Publication>>,
}

impl ClientRecord {
    /// An estimate of the record's encoded size in bytes (protobuf-like), used to bound
    /// batches and chunks. Errs on the high side.
    pub fn size_hint(&self) -> usize {
        size_hint(
            self.id.as_str().len(),
            self.publications.iter().map(|p| &**p),
        )
    }
}

/// [`ClientRecord::size_hint`] of a state's id and publications.
fn size_hint<'a>(id_len: usize, publications: impl Iterator<Item = &'a Publication>) -> usize {
    16 + id_len + publications.map(publication_hint).sum::<usize>()
}

/// What a publication adds to [`size_hint`] (one instance, nearly every publication,
/// without an iterator).
#[inline]
fn publication_hint(p: &Publication) -> usize {
    16 + p.service.key().len()
        + match &p.instances {
            Instances::One(i) => instance_hint(i),
            Instances::Many(v) => v.iter().map(instance_hint).sum(),
        }
}

/// What an instance adds to [`size_hint`].
#[inline(always)]
fn instance_hint(i: &Instance) -> usize {
    let mut n = 32 + i.ip.len() + i.cluster.len();
    if let Some(s) = &i.custom_id {
        n += s.len() + 2;
    }
    // Each entry's key and value, and 6 bytes (without walking the entries).
    n + i.metadata.text_len() + 6 * i.metadata.len()
}

/// One entry of a sync batch: a client's full state or its deletion.
///
/// A tag byte of its own (`repr(u8)`), with `Stored` (nearly every change a flush sends)
/// its first variant: a batch's encoder and its drop tell a change's variant from one
/// byte compared with zero, where the tag kept in the niche of `Upsert`'s vector took a
/// range check of the word (8 bytes more a change; build_and_encode −8 per client).
#[derive(Debug, Clone, PartialEq)]
#[repr(u8)]
pub enum ClientChange {
    /// The full state as this node stores it, shared with the store: what a flush sends
    /// (encoded straight from the stored client, without building a record). Its owner is
    /// read when it is encoded. [`ClientChange::into_owned`] makes it an `Upsert`.
    Stored(Arc<Client>),
    /// The full state.
    Upsert(ClientRecord),
    /// The client was deleted at `revision`.
    Delete {
        /// Client id.
        id: ClientId,
        /// Revision of the deletion (above the last state's).
        revision: Revision,
    },
}

impl ClientChange {
    /// The client id (written out for a stored client's derived id: see [`Client::id`]).
    pub fn id(&self) -> ClientId {
        match self {
            ClientChange::Upsert(r) => r.id.clone(),
            ClientChange::Stored(c) => c.id(),
            ClientChange::Delete { id, .. } => id.clone(),
        }
    }
    /// The revision.
    pub fn revision(&self) -> Revision {
        match self {
            ClientChange::Upsert(r) => r.revision,
            ClientChange::Stored(c) => c.revision,
            ClientChange::Delete { revision, .. } => *revision,
        }
    }
    /// The state shared with the store, if it is one.
    pub fn stored(&self) -> Option<&Arc<Client>> {
        match self {
            ClientChange::Stored(c) => Some(c),
            _ => None,
        }
    }
    /// Estimated encoded size in bytes.
    pub fn size_hint(&self) -> usize {
        match self {
            ClientChange::Upsert(r) => r.size_hint(),
            ClientChange::Stored(c) => c.size_hint(),
            ClientChange::Delete { id, .. } => 16 + id.as_str().len(),
        }
    }
    /// The change with a stored state as an owned record (an `Upsert`), the others as
    /// they are.
    pub fn into_owned(self) -> ClientChange {
        match self {
            ClientChange::Stored(c) => ClientChange::Upsert(c.to_record()),
            c => c,
        }
    }
}

mod one;
mod publications;
pub use publications::{Publications, PublicationsIter};
#[cfg(test)]
mod tests;
