//! The cluster's defences against hostile peers and clients: the cluster token, the peer
//! protocol only on the cluster port, a peer message without the token refused before it
//! is decoded, and malformed requests on every API answered with clear errors while the
//! node keeps serving.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_need_the_cluster_token_and_the_peer_protocol_is_only_on_the_cluster_port() {
    let mut config = fast_config();
    config.cluster_token = Some("s3cret".into());
    let c = cluster(2, config).await;
    let me = member_addr(&c, 1);
    let probe = |from: &str| pb::ProbeRequest {
        from: from.to_string(),
        incarnation: 1,
        loaded: true,
    };
    let mut peer = peer_client(&c, 0).await;
    let e = peer.probe(probe(&me)).await.expect_err("no token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let mut wrong = tonic::Request::new(probe(&me));
    wrong
        .metadata_mut()
        .insert("x-distro-cluster-token", "guess".parse().expect("ascii"));
    let e = peer.probe(wrong).await.expect_err("wrong token");
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut right = tonic::Request::new(probe("10.10.10.10:1"));
    right
        .metadata_mut()
        .insert("x-distro-cluster-token", "s3cret".parse().expect("ascii"));
    let e = peer.probe(right).await.expect_err("not a member");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let mut right = tonic::Request::new(probe(&me));
    right
        .metadata_mut()
        .insert("x-distro-cluster-token", "s3cret".parse().expect("ascii"));
    peer.probe(right)
        .await
        .expect("a member with the token is answered");
    let refused = c
        .metrics(0)
        .expect("runs")
        .peer_unauthenticated
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 2);
    // The SDK port does not serve the peer protocol.
    let mut on_sdk = pb::peer_client::PeerClient::connect(format!("http://{}", c.sdk_addr(0)))
        .await
        .expect("connect");
    let e = on_sdk.probe(probe(&me)).await.expect_err("not served");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
    // Nor does the cluster port serve the SDK port's APIs: not the native API, not the
    // Nacos unary call (it is served by the same HTTP/2 connection code, without them).
    let cluster_uri = format!("http://127.0.0.1:{}", c.ports(0).cluster);
    let mut native = pb::registry_client::RegistryClient::connect(cluster_uri.clone())
        .await
        .expect("connect");
    let e = native
        .query(pb::QueryRequest::default())
        .await
        .expect_err("not served");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
    let mut nacos =
        distro_server::proto::nacos::request_client::RequestClient::connect(cluster_uri)
            .await
            .expect("connect");
    let e = nacos
        .request(distro_server::proto::nacos::Payload::default())
        .await
        .expect_err("not served");
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
    // The peer protocol there still answers (above: the token refusals came from it).
    peer.probe(probe(&me))
        .await
        .expect_err("still refused without the token");
    // Nodes with the token replicate normally.
    assert_eq!(register_http(&c, 0, "tokens", "10.5.0.1", 80).await.0, 200);
    eventually("replicated with the token", Duration::from_secs(5), || {
        all_hold(&c, "10.5.0.1", 80)
    })
    .await;
    c.shutdown().await;
}

/// A gRPC codec of raw bytes: sends a body that is not a valid message, to see whether
/// the server decodes it.
#[derive(Clone, Copy, Default)]
pub(crate) struct RawBytes;

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        *self
    }
    fn decoder(&mut self) -> Self {
        *self
    }
}

/// Sends `body` as a `distro.v1.Peer/Sync` request with `token` and returns the status.
async fn raw_sync(channel: tonic::transport::Channel, token: &str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX);
    grpc.ready().await.expect("ready");
    let mut req = tonic::Request::new(body);
    req.metadata_mut()
        .insert("x-distro-cluster-token", token.parse().expect("ascii"));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/distro.v1.Peer/Sync");
    grpc.unary(req, path, RawBytes)
        .await
        .expect_err("the body is not a sync request")
}

