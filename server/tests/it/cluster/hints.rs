//! Writes applied with the prefetch hints on (`Config::prefetch_from` 0: a registry of any
//! size asks for each write's memory ahead) answer exactly as with them off: the forwarder's
//! two loops (the items a node owns of a client's batch, a forwarded batch) keep every
//! result in its item's place, and the clients end where they end without the hints.

use super::{cluster, eventually, fast_config, registration};
use distro_server::proto::distro as pb;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_batches_answer_the_same_with_the_hints_on() {
    let svc = pb::ServiceRef {
        name: "hinted".into(),
        ..Default::default()
    };
    let ip = |i: u32| format!("10.4.0.{i}");
    let mut answers = Vec::new();
    for from in [usize::MAX, 0] {
        let mut config = fast_config();
        config.protocol.prefetch_from = from;
        let c = cluster(3, config).await;
        let active: Vec<bool> = (0..3)
            .map(|i| c.node(i).expect("runs").registry().write_hints().active())
            .collect();
        assert_eq!(active, [from == 0; 3], "prefetch from {from}");
        let mut client =
            pb::registry_client::RegistryClient::connect(format!("http://{}", c.sdk_addr(0)))
                .await
                .expect("connect");
        let mut registrations: Vec<pb::Registration> =
            (0..60).map(|i| registration(&svc, ip(i), 7000)).collect();
        // Three bad items among the good ones, at places the results must keep.
        registrations[7].instance = None;
        registrations[20].instance.as_mut().expect("set").ip = "not an ip".into();
        registrations[41].instance.as_mut().expect("set").port = 0;
        let registered = client
            .register(pb::RegisterRequest { registrations })
            .await
            .expect("register")
            .into_inner()
            .results;
        let codes: Vec<u32> = registered.iter().map(|r| r.code).collect();
        let want: Vec<u32> = (0..60)
            .map(|i| if [7, 20, 41].contains(&i) { 400 } else { 200 })
            .collect();
        assert_eq!(codes, want, "prefetch from {from}: {registered:?}");
        let beats = (0..60)
            .map(|i| pb::Beat {
                service: Some(svc.clone()),
                ip: ip(i),
                port: 7000,
                cluster: String::new(),
            })
            .collect();
        let beaten = client
            .heartbeat(pb::HeartbeatRequest { beats })
            .await
            .expect("beat")
            .into_inner()
            .results;
        let owned: Vec<u64> = (0..3)
            .map(|i| c.node(i).expect("runs").owned_clients())
            .collect();
        assert_eq!(owned.iter().sum::<u64>(), 57, "prefetch from {from}");
        assert!(
            owned.iter().all(|&n| n > 0),
            "every node owns some: {owned:?}"
        );
        let nodes: Vec<_> = (0..3).map(|i| c.node(i).expect("runs")).collect();
        eventually("every node holds the 57", Duration::from_secs(10), || {
            nodes.iter().all(|n| n.registry().stats().clients == 57)
        })
        .await;
        answers.push((registered, beaten));
        c.shutdown().await;
    }
    assert_eq!(answers[0], answers[1], "the same answers with the hints on");
}
