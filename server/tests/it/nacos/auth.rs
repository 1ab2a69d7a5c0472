//! Nacos-compatible auth on a 3-node cluster, driven by the real `nacos-sdk` crate with a
//! user name and password (its HTTP login plugin logs in on a random node and sends the
//! token with every gRPC request), and by plain HTTP and native gRPC clients.
//!
//! Users: `app` may read and write the services of `public:DEFAULT_GROUP`, `ro` may only
//! read everything, `admin` holds `ROLE_ADMIN`. Every node shares the token secret, so a
//! token issued by one node is accepted by the others.

use crate::cluster::{cluster, fast_config};
use crate::nacos::harness::{client_props, wait_until};
use crate::nacos::sdk::{addrs, events, instance, pushed};
use distro_server::LocalCluster;
use distro_server::auth::{Auth, Users};
use distro_server::proto::distro as pb;
use nacos_sdk::api::naming::{NamingService, NamingServiceBuilder};
use std::sync::Arc;
use std::time::Duration;

/// The token secret every node of the test cluster shares.
const SECRET: &[u8] = b"a test secret of at least 32 bytes!!";

/// bcrypt at its lowest cost, so that logins are quick in a debug build.
fn hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 4, [5; 16])
        .expect("hash")
        .to_string()
}

pub(crate) fn test_auth() -> Arc<Auth> {
    let users = Users::parse(&format!(
        "user admin {} ROLE_ADMIN\n\
         user app {} app\n\
         user ro {} reader\n\
         role app public:DEFAULT_GROUP:* rw\n\
         role reader *:*:* r\n",
        hash("admin-pw"),
        hash("app-pw"),
        hash("ro-pw"),
    ))
    .expect("users");
    Arc::new(Auth::new(users, SECRET, Duration::from_secs(3600)).expect("auth"))
}

async fn secured_cluster(n: usize) -> LocalCluster {
    let mut config = fast_config();
    config.auth = Some(test_auth());
    cluster(n, config).await
}

fn servers(c: &LocalCluster) -> Vec<String> {
    (0..c.len()).map(|i| c.http_addr(i).to_string()).collect()
}

/// A real SDK on every node of `c`, logged in as `user` (none: no credentials).
async fn sdk(c: &LocalCluster, user: Option<(&str, &str)>) -> NamingService {
    let props = client_props(&servers(c).join(","), true);
    let builder = match user {
        Some((u, p)) => NamingServiceBuilder::new(props.auth_username(u).auth_password(p))
            .enable_auth_plugin_http(),
        None => NamingServiceBuilder::new(props),
    };
    builder.build().await.expect("the SDK connects")
}

