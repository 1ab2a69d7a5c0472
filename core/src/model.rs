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

use crate::error::{Field, ValidationError};
use crate::limits::*;
use crate::member::MemberId;
use crate::name::{Interner, Name};
use crate::time::Millis;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

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

/// A service: namespace, group and name, interned. Cheap to clone (one pointer).
#[derive(Clone)]
pub struct Service(Arc<ServiceInner>);

struct ServiceInner {
    key: Name,
    namespace: Name,
    group: Name,
    name: Name,
}

impl Service {
    /// Builds a service from validated parts (see [`ServiceSpec::validate`]).
    pub fn new(interner: &Interner, namespace: &str, group: &str, name: &str) -> Self {
        Service(Arc::new(ServiceInner {
            key: Name::new(&Self::key_of(namespace, group, name)),
            namespace: interner.intern(namespace),
            group: interner.intern(group),
            name: interner.intern(name),
        }))
    }

    /// The map key of a service: `namespace \x1f group \x1f name` (the separator cannot
    /// occur in a valid name).
    pub fn key_of(namespace: &str, group: &str, name: &str) -> String {
        let mut k = String::with_capacity(namespace.len() + group.len() + name.len() + 2);
        k.push_str(namespace);
        k.push('\x1f');
        k.push_str(group);
        k.push('\x1f');
        k.push_str(name);
        k
    }

    /// Calls `f` with the key of a service without allocating (a thread-local buffer,
    /// or a fresh string if the buffer is in use).
    pub fn with_key<R>(namespace: &str, group: &str, name: &str, f: impl FnOnce(&str) -> R) -> R {
        thread_local! {
            static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                buf.push_str(namespace);
                buf.push('\x1f');
                buf.push_str(group);
                buf.push('\x1f');
                buf.push_str(name);
                f(&buf)
            }
            Err(_) => f(&Self::key_of(namespace, group, name)),
        })
    }

    /// The unique key of this service.
    pub fn key(&self) -> &Name {
        &self.0.key
    }
    /// Namespace id.
    pub fn namespace(&self) -> &Name {
        &self.0.namespace
    }
    /// Group name.
    pub fn group(&self) -> &Name {
        &self.0.group
    }
    /// Service name without the group.
    pub fn name(&self) -> &Name {
        &self.0.name
    }
    /// `group@@name`, as Nacos names a service in instance ids and the HTTP API.
    pub fn grouped_name(&self) -> String {
        format!("{}{GROUP_SEPARATOR}{}", self.0.group, self.0.name)
    }
}

impl PartialEq for Service {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.key == other.0.key
    }
}
impl Eq for Service {}
impl Hash for Service {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state)
    }
}
impl PartialOrd for Service {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Service {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.key.cmp(&other.0.key)
    }
}
impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}{GROUP_SEPARATOR}{}",
            self.0.namespace, self.0.group, self.0.name
        )
    }
}

/// A service as named in a request. Empty parts take their defaults; a `name` of the form
/// `group@@name` carries its group (and then `group` must be empty or equal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Namespace id; empty means `public`.
    pub namespace: String,
    /// Group; empty means `DEFAULT_GROUP`.
    pub group: String,
    /// Service name, optionally `group@@name`.
    pub name: String,
}

