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
use compact_str::CompactString;
use distro_core::limits::{MAX_WEIGHT, MIN_WEIGHT};
use distro_core::model::{
    ClientId, Instance, InstanceFields, Metadata, Publication, Revision, Service, ServiceSpec,
    check_cluster_name, validate_metadata,
};
use distro_core::name::Name;
use distro_core::{ClientChange, ClientRecord, Field, MemberId, Node, ValidationError};
use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::sync::Arc;
use text::{PackedIp, decimal_bytes, ipv4_text, pack_ip, push_decimal};

mod text;

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
    maps: HashMap<&'a Metadata, u32, Fast>,
    map_bytes: Vec<u8>,
    services: HashMap<&'a str, u32, Fast>,
    service_bytes: Vec<u8>,
    records: Vec<u8>,
    n_records: u32,
    /// The lowest logical revision of the batch.
    base: u64,
    /// Owners' string indices by member index.
    owners: Vec<u32>,
    /// The last service and cluster looked up (a batch is mostly runs of one), by the
    /// address of their interned text.
    last_service: Option<(*const u8, u32)>,
    last_cluster: Option<(*const u8, u32)>,
}

impl<'a> Encoder<'a> {
    fn new(base: u64, records: usize) -> Self {
        Self {
            base,
            records: Vec::with_capacity(records * 24),
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
        if let Some(&i) = self.maps.get(m) {
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
        self.maps.insert(m, i);
        i
    }

    fn service(&mut self, s: &'a Service) -> u32 {
        let key = s.key().as_str();
        if let Some((p, i)) = self.last_service
            && p == key.as_ptr()
        {
            return i;
        }
        let i = match self.services.get(key) {
            Some(&i) => i,
            None => {
                let i = self.services.len() as u32;
                let parts = [
                    self.string(s.namespace()),
                    self.string(s.group()),
                    self.string(s.name()),
                ];
                for p in parts {
                    put_varint(&mut self.service_bytes, u64::from(p));
                }
                self.services.insert(key, i);
                i
            }
        };
        self.last_service = Some((key.as_ptr(), i));
        i
    }

    fn cluster(&mut self, c: &'a Name) -> u32 {
        let s = c.as_str();
        if let Some((p, i)) = self.last_cluster
            && p == s.as_ptr()
        {
            return i;
        }
        let i = self.string(s);
        self.last_cluster = Some((s.as_ptr(), i));
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
        let mut out = std::mem::take(&mut self.records);
        let id = r.id.as_str();
        let first = r.publications.first().and_then(|p| p.instances.first());
        let form = first.map_or(IdForm::String, |i| id_form(id, i));
        match form {
            IdForm::String => {
                out.push(ID_STRING << 1);
                let s = self.push_string(id);
                put_varint(&mut out, u64::from(s));
            }
            IdForm::IpPort => out.push(ID_IP_PORT << 1),
            IdForm::Connection { millis, port } => {
                out.push(ID_CONNECTION << 1);
                put_varint(&mut out, millis);
                out.extend_from_slice(&port.to_le_bytes());
            }
        }
        self.revision(&mut out, r.revision);
        let owner = self.owner(node, r.owner);
        put_varint(&mut out, u64::from(owner));
        put_varint(&mut out, r.publications.len() as u64);
        for p in &r.publications {
            put_varint(&mut out, u64::from(self.service(&p.service)));
            put_varint(
                &mut out,
                (p.instances.len() as u64) << 1 | u64::from(p.batch),
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
                put_varint(&mut out, u64::from(self.cluster(&i.cluster)));
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

/// How a client id travels.
enum IdForm {
    String,
    IpPort,
    Connection { millis: u64, port: u16 },
}

/// The form of `id` given the client's first instance: derived when the id is exactly
/// what the replica will rebuild from it.
fn id_form(id: &str, first: &Instance) -> IdForm {
    let (id, ip) = (id.as_bytes(), first.ip.as_bytes());
    // ip:port: `<ip>:<port>#true`.
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
    // Connection: `<millis>_<ip>_<port>`, millis and port in decimal.
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

fn lowest_logical<'a>(revisions: impl Iterator<Item = &'a Revision>) -> u64 {
    revisions.map(|r| r.0 >> MEMBER_BITS).min().unwrap_or(0)
}

/// Encodes the changes of a sync batch of `node`.
pub fn encode_changes(node: &Node, changes: &[ClientChange]) -> Vec<u8> {
    let base = lowest_logical(changes.iter().map(|c| match c {
        ClientChange::Upsert(r) => &r.revision,
        ClientChange::Delete { revision, .. } => revision,
    }));
    let mut e = Encoder::new(base, changes.len());
    for c in changes {
        match c {
            ClientChange::Upsert(r) => e.record(node, r),
            ClientChange::Delete { id, revision } => e.deletion(id, *revision),
        }
    }
    e.finish()
}

/// Encodes the records of a snapshot chunk of `node`.
pub fn encode_records(node: &Node, records: &[ClientRecord]) -> Vec<u8> {
    let mut e = Encoder::new(
        lowest_logical(records.iter().map(|r| &r.revision)),
        records.len(),
    );
    for r in records {
        e.record(node, r);
    }
    e.finish()
}

// ----- decoding ----------------------------------------------------------------------

/// A checked reader over the batch.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        if self.b.len() - self.at < n {
            return Err(malformed(
                self.at,
                format!("{what}: {n} bytes needed, {} left", self.b.len() - self.at),
            ));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// An unsigned LEB128 varint of at most 10 bytes that fits in 64 bits.
    #[inline]
    fn varint(&mut self, what: &str) -> Result<u64, WireError> {
        if let Some(&b) = self.b.get(self.at)
            && b < 0x80
        {
            self.at += 1;
            return Ok(u64::from(b));
        }
        self.varint_long(what)
    }
    fn varint_long(&mut self, what: &str) -> Result<u64, WireError> {
        let at = self.at;
        let mut v = 0u64;
        for k in 0..10 {
            let Some(&b) = self.b.get(self.at) else {
                return Err(malformed(
                    at,
                    format!("{what}: the varint runs past the end"),
                ));
            };
            self.at += 1;
            if k == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * k);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(malformed(at, format!("{what}: the varint exceeds 64 bits")))
    }
    /// A varint that must fit in a `u32` (an index).
    fn index(&mut self, what: &str) -> Result<u32, WireError> {
        let at = self.at;
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| malformed(at, format!("{what} {v} exceeds u32")))
    }
    /// A count whose items take at least `min_item` bytes each: refused if the rest of
    /// the batch cannot hold them (so a forged count cannot make us allocate).
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, WireError> {
        let at = self.at;
        let n = self.varint(what)?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min_item as u64) > left {
            return Err(malformed(at, format!("{what} {n} do not fit in the batch")));
        }
        Ok(n as usize)
    }
}

/// The decoded tables of one batch.
struct Tables<'a> {
    base: u64,
    strings: Vec<&'a str>,
    maps: Vec<Metadata>,
    services: Vec<Service>,
    /// Interned cluster names by string index, filled on first use.
    clusters: Vec<Option<Name>>,
    /// Member ids by string index, filled on first use.
    owners: Vec<Option<MemberId>>,
    /// Scratch for ids rebuilt from instances.
    id: Vec<u8>,
}

impl<'a> Tables<'a> {
    fn read(node: &Node, r: &mut Reader<'a>, base: u64) -> Result<Self, WireError> {
        let n = r.count("strings", 1)?;
        let mut lens = Vec::with_capacity(n);
        let mut total = 0usize;
        for i in 0..n {
            let at = r.at;
            let len = r.varint("string length")?;
            total = total.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            if total > r.b.len() {
                return Err(malformed(
                    at,
                    format!("string {i}: {len} bytes do not fit in the batch"),
                ));
            }
            lens.push(len as usize);
        }
        let blob_at = r.at;
        let blob = r.take(total, "string table")?;
        let blob = std::str::from_utf8(blob)
            .map_err(|e| malformed(blob_at + e.valid_up_to(), "a string is not UTF-8"))?;
        let mut strings = Vec::with_capacity(n);
        let mut start = 0;
        for (i, len) in lens.into_iter().enumerate() {
            let e = start + len;
            if !blob.is_char_boundary(e) {
                return Err(malformed(
                    blob_at + e,
                    format!("string {i} ends inside a character"),
                ));
            }
            strings.push(&blob[start..e]);
            start = e;
        }
        let string = |at: usize, i: u32, what: &str| -> Result<&'a str, WireError> {
            strings
                .get(i as usize)
                .copied()
                .ok_or_else(|| malformed(at, format!("{what} refers to string {i} of {n}")))
        };
        let n_maps = r.count("metadata maps", 1)?;
        let mut maps = Vec::with_capacity(n_maps);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for _ in 0..n_maps {
            let at = r.at;
            let entries = r.count("metadata entries", 2)?;
            pairs.clear();
            for _ in 0..entries {
                let kat = r.at;
                let k = r.index("metadata key")?;
                let k = string(kat, k, "metadata key")?;
                let vat = r.at;
                let v = r.index("metadata value")?;
                let v = string(vat, v, "metadata value")?;
                pairs.push((k, v));
            }
            validate_metadata(pairs.iter().copied())
                .map_err(|e| malformed(at, format!("metadata map: {e}")))?;
            maps.push(Metadata::from_pairs(
                node.registry().interner(),
                pairs.iter().copied(),
            ));
        }
        let n_services = r.count("services", 3)?;
        let mut services = Vec::with_capacity(n_services);
        for _ in 0..n_services {
            let at = r.at;
            let ns = r.index("namespace")?;
            let ns = string(at, ns, "namespace")?;
            let at = r.at;
            let group = r.index("group")?;
            let group = string(at, group, "group")?;
            let at = r.at;
            let name = r.index("service")?;
            let name = string(at, name, "service")?;
            let (ns, group, name) = ServiceSpec::resolve_parts(ns, group, name)?;
            services.push(node.registry().service(ns, group, name));
        }
        Ok(Tables {
            base,
            clusters: vec![None; strings.len()],
            owners: vec![None; strings.len()],
            strings,
            maps,
            services,
            id: Vec::new(),
        })
    }

    /// The string that the index just read at `at` refers to.
    fn string(&self, at: usize, i: u32, what: &str) -> Result<&'a str, WireError> {
        self.strings.get(i as usize).copied().ok_or_else(|| {
            malformed(
                at,
                format!("{what} refers to string {i} of {}", self.strings.len()),
            )
        })
    }

