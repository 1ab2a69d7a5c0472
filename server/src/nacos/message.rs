//! The JSON bodies of the Nacos 2.x naming and internal messages (reference §4.4–4.8).
//!
//! Requests are read leniently, because each SDK writes them differently: every field is
//! optional and `null` reads as absent (Rust sends `"requestId":null`, `"instanceId":null`),
//! unknown fields are ignored, Python's `healthOnly` is taken for `healthyOnly`, metadata
//! values that are not strings are stringified, and both the old `abilities` and the new
//! `abilityTable` setups are accepted. Replies are written exactly: camelCase names, integer
//! `resultCode`/`errorCode` on every response, `success`, and no `null` strings.
//!
//! `ServiceInfo` and the instance JSON live in `view.rs`.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;

/// An `Instance` as clients send it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct InstanceDto {
    pub(crate) instance_id: Option<String>,
    pub(crate) ip: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) weight: Option<f64>,
    pub(crate) healthy: Option<bool>,
    pub(crate) enabled: Option<bool>,
    pub(crate) ephemeral: Option<bool>,
    pub(crate) cluster_name: Option<String>,
    #[serde(deserialize_with = "lenient_map")]
    pub(crate) metadata: Vec<(String, String)>,
}

/// `InstanceRequest` and `PersistentInstanceRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct InstanceRequest {
    pub(crate) namespace: Option<String>,
    pub(crate) service_name: Option<String>,
    pub(crate) group_name: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) instance: Option<InstanceDto>,
}

/// `BatchInstanceRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct BatchInstanceRequest {
    pub(crate) namespace: Option<String>,
    pub(crate) service_name: Option<String>,
    pub(crate) group_name: Option<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Option<String>,
    pub(crate) instances: Option<Vec<InstanceDto>>,
}

/// `ServiceQueryRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ServiceQueryRequest {
    pub(crate) namespace: Option<String>,
    pub(crate) service_name: Option<String>,
    pub(crate) group_name: Option<String>,
    pub(crate) cluster: Option<String>,
    /// Python 3.x spells it `healthOnly`.
    #[serde(alias = "healthOnly")]
    pub(crate) healthy_only: Option<bool>,
}

/// `SubscribeServiceRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SubscribeServiceRequest {
    pub(crate) namespace: Option<String>,
    pub(crate) service_name: Option<String>,
    pub(crate) group_name: Option<String>,
    /// `false` (Java's default) unsubscribes.
    pub(crate) subscribe: Option<bool>,
    pub(crate) clusters: Option<String>,
}

/// `ServiceListRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ServiceListRequest {
    pub(crate) namespace: Option<String>,
    pub(crate) group_name: Option<String>,
    pub(crate) page_no: Option<i64>,
    pub(crate) page_size: Option<i64>,
}

/// `ConnectionSetupRequest` (only what the front end looks at).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct ConnectionSetupRequest {
    pub(crate) client_version: Option<String>,
    pub(crate) tenant: Option<String>,
    #[serde(deserialize_with = "lenient_map")]
    pub(crate) labels: Vec<(String, String)>,
    /// Java ≥ 2.3 and Python 3.x: present (even `{}`) means "send a `SetupAckRequest`".
    pub(crate) ability_table: Option<serde_json::Value>,
}

/// Any response a client sends on the stream: an ack of a server→client request.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct StreamResponse {
    #[serde(deserialize_with = "lenient_string")]
    pub(crate) request_id: Option<String>,
    pub(crate) result_code: Option<i64>,
    pub(crate) error_code: Option<i64>,
}

impl StreamResponse {
    /// Whether the client reports success (`resultCode` 200, or absent with `errorCode` 0).
    pub(crate) fn is_success(&self) -> bool {
        match self.result_code {
            Some(code) => code == 200,
            None => self.error_code.unwrap_or(0) == 0,
        }
    }
}

/// A map whose values may be strings, numbers, booleans or `null` (skipped); `null` for the
/// whole map reads as empty. Read straight into pairs sorted by key (a repeated key: the
/// last one wins, as in a map), without a map or a `serde_json::Value` per entry.
fn lenient_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    d.deserialize_option(LenientPairs)
}

struct LenientPairs;

