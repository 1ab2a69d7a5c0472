//! The Nacos `Payload` envelope: `metadata.type` names the message class, `body.value` is
//! its UTF-8 JSON.
//!
//! This file turns a [`Payload`] into a [`Kind`] plus JSON bytes and back. It knows the
//! class names and the envelope rules of reference §4.3 (responses carry the exact response
//! class name, `body.type_url` is empty as Java sends it); it knows nothing of what the
//! JSON means (see `message.rs`) or what to do with it (see `handler.rs`).

use crate::proto::nacos::{Metadata, Payload};

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

/// A decoded envelope: the class name and the JSON body.
pub(crate) struct Envelope {
    pub(crate) type_name: String,
    pub(crate) body: Vec<u8>,
}

impl Envelope {
    /// Splits a payload. A missing metadata gives an empty type (unknown); a missing or
    /// empty body reads as `{}`.
    pub(crate) fn from_payload(p: Payload) -> Envelope {
        let type_name = p.metadata.map(|m| m.r#type).unwrap_or_default();
        let body = match p.body {
            Some(any) if !any.value.is_empty() => any.value,
            _ => b"{}".to_vec(),
        };
        Envelope { type_name, body }
    }

    /// The message kind.
    pub(crate) fn kind(&self) -> Kind {
        Kind::of(&self.type_name)
    }

    /// Parses the body as `T`; the error text is what a 502 reply carries.
    pub(crate) fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("cannot parse the {} body: {e}", self.type_name))
    }
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

/// Serializes `value` into a payload of class `type_name`.
pub(crate) fn encode<T: serde::Serialize>(type_name: &str, value: &T) -> Payload {
    // Serializing our own DTOs (strings, numbers, maps with string keys) cannot fail.
    let json = serde_json::to_vec(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, type_name, "cannot serialize a response");
        br#"{"resultCode":500,"errorCode":500,"message":"internal serialization error","success":false}"#.to_vec()
    });
    payload(type_name, json)
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
        assert_eq!(e.type_name, "");
        assert_eq!(e.body, b"{}");
        let p = payload("InstanceResponse", b"{\"a\":1}".to_vec());
        assert_eq!(p.metadata.as_ref().unwrap().r#type, "InstanceResponse");
        let e = Envelope::from_payload(p);
        assert_eq!(e.kind(), Kind::Response);
        assert_eq!(e.body, b"{\"a\":1}");
        let bad = Envelope {
            type_name: "InstanceRequest".into(),
            body: b"{not json".to_vec(),
        };
        let err = bad.parse::<serde_json::Value>().unwrap_err();
        assert!(err.contains("InstanceRequest"), "{err}");
    }
}
