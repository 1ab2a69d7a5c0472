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