impl<'de> Visitor<'de> for LenientPairs {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of strings, numbers or booleans, or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut all: Vec<(String, Option<String>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let Lenient(value) = map.next_value()?;
            all.push((key, value));
        }
        // Stable: the entries of one key stay in order, and the last one is kept.
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(all.len());
        let mut it = all.into_iter().peekable();
        while let Some((key, value)) = it.next() {
            if it.peek().is_some_and(|(next, _)| *next == key) {
                continue;
            }
            if let Some(v) = value {
                pairs.push((key, v));
            }
        }
        Ok(pairs)
    }
}

/// A metadata value as text: a string as is, a number or boolean as JSON writes it, an
/// array or object as its JSON text; `null` reads as absent.
struct Lenient(Option<String>);

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientValue)
    }
}

struct LenientValue;

impl<'de> Visitor<'de> for LenientValue {
    type Value = Lenient;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_str<E>(self, v: &str) -> Result<Lenient, E> {
        Ok(Lenient(Some(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Lenient, E> {
        Ok(Lenient(Some(v)))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Lenient, E> {
        Ok(Lenient(Some(v.to_string())))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Lenient, E> {
        Ok(Lenient(Some(v.to_string())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Lenient, E> {
        Ok(Lenient(Some(v.to_string())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Lenient, E> {
        Ok(Lenient(Some(serde_json::Value::from(v).to_string())))
    }

    fn visit_unit<E>(self) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    fn visit_none<E>(self) -> Result<Lenient, E> {
        Ok(Lenient(None))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Lenient, A::Error> {
        let v = serde_json::Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Lenient(Some(v.to_string())))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lenient, A::Error> {
        let v = serde_json::Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Lenient(Some(v.to_string())))
    }
}

/// A string or a number (`requestId` of hand-written clients), `null` reads as absent.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    })
}

/// A successful response: `resultCode` 200, `errorCode` 0, the class's own fields, and
/// `success`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Reply<B: Serialize> {
    result_code: i32,
    error_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
    #[serde(flatten)]
    body: B,
    success: bool,
}

impl<B: Serialize> Reply<B> {
    /// A success with `body`.
    pub(crate) fn ok(body: B) -> Self {
        Self {
            result_code: crate::nacos::error::SUCCESS,
            error_code: 0,
            message: None,
            body,
            success: true,
        }
    }

    /// A success with `body` and `message: "success"` (Nacos sets it on some responses).
    pub(crate) fn ok_with_message(body: B) -> Self {
        Self {
            message: Some("success"),
            ..Self::ok(body)
        }
    }
}

/// No fields of its own (`HealthCheckResponse`).
#[derive(Serialize)]
pub(crate) struct Empty {}

/// `ServerCheckResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerCheckBody<'a> {
    pub(crate) connection_id: &'a str,
    pub(crate) support_ability_negotiation: bool,
}

/// `InstanceResponse` and `BatchInstanceResponse`.
#[derive(Serialize)]
pub(crate) struct TypeBody<'a> {
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
}

/// `QueryServiceResponse` and `SubscribeServiceResponse` as serde writes them (the
/// handler writes them around cached bytes; its tests compare the two).
#[cfg(test)]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceInfoBody<'a, S: Serialize> {
    pub(crate) service_info: &'a S,
}

/// `ServiceListResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceListBody<'a> {
    pub(crate) count: usize,
    pub(crate) service_names: Vec<&'a str>,
}

/// A server→client request without fields of its own (`ClientDetectionRequest`), or with an
/// ability table (`SetupAckRequest`). `headers` and a string `requestId` are always there:
/// the Rust SDK requires the former, Python the latter to be a string.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerRequest<'a> {
    pub(crate) headers: Empty,
    pub(crate) request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ability_table: Option<HashMap<&'static str, bool>>,
    pub(crate) module: &'static str,
}

/// The server's abilities sent in `SetupAckRequest`. Persistent instances are not Distro
/// data, so Java SDKs must not send them over gRPC.
pub(crate) fn server_abilities() -> HashMap<&'static str, bool> {
    HashMap::from([("supportPersistentInstanceByGrpc", false)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rust_sdk_instance_request_with_nulls_parses() {
        let body = br#"{"headers":{},"requestId":null,"type":"registerInstance",
            "instance":{"instanceId":null,"ip":"10.0.0.7","port":8080,"weight":1.0,"healthy":true,
            "enabled":true,"ephemeral":true,"clusterName":"DEFAULT","serviceName":null,
            "metadata":{"zone":"a","n":3,"x":null}},"namespace":"public","serviceName":"demo",
            "groupName":"DEFAULT_GROUP"}"#;
        let r: InstanceRequest = serde_json::from_slice(body).unwrap();
        let i = r.instance.unwrap();
        assert_eq!(i.ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(i.instance_id, None);
        assert_eq!(
            i.metadata,
            vec![("n".into(), "3".into()), ("zone".into(), "a".into())]
        );
        assert_eq!(r.kind.as_deref(), Some("registerInstance"));
    }

    #[test]
    fn lenient_maps_read_as_a_map_of_values_would() {
        // What the map of `serde_json::Value`s this replaced gave.
        fn via_values(json: &str) -> Vec<(String, String)> {
            let m: Option<HashMap<String, serde_json::Value>> = serde_json::from_str(json).unwrap();
            let mut v: Vec<(String, String)> = m
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(s) => Some((k, s)),
                    other => Some((k, other.to_string())),
                })
                .collect();
            v.sort();
            v
        }
        for json in [
            "null",
            "{}",
            r#"{"zone":"a","n":3,"x":null}"#,
            r#"{"b":"1","a":"2","b":"3","c":"x","c":null,"d":null,"d":"y"}"#,
            r#"{"f":1.5,"g":-2,"h":true,"i":false,"j":1e300,"k":18446744073709551615}"#,
            r#"{"l":[1,"two",{"x":null}],"m":{"n":[],"o":"p"},"q":"\u00e9\n"}"#,
        ] {
            let dto: InstanceDto =
                serde_json::from_str(&format!(r#"{{"metadata":{json}}}"#)).unwrap();
            assert_eq!(dto.metadata, via_values(json), "{json}");
        }
        assert!(serde_json::from_str::<InstanceDto>(r#"{"metadata":[1]}"#).is_err());
        assert!(serde_json::from_str::<InstanceDto>(r#"{"metadata":"x"}"#).is_err());
    }

    #[test]
    fn python_health_only_is_read_as_healthy_only() {
        let r: ServiceQueryRequest =
            serde_json::from_slice(br#"{"serviceName":"s","healthOnly":true,"module":""}"#)
                .unwrap();
        assert_eq!(r.healthy_only, Some(true));
        let r: ServiceQueryRequest =
            serde_json::from_slice(br#"{"serviceName":"s","healthyOnly":true}"#).unwrap();
        assert_eq!(r.healthy_only, Some(true));
    }

    #[test]
    fn setups_old_and_new() {
        let old: ConnectionSetupRequest = serde_json::from_value(json!({
            "clientVersion":"Nacos-Rust-Client:0.8.3","tenant":"public",
            "labels":{"module":"naming"},
            "abilities":{"remoteAbility":{"supportRemoteConnection":true}}}))
        .unwrap();
        assert!(old.ability_table.is_none());
        let new: ConnectionSetupRequest =
            serde_json::from_value(json!({"abilityTable":{}, "labels": null})).unwrap();
        assert!(new.ability_table.is_some());
        assert!(new.labels.is_empty());
    }

    #[test]
    fn stream_responses_accept_string_or_number_ids() {
        let r: StreamResponse =
            serde_json::from_value(json!({"requestId":"7","resultCode":200,"errorCode":0}))
                .unwrap();
        assert_eq!(r.request_id.as_deref(), Some("7"));
        assert!(r.is_success());
        let r: StreamResponse =
            serde_json::from_value(json!({"requestId":7,"resultCode":500})).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("7"));
        assert!(!r.is_success());
    }

    #[test]
    fn replies_have_codes_and_no_nulls() {
        let v = serde_json::to_value(Reply::ok(TypeBody {
            kind: "registerInstance",
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({"resultCode":200,"errorCode":0,"type":"registerInstance","success":true})
        );
        let v = serde_json::to_value(Reply::ok(Empty {})).unwrap();
        assert_eq!(v, json!({"resultCode":200,"errorCode":0,"success":true}));
        let v = serde_json::to_value(Reply::ok_with_message(ServiceListBody {
            count: 3,
            service_names: vec!["a"],
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({"resultCode":200,"errorCode":0,"message":"success","count":3,
                "serviceNames":["a"],"success":true})
        );
    }
}
