//! Clients, the unit of storage and replication: their ids ([`ClientId`], whose form
//! tells the [`ClientKind`]) and what a client publishes to one service
//! ([`Publication`]: one instance, or a batch).

use super::{Instance, Service};
use crate::error::{Field, ValidationError};
use crate::limits::MAX_CLIENT_ID_LEN;
use crate::name::Name;
use crate::time::Millis;
use std::fmt;

/// What a client publishes to one service: one instance, or a batch of them. 64 bytes
/// for one instance (stored inline in its client, see `registry::Client`): whether it
/// is a batch is the form of its instances ([`Publication::is_batch`]), not a field of
/// its own.
#[derive(Clone)]
pub struct Publication {
    /// The service.
    pub service: Service,
    /// The instances: [`Instances::One`] for a single registration, [`Instances::Many`]
    /// (of any length) for a batch.
    pub instances: Instances,
}

/// What a write built from the publications of the client it changes (the indices are of
/// those publications): see `Registry::publish_built`.
pub(crate) enum Built {
    /// A publication, stored in the place of its service's (which it replaces unless it
    /// is equal to it).
    New(Publication),
    /// Publication `i` again, equal to it: a heartbeat, nothing to write.
    Held(usize),
    /// The single-instance publication of this service, the service of publication `i`,
    /// which it replaces (it differs from it): its instance is the one the build wrote
    /// into the slot it was given, moved from there into the stored client as it is made.
    /// Valid only after `InstanceSpec::convert_into` returned `Converted::New` (which
    /// filled the slot).
    ChangedOne(usize, Service),
    /// The single-instance publication of this service, which the client does not publish
    /// to (or a client not held): its instance is in the slot, as for
    /// [`Built::ChangedOne`] (valid only after `convert_into` returned `Converted::New`).
    NewOne(Service),
}

/// The instances of a publication: the single instance is stored inline (the common
/// case, no extra allocation), a batch in its own slice (a batch of one too: the form
/// tells whether the publication is a batch). Dereferences to `[Instance]`.
#[derive(Clone)]
pub enum Instances {
    /// One instance.
    One(Instance),
    /// A batch.
    Many(Box<[Instance]>),
}

/// The same form (one instance, or a batch) and equal instances; inlined as
/// [`Publication`]'s comparison is.
impl PartialEq for Instances {
    #[inline(always)]
    fn eq(&self, other: &Instances) -> bool {
        match (self, other) {
            (Instances::One(a), Instances::One(b)) => a == b,
            (Instances::Many(a), Instances::Many(b)) => a == b,
            _ => false,
        }
    }
}

impl std::ops::Deref for Instances {
    type Target = [Instance];
    fn deref(&self) -> &[Instance] {
        match self {
            Instances::One(i) => std::slice::from_ref(i),
            Instances::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Instances {
    fn deref_mut(&mut self) -> &mut [Instance] {
        match self {
            Instances::One(i) => std::slice::from_mut(i),
            Instances::Many(v) => v,
        }
    }
}

impl fmt::Debug for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The same service and equal instances. Inlined wherever it is called: a replica's
/// apply compares each held publication with the one replacing it (nearly always one
/// instance), where the derived comparison was a call whose frame cost a fifth of it.
impl PartialEq for Publication {
    #[inline(always)]
    fn eq(&self, other: &Publication) -> bool {
        self.service == other.service && self.instances == other.instances
    }
}

impl Publication {
    /// A single-instance publication.
    pub fn single(service: Service, instance: Instance) -> Self {
        Self {
            service,
            instances: Instances::One(instance),
        }
    }

    /// A batch publication.
    pub fn batch(service: Service, instances: Vec<Instance>) -> Self {
        Self {
            service,
            instances: Instances::Many(instances.into_boxed_slice()),
        }
    }

    /// Whether this came from a batch registration (replaced as a whole).
    #[inline]
    pub fn is_batch(&self) -> bool {
        matches!(self.instances, Instances::Many(_))
    }
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}{}{:?}",
            self.service,
            if self.is_batch() { "[batch]" } else { "" },
            self.instances
        )
    }
}

/// The kind of a client, derived from its id as Nacos does (`#` means ip:port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// One SDK gRPC connection; owned by the node holding it.
    Connection,
    /// An `ip:port` client of the HTTP or native API; owned by the routed member.
    IpPort,
}

/// A client id: `<millis>_<ip>_<port>` (connection) or `ip:port#true` (ip:port).
///
/// Held inline when it fits in 24 bytes (an ip:port client's id, but for the longest
/// IPv4 addresses), in a shared string otherwise (a connection client's id, usually
/// longer): an ip:port client costs no allocation for its id, and a clone of either form
/// allocates nothing. Compared, ordered and hashed as its string.
#[derive(Clone)]
pub struct ClientId(IdRepr);