impl ServiceSpec {
    /// A spec from its three parts.
    pub fn new(namespace: &str, group: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            group: group.to_string(),
            name: name.to_string(),
        }
    }

    /// Validates and resolves defaults; returns `(namespace, group, name)`.
    pub fn resolve(&self) -> Result<(&str, &str, &str), ValidationError> {
        Self::resolve_parts(&self.namespace, &self.group, &self.name)
    }

    /// [`ServiceSpec::resolve`] on borrowed parts (decoders use it without copying).
    pub fn resolve_parts<'a>(
        namespace: &'a str,
        group: &'a str,
        name: &'a str,
    ) -> Result<(&'a str, &'a str, &'a str), ValidationError> {
        let namespace = if namespace.is_empty() {
            DEFAULT_NAMESPACE
        } else {
            namespace
        };
        let (group, name) = match name.split_once(GROUP_SEPARATOR) {
            Some((g, n)) => {
                if !group.is_empty() && group != g {
                    return Err(ValidationError::new(
                        Field::Service,
                        format!(
                            "grouped service name {name:?} names group {g:?} but groupName is {group:?}"
                        ),
                    ));
                }
                (g, n)
            }
            None => (
                if group.is_empty() {
                    DEFAULT_GROUP
                } else {
                    group
                },
                name,
            ),
        };
        check_name(Field::Namespace, namespace, MAX_NAMESPACE_LEN)?;
        check_name(Field::Group, group, MAX_GROUP_LEN)?;
        check_name(Field::Service, name, MAX_SERVICE_NAME_LEN)?;
        if name.contains(GROUP_SEPARATOR) || group.contains(GROUP_SEPARATOR) {
            return Err(ValidationError::new(
                Field::Service,
                "must contain at most one '@@' separator",
            ));
        }
        Ok((namespace, group, name))
    }
}

