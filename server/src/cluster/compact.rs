//! The compact peer layout of sync batches and snapshot chunks, built for the decode side.
//!
//! Every replica decodes every change of every owner, and a starting node decodes every
//! client of the cluster, so the layout is shaped for decoding and for size: the batch's
//! distinct strings once each in a table (validated as UTF-8 in one pass), its distinct
//! services and metadata maps once each (resolved, validated and interned once per
//! batch, not once per instance), then records that refer to them by index. What a
//! replica can derive is not sent: an ip:port client's id (`ip:port#true`) comes from
//! its instance, a connection client's id (`<millis>_<ip>_<port>`) from its instance's
//! ip; IPv4 and IPv6 addresses travel as 4 and 16 bytes (host names as strings);
//! revisions as the distance from the batch's lowest; a weight of 1 and absent metadata
//! or custom ids as a flag bit. Every length, count and index is checked before use; a
//! malformed batch is refused with the byte offset and the field, and nothing of it is
//! applied.
//!
//! Layout, version 2 (`v` = unsigned LEB128 varint, at most 10 bytes; fixed-width
//! integers little-endian). A node reads only its own version: the members of a cluster
//! must run the same version of the layout.
//!
//! ```text
//! u8 version = 2, v n_records, v base (the batch's lowest logical revision)
//! v n_strings, v len[n_strings], blob      string i is the next len[i] bytes, UTF-8
//! v n_maps, per map: v n, n × (v key, v value)         metadata maps (string indices)
//! v n_services, per service: v namespace, v group, v name
//! per record:
//!   u8 head: bit 0 deletion; bits 1-2 the id's form: 0 a string (v string index),
//!     1 ip:port (`ip:port#true` of the first instance; states only),
//!     2 connection (`<v millis>_<ip of the first instance>_<u16 port>`; states only)
//!   [id], v d, [v low], v member: the revision is ((base + (d >> 1 << 12) + low) << 10)
//!     | member, low present when d & 1
//!   state: v owner (string index), v n_publications, per publication:
//!     v service, v (n_instances << 1 | batch), per instance:
//!       u8 flags (1 healthy, 2 enabled, 4 custom id, 8 weight is not 1, 16 IPv4,
//!         32 IPv6, 64 metadata), ip (u32 big-endian | 16 bytes | v string index),
//!       u16 port, [f64 weight], v cluster, [v metadata map], [v custom id]
//! ```
//!
//! Version 1 (every index a `u32`, ids and ips as strings, revisions and weights in
//! full) is no longer read.

use crate::cluster::wire::WireError;
use distro_core::compact_form::{IdForm, id_form};
use distro_core::model::{ClientId, Metadata, Publication, Revision, Service};
use distro_core::name::Name;
use distro_core::registry::Client;
use distro_core::{ClientChange, ClientRecord, MemberId, Node};
use std::collections::HashMap;
use text::{PackedIp, pack_ip};

mod decode;
mod text;

pub use decode::{Decoded, decode, decode_changes, decode_into, decode_records, record_count};

/// The layout's version byte.
pub const VERSION: u8 = 2;
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

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Builds the tables while records are written to their own buffer.
#[derive(Default)]
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
    service_bytes: Vec<u8>,
    records: Vec<u8>,
    n_records: u32,
    /// The lowest logical revision of the batch.
    base: u64,
    /// Owners' string indices by member index.
    owners: Vec<u32>,
    /// The last service looked up (a batch is mostly runs of one), by the address of its
    /// interned key.
    last_service: Option<(*const u8, u32)>,
    /// The last namespace, group and cluster looked up (nearly all are one of each), by
    /// the address and length of their interned text.
    last_names: [Option<(*const u8, usize, u32)>; 3],
}

/// [`Encoder::last_names`] slots.
const NAMESPACE: usize = 0;
const GROUP: usize = 1;
const CLUSTER: usize = 2;

