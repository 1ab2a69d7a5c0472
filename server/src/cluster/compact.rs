//! The compact peer layout of sync batches and snapshot chunks, built for the decode side.
//!
//! Every replica decodes every change of every owner, and a starting node decodes every
//! client of the cluster, so the layout is shaped for decoding and for size: the batch's
//! strings in a table (validated as UTF-8 in one pass), each once but for string client ids
//! and service names (added without a lookup: such a text can appear twice, which the
//! decoder accepts), its distinct services and metadata maps once each (resolved, validated
//! and interned once per batch, not once per instance), then records that refer to them by
//! index. What a replica can derive is not sent: an ip:port client's id (`ip:port#true`)
//! comes from its instance, a connection client's id (`<millis>_<ip>_<port>`) from its
//! instance's ip; IPv4 and IPv6 addresses travel as 4 and 16 bytes (host names as strings);
//! revisions as the distance from the batch's lowest; a weight of 1 and absent metadata or
//! custom ids as a flag bit. Every length, count and index is checked before use; a
//! malformed batch is refused with the byte offset and the field, and nothing of it is
//! applied.
//!
//! Layout, version 3 (`v` = unsigned LEB128 varint, at most 10 bytes; fixed-width
//! integers little-endian). A node reads only its own version: the members of a cluster
//! must run the same version of the layout.
//!
//! ```text
//! u8 version = 3, v n_records, v base (at most the batch's lowest logical revision)
//! v n_strings, v len[n_strings], blob      string i is the next len[i] bytes, UTF-8
//! v n_maps, per map: v n, n × (v key, v value)         metadata maps (string indices)
//! v n_services, per service: v namespace, v group, v name
//! per record:
//!   u8 head: bit 0 deletion; bits 1-2 the id's form: 0 a string (v string index),
//!     1 ip:port (`ip:port#true` of the first instance; states only),
//!     2 connection (`<millis>_<ip of the first instance>_<port>`; states only): u64
//!       millis in bits 0-47, port in bits 48-63; millis of 2^48 - 1 or more as bits 0-47
//!       all set, then v millis
//!   [id], v d, [v low], v member: the revision is ((base + (d >> 1 << 12) + low) << 10)
//!     | member, low present when d & 1
//!   state: v owner (string index), v n_publications, per publication:
//!     v service, v (n_instances << 1 | batch), per instance:
//!       u8 flags (1 healthy, 2 enabled, 4 custom id, 8 weight is not 1, 16 IPv4,
//!         32 IPv6, 64 metadata), ip (u32 big-endian | 16 bytes | v string index),
//!       u16 port, [f64 weight], v cluster, [v metadata map], [v custom id]
//! ```
//!
//! Version 2 (a connection's millis as a varint before its u16 port) and version 1
//! (every index a `u32`, ids and ips as strings, revisions and weights in full) are no
//! longer read.

use crate::cluster::wire::WireError;
use distro_core::compact_form::{IdForm, MILLIS_ESCAPE, canonical_ipv4, id_form};
use distro_core::message::SyncBatch;
use distro_core::model::{ClientId, Metadata, Publication, Revision, Service};
use distro_core::name::Name;
use distro_core::registry::Client;
use distro_core::{ClientChange, ClientRecord, MemberId, Node};
use memo::AddrMemo;
use scratch::Scratch;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use text::{PackedIp, pack_ip};

mod decode;
mod memo;
mod scratch;
mod text;

pub use decode::{Decoded, decode, decode_changes, decode_into, decode_records, record_count};
pub use text::ipv4_text;

/// The layout's version byte.
pub const VERSION: u8 = 3;
const DELETION: u8 = 1;
const ID_STRING: u8 = 0;
const ID_IP_PORT: u8 = 1;
const ID_CONNECTION: u8 = 2;
const HEALTHY: u8 = 1;
const ENABLED: u8 = 2;
const CUSTOM_ID: u8 = 4;
const WEIGHT: u8 = 8;
const IPV4: u8 = 16;
const IPV6: u8 = 32;
const METADATA: u8 = 64;
const MEMBER_BITS: u32 = 10;
const FLOOR_SHIFT: u32 = 12;

type Fast = foldhash::fast::FixedState;

fn malformed(at: usize, what: impl std::fmt::Display) -> WireError {
    WireError::Malformed(format!("malformed compact batch at byte {at}: {what}"))
}

