//! Unary requests (`Request/request`): the handshake checks and the naming handlers.
//!
//! Order of checks, as Nacos's `GrpcRequestAcceptor`: shutting down, or still loading the
//! snapshot (Nacos: "Server is starting") → 300, so the SDK picks another server rather
//! than read a partial registry; then
//! `ServerCheckRequest` (answered before any registration check, creating the connection
//! entry so that the stream's setup finds the same id) and `HealthCheckRequest` (answered
//! even before setup, which the Rust SDK's handshake order needs, but 301 after the server
//! closed the connection, e.g. for failing detection, so the client reconnects and
//! registers again); then an unknown class →
//! 302; then, when auth is on, a naming request without a valid token, or whose user may
//! not read or write the service it names → 403 (Nacos's `RemoteRequestAuthFilter`; the
//! token is the `accessToken` header of the payload's metadata); then a connection that is
//! not set up → 301; then an unparseable body → 502; then the handler, whose failures are
//! 400 (invalid parameter, named) or 503 (a limit).
//!
//! Writes go to the core as the connection client of the connection (`Node::register`,
//! `register_batch`, `deregister`), inside `Connection::while_registered`, so they cannot
//! race with the connection's close. Persistent instances are refused: they are CP data
//! (Raft in Nacos), which Distro does not replicate.

use crate::answers::{AnswerCache, Encoding, Form};
use crate::nacos::codec::{self, Answer, Envelope, Kind};
use crate::nacos::config::DEFAULT_CACHE_MILLIS;
use crate::nacos::connection::Connection;
use crate::nacos::error::NacosError;
use crate::nacos::message::{
    BatchInstanceRequest, Empty, InstanceDto, InstanceRequest, Reply, ServerCheckBody,
    ServiceListBody, ServiceListRequest, ServiceQueryRequest, SubscribeServiceRequest, TypeBody,
};
use crate::nacos::metrics::Outcome;
use crate::nacos::state::Shared;
use crate::nacos::view::{self, Selection};
use crate::proto::nacos::Payload;
use distro_core::model::{DEFAULT_GROUP, DEFAULT_NAMESPACE, check_cluster_name};
use distro_core::{InstanceSpec, Service, ServiceSpec};
use prost::bytes::Bytes;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

type Handled = Result<Answer, NacosError>;

/// The replies that are always the same, kept as their gRPC frames.
static HEALTH_CHECKED: LazyLock<Bytes> =
    LazyLock::new(|| codec::fixed("HealthCheckResponse", &Reply::ok(Empty {})));
static REGISTERED: LazyLock<Bytes> = LazyLock::new(|| instance_reply("registerInstance"));
static DEREGISTERED: LazyLock<Bytes> = LazyLock::new(|| instance_reply("deregisterInstance"));
static BATCH_REGISTERED: LazyLock<Bytes> = LazyLock::new(|| {
    codec::fixed(
        "BatchInstanceResponse",
        &Reply::ok(TypeBody {
            kind: "batchRegisterInstance",
        }),
    )
});

fn instance_reply(kind: &str) -> Bytes {
    codec::fixed("InstanceResponse", &Reply::ok(TypeBody { kind }))
}

/// Message of the refusal of persistent instances.
pub(crate) const PERSISTENT_REFUSED: &str = "persistent instances are not supported: this \
    server replicates only ephemeral instances with Distro (AP); persistent instances are CP \
    data (Raft in Nacos). Register the instance with ephemeral=true";

/// Answers one unary request; never fails (errors become `ErrorResponse`s).
pub(crate) fn handle_unary(shared: &Shared, addr: Option<SocketAddr>, env: &Envelope) -> Answer {
    let kind = env.kind();
    let result = dispatch(shared, addr, kind, env, env.token.as_deref());
    match result {
        Ok(p) => {
            shared.metrics.request(kind, Outcome::Ok);
            p
        }
        Err(e) => {
            shared.metrics.request(kind, Outcome::of_error(&e));
            tracing::debug!(type_name = env.type_name(), code = e.error_code, message = %e.message,
                "nacos request failed");
            codec::answer("ErrorResponse", &e.body())
        }
    }
}

