//! What the compact peer layout (version 3, `distro_server::cluster::compact`) derives
//! and packs, and how many bytes it takes for a client, estimated from above: shared by
//! the server's encoder (which decides the forms) and the core's snapshot chunks (which
//! are cut by the estimate, so a chunk of `snapshot_chunk_bytes` is about that size on
//! the wire).
//!
//! A client id is derived, not sent, when it is exactly what a replica rebuilds from the
//! client's first instance ([`id_form`]); an IPv4 address travels as 4 bytes when its
//! text is the one canonical form ([`canonical_ipv4`]); the other strings, the services
//! and the metadata maps sit once each in the chunk's tables, and records refer to them
//! by varint index.

use crate::member::MemberId;
use crate::model::{Instance, Publication, decimal_len};
use std::collections::HashSet;

/// The value of `b` if it is a number written in decimal the way `format!` writes it
/// (digits only, no leading zero), of at most 19 digits (so no overflow check per digit;
/// longer numbers are sent as text). Eight digits at a time (`eight_digits`): a
/// connection id's millis are thirteen.
#[inline]
pub fn decimal_bytes(b: &[u8]) -> Option<u64> {
    let n = b.len();
    if n == 0 || n > 19 || (n > 1 && b[0] == b'0') {
        return None;
    }
    if n < 8 {
        let mut v: u64 = 0;
        for &c in b {
            let d = c.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            v = v * 10 + u64::from(d);
        }
        return Some(v);
    }
    // The first n % 8 digits as one word padded with leading '0's, then whole words.
    let head = n % 8;
    let mut v = if head == 0 {
        0
    } else {
        let x = word(b, 0) << ((8 - head) * 8) | ZEROS >> (head * 8);
        eight_digits(x)?
    };
    for at in (head..n).step_by(8) {
        v = v * 100_000_000 + eight_digits(word(b, at))?;
    }
    Some(v)
}

/// Copies `src` (which fits) to the start of `dst`: up to sixteen bytes as two words that
/// may overlap (a copy of variable length calls `memcpy`), more by a copy.
#[inline]
pub(crate) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let l = src.len();
    if (8..=16).contains(&l) {
        dst[..8].copy_from_slice(&src[..8]);
        dst[l - 8..l].copy_from_slice(&src[l - 8..]);
    } else if (4..8).contains(&l) {
        dst[..4].copy_from_slice(&src[..4]);
        dst[l - 4..l].copy_from_slice(&src[l - 4..]);
    } else {
        dst[..l].copy_from_slice(src);
    }
}

/// Eight ASCII '0's, one per byte.
pub(crate) const ZEROS: u64 = 0x3030_3030_3030_3030;