/// The longest id held inline (a `CompactString`'s inline capacity).
const INLINE_ID: usize = 24;

#[derive(Clone)]
enum IdRepr {
    /// At most 24 bytes, inline (never on the heap: see [`ClientId::from_compact`]).
    Inline(compact_str::CompactString),
    Shared(Name),
}

impl ClientId {
    /// Wraps an id string, checking its length and characters ([`ClientId::check`]).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::check(s)?;
        Ok(Self::of_valid(s))
    }

    /// An id string [`ClientId::check`] accepted.
    pub(crate) fn checked(s: &str) -> Self {
        debug_assert!(Self::check(s).is_ok(), "unchecked client id {s:?}");
        Self::of_valid(s)
    }

    /// Checks an id string as [`ClientId::parse`] does, without building the id (a
    /// decoder checks ids it may never need to store).
    pub fn check(s: &str) -> Result<(), ValidationError> {
        if s.is_empty() {
            return Err(ValidationError::new(Field::ClientId, "must not be empty"));
        }
        if s.len() > MAX_CLIENT_ID_LEN {
            return Err(ValidationError::new(
                Field::ClientId,
                format!(
                    "is {} bytes long, the limit is {MAX_CLIENT_ID_LEN}",
                    s.len()
                ),
            ));
        }
        // Printable ASCII (the usual id) in one pass; anything else by characters.
        let printable = s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !printable && s.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                Field::ClientId,
                "contains a control character",
            ));
        }
        Ok(())
    }

    fn of_valid(s: &str) -> Self {
        if s.len() <= std::mem::size_of::<compact_str::CompactString>() {
            Self::from_compact(compact_str::CompactString::new(s))
        } else {
            ClientId(IdRepr::Shared(Name::new(s)))
        }
    }

    /// Inline if `s` is (a string of up to 24 bytes is), shared otherwise.
    fn from_compact(s: compact_str::CompactString) -> Self {
        if s.is_heap_allocated() {
            ClientId(IdRepr::Shared(Name::new(&s)))
        } else {
            ClientId(IdRepr::Inline(s))
        }
    }

    /// The ephemeral ip:port client of `ip:port`: `ip:port#true`.
    pub fn ip_port(ip: &str, port: u16) -> Self {
        // Written on the stack and taken as one string (inline up to 24 bytes, as before),
        // not pushed piece by piece (~420 instructions an id, each push checking where
        // the string lives) nor `format!`ed (~800): the native API builds one per item
        // it owns.
        const SUFFIX: &[u8] = b"#true";
        if ip.len() <= INLINE_ID - 1 - SUFFIX.len() {
            let mut buf = [0u8; INLINE_ID + 5];
            let n = write_ip_port(&mut buf, ip.as_bytes(), port);
            buf[n..n + SUFFIX.len()].copy_from_slice(SUFFIX);
            let written = &buf[..n + SUFFIX.len()];
            if let Some(text) =
                arc_slots::ascii_str(written).or_else(|| std::str::from_utf8(written).ok())
            {
                return Self::from_compact(compact_str::CompactString::new(text));
            }
        }
        let mut digits = itoa::Buffer::new();
        let port = digits.format(port);
        Self::from_pieces(&[ip, ":", port, "#true"])
    }

    /// A connection client id: `<millis>_<ip>_<port>`.
    pub fn connection(millis: Millis, ip: &str, port: u16) -> Self {
        let (mut m, mut p) = (itoa::Buffer::new(), itoa::Buffer::new());
        Self::from_pieces(&[m.format(millis), "_", ip, "_", p.format(port)])
    }

    /// The id of the pieces' concatenation, sized exactly: a capacity over 24 bytes
    /// would put even a short id on the heap.
    fn from_pieces(pieces: &[&str]) -> Self {
        let mut id =
            compact_str::CompactString::with_capacity(pieces.iter().map(|p| p.len()).sum());
        for p in pieces {
            id.push_str(p);
        }
        Self::from_compact(id)
    }

    /// The id of a stored text (shared with it, whatever its length).
    pub(crate) fn of_name(n: &Name) -> Self {
        ClientId(IdRepr::Shared(n.clone()))
    }

    /// The shared text of the id, if it is not inline.
    pub(crate) fn shared_name(&self) -> Option<&Name> {
        match &self.0 {
            IdRepr::Inline(_) => None,
            IdRepr::Shared(n) => Some(n),
        }
    }

    /// Whether the id is held inline (no allocation of its own).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, IdRepr::Inline(_))
    }

    /// The id string.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            IdRepr::Inline(s) => s.as_str(),
            IdRepr::Shared(s) => s.as_str(),
        }
    }

    /// The kind, derived from the id.
    pub fn kind(&self) -> ClientKind {
        if first_hash_sign(self.as_str().as_bytes()).is_some() {
            ClientKind::IpPort
        } else {
            ClientKind::Connection
        }
    }

    /// For an ip:port client, the routing key `ip:port` (the part before `#`).
    pub fn routing_key(&self) -> Option<&str> {
        let s = self.as_str();
        // `#` is ASCII: the position is a char boundary.
        first_hash_sign(s.as_bytes()).map(|k| &s[..k])
    }
}