impl<'a> Encoder<'a> {
    fn new(base: u64, records: usize) -> Self {
        // Sized for a batch of distinct services (each adds a few strings) and a few
        // dozen metadata maps: growing the tables by doubling rehashes them ~5 times.
        let services = records / 4;
        Self {
            base,
            strings: HashMap::with_capacity_and_hasher(services + 64, Fast::default()),
            services: HashMap::with_capacity_and_hasher(services, Fast::default()),
            maps: HashMap::with_capacity_and_hasher(32, Fast::default()),
            records: Vec::with_capacity(records * 40),
            ..Self::default()
        }
    }

    fn push_string(&mut self, s: &str) -> u32 {
        let i = self.n_strings;
        put_varint(&mut self.lens, s.len() as u64);
        self.blob.extend_from_slice(s.as_bytes());
        self.n_strings += 1;
        i
    }

    fn string(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.push_string(s);
        self.strings.insert(s, i);
        i
    }

    fn map(&mut self, m: &'a Metadata) -> u32 {
        let key = m.storage_key();
        if let Some(&i) = self.maps.get(&key) {
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
        i
    }

    fn service(&mut self, s: &'a Service) -> u32 {
        let key = s.key().as_str();
        if let Some((p, i)) = self.last_service
            && p == key.as_ptr()
        {
            return i;
        }
        let i = match self.services.get(&(key.as_ptr() as usize)) {
            Some(&i) => i,
            None => {
                let i = self.services.len() as u32;
                let parts = [
                    self.name(NAMESPACE, s.namespace()),
                    self.name(GROUP, s.group()),
                    self.string(s.name()),
                ];
                for p in parts {
                    put_varint(&mut self.service_bytes, u64::from(p));
                }
                self.services.insert(key.as_ptr() as usize, i);
                i
            }
        };
        self.last_service = Some((key.as_ptr(), i));
        i
    }

    /// The index of an interned name, remembered in `last_names[slot]`.
    fn name(&mut self, slot: usize, n: &'a Name) -> u32 {
        let s = n.as_str();
        if let Some((p, len, i)) = self.last_names[slot]
            && p == s.as_ptr()
            && len == s.len()
        {
            return i;
        }
        let i = self.string(s);
        self.last_names[slot] = Some((s.as_ptr(), s.len(), i));
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

    fn revision(&mut self, out: &mut Vec<u8>, r: Revision) {
        let d = (r.0 >> MEMBER_BITS) - self.base;
        let low = d & ((1 << FLOOR_SHIFT) - 1);
        put_varint(out, (d >> FLOOR_SHIFT) << 1 | u64::from(low != 0));
        if low != 0 {
            put_varint(out, low);
        }
        put_varint(out, r.0 & ((1 << MEMBER_BITS) - 1));
    }

    fn record(&mut self, node: &'a Node, r: &'a ClientRecord) {
        let publications = r.publications.iter().map(|p| &**p);
        self.state(node, Some(r.id.as_str()), r.revision, r.owner, publications);
    }

    /// A state shared with the store, encoded straight from the stored client (an id it
    /// derives from its first instance is derived here too, not written out).
    fn stored(&mut self, node: &'a Node, c: &'a Client) {
        let publications = c.publications().iter().map(|p| &**p);
        let id = c.stored_id().map(|n| n.as_str());
        self.state(node, id, c.revision(), c.owner(), publications);
    }

    /// Encodes a state; `id` is `None` for a stored client's derived id (`ip:port#true`
    /// of the first instance: the ip:port form).
    fn state(
        &mut self,
        node: &'a Node,
        id: Option<&'a str>,
        revision: Revision,
        owner: MemberId,
        publications: impl ExactSizeIterator<Item = &'a Publication> + Clone,
    ) {
        let mut out = std::mem::take(&mut self.records);
        let first = publications
            .clone()
            .next()
            .and_then(|p| p.instances.first());
        let form = match id {
            Some(id) => first.map_or(IdForm::String, |i| id_form(id, i)),
            None => IdForm::IpPort,
        };
        match (form, id) {
            (IdForm::String, Some(id)) => {
                out.push(ID_STRING << 1);
                let s = self.push_string(id);
                put_varint(&mut out, u64::from(s));
            }
            (IdForm::IpPort, _) | (IdForm::String, None) => out.push(ID_IP_PORT << 1),
            (IdForm::Connection { millis, port }, _) => {
                out.push(ID_CONNECTION << 1);
                put_varint(&mut out, millis);
                out.extend_from_slice(&port.to_le_bytes());
            }
        }
        self.revision(&mut out, revision);
        let owner = self.owner(node, owner);
        put_varint(&mut out, u64::from(owner));
        put_varint(&mut out, publications.len() as u64);
        for p in publications {
            put_varint(&mut out, u64::from(self.service(&p.service)));
            put_varint(
                &mut out,
                (p.instances.len() as u64) << 1 | u64::from(p.is_batch()),
            );
            for i in p.instances.iter() {
                let ip = pack_ip(&i.ip);
                let flags = (u8::from(i.healthy) * HEALTHY)
                    | (u8::from(i.enabled) * ENABLED)
                    | (u8::from(i.custom_id.is_some()) * CUSTOM_ID)
                    | (u8::from(i.weight.to_bits() != 1f64.to_bits()) * WEIGHT)
                    | (u8::from(!i.metadata.is_empty()) * METADATA);
                match ip {
                    PackedIp::V4(o) => {
                        out.push(flags | IPV4);
                        out.extend_from_slice(&o);
                    }
                    PackedIp::V6(o) => {
                        out.push(flags | IPV6);
                        out.extend_from_slice(&o);
                    }
                    PackedIp::Text => {
                        out.push(flags);
                        put_varint(&mut out, u64::from(self.string(&i.ip)));
                    }
                }
                out.extend_from_slice(&i.port.to_le_bytes());
                if flags & WEIGHT != 0 {
                    out.extend_from_slice(&i.weight.to_le_bytes());
                }
                put_varint(&mut out, u64::from(self.name(CLUSTER, &i.cluster)));
                if flags & METADATA != 0 {
                    put_varint(&mut out, u64::from(self.map(&i.metadata)));
                }
                if let Some(c) = i.custom_id.as_deref() {
                    put_varint(&mut out, u64::from(self.string(c)));
                }
            }
        }
        self.records = out;
        self.n_records += 1;
    }

    fn deletion(&mut self, id: &'a ClientId, revision: Revision) {
        let mut out = std::mem::take(&mut self.records);
        out.push(DELETION | ID_STRING << 1);
        let s = self.push_string(id.as_str());
        put_varint(&mut out, u64::from(s));
        self.revision(&mut out, revision);
        self.records = out;
        self.n_records += 1;
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            32 + self.lens.len()
                + self.blob.len()
                + self.map_bytes.len()
                + self.service_bytes.len()
                + self.records.len(),
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
        out.extend_from_slice(&self.records);
        out
    }
}

fn lowest_logical(revisions: impl Iterator<Item = Revision>) -> u64 {
    revisions.map(|r| r.0 >> MEMBER_BITS).min().unwrap_or(0)
}

/// Encodes the changes of a sync batch of `node`.
pub fn encode_changes(node: &Node, changes: &[ClientChange]) -> Vec<u8> {
    let base = lowest_logical(changes.iter().map(ClientChange::revision));
    let mut e = Encoder::new(base, changes.len());
    for c in changes {
        match c {
            ClientChange::Upsert(r) => e.record(node, r),
            ClientChange::Stored(s) => e.stored(node, s),
            ClientChange::Delete { id, revision } => e.deletion(id, *revision),
        }
    }
    e.finish()
}

/// Encodes the records of a snapshot chunk of `node`.
pub fn encode_records(node: &Node, records: &[ClientRecord]) -> Vec<u8> {
    let mut e = Encoder::new(
        lowest_logical(records.iter().map(|r| r.revision)),
        records.len(),
    );
    for r in records {
        e.record(node, r);
    }
    e.finish()
}

#[cfg(test)]
mod tests;
