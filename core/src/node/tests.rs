//! Unit tests of [`Node`] on its own: sync after the delay, a standalone node, ip:port
//! clients' own addresses, heartbeat checks. Protocol properties across nodes and faults
//! are the simulator's (`sim.rs`, `core/tests/simulation.rs`).

use super::{BeatResult, Node};
use crate::config::Config;
use crate::member::{MemberId, MemberList};
use crate::message::{Command, PeerRequest};
use crate::model::{ClientId, InstanceSpec, ServiceSpec};
use crate::registry::WriteResult;

mod burst;
mod deregister;
mod flush;
mod leave;
mod register;
mod register_new;

fn node(me: &str, n: usize) -> Node {
    let addrs: Vec<String> = (1..=n).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        ..Config::default()
    };
    Node::new(cfg, MemberList::new(me, &addrs).unwrap(), 1_000).unwrap()
}

fn sends(cmds: &[Command]) -> Vec<(&MemberId, &PeerRequest)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Send { to, request } => Some((to, request)),
            _ => None,
        })
        .collect()
}

/// Member 1 of 3 holding one connection client, registered at 0 and pending for both peers.
fn node_with_one_client() -> (Node, ClientId) {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::connection(1, "1.1.1.1", 1);
    n.register(
        &id,
        &ServiceSpec::new("", "", "svc"),
        &InstanceSpec::new("1.1.1.1", 80),
        0,
    )
    .unwrap();
    (n, id)
}

#[test]
fn a_change_is_synced_to_every_peer_after_the_delay() {
    let (n, _) = node_with_one_client();
    n.tick(0);
    let before: Vec<_> = n
        .tick(999)
        .into_iter()
        .filter(|c| {
            matches!(
                c,
                Command::Send {
                    request: PeerRequest::Sync(_),
                    ..
                }
            )
        })
        .collect();
    assert!(before.is_empty());
    let cmds = n.tick(1000);
    let syncs: Vec<_> = sends(&cmds)
        .into_iter()
        .filter(|(_, r)| matches!(r, PeerRequest::Sync(_)))
        .collect();
    assert_eq!(syncs.len(), 2);
}

#[test]
fn standalone_is_loaded_and_sends_nothing() {
    let n = node("10.0.0.1:8848", 1);
    assert!(n.is_loaded());
    let id = ClientId::ip_port("1.1.1.1", 80);
    n.register(
        &id,
        &ServiceSpec::new("", "", "svc"),
        &InstanceSpec::new("1.1.1.1", 80),
        0,
    )
    .unwrap();
    assert!(n.tick(10_000).is_empty());
}

#[test]
fn ip_port_clients_publish_only_their_own_address() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let e = n
        .register(
            &id,
            &ServiceSpec::new("", "", "svc"),
            &InstanceSpec::new("1.1.1.2", 80),
            0,
        )
        .unwrap_err();
    assert!(e.to_string().contains("clientId"), "{e}");
}

#[test]
fn heartbeats_keep_instances_healthy_then_they_expire() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let svc = ServiceSpec::new("", "", "svc");
    n.register(&id, &svc, &InstanceSpec::new("1.1.1.1", 80), 0)
        .unwrap();
    n.tick(0);
    assert_eq!(n.beat(&id, &svc, 4_000).unwrap(), BeatResult::Ok);
    n.tick(10_000);
    let healthy = |n: &Node| n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy;
    assert!(healthy(&n));
    n.tick(20_000); // 16 s after the last beat
    assert!(!healthy(&n));
    assert_eq!(n.beat(&id, &svc, 21_000).unwrap(), BeatResult::Ok);
    assert!(healthy(&n));
    n.tick(25_000);
    n.tick(30_000);
    n.tick(35_000);
    n.tick(40_000);
    n.tick(45_000);
    n.tick(50_000); // 29 s after the last beat
    assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 1);
    n.tick(55_000); // 34 s
    assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 0);
    assert_eq!(n.beat(&id, &svc, 56_000).unwrap(), BeatResult::NotFound);
}

#[test]
fn per_instance_heartbeat_overrides() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let svc = ServiceSpec::new("", "", "svc");
    let mut spec = InstanceSpec::new("1.1.1.1", 80);
    spec.metadata = vec![
        ("preserved.heart.beat.timeout".into(), "3000".into()),
        ("preserved.ip.delete.timeout".into(), "6000".into()),
    ];
    n.register(&id, &svc, &spec, 0).unwrap();
    n.tick(0);
    n.tick(5_000);
    assert!(!n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy);
    n.tick(10_000);
    assert_eq!(n.query(&svc).unwrap().unwrap().instance_count(), 0);
}

/// The sync requests among `cmds`.
fn syncs(cmds: &[Command]) -> usize {
    sends(cmds)
        .into_iter()
        .filter(|(_, r)| matches!(r, PeerRequest::Sync(_)))
        .count()
}