/// Where an encoder writes bytes one at a time: a `Vec` (the tables; the stack scratch of
/// a record, [`Scratch`], writes its own varints).
trait ByteSink {
    fn put(&mut self, c: u8);
}

impl ByteSink for Vec<u8> {
    #[inline(always)]
    fn put(&mut self, c: u8) {
        self.push(c);
    }
}

/// An unsigned LEB128 varint.
#[inline]
fn put_varint(out: &mut impl ByteSink, mut v: u64) {
    while v >= 0x80 {
        out.put(v as u8 | 0x80);
        v >>= 7;
    }
    out.put(v as u8);
}

/// Builds the tables while records are written to their own buffer.
struct Encoder<'a> {
    strings: HashMap<&'a str, u32, Fast>,
    lens: Vec<u8>,
    n_strings: u32,
    blob: Vec<u8>,
    /// Metadata maps by the identity of their storage ([`Metadata::storage_key`]): the
    /// store holds each distinct map once, so this finds a map without hashing its pairs
    /// (two copies of one map, if ever, are two table entries: larger, not wrong).
    maps: HashMap<usize, u32, Fast>,
    map_bytes: Vec<u8>,
    /// Services by the address of their interned key (likewise).
    services: HashMap<usize, u32, Fast>,
    /// The maps looked up lately, in front of `maps`: the thread's spare ([`memo::take`]),
    /// free when the batch starts, freed and given back when it ends
    /// ([`Encoder::finish_parts`]).
    recent_maps: AddrMemo,
    /// The services looked up lately, in front of `services` (likewise).
    recent_services: AddrMemo,
    service_bytes: Vec<u8>,
    records: Vec<u8>,
    n_records: u32,
    /// The lowest logical revision of the batch.
    base: u64,
    /// Owners' string indices by member index.
    owners: Vec<u32>,
    /// The last namespace, group and cluster looked up (nearly all are one of each), by
    /// the address and length of their interned text; none yet: a null address, which no
    /// text has (not an `Option`, whose tag was one more compare per lookup).
    last_names: [(*const u8, usize, u32); 3],
}

/// [`Encoder::last_names`] slots.
const NAMESPACE: usize = 0;
const GROUP: usize = 1;
const CLUSTER: usize = 2;

impl<'a> Encoder<'a> {
    fn new(base: u64, records: usize) -> Self {
        let [recent_maps, recent_services] = memo::take();
        // Sized for a batch of distinct services (each adds a few strings) and a few
        // dozen metadata maps: growing the tables by doubling rehashes them ~5 times.
        // The tables' bytes likewise (a string's length a byte, its text a dozen, a
        // service three indices, a map a few): grown by doubling, they were copied
        // ~8 times each. A small batch's records are mostly of distinct services (a
        // quarter of 8 grew the table twice).
        let services = (records / 4).max(records.min(16));
        Self {
            base,
            strings: HashMap::with_capacity_and_hasher(services + 64, Fast::default()),
            lens: Vec::with_capacity(services + 64),
            n_strings: 0,
            blob: Vec::with_capacity(12 * (services + 64)),
            maps: HashMap::with_capacity_and_hasher(32, Fast::default()),
            map_bytes: Vec::with_capacity(8 * 32),
            services: HashMap::with_capacity_and_hasher(services, Fast::default()),
            recent_maps,
            recent_services,
            service_bytes: Vec::with_capacity(3 * services),
            records: Vec::with_capacity(records * 40),
            n_records: 0,
            owners: Vec::new(),
            last_names: [(std::ptr::null(), 0, 0); 3],
        }
    }

    fn push_string(&mut self, s: &str) -> u32 {
        let i = self.n_strings;
        put_varint(&mut self.lens, s.len() as u64);
        self.blob.extend_from_slice(s.as_bytes());
        self.n_strings += 1;
        i
    }

