//! The compact peer layout of sync batches and snapshot chunks, built for the decode side.
//!
//! Every replica decodes every change of every owner, and a starting node decodes every
//! client of the cluster, so the layout is shaped for decoding: the batch's distinct
//! strings once each in a table (validated as UTF-8 in one pass), its distinct services
//! and metadata maps once each (resolved, validated and interned once per batch, not once
//! per instance), then fixed-width records that refer to them by index. Every length,
//! count and index is checked before use; a malformed batch is refused with the byte
//! offset and the field, and nothing of it is applied.
//!
//! Layout, version 1 (integers little-endian):
//!
//! ```text
//! u8 version = 1, u32 n_records
//! u32 n_strings, u32 end[n_strings]   string i is blob[end[i-1]..end[i]]
//! blob                                 UTF-8, end[n_strings-1] bytes
//! u32 n_maps, per map: u16 n, n × (u32 key, u32 value)        metadata maps
//! u32 n_services, per service: u32 namespace, u32 group, u32 name
//! per record:
//!   u8 kind (0 state, 1 deletion), u32 client id, u64 revision
//!   state: u32 owner (member address), u16 n_publications, per publication:
//!     u32 service, u8 batch, u16 n_instances, per instance (31 bytes):
//!       u32 ip, u16 port, f64 weight, u8 flags (1 healthy, 2 enabled, 4 custom id),
//!       u32 cluster, u32 metadata map (NONE = no metadata), u32 custom id
//! ```

use crate::cluster::wire::WireError;
use distro_core::model::{
    ClientId, Instance, InstanceFields, Metadata, Publication, Revision, Service, ServiceSpec,
    check_cluster_name, validate_metadata,
};
use distro_core::name::Name;
use distro_core::{ClientChange, ClientRecord, MemberId, Node};
use std::collections::HashMap;
use std::sync::Arc;

/// The layout's version byte.
pub const VERSION: u8 = 1;
/// The index that refers to nothing (no metadata).
const NONE: u32 = u32::MAX;
const STATE: u8 = 0;
const DELETION: u8 = 1;
const HEALTHY: u8 = 1;
const ENABLED: u8 = 2;
const CUSTOM_ID: u8 = 4;

type Fast = foldhash::fast::FixedState;

fn malformed(at: usize, what: impl std::fmt::Display) -> WireError {
    WireError::Malformed(format!("malformed compact batch at byte {at}: {what}"))
}

// ----- encoding ----------------------------------------------------------------------

/// Builds the tables while records are written to their own buffer.
#[derive(Default)]
struct Encoder<'a> {
    strings: HashMap<&'a str, u32, Fast>,
    ends: Vec<u32>,
    blob: Vec<u8>,
    maps: HashMap<&'a Metadata, u32, Fast>,
    map_bytes: Vec<u8>,
    services: HashMap<&'a str, u32, Fast>,
    service_bytes: Vec<u8>,
    records: Vec<u8>,
    n_records: u32,
}

impl<'a> Encoder<'a> {
    fn string(&mut self, s: &'a str) -> u32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.ends.len() as u32;
        self.blob.extend_from_slice(s.as_bytes());
        self.ends.push(self.blob.len() as u32);
        self.strings.insert(s, i);
        i
    }

    /// A string known to occur once in the batch (a client id: a batch or chunk holds a
    /// client once): appended without the lookup. A repeat would only cost its bytes.
    fn unique_string(&mut self, s: &str) -> u32 {
        let i = self.ends.len() as u32;
        self.blob.extend_from_slice(s.as_bytes());
        self.ends.push(self.blob.len() as u32);
        i
    }

    fn map(&mut self, m: &'a Metadata) -> u32 {
        if m.is_empty() {
            return NONE;
        }
        if let Some(&i) = self.maps.get(m) {
            return i;
        }
        let i = self.maps.len() as u32;
        let mut b = std::mem::take(&mut self.map_bytes);
        b.extend_from_slice(&(m.len() as u16).to_le_bytes());
        for (k, v) in m.iter() {
            b.extend_from_slice(&self.string(k).to_le_bytes());
            b.extend_from_slice(&self.string(v).to_le_bytes());
        }
        self.map_bytes = b;
        self.maps.insert(m, i);
        i
    }

    fn service(&mut self, s: &'a Service) -> u32 {
        if let Some(&i) = self.services.get(s.key().as_str()) {
            return i;
        }
        let i = self.services.len() as u32;
        let parts = [
            self.string(s.namespace()),
            self.string(s.group()),
            self.string(s.name()),
        ];
        for p in parts {
            self.service_bytes.extend_from_slice(&p.to_le_bytes());
        }
        self.services.insert(s.key().as_str(), i);
        i
    }

