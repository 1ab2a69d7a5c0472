//! The driver's sync flushes between ticks (`ServerConfig::sync_flush`): what is due to a
//! peer leaves at the next flush, not at the next tick.

use super::{cluster, eventually, fast_config, holds, register_http};
use distro_core::Route;
use std::time::Duration;

/// Ticks 3 s apart, a sync delay of 200 ms: each registration reaches the replica within
/// 1.5 s. Without the flushes a registration made just after a tick (the second one, made
/// as soon as the first arrived, which a tick sent) would wait for the next tick, ~3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_syncs_leave_between_ticks() {
    let mut config = fast_config();
    config.tick = Duration::from_secs(3);
    let c = cluster(2, config).await;
    let n0 = c.node(0).expect("node 0 runs");
    let n1 = c.node(1).expect("node 1 runs");
    let owned = (0..10_000u32)
        .map(|i| format!("10.7.{}.{}", i / 250, i % 250))
        .filter(|ip| matches!(n0.route(&format!("{ip}:8080")), Route::Local))
        .take(3);
    for ip in owned {
        let (status, body) = register_http(&c, 0, "orders", &ip, 8080).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        assert!(!holds(&n1, &ip, 8080), "{ip} waits for the sync delay");
        let took = eventually("the replica holds it", Duration::from_millis(1_500), || {
            holds(&n1, &ip, 8080)
        })
        .await;
        eprintln!("{ip}:8080 replicated after {took:?}");
    }
    c.shutdown().await;
}