fn dispatch(
    shared: &Shared,
    addr: Option<SocketAddr>,
    kind: Kind,
    env: &Envelope,
    token: Option<&str>,
) -> Handled {
    if shared.is_shutting_down() {
        return Err(NacosError::shutting_down());
    }
    if !shared.node.is_loaded() {
        return Err(NacosError::starting());
    }
    match kind {
        Kind::ServerCheck => server_check(shared, addr),
        Kind::HealthCheck => health_check(shared, addr),
        Kind::ConnectionSetup | Kind::Response | Kind::Unknown => {
            Err(NacosError::no_handler(env.type_name()))
        }
        Kind::Instance
        | Kind::BatchInstance
        | Kind::PersistentInstance
        | Kind::ServiceQuery
        | Kind::SubscribeService
        | Kind::ServiceList => {
            authorize(shared, kind, env, token)?;
            let conn = addr
                .and_then(|a| shared.connections.get(&a))
                .ok_or_else(NacosError::unregistered)?;
            conn.touch(shared.connections.now_ms());
            conn.while_registered(|| naming(shared, &conn, kind, env))
                .unwrap_or_else(|| Err(NacosError::unregistered()))
        }
    }
}

/// The service a naming request names, for its permission check.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    namespace: Option<String>,
    group_name: Option<String>,
    service_name: Option<String>,
}

/// With auth on: refuses (403) a naming request without a valid `token` or whose user may
/// not read (queries, subscriptions, lists) or write (registrations) its service. A
/// service list names no service: it needs permission on the service `*`.
fn authorize(
    shared: &Shared,
    kind: Kind,
    env: &Envelope,
    token: Option<&str>,
) -> Result<(), NacosError> {
    let Some(auth) = &shared.config.auth else {
        return Ok(());
    };
    let action = match kind {
        Kind::ServiceQuery | Kind::SubscribeService | Kind::ServiceList => {
            crate::auth::Action::Read
        }
        _ => crate::auth::Action::Write,
    };
    let r: Resource = env.parse().unwrap_or(Resource {
        namespace: None,
        group_name: None,
        service_name: None,
    });
    let service = match kind {
        Kind::ServiceList => "*".to_string(),
        _ => r.service_name.unwrap_or_default(),
    };
    auth.authorize(
        token,
        [
            r.namespace.as_deref().unwrap_or_default(),
            r.group_name.as_deref().unwrap_or_default(),
            &service,
        ],
        action,
        shared.now_wall(),
    )
    .map(drop)
    .map_err(|e| NacosError::no_right(e.message))
}

/// Answered before setup too (the Rust SDK checks health before its setup is processed);
/// 301 only when the server closed this address's connection, so the client reconnects.
fn health_check(shared: &Shared, addr: Option<SocketAddr>) -> Handled {
    if let Some(addr) = addr {
        match shared.connections.get(&addr) {
            Some(conn) => conn.touch(shared.connections.now_ms()),
            None if shared.connections.was_closed(&addr) => {
                return Err(NacosError::unregistered());
            }
            None => {}
        }
    }
    Ok(Answer::Fixed(HEALTH_CHECKED.clone()))
}

fn server_check(shared: &Shared, addr: Option<SocketAddr>) -> Handled {
    let addr = addr.ok_or_else(no_peer_address)?;
    let conn = shared
        .connections
        .get_or_create(addr, shared.now_wall(), shared.config.max_connections)
        .map_err(|full| {
            shared.metrics.connection_refused();
            NacosError::over_threshold(connection_limit_message(full.max))
        })?;
    conn.touch(shared.connections.now_ms());
    Ok(codec::answer(
        "ServerCheckResponse",
        &Reply::ok(ServerCheckBody {
            connection_id: conn.id(),
            support_ability_negotiation: true,
        }),
    ))
}

