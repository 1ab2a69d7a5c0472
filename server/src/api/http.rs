//! The HTTP API on the main port: Nacos Open API v1 (naming), `/metrics`, `/health`.
//!
//! Parameters come from the query string or a form body, as Nacos reads them, with the
//! names and defaults of nacos-reference §6. Writes and heartbeats name an `ip:port` and
//! go to its owner through [`crate::cluster::forward`] (Nacos's `DistroFilter`, with its loop guard);
//! reads are answered locally. Errors are plain text naming the parameter and the reason,
//! with status 400 for bad input and 503 for retryable conditions (owner unreachable,
//! divergent member views).
//!
//! With auth on ([`crate::auth`]), the login endpoints issue tokens, and every request
//! under `/nacos/v1/ns/` needs one (the `accessToken` parameter or header) whose user may
//! read (`GET`) or write (other methods) the service named by `namespaceId`, `groupName`
//! and `serviceName` (a service list: the service `*`); otherwise 403 and the reason, as
//! Nacos's `AuthFilter`. `/health` and `/metrics` stay open.

use crate::answers::{AnswerCache, Encoding, Form};
use crate::auth::{Action, Auth, TOKEN_PARAM};
use crate::clock::Clock;
use crate::cluster::forward::{Forwarder, Item, ItemResult, Target, code};
use crate::metrics::{Metrics, Outcome, Page};
use crate::nacos::NacosFrontend;
use crate::nacos::view::{
    Selection, Timings, cluster_list, finish_service_info, service_info_head,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use distro_core::Service;
use distro_core::model::{DEFAULT_GROUP, GROUP_SEPARATOR, InstanceSpec, ServiceSpec};
use distro_core::registry::QueryFilter;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest page of `GET /nacos/v1/ns/service/list`.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Nacos's "beat accepted" code.
const BEAT_OK: i32 = 10200;
/// Nacos's `RESOURCE_NOT_FOUND` beat code: the client must register again.
const BEAT_NOT_FOUND: i32 = 20404;

/// What the HTTP handlers share.
pub struct HttpState {
    /// Writes and routing.
    pub forwarder: Arc<Forwarder>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Wall clock.
    pub clock: Clock,
    /// The Nacos front end, for its metrics.
    pub nacos: Option<Arc<NacosFrontend>>,
    /// Rendered `instance/list` answers (the Nacos front end's cache: one registry listener
    /// for both).
    pub answers: Arc<AnswerCache>,
    /// Authentication of requests (`None`: off).
    pub auth: Option<Arc<Auth>>,
    /// The `/metrics` page (of the node, `metrics` and `nacos`).
    pub page: Page,
}

/// The router of the main port.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route(
            "/nacos/v1/ns/instance",
            get(instance_detail)
                .post(register)
                .put(register)
                .delete(deregister),
        )
        .route("/nacos/v1/ns/instance/beat", axum::routing::put(beat))
        .route("/nacos/v1/ns/instance/list", get(instance_list))
        .route("/nacos/v1/ns/service/list", get(service_list))
        .route("/nacos/v1/auth/login", axum::routing::post(login))
        .route("/nacos/v1/auth/users/login", axum::routing::post(login))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An HTTP error: status and plain-text message.
#[derive(Debug)]
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> HttpError {
    HttpError(StatusCode::BAD_REQUEST, msg.into())
}

