//! Clients, the unit of storage and replication: their ids ([`ClientId`], whose form
//! tells the [`ClientKind`]) and what a client publishes to one service
//! ([`Publication`]: one instance, or a batch).

use super::{Instance, Service};
use crate::error::{Field, ValidationError};
use crate::limits::MAX_CLIENT_ID_LEN;
use crate::name::Name;
use crate::time::Millis;
use std::fmt;

/// What a client publishes to one service: one instance, or a batch of them.
#[derive(Clone, PartialEq)]
pub struct Publication {
    /// The service.
    pub service: Service,
    /// The instances (one unless `batch`).
    pub instances: Instances,
    /// Whether this came from a batch registration (replaced as a whole).
    pub batch: bool,
}

/// The instances of a publication: the single instance is stored inline (the common
/// case, no extra allocation), a batch in its own slice. Dereferences to `[Instance]`.
#[derive(Clone, PartialEq)]
pub enum Instances {
    /// One instance.
    One(Instance),
    /// A batch.
    Many(Box<[Instance]>),
}

impl std::ops::Deref for Instances {
    type Target = [Instance];
    fn deref(&self) -> &[Instance] {
        match self {
            Instances::One(i) => std::slice::from_ref(i),
            Instances::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Instances {
    fn deref_mut(&mut self) -> &mut [Instance] {
        match self {
            Instances::One(i) => std::slice::from_mut(i),
            Instances::Many(v) => v,
        }
    }
}

impl fmt::Debug for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Publication {
    /// A single-instance publication.
    pub fn single(service: Service, instance: Instance) -> Self {
        Self {
            service,
            instances: Instances::One(instance),
            batch: false,
        }
    }

    /// A batch publication.
    pub fn batch(service: Service, instances: Vec<Instance>) -> Self {
        Self {
            service,
            instances: Instances::Many(instances.into_boxed_slice()),
            batch: true,
        }
    }
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}{}{:?}",
            self.service,
            if self.batch { "[batch]" } else { "" },
            self.instances
        )
    }
}

/// The kind of a client, derived from its id as Nacos does (`#` means ip:port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// One SDK gRPC connection; owned by the node holding it.
    Connection,
    /// An `ip:port` client of the HTTP or native API; owned by the routed member.
    IpPort,
}

/// A client id: `<millis>_<ip>_<port>` (connection) or `ip:port#true` (ip:port).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Name);

impl ClientId {
    /// Wraps an id string, checking its length and characters ([`ClientId::check`]).
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::check(s)?;
        Ok(ClientId(Name::new(s)))
    }

    /// An id string [`ClientId::check`] accepted.
    pub(crate) fn checked(s: &str) -> Self {
        debug_assert!(Self::check(s).is_ok(), "unchecked client id {s:?}");
        ClientId(Name::new(s))
    }

    /// Checks an id string as [`ClientId::parse`] does, without building the id (a
    /// decoder checks ids it may never need to store).
    pub fn check(s: &str) -> Result<(), ValidationError> {
        if s.is_empty() {
            return Err(ValidationError::new(Field::ClientId, "must not be empty"));
        }
        if s.len() > MAX_CLIENT_ID_LEN {
            return Err(ValidationError::new(
                Field::ClientId,
                format!(
                    "is {} bytes long, the limit is {MAX_CLIENT_ID_LEN}",
                    s.len()
                ),
            ));
        }
        // Printable ASCII (the usual id) in one pass; anything else by characters.
        let printable = s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !printable && s.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                Field::ClientId,
                "contains a control character",
            ));
        }
        Ok(())
    }

    /// The ephemeral ip:port client of `ip:port`: `ip:port#true`.
    pub fn ip_port(ip: &str, port: u16) -> Self {
        ClientId(Name::new(&format!("{ip}:{port}#true")))
    }

    /// A connection client id: `<millis>_<ip>_<port>`.
    pub fn connection(millis: Millis, ip: &str, port: u16) -> Self {
        ClientId(Name::new(&format!("{millis}_{ip}_{port}")))
    }

    /// The id string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The kind, derived from the id.
    pub fn kind(&self) -> ClientKind {
        if self.0.contains('#') {
            ClientKind::IpPort
        } else {
            ClientKind::Connection
        }
    }

    /// For an ip:port client, the routing key `ip:port` (the part before `#`).
    pub fn routing_key(&self) -> Option<&str> {
        match self.kind() {
            ClientKind::IpPort => self.0.split_once('#').map(|(k, _)| k),
            ClientKind::Connection => None,
        }
    }
}

impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}
