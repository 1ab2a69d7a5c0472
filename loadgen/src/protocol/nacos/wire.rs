//! The Nacos `Payload` on the wire, without the generated types' allocations.
//!
//! A request is encoded once into an [`Encoded`]: the gRPC length-prefixed frame of a whole
//! `Payload`, in a refcounted [`Bytes`]. Sending it again hands the same bytes to HTTP/2
//! (a refcount increment; nothing is encoded or copied). A reply is decoded into an
//! [`Incoming`], whose class name and JSON body are zero-copy slices of the receive buffer.
//!
//! Field numbers are those of `nacos_grpc_service.proto` (reference §4.1): `Payload
//! {Metadata metadata = 2; Any body = 3}`, `Metadata {string type = 3; string clientIp =
//! 8; map<string,string> headers = 7}`, `Any {string type_url = 1; bytes value = 2}`.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use std::collections::HashMap;

pub(crate) use distro_server::h2_client::GRPC_PREFIX;

/// A whole `Payload` as a gRPC frame (uncompressed). Cloning it is a refcount increment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// Encodes a payload of class `type_name` (`metadata.type`) around a JSON body.
    /// `client_ip` goes to `metadata.clientIp`, as Java SDKs fill it.
    pub fn new(type_name: &str, client_ip: &str, json: Vec<u8>) -> Encoded {
        let p = PayloadOut {
            metadata: Some(MetadataOut {
                r#type: type_name.to_owned(),
                headers: HashMap::new(),
                client_ip: client_ip.to_owned(),
            }),
            body: Some(AnyOut {
                type_url: String::new(),
                value: json,
            }),
        };
        let len = p.encoded_len();
        let mut buf = BytesMut::with_capacity(GRPC_PREFIX + len);
        buf.put_u8(0);
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        p.encode_raw(&mut buf);
        Encoded(buf.freeze())
    }

    /// The protobuf bytes of the payload (without the gRPC prefix).
    pub fn as_bytes(&self) -> &[u8] {
        self.0.get(GRPC_PREFIX..).unwrap_or_default()
    }

    /// The gRPC frame (prefix and payload), as sent.
    pub(crate) fn frame(&self) -> Bytes {
        self.0.clone()
    }
}

impl std::fmt::Debug for Encoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.0.len())
    }
}

#[derive(Clone, PartialEq, Message)]
struct PayloadOut {
    #[prost(message, optional, tag = "2")]
    metadata: Option<MetadataOut>,
    #[prost(message, optional, tag = "3")]
    body: Option<AnyOut>,
}

#[derive(Clone, PartialEq, Message)]
struct MetadataOut {
    #[prost(string, tag = "3")]
    r#type: String,
    #[prost(map = "string, string", tag = "7")]
    headers: HashMap<String, String>,
    #[prost(string, tag = "8")]
    client_ip: String,
}

#[derive(Clone, PartialEq, Message)]
struct AnyOut {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// A received `Payload`: only `metadata.type` and `body.value` are kept (the rest is
/// skipped), both as slices of the receive buffer.
#[derive(Clone, PartialEq, Message)]
pub struct Incoming {
    #[prost(message, optional, tag = "2")]
    metadata: Option<MetadataIn>,
    #[prost(message, optional, tag = "3")]
    body: Option<AnyIn>,
}

#[derive(Clone, PartialEq, Message)]
struct MetadataIn {
    // A proto `string`, read as bytes: same wire type, no UTF-8 check, no copy.
    #[prost(bytes = "bytes", tag = "3")]
    r#type: Bytes,
}

#[derive(Clone, PartialEq, Message)]
struct AnyIn {
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// Why bytes are not a `Payload` ([`Incoming::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadError(&'static str);

impl std::fmt::Display for PayloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for PayloadError {}

/// A varint at `b[*at]`.
fn varint(b: &[u8], at: &mut usize) -> Result<u64, PayloadError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&byte) = b.get(*at) else {
            return Err(PayloadError("a varint runs past the end"));
        };
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    Err(PayloadError("a varint longer than ten bytes"))
}

/// Walks the fields of the message `b[range]`, calling `f(field, value range)` for every
/// length-delimited one and skipping the others as protobuf does; the fields `known` (a
/// bit mask of the string, bytes and message fields of the schema) given with another wire
/// type are an error.
fn fields(
    b: &[u8],
    range: std::ops::Range<usize>,
    known: u64,
    mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), PayloadError>,
) -> Result<(), PayloadError> {
    let msg = &b[..range.end];
    let mut at = range.start;
    while at < msg.len() {
        let key = varint(msg, &mut at)?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(PayloadError("a field number out of range"));
        }
        if field < 64 && known & (1 << field) != 0 && key & 7 != 2 {
            return Err(PayloadError("a field of the wrong wire type"));
        }
        match key & 7 {
            0 => {
                varint(msg, &mut at)?;
            }
            1 | 5 => {
                at += if key & 7 == 1 { 8 } else { 4 };
                if at > msg.len() {
                    return Err(PayloadError("a fixed-size field runs past the end"));
                }
            }
            2 => {
                let len = varint(msg, &mut at)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| at.checked_add(l))
                    .filter(|&e| e <= msg.len())
                    .ok_or(PayloadError("a field runs past the end"))?;
                f(field, at..end)?;
                at = end;
            }
            _ => return Err(PayloadError("an unsupported wire type (group or invalid)")),
        }
    }
    Ok(())
}