    fn record(&mut self, node: &'a Node, r: &'a ClientRecord) {
        let id = self.unique_string(r.id.as_str());
        let owner = self.string(node.member_addr(r.owner));
        let mut out = std::mem::take(&mut self.records);
        out.push(STATE);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&r.revision.0.to_le_bytes());
        out.extend_from_slice(&owner.to_le_bytes());
        out.extend_from_slice(&(r.publications.len() as u16).to_le_bytes());
        for p in &r.publications {
            out.extend_from_slice(&self.service(&p.service).to_le_bytes());
            out.push(u8::from(p.batch));
            out.extend_from_slice(&(p.instances.len() as u16).to_le_bytes());
            for i in p.instances.iter() {
                let flags = (u8::from(i.healthy) * HEALTHY)
                    | (u8::from(i.enabled) * ENABLED)
                    | (u8::from(i.custom_id.is_some()) * CUSTOM_ID);
                out.extend_from_slice(&self.string(&i.ip).to_le_bytes());
                out.extend_from_slice(&i.port.to_le_bytes());
                out.extend_from_slice(&i.weight.to_le_bytes());
                out.push(flags);
                out.extend_from_slice(&self.string(&i.cluster).to_le_bytes());
                out.extend_from_slice(&self.map(&i.metadata).to_le_bytes());
                let custom = i.custom_id.as_deref().map_or(NONE, |c| self.string(c));
                out.extend_from_slice(&custom.to_le_bytes());
            }
        }
        self.records = out;
        self.n_records += 1;
    }

    fn deletion(&mut self, id: &'a ClientId, revision: Revision) {
        let id = self.unique_string(id.as_str());
        self.records.push(DELETION);
        self.records.extend_from_slice(&id.to_le_bytes());
        self.records.extend_from_slice(&revision.0.to_le_bytes());
        self.n_records += 1;
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            32 + 4 * self.ends.len()
                + self.blob.len()
                + self.map_bytes.len()
                + self.service_bytes.len()
                + self.records.len(),
        );
        out.push(VERSION);
        out.extend_from_slice(&self.n_records.to_le_bytes());
        out.extend_from_slice(&(self.ends.len() as u32).to_le_bytes());
        for e in &self.ends {
            out.extend_from_slice(&e.to_le_bytes());
        }
        out.extend_from_slice(&self.blob);
        out.extend_from_slice(&(self.maps.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.map_bytes);
        out.extend_from_slice(&(self.services.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.service_bytes);
        out.extend_from_slice(&self.records);
        out
    }
}

/// Encodes the changes of a sync batch of `node`.
pub fn encode_changes(node: &Node, changes: &[ClientChange]) -> Vec<u8> {
    let mut e = Encoder::default();
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
    let mut e = Encoder::default();
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
    fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// A count whose items take at least `min_item` bytes each: refused if the rest of
    /// the batch cannot hold them (so a forged count cannot make us allocate).
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, WireError> {
        let at = self.at;
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item) > self.b.len() - self.at {
            return Err(malformed(at, format!("{what} {n} do not fit in the batch")));
        }
        Ok(n)
    }
}

/// The decoded tables of one batch.
struct Tables<'a> {
    strings: Vec<&'a str>,
    maps: Vec<Metadata>,
    services: Vec<Service>,
    /// Interned cluster names by string index, filled on first use.
    clusters: Vec<Option<Name>>,
    /// Member ids by string index, filled on first use.
    owners: Vec<Option<MemberId>>,
}