    fn cluster(&mut self, node: &Node, r: &mut Reader<'_>) -> Result<Name, WireError> {
        let at = r.at;
        let i = r.index("cluster")?;
        let s = self.string(at, i, "cluster")?;
        if let Some(Some(c)) = self.clusters.get(i as usize) {
            return Ok(c.clone());
        }
        check_cluster_name(s).map_err(|e| malformed(at, format!("cluster: {e}")))?;
        let c = node.registry().interner().intern(s);
        self.clusters[i as usize] = Some(c.clone());
        Ok(c)
    }

    fn owner(&mut self, node: &Node, r: &mut Reader<'_>) -> Result<MemberId, WireError> {
        let at = r.at;
        let i = r.index("owner")?;
        let s = self.string(at, i, "owner")?;
        if let Some(Some(m)) = self.owners.get(i as usize) {
            return Ok(*m);
        }
        let m = crate::cluster::wire::owner_id(node, s)?;
        self.owners[i as usize] = Some(m);
        Ok(m)
    }

    fn revision(&self, r: &mut Reader<'_>) -> Result<Revision, WireError> {
        let at = r.at;
        let d = r.varint("revision")?;
        let low = if d & 1 != 0 {
            let lat = r.at;
            let low = r.varint("revision low bits")?;
            if low == 0 || low >= 1 << FLOOR_SHIFT {
                return Err(malformed(lat, format!("revision low bits {low}")));
            }
            low
        } else {
            0
        };
        let mat = r.at;
        let member = r.varint("revision member")?;
        if member >= 1 << MEMBER_BITS {
            return Err(malformed(mat, format!("revision member {member}")));
        }
        let logical = (d >> 1)
            .checked_mul(1 << FLOOR_SHIFT)
            .and_then(|x| x.checked_add(low))
            .and_then(|x| x.checked_add(self.base))
            .filter(|x| x.leading_zeros() >= MEMBER_BITS)
            .ok_or_else(|| malformed(at, "revision exceeds 64 bits"))?;
        Ok(Revision(logical << MEMBER_BITS | member))
    }
}

