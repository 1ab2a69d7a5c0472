//! Unit tests of `driver`.

use super::*;

#[test]
fn window_halves_once_per_round_trip_and_grows_back() {
    let t0 = Instant::now();
    let mut w = Window::new(1000, 2, t0);
    assert_eq!(w.size, 2000.0);
    // Two batches in flight, both sent at t0.
    assert_eq!(w.room(1000, 5000), 1000);
    w.items += 1000;
    assert_eq!(w.room(1000, 5000), 1000);
    w.items += 1000;
    assert_eq!(w.room(1000, 5000), 0, "the window is full");
    let t1 = t0 + Duration::from_secs(6);
    // Both time out: the first cuts, the second (sent before the cut) does not.
    assert!(w.complete(1000, t0, t1, true));
    assert!(!w.complete(1000, t0, t1, true));
    assert_eq!(w.size, 1000.0);
    // A batch sent after the cut may cut again, down to the floor (a quarter batch).
    for i in 0..5 {
        let sent = t1 + Duration::from_secs(i);
        w.items += 250;
        w.complete(250, sent, sent + Duration::from_millis(1), true);
    }
    assert_eq!(w.size, 250.0);
    assert_eq!(w.room(1000, 5000), 250, "batches shrink to the window");
    // Clean batches grow it back, never past the ceiling.
    let mut t = t1 + Duration::from_secs(10);
    for _ in 0..1000 {
        w.items += 250;
        w.complete(250, t, t, false);
        t += Duration::from_millis(1);
    }
    assert_eq!(w.size, 2000.0);
    assert_eq!(w.items, 0);
}

#[test]
fn one_batch_may_always_be_in_flight() {
    let t0 = Instant::now();
    let mut w = Window::new(100, 1, t0);
    w.size = 1.0;
    assert_eq!(w.room(100, 7), 1);
    w.items = 1;
    assert_eq!(w.room(100, 7), 0);
}

#[test]
fn only_partial_batches_without_own_request_queries_linger() {
    // Heartbeats and registrations gather into batches.
    assert!(lingers(3, 3, 1000, false));
    // A full batch, or a queue the window cuts, goes at once.
    assert!(!lingers(1000, 1000, 1000, false));
    assert!(!lingers(3, 2, 1000, false));
    // A query answered by a request of its own goes at once, with what queued beside it.
    assert!(!lingers(1, 1, 1000, true));
    assert!(!lingers(5, 5, 1000, true));
}

#[test]
fn overload_outcomes() {
    assert!(overload(Outcome::Retry("timeout")));
    assert!(overload(Outcome::Retry("503")));
    assert!(!overload(Outcome::Retry("421")));
    assert!(!overload(Outcome::Ok));
    assert!(!overload(Outcome::Failed("400")));
}