impl<'a> Tables<'a> {
    fn read(node: &Node, r: &mut Reader<'a>) -> Result<Self, WireError> {
        let n = r.count("strings", 4)?;
        let ends_at = r.at;
        let ends = r.take(4 * n, "string ends")?;
        let end = |i: usize| {
            u32::from_le_bytes([
                ends[4 * i],
                ends[4 * i + 1],
                ends[4 * i + 2],
                ends[4 * i + 3],
            ]) as usize
        };
        let blob_len = if n == 0 { 0 } else { end(n - 1) };
        let blob_at = r.at;
        let blob = r.take(blob_len, "string table")?;
        let blob = std::str::from_utf8(blob)
            .map_err(|e| malformed(blob_at + e.valid_up_to(), "a string is not UTF-8"))?;
        let mut strings = Vec::with_capacity(n);
        let mut start = 0;
        for i in 0..n {
            let e = end(i);
            if e < start || e > blob.len() || !blob.is_char_boundary(e) {
                return Err(malformed(
                    ends_at + 4 * i,
                    format!("string {i} ends at {e}, outside {start}..={}", blob.len()),
                ));
            }
            strings.push(&blob[start..e]);
            start = e;
        }
        let string = |r: &Reader<'_>, i: u32, what: &str| -> Result<&'a str, WireError> {
            strings
                .get(i as usize)
                .copied()
                .ok_or_else(|| malformed(r.at - 4, format!("{what} refers to string {i} of {n}")))
        };
        let n_maps = r.count("metadata maps", 2)?;
        let mut maps = Vec::with_capacity(n_maps);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for _ in 0..n_maps {
            let at = r.at;
            let entries = r.u16("metadata entries")? as usize;
            pairs.clear();
            for _ in 0..entries {
                let k = r.u32("metadata key")?;
                let k = string(r, k, "metadata key")?;
                let v = r.u32("metadata value")?;
                let v = string(r, v, "metadata value")?;
                pairs.push((k, v));
            }
            validate_metadata(pairs.iter().copied())
                .map_err(|e| malformed(at, format!("metadata map: {e}")))?;
            maps.push(Metadata::from_pairs(
                node.registry().interner(),
                pairs.iter().copied(),
            ));
        }
        let n_services = r.count("services", 12)?;
        let mut services = Vec::with_capacity(n_services);
        for _ in 0..n_services {
            let ns = r.u32("namespace")?;
            let ns = string(r, ns, "namespace")?;
            let group = r.u32("group")?;
            let group = string(r, group, "group")?;
            let name = r.u32("service")?;
            let name = string(r, name, "service")?;
            let (ns, group, name) = ServiceSpec::resolve_parts(ns, group, name)?;
            services.push(node.registry().service(ns, group, name));
        }
        Ok(Tables {
            clusters: vec![None; strings.len()],
            owners: vec![None; strings.len()],
            strings,
            maps,
            services,
        })
    }