/// Request parameters: the query string, then a form body.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(query: Option<String>, body: &Bytes) -> Result<Self, HttpError> {
        let mut map = HashMap::new();
        if let Some(q) = query {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&q)
                .map_err(|e| bad(format!("malformed query string: {e}")))?;
            for (k, v) in pairs {
                map.entry(k).or_insert(v);
            }
        }
        if !body.is_empty() {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
                bad(format!(
                    "malformed form body (expected application/x-www-form-urlencoded): {e}"
                ))
            })?;
            for (k, v) in pairs {
                map.entry(k).or_insert(v);
            }
        }
        Ok(Params(map))
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn required(&self, k: &str) -> Result<&str, HttpError> {
        self.get(k)
            .ok_or_else(|| bad(format!("invalid {k}: the parameter is required")))
    }

    fn or<'a>(&'a self, k: &str, default: &'a str) -> &'a str {
        self.get(k).unwrap_or(default)
    }

    fn bool(&self, k: &str, default: bool) -> Result<bool, HttpError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(format!("invalid {k}: {v:?} is not true or false"))),
        }
    }

    fn number<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, HttpError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("invalid {k}: {v:?} is not a number"))),
        }
    }

    /// The service named by `serviceName` (maybe `group@@name`), `groupName`, `namespaceId`.
    fn service(&self) -> Result<ServiceSpec, HttpError> {
        let name = self.required("serviceName")?;
        let mut group = self.or("groupName", "").to_string();
        let mut name = name.to_string();
        if let Some((g, n)) = name.split_once(GROUP_SEPARATOR)
            && (group.is_empty() || group == g)
        {
            group = g.to_string();
            name = n.to_string();
        }
        let s = ServiceSpec {
            namespace: self.or("namespaceId", "").to_string(),
            group,
            name,
        };
        s.resolve().map_err(|e| bad(e.to_string()))?;
        Ok(s)
    }

    fn port(&self) -> Result<u32, HttpError> {
        let p: i64 = self
            .number("port")?
            .ok_or_else(|| bad("invalid port: the parameter is required"))?;
        u32::try_from(p)
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| bad(format!("invalid port: {p} is outside 1..=65535")))
    }

    /// The cluster named by `clusterName` or `cluster`.
    fn cluster(&self) -> &str {
        self.get("clusterName")
            .or(self.get("cluster"))
            .unwrap_or_default()
    }

    /// The instance a deregistration or a heartbeat names by `ip`, `port` and cluster.
    fn target(&self) -> Result<Target, HttpError> {
        Ok(Target {
            ip: self.required("ip")?.to_string(),
            port: self.port()?,
            cluster: self.cluster().to_string(),
        })
    }
}

/// Metadata pairs in key order, as the core takes them.
fn sorted(m: HashMap<String, String>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = m.into_iter().collect();
    v.sort_unstable();
    v
}

/// Parses Nacos metadata: a JSON object, or `k=v,k2=v2` (pairs in key order).
fn parse_metadata(s: &str) -> Result<Vec<(String, String)>, HttpError> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(Vec::new());
    }
    if t.starts_with('{') {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(t)
            .map_err(|e| bad(format!("invalid metadata: not a JSON object: {e}")))?;
        return Ok(sorted(
            v.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect(),
        ));
    }
    let mut m = HashMap::new();
    for pair in t.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("invalid metadata: {pair:?} is not key=value")))?;
        m.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(sorted(m))
}

fn check_ephemeral(p: &Params) -> Result<(), HttpError> {
    if !p.bool("ephemeral", true)? {
        return Err(bad(
            "invalid ephemeral: persistent instances are not Distro data and are not supported by distro",
        ));
    }
    Ok(())
}

