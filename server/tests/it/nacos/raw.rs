//! Raw tonic clients: handshakes in both orders, error codes for bad input, exact reply
//! shapes, push acks and retries, client detection, connection limits, and the end of a
//! connection. Each test ends by checking the server still serves.

use crate::nacos::harness::*;
use distro_server::nacos::NacosConfig;
use distro_server::proto::nacos::Payload;
use distro_server::proto::nacos::bi_request_stream_client::BiRequestStreamClient;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn assert_ok(reply: &(String, Value), ty: &str) {
    assert_eq!(reply.0, ty, "{reply:?}");
    assert_eq!(reply.1["resultCode"], 200, "{reply:?}");
    assert_eq!(reply.1["errorCode"], 0, "{reply:?}");
    assert_eq!(reply.1["success"], true, "{reply:?}");
}

fn assert_error(reply: &(String, Value), code: i64) -> String {
    assert_eq!(reply.0, "ErrorResponse", "{reply:?}");
    assert_eq!(reply.1["errorCode"], code, "{reply:?}");
    assert!(reply.1["resultCode"].is_i64(), "{reply:?}");
    assert_eq!(reply.1["success"], false, "{reply:?}");
    reply.1["message"]
        .as_str()
        .unwrap_or_else(|| panic!("a string message: {reply:?}"))
        .to_string()
}

/// The server still answers a fresh client end to end.
async fn still_serving(server: &TestServer) {
    let mut c = Raw::connect(server).await;
    c.setup().await;
    let r = c
        .call("InstanceRequest", register_body("alive", "10.9.9.9", 9))
        .await;
    assert_ok(&r, "InstanceResponse");
    assert!(
        server
            .instances("alive")
            .contains(&"10.9.9.9:9".to_string())
    );
}

#[tokio::test]
async fn java_order_handshake_server_check_then_setup() {
    let server = TestServer::start(fast_config()).await;
    let mut c = Raw::connect(&server).await;
    let check = c
        .call(
            "ServerCheckRequest",
            json!({"headers":{},"module":"internal"}),
        )
        .await;
    assert_ok(&check, "ServerCheckResponse");
    assert_eq!(check.1["supportAbilityNegotiation"], true);
    let id = check.1["connectionId"]
        .as_str()
        .expect("connectionId")
        .to_string();
    let parts: Vec<&str> = id.split('_').collect();
    assert_eq!(parts.len(), 3, "{id}");
    assert!(parts[0].parse::<u64>().is_ok(), "{id}");
    assert_eq!(parts[1], "127.0.0.1");
    assert!(parts[2].parse::<u16>().is_ok(), "{id}");

    // Health checks are answered before setup; naming requests are not.
    let health = c.call("HealthCheckRequest", json!({})).await;
    assert_ok(&health, "HealthCheckResponse");
    let early = c
        .call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
        .await;
    assert_eq!(early.1["resultCode"], 500);
    assert_error(&early, 301);
    assert!(server.instances("svc").is_empty());

    c.open_stream().await;
    c.send(
        "ConnectionSetupRequest",
        json!({"headers":{},"clientVersion":"Nacos-Java-Client:v2.5.1",
            "labels":{"source":"sdk","module":"naming","AppName":"unknown"},
            "abilityTable":{},"module":"internal"}),
    )
    .await;
    let (t, ack) = c.next_message().await.expect("SetupAckRequest");
    assert_eq!(t, "SetupAckRequest");
    assert_eq!(ack["headers"], json!({}));
    assert!(ack["requestId"].is_string(), "{ack}");
    assert_eq!(
        ack["abilityTable"],
        json!({"supportPersistentInstanceByGrpc": false})
    );

    let again = c.call("ServerCheckRequest", json!({})).await;
    assert_eq!(again.1["connectionId"], id.as_str(), "same id after setup");
    assert_eq!(server.nacos.connection_ids(), vec![id.clone()]);
    let r = c
        .call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
        .await;
    assert_ok(&r, "InstanceResponse");
    assert_eq!(r.1["type"], "registerInstance");
    assert_eq!(server.instances("svc"), ["10.0.0.1:1"]);
    // The connection is the core client.
    assert!(server.node.registry().get(&id).is_some());
    server.stop().await;
}

