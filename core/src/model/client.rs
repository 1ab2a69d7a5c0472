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
#[derive(Clone, PartialEq)]
pub struct Publication {
    /// The service.
    pub service: Service,
    /// The instances: [`Instances::One`] for a single registration, [`Instances::Many`]
    /// (of any length) for a batch.
    pub instances: Instances,
}

/// The instances of a publication: the single instance is stored inline (the common
/// case, no extra allocation), a batch in its own slice (a batch of one too: the form
/// tells whether the publication is a batch). Dereferences to `[Instance]`.
#[derive(Clone, PartialEq)]
pub enum Instances {
    /// One instance.
    One(Instance),
    /// A batch.
    Many(Box<[Instance]>),
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
        // Pieces pushed, not `format!`: the formatting machinery cost ~800 instructions
        // per id on the write path (the native API builds one per item).
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

#[cfg(test)]
mod tests {
    use super::first_hash_sign;

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
