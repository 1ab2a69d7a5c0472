//! Instances: the stored form ([`Instance`], with its shared [`super::Metadata`]) and the
//! forms a request gives ([`InstanceSpec`], owned; [`InstanceFields`], borrowed), with the
//! validation of every field against the [`limits`](crate::limits).

use super::{
    DEFAULT_CLUSTER, GROUP_SEPARATOR, META_DELETE_TIMEOUT, META_HEARTBEAT_INTERVAL,
    META_HEARTBEAT_TIMEOUT, Metadata, Service,
};
use crate::error::{Field, ValidationError};
use crate::limits::*;
use crate::name::{Interner, Name, short_eq};
use crate::time::Millis;
use std::fmt;

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

/// A stored, validated instance. Always ephemeral: persistent instances are not Distro data.
/// 56 bytes (a test pins it): a publication of one instance is 64, 80 in its `Arc` (a
/// size class of the allocator).
#[derive(Clone)]
pub struct Instance {
    /// IP address or host name (16 bytes, stored inline up to 15: no allocation for IPv4
    /// addresses).
    pub ip: super::SmallStr,
    /// `ip` packed when it is an IPv4 address in its canonical form (what the compact peer
    /// layout sends as 4 bytes): a function of `ip` alone, [`Ipv4Bits::of`] it (or
    /// [`Ipv4Bits::from_octets`] where the text is written from the octets), kept in the
    /// struct's padding so the encoder loads it instead of parsing the text per peer.
    pub ipv4: Ipv4Bits,
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
    pub custom_id: Option<Name>,
}

/// Every field equal, the fixed-width ones compared first (a change of a weight, a port or
/// a health flag is told apart before any text is read); the ips' text only when neither
/// has [`Ipv4Bits`] (equal bits of a canonical IPv4 address have one text, see
/// [`Instance::same_address`]). A replica's apply compares each held publication with the
/// one replacing it (whether the service changed): the derived comparison began with the
/// ip's text, a `memcmp` call, and cost 97 instructions a change in
/// `sync::decode_and_apply.changes_1000` (equal publications at a newer revision); 69
/// this way, 60 inlined (`Publication`'s comparison).
impl PartialEq for Instance {
    #[inline(always)]
    fn eq(&self, other: &Instance) -> bool {
        self.port == other.port
            && self.ipv4 == other.ipv4
            && self.weight == other.weight
            && self.healthy == other.healthy
            && self.enabled == other.enabled
            && self.cluster == other.cluster
            && self.metadata == other.metadata
            && self.custom_id == other.custom_id
            && (self.ipv4.get().is_some() || self.ip == other.ip)
    }
}

impl Instance {
    /// Whether `other` has the same ip and port. The ips' [`Ipv4Bits`] decide when
    /// either has some (the bits are a function of the text: equal texts have equal bits,
    /// and equal bits of a canonical IPv4 address have one text); only two ips without
    /// bits (host names, IPv6, non-canonical text) compare their text.
    #[inline(always)]
    pub fn same_address(&self, other: &Instance) -> bool {
        if self.port != other.port || self.ipv4 != other.ipv4 {
            return false;
        }
        self.ipv4.get().is_some() || self.ip == other.ip
    }