fn check_name(field: Field, s: &str, max: usize) -> Result<(), ValidationError> {
    // Fast path: short printable ASCII, the overwhelmingly common case.
    if !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Ok(());
    }
    if s.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes long, the limit is {max}", s.len()),
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(ValidationError::new(
            field,
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}

/// Whether `s` is a valid cluster name: `^[0-9a-zA-Z-]+$` (Nacos's rule), plus `_` and `.`
/// which real deployments use, at most [`MAX_CLUSTER_LEN`] bytes.
pub fn check_cluster_name(s: &str) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(Field::Cluster, "must not be empty"));
    }
    if s.len() > MAX_CLUSTER_LEN {
        return Err(ValidationError::new(
            Field::Cluster,
            format!("is {} bytes long, the limit is {MAX_CLUSTER_LEN}", s.len()),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.'))
    {
        return Err(ValidationError::new(
            Field::Cluster,
            format!("{s:?} contains {c:?}; allowed are letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Instance metadata: sorted `(key, value)` pairs, shared between copies.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata(Option<Arc<MetadataList>>);

/// The entries of a non-empty [`Metadata`], sorted by key (one pointer in every instance).
#[derive(PartialEq, Eq, Hash)]
pub struct MetadataList(Box<[MetadataEntry]>);

/// One metadata entry: an interned key and its value.
pub type MetadataEntry = (Name, Box<str>);

impl Metadata {
    /// No metadata.
    pub const EMPTY: Metadata = Metadata(None);

    /// Builds metadata from pairs (sorted by key; the last value of a repeated key wins).
    pub fn from_pairs<'a>(
        interner: &Interner,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut v: Vec<(Name, Box<str>)> = pairs
            .into_iter()
            .map(|(k, val)| (interner.intern(k), Box::from(val)))
            .collect();
        if v.is_empty() {
            return Metadata(None);
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // Keep the last value of each key.
        let mut out: Vec<(Name, Box<str>)> = Vec::with_capacity(v.len());
        for (k, val) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = val,
                _ => out.push((k, val)),
            }
        }
        Metadata(Some(Arc::new(MetadataList(out.into_boxed_slice()))))
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|a| a.0.iter())
            .map(|(k, v)| (k.as_str(), &**v))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let a = &self.0.as_ref()?.0;
        a.binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &*a[i].1)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |a| a.0.len())
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A duration in milliseconds stored under `key`, if present and a number.
    pub fn millis(&self, key: &str) -> Option<Millis> {
        self.get(key).and_then(|v| v.trim().parse::<u64>().ok())
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// A stored, validated instance. Always ephemeral: persistent instances are not Distro data.
#[derive(Clone, PartialEq)]
pub struct Instance {
    /// IP address or host name (stored inline up to 24 bytes: no allocation for IPs).
    pub ip: compact_str::CompactString,
    /// Port, 1..=65535.
    pub port: u16,
    /// Weight, 0..=10000.
    pub weight: f64,
    /// Health as reported by the client, or as set by heartbeat checks.
    pub healthy: bool,
    /// Whether the instance takes traffic; disabled instances are hidden from queries.
    pub enabled: bool,
    /// Cluster name.
    pub cluster: Name,
    /// User metadata.
    pub metadata: Metadata,
    /// A client-chosen instance id; `None` means the default
    /// `ip#port#cluster#group@@service`.
    pub custom_id: Option<Box<str>>,
}

impl Instance {
    /// The instance id: the custom id, or `ip#port#cluster#group@@service`.
    pub fn instance_id(&self, service: &Service) -> String {
        match &self.custom_id {
            Some(id) => id.to_string(),
            None => format!(
                "{}#{}#{}#{}{GROUP_SEPARATOR}{}",
                self.ip,
                self.port,
                self.cluster,
                service.group(),
                service.name()
            ),
        }
    }

    /// `ip:port`, the routing key of the instance (and of its ip:port client).
    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// Heartbeat timeout after which the instance turns unhealthy.
    pub fn heartbeat_timeout(&self, default: Millis) -> Millis {
        self.metadata
            .millis(META_HEARTBEAT_TIMEOUT)
            .unwrap_or(default)
    }

    /// Timeout without heartbeats after which the instance is deleted.
    pub fn delete_timeout(&self, default: Millis) -> Millis {
        self.metadata.millis(META_DELETE_TIMEOUT).unwrap_or(default)
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}[{} w={} {}{}]",
            self.ip,
            self.port,
            self.cluster,
            self.weight,
            if self.healthy { "healthy" } else { "unhealthy" },
            if self.enabled { "" } else { " disabled" }
        )
    }
}

/// An instance as given in a request, before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceSpec {
    /// IP address or host name.
    pub ip: String,
    /// Port as sent (validated to 1..=65535).
    pub port: i64,
    /// Weight (validated to 0..=10000).
    pub weight: f64,
    /// Health flag.
    pub healthy: bool,
    /// Enabled flag.
    pub enabled: bool,
    /// Cluster name; empty means `DEFAULT`.
    pub cluster: String,
    /// Metadata pairs.
    pub metadata: Vec<(String, String)>,
    /// Custom instance id; `None` or empty means the default.
    pub instance_id: Option<String>,
}

impl Default for InstanceSpec {
    fn default() -> Self {
        Self {
            ip: String::new(),
            port: 0,
            weight: 1.0,
            healthy: true,
            enabled: true,
            cluster: String::new(),
            metadata: Vec::new(),
            instance_id: None,
        }
    }
}

impl InstanceSpec {
    /// A healthy, enabled instance of weight 1 in cluster `DEFAULT`.
    pub fn new(ip: &str, port: u16) -> Self {
        Self {
            ip: ip.to_string(),
            port: i64::from(port),
            ..Self::default()
        }
    }

    /// The borrowed view of this spec.
    pub fn fields(&self) -> InstanceFields<'_, impl Iterator<Item = (&str, &str)> + Clone> {
        InstanceFields {
            ip: &self.ip,
            port: self.port,
            weight: self.weight,
            healthy: self.healthy,
            enabled: self.enabled,
            cluster: &self.cluster,
            metadata: self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            instance_id: self.instance_id.as_deref(),
        }
    }

    /// Checks every field against the limits of [`crate::limits`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.fields().validate()
    }

    /// Validates and converts to the stored form for `service`. A custom id equal to the
    /// default one is dropped (it is derivable).
    pub fn to_instance(
        &self,
        interner: &Interner,
        service: &Service,
    ) -> Result<Instance, ValidationError> {
        self.fields().to_instance(interner, service)
    }
}

/// An instance as given in a request, borrowed: what decoders validate and convert
/// without copying strings. `metadata` yields the `(key, value)` pairs.
#[derive(Debug, Clone)]
pub struct InstanceFields<'a, M> {
    /// IP address or host name.
    pub ip: &'a str,
    /// Port as sent.
    pub port: i64,
    /// Weight.
    pub weight: f64,
    /// Health flag.
    pub healthy: bool,
    /// Enabled flag.
    pub enabled: bool,
    /// Cluster name; empty means `DEFAULT`.
    pub cluster: &'a str,
    /// Metadata pairs.
    pub metadata: M,
    /// Custom instance id; `None` or empty means the default.
    pub instance_id: Option<&'a str>,
}

