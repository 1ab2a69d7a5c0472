//! A direct protobuf encoder of `distro.v1.SyncRequest` from the core's records.
//!
//! Sync is the hottest peer message: every change of every owned client is encoded once
//! per peer. Building the generated `pb::SyncRequest` first would copy every string into
//! an intermediate struct (and every metadata map into a `HashMap`); this encoder writes
//! the same bytes straight from the core's `ClientRecord`s. The receiving side decodes
//! with the generated `pb::SyncRequest` as for any peer message, so the wire format is
//! exactly the one `distro.proto` defines (a round-trip test pins it).

use distro_core::message::SyncBatch;
use distro_core::model::{Instance, Publication, Service};
use distro_core::{ClientChange, ClientRecord, Node};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{
    DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};
use std::sync::Arc;

/// A sync batch ready to be sent by `node`: implements `prost::Message` for encoding only.
pub struct SyncMessage {
    node: Arc<Node>,
    from: String,
    batch: SyncBatch,
}

impl SyncMessage {
    /// Wraps `batch` of `node` (its member address goes into `from`).
    pub fn new(node: Arc<Node>, batch: SyncBatch) -> Self {
        let from = node.members().addr(node.me()).to_string();
        Self { node, from, batch }
    }
}

impl std::fmt::Debug for SyncMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncMessage")
            .field("from", &self.from)
            .field("changes", &self.batch.changes.len())
            .finish()
    }
}

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

fn nested_len(tag: u32, len: usize) -> usize {
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
    let mut n = nested_len(1, service_len(&p.service)) + bool_len(2, p.batch);
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
    put_bool(2, p.batch, buf);
    for i in p.instances.iter() {
        put_nested(3, instance_len(i), buf);
        put_instance(i, buf);
    }
}

fn record_len(node: &Node, r: &ClientRecord) -> usize {
    let mut n = str_len(1, r.id.as_str())
        + u64_len(2, r.revision.0)
        + str_len(3, node.members().addr(r.owner));
    for p in &r.publications {
        n += nested_len(4, publication_len(p));
    }
    n
}

fn put_record(node: &Node, r: &ClientRecord, buf: &mut impl BufMut) {
    put_str(1, r.id.as_str(), buf);
    put_u64(2, r.revision.0, buf);
    put_str(3, node.members().addr(r.owner), buf);
    for p in &r.publications {
        put_nested(4, publication_len(p), buf);
        put_publication(p, buf);
    }
}

fn change_len(node: &Node, c: &ClientChange) -> usize {
    match c {
        ClientChange::Upsert(r) => nested_len(1, record_len(node, r)),
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
        ClientChange::Delete { id, revision } => {
            put_nested(2, str_len(1, id.as_str()) + u64_len(2, revision.0), buf);
            put_str(1, id.as_str(), buf);
            put_u64(2, revision.0, buf);
        }
    }
}

impl prost::Message for SyncMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_str(1, &self.from, buf);
        for c in &self.batch.changes {
            put_nested(2, change_len(&self.node, c), buf);
            put_change(&self.node, c, buf);
        }
    }

    /// Encode-only: decoding skips every field (receivers decode `pb::SyncRequest`).
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        str_len(1, &self.from)
            + self
                .batch
                .changes
                .iter()
                .map(|c| nested_len(2, change_len(&self.node, c)))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        self.batch.changes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::distro as pb;
    use distro_core::model::{ClientId, InstanceSpec, ServiceSpec};
    use distro_core::{Command, Config, MemberList, PeerRequest, Revision};
    use prost::Message as _;

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
            .find_map(|c| match c {
                Command::Send {
                    request: PeerRequest::Sync(b),
                    ..
                } => Some(b),
                _ => None,
            })
            .expect("a batch");
        assert_eq!(batch.changes.len(), 3);
        let expected = pb::SyncRequest {
            from: members[0].clone(),
            changes: batch
                .changes
                .iter()
                .map(|c| crate::wire::change_to_proto(&node, c))
                .collect(),
        };
        let msg = SyncMessage::new(node, batch);
        let bytes = msg.encode_to_vec();
        assert_eq!(bytes.len(), msg.encoded_len());
        let decoded = pb::SyncRequest::decode(&bytes[..]).expect("decodes");
        assert_eq!(decoded, expected);
        assert!(matches!(
            decoded.changes.iter().find_map(|c| match &c.change {
                Some(pb::client_change::Change::Delete(d)) => Some(d.revision > 0),
                _ => None,
            }),
            Some(true)
        ));
        let _ = Revision::ZERO;
    }
}
