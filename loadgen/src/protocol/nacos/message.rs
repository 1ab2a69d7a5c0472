//! The JSON bodies loadgen sends and reads (reference §4.4–4.8), written as the Java SDK
//! writes them: camelCase fields, `"headers":{}` (headers travel in `metadata`), the
//! request's `module`, nulls omitted.
//!
//! Requests are built once into a [`Prepared`] (an encoded payload plus the response class
//! it expects) and sent as often as needed. Replies are read with borrowed, partial
//! structs: only what a load generator checks (`resultCode`, `errorCode`, `message`, the
//! hosts of a `serviceInfo`); `head.rs` reads the first three without parsing the rest.

use super::wire::Encoded;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The namespace Java SDKs send when none is configured.
pub const DEFAULT_NAMESPACE: &str = "public";
/// The default group.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// The default cluster name.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";

/// A service: namespace, group and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceName {
    /// Namespace id (`public` by default).
    pub namespace: String,
    /// Group (`DEFAULT_GROUP` by default).
    pub group: String,
    /// Service name.
    pub name: String,
}

impl ServiceName {
    /// `name` in the default namespace and group.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            group: DEFAULT_GROUP.to_owned(),
            name: name.into(),
        }
    }
}

/// An ephemeral instance, as registered.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// IP address (any string the server accepts as an IP).
    pub ip: String,
    /// Port, 1..=65535.
    pub port: u16,
    /// Weight (1.0 by default).
    pub weight: f64,
    /// Cluster name (`DEFAULT` by default).
    pub cluster: String,
    /// Metadata key/value pairs.
    pub metadata: Vec<(String, String)>,
}

impl Instance {
    /// `ip:port` in the default cluster, weight 1, no metadata.
    pub fn new(ip: impl Into<String>, port: u16) -> Self {
        Self {
            ip: ip.into(),
            port,
            weight: 1.0,
            cluster: DEFAULT_CLUSTER.to_owned(),
            metadata: Vec::new(),
        }
    }
}

/// A request ready to send: its encoded payload and the response class it expects.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) payload: Encoded,
    pub(crate) expect: &'static str,
}

impl Prepared {
    /// The response class (`metadata.type`) a success carries.
    pub fn expects(&self) -> &'static str {
        self.expect
    }

    /// The encoded payload.
    pub fn payload(&self) -> &Encoded {
        &self.payload
    }
}

/// Builds [`Prepared`] requests that carry one `metadata.clientIp`.
#[derive(Debug, Clone)]
pub struct Requests {
    client_ip: String,
}

#[derive(Serialize)]
struct NoHeaders {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InternalBody {
    headers: NoHeaders,
    module: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SetupBody<'a> {
    headers: NoHeaders,
    client_version: &'a str,
    labels: Labels<'a>,
    ability_table: NoHeaders,
    tenant: &'a str,
    module: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Labels<'a> {
    source: &'static str,
    module: &'static str,
    #[serde(rename = "AppName")]
    app_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceJson<'a> {
    ip: &'a str,
    port: u16,
    weight: f64,
    healthy: bool,
    enabled: bool,
    ephemeral: bool,
    cluster_name: &'a str,
    #[serde(serialize_with = "pairs_as_map")]
    metadata: &'a [(String, String)],
}

fn pairs_as_map<S: serde::Serializer>(v: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(k, v)| (k, v)))
}