/// The refusal of a connection over `max_connections`.
pub(crate) fn connection_limit_message(max: usize) -> String {
    format!(
        "connection limit reached: this node accepts at most {max} SDK connections \
         (max_connections); connect to another node"
    )
}

fn no_peer_address() -> NacosError {
    NacosError::server("cannot identify the connection: the transport reports no peer address")
}

fn naming(shared: &Shared, conn: &Arc<Connection>, kind: Kind, env: &Envelope) -> Handled {
    match kind {
        Kind::Instance => instance(shared, conn, env),
        Kind::BatchInstance => batch_instance(shared, conn, env),
        Kind::PersistentInstance => Err(NacosError::invalid(PERSISTENT_REFUSED)),
        Kind::ServiceQuery => service_query(shared, env),
        Kind::SubscribeService => subscribe(shared, conn, env),
        Kind::ServiceList => service_list(shared, env),
        _ => Err(NacosError::no_handler(env.type_name())),
    }
}

fn parse<'a, T: serde::Deserialize<'a>>(env: &'a Envelope) -> Result<T, NacosError> {
    env.parse().map_err(NacosError::bad_body)
}

fn service_spec(ns: Option<String>, group: Option<String>, name: Option<String>) -> ServiceSpec {
    ServiceSpec {
        namespace: ns.unwrap_or_default(),
        group: group.unwrap_or_default(),
        name: name.unwrap_or_default(),
    }
}

fn instance_spec(dto: InstanceDto) -> Result<InstanceSpec, NacosError> {
    if dto.ephemeral == Some(false) {
        return Err(NacosError::invalid(PERSISTENT_REFUSED));
    }
    Ok(InstanceSpec {
        ip: dto.ip.unwrap_or_default(),
        port: dto.port.unwrap_or(0),
        weight: dto.weight.unwrap_or(1.0),
        healthy: dto.healthy.unwrap_or(true),
        enabled: dto.enabled.unwrap_or(true),
        cluster: dto.cluster_name.unwrap_or_default(),
        metadata: dto.metadata,
        instance_id: dto.instance_id,
    })
}

fn instance(shared: &Shared, conn: &Connection, env: &Envelope) -> Handled {
    let r: InstanceRequest = parse(env)?;
    let spec = service_spec(r.namespace, r.group_name, r.service_name);
    let now = shared.now_wall();
    let reply = match r.kind.as_deref().unwrap_or("") {
        "registerInstance" => {
            let inst = r.instance.ok_or_else(|| {
                NacosError::invalid("invalid instance: required by registerInstance")
            })?;
            shared
                .node
                .register(&conn.client, &spec, &instance_spec(inst)?, now)?;
            &REGISTERED
        }
        "deregisterInstance" => {
            shared.node.deregister(&conn.client, &spec, now)?;
            &DEREGISTERED
        }
        other => {
            return Err(NacosError::invalid(format!(
                "Unsupported request type {other:?}: InstanceRequest takes registerInstance or \
                 deregisterInstance"
            )));
        }
    };
    Ok(Answer::Fixed(Bytes::clone(reply)))
}

fn batch_instance(shared: &Shared, conn: &Connection, env: &Envelope) -> Handled {
    let r: BatchInstanceRequest = parse(env)?;
    let kind = r.kind.as_deref().unwrap_or("");
    if kind != "batchRegisterInstance" {
        return Err(NacosError::invalid(format!(
            "Unsupported request type {kind:?}: BatchInstanceRequest takes batchRegisterInstance \
             (deregister by registering the instances that remain)"
        )));
    }
    let spec = service_spec(r.namespace, r.group_name, r.service_name);
    let instances = r
        .instances
        .unwrap_or_default()
        .into_iter()
        .map(instance_spec)
        .collect::<Result<Vec<_>, _>>()?;
    shared
        .node
        .register_batch(&conn.client, &spec, &instances, shared.now_wall())?;
    Ok(Answer::Fixed(BATCH_REGISTERED.clone()))
}

