//! The bulk peer messages, `distro.v1.SyncRequest` and `distro.v1.SnapshotChunk`, encoded
//! straight from the core's records and decoded straight into them.
//!
//! Every change of every owned client is encoded once per peer and decoded on every
//! replica, and a starting node decodes every client of the cluster, so these two
//! messages dominate replication CPU. Going through the generated structs would copy every
//! string twice and build a `HashMap` per instance; here encoding writes protobuf from the
//! `ClientRecord`s, and decoding keeps each change (or record) as the received bytes and
//! parses them into core types, validating exactly as any peer input is validated, with
//! no copy of a string that is interned or stored inline. `build.rs` maps both message
//! types here (`extern_path`); the wire format is the one `distro.proto` defines, pinned
//! by round-trip tests against the generated code for the nested messages.
//!
//! A node sends both messages in the compact layout of [`compact`] (one `bytes` field);
//! the per-change protobuf fields are still read, and written by
//! [`SyncRequest::protobuf`] (tests and tools).

use crate::cluster::compact::{self, Decoded};
use crate::cluster::wire::WireError;
use crate::proto::writes::put_delimited;
use distro_core::message::SyncBatch;
use distro_core::model::{ClientId, Instance, InstanceFields, Publication, Revision, Service};
use distro_core::{ClientChange, ClientRecord, Node};
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, key_len,
};
use std::sync::Arc;

fn str_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_str(tag: u32, s: &str, buf: &mut impl BufMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(s.len() as u64, buf);
        buf.put_slice(s.as_bytes());
    }
}

fn u64_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_u64(tag: u32, v: u64, buf: &mut impl BufMut) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

fn bool_len(tag: u32, v: bool) -> usize {
    if v { key_len(tag) + 1 } else { 0 }
}

fn put_bool(tag: u32, v: bool, buf: &mut impl BufMut) {
    if v {
        encode_key(tag, WireType::Varint, buf);
        buf.put_u8(1);
    }
}