impl<'a> From<&'a Instance> for InstanceJson<'a> {
    fn from(i: &'a Instance) -> Self {
        InstanceJson {
            ip: &i.ip,
            port: i.port,
            weight: i.weight,
            healthy: true,
            enabled: true,
            ephemeral: true,
            cluster_name: &i.cluster,
            metadata: &i.metadata,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceBody<'a> {
    headers: NoHeaders,
    namespace: &'a str,
    service_name: &'a str,
    group_name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<InstanceJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<Vec<InstanceJson<'a>>>,
    module: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueryBody<'a> {
    headers: NoHeaders,
    namespace: &'a str,
    service_name: &'a str,
    group_name: &'a str,
    cluster: &'a str,
    healthy_only: bool,
    udp_port: u16,
    module: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscribeBody<'a> {
    headers: NoHeaders,
    namespace: &'a str,
    service_name: &'a str,
    group_name: &'a str,
    subscribe: bool,
    clusters: &'a str,
    module: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceListBody<'a> {
    headers: NoHeaders,
    namespace: &'a str,
    service_name: &'static str,
    group_name: &'a str,
    page_no: u32,
    page_size: u32,
    module: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckBody<'a> {
    result_code: i32,
    error_code: i32,
    message: &'static str,
    request_id: &'a str,
    success: bool,
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own structs of strings, numbers and string maps always serialize.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Requests {
    /// Requests whose `metadata.clientIp` is `client_ip` (the SDK's local address).
    pub fn new(client_ip: impl Into<String>) -> Self {
        Self {
            client_ip: client_ip.into(),
        }
    }

    fn prepared(&self, type_name: &str, body: Vec<u8>, expect: &'static str) -> Prepared {
        Prepared {
            payload: Encoded::new(type_name, &self.client_ip, body),
            expect,
        }
    }

    /// `ServerCheckRequest` (the first call of the Java handshake).
    pub fn server_check(&self) -> Prepared {
        let body = json(&InternalBody {
            headers: NoHeaders {},
            module: "internal",
        });
        self.prepared("ServerCheckRequest", body, "ServerCheckResponse")
    }

    /// `HealthCheckRequest` (the SDK's keep-alive).
    pub fn health_check(&self) -> Prepared {
        let body = json(&InternalBody {
            headers: NoHeaders {},
            module: "internal",
        });
        self.prepared("HealthCheckRequest", body, "HealthCheckResponse")
    }

    /// `ConnectionSetupRequest` as Java SDKs ≥ 2.3 send it on the bi-stream (with an
    /// `abilityTable`, so a 2.3+ server answers with `SetupAckRequest`).
    pub fn connection_setup(&self, client_version: &str, app_name: &str, tenant: &str) -> Encoded {
        let body = json(&SetupBody {
            headers: NoHeaders {},
            client_version,
            labels: Labels {
                source: "sdk",
                module: "naming",
                app_name,
            },
            ability_table: NoHeaders {},
            tenant,
            module: "internal",
        });
        Encoded::new("ConnectionSetupRequest", &self.client_ip, body)
    }

    fn instance_body(
        &self,
        service: &ServiceName,
        kind: &'static str,
        instance: Option<InstanceJson<'_>>,
        instances: Option<Vec<InstanceJson<'_>>>,
    ) -> Vec<u8> {
        json(&InstanceBody {
            headers: NoHeaders {},
            namespace: &service.namespace,
            service_name: &service.name,
            group_name: &service.group,
            kind,
            instance,
            instances,
            module: "naming",
        })
    }

    /// `InstanceRequest{type: registerInstance}`.
    pub fn register(&self, service: &ServiceName, instance: &Instance) -> Prepared {
        let body = self.instance_body(service, "registerInstance", Some(instance.into()), None);
        self.prepared("InstanceRequest", body, "InstanceResponse")
    }

    /// `InstanceRequest{type: deregisterInstance}` (the server removes what this
    /// connection published for the service).
    pub fn deregister(&self, service: &ServiceName, instance: &Instance) -> Prepared {
        let body = self.instance_body(service, "deregisterInstance", Some(instance.into()), None);
        self.prepared("InstanceRequest", body, "InstanceResponse")
    }

    /// `BatchInstanceRequest{type: batchRegisterInstance}`: replaces what this connection
    /// published for the service with `instances`.
    pub fn batch_register(&self, service: &ServiceName, instances: &[Instance]) -> Prepared {
        let list = instances.iter().map(InstanceJson::from).collect();
        let body = self.instance_body(service, "batchRegisterInstance", None, Some(list));
        self.prepared("BatchInstanceRequest", body, "BatchInstanceResponse")
    }

    /// `ServiceQueryRequest` (read only; `cluster` empty for all clusters).
    pub fn query(&self, service: &ServiceName, cluster: &str, healthy_only: bool) -> Prepared {
        let body = json(&QueryBody {
            headers: NoHeaders {},
            namespace: &service.namespace,
            service_name: &service.name,
            group_name: &service.group,
            cluster,
            healthy_only,
            udp_port: 0,
            module: "naming",
        });
        self.prepared("ServiceQueryRequest", body, "QueryServiceResponse")
    }

    fn subscription(&self, service: &ServiceName, subscribe: bool, clusters: &str) -> Prepared {
        let body = json(&SubscribeBody {
            headers: NoHeaders {},
            namespace: &service.namespace,
            service_name: &service.name,
            group_name: &service.group,
            subscribe,
            clusters,
            module: "naming",
        });
        self.prepared("SubscribeServiceRequest", body, "SubscribeServiceResponse")
    }

    /// `SubscribeServiceRequest{subscribe: true}`; pushes follow on the bi-stream.
    pub fn subscribe(&self, service: &ServiceName, clusters: &str) -> Prepared {
        self.subscription(service, true, clusters)
    }

    /// `SubscribeServiceRequest{subscribe: false}`.
    pub fn unsubscribe(&self, service: &ServiceName) -> Prepared {
        self.subscription(service, false, "")
    }

    /// `ServiceListRequest` (one page of the group's service names).
    pub fn service_list(
        &self,
        namespace: &str,
        group: &str,
        page_no: u32,
        page_size: u32,
    ) -> Prepared {
        let body = json(&ServiceListBody {
            headers: NoHeaders {},
            namespace,
            service_name: "",
            group_name: group,
            page_no,
            page_size,
            module: "naming",
        });
        self.prepared("ServiceListRequest", body, "ServiceListResponse")
    }

    /// A client's answer on the bi-stream to a server request with `request_id`
    /// (`NotifySubscriberResponse`, `ClientDetectionResponse`, `ConnectResetResponse`).
    pub fn ack(&self, response_type: &str, request_id: &str) -> Encoded {
        let body = json(&AckBody {
            result_code: 200,
            error_code: 0,
            message: "Response ok",
            request_id,
            success: true,
        });
        Encoded::new(response_type, &self.client_ip, body)
    }
}

/// The fields every response has (reference §4.4).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Head<'a> {
    #[serde(default = "ok_code")]
    pub(crate) result_code: i32,
    #[serde(default)]
    pub(crate) error_code: i32,
    #[serde(default, borrow)]
    pub(crate) message: Option<Cow<'a, str>>,
}

fn ok_code() -> i32 {
    200
}

/// `ServerCheckResponse`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerCheck {
    #[serde(default)]
    pub(crate) connection_id: Option<String>,
    #[serde(default)]
    pub(crate) support_ability_negotiation: bool,
}