impl<'a, M: Iterator<Item = (&'a str, &'a str)> + Clone> InstanceFields<'a, M> {
    /// Checks every field against the limits of [`crate::limits`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_ip(self.ip)?;
        if !(1..=65535).contains(&self.port) {
            return Err(ValidationError::new(
                Field::Port,
                format!("{} is outside 1..=65535", self.port),
            ));
        }
        if !self.weight.is_finite() || !(MIN_WEIGHT..=MAX_WEIGHT).contains(&self.weight) {
            return Err(ValidationError::new(
                Field::Weight,
                format!("{} is outside {MIN_WEIGHT}..={MAX_WEIGHT}", self.weight),
            ));
        }
        if !self.cluster.is_empty() {
            check_cluster_name(self.cluster)?;
        }
        let mut entries = 0;
        let mut bytes = 0;
        for (k, v) in self.metadata.clone() {
            entries += 1;
            if k.is_empty() {
                return Err(ValidationError::new(Field::Metadata, "has an empty key"));
            }
            if k.len() > MAX_METADATA_KEY_LEN {
                return Err(ValidationError::new(
                    Field::Metadata,
                    format!(
                        "key {:?}... is {} bytes long, the limit is {MAX_METADATA_KEY_LEN}",
                        &k[..k.floor_char_boundary(32)],
                        k.len()
                    ),
                ));
            }
            bytes += k.len() + v.len();
            if (k == META_HEARTBEAT_TIMEOUT
                || k == META_DELETE_TIMEOUT
                || k == META_HEARTBEAT_INTERVAL)
                && v.trim().parse::<u64>().is_err()
            {
                return Err(ValidationError::new(
                    Field::Metadata,
                    format!("{k} must be a number of milliseconds, got {v:?}"),
                ));
            }
        }
        if entries > MAX_METADATA_ENTRIES {
            return Err(ValidationError::new(
                Field::Metadata,
                format!("has {entries} entries, the limit is {MAX_METADATA_ENTRIES}"),
            ));
        }
        if bytes > MAX_METADATA_BYTES {
            return Err(ValidationError::new(
                Field::Metadata,
                format!("is {bytes} bytes, the limit is {MAX_METADATA_BYTES}"),
            ));
        }
        if let Some(id) = self.instance_id {
            if id.len() > MAX_INSTANCE_ID_LEN {
                return Err(ValidationError::new(
                    Field::InstanceId,
                    format!(
                        "is {} bytes long, the limit is {MAX_INSTANCE_ID_LEN}",
                        id.len()
                    ),
                ));
            }
            if id.chars().any(|c| c.is_control()) {
                return Err(ValidationError::new(
                    Field::InstanceId,
                    "contains a control character",
                ));
            }
        }
        Ok(())
    }

    /// Validates and converts to the stored form for `service`. A custom id equal to the
    /// default one is dropped (it is derivable).
    pub fn to_instance(
        &self,
        interner: &Interner,
        service: &Service,
    ) -> Result<Instance, ValidationError> {
        self.validate()?;
        let cluster = if self.cluster.is_empty() {
            DEFAULT_CLUSTER
        } else {
            self.cluster
        };
        let mut inst = Instance {
            ip: compact_str::CompactString::from(self.ip),
            port: self.port as u16,
            weight: self.weight,
            healthy: self.healthy,
            enabled: self.enabled,
            cluster: interner.intern(cluster),
            metadata: Metadata::from_pairs(interner, self.metadata.clone()),
            custom_id: None,
        };
        if let Some(id) = self.instance_id.filter(|s| !s.is_empty())
            && id != inst.instance_id(service)
        {
            inst.custom_id = Some(Box::from(id));
        }
        Ok(inst)
    }
}