fn instance(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
    service: &Service,
) -> Result<Instance, WireError> {
    let at = r.at;
    let flags = r.u8("flags")?;
    if flags & 0x80 != 0 || flags & (IPV4 | IPV6) == IPV4 | IPV6 {
        return Err(malformed(at, format!("instance flags {flags:#04x}")));
    }
    let ip: CompactString = if flags & IPV4 != 0 {
        let b = r.take(4, "ip")?;
        ipv4_text([b[0], b[1], b[2], b[3]])
    } else if flags & IPV6 != 0 {
        let b = r.take(16, "ip")?;
        let mut o = [0u8; 16];
        o.copy_from_slice(b);
        CompactString::from(Ipv6Addr::from(o).to_string())
    } else {
        let at = r.at;
        let i = r.index("ip")?;
        CompactString::from(t.string(at, i, "ip")?)
    };
    let port = r.u16("port")?;
    let weight = if flags & WEIGHT != 0 {
        f64::from_bits(r.u64("weight")?)
    } else {
        1.0
    };
    let cluster = t.cluster(node, r)?;
    let metadata = if flags & METADATA != 0 {
        let at = r.at;
        let map = r.index("metadata")?;
        t.maps.get(map as usize).cloned().ok_or_else(|| {
            malformed(
                at,
                format!("metadata refers to map {map} of {}", t.maps.len()),
            )
        })?
    } else {
        Metadata::EMPTY
    };
    let custom = if flags & CUSTOM_ID != 0 {
        let at = r.at;
        let i = r.index("custom id")?;
        Some(t.string(at, i, "custom id")?)
    } else {
        None
    };
    // The scalar fields through the same validation as any input; cluster and metadata
    // were validated once for the batch. A packed address is valid by construction, and
    // a port read as u16 needs only the zero check: with no custom id either, what is
    // left to check is done here (same limits, same errors) without the whole pass.
    let packed = flags & (IPV4 | IPV6) != 0;
    if packed && custom.is_none() {
        if port == 0 {
            return Err(malformed(
                at,
                ValidationError::new(Field::Port, "0 is outside 1..=65535"),
            ));
        }
        if !weight.is_finite() || !(MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
            return Err(malformed(
                at,
                ValidationError::new(
                    Field::Weight,
                    format!("{weight} is outside {MIN_WEIGHT}..={MAX_WEIGHT}"),
                ),
            ));
        }
    } else {
        InstanceFields {
            ip: ip.as_str(),
            port: i64::from(port),
            weight,
            healthy: true,
            enabled: true,
            cluster: "",
            metadata: std::iter::empty(),
            instance_id: custom,
        }
        .validate()
        .map_err(|e| malformed(at, format!("instance: {e}")))?;
    }
    let mut i = Instance {
        ip,
        port,
        weight,
        healthy: flags & HEALTHY != 0,
        enabled: flags & ENABLED != 0,
        cluster,
        metadata,
        custom_id: None,
    };
    if let Some(id) = custom.filter(|s| !s.is_empty())
        && id != i.instance_id(service)
    {
        i.custom_id = Some(Name::new(id));
    }
    Ok(i)
}

