//! The Nacos `Payload` envelope: `metadata.type` names the message class, `body.value` is
//! its UTF-8 JSON.
//!
//! This file turns a [`Payload`] into a [`Kind`] plus JSON bytes and back. It knows the
//! class names and the envelope rules of reference §4.3 (responses carry the exact response
//! class name, `body.type_url` is empty as Java sends it); it knows nothing of what the
//! JSON means (see `message.rs`) or what to do with it (see `handler.rs`).

use crate::proto::nacos::{Metadata, Payload};
use crate::sdk_port::grpc::PREFIX;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

/// Every message class this front end tells apart, by `metadata.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    ServerCheck,
    HealthCheck,
    ConnectionSetup,
    Instance,
    BatchInstance,
    PersistentInstance,
    ServiceQuery,
    SubscribeService,
    ServiceList,
    /// A response sent by the client on the stream (an ack of a server→client request).
    Response,
    /// Anything else (including server→client request classes sent the wrong way).
    Unknown,
}

impl Kind {
    /// Client→server kinds counted by the metrics, in a fixed order (`Kind::index`).
    pub(crate) const COUNTED: [Kind; 10] = [
        Kind::ServerCheck,
        Kind::HealthCheck,
        Kind::ConnectionSetup,
        Kind::Instance,
        Kind::BatchInstance,
        Kind::PersistentInstance,
        Kind::ServiceQuery,
        Kind::SubscribeService,
        Kind::ServiceList,
        Kind::Unknown,
    ];

    /// The kind named by a `metadata.type`.
    pub(crate) fn of(type_name: &str) -> Kind {
        match type_name {
            "ServerCheckRequest" => Kind::ServerCheck,
            "HealthCheckRequest" => Kind::HealthCheck,
            "ConnectionSetupRequest" => Kind::ConnectionSetup,
            "InstanceRequest" => Kind::Instance,
            "BatchInstanceRequest" => Kind::BatchInstance,
            "PersistentInstanceRequest" => Kind::PersistentInstance,
            "ServiceQueryRequest" => Kind::ServiceQuery,
            "SubscribeServiceRequest" => Kind::SubscribeService,
            "ServiceListRequest" => Kind::ServiceList,
            t if t.ends_with("Response") => Kind::Response,
            _ => Kind::Unknown,
        }
    }

    /// The request class name, as metrics label it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::ServerCheck => "ServerCheckRequest",
            Kind::HealthCheck => "HealthCheckRequest",
            Kind::ConnectionSetup => "ConnectionSetupRequest",
            Kind::Instance => "InstanceRequest",
            Kind::BatchInstance => "BatchInstanceRequest",
            Kind::PersistentInstance => "PersistentInstanceRequest",
            Kind::ServiceQuery => "ServiceQueryRequest",
            Kind::SubscribeService => "SubscribeServiceRequest",
            Kind::ServiceList => "ServiceListRequest",
            Kind::Response => "Response",
            Kind::Unknown => "unknown",
        }
    }

    /// Position in [`Kind::COUNTED`] (responses count as unknown: they are never requests).
    pub(crate) fn index(self) -> usize {
        Kind::COUNTED
            .iter()
            .position(|k| *k == self)
            .unwrap_or(Kind::COUNTED.len() - 1)
    }
}

/// A decoded envelope: the class name, the JSON body and the `accessToken` header.
pub(crate) struct Envelope {
    /// `metadata.type`, valid UTF-8 (checked when decoded).
    type_name: Bytes,
    pub(crate) body: Bytes,
    /// `metadata.headers["accessToken"]`, the auth token of the request.
    pub(crate) token: Option<String>,
}