/// The encoded length of a length-delimited field `tag` of `len` bytes.
pub(crate) fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_nested(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn service_len(s: &Service) -> usize {
    str_len(1, s.namespace()) + str_len(2, s.group()) + str_len(3, s.name())
}

fn entry_len(k: &str, v: &str) -> usize {
    str_len(1, k) + str_len(2, v)
}

fn instance_len(i: &Instance) -> usize {
    let mut n = str_len(1, &i.ip) + u64_len(2, u64::from(i.port));
    if i.weight != 0.0 {
        n += key_len(3) + 8;
    }
    n += bool_len(4, i.healthy) + bool_len(5, i.enabled) + str_len(6, &i.cluster);
    for (k, v) in i.metadata.iter() {
        n += nested_len(7, entry_len(k, v));
    }
    n + str_len(8, i.custom_id.as_deref().unwrap_or_default())
}

fn put_instance(i: &Instance, buf: &mut impl BufMut) {
    put_str(1, &i.ip, buf);
    put_u64(2, u64::from(i.port), buf);
    if i.weight != 0.0 {
        encode_key(3, WireType::SixtyFourBit, buf);
        buf.put_f64_le(i.weight);
    }
    put_bool(4, i.healthy, buf);
    put_bool(5, i.enabled, buf);
    put_str(6, &i.cluster, buf);
    for (k, v) in i.metadata.iter() {
        put_nested(7, entry_len(k, v), buf);
        put_str(1, k, buf);
        put_str(2, v, buf);
    }
    put_str(8, i.custom_id.as_deref().unwrap_or_default(), buf);
}

fn publication_len(p: &Publication) -> usize {
    let mut n = nested_len(1, service_len(&p.service)) + bool_len(2, p.is_batch());
    for i in p.instances.iter() {
        n += nested_len(3, instance_len(i));
    }
    n
}

fn put_publication(p: &Publication, buf: &mut impl BufMut) {
    put_nested(1, service_len(&p.service), buf);
    put_str(1, p.service.namespace(), buf);
    put_str(2, p.service.group(), buf);
    put_str(3, p.service.name(), buf);
    put_bool(2, p.is_batch(), buf);
    for i in p.instances.iter() {
        put_nested(3, instance_len(i), buf);
        put_instance(i, buf);
    }
}

fn record_len(node: &Node, r: &ClientRecord) -> usize {
    let mut n = str_len(1, r.id.as_str())
        + u64_len(2, r.revision.0)
        + str_len(3, node.member_addr(r.owner));
    for p in &r.publications {
        n += nested_len(4, publication_len(p));
    }
    n
}

fn put_record(node: &Node, r: &ClientRecord, buf: &mut impl BufMut) {
    put_str(1, r.id.as_str(), buf);
    put_u64(2, r.revision.0, buf);
    put_str(3, node.member_addr(r.owner), buf);
    for p in &r.publications {
        put_nested(4, publication_len(p), buf);
        put_publication(p, buf);
    }
}

fn change_len(node: &Node, c: &ClientChange) -> usize {
    match c {
        ClientChange::Upsert(r) => nested_len(1, record_len(node, r)),
        ClientChange::Stored(s) => nested_len(1, record_len(node, &s.to_record())),
        ClientChange::Delete { id, revision } => {
            nested_len(2, str_len(1, id.as_str()) + u64_len(2, revision.0))
        }
    }
}

fn put_change(node: &Node, c: &ClientChange, buf: &mut impl BufMut) {
    match c {
        ClientChange::Upsert(r) => {
            put_nested(1, record_len(node, r), buf);
            put_record(node, r, buf);
        }
        ClientChange::Stored(s) => {
            let r = s.to_record();
            put_nested(1, record_len(node, &r), buf);
            put_record(node, &r, buf);
        }
        ClientChange::Delete { id, revision } => {
            put_nested(2, str_len(1, id.as_str()) + u64_len(2, revision.0), buf);
            put_str(1, id.as_str(), buf);
            put_u64(2, revision.0, buf);
        }
    }
}

/// `distro.v1.SyncRequest`: encoded from a core batch, decoded as raw changes.
#[derive(Default, Clone)]
pub struct SyncRequest {
    /// The sender's member address.
    pub from: String,
    /// To encode: the sender and its batch.
    outgoing: Option<(Arc<Node>, SyncBatch)>,
    /// Decoded: each change's bytes, parsed by [`decode_change`].
    pub changes: Vec<Bytes>,
    /// The changes in the compact layout ([`compact`]), field 3, as decoded or given to
    /// [`SyncRequest::from_compact`] (`None` in a request built by [`SyncRequest::new`],
    /// which holds them in two parts).
    pub compact: Option<Bytes>,
    /// To encode: field 3 in two parts as the encoder left them (its head and tables,
    /// then its records), written one after the other into the message's buffer: the
    /// records are copied once, not first behind the tables and then into the message.
    compact_parts: Option<[Bytes; 2]>,
}

impl SyncRequest {
    /// A request carrying `batch` of `node`, in the compact layout. A batch sent to
    /// several peers ([`SyncBatch::encoding`]) is encoded by the first of them: the others
    /// take its parts (two reference counts, not the batch encoded again).
    pub fn new(node: &Node, batch: &SyncBatch) -> Self {
        let from = node.members().addr(node.me()).to_string();
        let shared = batch.encoding.as_deref();
        let parts = match shared.and_then(|e| e.get::<[Bytes; 2]>()) {
            Some(parts) => parts.clone(),
            None => {
                let (head, records) = compact::encode_batch_parts(node, batch);
                let parts = [Bytes::from(head), Bytes::from(records)];
                if let Some(e) = shared {
                    e.set(parts.clone());
                }
                parts
            }
        };
        Self {
            from,
            compact_parts: Some(parts),
            ..Self::default()
        }
    }

    /// The compact changes, in one piece (field 3 as it is on the wire): a copy of the
    /// two parts for a request built by [`SyncRequest::new`] (decoded locally only in
    /// tests and tools).
    fn compact_bytes(&self) -> Option<Bytes> {
        match &self.compact_parts {
            Some([a, b]) => Some(Bytes::from([&a[..], &b[..]].concat())),
            None => self.compact.clone(),
        }
    }

    /// A request carrying `batch` of `node` as one protobuf `ClientChange` per change.
    pub fn protobuf(node: Arc<Node>, batch: SyncBatch) -> Self {
        let from = node.members().addr(node.me()).to_string();
        // Records built once, not at every length computed for them.
        let batch = SyncBatch {
            changes: batch
                .changes
                .into_iter()
                .map(ClientChange::into_owned)
                .collect(),
            lowest: batch.lowest,
            encoding: None,
        };
        Self {
            from,
            outgoing: Some((node, batch)),
            ..Self::default()
        }
    }

    /// A request carrying already-encoded compact changes (tests, tools).
    pub fn from_compact(from: String, compact: Bytes) -> Self {
        Self {
            from,
            compact: Some(compact),
            ..Self::default()
        }
    }

    /// The changes, decoded and validated (both forms; names interned in `node`), ready
    /// for [`Node::handle_sync`].
    pub fn decode_batch(&self, node: &Node) -> Result<Decoded, WireError> {
        let mut out = Decoded::default();
        if let Some(c) = &self.compact_bytes() {
            compact::decode_into(node, c, &mut out)?;
        }
        for c in &self.changes {
            out.push(decode_change(node, c)?);
        }
        Ok(out)
    }

    /// The changes as the core's owned changes (tests and tools).
    pub fn decode_changes(&self, node: &Node) -> Result<Vec<ClientChange>, WireError> {
        Ok(self.decode_batch(node)?.into_changes())
    }

    /// A request carrying already-encoded changes (tests, tools).
    pub fn from_raw(from: String, changes: Vec<Bytes>) -> Self {
        Self {
            from,
            changes,
            ..Self::default()
        }
    }
}

impl std::fmt::Debug for SyncRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncRequest")
            .field("from", &self.from)
            .field(
                "changes",
                &self
                    .outgoing
                    .as_ref()
                    .map_or(self.changes.len(), |(_, b)| b.changes.len()),
            )
            .finish()
    }
}