fn item_error(r: &ItemResult) -> HttpError {
    let status = match r.code {
        code::INVALID => StatusCode::BAD_REQUEST,
        code::NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    HttpError(status, r.message.clone())
}

async fn one(state: &HttpState, item: Item) -> ItemResult {
    state
        .forwarder
        .apply(vec![item])
        .await
        .pop()
        .unwrap_or_else(|| ItemResult {
            code: code::UNAVAILABLE,
            message: "no result".into(),
        })
}

fn observe(state: &HttpState, op: &'static str, start: Instant, r: &Result<Response, HttpError>) {
    let outcome = match r {
        Ok(_) => Outcome::Ok,
        Err(HttpError(s, _)) if *s == StatusCode::BAD_REQUEST => Outcome::Invalid,
        Err(HttpError(s, _)) if *s == StatusCode::NOT_FOUND => Outcome::NotFound,
        Err(HttpError(s, _)) if *s == StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
        Err(_) => Outcome::Error,
    };
    state.metrics.observe("http", op, outcome, start.elapsed());
}

fn finish(
    state: &HttpState,
    op: &'static str,
    start: Instant,
    r: Result<Response, HttpError>,
) -> Response {
    observe(state, op, start, &r);
    match r {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn register(
    State(state): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = async {
        let p = Params::parse(q, &body)?;
        check_ephemeral(&p)?;
        let instance = InstanceSpec {
            ip: p.required("ip")?.to_string(),
            port: i64::from(p.port()?),
            weight: p.number("weight")?.unwrap_or(1.0),
            healthy: p.bool("healthy", true)?,
            enabled: match p.get("enabled") {
                Some(_) => p.bool("enabled", true)?,
                None => p.bool("enable", true)?,
            },
            cluster: p.cluster().to_string(),
            metadata: parse_metadata(p.or("metadata", ""))?,
            instance_id: p.get("instanceId").map(str::to_string),
        };
        let item = Item::Register(p.service()?, instance);
        let r = one(&state, item).await;
        if r.code != code::OK {
            return Err(item_error(&r));
        }
        Ok("ok".into_response())
    }
    .await;
    finish(&state, "register", start, r)
}

async fn deregister(
    State(state): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = async {
        let p = Params::parse(q, &body)?;
        check_ephemeral(&p)?;
        let target = p.target()?;
        let item = Item::Deregister(p.service()?, target);
        let r = one(&state, item).await;
        if r.code != code::OK {
            return Err(item_error(&r));
        }
        Ok("ok".into_response())
    }
    .await;
    finish(&state, "deregister", start, r)
}

/// The `beat` parameter of a heartbeat (Nacos's `RsInfo`).
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RsInfo {
    ip: String,
    port: i64,
    cluster: String,
    weight: Option<f64>,
    metadata: HashMap<String, String>,
    ephemeral: Option<bool>,
}

fn beat_json(code: i32, state: &HttpState) -> Response {
    let interval = state.forwarder.node().config().heartbeat_interval;
    axum::Json(serde_json::json!({
        "clientBeatInterval": interval,
        "code": code,
        "lightBeatEnabled": true,
    }))
    .into_response()
}

async fn beat(State(state): State<Arc<HttpState>>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let start = Instant::now();
    let r = async {
        let p = Params::parse(q, &body)?;
        let service = p.service()?;
        let info: Option<RsInfo> = match p.get("beat") {
            Some(b) => Some(
                serde_json::from_str(b)
                    .map_err(|e| bad(format!("invalid beat: not a beat JSON object: {e}")))?,
            ),
            None => None,
        };
        if info.as_ref().and_then(|i| i.ephemeral) == Some(false) {
            return Err(bad(
                "invalid beat: persistent instances are not Distro data",
            ));
        }
        let target = match &info {
            Some(i) if !i.ip.is_empty() => Target {
                ip: i.ip.clone(),
                port: u32::try_from(i.port).unwrap_or(0),
                cluster: i.cluster.clone(),
            },
            _ => p.target()?,
        };
        let r = one(&state, Item::Beat(service.clone(), target.clone())).await;
        match r.code {
            code::OK => Ok(beat_json(BEAT_OK, &state)),
            code::NOT_FOUND => match info {
                // Nacos re-registers an unknown instance from the beat's information.
                Some(i) => {
                    let item = Item::Register(
                        service,
                        InstanceSpec {
                            ip: target.ip,
                            port: i64::from(target.port),
                            weight: i.weight.unwrap_or(1.0),
                            healthy: true,
                            enabled: true,
                            cluster: target.cluster,
                            metadata: sorted(i.metadata),
                            instance_id: None,
                        },
                    );
                    let r = one(&state, item).await;
                    if r.code != code::OK {
                        return Err(item_error(&r));
                    }
                    Ok(beat_json(BEAT_OK, &state))
                }
                None => Ok(beat_json(BEAT_NOT_FOUND, &state)),
            },
            _ => Err(item_error(&r)),
        }
    }
    .await;
    finish(&state, "beat", start, r)
}

async fn instance_list(
    State(state): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = (|| {
        let p = Params::parse(q, &body)?;
        let spec = p.service()?;
        let (ns, group, name) = spec.resolve().map_err(|e| bad(e.to_string()))?;
        let clusters = p.or("clusters", "");
        let healthy_only = p.bool("healthyOnly", false)?;
        let form = Form {
            encoding: Encoding::NacosOpenApi,
            clusters,
            healthy_only,
        };
        // The cache hands out the rendered head unless the service changed since it was
        // rendered; the registry is read inside the closure, after the cache took the
        // service's generation (see `crate::answers`).
        let head = state
            .answers
            .get(&Service::key_of(ns, group, name), form, || {
                let node = state.forwarder.node();
                let view = node.registry().query(ns, group, name);
                let grouped = format!("{group}{GROUP_SEPARATOR}{name}");
                let sel = Selection {
                    group,
                    name: &grouped,
                    grouped: &grouped,
                    clusters,
                    healthy_only,
                };
                let head = service_info_head(
                    view.as_ref(),
                    sel,
                    crate::nacos::DEFAULT_CACHE_MILLIS,
                    Timings::of(node.config()),
                );
                Bytes::from(head)
            });
        let mut json = Vec::with_capacity(head.len() + 128);
        finish_service_info(&head, (state.clock)(), &mut json);
        Ok((
            [(header::CONTENT_TYPE, "application/json")],
            Bytes::from(json),
        )
            .into_response())
    })();
    finish(&state, "query", start, r)
}

async fn instance_detail(
    State(state): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = (|| {
        let p = Params::parse(q, &body)?;
        let spec = p.service()?;
        let ip = p.required("ip")?;
        let port = p.port()?;
        let cluster = p.get("cluster").or(p.get("clusterName"));
        let view = state
            .forwarder
            .node()
            .query(&spec)
            .map_err(|e| bad(e.to_string()))?;
        let clusters: Vec<&str> = cluster.map(cluster_list).unwrap_or_default();
        let found = view.as_ref().and_then(|v| {
            v.instances(QueryFilter {
                clusters: &clusters,
                ..QueryFilter::default()
            })
            .find(|i| &*i.ip == ip && u32::from(i.port) == port)
            .map(|i| (i.clone(), v.service.clone()))
        });
        let Some((i, svc)) = found else {
            return Err(HttpError(
                StatusCode::NOT_FOUND,
                format!("no instance {ip}:{port} in service {}", spec.name),
            ));
        };
        Ok(axum::Json(serde_json::json!({
            "service": svc.grouped_name(),
            "ip": &*i.ip,
            "port": i.port,
            "clusterName": i.cluster.as_str(),
            "weight": i.weight,
            "healthy": i.healthy,
            "instanceId": i.instance_id(&svc),
            "metadata": i.metadata.iter().collect::<HashMap<_, _>>(),
        }))
        .into_response())
    })();
    finish(&state, "detail", start, r)
}

async fn service_list(
    State(state): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let start = Instant::now();
    let r = (|| {
        let p = Params::parse(q, &body)?;
        let page_no: usize = p
            .number("pageNo")?
            .ok_or_else(|| bad("invalid pageNo: the parameter is required"))?;
        let page_size: usize = p
            .number("pageSize")?
            .ok_or_else(|| bad("invalid pageSize: the parameter is required"))?;
        if page_no == 0 {
            return Err(bad("invalid pageNo: pages start at 1"));
        }
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(bad(format!(
                "invalid pageSize: {page_size} is outside 1..={MAX_PAGE_SIZE}"
            )));
        }
        let ns = p.or("namespaceId", distro_core::model::DEFAULT_NAMESPACE);
        let group = p.or("groupName", DEFAULT_GROUP);
        let services = state.forwarder.node().registry().services(ns, Some(group));
        let doms: Vec<&str> = services
            .iter()
            .skip((page_no - 1).saturating_mul(page_size))
            .take(page_size)
            .map(|s| s.name().as_str())
            .collect();
        Ok(
            axum::Json(serde_json::json!({ "count": services.len(), "doms": doms }))
                .into_response(),
        )
    })();
    finish(&state, "service_list", start, r)
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    let mut out = String::with_capacity(32 * 1024);
    state.page.render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// What a login (`/nacos/v1/auth/login`, Rust SDK; `/nacos/v1/auth/users/login`, Java and
/// Python SDKs) gets when auth is off: the server says so and issues no token.
pub const AUTH_UNSUPPORTED: &str = "authentication is off: this distro server was started \
    without --auth-users, checks no credentials and no accessToken, so every client that \
    reaches it can read and write; remove username/password from the client configuration, \
    or start every node with --auth-users and --auth-token-secret";

/// Logs in with `username` and `password` (query or form), answering as Nacos does:
/// `{"accessToken", "tokenTtl", "globalAdmin", "username"}`, or 403 `unknown user!`.
async fn login(
    State(state): State<Arc<HttpState>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let Some(auth) = state.auth.clone() else {
        return HttpError(StatusCode::NOT_IMPLEMENTED, AUTH_UNSUPPORTED.to_string())
            .into_response();
    };
    let start = Instant::now();
    let p = match Params::parse(q, &body) {
        Ok(p) => p,
        Err(e) => return finish(&state, "login", start, Err(e)),
    };
    let user = p.or("username", "").to_string();
    let password = p.or("password", "").to_string();
    let now = (state.clock)();
    // bcrypt is slow on purpose: off the runtime's threads.
    let r = tokio::task::spawn_blocking(move || auth.login(&user, &password, now))
        .await
        .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        .and_then(|r| r.map_err(|e| HttpError(StatusCode::FORBIDDEN, e.message)))
        .map(|l| axum::Json(l).into_response());
    finish(&state, "login", start, r)
}

/// With auth on, checks the token of every request under `/nacos/v1/ns/` against the
/// service it reads or writes (see the module comment) before the handler runs.
async fn require_token(
    State(state): State<Arc<HttpState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(auth) = &state.auth else {
        return next.run(req).await;
    };
    if !req.uri().path().starts_with("/nacos/v1/ns/") {
        return next.run(req).await;
    }
    let action = if req.method() == axum::http::Method::GET {
        Action::Read
    } else {
        Action::Write
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return HttpError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the request body (at most {MAX_BODY_BYTES} bytes): {e}"),
            )
            .into_response();
        }
    };
    let p = match Params::parse(parts.uri.query().map(str::to_string), &bytes) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let header_token = parts.headers.get(TOKEN_PARAM).and_then(|v| v.to_str().ok());
    let token = p.get(TOKEN_PARAM).or(header_token);
    let mut group = p.or("groupName", "");
    let mut service = p.or("serviceName", "*");
    if let Some((g, n)) = service.split_once(GROUP_SEPARATOR)
        && (group.is_empty() || group == g)
    {
        group = g;
        service = n;
    }
    let resource = [p.or("namespaceId", ""), group, service];
    if let Err(e) = auth.authorize(token, resource, action, (state.clock)()) {
        state
            .metrics
            .observe("http", "auth", Outcome::Error, Default::default());
        return HttpError(StatusCode::FORBIDDEN, e.message).into_response();
    }
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    next.run(req).await
}

async fn health(State(state): State<Arc<HttpState>>) -> Response {
    let node = state.forwarder.node();
    let loaded = node.is_loaded();
    let members: Vec<serde_json::Value> = node
        .member_states()
        .into_iter()
        .map(|(m, s)| {
            serde_json::json!({
                "address": node.members().addr(m).as_str(),
                "state": s.as_str().to_uppercase(),
                "self": m == node.me(),
            })
        })
        .collect();
    let stats = node.registry().stats();
    let body = serde_json::json!({
        "status": if loaded { "UP" } else { "STARTING" },
        "ready": loaded,
        "members": members,
        "clients": stats.clients,
        "instances": stats.instances,
        "ownedClients": node.owned_clients(),
    });
    let status = if loaded {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_accepts_json_and_pairs() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let m = parse_metadata(r#"{"zone":"a","n":1}"#).unwrap();
        assert_eq!(m, vec![pair("n", "1"), pair("zone", "a")]);
        let m = parse_metadata("zone=a, v=2").unwrap();
        assert_eq!(m, vec![pair("v", "2"), pair("zone", "a")]);
        assert!(parse_metadata("novalue").is_err());
        assert!(parse_metadata("{bad").is_err());
    }

    #[test]
    fn params_merge_query_and_body() {
        let p = Params::parse(
            Some("serviceName=a&ip=1.1.1.1".into()),
            &Bytes::from("port=80&ip=2.2.2.2"),
        )
        .unwrap();
        assert_eq!(p.get("ip"), Some("1.1.1.1"));
        assert_eq!(p.port().unwrap(), 80);
        let p = Params::parse(Some("port=70000".into()), &Bytes::new()).unwrap();
        assert!(p.port().is_err());
        let p = Params::parse(Some("serviceName=g@@svc".into()), &Bytes::new()).unwrap();
        let s = p.service().unwrap();
        assert_eq!((s.group.as_str(), s.name.as_str()), ("g", "svc"));
    }
}