    /// The instance id: the custom id, or `ip#port#cluster#group@@service`.
    pub fn instance_id(&self, service: &Service) -> String {
        match &self.custom_id {
            Some(id) => id.to_string(),
            None => {
                default_instance_id(self.ip.as_str(), self.port, self.cluster.as_str(), service)
            }
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

/// An instance's ip packed as an IPv4 address ([`Instance::ipv4`]): the octets (as a
/// little-endian `u32`) of an ip that is a canonical IPv4 address other than `0.0.0.0`
/// (which packs to 0, the value of none), none for any other text. Four bytes, in the
/// padding of [`Instance`] (which stays 56). Made only from the text (or from the octets
/// the text is written from), so instances of equal ips hold equal bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv4Bits(Option<std::num::NonZeroU32>);

impl Ipv4Bits {
    /// The bits of `ip` (a parse of the text: see
    /// [`canonical_ipv4`](crate::compact_form::canonical_ipv4)).
    #[inline]
    pub fn of(ip: &str) -> Self {
        match crate::compact_form::canonical_ipv4(ip) {
            Some(o) => Ipv4Bits::from_octets(o),
            None => Ipv4Bits(None),
        }
    }

    /// The bits of the ip whose text is the canonical form of the address `o` (the
    /// caller's to ensure: the text is written from these octets).
    #[inline(always)]
    pub fn from_octets(o: [u8; 4]) -> Self {
        Ipv4Bits(std::num::NonZeroU32::new(u32::from_le_bytes(o)))
    }

    /// The octets as a little-endian `u32`, or `None` (the ip is no canonical IPv4
    /// address, or is `0.0.0.0`: the text decides).
    #[inline(always)]
    pub fn get(self) -> Option<u32> {
        self.0.map(std::num::NonZeroU32::get)
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

    /// [`InstanceFields::convert`] of this spec: tells a request equal to `held` from one
    /// that makes a different instance.
    pub fn convert(
        &self,
        interner: &Interner,
        service: &Service,
        held: Option<&Instance>,
    ) -> Result<Conversion, ValidationError> {
        self.fields().convert(interner, service, held)
    }

    /// [`InstanceFields::convert_into`] of this spec: a different instance is written
    /// into `out`, the caller's slot (empty on entry: a value in it would be leaked, not
    /// dropped), not returned. Crate-private for that contract.
    pub(crate) fn convert_into(
        &self,
        interner: &Interner,
        service: &Service,
        held: Option<&Instance>,
        out: &mut Option<Instance>,
    ) -> Result<Converted, ValidationError> {
        self.fields().convert_into(interner, service, held, out)
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
        self.check(Checks::ALL)
    }

    /// Checks the fields `which` names, and the cheap ones (port, weight, instance id)
    /// always, in the order of [`InstanceFields::validate`] (so the first invalid field
    /// is the one reported whichever others are skipped).
    #[inline(always)]
    fn check(&self, which: Checks) -> Result<(), ValidationError> {
        if which.ip {
            validate_ip(self.ip)?;
        }
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
        if which.cluster && !self.cluster.is_empty() {
            check_cluster_name(self.cluster)?;
        }
        if which.metadata {
            validate_metadata(self.metadata.clone())?;
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
        self.to_instance_from(interner, service, None)
    }

    /// [`InstanceFields::to_instance`] for a client that holds `held` in `service`: a
    /// field equal to `held`'s was valid when stored, so it is neither checked again nor
    /// looked up (the stored address, cluster name and metadata map are shared as they
    /// are). A re-registration usually changes a scalar or nothing: it then costs
    /// comparisons, no hashing and no allocation.
    pub fn to_instance_from(
        &self,
        interner: &Interner,
        service: &Service,
        held: Option<&Instance>,
    ) -> Result<Instance, ValidationError> {
        Ok(match self.convert(interner, service, held)? {
            Conversion::Held => held.cloned().expect("only a held instance is `Held`"),
            Conversion::New(inst) => inst,
        })
    }

    /// [`InstanceFields::to_instance_from`], which tells a request equal to `held` in
    /// every field ([`Conversion::Held`], after the same checks: nothing is built, the
    /// caller keeps what it holds) from one that makes a different instance.
    #[inline(always)]
    pub fn convert(
        &self,
        interner: &Interner,
        service: &Service,
        held: Option<&Instance>,
    ) -> Result<Conversion, ValidationError> {
        let mut out = None;
        Ok(
            match self.convert_into(interner, service, held, &mut out)? {
                Converted::Held => Conversion::Held,
                Converted::New => Conversion::New(out.expect("`New` fills the slot")),
            },
        )
    }

    /// [`InstanceFields::convert`], which writes a different instance into `out` (`None`
    /// on entry; `None` again for [`Converted::Held`], left as it is on an error) instead
    /// of returning it: the owner's registration builds it in a slot of its own frame,
    /// from which it moves once into the stored client, not through the layers of enums
    /// (`Result`, [`Conversion`], the publication) a returned instance is copied through.
    /// A value in `out` on entry would be leaked, not dropped: crate-private for that.
    #[inline(always)]
    pub(crate) fn convert_into(
        &self,
        interner: &Interner,
        service: &Service,
        held: Option<&Instance>,
        out: &mut Option<Instance>,
    ) -> Result<Converted, ValidationError> {
        debug_assert!(out.is_none(), "the slot is empty on entry");
        // The held instance when its ip is the request's (its text and bits are kept).
        let ip = held.filter(|h| short_eq(&h.ip, self.ip));
        let default_cluster = self.cluster.is_empty() || self.cluster == DEFAULT_CLUSTER;
        let cluster = held
            .map(|h| &h.cluster)
            .filter(|c| !default_cluster && short_eq(c, self.cluster));
        let metadata = match held {
            Some(h) if h.metadata.is(self.metadata.clone()) => Some(&h.metadata),
            _ => None,
        };
        self.check(Checks {
            ip: ip.is_none(),
            // The default cluster's name is valid: no check for it.
            cluster: cluster.is_none() && !default_cluster,
            metadata: metadata.is_none(),
        })?;
        let custom_id = self.instance_id.filter(|s| !s.is_empty());
        let cluster = match cluster {
            Some(c) => c.clone(),
            None if default_cluster => interner.default_cluster(),
            None => interner.intern(self.cluster),
        };
        // Equal in every field (the ip and metadata compared above, the cluster by its
        // interned name; a custom id is decided below, after the default id it may
        // equal): nothing to build.
        if let Some(h) = held
            && ip.is_some()
            && metadata.is_some()
            && custom_id.is_none()
            && h.custom_id.is_none()
            && h.port as i64 == self.port
            && h.weight == self.weight
            && h.healthy == self.healthy
            && h.enabled == self.enabled
            && h.cluster == cluster
        {
            return Ok(Converted::Held);
        }
        let (ip, ipv4) = match ip {
            Some(h) => (h.ip.clone(), h.ipv4),
            None => (super::SmallStr::new(self.ip), Ipv4Bits::of(self.ip)),
        };
        // The slot is empty (the callers' contract, asserted above in debug builds): what
        // `insert` would drop is nothing, so it is forgotten, not dropped (a call of the
        // drop glue otherwise, ~13 instructions).
        std::mem::forget(out.replace(Instance {
            ip,
            ipv4,
            port: self.port as u16,
            weight: self.weight,
            healthy: self.healthy,
            enabled: self.enabled,
            cluster,
            metadata: metadata.map_or_else(
                || Metadata::from_pairs(interner, self.metadata.clone()),
                Clone::clone,
            ),
            custom_id: None,
        }));
        let Some(inst) = out.as_mut() else {
            unreachable!("just written")
        };
        if let Some(id) = custom_id
            && id != inst.instance_id(service)
        {
            let held_id = held.and_then(|h| h.custom_id.as_ref());
            inst.custom_id = Some(match held_id.filter(|h| h.as_str() == id) {
                Some(h) => h.clone(),
                None => Name::new(id),
            });
        }
        // A custom id (rare) is compared as built, and so is metadata given in another
        // order or with a repeated key (`Metadata::is` matches the stored pairs in their
        // order; `from_pairs` sorts them and keeps a key's last value): the same map.
        if (custom_id.is_some() || metadata.is_none()) && held == Some(&*inst) {
            *out = None;
            return Ok(Converted::Held);
        }
        Ok(Converted::New)
    }
}

/// What `InstanceFields::convert_into` (crate-private) made of a request: a
/// [`Conversion`] without the instance, which it writes into the caller's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Converted {
    /// The held instance, equal in every field: nothing written.
    Held,
    /// A different instance (or the first one), written into the caller's slot.
    New,
}

/// What [`InstanceFields::convert`] makes of a request.
#[derive(Debug)]
pub enum Conversion {
    /// The held instance, equal in every field.
    Held,
    /// A different instance (or the first one).
    New(Instance),
}

/// Which of the costly checks [`InstanceFields::check`] runs.
#[derive(Clone, Copy)]
struct Checks {
    ip: bool,
    cluster: bool,
    metadata: bool,
}

impl Checks {
    const ALL: Checks = Checks {
        ip: true,
        cluster: true,
        metadata: true,
    };
}

/// Checks metadata pairs against the limits of [`crate::limits`] (entries, bytes, key
/// length, the numeric heartbeat keys), as [`InstanceFields::validate`] does; decoders
/// that share one map between many instances check it once.
pub fn validate_metadata<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), ValidationError> {
    let mut entries = 0;
    let mut bytes = 0;
    for (k, v) in pairs {
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
        if (k == META_HEARTBEAT_TIMEOUT || k == META_DELETE_TIMEOUT || k == META_HEARTBEAT_INTERVAL)
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
    Ok(())
}

/// Whether a byte may be in a host name: an ASCII letter or digit, `-`, `_` or `.`.
pub(super) static HOST_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
        b += 1;
    }
    t
};

/// Whether `ip` is a valid instance address: an IP address or a host name (letters,
/// digits, '-', '_' and '.'), at most [`MAX_IP_LEN`] bytes.
pub fn validate_ip(ip: &str) -> Result<(), ValidationError> {
    if ip.is_empty() {
        return Err(ValidationError::new(Field::Ip, "must not be empty"));
    }
    if ip.len() > MAX_IP_LEN {
        return Err(ValidationError::new(
            Field::Ip,
            format!("is {} bytes long, the limit is {MAX_IP_LEN}", ip.len()),
        ));
    }
    // A host name: letters, digits, '-', '_' and '.'. Checked before the address parse,
    // which it makes unnecessary for every IPv4 address (digits and dots): what passes
    // either check is valid, so the order changes nothing but the cost.
    // The bytes are looked up in a table (a load and a test each, not the four ranges).
    if ip.bytes().all(|b| HOST_BYTES[usize::from(b)]) || ip.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
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

/// The id Nacos gives an instance of `service` without a custom one:
/// `ip#port#cluster#group@@service`.
pub fn default_instance_id(ip: &str, port: u16, cluster: &str, service: &Service) -> String {
    format!(
        "{ip}#{port}#{cluster}#{}{GROUP_SEPARATOR}{}",
        service.group(),
        service.name()
    )
}
