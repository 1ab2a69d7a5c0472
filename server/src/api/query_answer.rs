//! `distro.v1.QueryResponse` as our own type, so a query can be answered with bytes the
//! answer cache ([`crate::answers`]) keeps.
//!
//! `build.rs` maps the message here (`extern_path`). Decoding (clients, tests, loadgen)
//! fills `instances` and `revision` as the generated struct would; encoding writes either
//! those fields or, for a response made by [`QueryResponse::encoded`], the kept bytes
//! verbatim. The wire format is the one `distro.proto` defines, pinned by a round-trip
//! test.

use crate::proto::distro::Instance;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};

/// `distro.v1.QueryResponse`: the instances of one service and its revision.
#[derive(Clone, Default, PartialEq)]
pub struct QueryResponse {
    /// The selected instances.
    pub instances: Vec<Instance>,
    /// The service's revision (0: unknown service).
    pub revision: u64,
    /// Already encoded fields; when set, `instances` and `revision` are not encoded.
    encoded: Option<Bytes>,
}

impl std::fmt::Debug for QueryResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("QueryResponse");
        d.field("instances", &self.instances)
            .field("revision", &self.revision);
        if let Some(b) = &self.encoded {
            d.field("encoded_bytes", &b.len());
        }
        d.finish()
    }
}

impl QueryResponse {
    /// The encoding of `instances` and `revision`.
    pub fn encode_fields<'a>(
        instances: impl IntoIterator<Item = &'a Instance>,
        revision: u64,
    ) -> Bytes {
        let mut buf = Vec::new();
        for i in instances {
            prost::encoding::message::encode(1, i, &mut buf);
        }
        if revision != 0 {
            prost::encoding::uint64::encode(2, &revision, &mut buf);
        }
        Bytes::from(buf)
    }

    /// A response whose fields are `bytes`, an encoding from [`Self::encode_fields`].
    pub fn encoded(bytes: Bytes) -> Self {
        Self {
            encoded: Some(bytes),
            ..Self::default()
        }
    }
}

impl prost::Message for QueryResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(b) = &self.encoded {
            buf.put_slice(b);
            return;
        }
        for i in &self.instances {
            prost::encoding::message::encode(1, i, buf);
        }
        if self.revision != 0 {
            prost::encoding::uint64::encode(2, &self.revision, buf);
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
            1 => prost::encoding::message::merge_repeated(wire_type, &mut self.instances, buf, ctx),
            2 => prost::encoding::uint64::merge(wire_type, &mut self.revision, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        if let Some(b) = &self.encoded {
            return b.len();
        }
        prost::encoding::message::encoded_len_repeated(1, &self.instances)
            + if self.revision != 0 {
                prost::encoding::uint64::encoded_len(2, &self.revision)
            } else {
                0
            }
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn kept_bytes_decode_as_the_fields() {
        let instances = vec![
            Instance {
                ip: "10.0.0.1".into(),
                port: 80,
                weight: 2.0,
                healthy: true,
                enabled: true,
                cluster: "c".into(),
                metadata: [("k".to_string(), "v".to_string())].into(),
                instance_id: String::new(),
            },
            Instance::default(),
        ];
        let bytes = QueryResponse::encode_fields(&instances, 7);
        let r = QueryResponse::encoded(bytes.clone());
        assert_eq!(r.encoded_len(), bytes.len());
        let wire = r.encode_to_vec();
        let back = QueryResponse::decode(&wire[..]).unwrap();
        assert_eq!(back.instances, instances);
        assert_eq!(back.revision, 7);
        // Decoded as an unknown-field-tolerant message: an empty one is the default.
        assert_eq!(
            QueryResponse::decode(&[][..]).unwrap(),
            QueryResponse::default()
        );
    }
}