fn service_query(shared: &Shared, env: &Envelope) -> Handled {
    let r: ServiceQueryRequest = parse(env)?;
    let spec = service_spec(r.namespace, r.group_name, r.service_name);
    let (ns, group, name) = spec.resolve()?;
    let clusters = r.cluster.unwrap_or_default();
    check_clusters(&clusters)?;
    let key = Service::key_of(ns, group, name);
    let healthy_only = r.healthy_only.unwrap_or(false);
    let head = service_info_head(shared, &key, (ns, group, name), &clusters, healthy_only);
    let last_ref_time = shared.hub.subscribers.ref_time(&key, shared.now_wall());
    Ok(service_info_reply(
        "QueryServiceResponse",
        false,
        &head,
        last_ref_time,
    ))
}

/// The cached `ServiceInfo` head (see `view::service_info_head`) of service `key` for a
/// cluster filter and the healthy-only flag, rendered from the registry when not cached.
pub(crate) fn service_info_head(
    shared: &Shared,
    key: &str,
    (ns, group, name): (&str, &str, &str),
    clusters: &str,
    healthy_only: bool,
) -> Bytes {
    let form = Form {
        encoding: Encoding::NacosJson,
        clusters,
        healthy_only,
    };
    shared.answers.get(key, form, || {
        Bytes::from(render_head(
            &shared.node,
            (ns, group, name),
            clusters,
            healthy_only,
            shared.config.cache_millis,
            shared.timings,
        ))
    })
}