impl PartialEq for SyncRequest {
    fn eq(&self, other: &Self) -> bool {
        self.from == other.from
            && self.changes == other.changes
            && self.compact_bytes() == other.compact_bytes()
            && self.outgoing.is_none()
            && other.outgoing.is_none()
    }
}

impl prost::Message for SyncRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_str(1, &self.from, buf);
        if let Some((node, batch)) = &self.outgoing {
            for c in &batch.changes {
                put_nested(2, change_len(node, c), buf);
                put_change(node, c, buf);
            }
        }
        for c in &self.changes {
            put_delimited(2, c, buf);
        }
        if let Some(c) = &self.compact {
            put_delimited(3, c, buf);
        }
        if let Some([a, b]) = &self.compact_parts {
            put_nested(3, a.len() + b.len(), buf);
            buf.put_slice(a);
            buf.put_slice(b);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => prost::encoding::string::merge(wire_type, &mut self.from, buf, ctx),
            2 => {
                let mut b = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut b, buf, ctx)?;
                self.changes.push(b);
                Ok(())
            }
            3 => {
                let mut b = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut b, buf, ctx)?;
                self.compact = Some(b);
                Ok(())
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut n = str_len(1, &self.from);
        if let Some((node, batch)) = &self.outgoing {
            n += batch
                .changes
                .iter()
                .map(|c| nested_len(2, change_len(node, c)))
                .sum::<usize>();
        }
        n + self
            .changes
            .iter()
            .map(|c| nested_len(2, c.len()))
            .sum::<usize>()
            + self.compact.as_ref().map_or(0, |c| nested_len(3, c.len()))
            + self
                .compact_parts
                .as_ref()
                .map_or(0, |[a, b]| nested_len(3, a.len() + b.len()))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

