//! Time as the core sees it: milliseconds passed in by the caller.
//!
//! The core never reads a clock. The server passes wall-clock milliseconds since the Unix
//! epoch; the simulator passes virtual milliseconds. Only differences and orderings of
//! these values matter, except for the incarnation of a node (see [`crate::Revision`]).

/// Milliseconds, either a point in time or a duration.
pub type Millis = u64;
