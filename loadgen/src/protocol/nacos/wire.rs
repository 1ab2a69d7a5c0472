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

/// Length of the gRPC message prefix (compressed flag, u32 big-endian length).
pub(crate) const GRPC_PREFIX: usize = 5;

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

impl Incoming {
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
        let empty = Incoming::default();
        assert_eq!(empty.type_name(), b"");
        assert_eq!(&empty.body()[..], b"{}");
    }
}