#[test]
fn a_beat_of_a_healthy_instance_only_moves_its_beat_time() {
    let n = node("10.0.0.1:8848", 3);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let svc = ServiceSpec::new("", "", "svc");
    let spec = InstanceSpec::new("1.1.1.1", 80);
    n.register(&id, &svc, &spec, 0).unwrap();
    n.tick(0);
    assert_eq!(syncs(&n.tick(1_000)), 2, "the registration is synced");
    let shard = n.registry().shard_of(&id);
    let before = n.registry().get(id.as_str()).unwrap();
    let digest = n.registry().digest(n.me(), shard);

    // Beats: the same stored client, revision and digest; nothing for peers.
    for t in [2_000, 7_000, 12_000] {
        assert_eq!(n.beat(&id, &svc, t).unwrap(), BeatResult::Ok);
        let after = n.registry().get(id.as_str()).unwrap();
        assert!(
            std::sync::Arc::ptr_eq(&before, &after),
            "a beat built a client"
        );
        assert_eq!(after.revision(), before.revision());
        assert_eq!(n.registry().digest(n.me(), shard), digest);
        assert_eq!(syncs(&n.tick(t + 1_500)), 0, "a beat was synced");
    }
    // The owner's heartbeat check saw them: healthy 18 s after the registration.
    let healthy = |n: &Node| n.query(&svc).unwrap().unwrap().publications[0].instances[0].healthy;
    n.tick(18_000);
    assert!(healthy(&n));

    // The same registration again is a beat too: no write, the beat time moves.
    assert_eq!(
        n.register(&id, &svc, &spec, 20_000).unwrap(),
        crate::WriteResult::Unchanged
    );
    n.tick(30_000); // 18 s after the last beat at 12 s, 10 s after the registration
    assert!(healthy(&n));
    assert_eq!(syncs(&n.tick(31_500)), 0);
    let after = n.registry().get(id.as_str()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&before, &after));

    // A beat that finds the instance unhealthy writes, and that write is synced.
    n.tick(36_000); // 16 s after the registration at 20 s
    assert!(!healthy(&n));
    assert_eq!(syncs(&n.tick(37_500)), 2, "the health change is synced");
    assert_eq!(n.beat(&id, &svc, 38_000).unwrap(), BeatResult::Ok);
    assert!(healthy(&n));
    let healed = n.registry().get(id.as_str()).unwrap();
    assert!(healed.revision() > before.revision());
    assert_eq!(syncs(&n.tick(39_500)), 2, "making it healthy is synced");

    // A beat names its service validly or gets an error naming the field, not "not found".
    let bad = ServiceSpec::new("", "", "bad\u{1}name");
    let e = n.beat(&id, &bad, 40_000).unwrap_err();
    assert!(e.to_string().contains("control character"), "{e}");
    let long = ServiceSpec::new("", "", &"s".repeat(300));
    assert!(n.beat(&id, &long, 40_000).is_err());
    let other = ServiceSpec::new("", "", "other");
    assert_eq!(n.beat(&id, &other, 40_000).unwrap(), BeatResult::NotFound);
}

#[test]
fn names_of_services_nobody_publishes_to_any_more_are_freed() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::ip_port("1.1.1.1", 80);
    let mut spec = InstanceSpec::new("1.1.1.1", 80);
    let mut now = 0;
    n.tick(now);
    for i in 0..2_000 {
        // A new service name, cluster name and metadata key every time.
        spec.cluster = format!("c{i}");
        spec.metadata = vec![(format!("key-{i}"), "v".into())];
        let svc = ServiceSpec::new("", "", &format!("svc-{i}"));
        n.register(&id, &svc, &spec, now).unwrap();
        n.remove_client(&id, now);
        now += 1_000;
        n.tick(now);
    }
    // Empty services are collected a minute after they emptied, so about 60 services
    // (3 names each) are still held, plus what the map has not freed yet; without
    // reclamation 6,000 names would be.
    let names = n.registry().interner().len();
    eprintln!("{names} names interned after 2,000 services came and went");
    assert!(names < 300, "{names} names interned");
}

fn releases(cmds: &[Command]) -> usize {
    cmds.iter()
        .filter(|c| matches!(c, Command::ReleaseMemory))
        .count()
}