/// `distro.v1.SnapshotChunk`: encoded from core records, decoded as raw records.
#[derive(Default, Clone)]
pub struct SnapshotChunk {
    /// To encode: the serving node and its records.
    outgoing: Option<(Arc<Node>, Vec<ClientRecord>)>,
    /// Decoded: each record's bytes, parsed by [`decode_record`].
    pub records: Vec<Bytes>,
    /// Where the next chunk starts; `None` on the last chunk.
    pub next_shard: Option<u32>,
    /// The last client of `next_shard` sent (empty: the next chunk starts at the
    /// shard's start), field 5.
    pub next_after: String,
    /// The records in the compact layout ([`compact`]), field 4.
    pub compact: Option<Bytes>,
}

impl SnapshotChunk {
    /// A chunk of `node`'s snapshot, in the compact layout.
    pub fn new(node: &Node, chunk: &distro_core::SnapshotChunk) -> Self {
        Self {
            next_shard: chunk.next.as_ref().map(|c| c.shard),
            next_after: next_after(chunk),
            compact: Some(Bytes::from(compact::encode_records(node, &chunk.records))),
            outgoing: None,
            records: Vec::new(),
        }
    }

    /// A chunk of `node`'s snapshot as one protobuf `ClientRecord` per record.
    pub fn protobuf(node: Arc<Node>, chunk: &distro_core::SnapshotChunk) -> Self {
        Self {
            next_shard: chunk.next.as_ref().map(|c| c.shard),
            next_after: next_after(chunk),
            // Records built once, not at every length computed for them (as
            // `SyncRequest::protobuf` does).
            outgoing: Some((node, chunk.records.iter().map(|c| c.to_record()).collect())),
            records: Vec::new(),
            compact: None,
        }
    }

    /// The records, decoded and validated (both forms; names interned in `node`), ready
    /// for [`Node::load_states`] ([`Decoded::states`] refuses a deletion).
    pub fn decode_chunk(&self, node: &Node) -> Result<Decoded, WireError> {
        let mut out = Decoded::default();
        if let Some(c) = &self.compact {
            compact::decode_into(node, c, &mut out)?;
        }
        for r in &self.records {
            out.push(ClientChange::Upsert(decode_record(node, r)?));
        }
        Ok(out)
    }

    /// The records as the core's owned records (tests and tools).
    pub fn decode_records(&self, node: &Node) -> Result<Vec<ClientRecord>, WireError> {
        self.decode_chunk(node)?.into_records()
    }

    /// Number of records (as the compact form says; a decode checks it).
    pub fn len(&self) -> usize {
        self.outgoing
            .as_ref()
            .map_or(self.records.len(), |(_, r)| r.len())
            + self
                .compact
                .as_ref()
                .and_then(|c| compact::record_count(c))
                .unwrap_or(0)
    }

    /// Whether the chunk holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The id a chunk's next cursor resumes after, as field 5 carries it (empty: none).
fn next_after(chunk: &distro_core::SnapshotChunk) -> String {
    chunk
        .next
        .as_ref()
        .and_then(|c| c.after.as_ref())
        .map_or_else(String::new, |id| id.as_str().to_string())
}

impl std::fmt::Debug for SnapshotChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotChunk")
            .field("records", &self.len())
            .field("next_shard", &self.next_shard)
            .field("next_after", &self.next_after)
            .finish()
    }
}