impl Incoming {
    /// Decodes a `Payload` as [`prost::Message::decode`] does (the last `type` and `value`
    /// given win; unknown fields are skipped; groups are refused), by hand: a walk over the
    /// bytes with `metadata.type` and `body.value` kept as slices of `buf`.
    pub fn parse(buf: &Bytes) -> Result<Incoming, PayloadError> {
        let b = &buf[..];
        let mut type_at: Option<std::ops::Range<usize>> = None;
        let mut value_at: Option<std::ops::Range<usize>> = None;
        let (mut metadata, mut body) = (false, false);
        fields(b, 0..b.len(), 1 << 2 | 1 << 3, |field, r| {
            match field {
                2 => {
                    metadata = true;
                    fields(b, r, 1 << 3, |f, v| {
                        if f == 3 {
                            type_at = Some(v);
                        }
                        Ok(())
                    })
                }
                3 => {
                    body = true;
                    fields(b, r, 1 << 2, |f, v| {
                        if f == 2 {
                            value_at = Some(v);
                        }
                        Ok(())
                    })
                }
                // A proto3 string or message field given as a varint would be an error
                // for prost; only length-delimited fields reach here, others are skipped.
                _ => Ok(()),
            }
        })?;
        let slice = |r: Option<std::ops::Range<usize>>| r.map_or_else(Bytes::new, |r| buf.slice(r));
        Ok(Incoming {
            metadata: metadata.then(|| MetadataIn {
                r#type: slice(type_at.clone()),
            }),
            body: body.then(|| AnyIn {
                value: slice(value_at.clone()),
            }),
        })
    }

    /// `metadata.type` (empty when absent).
    pub fn type_name(&self) -> &[u8] {
        self.metadata.as_ref().map_or(&[], |m| &m.r#type[..])
    }

    /// `metadata.type` as text, for messages.
    pub fn type_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.type_name())
    }

    /// The JSON body (`{}` when absent or empty, as servers treat it).
    pub fn body(&self) -> Bytes {
        match &self.body {
            Some(b) if !b.value.is_empty() => b.value.clone(),
            _ => Bytes::from_static(b"{}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_payloads_decode_as_incoming() {
        let e = Encoded::new("InstanceRequest", "127.0.0.2", b"{\"a\":1}".to_vec());
        let frame = e.frame();
        assert_eq!(frame[0], 0, "uncompressed");
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len, e.as_bytes().len());
        assert_eq!(&frame[GRPC_PREFIX..], e.as_bytes());
        let i = Incoming::decode(frame.slice(GRPC_PREFIX..)).expect("decodes");
        assert_eq!(i.type_name(), b"InstanceRequest");
        assert_eq!(&i.body()[..], b"{\"a\":1}");
        assert_eq!(
            Incoming::parse(&frame.slice(GRPC_PREFIX..)).expect("parses"),
            i
        );
        let empty = Incoming::default();
        assert_eq!(empty.type_name(), b"");
        assert_eq!(&empty.body()[..], b"{}");
    }

    /// The hand decoder agrees with prost's on valid payloads with unknown fields and
    /// repeated ones, and refuses what prost refuses.
    #[test]
    fn parse_agrees_with_prost() {
        let base = Encoded::new("QueryServiceResponse", "10.0.0.1", b"{}".to_vec());
        let mut extra = base.as_bytes().to_vec();
        // Unknown fields of every wire type, a second metadata with another type, a
        // second body with another value.
        extra.extend_from_slice(&[0x08, 0x96, 0x01]); // field 1 varint
        extra.extend_from_slice(&[0x21, 1, 2, 3, 4, 5, 6, 7, 8]); // field 4 fixed64
        extra.extend_from_slice(&[0x2d, 1, 2, 3, 4]); // field 5 fixed32
        extra.extend_from_slice(&[0x12, 0x03, 0x1a, 0x01, b'T']); // metadata { type: "T" }
        extra.extend_from_slice(&[0x1a, 0x04, 0x12, 0x02, b'{', b'}']); // body { value }
        extra.extend_from_slice(&[0x12, 0x02, 0x40, 0x01]); // metadata { field 8: 1 }
        for bytes in [base.as_bytes().to_vec(), extra.clone(), Vec::new()] {
            let want = Incoming::decode(&bytes[..]).expect("prost decodes");
            let got = Incoming::parse(&Bytes::from(bytes)).expect("parses");
            assert_eq!(got, want);
        }
        // Every truncation and a few corruptions: refused by both or by neither, and
        // equal when accepted.
        for n in 0..extra.len() {
            for corrupt in [
                None,
                Some(0x07u8),
                Some(0x80),
                Some(0x0b),
                Some(0x10),
                Some(0x18),
            ] {
                let mut b = extra[..n].to_vec();
                if let (Some(c), Some(last)) = (corrupt, b.last_mut()) {
                    *last = c;
                }
                let want = Incoming::decode(&b[..]).ok();
                let got = Incoming::parse(&Bytes::from(b.clone())).ok();
                assert_eq!(got, want, "{b:02x?}");
            }
        }
    }
}