/// After a burst of removals, the collection asks the runtime to give memory back at the
/// first round that frees nothing more, and once more two rounds later; not during the
/// burst, and not for a few removals.
#[test]
fn a_burst_of_removals_asks_to_release_memory_after_it() {
    let mut cfg = Config {
        shards: 64,
        ..Config::default()
    };
    cfg.peer_timeout = 1_000;
    cfg.tombstone_ttl = 1_000;
    cfg.empty_service_ttl = 1_000;
    cfg.health_check_interval = 100;
    let me = "10.0.0.1:8848";
    let n = Node::new(cfg, MemberList::new(me, &[me.to_string()]).unwrap(), 1_000).unwrap();
    let mut now = 0;
    let mut released = releases(&n.tick(now));
    let burst = |n: &Node, count: usize, now: u64| {
        for i in 0..count {
            let ip = format!("10.{}.{}.1", i / 250, i % 250);
            let id = ClientId::ip_port(&ip, 80);
            let spec = InstanceSpec::new(&ip, 80);
            let svc = ServiceSpec::new("", "", &format!("svc-{i}"));
            n.register(&id, &svc, &spec, now).unwrap();
            n.remove_client(&id, now);
        }
    };
    // A few removals: nothing to release.
    burst(&n, 100, now);
    for _ in 0..50 {
        now += 100;
        released += releases(&n.tick(now));
    }
    assert_eq!(released, 0);
    // A burst of 5,000 clients: 5,000 tombstones, services and 5,000 names at least.
    burst(&n, 5_000, now);
    let mut rounds = Vec::new();
    for round in 0..50 {
        now += 100;
        if releases(&n.tick(now)) > 0 {
            rounds.push(round);
        }
    }
    // Once at the end of the burst, and once more two rounds later (for what the first
    // release let the next collection free).
    assert_eq!(rounds.len(), 2, "released at rounds {rounds:?}");
    assert_eq!(rounds[1], rounds[0] + 2, "released at rounds {rounds:?}");
    assert_eq!(n.registry().stats().tombstones, 0);
    assert_eq!(n.registry().stats().services, 0);
}

/// A node of 3 with sync batches of at most `entries` clients, `inflight` in flight.
fn small_batches(entries: usize, inflight: usize) -> Node {
    let addrs: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_entries: entries,
        max_inflight_batches: inflight,
        ..Config::default()
    };
    Node::new(
        cfg,
        MemberList::new("10.0.0.1:8848", &addrs).unwrap(),
        1_000,
    )
    .unwrap()
}

/// Registers `count` connection clients (numbered from `from`) at `now`, with
/// `metadata` bytes of metadata each.
fn register_many(n: &Node, from: usize, count: usize, metadata: usize, now: u64) {
    for i in from..from + count {
        let ip = format!("10.9.{}.{}", i / 250, i % 250);
        let id = ClientId::connection(1, &ip, 1);
        let mut spec = InstanceSpec::new(&ip, 80);
        if metadata > 0 {
            spec.metadata = vec![("k".into(), "v".repeat(metadata))];
        }
        n.register(&id, &ServiceSpec::new("", "", "svc"), &spec, now)
            .unwrap();
    }
}

/// The sizes of the sync batches among `cmds`, per peer index.
fn batch_sizes(cmds: &[Command]) -> Vec<(u16, usize)> {
    let mut sizes: Vec<(u16, usize)> = sends(cmds)
        .into_iter()
        .filter_map(|(to, r)| match r {
            PeerRequest::Sync(b) => Some((to.0, b.changes.len())),
            _ => None,
        })
        .collect();
    // In (peer, size) order: the order the commands came in is not asserted anywhere.
    sizes.sort_unstable();
    sizes
}

#[test]
fn clients_of_a_full_batch_are_each_sent_once_and_changes_still_merge() {
    let n = small_batches(10, 4);
    n.tick(0);
    // 9 clients, each changed three times: 9 pending entries, less than a batch.
    for round in 0..3 {
        register_many(&n, 0, 9, round, 10 + round as u64);
    }
    assert_eq!(n.pending_sync(MemberId(1)), 9);
    assert!(
        batch_sizes(&n.tick(100)).is_empty(),
        "a partial batch waits"
    );
    // A 10th client fills the batch: it leaves with every client's latest state.
    register_many(&n, 9, 1, 0, 200);
    let cmds = n.tick(300);
    let mut ids = Vec::new();
    for (to, r) in sends(&cmds) {
        let PeerRequest::Sync(b) = r else { continue };
        assert_eq!(b.changes.len(), 10, "to {to}");
        for c in &b.changes {
            ids.push((to.0, c.id()));
            // A flush sends the stored clients themselves, no records.
            let crate::registry::ClientChange::Stored(stored) = c else {
                panic!("a flush sent {c:?}");
            };
            let md = &stored.publications()[0].instances[0].metadata;
            if stored.id().as_str().contains("10.9.0.9") {
                continue;
            }
            assert_eq!(md.get("k").map(str::len), Some(2), "the latest state");
        }
    }
    ids.sort_unstable_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
    let before = ids.len();
    ids.dedup();
    assert_eq!((before, ids.len()), (20, 20));
    assert_eq!(n.pending_sync(MemberId(1)), 0);
    assert!(
        batch_sizes(&n.tick(5_000)).is_empty(),
        "nothing left to send"
    );
}