/// The publications of a state record, sorted by service.
fn publications(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
) -> Result<Vec<Arc<Publication>>, WireError> {
    let n = r.count("publications", 3)?;
    let mut publications: Vec<Arc<Publication>> = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.at;
        let s = r.index("service")?;
        let service = t
            .services
            .get(s as usize)
            .cloned()
            .ok_or_else(|| malformed(at, format!("service {s} of {}", t.services.len())))?;
        let at = r.at;
        let v = r.varint("instances")?;
        let batch = v & 1 != 0;
        let count = v >> 1;
        if count == 0 {
            return Err(malformed(at, "an empty publication"));
        }
        if count > distro_core::limits::MAX_BATCH_INSTANCES as u64 {
            return Err(malformed(
                at,
                format!("{count} instances in one publication"),
            ));
        }
        if !batch && count != 1 {
            return Err(malformed(
                at,
                format!("a single publication with {count} instances"),
            ));
        }
        let p = if batch {
            let mut v = Vec::with_capacity(count as usize);
            for _ in 0..count {
                v.push(instance(node, t, r, &service)?);
            }
            Publication::batch(service, v)
        } else {
            let one = instance(node, t, r, &service)?;
            Publication::single(service, one)
        };
        publications.push(Arc::new(p));
    }
    publications.sort_by(|a, b| a.service.cmp(&b.service));
    publications.dedup_by(|a, b| a.service == b.service);
    Ok(publications)
}