/// The eight bytes of `b` at `at`, as a little-endian word.
#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The value of eight decimal digits loaded little-endian (the first digit in the lowest
/// byte), if all eight are digits: the digits checked a word at a time (every byte is
/// 0x30 to 0x39 when its high nibble is 3, and still 3 after adding 6), then combined by
/// three multiplications: each byte with the next into pairs, pairs into quads, quads
/// into the whole (the usual SWAR parse of eight digits).
#[inline(always)]
pub(crate) fn eight_digits(x: u64) -> Option<u64> {
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    if x & HIGH != ZEROS || x.wrapping_add(0x0606_0606_0606_0606) & HIGH != ZEROS {
        return None;
    }
    let d = x - ZEROS;
    let d = (d.wrapping_mul(10 << 8 | 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let d = (d.wrapping_mul(100 << 16 | 1) >> 16) & 0x0000_ffff_0000_ffff;
    Some(d.wrapping_mul(10_000 << 32 | 1) >> 32)
}

/// The octets of `ip` if it is an IPv4 address in its one canonical form (four decimal
/// octets, no leading zeros), the form a replica writes back. One pass, an octet at a
/// time: its first digit, up to two more unless the first is 0, then a `.` or the end.
/// The text (7 to 15 bytes) is read from a copy padded with zeros to sixteen bytes, at
/// positions taken modulo 16: no bounds check per byte, and a padding byte is neither a
/// digit nor a `.`, so it ends the text as its end does.
#[inline]
pub fn canonical_ipv4(ip: &str) -> Option<[u8; 4]> {
    let b = ip.as_bytes();
    let n = b.len();
    if !(7..=15).contains(&n) {
        return None;
    }
    let mut t = [0u8; 16];
    copy_short(&mut t, b);
    let digit = |at: usize| u32::from(t[at & 15].wrapping_sub(b'0'));
    let mut o = [0u8; 4];
    let mut at = 0;
    for (k, octet) in o.iter_mut().enumerate() {
        if k > 0 {
            if t[at & 15] != b'.' {
                return None;
            }
            at += 1;
        }
        let mut v = digit(at);
        if v > 9 {
            return None;
        }
        at += 1;
        if v != 0 {
            let d = digit(at);
            if d <= 9 {
                v = v * 10 + d;
                at += 1;
                let d = digit(at);
                if d <= 9 {
                    v = v * 10 + d;
                    at += 1;
                }
            }
        }
        *octet = u8::try_from(v).ok()?;
    }
    (at == n).then_some(o)
}

/// The escape of a connection id's millis in the layout's word of millis and port: a
/// millis below it travels in the word's low 48 bits; it and above travel as those 48 bits
/// all set, then the millis as a varint (so each value has one encoding). Shared by the
/// encoder and the snapshot chunks' size estimate.
pub const MILLIS_ESCAPE: u64 = (1 << 48) - 1;

/// How a client id travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    /// As a string.
    String,
    /// Derived: `ip:port#true` of the first instance.
    IpPort,
    /// Derived: `<millis>_<ip of the first instance>_<port>`, millis and port sent.
    Connection {
        /// The id's millis.
        millis: u64,
        /// The id's port.
        port: u16,
    },
}

/// Whether `a` and `b` (of equal lengths) hold the same bytes: an address of 4 to 16
/// bytes as two overlapping word comparisons, not a call to `memcmp`.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len();
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

/// The value of `b` if it is a port written as `format!` writes it (1 to 5 digits, no
/// leading zero, at most 65,535).
#[inline(always)]
fn decimal_port(b: &[u8]) -> Option<u16> {
    if b.is_empty() || b.len() > 5 || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    let mut v: u32 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u32::from(d);
    }
    u16::try_from(v).ok()
}

/// Where the last `_` of `id` is, within its last six bytes, and the port after it (as
/// [`decimal_port`] reads it). An id of eight bytes or more is read as one word (its
/// last eight bytes): the `_` found by a zero-byte test of the word xor `_` (exact: a
/// byte is flagged only when it is `_`), the port's digits checked and combined as
/// [`eight_digits`] does, padded with leading '0's.
#[inline(always)]
fn port_tail(id: &[u8]) -> Option<(usize, u16)> {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0xf0f0_f0f0_f0f0_f0f0;
    let n = id.len();
    if n < 8 {
        let tail = n.saturating_sub(6);
        let q = tail + id[tail..].iter().rposition(|&c| c == b'_')?;
        return Some((q, decimal_port(&id[q + 1..])?));
    }
    let w = word(id, n - 8);
    let x = w ^ 0x5f5f_5f5f_5f5f_5f5f;
    // 0x80 in each byte that is 0 in x (no carries cross bytes: each byte's low seven
    // bits plus 0x7f stay within it).
    let unders = !(((x & LOW7) + LOW7) | x | LOW7) & 0x8080_8080_8080_0000;
    if unders == 0 {
        return None;
    }
    let j = (63 - unders.leading_zeros() as usize) / 8;
    let p = 7 - j;
    if p == 0 {
        return None;
    }
    let digits = w >> (8 * (j + 1));
    let mask = (1u64 << (8 * p)) - 1;
    let zeros = ZEROS & mask;
    if digits & HIGH != zeros
        || digits.wrapping_add(0x0606_0606_0606_0606) & HIGH & mask != zeros
        || (p > 1 && digits & 0xff == u64::from(b'0'))
    {
        return None;
    }
    let v = eight_digits(digits << (8 * (8 - p)) | ZEROS >> (8 * p))?;
    Some((n - 1 - p, u16::try_from(v).ok()?))
}