/// An ip:port client's routing key `ip:port` (its id's text before the first `#`, see
/// [`ClientId::routing_key`]): the text, or its pieces (the key of a stored client whose id
/// is derived from its first instance, which is not written out to route it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingKey<'a> {
    /// The key's text.
    Text(&'a str),
    /// `ip:port` of an `ip` holding no `#`, the port in decimal.
    IpPort(&'a str, u16),
}

/// The number of decimal digits of `v`: `v` plus [`DECIMAL_LEN`]'s entry for its bit
/// length, whose high half is the count. One load and one add, where comparing `v` with
/// each power of ten cost a compare and a branch each. The compact encoder counts the
/// port's digits for every connection id it sends (to find where the id's ip ends), so
/// this saves it ~12 instructions a client.
#[inline]
pub(crate) fn decimal_len(v: u16) -> usize {
    let bits = 16 - (v | 1).leading_zeros();
    ((u64::from(v) + DECIMAL_LEN[bits as usize]) >> 32) as usize
}

/// [`decimal_len`] by bit length (1 to 16; 0 unused): the digits of the smallest value of
/// that length in the high half and, when a power of ten `p` falls among the values of
/// that length, 2^32 - p in the low half, so a value from `p` up carries one more digit.
const DECIMAL_LEN: [u64; 17] = {
    let mut t = [0u64; 17];
    let mut bits = 1;
    while bits <= 16 {
        let (low, high) = if bits == 1 {
            (0u64, 2u64)
        } else {
            (1u64 << (bits - 1), 1u64 << bits)
        };
        // The digits of `low`, and the next power of ten above it.
        let (mut digits, mut p) = (1u64, 10u64);
        while p <= low {
            digits += 1;
            p *= 10;
        }
        t[bits] = digits << 32;
        if p < high {
            t[bits] += (1 << 32) - p;
        }
        bits += 1;
    }
    t
};

/// The decimal digits of `v` (no leading zero) at the start of the array (the rest is
/// zeros), and their count: one word, stored whole.
#[inline]
pub(crate) fn decimal_digits(v: u16) -> ([u8; 8], usize) {
    let n = decimal_len(v);
    let v = u64::from(v);
    // Five digits, the first in the lowest byte, then the leading zeros shifted out.
    let d = (v / 10_000) | ((v / 1_000 % 10) << 8) | ((v / 100 % 10) << 16) | ((v / 10 % 10) << 24);
    let d = (d | (v % 10) << 32) + 0x30_3030_3030;
    ((d >> ((5 - n) * 8)).to_le_bytes(), n)
}

/// Writes `ip:port` (the port in decimal, as [`ClientId::ip_port`] does) at the start of
/// `buf`, which must have room; the length written.
#[inline]
pub(crate) fn write_ip_port(buf: &mut [u8], ip: &[u8], port: u16) -> usize {
    let l = ip.len();
    let (digits, n) = decimal_digits(port);
    buf[..l].copy_from_slice(ip);
    buf[l] = b':';
    buf[l + 1..l + 1 + n].copy_from_slice(&digits[..n]);
    l + 1 + n
}

impl PartialEq for ClientId {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for ClientId {}
impl std::hash::Hash for ClientId {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl PartialOrd for ClientId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ClientId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The position of the first `#` in `b` (an ip:port client's id holds one, see
/// [`ClientId::kind`]: asked of every id a replica applies and of every registration;
/// `str::split_once` walks a char searcher).
pub(crate) fn first_hash_sign(b: &[u8]) -> Option<usize> {
    first_byte(b, b'#')
}

/// The position of the first `needle` in `b`, eight bytes at a time: a word holding none
/// is skipped with a few operations, and the bytes after the last whole word are read as
/// the word that ends `b` (its bytes before them hold no `needle`), not byte by byte.
pub(crate) fn first_byte(b: &[u8], needle: u8) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let needles = ONES * u64::from(needle);
    // A zero byte of `x` is a `needle` of the word; the lowest flagged byte is the first
    // zero byte exactly (a borrow can flag a byte only above a real zero).
    let first = |word: &[u8]| {
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ needles;
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        (zero != 0).then(|| zero.trailing_zeros() as usize / 8)
    };
    let mut at = 0;
    while let Some(word) = b.get(at..at + 8) {
        if let Some(k) = first(word) {
            return Some(at + k);
        }
        at += 8;
    }
    if at == b.len() {
        None
    } else if b.len() >= 8 {
        let start = b.len() - 8;
        first(&b[start..]).map(|k| start + k)
    } else {
        b.iter().position(|&c| c == needle)
    }
}

/// Client ids of every form with the instance each client publishes (tests of what is
/// computed from a client's pieces instead of its written-out id): ip:port ids derived
/// from their instance (IPv4 short and long, IPv6, host names, ports of every length,
/// ips that differ in a last digit so that `:` sorts after a digit), ip:port ids that are
/// not their instance's (stored), ids too long to derive, connection ids and others.
#[cfg(test)]
pub(crate) fn sample_ids() -> Vec<(ClientId, super::InstanceSpec)> {
    use super::InstanceSpec;
    let ips = [
        "10.0.0.1",
        "10.0.0.10",
        "10.0.0.100",
        "10.0.0.11",
        "1.2.3.4",
        "192.168.100.100",
        "::1",
        "fe80::1",
        "fe80::1:2",
        "2001:db8:85a3::8a2e:370:7334",
        "a",
        "host-1",
        "host-1.example",
        "very-long-host-name.example.org",
    ];
    let ports = [1, 9, 10, 80, 443, 999, 1000, 8080, 9999, 10000, 65535];
    let mut v = Vec::new();
    for (k, ip) in ips.iter().enumerate() {
        for (j, &port) in ports.iter().enumerate() {
            v.push((ClientId::ip_port(ip, port), InstanceSpec::new(ip, port)));
            let millis = 1_717_000_000_000 + (k * 31 + j) as u64 % 7;
            let conn = ClientId::connection(millis, ip, port);
            v.push((conn, InstanceSpec::new(ip, port)));
        }
        // An ip:port id another instance publishes: stored, not derived.
        let other = ips[(k + 1) % ips.len()];
        v.push((ClientId::ip_port(ip, 81), InstanceSpec::new(other, 81)));
        v.push((ClientId::ip_port(ip, 82), InstanceSpec::new(ip, 83)));
    }
    for s in ["x", "x#y", "10.0.0.1:80#false", "10.0.0.1#80", "~", "é#1"] {
        v.push((
            ClientId::parse(s).unwrap(),
            InstanceSpec::new("10.9.9.9", 7),
        ));
    }
    v
}

/// Publishes every [`sample_ids`] client to service `svc` of `r`, owned by member 0 (a
/// replica's way: an ip:port id that is not its instance's is held); their ids.
#[cfg(test)]
pub(crate) fn publish_samples(r: &crate::registry::Registry) -> Vec<ClientId> {
    let service = r.service("public", "DEFAULT_GROUP", "svc");
    sample_ids()
        .into_iter()
        .map(|(id, spec)| {
            let inst = spec.to_instance(r.interner(), &service).unwrap();
            let p = Publication::single(service.clone(), inst);
            r.publish(&id, p, crate::member::MemberId(0), 1).unwrap();
            id
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{decimal_len, first_hash_sign};

    /// Every port's digit count is the length of its decimal text.
    #[test]
    fn a_ports_decimal_length_is_its_texts() {
        for v in 0..=u16::MAX {
            assert_eq!(decimal_len(v), v.to_string().len(), "{v}");
        }
    }

    #[test]
    fn the_first_hash_sign_is_found_at_every_position() {
        for len in 0..40 {
            for at in 0..=len {
                let mut b = vec![b'a'; len];
                if at < len {
                    b[at] = b'#';
                    // Later ones, and bytes a borrow could confuse, change nothing.
                    for (k, c) in b.iter_mut().enumerate().skip(at + 1) {
                        *c = if k % 3 == 0 { b'#' } else { b'"' };
                    }
                }
                let want = b.iter().position(|&c| c == b'#');
                assert_eq!(first_hash_sign(&b), want, "{len} bytes, # at {at}");
            }
        }
        assert_eq!(first_hash_sign(b"10.0.0.7:8080#true"), Some(13));
        assert_eq!(first_hash_sign("é#".as_bytes()), Some(2));
    }
}