/// A client id rebuilt in `t.id`, checked as any id.
fn derived_id(
    t: &mut Tables<'_>,
    at: usize,
    publications: &[Arc<Publication>],
    write: impl FnOnce(&mut Vec<u8>, &Instance),
) -> Result<ClientId, WireError> {
    let Some(first) = publications.first().and_then(|p| p.instances.first()) else {
        return Err(malformed(at, "a derived client id without an instance"));
    };
    t.id.clear();
    write(&mut t.id, first);
    let id = std::str::from_utf8(&t.id).expect("an ip, digits and separators");
    ClientId::parse(id).map_err(|e| malformed(at, format!("derived client id: {e}")))
}

/// Decodes the changes of a sync batch, validating every field as any peer input; names
/// are interned in `node`'s registry.
pub fn decode_changes(node: &Node, b: &[u8]) -> Result<Vec<ClientChange>, WireError> {
    let mut r = Reader { b, at: 0 };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(malformed(
            0,
            format!(
                "version {version}, this node reads version {VERSION} (all members must run \
                 the same layout version)"
            ),
        ));
    }
    let n = r.count("records", 4)?;
    let base = r.varint("revision base")?;
    let mut t = Tables::read(node, &mut r, base)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.at;
        let head = r.u8("record head")?;
        if head > (ID_CONNECTION << 1) {
            return Err(malformed(at, format!("record head {head:#04x}")));
        }
        let form = head >> 1;
        let deletion = head & DELETION != 0;
        let string_id = if form == ID_STRING {
            let iat = r.at;
            let i = r.index("client id")?;
            let s = t.string(iat, i, "client id")?;
            Some(ClientId::parse(s).map_err(|e| malformed(iat, format!("client id: {e}")))?)
        } else if deletion {
            return Err(malformed(at, "a deletion with a derived client id"));
        } else {
            None
        };
        let connection = if form == ID_CONNECTION {
            let millis = r.varint("connection millis")?;
            let port = r.u16("connection port")?;
            Some((millis, port))
        } else {
            None
        };
        let revision = t.revision(&mut r)?;
        if deletion {
            let id = string_id.expect("deletions carry a string id");
            out.push(ClientChange::Delete { id, revision });
            continue;
        }
        let owner = t.owner(node, &mut r)?;
        let publications = publications(node, &mut t, &mut r)?;
        let id = match (string_id, connection) {
            (Some(id), _) => id,
            (None, Some((millis, port))) => derived_id(&mut t, at, &publications, |s, i| {
                push_decimal(s, millis);
                s.push(b'_');
                s.extend_from_slice(i.ip.as_bytes());
                s.push(b'_');
                push_decimal(s, u64::from(port));
            })?,
            (None, None) => derived_id(&mut t, at, &publications, |s, i| {
                s.extend_from_slice(i.ip.as_bytes());
                s.push(b':');
                push_decimal(s, u64::from(i.port));
                s.extend_from_slice(b"#true");
            })?,
        };
        out.push(ClientChange::Upsert(ClientRecord {
            id,
            revision,
            owner,
            publications,
        }));
    }
    if r.at != b.len() {
        return Err(malformed(r.at, "bytes after the last record"));
    }
    Ok(out)
}

/// The number of records an encoded batch says it holds (`None` if it is too short or
/// of another version); a full decode checks it.
pub fn record_count(b: &[u8]) -> Option<usize> {
    match b {
        [VERSION, rest @ ..] => {
            let mut r = Reader { b: rest, at: 0 };
            r.varint("records").ok().map(|n| n as usize)
        }
        _ => None,
    }
}

/// Decodes the records of a snapshot chunk (every record a full state).
pub fn decode_records(node: &Node, b: &[u8]) -> Result<Vec<ClientRecord>, WireError> {
    decode_changes(node, b)?
        .into_iter()
        .map(|c| match c {
            ClientChange::Upsert(r) => Ok(r),
            ClientChange::Delete { id, .. } => Err(WireError::Malformed(format!(
                "malformed compact chunk: a deletion of {id} in a snapshot"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests;
