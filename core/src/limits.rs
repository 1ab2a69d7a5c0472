//! Named, documented limits on everything a client can send.
//!
//! Every limit here is enforced by validation in [`crate::model`] (field limits) or by the
//! [`crate::Registry`] (per-client, per-node and per-namespace limits) and reported with a [`crate::ValidationError`]
//! that names the field. The server documents the same numbers in its README; change
//! them here and nowhere else.

/// Longest namespace id, in bytes (Nacos allows 128 characters for a namespace id).
pub const MAX_NAMESPACE_LEN: usize = 128;
/// Longest group name, in bytes.
pub const MAX_GROUP_LEN: usize = 128;
/// Longest service name (without the `group@@` prefix), in bytes.
pub const MAX_SERVICE_NAME_LEN: usize = 256;
/// Longest cluster name, in bytes. Cluster names must also match `^[0-9a-zA-Z-]+$`.
pub const MAX_CLUSTER_LEN: usize = 64;
/// Longest instance ip (IPv4, IPv6 or host name), in bytes.
pub const MAX_IP_LEN: usize = 128;
/// Longest custom instance id, in bytes.
pub const MAX_INSTANCE_ID_LEN: usize = 256;
/// Longest client id, in bytes (`<millis>_<ip>_<port>` or `ip:port#true`).
pub const MAX_CLIENT_ID_LEN: usize = 256;
/// Most metadata entries on one instance.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Most bytes of metadata (keys plus values) on one instance.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// Most instances in one batch publication (`BatchInstanceRequest`).
pub const MAX_BATCH_INSTANCES: usize = 1_000;
/// Most services one client may publish to at the same time (default of
/// [`crate::Config::max_services_per_client`]).
pub const MAX_SERVICES_PER_CLIENT: usize = 1_000;
/// Most clients (ip:port and connection clients) one node holds as their owner (default
/// of [`crate::Config::max_clients`]); replicas held for other owners do not count.
pub const MAX_CLIENTS: usize = 1_000_000;
/// Most services with at least one instance in one namespace that a node lets its own
/// clients create (default of [`crate::Config::max_services_per_namespace`]).
pub const MAX_SERVICES_PER_NAMESPACE: usize = 1_000_000;
/// Smallest accepted instance weight.
pub const MIN_WEIGHT: f64 = 0.0;
/// Largest accepted instance weight (Nacos's HTTP API bound).
pub const MAX_WEIGHT: f64 = 10_000.0;