/// A `QueryServiceResponse` or `SubscribeServiceResponse` (`with_message`: `"message":
/// "success"`, as Nacos sets on the latter) around a `ServiceInfo` head, stamped
/// `last_ref_time`: the JSON `Reply::ok(ServiceInfoBody { .. })` gives.
fn service_info_reply(
    type_name: &'static str,
    with_message: bool,
    head: &[u8],
    last_ref_time: u64,
) -> Answer {
    let mut v = Vec::with_capacity(head.len() + 192);
    v.extend_from_slice(br#"{"resultCode":200,"errorCode":0,"#);
    if with_message {
        v.extend_from_slice(br#""message":"success","#);
    }
    v.extend_from_slice(br#""serviceInfo":"#);
    view::finish_service_info(head, last_ref_time, &mut v);
    v.extend_from_slice(br#","success":true}"#);
    Answer::Json(type_name, v)
}

fn check_clusters(clusters: &str) -> Result<(), NacosError> {
    for c in view::cluster_list(clusters) {
        check_cluster_name(c)?;
    }
    Ok(())
}

fn subscribe(shared: &Shared, conn: &Arc<Connection>, env: &Envelope) -> Handled {
    let r: SubscribeServiceRequest = parse(env)?;
    let spec = service_spec(r.namespace, r.group_name, r.service_name);
    let (ns, group, name) = spec.resolve()?;
    let clusters = r.clusters.unwrap_or_default();
    check_clusters(&clusters)?;
    let key: Arc<str> = Service::key_of(ns, group, name).into();
    let hub = &shared.hub;
    if r.subscribe.unwrap_or(false) {
        let max = shared.config.max_subscriptions_per_connection;
        let added = conn.add_subscription(&key, max).map_err(|n| {
            NacosError::over_threshold(format!(
                "subscription limit reached: this connection already subscribes to {n} \
                 services, the limit is {max} (max_subscriptions_per_connection)"
            ))
        })?;
        let changed = hub
            .subscribers
            .subscribe(&key, (ns, group, name), conn, &clusters);
        if added || changed {
            hub.push_to(key.clone(), conn.serial);
        }
    } else {
        conn.remove_subscription(&key);
        hub.subscribers.unsubscribe(&key, conn.serial);
    }
    let head = service_info_head(shared, &key, (ns, group, name), &clusters, false);
    let last_ref_time = hub.subscribers.ref_time(&key, shared.now_wall());
    Ok(service_info_reply(
        "SubscribeServiceResponse",
        true,
        &head,
        last_ref_time,
    ))
}

/// Default page size of `ServiceListRequest` when none is given.
const DEFAULT_PAGE_SIZE: i64 = 10;

fn service_list(shared: &Shared, env: &Envelope) -> Handled {
    let r: ServiceListRequest = parse(env)?;
    let ns = r
        .namespace
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let group = r
        .group_name
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_GROUP.to_string());
    let page_size = r.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if page_size < 0 {
        return Err(NacosError::invalid(format!(
            "invalid pageSize: {page_size} is negative"
        )));
    }
    let services = shared.node.registry().services(&ns, Some(&group));
    let names: Vec<&str> = services.iter().map(|s| s.name().as_str()).collect();
    let page = page(&names, r.page_no.unwrap_or(1), page_size);
    Ok(codec::answer(
        "ServiceListResponse",
        &Reply::ok_with_message(ServiceListBody {
            count: names.len(),
            service_names: page.to_vec(),
        }),
    ))
}

/// Page `page_no` (1-based; smaller reads as 1) of `page_size` items, as Nacos's
/// `ServiceUtil.pageServiceName`.
fn page<T>(items: &[T], page_no: i64, page_size: i64) -> &[T] {
    let page_no = page_no.max(1);
    let size = page_size.max(0);
    let start = (page_no - 1).saturating_mul(size);
    let len = items.len() as i64;
    if start >= len {
        return &[];
    }
    let end = start.saturating_add(size).min(len);
    &items[start as usize..end as usize]
}

/// Decodes an `InstanceRequest` JSON body into the service and instance a registration
/// would use (the front end's decode path, exposed for benchmarks and tools).
pub fn decode_instance_request(json: &[u8]) -> Result<(ServiceSpec, InstanceSpec), String> {
    let r: InstanceRequest = codec::from_json(json)?;
    let spec = service_spec(r.namespace, r.group_name, r.service_name);
    let instance =
        instance_spec(r.instance.ok_or("instance: is required")?).map_err(|e| e.message)?;
    Ok((spec, instance))
}

/// Encodes the `QueryServiceResponse` payload a `ServiceQueryRequest` for `service`
/// (all clusters) gets from `node` when its answer is not cached: the registry read, the
/// rendering and the reply (the front end's encode path, exposed for benchmarks).
pub fn encode_query_response(
    node: &distro_core::Node,
    service: &ServiceSpec,
    last_ref_time: u64,
) -> Payload {
    let Ok((ns, group, name)) = service.resolve() else {
        return codec::encode("ErrorResponse", &Reply::ok(Empty {}));
    };
    let head = render_head(
        node,
        (ns, group, name),
        "",
        false,
        DEFAULT_CACHE_MILLIS,
        view::Timings::of(node.config()),
    );
    service_info_reply("QueryServiceResponse", false, &head, last_ref_time).into_payload()
}

/// [`encode_query_response`] through an answer cache (listening to `node`'s registry):
/// after the first call for an unchanged service, the reply around kept bytes.
pub fn encode_query_response_cached(
    cache: &AnswerCache,
    node: &distro_core::Node,
    service: &ServiceSpec,
    last_ref_time: u64,
) -> Payload {
    let Ok((ns, group, name)) = service.resolve() else {
        return codec::encode("ErrorResponse", &Reply::ok(Empty {}));
    };
    let key = Service::key_of(ns, group, name);
    let form = Form {
        encoding: Encoding::NacosJson,
        clusters: "",
        healthy_only: false,
    };
    let head = cache.get(&key, form, || {
        Bytes::from(render_head(
            node,
            (ns, group, name),
            "",
            false,
            DEFAULT_CACHE_MILLIS,
            view::Timings::of(node.config()),
        ))
    });
    service_info_reply("QueryServiceResponse", false, &head, last_ref_time).into_payload()
}

/// Reads service `(ns, group, name)` from `node` and renders its `ServiceInfo` head.
fn render_head(
    node: &distro_core::Node,
    (ns, group, name): (&str, &str, &str),
    clusters: &str,
    healthy_only: bool,
    cache_millis: u64,
    timings: view::Timings,
) -> Vec<u8> {
    let view = node.registry().query(ns, group, name);
    let grouped = format!("{group}@@{name}");
    view::service_info_head(
        view.as_ref(),
        Selection {
            group,
            name,
            grouped: &grouped,
            clusters,
            healthy_only,
        },
        cache_millis,
        timings,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nacos::message::ServiceInfoBody;

    #[test]
    fn service_info_replies_are_what_serde_writes() {
        let node = distro_core::Node::new(
            distro_core::Config::default(),
            distro_core::MemberList::new("127.0.0.1:8848", &[]).unwrap(),
            1,
        )
        .unwrap();
        let spec = ServiceSpec::new("", "", "demo");
        let c = distro_core::ClientId::connection(1, "10.0.0.1", 1);
        node.register(&c, &spec, &InstanceSpec::new("10.0.0.7", 80), 1)
            .unwrap();
        let view = node.query(&spec).unwrap();
        let sel = Selection {
            group: "DEFAULT_GROUP",
            name: "demo",
            grouped: "DEFAULT_GROUP@@demo",
            clusters: "",
            healthy_only: false,
        };
        let t = view::Timings::of(node.config());
        let info = view::service_info(view.as_ref(), sel, 9, 10, t);
        let head = view::service_info_head(view.as_ref(), sel, 10, t);
        let body = |p: Payload| String::from_utf8(p.body.unwrap().value).unwrap();
        let answer = |a: Answer| body(a.into_payload());
        let want = codec::encode(
            "Q",
            &Reply::ok(ServiceInfoBody {
                service_info: &info,
            }),
        );
        assert_eq!(answer(service_info_reply("Q", false, &head, 9)), body(want));
        let want = codec::encode(
            "S",
            &Reply::ok_with_message(ServiceInfoBody {
                service_info: &info,
            }),
        );
        assert_eq!(answer(service_info_reply("S", true, &head, 9)), body(want));
    }

    #[test]
    fn fixed_replies_are_what_serde_writes() {
        let same = |fixed: &Bytes, want: Payload| {
            assert_eq!(Answer::Fixed(fixed.clone()).into_payload(), want);
        };
        same(
            &HEALTH_CHECKED,
            codec::encode("HealthCheckResponse", &Reply::ok(Empty {})),
        );
        for (fixed, kind) in [
            (&REGISTERED, "registerInstance"),
            (&DEREGISTERED, "deregisterInstance"),
        ] {
            let want = codec::encode("InstanceResponse", &Reply::ok(TypeBody { kind }));
            same(fixed, want);
        }
        let kind = "batchRegisterInstance";
        let want = codec::encode("BatchInstanceResponse", &Reply::ok(TypeBody { kind }));
        same(&BATCH_REGISTERED, want);
    }

    #[test]
    fn paging_as_nacos() {
        let v = [1, 2, 3, 4, 5];
        assert_eq!(page(&v, 1, 2), &[1, 2]);
        assert_eq!(page(&v, 3, 2), &[5]);
        assert!(page(&v, 4, 2).is_empty());
        assert_eq!(page(&v, 0, 2), &[1, 2], "page 0 reads as page 1");
        assert!(page(&v, 1, 0).is_empty());
        assert!(page(&v, i64::MAX, i64::MAX).is_empty(), "no overflow");
    }

    #[test]
    fn non_ephemeral_instances_are_refused() {
        let dto = InstanceDto {
            ephemeral: Some(false),
            ..InstanceDto::default()
        };
        let e = instance_spec(dto).unwrap_err();
        assert_eq!(e.error_code, 400);
        assert!(e.message.contains("ephemeral"));
        let spec = instance_spec(InstanceDto::default()).unwrap();
        assert_eq!((spec.weight, spec.healthy, spec.enabled), (1.0, true, true));
    }
}