/// A server→client request's `requestId`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServerRequestHead<'a> {
    #[serde(default, borrow)]
    pub(crate) request_id: Option<Cow<'a, str>>,
}

/// One host of a `serviceInfo`, as far as loadgen reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Host<'a> {
    /// IP address.
    #[serde(borrow)]
    pub ip: Cow<'a, str>,
    /// Port.
    pub port: u16,
}

/// A `serviceInfo` (of a query, a subscription or a push), as far as loadgen reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInfo<'a> {
    /// Service name (without the group).
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    /// Group.
    #[serde(default, borrow)]
    pub group_name: Cow<'a, str>,
    /// Server's version of the view (strictly increasing per service).
    #[serde(default)]
    pub last_ref_time: i64,
    /// The instances.
    #[serde(default, borrow)]
    pub hosts: Vec<Host<'a>>,
}

impl ServiceInfo<'_> {
    /// Whether `ip:port` is among the hosts.
    pub fn contains(&self, ip: &str, port: u16) -> bool {
        self.hosts.iter().any(|h| h.port == port && h.ip == ip)
    }
}

/// The body of a reply or push that carries a `serviceInfo`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WithServiceInfo<'a> {
    #[serde(default, borrow)]
    pub(crate) service_info: Option<ServiceInfo<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::nacos::wire::Incoming;
    use prost::Message;
    use serde_json::{Value, json};

    fn body_of(p: &Encoded) -> (String, Value) {
        let i = Incoming::decode(p.as_bytes()).expect("decodes");
        (
            i.type_str().into_owned(),
            serde_json::from_slice(&i.body()).expect("json"),
        )
    }

    #[test]
    fn register_is_shaped_as_the_java_sdk_sends_it() {
        let r = Requests::new("127.0.0.2");
        let mut inst = Instance::new("10.0.0.7", 8080);
        inst.metadata.push(("zone".into(), "a".into()));
        let p = r.register(&ServiceName::new("demo-svc"), &inst);
        assert_eq!(p.expects(), "InstanceResponse");
        let (t, v) = body_of(&p.payload);
        assert_eq!(t, "InstanceRequest");
        assert_eq!(
            v,
            json!({"headers":{},"namespace":"public","serviceName":"demo-svc",
                "groupName":"DEFAULT_GROUP","type":"registerInstance",
                "instance":{"ip":"10.0.0.7","port":8080,"weight":1.0,"healthy":true,
                    "enabled":true,"ephemeral":true,"clusterName":"DEFAULT",
                    "metadata":{"zone":"a"}},"module":"naming"})
        );
        let b = r.batch_register(&ServiceName::new("s"), &[inst.clone(), inst]);
        let (t, v) = body_of(&b.payload);
        assert_eq!(t, "BatchInstanceRequest");
        assert_eq!(v["type"], "batchRegisterInstance");
        assert_eq!(v["instances"].as_array().map(Vec::len), Some(2));
        assert!(v.get("instance").is_none());
    }

    #[test]
    fn setup_query_subscribe_and_ack_shapes() {
        let r = Requests::new("127.0.0.2");
        let (t, v) = body_of(&r.connection_setup("v", "app", "public"));
        assert_eq!(t, "ConnectionSetupRequest");
        assert_eq!(
            v,
            json!({"headers":{},"clientVersion":"v","labels":{"source":"sdk","module":"naming",
                "AppName":"app"},"abilityTable":{},"tenant":"public","module":"internal"})
        );
        let (_, v) = body_of(&r.query(&ServiceName::new("s"), "", false).payload);
        assert_eq!(v["healthyOnly"], false);
        assert_eq!(v["cluster"], "");
        let (_, v) = body_of(&r.unsubscribe(&ServiceName::new("s")).payload);
        assert_eq!(v["subscribe"], false);
        let (t, v) = body_of(&r.ack("NotifySubscriberResponse", "42"));
        assert_eq!(t, "NotifySubscriberResponse");
        assert_eq!(v["requestId"], "42");
        assert_eq!(v["resultCode"], 200);
    }

    #[test]
    fn service_info_reads_hosts() {
        let body = br#"{"serviceInfo":{"name":"s","groupName":"g","clusters":"","lastRefTime":7,
            "hosts":[{"ip":"10.0.0.1","port":1,"weight":1.0,"metadata":{}}]},"requestId":"3"}"#;
        let w: WithServiceInfo<'_> = serde_json::from_slice(body).expect("parses");
        let info = w.service_info.expect("present");
        assert!(info.contains("10.0.0.1", 1));
        assert!(!info.contains("10.0.0.1", 2));
        assert_eq!(info.last_ref_time, 7);
        let h: ServerRequestHead<'_> = serde_json::from_slice(body).expect("parses");
        assert_eq!(h.request_id.as_deref(), Some("3"));
    }
}