    /// The index of `s`, added to the table if it is not there yet (hashed once).
    fn string(&mut self, s: &'a str) -> u32 {
        match self.strings.entry(s) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let i = self.n_strings;
                put_varint(&mut self.lens, s.len() as u64);
                self.blob.extend_from_slice(s.as_bytes());
                self.n_strings += 1;
                *e.insert(i)
            }
        }
    }

    /// The index of a metadata map: the memo ([`memo::AddrMemo`]) first, the table's map on a miss.
    #[inline(always)]
    fn map(&mut self, m: &'a Metadata) -> u32 {
        let key = m.storage_key();
        match self.recent_maps.get(key) {
            Some(i) => i,
            None => self.map_slow(key, m),
        }
    }

    #[inline(never)]
    fn map_slow(&mut self, key: usize, m: &'a Metadata) -> u32 {
        if let Some(&i) = self.maps.get(&key) {
            self.recent_maps.set(key, i);
            return i;
        }
        let i = self.maps.len() as u32;
        let mut b = std::mem::take(&mut self.map_bytes);
        put_varint(&mut b, m.len() as u64);
        for (k, v) in m.iter() {
            put_varint(&mut b, u64::from(self.string(k)));
            put_varint(&mut b, u64::from(self.string(v)));
        }
        self.map_bytes = b;
        self.maps.insert(key, i);
        self.recent_maps.set(key, i);
        i
    }

    /// The index of a service: the memo ([`memo::AddrMemo`]) first, the table's map on a miss.
    #[inline(always)]
    fn service(&mut self, s: &'a Service) -> u32 {
        let key = s.key().as_str().as_ptr() as usize;
        match self.recent_services.get(key) {
            Some(i) => i,
            None => self.service_slow(key, s),
        }
    }

    #[inline(never)]
    fn service_slow(&mut self, key: usize, s: &'a Service) -> u32 {
        let n = self.services.len() as u32;
        let i = match self.services.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                e.insert(n);
                // The name is added without looking it up: a service's name is distinct
                // within a batch but for one published in several namespaces or groups
                // (then it is sent once for each: a few bytes more, not wrong), and
                // hashing every name to find none cost more than the table saved.
                let parts = [
                    self.name(NAMESPACE, s.namespace()),
                    self.name(GROUP, s.group()),
                    self.push_string(s.name()),
                ];
                for p in parts {
                    put_varint(&mut self.service_bytes, u64::from(p));
                }
                n
            }
        };
        self.recent_services.set(key, i);
        i
    }

    /// The index of an interned name, remembered in `last_names[slot]`.
    fn name(&mut self, slot: usize, n: &'a Name) -> u32 {
        let s = n.as_str();
        let (p, len, i) = self.last_names[slot];
        if p == s.as_ptr() && len == s.len() {
            return i;
        }
        let i = self.string(s);
        self.last_names[slot] = (s.as_ptr(), s.len(), i);
        i
    }

    fn owner(&mut self, node: &'a Node, m: MemberId) -> u32 {
        let k = m.index();
        if let Some(&i) = self.owners.get(k)
            && i != u32::MAX
        {
            return i;
        }
        let i = self.string(node.member_addr(m));
        if self.owners.len() <= k {
            self.owners.resize(k + 1, u32::MAX);
        }
        self.owners[k] = i;
        i
    }

    #[inline(always)]
    fn revision(&mut self, out: &mut Scratch<'_>, r: Revision) {
        let member = self.revision_distance(out, r);
        out.varint(member);
    }

    /// The revision's distance from the batch's base and its low bits; returns its member
    /// (the varint that ends the revision), for the caller to write.
    #[inline(always)]
    fn revision_distance(&mut self, out: &mut Scratch<'_>, r: Revision) -> u64 {
        let d = (r.0 >> MEMBER_BITS) - self.base;
        let low = d & ((1 << FLOOR_SHIFT) - 1);
        out.varint((d >> FLOOR_SHIFT) << 1 | u64::from(low != 0));
        if low != 0 {
            out.varint(low);
        }
        r.0 & ((1 << MEMBER_BITS) - 1)
    }

    fn record(&mut self, out: &mut Scratch<'_>, node: &'a Node, r: &'a ClientRecord) {
        let publications = r.publications.iter().map(|p| &**p);
        let id = r.id.as_str();
        let form = match r.publications.first().and_then(|p| p.instances.first()) {
            Some(first) => id_form(id, first),
            None => IdForm::String,
        };
        self.id_head(out, form, Some(id));
        self.state(out, node, r.revision, r.owner, publications);
    }

    /// A state shared with the store, encoded straight from the stored client (an id it
    /// derives from its first instance is derived here too, not written out). Inlined,
    /// with [`Encoder::state`], into both callers (a flush's batch and a snapshot
    /// chunk): outlined once they had two, a flush's encoding cost 2-3 % more.
    #[inline(always)]
    fn stored(&mut self, out: &mut Scratch<'_>, node: &'a Node, c: &'a Client) {
        // The form from the parts stored with the id's text (parsed once: when an owner
        // stored it, or here at its first encoding for a client a replica stored).
        // Written as soon as it is found (carried into the two arms below, the form went
        // through the stack).
        self.id_head(out, c.id_form(), c.stored_id());
        let ps = c.publications();
        // One publication (nearly every client) without the iterator over a client's
        // parts.
        match ps.only() {
            Some(p) => {
                let one = std::iter::once(&**p);
                self.state(out, node, c.revision(), c.owner(), one);
            }
            None => {
                let publications = ps.iter().map(|p| &**p);
                self.state(out, node, c.revision(), c.owner(), publications);
            }
        }
    }

    /// A state's head byte and id, which travels in `form` (`id`, its text, is sent in
    /// the string form; `None` for a stored client's derived id, which travels in the
    /// ip:port form). The first step of the record ([`Encoder::state`] writes the rest).
    #[inline(always)]
    fn id_head(&mut self, out: &mut Scratch<'_>, form: IdForm, id: Option<&'a str>) {
        match (form, id) {
            (IdForm::String, Some(id)) => {
                out.byte(ID_STRING << 1);
                let s = self.push_string(id);
                out.varint(u64::from(s));
            }
            (IdForm::IpPort, _) | (IdForm::String, None) => out.byte(ID_IP_PORT << 1),
            (IdForm::Connection { millis, port }, _) => {
                out.byte(ID_CONNECTION << 1);
                out.connection(millis, port);
            }
        }
    }

    /// Encodes a state after its head and id ([`Encoder::id_head`]).
    #[inline(always)]
    fn state(
        &mut self,
        out: &mut Scratch<'_>,
        node: &'a Node,
        revision: Revision,
        owner: MemberId,
        publications: impl ExactSizeIterator<Item = &'a Publication>,
    ) {
        // The record in the scratch (`out`, the batch's), copied to the records as it
        // ends; a step of it at a time (its head, a publication's, an instance) at most
        // `STEP` bytes.
        const _: () = assert!(1 + 8 + 10 + 3 * 10 + 5 + 10 <= scratch::STEP);
        // The revision's distance and low bits, then its member with the owner and the
        // publication count.
        let member = self.revision_distance(out, revision);
        let owner = self.owner(node, owner);
        out.varints3(member, u64::from(owner), publications.len() as u64);
        for p in publications {
            out.room(&mut self.records);
            let service = self.service(&p.service);
            out.varints2(
                u64::from(service),
                (p.instances.len() as u64) << 1 | u64::from(p.is_batch()),
            );
            for i in p.instances.iter() {
                // Flags, ip, port, weight, cluster, map and custom id: 1 + 16 + 2 + 8 +
                // 3 × 5 bytes at most.
                const _: () = assert!(1 + 16 + 2 + 8 + 3 * 5 <= scratch::STEP);
                out.room(&mut self.records);
                let flags = (u8::from(i.healthy) * HEALTHY)
                    | (u8::from(i.enabled) * ENABLED)
                    | (u8::from(i.custom_id.is_some()) * CUSTOM_ID)
                    | (u8::from(i.weight.to_bits() != 1f64.to_bits()) * WEIGHT)
                    | (u8::from(!i.metadata.is_empty()) * METADATA);
                // Flags, IPv4 address and port: seven bytes of one word.
                let v4 = |o: [u8; 4]| {
                    u64::from(flags | IPV4)
                        | u64::from(u32::from_le_bytes(o)) << 8
                        | u64::from(i.port) << 40
                };
                // A canonical IPv4 address is packed in the instance (its bits loaded,
                // not parsed from the text), and written as it is read (a packed form
                // matched again after, it went through the stack); any other text is
                // packed here.
                match i.ipv4.get() {
                    Some(bits) => {
                        debug_assert_eq!(Some(bits.to_le_bytes()), canonical_ipv4(&i.ip));
                        out.word(v4(bits.to_le_bytes()), 7);
                    }
                    None => match pack_ip(&i.ip) {
                        PackedIp::V4(o) => out.word(v4(o), 7),
                        PackedIp::V6(o) => {
                            out.byte(flags | IPV6);
                            out.bytes(o);
                            out.bytes(i.port.to_le_bytes());
                        }
                        PackedIp::Text => {
                            out.byte(flags);
                            out.varint(u64::from(self.string(&i.ip)));
                            out.bytes(i.port.to_le_bytes());
                        }
                    },
                }
                if flags & WEIGHT != 0 {
                    out.bytes(i.weight.to_le_bytes());
                }
                out.varint(u64::from(self.name(CLUSTER, &i.cluster)));
                if flags & METADATA != 0 {
                    out.varint(u64::from(self.map(&i.metadata)));
                }
                if let Some(c) = i.custom_id.as_deref() {
                    out.varint(u64::from(self.string(c)));
                }
            }
        }
        out.finish(&mut self.records);
        self.n_records += 1;
    }

    fn deletion(&mut self, out: &mut Scratch<'_>, id: &'a ClientId, revision: Revision) {
        out.byte(DELETION | ID_STRING << 1);
        let s = self.push_string(id.as_str());
        out.varint(u64::from(s));
        self.revision(out, revision);
        out.finish(&mut self.records);
        self.n_records += 1;
    }

    fn finish(self) -> Vec<u8> {
        let (mut out, records) = self.finish_parts();
        out.extend_from_slice(&records);
        out
    }

    /// The encoded batch in two parts, to be sent one after the other: its head and
    /// tables, and its records (as written: not copied).
    fn finish_parts(self) -> (Vec<u8>, Vec<u8>) {
        memo::give_back([
            (self.recent_maps, self.maps.keys().copied()),
            (self.recent_services, self.services.keys().copied()),
        ]);
        let mut out = Vec::with_capacity(
            32 + self.lens.len()
                + self.blob.len()
                + self.map_bytes.len()
                + self.service_bytes.len(),
        );
        out.push(VERSION);
        put_varint(&mut out, u64::from(self.n_records));
        put_varint(&mut out, self.base);
        put_varint(&mut out, u64::from(self.n_strings));
        out.extend_from_slice(&self.lens);
        out.extend_from_slice(&self.blob);
        put_varint(&mut out, self.maps.len() as u64);
        out.extend_from_slice(&self.map_bytes);
        put_varint(&mut out, self.services.len() as u64);
        out.extend_from_slice(&self.service_bytes);
        (out, self.records)
    }
}

