//! The data model: services, instances, publications, clients and revisions.
//!
//! Hierarchy, as Nacos: namespace (default `public`) → service `group@@name` (default
//! group `DEFAULT_GROUP`) → cluster (default `DEFAULT`) → instances. The hierarchy is an
//! index; the unit of storage and replication is the **client**, which publishes at most
//! one [`Publication`] per service (a single instance, or a batch of instances).
//!
//! Input arrives as [`InstanceSpec`] / [`ServiceSpec`] (owned strings, as decoded from a
//! request) and is validated into the compact stored forms ([`Instance`], [`Service`])
//! with interned names. Nothing derivable is stored: the default instance id
//! `ip#port#cluster#group@@service` is computed when asked for.
//!
//! This file holds the defaults and reserved metadata keys; the types are one file per
//! concept under `model/`: `service.rs` (services and their names), `instance.rs`
//! (instances, field validation), `metadata.rs` (metadata maps, each distinct one stored
//! once), `client.rs` (client ids and publications),
//! `revision.rs` (the hybrid-clock revisions).

/// Default namespace id.
pub const DEFAULT_NAMESPACE: &str = "public";
/// Default group name.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// Default cluster name.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";
/// Separator of a grouped service name (`group@@name`).
pub const GROUP_SEPARATOR: &str = "@@";
/// Metadata key overriding the heartbeat timeout after which an instance turns unhealthy.
pub const META_HEARTBEAT_TIMEOUT: &str = "preserved.heart.beat.timeout";
/// Metadata key overriding the timeout after which an instance without heartbeats is deleted.
pub const META_DELETE_TIMEOUT: &str = "preserved.ip.delete.timeout";
/// Metadata key overriding the client's heartbeat interval (reported to clients only).
pub const META_HEARTBEAT_INTERVAL: &str = "preserved.heart.beat.interval";

mod client;
mod instance;
mod metadata;
mod revision;
mod service;
#[cfg(test)]
mod tests;

/// An instance's IP (or host name) as stored: 16 bytes, inline up to 15.
pub use arc_slots::SmallStr;
/// A push onto a `Vec` with room, written in line (the peer decoder's publications).
pub use arc_slots::push_within_capacity;
/// ASCII bytes as a `String` or a `&str` without the UTF-8 decoder (the peer decoder's client
/// ids, the native API's received texts).
pub use arc_slots::{ascii_str, ascii_string};
pub(crate) use client::first_hash_sign;
pub(crate) use client::{Built, decimal_digits, decimal_len, write_ip_port};
pub use client::{ClientId, ClientKind, Instances, Publication, RoutingKey};
#[cfg(test)]
pub(crate) use client::{publish_samples, sample_ids};
pub(crate) use instance::Converted;
pub use instance::{
    Conversion, Instance, InstanceFields, InstanceSpec, Ipv4Bits, check_cluster_name,
    default_instance_id, validate_ip, validate_metadata,
};
pub use metadata::{Metadata, MetadataEntry, MetadataList, MetadataTable};
pub use revision::Revision;
pub(crate) use service::WeakService;
pub use service::{Service, ServiceSpec};