/// The form of `id` given the client's first instance: derived when the id is exactly
/// what the replica will rebuild from it. A connection id is read from its end: the port
/// after the last `_` (within the last six bytes), the instance's ip before it (compared
/// a word at a time), the millis before that (read eight digits at a time); no pass
/// looks at a byte twice.
#[inline]
pub fn id_form(id: &str, first: &Instance) -> IdForm {
    let (id, ip) = (id.as_bytes(), first.ip.as_bytes());
    let n = id.len();
    // ip:port: `<ip>:<port>#true`.
    if n >= 5 && id[n - 5..] == *b"#true" {
        let key = &id[..n - 5];
        if key.len() > ip.len() + 1
            && key[ip.len()] == b':'
            && same_bytes(&key[..ip.len()], ip)
            && decimal_port(&key[ip.len() + 1..]) == Some(first.port)
        {
            return IdForm::IpPort;
        }
        return IdForm::String;
    }
    // Connection: `<millis>_<ip>_<port>`, millis and port in decimal (at most 19 digits
    // of millis, as `decimal_bytes` reads them). A port has no `_`: the last one ends
    // the ip.
    let Some((q, port)) = port_tail(id) else {
        return IdForm::String;
    };
    let Some(m) = q.checked_sub(ip.len() + 1) else {
        return IdForm::String;
    };
    if id[m] != b'_' || !same_bytes(&id[m + 1..q], ip) {
        return IdForm::String;
    }
    match decimal_bytes(&id[..m]) {
        Some(millis) => IdForm::Connection { millis, port },
        None => IdForm::String,
    }
}

/// [`pack_connection`]'s value for a text that is no connection id, nor an ip:port one
/// (whatever the instance, its form is [`IdForm::String`]).
const NOT_DERIVED: u64 = 1;
/// The widest millis packed: 43 bits (the year 2248); a connection id of later millis
/// is read as any other text.
const PACKED_MILLIS_BITS: u32 = 43;

/// What [`id_form`] reads of a connection id `<millis>_<ip>_<port>` without the instance,
/// packed in a word for [`form_of_packed`]: the port in bits 0-15, the millis' length
/// (1 to 13, as the millis are below 2^43; so a packed id is not 0) in bits 16-20, the millis from bit 21; or
/// [`NOT_DERIVED`] when `id` is neither a connection id nor `…#true`; or 0 when its form
/// is to be found from the text ([`id_form`]: an ip:port id, or millis that do not pack).
/// The ip is the text between the first `_` (the millis are digits) and the last (the
/// port is digits): which ip it must be is the instance's to say.
pub(crate) fn pack_connection(id: &[u8]) -> u64 {
    if id.ends_with(b"#true") {
        return 0;
    }
    let Some((q, port)) = port_tail(id) else {
        return NOT_DERIVED;
    };
    let Some(m) = id[..q].iter().position(|&c| c == b'_') else {
        return NOT_DERIVED;
    };
    match decimal_bytes(&id[..m]) {
        Some(millis) if millis >> PACKED_MILLIS_BITS == 0 => {
            millis << 21 | (m as u64) << 16 | u64::from(port)
        }
        Some(_) => 0,
        None => NOT_DERIVED,
    }
}

/// [`id_form`] of `id` given the instance, from `packed`, its [`pack_connection`]: a
/// connection id's ip is compared, nothing else of the text is read. Inlined always into
/// [`Client::id_form`](crate::registry::Client::id_form) and so into the encoder, which
/// asks it of every client it sends: called, it cost its prologue and spills per client.
#[inline(always)]
pub(crate) fn form_of_packed(packed: u64, id: &str, first: &Instance) -> IdForm {
    let m = (packed >> 16 & 31) as usize;
    if m == 0 {
        return if packed == NOT_DERIVED {
            IdForm::String
        } else {
            id_form(id, first)
        };
    }
    let port = packed as u16;
    let (b, ip) = (id.as_bytes(), first.ip.as_bytes());
    // The ip is between the millis' `_` and the port's.
    let q = b.len() - 1 - decimal_len(port);
    if q - (m + 1) == ip.len() && same_bytes(&b[m + 1..q], ip) {
        IdForm::Connection {
            millis: packed >> 21,
            port,
        }
    } else {
        IdForm::String
    }
}

/// Bytes of an unsigned LEB128 varint of `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// The fixed part of a chunk: version, record count, revision base and the three table
/// counts, each at their widest.
const HEAD: usize = 1 + 5 + 10 + 5 + 5 + 5;
/// A record's revision: the distance from the chunk's lowest (at most 4 bytes for
/// revisions within 17 years of each other), its low bits and the writer member.
const REVISION: usize = 4 + 2 + 2;