impl prost::Message for SnapshotChunk {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some((node, records)) = &self.outgoing {
            for r in records {
                put_nested(1, record_len(node, r), buf);
                put_record(node, r, buf);
            }
        }
        for r in &self.records {
            put_delimited(1, r, buf);
        }
        if let Some(s) = self.next_shard {
            encode_key(2, WireType::Varint, buf);
            encode_varint(u64::from(s), buf);
        }
        if !self.next_after.is_empty() {
            prost::encoding::string::encode(5, &self.next_after, buf);
        }
        if let Some(c) = &self.compact {
            put_delimited(4, c, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => {
                let mut b = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut b, buf, ctx)?;
                self.records.push(b);
                Ok(())
            }
            2 => {
                let mut v = 0u32;
                prost::encoding::uint32::merge(wire_type, &mut v, buf, ctx)?;
                self.next_shard = Some(v);
                Ok(())
            }
            5 => prost::encoding::string::merge(wire_type, &mut self.next_after, buf, ctx),
            4 => {
                let mut b = Bytes::new();
                prost::encoding::bytes::merge(wire_type, &mut b, buf, ctx)?;
                self.compact = Some(b);
                Ok(())
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut n = 0;
        if let Some((node, records)) = &self.outgoing {
            n += records
                .iter()
                .map(|r| nested_len(1, record_len(node, r)))
                .sum::<usize>();
        }
        n += self
            .records
            .iter()
            .map(|r| nested_len(1, r.len()))
            .sum::<usize>();
        if let Some(s) = self.next_shard {
            n += key_len(2) + encoded_len_varint(u64::from(s));
        }
        if !self.next_after.is_empty() {
            n += prost::encoding::string::encoded_len(5, &self.next_after);
        }
        n + self.compact.as_ref().map_or(0, |c| nested_len(4, c.len()))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

// ----- decoding --------------------------------------------------------------------

/// One field of a message being parsed.
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
}

fn malformed(what: &str) -> WireError {
    WireError::Malformed(format!("malformed peer message: {what}"))
}

/// Calls `f` with every field of the message in `buf`.
fn for_each_field<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u32, Value<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|e| malformed(&e.to_string()))?;
        let value = match wire {
            WireType::Varint => {
                Value::Varint(decode_varint(&mut buf).map_err(|e| malformed(&e.to_string()))?)
            }
            WireType::SixtyFourBit => {
                if buf.len() < 8 {
                    return Err(malformed("truncated 64-bit field"));
                }
                let v = buf.get_u64_le();
                Value::Fixed64(v)
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|e| malformed(&e.to_string()))? as usize;
                if len > buf.len() {
                    return Err(malformed("a length past the end of the message"));
                }
                let (v, rest) = buf.split_at(len);
                buf = rest;
                Value::Bytes(v)
            }
            WireType::ThirtyTwoBit => {
                if buf.len() < 4 {
                    return Err(malformed("truncated 32-bit field"));
                }
                buf.advance(4);
                continue;
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(malformed("groups are not used"));
            }
        };
        f(tag, value)?;
    }
    Ok(())
}

fn text<'a>(b: &'a [u8], field: &str) -> Result<&'a str, WireError> {
    std::str::from_utf8(b).map_err(|_| malformed(&format!("{field} is not UTF-8")))
}

struct RawInstance<'a> {
    ip: &'a str,
    port: u64,
    weight: f64,
    healthy: bool,
    enabled: bool,
    cluster: &'a str,
    metadata: smallvec::SmallVec<[(&'a str, &'a str); 4]>,
    instance_id: &'a str,
}

