//! The embedded ZooKeeper ensemble (the Debian package zookeeper's jar, run with `java`):
//! it starts, elects a leader, and is removed without a trace; a missing jar names the
//! package. Without the jar the first test says so and passes, unless `CI` is set.

use std::path::Path;

use loadgen::run::zookeeper_cluster::{ZOOKEEPER_JAR, ZookeeperEnsemble};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_ensemble_elects_a_leader_and_leaves_nothing_behind() {
    if !Path::new(ZOOKEEPER_JAR).is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{ZOOKEEPER_JAR} is not installed (Debian package zookeeper) and CI is set"
        );
        eprintln!("SKIPPED: {ZOOKEEPER_JAR} is not installed (apt-get install zookeeper)");
        return;
    }
    let ensemble = ZookeeperEnsemble::start(3).await.expect("start 3 members");
    let modes = ensemble.modes().await;
    let leaders = modes
        .iter()
        .filter(|m| m.as_deref() == Some("leader"))
        .count();
    let followers = modes
        .iter()
        .filter(|m| m.as_deref() == Some("follower"))
        .count();
    assert_eq!((leaders, followers), (1, 2), "{modes:?}");
    let dir = ensemble.dir().expect("a directory");
    let pids = ensemble.pids();
    ensemble.shutdown().await;
    assert!(!dir.exists(), "{} was not removed", dir.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "ZooKeeper member {pid} still exists"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_jar_names_the_debian_package() {
    let err = ZookeeperEnsemble::start_with(
        Path::new("/nonexistent/loadgen-test/zookeeper.jar"),
        Path::new("java"),
        3,
    )
    .await
    .expect_err("no such jar");
    let msg = format!("{err:#}");
    assert!(msg.contains("package zookeeper"), "{msg}");
}
