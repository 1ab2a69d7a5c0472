//! # distro-core: the Distro protocol without I/O
//!
//! Distro is the AP replication protocol Alibaba Nacos uses for ephemeral service
//! instances. This crate is the whole protocol as plain data structures and functions:
//! no networking, no async runtime, no clock reads (time is an argument, randomness a
//! seed). `distro-server` runs it over gRPC; [`sim::SimCluster`] runs it over a
//! deterministic virtual network to check its properties under faults.
//!
//! The pieces, in the order data flows through them:
//!
//! * [`model`]: namespaces, services, instances, clients and revisions, with validation
//!   against the named [`limits`];
//! * [`hash`] and [`router`]: Nacos-compatible `distro_hash` routing of `ip:port` clients
//!   (and rendezvous hashing as an option);
//! * [`registry`]: the sharded lock-free store with its per-service index and per-shard
//!   digests;
//! * [`Node`]: sync scheduling with merged delays and batches, digest verify, snapshot
//!   load, membership probes, heartbeat checks, leases and self-preservation (one file
//!   each under `core/src/node/`). A node's methods take client operations, peer
//!   requests and responses, and ticks (with `now`), and return answers and
//!   [`Command`]s that the runtime carries out, feeding their outcomes back in;
//! * [`sim`]: the simulator and its property checks.
//!
//! ```
//! use distro_core::sim::{SimCluster, SimConfig};
//!
//! // Three nodes on a lossy network; one seed decides every random choice.
//! let mut sim = SimCluster::new(SimConfig { nodes: 3, seed: 7, ..SimConfig::default() });
//! let client = sim.register_ip_port(0, "orders", "10.0.0.7", 8080).expect("acknowledged");
//! sim.run_for(2_000); // sync delay (1 s) plus margin
//! for node in 0..3 {
//!     assert!(sim.node(node).unwrap().registry().get(client.as_str()).is_some());
//! }
//! assert!(sim.converged());
//! ```

#![warn(missing_docs)]

pub mod compact_form;
pub mod config;
pub mod digest;
pub mod error;
pub mod hash;
pub mod limits;
pub mod member;
pub mod message;
pub mod model;
pub mod name;
pub mod node;
pub mod registry;
pub mod rng;
pub mod router;
pub mod sim;
mod sync;
pub mod time;
pub mod units;

pub use config::{Config, ConfigError, VerifyMode};
pub use digest::ShardDigest;
pub use error::{Field, ValidationError};
pub use member::{MemberId, MemberList, MemberState};
pub use message::{Command, PeerRequest, PeerResponse, SendError, SnapshotChunk, SnapshotCursor};
pub use model::{
    ClientId, ClientKind, Instance, InstanceSpec, Publication, Revision, Service, ServiceSpec,
};
pub use node::{BeatResult, Node, NodeStats, Route, Routes};
pub use registry::{
    ChangeRef, ClientChange, ClientRecord, Origin, QueryFilter, Registry, ServiceHint, ServiceView,
    StateMut, StateRef, WriteError, WriteHints, WriteResult,
};
pub use router::{Router, RouterKind};
pub use time::Millis;