/// The changes a flush at `now` sends to peer 1: (id, whether a state, revision).
fn sent_to_peer_1(n: &Node, now: u64) -> Vec<(String, bool, crate::model::Revision)> {
    use crate::registry::ClientChange;
    let cmds = n.tick(now);
    let mut out = Vec::new();
    for (to, r) in sends(&cmds) {
        let PeerRequest::Sync(b) = r else { continue };
        if to.0 != 1 {
            continue;
        }
        for c in &b.changes {
            let state = matches!(c, ClientChange::Stored(_) | ClientChange::Upsert(_));
            out.push((c.id().as_str().to_string(), state, c.revision()));
        }
    }
    out
}

#[test]
fn a_flush_sends_the_newest_of_a_registration_and_a_deletion_merged() {
    // A registration's pending entry holds its stored state; a deletion after it (or a
    // registration after a deletion) within the delay sends what is newest.
    let n = small_batches(10, 4);
    n.tick(0);
    let (svc, spec) = (
        ServiceSpec::new("", "", "svc"),
        InstanceSpec::new("10.9.0.1", 80),
    );
    let id = ClientId::connection(1, "10.9.0.1", 1);
    let WriteResult::Changed(first) = n.register(&id, &svc, &spec, 10).unwrap() else {
        panic!("a registration")
    };
    let WriteResult::Deleted(deleted) = n.deregister(&id, &svc, 20).unwrap() else {
        panic!("a deletion")
    };
    assert!(deleted > first);
    let name = id.as_str().to_string();
    assert_eq!(
        sent_to_peer_1(&n, 1_010),
        vec![(name.clone(), false, deleted)]
    );
    // Registered again after the deletion, and changed: the last state is sent.
    n.register(&id, &svc, &spec, 2_010).unwrap();
    let mut changed = spec;
    changed.weight = 2.0;
    let WriteResult::Changed(last) = n.register(&id, &svc, &changed, 2_020).unwrap() else {
        panic!("a change")
    };
    assert_eq!(sent_to_peer_1(&n, 3_010), vec![(name, true, last)]);
    assert!(sent_to_peer_1(&n, 9_000).is_empty());
}

#[test]
fn an_answered_batch_frees_its_slot_for_the_next_full_one_at_once() {
    let n = small_batches(10, 1);
    n.tick(0);
    register_many(&n, 0, 35, 0, 10);
    // One batch per peer in flight: the others wait (backpressure).
    let cmds = n.tick(100);
    assert_eq!(batch_sizes(&cmds).len(), 2);
    assert!(batch_sizes(&n.tick(200)).is_empty(), "no free slot");
    assert_eq!(n.pending_sync(MemberId(1)), 25);
    let mut to_peer_1: Vec<_> = cmds
        .into_iter()
        .filter_map(|c| match c {
            Command::Send {
                to: MemberId(1),
                request,
            } => Some(request),
            _ => None,
        })
        .collect();
    let mut sent = 10;
    // Each answer sends the next full batch right away, without a tick; the partial rest
    // of 5, pending for longer than the burst's linger (20 ms), leaves with the last
    // refill.
    while let Some(request) = to_peer_1.pop() {
        let ack = Ok(crate::message::PeerResponse::SyncAck {
            applied: 10,
            stale: 0,
        });
        let more = n.handle_response(MemberId(1), request, ack, 300);
        let sizes = batch_sizes(&more);
        assert!(sizes.len() <= 1, "one slot: {sizes:?}");
        sent += sizes.iter().map(|s| s.1).sum::<usize>();
        to_peer_1.extend(more.into_iter().filter_map(|c| match c {
            Command::Send { request, .. } => Some(request),
            _ => None,
        }));
    }
    assert_eq!(sent, 35);
    assert_eq!(n.pending_sync(MemberId(1)), 0);
    // Peer 2, which never answered, gets nothing more: its one slot is busy.
    assert!(batch_sizes(&n.tick(1_010)).is_empty());
    assert_eq!(n.pending_sync(MemberId(2)), 25);
}

