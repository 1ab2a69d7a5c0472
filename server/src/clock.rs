//! The wall clock, as milliseconds since the Unix epoch (the core's time unit).

use std::sync::Arc;

/// A source of wall-clock milliseconds, shared by every part of a node.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(now_ms)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