#[tokio::test]
async fn rust_order_handshake_setup_first_with_old_abilities() {
    let server = TestServer::start(fast_config()).await;
    let mut c = Raw::connect(&server).await;
    c.open_stream().await;
    c.send(
        "ConnectionSetupRequest",
        json!({"headers":{},"requestId":null,"clientVersion":"Nacos-Rust-Client:0.8.3",
            "tenant":"public","labels":{"source":"sdk","module":"naming"},
            "abilities":{"remoteAbility":{"supportRemoteConnection":true},
                "configAbility":{"supportRemoteMetrics":true},
                "namingAbility":{"supportDeltaPush":false,"supportRemoteMetric":false}}}),
    )
    .await;
    wait_until("the setup registers", || {
        server.nacos.connection_count() == 1
    })
    .await;
    assert_ok(
        &c.call("HealthCheckRequest", json!({"requestId":null}))
            .await,
        "HealthCheckResponse",
    );
    let check = c.call("ServerCheckRequest", json!({})).await;
    assert_eq!(
        server.nacos.connection_ids(),
        vec![check.1["connectionId"].as_str().expect("id").to_string()]
    );
    // No SetupAckRequest without an abilityTable: the first stream message is the push
    // of the new subscription.
    let sub = c
        .call(
            "SubscribeServiceRequest",
            json!({"namespace":"public","serviceName":"svc","groupName":"DEFAULT_GROUP",
                "subscribe":true,"clusters":""}),
        )
        .await;
    assert_ok(&sub, "SubscribeServiceResponse");
    let (t, _) = c.next_message().await.expect("a push");
    assert_eq!(t, "NotifySubscriberRequest");
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_error_codes_and_the_server_keeps_serving() {
    let server = TestServer::start(fast_config()).await;
    let mut c = Raw::connect(&server).await;
    // Unknown types: 302, before and after setup.
    assert_error(&c.call("NoSuchRequest", json!({})).await, 302);
    let mut no_metadata = payload("x", &json!({}));
    no_metadata.metadata = None;
    assert_error(&c.call_payload(no_metadata).await, 302);
    c.setup().await;
    let msg = assert_error(&c.call("ConfigQueryRequest", json!({})).await, 302);
    assert!(msg.contains("ConfigQueryRequest"), "{msg}");
    // Unparseable bodies: 502 with the parser's reason.
    let msg = assert_error(
        &c.call_payload(raw_payload("InstanceRequest", b"{\"type\": regist"))
            .await,
        502,
    );
    assert!(msg.contains("InstanceRequest"), "{msg}");
    assert_error(
        &c.call_payload(raw_payload("ServiceQueryRequest", &[0xff, 0xfe, 0x00]))
            .await,
        502,
    );
    assert_error(
        &c.call(
            "InstanceRequest",
            json!({"type":"registerInstance","instance":{"port":"x"}}),
        )
        .await,
        502,
    );
    // Invalid parameters: 400 naming the field.
    let mut bad_port = register_body("svc", "10.0.0.1", 1);
    bad_port["instance"]["port"] = json!(0);
    let msg = assert_error(&c.call("InstanceRequest", bad_port).await, 400);
    assert!(msg.starts_with("invalid port"), "{msg}");
    let msg = assert_error(
        &c.call("InstanceRequest", register_body("", "10.0.0.1", 1))
            .await,
        400,
    );
    assert!(msg.starts_with("invalid serviceName"), "{msg}");
    let mut bad_cluster = register_body("svc", "10.0.0.1", 1);
    bad_cluster["instance"]["clusterName"] = json!("no spaces");
    let msg = assert_error(&c.call("InstanceRequest", bad_cluster).await, 400);
    assert!(msg.starts_with("invalid clusterName"), "{msg}");
    let mut bad_type = register_body("svc", "10.0.0.1", 1);
    bad_type["type"] = json!("updateInstance");
    let msg = assert_error(&c.call("InstanceRequest", bad_type).await, 400);
    assert!(msg.contains("Unsupported request type"), "{msg}");
    let msg = assert_error(
        &c.call(
            "InstanceRequest",
            json!({"type":"registerInstance","serviceName":"svc"}),
        )
        .await,
        400,
    );
    assert!(msg.contains("instance"), "{msg}");
    // Persistent instances are not Distro data.
    let reply = c
        .call(
            "PersistentInstanceRequest",
            register_body("svc", "10.0.0.1", 1),
        )
        .await;
    assert_eq!(reply.1["resultCode"], 400);
    let msg = assert_error(&reply, 400);
    assert!(
        msg.contains("persistent instances are not supported") && msg.contains("ephemeral=true"),
        "{msg}"
    );
    let mut non_ephemeral = register_body("svc", "10.0.0.1", 1);
    non_ephemeral["instance"]["ephemeral"] = json!(false);
    assert_error(&c.call("InstanceRequest", non_ephemeral).await, 400);
    assert!(server.instances("svc").is_empty());

    let stats = server.nacos.stats();
    assert_eq!(stats.requests_of("unknown", "no_handler"), 3, "{stats:?}");
    assert_eq!(stats.requests_of("InstanceRequest", "bad_body"), 2);
    assert_eq!(stats.requests_of("PersistentInstanceRequest", "invalid"), 1);
    let mut text = String::new();
    server.nacos.render_metrics(&mut text);
    assert!(
        text.contains(
            "distro_nacos_requests_total{type=\"InstanceRequest\",outcome=\"invalid\"} 6"
        ),
        "{text}"
    );

    // The same connection and a new one still work.
    assert_ok(
        &c.call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
            .await,
        "InstanceResponse",
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_messages_are_refused_without_harm() {
    let config = NacosConfig {
        max_message_bytes: 64 * 1024,
        ..fast_config()
    };
    let server = TestServer::start(config).await;
    let mut c = Raw::connect(&server).await;
    c.setup().await;
    let mut big = register_body("svc", "10.0.0.1", 1);
    big["instance"]["metadata"] = json!({"blob": "x".repeat(100 * 1024)});
    let status = c
        .unary
        .request(payload("InstanceRequest", &big))
        .await
        .expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-bytes"),
        "{status:?}"
    );
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn query_and_subscribe_replies_have_the_exact_nacos_shape() {
    let server = TestServer::start(fast_config()).await;
    let mut c = Raw::connect(&server).await;
    c.setup().await;
    let mut body = register_body("demo", "10.0.0.7", 8080);
    body["instance"]["metadata"] = json!({"zone":"a","preserved.ip.delete.timeout":"60000"});
    body["instance"]["instanceId"] = json!(null);
    assert_ok(&c.call("InstanceRequest", body).await, "InstanceResponse");
    let mut d = Raw::connect(&server).await;
    d.setup().await;
    let mut disabled = register_body("demo", "10.0.0.8", 8080);
    disabled["instance"]["enabled"] = json!(false);
    assert_ok(
        &d.call("InstanceRequest", disabled).await,
        "InstanceResponse",
    );
    let mut other_cluster = Raw::connect(&server).await;
    other_cluster.setup().await;
    let mut b = register_body("demo", "10.0.0.9", 1);
    b["instance"]["clusterName"] = json!("c2");
    b["instance"]["healthy"] = json!(false);
    assert_ok(
        &other_cluster.call("InstanceRequest", b).await,
        "InstanceResponse",
    );

    // Python spells the flag healthOnly and leaves the namespace empty.
    let q = c
        .call(
            "ServiceQueryRequest",
            json!({"headers":{},"requestId":"","module":"","namespace":"","serviceName":"demo",
                "groupName":"DEFAULT_GROUP","cluster":"DEFAULT","healthOnly":false,"udpPort":0}),
        )
        .await;
    assert_ok(&q, "QueryServiceResponse");
    let mut info = q.1["serviceInfo"].clone();
    assert!(info["lastRefTime"].as_u64().expect("lastRefTime") > 1_600_000_000_000);
    info["lastRefTime"] = json!(0);
    assert_eq!(
        info,
        json!({"name":"demo","groupName":"DEFAULT_GROUP","clusters":"DEFAULT","cacheMillis":10000,
          "hosts":[{"instanceId":"10.0.0.7#8080#DEFAULT#DEFAULT_GROUP@@demo","ip":"10.0.0.7",
            "port":8080,"weight":1.0,"healthy":true,"enabled":true,"ephemeral":true,
            "clusterName":"DEFAULT","serviceName":"DEFAULT_GROUP@@demo",
            "metadata":{"preserved.ip.delete.timeout":"60000","zone":"a"},
            "instanceHeartBeatInterval":5000,"instanceHeartBeatTimeOut":15000,
            "ipDeleteTimeout":60000}],
          "lastRefTime":0,"checksum":"","allIPs":false,"reachProtectionThreshold":false,
          "valid":true})
    );
    // healthyOnly (Java spelling) drops the unhealthy instance of c2; all clusters otherwise.
    let all = c
        .call(
            "ServiceQueryRequest",
            json!({"serviceName":"demo","cluster":"","healthyOnly":false}),
        )
        .await;
    assert_eq!(
        all.1["serviceInfo"]["hosts"].as_array().map(Vec::len),
        Some(2)
    );
    let healthy = c
        .call(
            "ServiceQueryRequest",
            json!({"serviceName":"demo","cluster":"","healthyOnly":true}),
        )
        .await;
    assert_eq!(
        healthy.1["serviceInfo"]["hosts"].as_array().map(Vec::len),
        Some(1)
    );
    // A service nobody registered: an empty, valid view.
    let none = c
        .call("ServiceQueryRequest", json!({"serviceName":"nothing"}))
        .await;
    assert_eq!(none.1["serviceInfo"]["hosts"], json!([]));
    assert_eq!(none.1["serviceInfo"]["clusters"], "");

    let sub = c
        .call(
            "SubscribeServiceRequest",
            json!({"namespace":"public","serviceName":"demo","groupName":"DEFAULT_GROUP",
                "subscribe":true,"clusters":"c2"}),
        )
        .await;
    assert_ok(&sub, "SubscribeServiceResponse");
    assert_eq!(sub.1["message"], "success");
    assert_eq!(sub.1["serviceInfo"]["clusters"], "c2");
    assert_eq!(
        sub.1["serviceInfo"]["hosts"][0]["instanceId"],
        "10.0.0.9#1#c2#DEFAULT_GROUP@@demo"
    );
    // The push of the new subscription applies the subscriber's cluster filter too.
    let push = c.next_of_type("NotifySubscriberRequest").await;
    assert_eq!(push["serviceInfo"]["clusters"], "c2");
    assert_eq!(push["serviceInfo"]["name"], "demo");
    assert_eq!(push["serviceInfo"]["groupName"], "DEFAULT_GROUP");
    let hosts = push["serviceInfo"]["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 1, "{push}");
    assert_eq!(hosts[0]["ip"], "10.0.0.9");
    let list = c
        .call(
            "ServiceListRequest",
            json!({"namespace":"","groupName":"DEFAULT_GROUP","pageNo":1,"pageSize":10}),
        )
        .await;
    assert_ok(&list, "ServiceListResponse");
    assert_eq!(list.1["count"], 1);
    assert_eq!(list.1["serviceNames"], json!(["demo"]));
    server.stop().await;
}

#[tokio::test]
async fn pushes_are_retried_until_acked_with_increasing_last_ref_time() {
    // A zero push delay is allowed: changes are pushed at once.
    let config = NacosConfig {
        push_delay: Duration::ZERO,
        ..fast_config()
    };
    let server = TestServer::start(config).await;
    let mut sub = Raw::connect(&server).await;
    sub.setup().await;
    let reply = sub
        .call(
            "SubscribeServiceRequest",
            json!({"serviceName":"svc","subscribe":true,"clusters":""}),
        )
        .await;
    let mut last = reply.1["serviceInfo"]["lastRefTime"]
        .as_u64()
        .expect("time");

    // The initial push of the new subscription; not acked, so it comes again.
    let first = sub.next_of_type("NotifySubscriberRequest").await;
    assert_eq!(first["headers"], json!({}));
    assert!(first["requestId"].is_string());
    assert_eq!(first["serviceInfo"]["name"], "svc");
    assert_eq!(first["serviceInfo"]["clusters"], "");
    let t1 = first["serviceInfo"]["lastRefTime"].as_u64().expect("time");
    assert!(t1 > last, "{t1} > {last}");
    last = t1;
    let again = sub.next_of_type("NotifySubscriberRequest").await;
    let t2 = again["serviceInfo"]["lastRefTime"].as_u64().expect("time");
    assert!(t2 > last, "a retry is a fresh view: {t2} > {last}");
    assert_ne!(again["requestId"], first["requestId"]);
    last = t2;
    sub.ack(
        "NotifySubscriberResponse",
        again["requestId"].as_str().expect("id"),
    )
    .await;
    wait_until("the ack is counted", || {
        server.nacos.stats().pushes_acked >= 1
    })
    .await;
    assert!(server.nacos.stats().pushes_failed >= 1);

    // Changes are pushed, merged per service, each view newer than the last.
    let mut publisher = Raw::connect(&server).await;
    publisher.setup().await;
    let mut batch = json!({"serviceName":"svc","type":"batchRegisterInstance","instances":[]});
    batch["instances"] = json!([
        {"ip":"10.0.0.1","port":1}, {"ip":"10.0.0.1","port":2}
    ]);
    assert_ok(
        &publisher.call("BatchInstanceRequest", batch).await,
        "BatchInstanceResponse",
    );
    loop {
        let push = sub.next_of_type("NotifySubscriberRequest").await;
        let t = push["serviceInfo"]["lastRefTime"].as_u64().expect("time");
        assert!(t > last, "{t} > {last}");
        last = t;
        sub.ack(
            "NotifySubscriberResponse",
            push["requestId"].as_str().expect("id"),
        )
        .await;
        if push["serviceInfo"]["hosts"].as_array().map(Vec::len) == Some(2) {
            break;
        }
    }
    // Unsubscribed: no more pushes, and the view reply still comes.
    let un = sub
        .call(
            "SubscribeServiceRequest",
            json!({"serviceName":"svc","subscribe":false}),
        )
        .await;
    assert_ok(&un, "SubscribeServiceResponse");
    assert_eq!(server.nacos.stats().subscribed_services, 0);
    server.stop().await;
}

/// A subscriber that stops acknowledging pushes (here: it reads them and never answers;
/// a client that stopped reading fills its queue and fails the same way) is closed after
/// `max_push_failures` in a row, while a subscriber that acks keeps its connection.
#[tokio::test]
async fn a_connection_that_never_acks_pushes_is_closed() {
    let config = NacosConfig {
        push_delay: Duration::ZERO,
        push_ack_timeout: Duration::from_millis(500),
        push_retry_delay: Duration::from_millis(50),
        max_push_failures: 3,
        ..fast_config()
    };
    let server = TestServer::start(config).await;
    let subscribe = json!({"serviceName":"svc","subscribe":true,"clusters":""});
    let mut deaf = Raw::connect(&server).await;
    deaf.setup().await;
    assert_ok(
        &deaf
            .call("SubscribeServiceRequest", subscribe.clone())
            .await,
        "SubscribeServiceResponse",
    );
    let mut good = Raw::connect(&server).await;
    good.setup().await;
    assert_ok(
        &good.call("SubscribeServiceRequest", subscribe).await,
        "SubscribeServiceResponse",
    );
    // The acking subscriber answers every push at once, all along.
    let good_task = tokio::spawn(async move {
        loop {
            let Some((t, v)) = good.next_message().await else {
                return false;
            };
            if t == "NotifySubscriberRequest" {
                good.ack(
                    "NotifySubscriberResponse",
                    v["requestId"].as_str().expect("id"),
                )
                .await;
                if v["serviceInfo"]["hosts"].as_array().map(Vec::len) == Some(1) {
                    return true;
                }
            }
        }
    });
    let start = std::time::Instant::now();
    let mut pushes = 0;
    // The deaf client reads pushes (retries of the initial one) until the stream ends.
    while let Some((t, _)) = deaf.next_message().await {
        if t == "NotifySubscriberRequest" {
            pushes += 1;
        }
    }
    println!(
        "closed after {pushes} unacknowledged pushes, {:?}",
        start.elapsed()
    );
    assert_eq!(pushes, 3, "closed at the third failure in a row");
    let closed = |s: &TestServer| {
        s.nacos
            .stats()
            .connections_closed
            .iter()
            .find(|(r, _)| *r == "pushes_unacknowledged")
            .map_or(0, |(_, n)| *n)
    };
    wait_until("the close is counted", || closed(&server) >= 1).await;
    // The acking subscriber stays and gets the next change.
    let mut publisher = Raw::connect(&server).await;
    publisher.setup().await;
    assert_ok(
        &publisher
            .call("InstanceRequest", register_body("svc", "10.0.0.9", 9))
            .await,
        "InstanceResponse",
    );
    assert!(
        good_task.await.expect("the acking subscriber's task"),
        "the acking subscriber's stream ended"
    );
    assert_eq!(closed(&server), 1, "the acking subscriber was not closed");
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn silent_connections_are_detected_and_dropped_answering_ones_stay() {
    let config = NacosConfig {
        detection_idle: Duration::from_millis(300),
        detection_timeout: Duration::from_secs(1),
        ..fast_config()
    };
    let server = TestServer::start(config).await;
    let mut silent = Raw::connect(&server).await;
    silent.setup().await;
    assert_ok(
        &silent
            .call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
            .await,
        "InstanceResponse",
    );
    let mut alive = Raw::connect(&server).await;
    alive.setup().await;
    assert_ok(
        &alive
            .call("InstanceRequest", register_body("svc", "10.0.0.2", 2))
            .await,
        "InstanceResponse",
    );
    assert_eq!(server.instances("svc"), ["10.0.0.1:1", "10.0.0.2:2"]);

    // The answering one acks every probe, in the background.
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    let responder = tokio::spawn(async move {
        while let Some((t, v)) = alive.next_message().await {
            if t == "ClientDetectionRequest" {
                alive
                    .ack(
                        "ClientDetectionResponse",
                        v["requestId"].as_str().expect("id"),
                    )
                    .await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // The silent one is probed, does not answer, and is dropped with its instance; its
    // stream ends.
    let probe = silent.next_of_type("ClientDetectionRequest").await;
    assert_eq!(probe["headers"], json!({}));
    assert!(probe["requestId"].is_string());
    while silent.next_message().await.is_some() {}
    wait_until("the silent instance is gone", || {
        server.instances("svc") == ["10.0.0.2:2"]
    })
    .await;

    // The answering one survives several probes.
    wait_until("three probes answered", || {
        answered.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert_eq!(server.instances("svc"), ["10.0.0.2:2"]);
    assert_eq!(server.nacos.connection_count(), 1);
    let stats = server.nacos.stats();
    assert!(
        stats.connections_closed.contains(&("detection_failed", 1)),
        "{stats:?}"
    );
    assert!(stats.detections_sent >= 4);
    // Requests on the dropped connection, health checks included, are refused as
    // unregistered, so a client whose TCP connection survived reconnects.
    assert_error(
        &silent
            .call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
            .await,
        301,
    );
    assert_error(&silent.call("HealthCheckRequest", json!({})).await, 301);
    server.stop().await;
    responder.await.expect("responder");
}

#[tokio::test]
async fn the_end_of_a_stream_removes_the_connection_and_tells_subscribers() {
    let server = TestServer::start(fast_config()).await;
    let mut sub = Raw::connect(&server).await;
    sub.setup().await;
    sub.call(
        "SubscribeServiceRequest",
        json!({"serviceName":"svc","subscribe":true}),
    )
    .await;
    let mut a = Raw::connect(&server).await;
    a.setup().await;
    assert_ok(
        &a.call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
            .await,
        "InstanceResponse",
    );
    let mut b = Raw::connect(&server).await;
    b.setup().await;
    assert_ok(
        &b.call("InstanceRequest", register_body("svc", "10.0.0.2", 2))
            .await,
        "InstanceResponse",
    );
    assert_eq!(server.nacos.connection_count(), 3);

    // A closes its half of the stream; B drops the whole TCP connection.
    a.close_stream();
    drop(b);
    wait_until("both instances are gone", || {
        server.instances("svc").is_empty()
    })
    .await;
    loop {
        let push = sub.next_of_type("NotifySubscriberRequest").await;
        sub.ack(
            "NotifySubscriberResponse",
            push["requestId"].as_str().expect("id"),
        )
        .await;
        if push["serviceInfo"]["hosts"] == json!([]) {
            break;
        }
    }
    wait_until("two connections closed", || {
        server.nacos.connection_count() == 1
    })
    .await;
    still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn limits_refuse_with_clear_errors() {
    let config = NacosConfig {
        max_connections: 1,
        max_subscriptions_per_connection: 1,
        ..fast_config()
    };
    let server = TestServer::start(config).await;
    let mut first = Raw::connect(&server).await;
    first.setup().await;
    let ok = first
        .call(
            "SubscribeServiceRequest",
            json!({"serviceName":"a","subscribe":true}),
        )
        .await;
    assert_ok(&ok, "SubscribeServiceResponse");
    let msg = assert_error(
        &first
            .call(
                "SubscribeServiceRequest",
                json!({"serviceName":"b","subscribe":true}),
            )
            .await,
        503,
    );
    assert!(msg.contains("max_subscriptions_per_connection"), "{msg}");

    // A second connection: refused at ServerCheck (Java/Python order) ...
    let mut second = Raw::connect(&server).await;
    let msg = assert_error(&second.call("ServerCheckRequest", json!({})).await, 503);
    assert!(msg.contains("at most 1 SDK connections"), "{msg}");
    // ... and at setup (Rust order): the stream ends with RESOURCE_EXHAUSTED.
    second.open_stream().await;
    second
        .send(
            "ConnectionSetupRequest",
            json!({"labels":{"module":"naming"}}),
        )
        .await;
    let status = second
        .stream_rx
        .as_mut()
        .expect("stream")
        .message()
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("max_connections"), "{status:?}");
    assert_eq!(server.nacos.stats().connections_refused, 2);
    assert_eq!(server.nacos.connection_count(), 1);
    // The admitted client is unaffected.
    assert_ok(
        &first
            .call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
            .await,
        "InstanceResponse",
    );
    server.stop().await;
}

/// `max_clients` and `max_services_per_namespace` refuse a registration that would
/// create one more connection client or service with an `ErrorResponse` naming the
/// limit; the admitted connection keeps working, and a deregistration (or the end of a
/// connection) frees room.
#[tokio::test]
async fn client_and_service_limits_refuse_with_error_responses() {
    let core = distro_core::Config {
        max_clients: 1,
        max_services_per_namespace: 2,
        ..distro_core::Config::default()
    };
    let node = Arc::new(
        distro_core::Node::new(
            core,
            distro_core::MemberList::new("127.0.0.1:8848", &[]).expect("members"),
            wall_ms(),
        )
        .expect("core config"),
    );
    let server = TestServer::start_node(node, fast_config()).await;
    let mut first = Raw::connect(&server).await;
    first.setup().await;
    for svc in ["a", "b"] {
        assert_ok(
            &first
                .call("InstanceRequest", register_body(svc, "10.0.0.1", 1))
                .await,
            "InstanceResponse",
        );
    }
    let msg = assert_error(
        &first
            .call("InstanceRequest", register_body("c", "10.0.0.1", 1))
            .await,
        400,
    );
    println!("a third service: {msg}");
    assert!(
        msg.contains(
            "namespace public already holds 2 services, the limit is 2 (max_services_per_namespace)"
        ),
        "{msg}"
    );
    // A second connection client is one more than max_clients.
    let mut second = Raw::connect(&server).await;
    second.setup().await;
    let msg = assert_error(
        &second
            .call("InstanceRequest", register_body("a", "10.0.0.2", 2))
            .await,
        400,
    );
    println!("a second client: {msg}");
    assert!(
        msg.contains("already owns 1 clients, the limit is 1 (max_clients)"),
        "{msg}"
    );
    // The admitted client keeps working; its deregistration frees a service.
    let mut dereg = register_body("b", "10.0.0.1", 1);
    dereg["type"] = json!("deregisterInstance");
    assert_ok(
        &first.call("InstanceRequest", dereg).await,
        "InstanceResponse",
    );
    assert_ok(
        &first
            .call("InstanceRequest", register_body("c", "10.0.0.1", 1))
            .await,
        "InstanceResponse",
    );
    assert_eq!(server.instances("c"), vec!["10.0.0.1:1".to_string()]);
    // The end of the first connection frees its client: the second is admitted.
    drop(first);
    wait_until("the first client is removed", || {
        server.instances("a").is_empty()
    })
    .await;
    assert_ok(
        &second
            .call("InstanceRequest", register_body("a", "10.0.0.2", 2))
            .await,
        "InstanceResponse",
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_streams_and_refuses_requests() {
    let server = TestServer::start(fast_config()).await;
    let mut c = Raw::connect(&server).await;
    c.setup().await;
    assert_ok(
        &c.call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
            .await,
        "InstanceResponse",
    );
    let nacos = server.nacos.clone();
    let node = server.node.clone();
    nacos.shutdown().await;
    assert!(c.next_message().await.is_none(), "the stream ends");
    let refused = c.call("HealthCheckRequest", json!({})).await;
    assert_error(&refused, 300);
    assert_eq!(nacos.connection_count(), 0);
    assert!(
        node.registry().stats().clients == 0,
        "clients removed at shutdown"
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_that_never_set_up_are_forgotten() {
    let config = NacosConfig {
        setup_timeout: Duration::from_millis(200),
        max_connections: 1,
        ..fast_config()
    };
    let server = TestServer::start(config).await;
    let mut idle = Raw::connect(&server).await;
    assert_ok(
        &idle.call("ServerCheckRequest", json!({})).await,
        "ServerCheckResponse",
    );
    // It holds the only slot until the setup timeout frees it.
    let mut other = Raw::connect(&server).await;
    assert_error(&other.call("ServerCheckRequest", json!({})).await, 503);
    wait_until("the half set-up connection is forgotten", || {
        server
            .nacos
            .stats()
            .connections_closed
            .contains(&("setup_timeout", 1))
    })
    .await;
    other.setup().await;
    assert_ok(
        &other
            .call("InstanceRequest", register_body("svc", "10.0.0.1", 1))
            .await,
        "InstanceResponse",
    );
    server.stop().await;
}

/// A node that has not loaded its snapshot yet refuses SDKs with 300 ("Server is
/// starting"), so they pick another server instead of reading a partial registry; once
/// loaded it serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_still_loading_its_snapshot_answers_300_then_serves() {
    use distro_core::{Config, MemberList, MemberState, Node};
    let members = ["127.0.0.1:8848".to_string(), "127.0.0.1:1".to_string()];
    let node = Arc::new(
        Node::new(
            Config::default(),
            MemberList::new("127.0.0.1:8848", &members).expect("member list"),
            wall_ms(),
        )
        .expect("config"),
    );
    assert!(!node.is_loaded());
    let server = TestServer::start_node(node.clone(), fast_config()).await;
    let mut raw = Raw::connect(&server).await;
    for t in [
        "ServerCheckRequest",
        "HealthCheckRequest",
        "InstanceRequest",
    ] {
        let (ty, v) = raw.call(t, json!({"headers":{}})).await;
        assert_eq!(ty, "ErrorResponse", "{t}: {v}");
        assert_eq!(
            (v["resultCode"].as_i64(), v["errorCode"].as_i64()),
            (Some(500), Some(300))
        );
        assert!(
            v["message"]
                .as_str()
                .unwrap_or("")
                .contains("loading its snapshot"),
            "{v}"
        );
    }
    let (_tx, rx) = tokio::sync::mpsc::channel::<Payload>(1);
    let refused = BiRequestStreamClient::new(raw.channel.clone())
        .request_bi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("no stream while starting");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    // The only peer is DOWN: the node starts the cluster's state and serves.
    let peer = node.members().peers().next().expect("a peer");
    node.set_member_state(peer, MemberState::Down, wall_ms());
    node.tick(wall_ms());
    assert!(node.is_loaded());
    let (ty, v) = raw.call("ServerCheckRequest", json!({"headers":{}})).await;
    assert_eq!(ty, "ServerCheckResponse", "{v}");
    raw.setup().await;
    let (ty, v) = raw
        .call("InstanceRequest", register_body("late", "10.0.9.1", 80))
        .await;
    assert_eq!(ty, "InstanceResponse", "{v}");
    server.stop().await;
}
