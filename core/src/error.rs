//! Typed errors of the core: what was wrong with a request and which field it was.
//!
//! There are deliberately few variants. "This node is not the owner" is not an error
//! here: routing is answered by [`crate::Node::route`] before a write is applied.

use std::fmt;

/// A field of a request that failed validation.
///
/// The name is the field's name as clients send it (Nacos's JSON and HTTP parameter
/// names), so an error message points at the thing the user typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `namespaceId` / `namespace`.
    Namespace,
    /// `groupName`.
    Group,
    /// `serviceName`.
    Service,
    /// `clusterName`.
    Cluster,
    /// `ip`.
    Ip,
    /// `port`.
    Port,
    /// `weight`.
    Weight,
    /// `metadata`.
    Metadata,
    /// `instanceId`.
    InstanceId,
    /// `instances` of a batch.
    Instances,
    /// The client id.
    ClientId,
    /// The services a client publishes to.
    Services,
}

impl Field {
    /// The field's name as clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            Field::Namespace => "namespaceId",
            Field::Group => "groupName",
            Field::Service => "serviceName",
            Field::Cluster => "clusterName",
            Field::Ip => "ip",
            Field::Port => "port",
            Field::Weight => "weight",
            Field::Metadata => "metadata",
            Field::InstanceId => "instanceId",
            Field::Instances => "instances",
            Field::ClientId => "clientId",
            Field::Services => "services",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A request field that is invalid, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The offending field.
    pub field: Field,
    /// A human-readable reason, including the limit that was exceeded.
    pub reason: String,
}

impl ValidationError {
    /// Builds an error for `field` with `reason`.
    pub fn new(field: Field, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
