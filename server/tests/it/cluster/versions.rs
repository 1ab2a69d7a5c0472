//! Peers tell each other which definition their verify digests follow
//! (`distro_core::hash::DIGEST_VERSION`), so a node meeting a build from the other side of
//! a digest change counts it (`distro_verify_other_digests`) and says so in its log,
//! instead of every shard just differing.

use super::*;
use distro_core::hash::DIGEST_VERSION;
use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_digest_definition_is_counted_and_answered_with_ours() {
    let c = cluster(2, fast_config()).await;
    let me = member_addr(&c, 1);
    let shards = c.node(0).expect("runs").registry().shard_count();
    let ask = |version: u32| pb::VerifyDigestsRequest {
        from: me.clone(),
        digests: vec![pb::ShardDigest::default(); shards as usize],
        digest_version: version,
    };
    let mut peer = peer_client(&c, 0).await;
    let other = || {
        c.metrics(0)
            .expect("runs")
            .verify_other_digests
            .load(Ordering::Relaxed)
    };
    // This build's definition, and none at all (a build before it was sent): not counted.
    for version in [DIGEST_VERSION, 0] {
        let r = peer.verify_digests(ask(version)).await.expect("answered");
        let r = r.into_inner();
        assert_eq!(r.digest_version, DIGEST_VERSION, "asked with {version}");
        assert!(r.mismatched_shards.is_empty(), "both nodes are empty");
    }
    assert_eq!(other(), 0);
    // Another definition: answered as before (the digests are compared all the same),
    // and counted each time.
    for _ in 0..2 {
        let r = peer
            .verify_digests(ask(DIGEST_VERSION + 1))
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(r.digest_version, DIGEST_VERSION);
    }
    assert_eq!(other(), 2);
    let text = http()
        .get(format!("http://{}/metrics", c.http_addr(0)))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        text.lines()
            .any(|l| l == "distro_verify_other_digests_total 2"),
        "{text}"
    );
}

/// A peer of another build, as far as verify goes: it answers probes (not loaded until
/// `loaded` is set, so the node beside it cold-starts), refuses snapshots, answers every
/// verify-digests request with no mismatched shard and its own definition, `version`, and
/// keeps the definition each request carried. Nothing else of the protocol is served.
struct OtherBuild {
    version: u32,
    loaded: Arc<std::sync::atomic::AtomicBool>,
    asked_with: Arc<std::sync::Mutex<Vec<u32>>>,
}

fn not_served() -> tonic::Status {
    tonic::Status::unimplemented("not served by this test's peer")
}

#[tonic::async_trait]
impl pb::peer_server::Peer for OtherBuild {
    async fn sync(
        &self,
        _: tonic::Request<distro_server::cluster::sync_codec::SyncRequest>,
    ) -> Result<tonic::Response<pb::SyncResponse>, tonic::Status> {
        Err(not_served())
    }

    async fn verify_digests(
        &self,
        request: tonic::Request<pb::VerifyDigestsRequest>,
    ) -> Result<tonic::Response<pb::VerifyDigestsResponse>, tonic::Status> {
        let asked = request.get_ref().digest_version;
        self.asked_with.lock().expect("not poisoned").push(asked);
        Ok(tonic::Response::new(pb::VerifyDigestsResponse {
            mismatched_shards: Vec::new(),
            digest_version: self.version,
        }))
    }

    async fn verify_list(
        &self,
        _: tonic::Request<pb::VerifyListRequest>,
    ) -> Result<tonic::Response<pb::VerifyListResponse>, tonic::Status> {
        Err(not_served())
    }

    async fn verify_clients(
        &self,
        _: tonic::Request<pb::VerifyClientsRequest>,
    ) -> Result<tonic::Response<pb::VerifyClientsResponse>, tonic::Status> {
        Err(not_served())
    }

    type SnapshotStream = futures::stream::Empty<
        Result<distro_server::cluster::sync_codec::SnapshotChunk, tonic::Status>,
    >;

    async fn snapshot(
        &self,
        _: tonic::Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, tonic::Status> {
        Err(tonic::Status::failed_precondition(
            distro_server::cluster::peer::SNAPSHOT_NOT_LOADED,
        ))
    }

    async fn probe(
        &self,
        _: tonic::Request<pb::ProbeRequest>,
    ) -> Result<tonic::Response<pb::ProbeResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::ProbeResponse {
            incarnation: 1,
            loaded: self.loaded.load(Ordering::SeqCst),
        }))
    }

    async fn forward(
        &self,
        _: tonic::Request<distro_server::proto::writes::ForwardRequest>,
    ) -> Result<tonic::Response<distro_server::proto::results::ForwardResponse>, tonic::Status>
    {
        Err(not_served())
    }
}

/// The sending side of the exchange above: a node whose verify digests a peer answers
/// with another definition counts each answer (`distro_verify_other_digests`), and its
/// requests carry its own definition. The peer is a gRPC server of the test's, on the
/// cluster port of a second node that never starts: a real node always answers with this
/// build's definition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_counts_a_peer_answering_with_another_digest_definition() {
    let c = LocalCluster::start_some(2, fast_config(), 1, 1)
        .await
        .expect("node 0 starts");
    let listener = c
        .take_reserved_cluster_listener(1)
        .expect("node 1 never started");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked_with = Arc::new(std::sync::Mutex::new(Vec::new()));
    let other = OtherBuild {
        version: DIGEST_VERSION + 1,
        loaded: loaded.clone(),
        asked_with: asked_with.clone(),
    };
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::peer_server::PeerServer::new(other))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let node = c.node(0).expect("runs");
    // Its one peer is up and refuses its snapshot as not loaded: a cold start.
    eventually("node 0 loaded", Duration::from_secs(10), || {
        node.is_loaded()
    })
    .await;
    assert_eq!(
        asked_with.lock().expect("not poisoned").len(),
        0,
        "no verify yet"
    );
    // Verify goes to loaded peers only.
    loaded.store(true, Ordering::SeqCst);
    let other = || {
        c.metrics(0)
            .expect("runs")
            .verify_other_digests
            .load(Ordering::Relaxed)
    };
    eventually(
        "node 0 counted an answer of another definition",
        Duration::from_secs(10),
        || other() >= 2,
    )
    .await;
    let asked = asked_with.lock().expect("not poisoned").clone();
    assert!(asked.len() >= 2, "{asked:?}");
    assert!(
        asked.iter().all(|v| *v == DIGEST_VERSION),
        "the requests carry this build's definition: {asked:?}"
    );
    server.abort();
    c.shutdown().await;
}