fn lowest_logical(revisions: impl Iterator<Item = Revision>) -> u64 {
    revisions.map(|r| r.0 >> MEMBER_BITS).min().unwrap_or(0)
}

/// Encodes the changes of a sync batch of `node`.
pub fn encode_changes(node: &Node, changes: &[ClientChange]) -> Vec<u8> {
    let (mut out, records) = encode_parts(node, changes, None);
    out.extend_from_slice(&records);
    out
}

/// A batch encoded in two parts, the batch being their concatenation: its head and
/// tables, then its records (which a message writes after the first part, without
/// copying them behind it first). Its [`SyncBatch::lowest`] (a flush's: kept as it took
/// the states) spares the walk over the changes for their lowest revision.
pub fn encode_batch_parts(node: &Node, batch: &SyncBatch) -> (Vec<u8>, Vec<u8>) {
    encode_parts(node, &batch.changes, batch.lowest)
}

/// The batch's parts, relative to `lowest` if given (at most every change's revision),
/// else to the lowest revision of `changes`.
fn encode_parts(
    node: &Node,
    changes: &[ClientChange],
    lowest: Option<Revision>,
) -> (Vec<u8>, Vec<u8>) {
    let base = match lowest {
        Some(r) => {
            debug_assert!(
                changes.iter().all(|c| c.revision() >= r),
                "a batch below its lowest"
            );
            r.0 >> MEMBER_BITS
        }
        None => lowest_logical(changes.iter().map(ClientChange::revision)),
    };
    let mut e = Encoder::new(base, changes.len());
    // One buffer, a cursor per record: the stored state's, which nothing is called with,
    // stays in a register (the others are given to calls).
    let b = &mut scratch::buffer();
    for c in changes {
        match c {
            ClientChange::Upsert(r) => e.record(&mut Scratch::new(b), node, r),
            ClientChange::Stored(s) => e.stored(&mut Scratch::new(b), node, s),
            ClientChange::Delete { id, revision } => {
                e.deletion(&mut Scratch::new(b), id, *revision);
            }
        }
    }
    e.finish_parts()
}

/// Encodes the records of a snapshot chunk of `node`: its stored clients, encoded as a
/// sync batch's [`ClientChange::Stored`] are (the same bytes as their records).
pub fn encode_records(node: &Node, records: &[Arc<Client>]) -> Vec<u8> {
    let mut e = Encoder::new(
        lowest_logical(records.iter().map(|c| c.revision())),
        records.len(),
    );
    let b = &mut scratch::buffer();
    for c in records {
        e.stored(&mut Scratch::new(b), node, c);
    }
    e.finish()
}

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod tests;