#[test]
fn a_batch_full_by_bytes_leaves_before_the_delay() {
    let addrs: Vec<String> = (1..=2).map(|i| format!("10.0.0.{i}:8848")).collect();
    let cfg = Config {
        shards: 64,
        batch_max_bytes: 4096,
        ..Config::default()
    };
    let n = Node::new(
        cfg,
        MemberList::new("10.0.0.1:8848", &addrs).unwrap(),
        1_000,
    )
    .unwrap();
    n.tick(0);
    // One client after the delay teaches the node the size of a change.
    register_many(&n, 0, 1, 1000, 10);
    assert_eq!(batch_sizes(&n.tick(1_010)), vec![(1, 1)]);
    // Eight more of ~1 KB: 4 KB batches leave at once, and the partial rest waits the
    // burst's linger (20 ms after its first change).
    register_many(&n, 1, 8, 1000, 2_050);
    let sizes = batch_sizes(&n.tick(2_060));
    assert!(!sizes.is_empty(), "full batches left before the delay");
    let early: usize = sizes.iter().map(|s| s.1).sum();
    assert!(sizes.iter().all(|s| s.1 >= 2), "{sizes:?}");
    assert_eq!(n.pending_sync(MemberId(1)), 8 - early);
    assert!(batch_sizes(&n.tick(2_069)).is_empty());
    let rest: usize = batch_sizes(&n.tick(2_070)).iter().map(|s| s.1).sum();
    assert_eq!(early + rest, 8);
}

/// A node restarted under the same address issues revisions with the same member bits
/// as its previous incarnation. A replica it loads at such an old revision was not handed
/// over by this incarnation (no handover sync of its is retrying), so when the owner's
/// verify list leaves it out it goes after the ordinary grace. It was kept for the
/// handover grace (sync back-off plus peer timeout, 33 s by default), which held a
/// deleted client on the restarted node past the sweep's bound (membership seed 3).
#[test]
fn a_replica_at_a_revision_of_a_previous_incarnation_gets_no_handover_grace() {
    use crate::message::{ShardList, VerifyList};
    use crate::node::Route;
    use crate::registry::WriteResult;
    let old = node("10.0.0.1:8848", 3);
    let cfg = Config {
        shards: 64,
        ..Config::default()
    };
    let restarted_at = 100_000;
    let addrs: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:8848")).collect();
    let new = Node::new(
        cfg.clone(),
        MemberList::new("10.0.0.1:8848", &addrs).unwrap(),
        restarted_at,
    )
    .unwrap();
    let peer = MemberId(1);
    let ip = (0..200)
        .map(|i| format!("10.5.0.{i}"))
        .find(|ip| new.route(&format!("{ip}:80")) == Route::Remote(peer))
        .expect("some address routes to the peer");
    let id = ClientId::ip_port(&ip, 80);
    let svc = ServiceSpec::new("", "", "svc");
    let r = old
        .register(&id, &svc, &InstanceSpec::new(&ip, 80), 2_000)
        .unwrap();
    assert!(matches!(r, WriteResult::Changed(_)));
    let record = old.registry().get(id.as_str()).unwrap().to_record();
    assert_eq!(record.revision.member(), new.me(), "same member bits");
    new.load_chunk(peer, &[record], restarted_at + 500);
    assert_eq!(new.registry().get(id.as_str()).unwrap().owner(), peer);
    // The owner lists the shard without it, past the ordinary grace.
    let grace = cfg.peer_timeout.max(cfg.member_change_settle);
    assert!(grace + 1_000 < cfg.sync_retry_max_delay + cfg.peer_timeout);
    let list = VerifyList {
        shards: vec![ShardList {
            shard: new.registry().shard_of(&id),
            clients: Vec::new(),
        }],
    };
    new.handle_request(
        peer,
        PeerRequest::VerifyList(list),
        restarted_at + 500 + grace + 1_000,
    );
    assert!(
        new.registry().get(id.as_str()).is_none(),
        "dropped after the ordinary grace"
    );
}

/// Ticks `n` every 100 ms from `from` to `to` (ms), answering each probe with `probe`
/// and failing each snapshot pull (as a peer that refuses the sender does).
fn drive_loading(
    n: &Node,
    from: u64,
    to: u64,
    probe: impl Fn() -> Result<crate::message::PeerResponse, crate::message::SendError>,
) {
    let mut now = from;
    while now <= to {
        for cmd in n.tick(now) {
            match cmd {
                Command::Send { to: p, request } if matches!(request, PeerRequest::Probe(_)) => {
                    let _ = n.handle_response(p, request, probe(), now);
                }
                Command::LoadSnapshot { from: p } => n.load_finished(p, false, now),
                _ => {}
            }
        }
        now += 100;
    }
}