/// Logs in on node `i` over HTTP; returns the status and the JSON (or text) body.
async fn login(c: &LocalCluster, i: usize, path: &str, user: &str, pw: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("http://{}{path}", c.http_addr(i)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={user}&password={pw}"))
        .send()
        .await
        .expect("login request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn token(c: &LocalCluster, i: usize, user: &str, pw: &str) -> String {
    let (status, body) = login(c, i, "/nacos/v1/auth/login", user, pw).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["accessToken"].as_str().expect("accessToken").to_string()
}

async fn get(c: &LocalCluster, i: usize, path_and_query: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://{}{path_and_query}", c.http_addr(i)))
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_login_answers_as_nacos_and_tokens_are_checked_on_every_node() {
    let c = secured_cluster(3).await;
    for path in ["/nacos/v1/auth/login", "/nacos/v1/auth/users/login"] {
        let (status, body) = login(&c, 0, path, "admin", "admin-pw").await;
        assert_eq!(status, 200, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(
            v["accessToken"].as_str().is_some_and(|t| !t.is_empty()),
            "{v}"
        );
        assert_eq!(v["tokenTtl"], 3600, "{v}");
        assert_eq!(v["globalAdmin"], true, "{v}");
        assert_eq!(v["username"], "admin", "{v}");
    }
    let (status, body) = login(&c, 0, "/nacos/v1/auth/login", "admin", "wrong").await;
    assert_eq!((status, body.as_str()), (403, "unknown user!"));
    let (status, body) = login(&c, 0, "/nacos/v1/auth/login", "ro", "ro-pw").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""globalAdmin":false"#), "{body}");

    let app = token(&c, 0, "app", "app-pw").await;
    let ro = token(&c, 0, "ro", "ro-pw").await;
    let list = "/nacos/v1/ns/instance/list?serviceName=web";
    // No token, a malformed one, one signed with another secret: 403 with Nacos's reason.
    assert_eq!(get(&c, 1, list).await, (403, "user not found!".into()));
    let (s, b) = get(&c, 1, &format!("{list}&accessToken=garbage")).await;
    assert_eq!((s, b.as_str()), (403, "token invalid!"));
    let other = distro_server::auth::TokenSigner::new(b"another secret of at least 32 bytes")
        .expect("signer")
        .issue("admin", u64::MAX / 2);
    let (s, b) = get(&c, 1, &format!("{list}&accessToken={other}")).await;
    assert_eq!((s, b.as_str()), (403, "token invalid!"));
    // Signed with the cluster's secret but expired in 1970.
    let expired = distro_server::auth::TokenSigner::new(SECRET)
        .expect("signer")
        .issue("admin", 1);
    let (s, b) = get(&c, 1, &format!("{list}&accessToken={expired}")).await;
    assert_eq!((s, b.as_str()), (403, "token expired!"));
    // A token issued by node 0 is valid on nodes 1 and 2, as a parameter or a header.
    let (s, b) = get(&c, 1, &format!("{list}&accessToken={ro}")).await;
    assert_eq!(s, 200, "{b}");
    let r = reqwest::Client::new()
        .get(format!("http://{}{list}", c.http_addr(2)))
        .header("accessToken", &ro)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    // The read-only user may not write; app may, in its group only.
    let register = |i: usize, token: &str, group: &str| {
        let url = format!(
            "http://{}/nacos/v1/ns/instance?serviceName=web&groupName={group}&ip=10.9.0.1&port=80&accessToken={token}",
            c.http_addr(i)
        );
        async move {
            let r = reqwest::Client::new().post(url).send().await.expect("post");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    let (s, b) = register(1, &ro, "DEFAULT_GROUP").await;
    assert_eq!(s, 403, "{b}");
    assert!(b.starts_with("authorization failed!"), "{b}");
    assert!(b.contains("public:DEFAULT_GROUP:web"), "{b}");
    let (s, b) = register(2, &app, "other").await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(register(2, &app, "DEFAULT_GROUP").await, (200, "ok".into()));
    // Health and metrics stay open.
    assert_eq!(get(&c, 0, "/health").await.0, 200);
    assert_eq!(get(&c, 0, "/metrics").await.0, 200);
    c.shutdown().await;
}

/// The real SDK with a user name and password: app registers through one node, ro
/// subscribes and queries through the cluster; ro's write and an SDK without credentials
/// are refused with 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_with_credentials_registers_subscribes_and_queries() {
    let c = secured_cluster(3).await;
    let app = sdk(&c, Some(("app", "app-pw"))).await;
    let ro = sdk(&c, Some(("ro", "ro-pw"))).await;
    let (listener, mut rx) = events();
    ro.subscribe("secured".into(), None, vec![], listener)
        .await
        .expect("ro subscribes");
    app.register_instance("secured".into(), None, instance("10.0.9.1", 9000))
        .await
        .expect("app registers");
    pushed(&mut rx, &["10.0.9.1:9000"]).await;
    wait_until("replicated to every node", || {
        (0..3).all(|i| {
            c.node(i)
                .expect("runs")
                .query(&distro_core::ServiceSpec::new("", "", "secured"))
                .expect("valid")
                .is_some()
        })
    })
    .await;
    let got = ro
        .get_all_instances("secured".into(), None, vec![], false)
        .await
        .expect("ro queries");
    assert_eq!(addrs(&got), ["10.0.9.1:9000"]);

    let e = ro
        .register_instance("secured".into(), None, instance("10.0.9.2", 9000))
        .await
        .expect_err("ro may not write");
    let msg = e.to_string();
    assert!(msg.contains("authorization failed!"), "{msg}");
    let anonymous = sdk(&c, None).await;
    let e = anonymous
        .register_instance("secured".into(), None, instance("10.0.9.3", 9000))
        .await
        .expect_err("no credentials");
    assert!(e.to_string().contains("user not found!"), "{e}");
    let e = anonymous
        .get_all_instances("secured".into(), None, vec![], false)
        .await
        .expect_err("no credentials, no reads either");
    assert!(e.to_string().contains("user not found!"), "{e}");
    // Only app's instance was ever registered.
    let got = ro
        .get_all_instances("secured".into(), None, vec![], false)
        .await
        .expect("ro queries");
    assert_eq!(addrs(&got), ["10.0.9.1:9000"]);
    c.shutdown().await;
}

/// The native API takes the token in the `accesstoken` metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_native_api_checks_the_token_and_the_permission() {
    let c = secured_cluster(1).await;
    let mut client =
        pb::registry_client::RegistryClient::connect(format!("http://{}", c.sdk_addr(0)))
            .await
            .expect("connect");
    let service = pb::ServiceRef {
        namespace: String::new(),
        group: String::new(),
        name: "native".into(),
    };
    let register = |token: Option<&str>| {
        let mut r = tonic::Request::new(pb::RegisterRequest {
            registrations: vec![pb::Registration {
                service: Some(service.clone()),
                instance: Some(pb::Instance {
                    ip: "10.8.0.1".into(),
                    port: 80,
                    weight: 1.0,
                    healthy: true,
                    enabled: true,
                    ..Default::default()
                }),
            }],
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("accesstoken", t.parse().expect("ascii"));
        }
        r
    };
    let e = client.register(register(None)).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert_eq!(e.message(), "user not found!");
    let ro = token(&c, 0, "ro", "ro-pw").await;
    let e = client
        .register(register(Some(&ro)))
        .await
        .expect_err("read only");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let app = token(&c, 0, "app", "app-pw").await;
    let r = client
        .register(register(Some(&app)))
        .await
        .expect("app writes")
        .into_inner();
    assert_eq!(r.results[0].code, 200, "{:?}", r.results);
    let mut q = tonic::Request::new(pb::QueryRequest {
        service: Some(service.clone()),
        ..Default::default()
    });
    q.metadata_mut()
        .insert("accesstoken", ro.parse().expect("ascii"));
    let got = client.query(q).await.expect("ro reads").into_inner();
    assert_eq!(got.instances.len(), 1);
    // A batch of queries is checked like one query per service.
    let batch = |token: Option<&str>| {
        let mut r = tonic::Request::new(pb::QueryBatchRequest {
            queries: vec![pb::QueryRequest {
                service: Some(service.clone()),
                ..Default::default()
            }],
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("accesstoken", t.parse().expect("ascii"));
        }
        r
    };
    let e = client.query_batch(batch(None)).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let got = client
        .query_batch(batch(Some(&ro)))
        .await
        .expect("ro reads a batch")
        .into_inner();
    assert_eq!(got.answers.len(), 1);
    assert_eq!(got.answers[0].instances.len(), 1);
    c.shutdown().await;
}

/// Nacos gRPC requests carry the token in the payload's `accessToken` header: missing,
/// malformed, expired and insufficient tokens get `ErrorResponse` with `errorCode` 403 and
/// Nacos's message; a sufficient one passes on to the next check (here: 301, the raw
/// client never set its connection up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacos_grpc_requests_are_refused_with_403_and_the_reason() {
    use crate::nacos::harness::{Raw, TestServer, payload};
    let config = distro_server::nacos::NacosConfig {
        auth: Some(test_auth()),
        ..crate::nacos::harness::fast_config()
    };
    let server = TestServer::start(config).await;
    let mut raw = Raw::connect(&server).await;
    let signer = distro_server::auth::TokenSigner::new(SECRET).expect("signer");
    let far = u64::MAX / 4;
    let ro = signer.issue("ro", far);
    let query = serde_json::json!({"headers": {}, "namespace": "public",
        "groupName": "DEFAULT_GROUP", "serviceName": "svc", "cluster": "", "healthyOnly": false});
    let register = serde_json::json!({"headers": {}, "namespace": "public",
        "groupName": "DEFAULT_GROUP", "serviceName": "svc", "type": "registerInstance",
        "instance": {"ip": "10.0.0.1", "port": 80}});
    let cases = [
        ("ServiceQueryRequest", &query, None, 403, "user not found!"),
        (
            "ServiceQueryRequest",
            &query,
            Some("garbage".to_string()),
            403,
            "token invalid!",
        ),
        (
            "ServiceQueryRequest",
            &query,
            Some(signer.issue("ro", 1)),
            403,
            "token expired!",
        ),
        (
            "InstanceRequest",
            &register,
            Some(ro.clone()),
            403,
            "authorization failed!",
        ),
        (
            "ServiceQueryRequest",
            &query,
            Some(ro.clone()),
            301,
            "Connection is unregistered.",
        ),
    ];
    for (type_name, body, token, code, message) in cases {
        let mut p = payload(type_name, body);
        if let (Some(t), Some(m)) = (&token, p.metadata.as_mut()) {
            m.headers.insert("accessToken".into(), t.clone());
        }
        let (t, reply) = raw.call_payload(p).await;
        assert_eq!(t, "ErrorResponse", "{type_name} {token:?}: {reply}");
        assert_eq!(reply["errorCode"], code, "{type_name} {token:?}: {reply}");
        let got = reply["message"].as_str().unwrap_or_default();
        assert!(got.starts_with(message), "{type_name} {token:?}: {reply}");
    }
    server.stop().await;
}

/// With auth on, the native API checks the token on the metadata before the body is
/// decoded: 8 MiB that are not a message, sent without a token, are refused as
/// unauthenticated (had they been decoded, the answer would be the decode error that a
/// valid token gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_call_without_a_token_is_refused_before_it_is_decoded() {
    let c = secured_cluster(1).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", c.sdk_addr(0)))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let garbage = vec![0xff_u8; 8 * 1024 * 1024];
    let call = |token: Option<String>| {
        let channel = channel.clone();
        let body = garbage.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
            grpc.ready().await.expect("ready");
            let mut req = tonic::Request::new(body);
            if let Some(t) = token {
                req.metadata_mut()
                    .insert("accesstoken", t.parse().expect("ascii"));
            }
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                "/distro.v1.Registry/Register",
            );
            grpc.unary(req, path, crate::cluster::RawBytes)
                .await
                .expect_err("the body is not a register request")
        }
    };
    let e = call(None).await;
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert_eq!(e.message(), "user not found!");
    let e = call(Some("not.a.token".into())).await;
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert_eq!(e.message(), "token invalid!");
    let app = token(&c, 0, "app", "app-pw").await;
    let e = call(Some(app)).await;
    assert_ne!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(
        e.message().contains("decode"),
        "a valid token gets the body decoded: {e}"
    );
    c.shutdown().await;
}