fn parse_instance(b: &[u8]) -> Result<RawInstance<'_>, WireError> {
    let mut i = RawInstance {
        ip: "",
        port: 0,
        weight: 0.0,
        healthy: false,
        enabled: false,
        cluster: "",
        metadata: smallvec::SmallVec::new(),
        instance_id: "",
    };
    for_each_field(b, |tag, v| {
        match (tag, v) {
            (1, Value::Bytes(s)) => i.ip = text(s, "ip")?,
            (2, Value::Varint(p)) => i.port = p,
            (3, Value::Fixed64(w)) => i.weight = f64::from_bits(w),
            (4, Value::Varint(h)) => i.healthy = h != 0,
            (5, Value::Varint(e)) => i.enabled = e != 0,
            (6, Value::Bytes(s)) => i.cluster = text(s, "cluster")?,
            (7, Value::Bytes(entry)) => {
                let (mut k, mut val) = ("", "");
                for_each_field(entry, |t, v| {
                    match (t, v) {
                        (1, Value::Bytes(s)) => k = text(s, "metadata key")?,
                        (2, Value::Bytes(s)) => val = text(s, "metadata value")?,
                        _ => {}
                    }
                    Ok(())
                })?;
                i.metadata.push((k, val));
            }
            (8, Value::Bytes(s)) => i.instance_id = text(s, "instance id")?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(i)
}

fn parse_publication(node: &Node, id: &ClientId, b: &[u8]) -> Result<Publication, WireError> {
    let (mut ns, mut group, mut name) = ("", "", "");
    let mut batch = false;
    let mut raw_instances: smallvec::SmallVec<[&[u8]; 1]> = smallvec::SmallVec::new();
    for_each_field(b, |tag, v| {
        match (tag, v) {
            (1, Value::Bytes(s)) => for_each_field(s, |t, v| {
                match (t, v) {
                    (1, Value::Bytes(x)) => ns = text(x, "namespace")?,
                    (2, Value::Bytes(x)) => group = text(x, "group")?,
                    (3, Value::Bytes(x)) => name = text(x, "service")?,
                    _ => {}
                }
                Ok(())
            })?,
            (2, Value::Varint(v)) => batch = v != 0,
            (3, Value::Bytes(s)) => raw_instances.push(s),
            _ => {}
        }
        Ok(())
    })?;
    // Checked only when the registry does not hold the name yet.
    let service: Service = node.registry().resolve_service(ns, group, name)?;
    let count = raw_instances.len();
    if count == 0 {
        return Err(WireError::Malformed(format!(
            "client {id}: empty publication"
        )));
    }
    if count > distro_core::limits::MAX_BATCH_INSTANCES {
        return Err(WireError::Malformed(format!(
            "client {id}: {count} instances in one publication"
        )));
    }
    if !batch && count != 1 {
        return Err(WireError::Malformed(format!(
            "client {id}: a single publication with {count} instances"
        )));
    }
    let mut instances: Vec<Instance> = Vec::with_capacity(count);
    for raw in raw_instances {
        let r = parse_instance(raw)?;
        let mut metadata = r.metadata;
        metadata.sort_unstable();
        let fields = InstanceFields {
            ip: r.ip,
            port: i64::try_from(r.port).unwrap_or(i64::MAX),
            weight: r.weight,
            healthy: r.healthy,
            enabled: r.enabled,
            cluster: r.cluster,
            metadata: metadata.iter().copied(),
            instance_id: (!r.instance_id.is_empty()).then_some(r.instance_id),
        };
        instances.push(fields.to_instance(node.registry().interner(), &service)?);
    }
    Ok(if batch {
        Publication::batch(service, instances)
    } else {
        let one = instances.pop().ok_or_else(|| malformed("no instance"))?;
        Publication::single(service, one)
    })
}

/// Parses and validates one `ClientRecord` (names interned in `node`'s registry).
pub fn decode_record(node: &Node, b: &[u8]) -> Result<ClientRecord, WireError> {
    let (mut id, mut owner) = ("", "");
    let mut revision = 0u64;
    let mut raw_pubs: smallvec::SmallVec<[&[u8]; 2]> = smallvec::SmallVec::new();
    for_each_field(b, |tag, v| {
        match (tag, v) {
            (1, Value::Bytes(s)) => id = text(s, "client id")?,
            (2, Value::Varint(r)) => revision = r,
            (3, Value::Bytes(s)) => owner = text(s, "owner")?,
            (4, Value::Bytes(s)) => raw_pubs.push(s),
            _ => {}
        }
        Ok(())
    })?;
    let id = ClientId::parse(id)?;
    let owner = if owner.is_empty() {
        node.me()
    } else {
        crate::cluster::wire::owner_id(node, owner)?
    };
    let mut publications = Vec::with_capacity(raw_pubs.len());
    for p in raw_pubs {
        publications.push(Arc::new(parse_publication(node, &id, p)?));
    }
    publications.sort_by(|a, b| a.service.cmp(&b.service));
    publications.dedup_by(|a, b| a.service == b.service);
    Ok(ClientRecord {
        id,
        revision: Revision(revision),
        owner,
        publications,
    })
}

/// Parses and validates one `ClientChange`.
pub fn decode_change(node: &Node, b: &[u8]) -> Result<ClientChange, WireError> {
    let mut out: Option<Result<ClientChange, WireError>> = None;
    for_each_field(b, |tag, v| {
        match (tag, v) {
            (1, Value::Bytes(r)) => out = Some(decode_record(node, r).map(ClientChange::Upsert)),
            (2, Value::Bytes(d)) => {
                let (mut id, mut revision) = ("", 0u64);
                for_each_field(d, |t, v| {
                    match (t, v) {
                        (1, Value::Bytes(s)) => id = text(s, "client id")?,
                        (2, Value::Varint(r)) => revision = r,
                        _ => {}
                    }
                    Ok(())
                })?;
                out = Some(ClientId::parse(id).map_err(WireError::from).map(|id| {
                    ClientChange::Delete {
                        id,
                        revision: Revision(revision),
                    }
                }));
            }
            _ => {}
        }
        Ok(())
    })?;
    out.unwrap_or_else(|| Err(malformed("a change with neither upsert nor delete")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::distro as pb;
    use distro_core::model::{ClientId, InstanceSpec, ServiceSpec};
    use distro_core::{Command, Config, MemberList, Revision};
    use prost::Message as _;

    struct ExpectedSync {
        from: String,
        changes: Vec<pb::ClientChange>,
    }

    /// A batch sent to several peers is encoded by the first send, which keeps its parts
    /// in the batch's shared encoding; the others take them as they are (the test plants
    /// parts of its own to see them taken, not the batch encoded again).
    #[test]
    fn a_batch_for_several_peers_is_encoded_once() {
        use distro_core::message::SharedEncoding;
        let members: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
        let cfg = Config {
            sync_delay: 0,
            ..Config::default()
        };
        let owner = Node::new(cfg, MemberList::new(&members[0], &members).unwrap(), 1).unwrap();
        for port in [1, 2] {
            let id = ClientId::connection(1, "10.1.2.3", port);
            let svc = ServiceSpec::new("ns", "g", "svc");
            owner
                .register(&id, &svc, &InstanceSpec::new("10.1.2.3", port), 10)
                .unwrap();
        }
        let changes = owner
            .tick(20)
            .into_iter()
            .find_map(Command::into_sync_batch)
            .expect("a batch")
            .changes;
        assert_eq!(changes.len(), 2);
        let shared = Arc::new(SharedEncoding::default());
        let batch = SyncBatch {
            changes,
            lowest: None,
            encoding: Some(shared.clone()),
        };
        let alone = SyncBatch {
            encoding: None,
            ..batch.clone()
        };
        let first = SyncRequest::new(&owner, &batch).encode_to_vec();
        assert_eq!(first, SyncRequest::new(&owner, &alone).encode_to_vec());
        let [head, records] = shared.get::<[Bytes; 2]>().expect("kept").clone();
        assert_eq!(SyncRequest::new(&owner, &batch).encode_to_vec(), first);
        // Parts planted in a fresh cell are what the message carries.
        let planted = Arc::new(SharedEncoding::default());
        planted.set([head.slice(..1), records.slice(..0)]);
        let batch = SyncBatch {
            encoding: Some(planted),
            ..batch
        };
        let msg = SyncRequest::new(&owner, &batch);
        assert_eq!(msg.compact_bytes(), Some(head.slice(..1)));
    }

    #[test]
    fn malformed_bytes_are_refused_with_a_reason() {
        let members: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
        let node = Node::new(
            Config::default(),
            MemberList::new(&members[1], &members).unwrap(),
            1,
        )
        .unwrap();
        for bad in [&[0x0a, 0xff][..], &[0x0a, 0x05, 0x01], &[0xff; 12], &[0x0b]] {
            let e = decode_change(&node, bad).expect_err("refused");
            assert!(
                e.to_string().contains("malformed") || e.to_string().contains("invalid"),
                "{e}"
            );
        }
        assert!(decode_change(&node, &[]).is_err());
    }

    #[test]
    fn encodes_exactly_what_the_generated_code_decodes() {
        let members: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
        let cfg = Config {
            sync_delay: 0,
            ..Config::default()
        };
        let node =
            Arc::new(Node::new(cfg, MemberList::new(&members[0], &members).unwrap(), 1).unwrap());
        let svc = ServiceSpec::new("ns", "g", "svc");
        let mut spec = InstanceSpec::new("10.1.2.3", 8080);
        spec.weight = 2.5;
        spec.cluster = "c-1".into();
        spec.metadata = vec![("zone".into(), "a".into()), ("k".into(), String::new())];
        spec.instance_id = Some("custom".into());
        node.register(&ClientId::ip_port("10.1.2.3", 8080), &svc, &spec, 10)
            .unwrap();
        let batch_specs: Vec<InstanceSpec> = (0..3)
            .map(|p| InstanceSpec::new("172.16.0.1", 9000 + p))
            .collect();
        node.register_batch(
            &ClientId::connection(5, "172.16.0.1", 1),
            &svc,
            &batch_specs,
            10,
        )
        .unwrap();
        node.register(
            &ClientId::connection(6, "1.1.1.1", 1),
            &svc,
            &InstanceSpec::new("1.1.1.1", 1),
            10,
        )
        .unwrap();
        node.remove_client(&ClientId::connection(6, "1.1.1.1", 1), 11);
        let batch = node
            .tick(20)
            .into_iter()
            .find_map(Command::into_sync_batch)
            .expect("a batch");
        assert_eq!(batch.changes.len(), 3);
        let expected = ExpectedSync {
            from: members[0].clone(),
            changes: batch
                .changes
                .iter()
                .map(|c| crate::cluster::wire::change_to_proto(&node, c))
                .collect(),
        };
        let msg = SyncRequest::protobuf(node.clone(), batch.clone());
        let bytes = msg.encode_to_vec();
        assert_eq!(bytes.len(), msg.encoded_len());
        let decoded = SyncRequest::decode(&bytes[..]).expect("decodes");
        assert_eq!(decoded.from, expected.from);
        // Every change decodes with the generated code to what the generated encoder makes,
        let generated: Vec<pb::ClientChange> = decoded
            .changes
            .iter()
            .map(|b| pb::ClientChange::decode(&b[..]).expect("generated decode"))
            .collect();
        assert_eq!(generated, expected.changes);
        // and with ours to the original change.
        let replica = Node::new(
            Config::default(),
            MemberList::new(&members[1], &members).unwrap(),
            1,
        )
        .unwrap();
        for (raw, original) in decoded.changes.iter().zip(&batch.changes) {
            let mine = decode_change(&replica, raw).expect("our decode");
            assert_eq!(mine.id(), original.id());
            assert_eq!(mine.revision(), original.revision());
            if let (ClientChange::Upsert(a), ClientChange::Upsert(b)) = (&mine, original) {
                assert_eq!(a.publications, b.publications);
            }
        }
        let _ = Revision::ZERO;
        // A snapshot chunk round-trips too.
        let chunk = node.snapshot_chunk(distro_core::SnapshotCursor::default());
        let n = chunk.records.len();
        let enc = SnapshotChunk::protobuf(node, &chunk).encode_to_vec();
        let dec = SnapshotChunk::decode(&enc[..]).expect("decodes");
        assert_eq!(dec.records.len(), n);
        assert_eq!(dec.next_shard, None);
        for r in &dec.records {
            decode_record(&replica, r).expect("valid record");
        }
    }
}