impl Envelope {
    /// Splits a payload. A missing metadata gives an empty type (unknown); a missing or
    /// empty body reads as `{}`.
    pub(crate) fn from_payload(p: Payload) -> Envelope {
        let (type_name, token) = match p.metadata {
            Some(mut m) => (m.r#type, m.headers.remove(crate::auth::TOKEN_PARAM)),
            None => (String::new(), None),
        };
        let body = match p.body {
            Some(any) if !any.value.is_empty() => Bytes::from(any.value),
            _ => Bytes::from_static(b"{}"),
        };
        Envelope {
            type_name: Bytes::from(type_name),
            body,
            token,
        }
    }

    /// Decodes the protobuf bytes of a `Payload` (a unary call's message) as
    /// [`Self::from_payload`] reads it, without copying: the class name and the body are
    /// slices of `message`, and only `metadata.type`, the `accessToken` header and
    /// `body.value` are read (`clientIp`, `body.type_url` and the other headers are
    /// skipped). The error is the reason `message` is not a `Payload`.
    pub(crate) fn decode(message: Bytes) -> Result<Envelope, String> {
        let p = PayloadIn::decode(message).map_err(|e| e.to_string())?;
        let (type_name, token) = match p.metadata {
            Some(m) => {
                // A map is a repeated entry on the wire; the last entry of a key wins.
                let token = m
                    .headers
                    .iter()
                    .rev()
                    .find(|h| h.key == crate::auth::TOKEN_PARAM.as_bytes())
                    .and_then(|h| std::str::from_utf8(&h.value).ok().map(str::to_owned));
                (m.r#type, token)
            }
            None => (Bytes::new(), None),
        };
        if std::str::from_utf8(&type_name).is_err() {
            return Err("invalid string value: metadata.type is not UTF-8".to_owned());
        }
        let body = match p.body {
            Some(any) if !any.value.is_empty() => any.value,
            _ => Bytes::from_static(b"{}"),
        };
        Ok(Envelope {
            type_name,
            body,
            token,
        })
    }

    /// `metadata.type`.
    pub(crate) fn type_name(&self) -> &str {
        // Checked when the envelope was made.
        std::str::from_utf8(&self.type_name).unwrap_or_default()
    }

    /// The message kind.
    pub(crate) fn kind(&self) -> Kind {
        Kind::of(self.type_name())
    }

    /// Parses the body as `T`; the error text is what a 502 reply carries.
    pub(crate) fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, String> {
        from_json(&self.body)
            .map_err(|e| format!("cannot parse the {} body: {e}", self.type_name()))
    }
}

/// Parses JSON `bytes` as `T`: the UTF-8 check once over the whole text, then serde_json
/// on the `str` (which does not check each string again, as it does on a byte slice).
pub(crate) fn from_json<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("the JSON is not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// A `Payload` as the unary path reads it (see [`Envelope::decode`]); field numbers of
/// `nacos_grpc_service.proto`: `Payload {Metadata metadata = 2; Any body = 3}`, `Metadata
/// {string type = 3; map<string, string> headers = 7}`, `Any {bytes value = 2}`.
#[derive(Clone, PartialEq, prost::Message)]
struct PayloadIn {
    #[prost(message, optional, tag = "2")]
    metadata: Option<MetadataIn>,
    #[prost(message, optional, tag = "3")]
    body: Option<AnyIn>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MetadataIn {
    /// A proto `string` read as bytes (same wire type, no copy); checked as UTF-8 after.
    #[prost(bytes = "bytes", tag = "3")]
    r#type: Bytes,
    #[prost(message, repeated, tag = "7")]
    headers: Vec<HeaderIn>,
}

/// One entry of `map<string, string> headers`.
#[derive(Clone, PartialEq, prost::Message)]
struct HeaderIn {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AnyIn {
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// A unary reply: one kept as its gRPC frame (the same bytes every time), or a class
/// name and its JSON.
pub(crate) enum Answer {
    /// The whole gRPC frame (see [`fixed`]).
    Fixed(Bytes),
    Json(&'static str, Vec<u8>),
}

impl Answer {
    /// The reply as one gRPC message frame, as the SDK port sends it.
    pub(crate) fn into_frame(self) -> Bytes {
        match self {
            Answer::Fixed(frame) => frame,
            Answer::Json(type_name, json) => frame(type_name, &json),
        }
    }

    /// The reply as a `Payload`, for the tonic service.
    pub(crate) fn into_payload(self) -> Payload {
        match self {
            // Made by `fixed`: always a whole frame of a payload.
            Answer::Fixed(frame) => {
                <Payload as Message>::decode(&frame[PREFIX..]).unwrap_or_default()
            }
            Answer::Json(type_name, json) => payload(type_name, json),
        }
    }
}

/// The gRPC frame of a payload of class `type_name` around `json`, kept for good: for a
/// reply that is always the same (`static`s built once, cloned without a reference count).
pub(crate) fn fixed<T: serde::Serialize>(type_name: &'static str, value: &T) -> Bytes {
    let frame = frame(type_name, &to_json(type_name, value));
    Bytes::from_static(Vec::leak(frame.to_vec()))
}

/// The gRPC message frame (uncompressed flag, length) of the payload [`payload`] makes,
/// written directly: the same bytes as prost encodes, without the `Payload`'s strings.
pub(crate) fn frame(type_name: &str, json: &[u8]) -> Bytes {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let len_of = |n: usize| encoded_len_varint(n as u64);
    // metadata {type = 3}; body {value = 2} (an empty value is left out, as prost does).
    let meta = if type_name.is_empty() {
        0
    } else {
        1 + len_of(type_name.len()) + type_name.len()
    };
    let any = if json.is_empty() {
        0
    } else {
        1 + len_of(json.len()) + json.len()
    };
    let len = 1 + len_of(meta) + meta + 1 + len_of(any) + any;
    let mut b = BytesMut::with_capacity(PREFIX + len);
    b.put_u8(0);
    b.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    b.put_u8(0x12); // field 2, length-delimited: metadata
    encode_varint(meta as u64, &mut b);
    if meta > 0 {
        b.put_u8(0x1a); // field 3: type
        encode_varint(type_name.len() as u64, &mut b);
        b.put_slice(type_name.as_bytes());
    }
    b.put_u8(0x1a); // field 3: body
    encode_varint(any as u64, &mut b);
    if any > 0 {
        b.put_u8(0x12); // field 2: value
        encode_varint(json.len() as u64, &mut b);
        b.put_slice(json);
    }
    b.freeze()
}

/// Builds a payload of class `type_name` around `json`.
pub(crate) fn payload(type_name: &str, json: Vec<u8>) -> Payload {
    Payload {
        metadata: Some(Metadata {
            r#type: type_name.to_string(),
            client_ip: String::new(),
            headers: Default::default(),
        }),
        body: Some(prost_types::Any {
            type_url: String::new(),
            value: json,
        }),
    }
}

/// `value` as JSON (a fixed error body if it cannot be serialized).
fn to_json<T: serde::Serialize>(type_name: &str, value: &T) -> Vec<u8> {
    // Serializing our own DTOs (strings, numbers, maps with string keys) cannot fail.
    serde_json::to_vec(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, type_name, "cannot serialize a response");
        br#"{"resultCode":500,"errorCode":500,"message":"internal serialization error","success":false}"#.to_vec()
    })
}

/// Serializes `value` into a payload of class `type_name`.
pub(crate) fn encode<T: serde::Serialize>(type_name: &str, value: &T) -> Payload {
    payload(type_name, to_json(type_name, value))
}

/// Serializes `value` into a unary reply of class `type_name`.
pub(crate) fn answer<T: serde::Serialize>(type_name: &'static str, value: &T) -> Answer {
    Answer::Json(type_name, to_json(type_name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_names() {
        for k in Kind::COUNTED {
            if k != Kind::Unknown {
                assert_eq!(Kind::of(k.name()), k);
            }
        }
        assert_eq!(Kind::of("NotifySubscriberResponse"), Kind::Response);
        assert_eq!(Kind::of("ClientDetectionRequest"), Kind::Unknown);
        assert_eq!(Kind::of(""), Kind::Unknown);
        assert_eq!(Kind::Response.index(), Kind::Unknown.index());
    }

    #[test]
    fn envelopes_tolerate_missing_parts() {
        let e = Envelope::from_payload(Payload::default());
        assert_eq!(e.type_name(), "");
        assert_eq!(e.body, &b"{}"[..]);
        let e = Envelope::decode(Bytes::new()).unwrap();
        assert_eq!((e.type_name(), &e.body[..]), ("", &b"{}"[..]));
        let p = payload("InstanceResponse", b"{\"a\":1}".to_vec());
        assert_eq!(p.metadata.as_ref().unwrap().r#type, "InstanceResponse");
        let e = Envelope::from_payload(p);
        assert_eq!(e.kind(), Kind::Response);
        assert_eq!(e.body, &b"{\"a\":1}"[..]);
        let bad = Envelope {
            type_name: Bytes::from_static(b"InstanceRequest"),
            body: Bytes::from_static(b"{not json"),
            token: None,
        };
        let err = bad.parse::<serde_json::Value>().unwrap_err();
        assert!(err.contains("InstanceRequest"), "{err}");
    }

    #[test]
    fn decoded_envelopes_read_as_payloads_do() {
        let mut p = payload("ServiceQueryRequest", b"{\"serviceName\":\"s\"}".to_vec());
        let m = p.metadata.as_mut().unwrap();
        m.client_ip = "10.0.0.1".into();
        m.headers.insert("app".into(), "x".into());
        m.headers
            .insert(crate::auth::TOKEN_PARAM.into(), "t0k".into());
        p.body.as_mut().unwrap().type_url = "ignored".into();
        let e = Envelope::decode(Bytes::from(p.encode_to_vec())).unwrap();
        let want = Envelope::from_payload(p);
        assert_eq!(e.type_name(), want.type_name());
        assert_eq!(e.body, want.body);
        assert_eq!(e.token.as_deref(), Some("t0k"));
        assert_eq!(want.token.as_deref(), Some("t0k"));
        // Not a payload, and a class name that is not UTF-8.
        assert!(Envelope::decode(Bytes::from_static(b"\xff\xff")).is_err());
        let bad = [0x12, 3, 0x1a, 1, 0xff];
        let err = Envelope::decode(Bytes::copy_from_slice(&bad))
            .err()
            .unwrap();
        assert!(err.contains("UTF-8"), "{err}");
    }

    #[test]
    fn frames_are_what_prost_encodes() {
        for (t, json) in [
            ("InstanceResponse", &br#"{"resultCode":200}"#[..]),
            ("", &b"{}"[..]),
            ("ErrorResponse", &b""[..]),
            ("QueryServiceResponse", &[b'x'; 300][..]),
        ] {
            let p = payload(t, json.to_vec());
            let mut want = vec![0];
            want.extend_from_slice(&(p.encoded_len() as u32).to_be_bytes());
            want.extend_from_slice(&p.encode_to_vec());
            assert_eq!(&frame(t, json)[..], &want[..], "{t}");
            let a = Answer::Json("X", json.to_vec());
            assert_eq!(a.into_payload().body.unwrap().value, json);
        }
        let f = fixed(
            "HealthCheckResponse",
            &serde_json::json!({"resultCode": 200}),
        );
        let p = Answer::Fixed(f.clone()).into_payload();
        assert_eq!(p.metadata.unwrap().r#type, "HealthCheckResponse");
        assert_eq!(p.body.unwrap().value, br#"{"resultCode":200}"#);
        assert_eq!(Answer::Fixed(f.clone()).into_frame(), f);
    }
}