/// A node that joins while its peers have not read a list naming it yet: they answer
/// "not a member" for far longer than the DOWN window (probe interval x probes before
/// DOWN), and it waits for them instead of starting empty; once they list it (and answer
/// its probes), it loads a snapshot from one of them.
#[test]
fn a_joiner_refused_as_not_a_member_waits_for_its_snapshot_instead_of_starting_empty() {
    use crate::member::MemberState;
    use crate::message::{PeerResponse, Probe, SendError};
    let n = node("10.0.0.3:8848", 3);
    let window = n.config.probe_interval * u64::from(n.config.probe_down_after);
    drive_loading(&n, 1_000, 1_000 + 4 * window, || Err(SendError::NotMember));
    assert!(
        n.member_states()
            .iter()
            .all(|(m, s)| *m == n.me() || *s == MemberState::Down),
        "the refusals count as failed probes: {:?}",
        n.member_states()
    );
    assert!(!n.is_loaded(), "started empty beside peers that are alive");
    // The peers read the new list: probes answered, a snapshot pulled from one of them.
    let start = 2_000 + 4 * window;
    let ack = || {
        Ok(PeerResponse::ProbeAck(Probe {
            incarnation: 1,
            loaded: true,
        }))
    };
    let mut from = None;
    let mut now = start;
    while from.is_none() && now < start + 2 * window {
        for cmd in n.tick(now) {
            match cmd {
                Command::Send { to, request } if matches!(request, PeerRequest::Probe(_)) => {
                    let _ = n.handle_response(to, request, ack(), now);
                }
                Command::LoadSnapshot { from: p } => from = Some(p),
                _ => {}
            }
        }
        now += 100;
    }
    let from = from.expect("a snapshot pull once the peers list the node");
    n.load_finished(from, true, now);
    assert!(n.is_loaded());
    assert_eq!(n.loaded_from(), Some(from));
    assert!(!n.cold_started());
}

/// Peers that do not answer at all are DOWN after the window, and the node starts empty
/// as before (it starts the cluster's state, or it is cut off).
#[test]
fn a_node_whose_peers_are_all_unreachable_starts_empty_after_the_down_window() {
    use crate::message::SendError;
    let n = node("10.0.0.3:8848", 3);
    let window = n.config.probe_interval * u64::from(n.config.probe_down_after);
    drive_loading(&n, 1_000, 1_000 + 2 * window, || {
        Err(SendError::Unreachable)
    });
    assert!(n.is_loaded());
    assert_eq!(n.loaded_from(), None);
}

/// The lists a mismatch sends to `to`, if any: (requests, clients listed).
fn lists_sent(cmds: &[Command]) -> (usize, usize) {
    let lists: Vec<_> = sends(cmds)
        .into_iter()
        .filter_map(|(_, r)| match r {
            PeerRequest::VerifyList(l) => Some(l),
            _ => None,
        })
        .collect();
    let clients = lists
        .iter()
        .flat_map(|l| &l.shards)
        .map(|s| s.clients.len())
        .sum();
    (lists.len(), clients)
}