fn validate_ip(ip: &str) -> Result<(), ValidationError> {
    if ip.is_empty() {
        return Err(ValidationError::new(Field::Ip, "must not be empty"));
    }
    if ip.len() > MAX_IP_LEN {
        return Err(ValidationError::new(
            Field::Ip,
            format!("is {} bytes long, the limit is {MAX_IP_LEN}", ip.len()),
        ));
    }
    if ip.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    // A host name: letters, digits, '-', '_' and '.'.
    if let Some(c) = ip
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ValidationError::new(
            Field::Ip,
            format!("{ip:?} is neither an IP address nor a host name (contains {c:?})"),
        ));
    }
    Ok(())
}

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
    /// Wraps an id string, checking its length and characters.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
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
        if s.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                Field::ClientId,
                "contains a control character",
            ));
        }
        Ok(ClientId(Name::new(s)))
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

/// A client's version. Totally ordered; an owner's restart never makes it go backwards.
///
/// A revision is a hybrid logical clock: layout `logical << 10 | member`, where a new
/// revision's `logical` is the larger of one more than the client's previous revision
/// (tombstones included) and the *floor* `now_ms << 12` of the issuing owner (never below
/// `incarnation_ms << 12`, the wall-clock start of its process). Consequences:
///
/// * per client, revisions strictly increase, whoever issues them;
/// * a restarted owner, which remembers nothing, still issues revisions above every one
///   its previous incarnation issued (unless that issued more than 4,096 changes of one
///   client per millisecond of downtime, or the wall clock went backwards);
/// * when two owners write the same client concurrently (divergent member views during a
///   partition), the later write in wall-clock time wins, as a client would expect; the
///   member bits make their revisions distinct, so ties are impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Revision(pub u64);

impl Revision {
    /// The revision of nothing.
    pub const ZERO: Revision = Revision(0);
    const MEMBER_BITS: u32 = 10;
    const FLOOR_SHIFT: u32 = 12;

    /// The floor of logical revisions of an owner started at `incarnation_ms`.
    pub fn floor(incarnation_ms: Millis) -> u64 {
        incarnation_ms << Self::FLOOR_SHIFT
    }

    /// Builds a revision.
    pub fn new(logical: u64, member: MemberId) -> Self {
        Revision((logical << Self::MEMBER_BITS) | u64::from(member.0))
    }

    /// The logical part.
    pub fn logical(self) -> u64 {
        self.0 >> Self::MEMBER_BITS
    }

    /// The member that issued it.
    pub fn member(self) -> MemberId {
        MemberId((self.0 & ((1 << Self::MEMBER_BITS) - 1)) as u16)
    }