/// The cluster token is checked on the metadata before the body is decoded: 32 MiB that
/// are not a valid message, sent with a wrong token, are refused as unauthenticated (had
/// they been decoded, the answer would be the decode error that the right token gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_message_without_the_token_is_refused_before_it_is_decoded() {
    let mut config = fast_config();
    config.cluster_token = Some("s3cret".into());
    let c = cluster(2, config).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", c.ports(0).cluster))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
    let garbage = vec![0xff_u8; 32 * 1024 * 1024];
    let e = raw_sync(channel.clone(), "guess", garbage.clone()).await;
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(e.message().contains("cluster token"), "{e}");
    let e = raw_sync(channel, "s3cret", garbage).await;
    assert_ne!(e.code(), tonic::Code::Unauthenticated, "{e}");
    assert!(
        e.message().contains("decode"),
        "the right token gets the body decoded: {e}"
    );
    let refused = c
        .metrics(0)
        .expect("runs")
        .peer_unauthenticated
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors_and_the_node_keeps_serving() {
    let c = cluster(2, fast_config()).await;
    let base = format!("http://{}", c.http_addr(0));
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        (
            "POST",
            "/nacos/v1/ns/instance?ip=1.1.1.1&port=80",
            400,
            "serviceName",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&port=80",
            400,
            "ip",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=abc",
            400,
            "port",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=0",
            400,
            "port",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=80&weight=-1",
            400,
            "weight",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=80&clusterName=a%20b",
            400,
            "clusterName",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=80&metadata=%7Bbad",
            400,
            "metadata",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=80&ephemeral=false",
            400,
            "persistent",
        ),
        (
            "POST",
            "/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=80&healthy=maybe",
            400,
            "healthy",
        ),
        (
            "PUT",
            "/nacos/v1/ns/instance/beat?serviceName=s&beat=%7Bnot-json",
            400,
            "beat",
        ),
        ("GET", "/nacos/v1/ns/service/list?pageNo=1", 400, "pageSize"),
        (
            "GET",
            "/nacos/v1/ns/service/list?pageNo=0&pageSize=10",
            400,
            "pageNo",
        ),
        (
            "GET",
            "/nacos/v1/ns/instance?serviceName=s&ip=9.9.9.9&port=1",
            404,
            "no instance",
        ),
    ];
    for (method, path, want, mention) in cases {
        let req = match method {
            "POST" => http().post(format!("{base}{path}")),
            "PUT" => http().put(format!("{base}{path}")),
            _ => http().get(format!("{base}{path}")),
        };
        let (status, body) = send(req).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        assert!(
            body.contains(mention),
            "{method} {path}: {body:?} should mention {mention}"
        );
    }
    // An oversized body is refused.
    let (status, _) = send(
        http()
            .post(format!("{base}/nacos/v1/ns/instance"))
            .body(vec![b'a'; 2 << 20]),
    )
    .await;
    assert_eq!(status, 413);
    // Too much metadata is refused with the limit.
    let meta = format!(
        "{{{}}}",
        (0..70)
            .map(|i| format!("\"k{i}\":\"v\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let url = format!("{base}/nacos/v1/ns/instance?serviceName=s&ip=1.1.1.1&port=80");
    let (status, body) = send(http().post(url).form(&[("metadata", meta)])).await;
    assert_eq!(status, 400);
    assert!(body.contains("metadata") && body.contains("64"), "{body}");
    // Native API: per-item errors name the field; oversized requests are refused whole.
    let mut native =
        pb::registry_client::RegistryClient::connect(format!("http://{}", c.sdk_addr(0)))
            .await
            .expect("connect");
    let bad = pb::Registration {
        service: Some(pb::ServiceRef {
            name: "s".into(),
            ..Default::default()
        }),
        instance: Some(pb::Instance {
            ip: "1.1.1.1".into(),
            port: 70_000,
            weight: 1.0,
            ..Default::default()
        }),
    };
    let r = native
        .register(pb::RegisterRequest {
            registrations: vec![bad.clone()],
        })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(r.results[0].code, 400);
    assert!(r.results[0].message.contains("port"), "{:?}", r.results[0]);
    let e = native
        .register(pb::RegisterRequest {
            registrations: vec![bad; 10_001],
        })
        .await
        .expect_err("too many items");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // Peer protocol: a malformed sync is refused with the reason.
    let me = member_addr(&c, 1);
    let mut peer = peer_client(&c, 0).await;
    let change = pb::ClientChange {
        change: Some(pb::client_change::Change::Upsert(pb::ClientRecord {
            id: String::new(),
            revision: 1,
            owner: String::new(),
            publications: vec![],
        })),
    };
    let garbage = distro_server::cluster::sync_codec::SyncRequest::from_raw(
        me.clone(),
        vec![prost::Message::encode_to_vec(&change).into()],
    );
    let e = peer.sync(garbage).await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("clientId"), "{e}");
    // A compact batch whose record count runs past its end is refused likewise.
    let mut compact = vec![distro_server::cluster::compact::VERSION];
    compact.extend_from_slice(&[5, 0, 0]);
    let garbage = distro_server::cluster::sync_codec::SyncRequest::from_compact(me, compact.into());
    let e = peer.sync(garbage).await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("malformed compact batch"), "{e}");
    // And the node still serves.
    assert_eq!(
        register_http(&c, 0, "still-up", "10.6.0.1", 80).await,
        (200, "ok".to_string())
    );
    let (status, body) = send(http().get(format!("{base}/health"))).await;
    assert_eq!(status, 200, "{body}");
    c.shutdown().await;
}