/// The encoded size of a chunk's records in the compact layout, estimated from above
/// record by record: what the record itself takes (an index as wide as the tables are
/// long so far, which no real index exceeds), plus what its strings, service and
/// metadata map add to the tables the first time the chunk refers to them (by identity:
/// two copies of one map count twice, and strings the layout shares between services
/// or maps count once per service or map).
pub(crate) struct ChunkSize {
    strings: usize,
    services: HashSet<usize, foldhash::fast::FixedState>,
    maps: HashSet<usize, foldhash::fast::FixedState>,
    clusters: HashSet<usize, foldhash::fast::FixedState>,
    /// The cluster name looked up last (nearly every instance's is `DEFAULT`).
    last_cluster: usize,
    owners: Vec<bool>,
}

impl ChunkSize {
    pub(crate) fn new() -> Self {
        Self {
            strings: 0,
            services: HashSet::default(),
            maps: HashSet::default(),
            clusters: HashSet::default(),
            last_cluster: 0,
            owners: Vec::new(),
        }
    }

    /// The chunk's fixed part.
    pub(crate) fn head(&self) -> usize {
        HEAD
    }

    /// A string added to the table.
    fn string(&mut self, s: &str) -> usize {
        self.strings += 1;
        varint_len(s.len() as u64) + s.len()
    }

    /// An index into a table of `n` entries.
    fn index(n: usize) -> usize {
        varint_len(n as u64)
    }