#[test]
fn lists_wait_while_syncs_to_the_peer_are_on_their_way_but_at_most_two_rounds() {
    use crate::message::{PeerResponse, VerifyDigests};
    let (n, id) = node_with_one_client();
    let shard = n.registry().shard_of(&id);
    let mismatch = |now| {
        n.handle_response(
            MemberId(1),
            PeerRequest::VerifyDigests(VerifyDigests { digests: vec![] }),
            Ok(PeerResponse::VerifyMismatch {
                shards: vec![shard],
            }),
            now,
        )
    };
    // Pending for peer 1: the replica differs because the change has not left yet.
    assert_eq!(n.pending_sync(MemberId(1)), 1);
    assert_eq!(lists_sent(&mismatch(100)), (0, 0));
    assert_eq!(lists_sent(&mismatch(5_100)), (0, 0));
    assert_eq!(n.stats().verify_lists_deferred, 2);
    // The third mismatch in a row sends them whatever is pending.
    assert_eq!(lists_sent(&mismatch(10_100)), (1, 1));
    assert_eq!(n.stats().verify_lists_deferred, 2);
    // In flight counts as on its way too.
    let batch: Vec<_> = n
        .tick(10_200)
        .into_iter()
        .filter_map(|c| match c {
            Command::Send {
                to: MemberId(1),
                request: r @ PeerRequest::Sync(_),
            } => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(batch.len(), 1);
    assert_eq!(n.pending_sync(MemberId(1)), 0);
    assert_eq!(lists_sent(&mismatch(10_300)), (0, 0));
    assert_eq!(n.stats().verify_lists_deferred, 3);
    // Answered: nothing on its way, so a mismatch is a replica that lost something, and
    // the lists go at once.
    let ack = Ok(PeerResponse::SyncAck {
        applied: 1,
        stale: 0,
    });
    let more = n.handle_response(MemberId(1), batch.into_iter().next().unwrap(), ack, 10_400);
    assert!(sends(&more).is_empty());
    assert_eq!(lists_sent(&mismatch(10_500)), (1, 1));
    assert_eq!(n.stats().verify_lists_deferred, 3);
}

#[test]
fn a_re_registration_is_built_from_the_held_state() {
    let n = node("10.0.0.1:8848", 1);
    let id = ClientId::connection(1, "1.1.1.1", 1);
    let (a, b) = (
        ServiceSpec::new("", "", "a"),
        ServiceSpec::new("", "G", "b"),
    );
    let mut spec = InstanceSpec::new("1.1.1.1", 80);
    spec.metadata = vec![("zone".into(), "x".into())];
    for s in [&a, &b] {
        n.register(&id, s, &spec, 1).unwrap();
    }
    let view = |s: &ServiceSpec| n.query(s).unwrap().unwrap();
    let held_service = view(&a).service;
    // The same registration again writes nothing, nor does the same metadata given in
    // another order.
    assert_eq!(
        n.register(&id, &a, &spec, 2).unwrap(),
        WriteResult::Unchanged
    );
    let mut unsorted = spec.clone();
    unsorted.metadata = vec![("app".into(), "y".into()), ("zone".into(), "x".into())];
    n.register(&id, &a, &unsorted, 2).unwrap();
    unsorted.metadata.reverse();
    assert_eq!(
        n.register(&id, &a, &unsorted, 2).unwrap(),
        WriteResult::Unchanged
    );
    n.register(&id, &a, &spec, 2).unwrap();
    // A changed weight is stored; the other publication and the service stay.
    spec.weight = 5.0;
    assert!(matches!(
        n.register(&id, &a, &spec, 3).unwrap(),
        WriteResult::Changed(_)
    ));
    assert_eq!(view(&a).publications[0].instances[0].weight, 5.0);
    assert_eq!(view(&b).publications[0].instances[0].weight, 1.0);
    assert_eq!(view(&a).service, held_service);
    // A change of a field that was valid is checked again, and refused when invalid:
    // nothing changes.
    let mut bad = spec.clone();
    bad.cluster = "no spaces".into();
    let e = n.register(&id, &a, &bad, 4).unwrap_err();
    assert!(e.to_string().contains("cluster"), "{e}");
    bad = spec.clone();
    bad.ip = "1.1.1.1 ".into();
    assert!(n.register(&id, &a, &bad, 4).is_err());
    assert_eq!(view(&a).publications[0].instances[0].ip, "1.1.1.1");
    // Changed metadata is stored.
    spec.metadata = vec![("zone".into(), "y".into())];
    n.register(&id, &b, &spec, 5).unwrap();
    assert_eq!(
        view(&b).publications[0].instances[0].metadata.get("zone"),
        Some("y")
    );
    assert_eq!(
        view(&a).publications[0].instances[0].metadata.get("zone"),
        Some("x")
    );
    // A group given both ways names the held service.
    let grouped = ServiceSpec::new("", "", "G@@b");
    assert_eq!(
        n.register(&id, &grouped, &spec, 6).unwrap(),
        WriteResult::Unchanged
    );
    // A beat names the service either way too; a name split at `@@` is checked.
    let beat = |s: ServiceSpec| n.beat(&id, &s, 6);
    assert_eq!(beat(grouped), Ok(BeatResult::Ok));
    assert_eq!(beat(ServiceSpec::new("", "G", "b")), Ok(BeatResult::Ok));
    assert_eq!(
        beat(ServiceSpec::new("", "", "b")),
        Ok(BeatResult::NotFound)
    );
    assert!(beat(ServiceSpec::new("", "X", "G@@b")).is_err());
    // A batch publication is replaced by a single one.
    let batch = [
        InstanceSpec::new("1.1.1.1", 81),
        InstanceSpec::new("1.1.1.1", 82),
    ];
    n.register_batch(&id, &a, &batch, 7).unwrap();
    n.register(&id, &a, &InstanceSpec::new("1.1.1.1", 81), 8)
        .unwrap();
    let p = view(&a).publications[0].clone();
    assert!(!p.is_batch());
    assert_eq!(p.instances.len(), 1);
    // ... and a batch of one by the same instance as a single registration (another form).
    let one = InstanceSpec::new("1.1.1.1", 81);
    n.register_batch(&id, &a, std::slice::from_ref(&one), 9)
        .unwrap();
    assert!(view(&a).publications[0].is_batch());
    assert!(matches!(
        n.register(&id, &a, &one, 9).unwrap(),
        WriteResult::Changed(_)
    ));
    assert!(!view(&a).publications[0].is_batch());
    // An ip:port client holding its address cannot move it elsewhere.
    let ip_port = ClientId::ip_port("2.2.2.2", 80);
    n.register(&ip_port, &a, &InstanceSpec::new("2.2.2.2", 80), 9)
        .unwrap();
    let e = n
        .register(&ip_port, &a, &InstanceSpec::new("2.2.2.2", 81), 10)
        .unwrap_err();
    assert!(e.to_string().contains("clientId"), "{e}");
}

/// A handed-over state (as the server's decoder gives them) is attributed as a borrowed
/// one is: a connection client the decoder marked as one to the sender, an ip:port
/// client by routing; a snapshot's connection of this node's own is a ghost, removed.
#[test]
fn handed_over_states_are_attributed_by_their_id() {
    use crate::model::{Publication, Revision};
    use crate::registry::{ChangeRef, StateMut};
    let n = node("10.0.0.1:8848", 3);
    let (me, from) = (n.me(), MemberId(1));
    let publication = |ip: &str| {
        let s = n.registry().service("public", "DEFAULT_GROUP", "svc");
        let i = InstanceSpec::new(ip, 80)
            .to_instance(n.registry().interner(), &s)
            .unwrap();
        Some(Publication::single(s, i))
    };
    let (conn, ip_port) = ("1700000000000_10.0.0.5_80", "10.0.0.6:80#true");
    let (mut a, mut b) = ([publication("10.0.0.5")], [publication("10.0.0.6")]);
    let changes = [
        ChangeRef::Moved(StateMut {
            id: conn,
            revision: Revision(1 << 20),
            owner: MemberId(2),
            publications: &mut a,
            connection: true,
        }),
        ChangeRef::Moved(StateMut {
            id: ip_port,
            revision: Revision(1 << 20),
            owner: from,
            publications: &mut b,
            connection: false,
        }),
    ];
    n.handle_sync(from, changes, 5_000);
    let owner = |id: &str| n.registry().get(id).map(|c| c.owner());
    assert_eq!(owner(conn), Some(from), "a connection: the sender's");
    assert_eq!(owner(ip_port), Some(n.owner_of("10.0.0.6:80")), "routed");
    let ghost = "1700000000000_10.0.0.7_80";
    let mut c = [publication("10.0.0.7")];
    let state = StateMut {
        id: ghost,
        revision: Revision(1 << 20),
        owner: me,
        publications: &mut c,
        connection: true,
    };
    n.load_states(from, [state], 5_000);
    assert_eq!(
        owner(ghost),
        None,
        "a connection of this node's own: removed"
    );
}

/// A registration schedules its change for every peer whatever form the member list's
/// peers take for a write: the one word of `me` and the peers (all below slot 58), the
/// list's mask (below 64) or the list itself; and the word follows the list through
/// `set_members` (a joiner, or a member above slot 57, is not left out).
#[test]
fn a_registration_is_scheduled_for_every_peer_of_any_member_list() {
    let addrs = |n: usize| -> Vec<String> { (1..=n).map(|i| format!("10.0.0.{i}:8848")).collect() };
    let me = "10.0.0.1:8848";
    let list = MemberList::with_slots(me, &addrs(3), 100).unwrap();
    let n = Node::new(Config::default(), list, 1_000).unwrap();
    let mut top = 0;
    for (step, members) in [3, 58, 59, 64, 65, 70, 3, 2].into_iter().enumerate() {
        if step > 0 {
            assert!(n.set_members(&addrs(members), 1).expect("valid list"));
        }
        let id = ClientId::connection(1, "1.1.1.1", 1 + step as u16);
        n.register(
            &id,
            &ServiceSpec::new("", "", "svc"),
            &InstanceSpec::new("1.1.1.1", 80),
            2,
        )
        .unwrap();
        let peers: Vec<MemberId> = n.members().peers().collect();
        assert_eq!(peers.len(), members - 1);
        top = top.max(peers.iter().map(|p| p.0).max().unwrap_or(0));
        for p in peers {
            let pending = n.sync.pending_clients(p.index());
            assert!(
                pending.iter().any(|(c, _)| *c == id),
                "{members} members: client {id} not scheduled for peer {p:?}"
            );
        }
    }
    // The lists went past slot 58 (no word) and slot 64 (no mask).
    assert!(top >= 64, "{top}");
}

#[test]
fn an_answered_batch_lets_go_of_every_state_it_held() {
    use std::sync::Arc;
    let n = small_batches(1_000, 4);
    n.tick(0);
    register_many(&n, 0, 30, 0, 10);
    let held = |i: usize| {
        let ip = format!("10.9.{}.{}", i / 250, i % 250);
        n.registry()
            .get(ClientId::connection(1, &ip, 1).as_str())
            .unwrap()
    };
    let states: Vec<_> = (0..30).map(held).collect();
    // The registry's references, ours and the pending sync entry's.
    let pending: Vec<usize> = states.iter().map(Arc::strong_count).collect();
    let requests: Vec<_> = n
        .tick(2_000)
        .into_iter()
        .filter_map(|c| match c {
            Command::Send {
                to,
                request: request @ PeerRequest::Sync(_),
            } => Some((to, request)),
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 2, "one batch per peer");
    for (to, request) in requests {
        let ack = Ok(crate::message::PeerResponse::SyncAck {
            applied: 30,
            stale: 0,
        });
        assert!(batch_sizes(&n.handle_response(to, request, ack, 2_100)).is_empty());
    }
    for (i, s) in states.iter().enumerate() {
        assert_eq!(
            Arc::strong_count(s),
            pending[i] - 1,
            "client {i}: a sent batch kept its state"
        );
    }
}