    /// The next revision after `prev` issued by `member` with logical floor `floor`.
    pub fn next(prev: Revision, floor: u64, member: MemberId) -> Revision {
        Revision::new(prev.logical().saturating_add(1).max(floor), member)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(i: &Interner) -> Service {
        Service::new(i, "public", "DEFAULT_GROUP", "demo-svc")
    }

    #[test]
    fn default_instance_id_is_derived() {
        let i = Interner::new();
        let s = svc(&i);
        let inst = InstanceSpec::new("10.0.0.7", 8080)
            .to_instance(&i, &s)
            .unwrap();
        assert_eq!(
            inst.instance_id(&s),
            "10.0.0.7#8080#DEFAULT#DEFAULT_GROUP@@demo-svc"
        );
        assert!(inst.custom_id.is_none());
        let mut spec = InstanceSpec::new("10.0.0.7", 8080);
        spec.instance_id = Some("10.0.0.7#8080#DEFAULT#DEFAULT_GROUP@@demo-svc".into());
        assert!(spec.to_instance(&i, &s).unwrap().custom_id.is_none());
        spec.instance_id = Some("my-id".into());
        assert_eq!(spec.to_instance(&i, &s).unwrap().instance_id(&s), "my-id");
    }

    #[test]
    fn every_field_is_validated_with_its_name() {
        let bad = |f: &dyn Fn(&mut InstanceSpec)| {
            let mut s = InstanceSpec::new("10.0.0.1", 80);
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert_eq!(bad(&|s| s.ip.clear()).field, Field::Ip);
        assert_eq!(bad(&|s| s.ip = "a b".into()).field, Field::Ip);
        assert_eq!(bad(&|s| s.ip = "x".repeat(200)).field, Field::Ip);
        assert_eq!(bad(&|s| s.port = 0).field, Field::Port);
        assert_eq!(bad(&|s| s.port = 65536).field, Field::Port);
        assert_eq!(bad(&|s| s.weight = -1.0).field, Field::Weight);
        assert_eq!(bad(&|s| s.weight = 10_000.5).field, Field::Weight);
        assert_eq!(bad(&|s| s.weight = f64::NAN).field, Field::Weight);
        assert_eq!(
            bad(&|s| s.cluster = "bad name".into()).field,
            Field::Cluster
        );
        assert_eq!(bad(&|s| s.cluster = "c".repeat(65)).field, Field::Cluster);
        let e = bad(&|s| {
            s.metadata = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
        });
        assert_eq!(e.field, Field::Metadata);
        assert!(e.to_string().contains("limit is 64"), "{e}");
        let e = bad(&|s| s.metadata = vec![("k".into(), "v".repeat(9000))]);
        assert_eq!(e.field, Field::Metadata);
        let e = bad(&|s| s.metadata = vec![(META_DELETE_TIMEOUT.into(), "soon".into())]);
        assert_eq!(e.field, Field::Metadata);
        assert_eq!(
            bad(&|s| s.instance_id = Some("\n".into())).field,
            Field::InstanceId
        );
        assert!(InstanceSpec::new("fe80::1", 1).validate().is_ok());
        assert!(
            InstanceSpec::new("my-host.example", 65535)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn service_specs_resolve_defaults_and_groups() {
        assert_eq!(
            ServiceSpec::new("", "", "svc").resolve().unwrap(),
            ("public", "DEFAULT_GROUP", "svc")
        );
        assert_eq!(
            ServiceSpec::new("ns", "", "g@@svc").resolve().unwrap(),
            ("ns", "g", "svc")
        );
        assert_eq!(
            ServiceSpec::new("", "", "").resolve().unwrap_err().field,
            Field::Service
        );
        assert_eq!(
            ServiceSpec::new("", "x", "g@@svc")
                .resolve()
                .unwrap_err()
                .field,
            Field::Service
        );
        assert_eq!(
            ServiceSpec::new(&"n".repeat(129), "", "s")
                .resolve()
                .unwrap_err()
                .field,
            Field::Namespace
        );
        assert_eq!(
            ServiceSpec::new("", "", &"s".repeat(257))
                .resolve()
                .unwrap_err()
                .field,
            Field::Service
        );
        assert_eq!(
            ServiceSpec::new("", "a\u{1}", "s")
                .resolve()
                .unwrap_err()
                .field,
            Field::Group
        );
    }

    #[test]
    fn client_ids_know_their_kind() {
        let c = ClientId::ip_port("10.0.0.7", 8080);
        assert_eq!(c.as_str(), "10.0.0.7:8080#true");
        assert_eq!(c.kind(), ClientKind::IpPort);
        assert_eq!(c.routing_key(), Some("10.0.0.7:8080"));
        let c = ClientId::connection(1717000000000, "10.0.0.7", 53122);
        assert_eq!(c.as_str(), "1717000000000_10.0.0.7_53122");
        assert_eq!(c.kind(), ClientKind::Connection);
        assert!(ClientId::parse("").is_err());
    }

    #[test]
    fn revisions_never_go_backwards_across_restarts() {
        let me = MemberId(3);
        let first = Revision::next(Revision::ZERO, Revision::floor(1_000), me);
        let second = Revision::next(first, Revision::floor(1_000), me);
        assert!(second > first);
        // A restart 1 ms later remembers nothing but still issues a higher revision.
        let after_restart = Revision::next(Revision::ZERO, Revision::floor(1_001), me);
        assert!(after_restart > second);
        assert_eq!(after_restart.member(), me);
        // Two owners never issue equal revisions.
        let other = Revision::next(first, Revision::floor(1_000), MemberId(4));
        assert_ne!(other, second);
    }
}