    /// The bytes of one client's state: its id (`form`, `Client::id_form`, and
    /// `stored_id`, the text sent in the string form), revision, owner (`owner_addr`, the
    /// member's address, the first time) and publications.
    pub(crate) fn state<'p>(
        &mut self,
        form: IdForm,
        stored_id: Option<&str>,
        owner: MemberId,
        owner_addr: impl FnOnce() -> usize,
        publications: impl ExactSizeIterator<Item = &'p Publication> + Clone,
    ) -> usize {
        let mut n = 1 + REVISION + varint_len(publications.len() as u64);
        n += match form {
            IdForm::IpPort => 0,
            // The millis and port in one word; millis of 2^48 - 1 or more after it.
            IdForm::Connection { millis, .. } => {
                8 + if millis >= MILLIS_ESCAPE {
                    varint_len(millis)
                } else {
                    0
                }
            }
            IdForm::String => {
                self.string(stored_id.unwrap_or_default()) + Self::index(self.strings)
            }
        };
        if self.owners.len() <= owner.index() {
            self.owners.resize(owner.index() + 1, false);
        }
        if !std::mem::replace(&mut self.owners[owner.index()], true) {
            self.strings += 1;
            n += 2 + owner_addr();
        }
        n += Self::index(self.strings);
        for p in publications {
            if self.services.insert(p.service.key().as_ptr() as usize) {
                for part in [p.service.namespace(), p.service.group(), p.service.name()] {
                    n += self.string(part) + Self::index(self.strings);
                }
            }
            n += Self::index(self.services.len());
            n += varint_len((p.instances.len() as u64) << 1 | 1);
            for i in p.instances.iter() {
                n += self.instance(i);
            }
        }
        n
    }

    fn instance(&mut self, i: &Instance) -> usize {
        // Flags, port, weight.
        let mut n = 1
            + 2
            + if i.weight.to_bits() == 1f64.to_bits() {
                0
            } else {
                8
            };
        n += if canonical_ipv4(&i.ip).is_some() {
            4
        } else if i.ip.contains(':') {
            // IPv6: 16 bytes, or a string when the text is not the canonical form.
            16.max(self.string(&i.ip) + Self::index(self.strings))
        } else {
            self.string(&i.ip) + Self::index(self.strings)
        };
        let cluster = i.cluster.as_ptr() as usize;
        if cluster != self.last_cluster && self.clusters.insert(cluster) {
            n += self.string(&i.cluster);
        }
        self.last_cluster = cluster;
        n += Self::index(self.strings);
        if !i.metadata.is_empty() {
            if self.maps.insert(i.metadata.storage_key()) {
                n += varint_len(i.metadata.len() as u64);
                for (k, v) in i.metadata.iter() {
                    n += self.string(k) + self.string(v) + 2 * Self::index(self.strings);
                }
            }
            n += Self::index(self.maps.len());
        }
        if let Some(c) = i.custom_id.as_deref() {
            n += self.string(c) + Self::index(self.strings);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metadata;
    use crate::name::Interner;

    /// The form as the layout defines it, written plainly (the function above is the
    /// one-pass form of this).
    fn reference(id: &str, first: &Instance) -> IdForm {
        let (id, ip) = (id.as_bytes(), first.ip.as_bytes());
        if let Some(key) = id.strip_suffix(b"#true") {
            if key.len() > ip.len()
                && key.starts_with(ip)
                && key[ip.len()] == b':'
                && decimal_bytes(&key[ip.len() + 1..]) == Some(u64::from(first.port))
            {
                return IdForm::IpPort;
            }
            return IdForm::String;
        }
        let Some(m) = id.iter().position(|&c| c == b'_') else {
            return IdForm::String;
        };
        let rest = &id[m + 1..];
        if rest.len() > ip.len() + 1
            && rest.starts_with(ip)
            && rest[ip.len()] == b'_'
            && let Some(millis) = decimal_bytes(&id[..m])
            && let Some(port) = decimal_bytes(&rest[ip.len() + 1..])
            && let Ok(port) = u16::try_from(port)
        {
            return IdForm::Connection { millis, port };
        }
        IdForm::String
    }

    /// Ids of every form and near misses, and the first instances they are tried with.
    fn ids_and_instances() -> (Vec<String>, Vec<Instance>) {
        let interner = Interner::new();
        let instance = |ip: &str, port: u16| Instance {
            ip: ip.into(),
            ipv4: crate::model::Ipv4Bits::of(ip),
            port,
            weight: 1.0,
            healthy: true,
            enabled: true,
            cluster: interner.default_cluster(),
            metadata: Metadata::EMPTY,
            custom_id: None,
        };
        let ips = [
            "10.0.0.7",
            "1.2.3.4",
            "255.255.255.255",
            "fe80::1",
            "host",
            "a",
            "",
            "10.0.0.70",
            "2001:db8:85a3:0:0:8a2e:370:7334",
            "a_b",
            "_",
        ];
        let mut ids: Vec<String> = Vec::new();
        for ip in ips {
            // And tails with the bytes a word-at-a-time reading could mistake: '^' ('_' ^
            // 1), '/' and ':' (either side of the digits), bytes that overflow when added
            // to, multi-byte UTF-8.
            let tricky = [
                "00", "^1", "1^", "_^", "^_1", "9/", "/9", ":1", "1:", "1é", "é1",
            ];
            let plain = [
                "8080", "1", "0", "65535", "65536", "080", "", "99999", "x", "_1", "1_", "123456",
            ];
            for port in plain
                .into_iter()
                .chain(tricky)
                .chain(["\u{7f}1", "6553\u{ff}"])
            {
                ids.push(format!("{ip}:{port}#true"));
                ids.push(format!("{ip}:{port}#false"));
                for millis in [
                    "1717000000000",
                    "0",
                    "01",
                    "",
                    "9999999999999999999",
                    "10000000000000000000",
                    "12a",
                    "12345678",
                    "1234567812345678",
                    "17170000000a0",
                    "_",
                ] {
                    ids.push(format!("{millis}_{ip}_{port}"));
                    ids.push(format!("{millis}_{ip}__{port}"));
                }
            }
            ids.push(format!("{ip}#true"));
            ids.push(ip.to_string());
        }
        ids.extend(["#true", "_", "__", "1_", "1__", "x#true", ""].map(String::from));
        // Millis that do not pack (from 2^43 on), around the bound.
        for millis in [(1u64 << 43) - 1, 1 << 43, u64::MAX / 10] {
            ids.push(format!("{millis}_10.0.0.7_8080"));
        }
        let firsts = ips
            .iter()
            .flat_map(|ip| [8080, 1, 0, 65535].map(|port| instance(ip, port)))
            .collect();
        (ids, firsts)
    }

    #[test]
    fn the_one_pass_id_form_is_the_layouts() {
        let (ids, firsts) = ids_and_instances();
        let mut derived = 0;
        for first in &firsts {
            for id in &ids {
                let want = reference(id, first);
                assert_eq!(
                    id_form(id, first),
                    want,
                    "{id:?} of {}:{}",
                    first.ip,
                    first.port
                );
                derived += usize::from(want != IdForm::String);
            }
        }
        assert!(derived > 40, "{derived} derived forms tried");
    }

    #[test]
    fn the_packed_form_is_the_texts() {
        let (ids, firsts) = ids_and_instances();
        let (mut packed, mut connections) = (0, 0);
        for id in &ids {
            let p = pack_connection(id.as_bytes());
            packed += usize::from(p != 0 && p != NOT_DERIVED);
            for first in &firsts {
                let want = id_form(id, first);
                let got = form_of_packed(p, id, first);
                assert_eq!(got, want, "{id:?} of {}:{}", first.ip, first.port);
                connections += usize::from(matches!(got, IdForm::Connection { .. }));
            }
        }
        assert!(
            packed > 100 && connections > 40,
            "{packed} packed, {connections}"
        );
        // Millis of 43 bits and more are read from the text.
        let big = format!("{}_10.0.0.7_8080", 1u64 << 43);
        assert_eq!(pack_connection(big.as_bytes()), 0);
        assert_eq!(
            pack_connection(b"1717000000000_h_1"),
            1717000000000 << 21 | 13 << 16 | 1
        );
    }

    /// `decimal_bytes` as plainly written: digits one by one.
    fn plain_decimal(b: &[u8]) -> Option<u64> {
        if b.is_empty() || b.len() > 19 || (b.len() > 1 && b[0] == b'0') {
            return None;
        }
        b.iter().try_fold(0u64, |v, &c| {
            c.is_ascii_digit().then(|| v * 10 + u64::from(c - b'0'))
        })
    }

    #[test]
    fn decimals_read_a_word_at_a_time_are_the_plain_ones() {
        // Every length, every digit at every place, and each place spoiled by the bytes
        // next to the digits (and ones whose high nibble is 3).
        let mut tried = 0;
        for n in 0..=21 {
            for place in 0..n.max(1) {
                for c in (0u8..=9).map(|d| b'0' + d).chain(*b"/:;?_ \xff") {
                    let mut b: Vec<u8> = (0..n).map(|k| b'1' + (k % 9) as u8).collect();
                    if n > 0 {
                        b[place] = c;
                    }
                    assert_eq!(decimal_bytes(&b), plain_decimal(&b), "{b:?}");
                    tried += 1;
                }
            }
        }
        for s in [
            "9999999999999999999",
            "1000000000000000000",
            "1717000000000",
            "12345678",
        ] {
            assert_eq!(decimal_bytes(s.as_bytes()), s.parse().ok(), "{s}");
        }
        assert!(tried > 3000);
    }

    #[test]
    fn canonical_ipv4_is_the_text_std_writes_back() {
        // Strings over digits and dots (and a few other bytes), each compared with std's
        // parse of it written back; a fixed LCG, the seed printed on failure.
        let alphabet = b"0123456789...12x:";
        let mut x: u64 = 0x5eed_1234;
        let mut canonical = 0;
        for _ in 0..200_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let n = (x >> 59) as usize % 17;
            let s: String = (0..n)
                .map(|k| alphabet[((x >> (k * 3 % 56)) as usize ^ k) % alphabet.len()] as char)
                .collect();
            let want = s
                .parse::<std::net::Ipv4Addr>()
                .ok()
                .filter(|a| a.to_string() == s)
                .map(|a| a.octets());
            assert_eq!(canonical_ipv4(&s), want, "{s:?} (lcg state {x})");
            canonical += usize::from(want.is_some());
        }
        for o in [
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [10, 0, 100, 9],
            [1, 22, 199, 250],
        ] {
            let s = std::net::Ipv4Addr::from(o).to_string();
            assert_eq!(canonical_ipv4(&s), Some(o), "{s}");
        }
        for s in [
            "256.1.1.1",
            "1.2.3.04",
            "1.2.3.4.",
            ".1.2.3",
            "1.2.3.1000",
            "00.1.2.3",
        ] {
            assert_eq!(canonical_ipv4(s), None, "{s}");
        }
        assert!(canonical > 10, "{canonical} canonical addresses tried");
    }

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
        }
    }
}