    fn string(&self, r: &Reader<'_>, i: u32, what: &str) -> Result<&'a str, WireError> {
        self.strings.get(i as usize).copied().ok_or_else(|| {
            malformed(
                r.at - 4,
                format!("{what} refers to string {i} of {}", self.strings.len()),
            )
        })
    }

    fn cluster(&mut self, node: &Node, r: &Reader<'_>, i: u32) -> Result<Name, WireError> {
        let s = self.string(r, i, "cluster")?;
        if let Some(Some(c)) = self.clusters.get(i as usize) {
            return Ok(c.clone());
        }
        check_cluster_name(s)?;
        let c = node.registry().interner().intern(s);
        self.clusters[i as usize] = Some(c.clone());
        Ok(c)
    }

    fn owner(&mut self, node: &Node, r: &Reader<'_>, i: u32) -> Result<MemberId, WireError> {
        let s = self.string(r, i, "owner")?;
        if let Some(Some(m)) = self.owners.get(i as usize) {
            return Ok(*m);
        }
        let m = crate::cluster::wire::owner_id(node, s)?;
        self.owners[i as usize] = Some(m);
        Ok(m)
    }
}

fn instance(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
    service: &Service,
) -> Result<Instance, WireError> {
    let ip = r.u32("ip")?;
    let ip = t.string(r, ip, "ip")?;
    let port = r.u16("port")?;
    let weight = f64::from_bits(r.u64("weight")?);
    let flags = r.u8("flags")?;
    let cluster = r.u32("cluster")?;
    let cluster = t.cluster(node, r, cluster)?;
    let map = r.u32("metadata")?;
    let metadata = if map == NONE {
        Metadata::EMPTY
    } else {
        t.maps.get(map as usize).cloned().ok_or_else(|| {
            malformed(
                r.at - 4,
                format!("metadata refers to map {map} of {}", t.maps.len()),
            )
        })?
    };
    let custom = r.u32("custom id")?;
    let custom = if flags & CUSTOM_ID != 0 {
        Some(t.string(r, custom, "custom id")?)
    } else {
        None
    };
    // The scalar fields through the same validation as any input; cluster and metadata
    // were validated once for the batch.
    InstanceFields {
        ip,
        port: i64::from(port),
        weight,
        healthy: true,
        enabled: true,
        cluster: "",
        metadata: std::iter::empty(),
        instance_id: custom,
    }
    .validate()?;
    let mut i = Instance {
        ip: ip.into(),
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
        i.custom_id = Some(Box::from(id));
    }
    Ok(i)
}

fn record(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
    id: ClientId,
    revision: Revision,
) -> Result<ClientRecord, WireError> {
    let owner = r.u32("owner")?;
    let owner = t.owner(node, r, owner)?;
    let n = r.u16("publications")? as usize;
    let mut publications: Vec<Arc<Publication>> = Vec::with_capacity(n);
    for _ in 0..n {
        let s = r.u32("service")?;
        let service =
            t.services.get(s as usize).cloned().ok_or_else(|| {
                malformed(r.at - 4, format!("service {s} of {}", t.services.len()))
            })?;
        let at = r.at;
        let batch = match r.u8("batch")? {
            0 => false,
            1 => true,
            b => return Err(malformed(at, format!("batch flag {b}"))),
        };
        let count = r.u16("instances")? as usize;
        if count == 0 {
            return Err(malformed(at, format!("client {id}: empty publication")));
        }
        if count > distro_core::limits::MAX_BATCH_INSTANCES {
            return Err(malformed(
                at,
                format!("client {id}: {count} instances in one publication"),
            ));
        }
        if !batch && count != 1 {
            return Err(malformed(
                at,
                format!("client {id}: a single publication with {count} instances"),
            ));
        }
        let p = if batch {
            let mut v = Vec::with_capacity(count);
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
    Ok(ClientRecord {
        id,
        revision,
        owner,
        publications,
    })
}

/// Decodes the changes of a sync batch, validating every field as any peer input; names
/// are interned in `node`'s registry.
pub fn decode_changes(node: &Node, b: &[u8]) -> Result<Vec<ClientChange>, WireError> {
    let mut r = Reader { b, at: 0 };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(malformed(
            0,
            format!("version {version}, this node reads version {VERSION}"),
        ));
    }
    let n = r.count("records", 13)?;
    let mut t = Tables::read(node, &mut r)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.at;
        let kind = r.u8("record kind")?;
        let id = r.u32("client id")?;
        let id = ClientId::parse(t.string(&r, id, "client id")?)?;
        let revision = Revision(r.u64("revision")?);
        out.push(match kind {
            STATE => ClientChange::Upsert(record(node, &mut t, &mut r, id, revision)?),
            DELETION => ClientChange::Delete { id, revision },
            k => return Err(malformed(at, format!("record kind {k}"))),
        });
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
        [VERSION, a, b, c, d, ..] => Some(u32::from_le_bytes([*a, *b, *c, *d]) as usize),
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
mod tests {
    use super::*;
    use crate::cluster::sync_codec::{SnapshotChunk, SyncRequest};
    use distro_core::model::{ClientId, InstanceSpec, ServiceSpec};
    use distro_core::{Command, Config, MemberList, PeerRequest, SnapshotCursor};
    use prost::Message as _;

    fn members() -> Vec<String> {
        (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect()
    }

    fn node(me: usize) -> Arc<Node> {
        let m = members();
        let cfg = Config {
            sync_delay: 0,
            ..Config::default()
        };
        Arc::new(Node::new(cfg, MemberList::new(&m[me], &m).unwrap(), 1).unwrap())
    }

    /// An owner with an ip:port client (metadata, custom id, weight, cluster), a batch
    /// client and a deleted client; returns it and its first sync batch.
    fn owner_and_batch() -> (Arc<Node>, Vec<ClientChange>) {
        let node = node(0);
        let svc = ServiceSpec::new("ns", "g", "svc");
        let mut spec = InstanceSpec::new("10.1.2.3", 8080);
        spec.weight = 2.5;
        spec.cluster = "c-1".into();
        spec.metadata = vec![("zone".into(), "a".into()), ("k".into(), String::new())];
        spec.instance_id = Some("custom".into());
        node.register(&ClientId::ip_port("10.1.2.3", 8080), &svc, &spec, 10)
            .unwrap();
        let mut specs: Vec<InstanceSpec> = (0..3)
            .map(|p| InstanceSpec::new("172.16.0.1", 9000 + p))
            .collect();
        specs[1].healthy = false;
        specs[2].enabled = false;
        specs[0].metadata = spec.metadata;
        node.register_batch(&ClientId::connection(5, "172.16.0.1", 1), &svc, &specs, 10)
            .unwrap();
        node.register(
            &ClientId::connection(5, "172.16.0.1", 1),
            &ServiceSpec::new("", "", "other"),
            &InstanceSpec::new("172.16.0.1", 1),
            10,
        )
        .unwrap();
        let gone = ClientId::connection(6, "1.1.1.1", 1);
        node.register(&gone, &svc, &InstanceSpec::new("1.1.1.1", 1), 10)
            .unwrap();
        node.remove_client(&gone, 11);
        let batch = node
            .tick(20)
            .into_iter()
            .find_map(|c| match c {
                Command::Send {
                    request: PeerRequest::Sync(b),
                    ..
                } => Some(b),
                _ => None,
            })
            .expect("a batch");
        assert_eq!(batch.changes.len(), 3);
        (node, batch.changes)
    }

    #[test]
    fn a_batch_round_trips_through_the_compact_layout() {
        let (owner, changes) = owner_and_batch();
        let replica = node(1);
        let bytes = encode_changes(&owner, &changes);
        assert_eq!(record_count(&bytes), Some(3));
        let decoded = decode_changes(&replica, &bytes).expect("decodes");
        assert_eq!(decoded, changes);
        // Through the message, as a node sends it.
        let msg = SyncRequest::new(
            &owner,
            &distro_core::message::SyncBatch {
                changes: changes.clone(),
            },
        );
        let wire = msg.encode_to_vec();
        assert_eq!(wire.len(), msg.encoded_len());
        let back = SyncRequest::decode(&wire[..]).expect("decodes");
        assert_eq!(back.decode_changes(&replica).expect("valid"), changes);
        // A snapshot chunk likewise.
        let chunk = owner.snapshot_chunk(SnapshotCursor::default());
        let records = chunk.records.clone();
        let msg = SnapshotChunk::new(&owner, &chunk);
        assert_eq!(msg.len(), records.len());
        let back = SnapshotChunk::decode(&msg.encode_to_vec()[..]).expect("decodes");
        assert_eq!(back.len(), records.len());
        assert_eq!(back.decode_records(&replica).expect("valid"), records);
    }

    #[test]
    fn every_malformed_batch_is_refused_with_a_reason_and_none_panics() {
        let (owner, changes) = owner_and_batch();
        let replica = node(1);
        let good = encode_changes(&owner, &changes);
        // A refusal says why (a malformed layout, or the field that failed validation).
        let check = |b: &[u8]| {
            if let Err(e) = decode_changes(&replica, b) {
                assert!(e.to_string().len() > 10, "{e}");
            }
        };
        // Every truncation is refused.
        for n in 0..good.len() {
            let e = decode_changes(&replica, &good[..n]).expect_err("truncated");
            assert!(e.to_string().contains("malformed"), "{e}");
        }
        // Bytes after the last record, another version.
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode_changes(&replica, &longer).is_err());
        let mut v2 = good.clone();
        v2[0] = 2;
        let e = decode_changes(&replica, &v2).expect_err("version");
        assert!(e.to_string().contains("version 2"), "{e}");
        // Every byte changed to a few values: refused or valid, never a panic.
        for i in 0..good.len() {
            for x in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = x;
                check(&b);
            }
        }
        // A forged huge count is refused before anything is allocated for it.
        let mut huge = good;
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = decode_changes(&replica, &huge).expect_err("count");
        assert!(e.to_string().contains("do not fit"), "{e}");
    }

    #[test]
    fn the_compact_layout_is_smaller_than_protobuf() {
        // 2,000 ip:port clients in 20 services, each with the same two metadata entries.
        let owner = node(0);
        for i in 0..2_000u32 {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let mut spec = InstanceSpec::new(&ip, 8080);
            spec.metadata = vec![
                ("version".into(), "1.0.3".into()),
                ("zone".into(), "zone-a".into()),
            ];
            let svc = ServiceSpec::new("", "DEFAULT_GROUP", &format!("svc-{}", i % 20));
            owner
                .register(&ClientId::ip_port(&ip, 8080), &svc, &spec, 10)
                .unwrap();
        }
        let (mut proto, mut compact, mut cursor) = (0, 0, Some(SnapshotCursor::default()));
        while let Some(c) = cursor {
            let chunk = owner.snapshot_chunk(c);
            cursor = chunk.next.clone();
            proto += SnapshotChunk::protobuf(owner.clone(), chunk.clone()).encoded_len();
            compact += SnapshotChunk::new(&owner, &chunk).encoded_len();
        }
        eprintln!(
            "snapshot of 2,000 clients: protobuf {proto} bytes, compact {compact} bytes ({:.0} %)",
            100.0 * compact as f64 / proto as f64
        );
        assert!(compact < proto * 3 / 4, "{compact} vs {proto}");
    }
}
