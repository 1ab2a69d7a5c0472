//! Conversions between the core's messages and the `distro.v1` protobuf messages.
//!
//! Decoding validates everything a peer sends exactly as a client write is validated
//! (names, limits, ports, weights), because a peer is just another source of input:
//! a malformed message is refused with the field and the reason, never applied.

use crate::proto::distro as pb;
use distro_core::message::{Need, Probe, ShardList, VerifyClients, VerifyDigests, VerifyList};
use distro_core::model::{ClientId, InstanceSpec, Publication, Revision, ServiceSpec};
use distro_core::{ClientChange, ClientRecord, MemberId, Node, ShardDigest, ValidationError};
use std::sync::Arc;

/// Why a protobuf message could not be turned into a core message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A field failed validation.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A required field is missing or a reference is unknown.
    #[error("{0}")]
    Malformed(String),
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// The proto form of an instance.
pub fn instance_to_proto(i: &distro_core::Instance) -> pb::Instance {
    pb::Instance {
        ip: i.ip.to_string(),
        port: u32::from(i.port),
        weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        cluster: i.cluster.to_string(),
        metadata: i
            .metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        instance_id: i.custom_id.as_deref().unwrap_or_default().to_string(),
    }
}

/// The spec of a proto instance, taking its strings (no copies).
pub fn instance_spec_owned(i: pb::Instance) -> InstanceSpec {
    let mut metadata: Vec<(String, String)> = i.metadata.into_iter().collect();
    metadata.sort_unstable();
    InstanceSpec {
        ip: i.ip,
        port: i64::from(i.port),
        weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        cluster: i.cluster,
        metadata,
        instance_id: (!i.instance_id.is_empty()).then_some(i.instance_id),
    }
}

/// The spec of a proto service reference.
pub fn service_spec(s: Option<&pb::ServiceRef>) -> ServiceSpec {
    s.map_or_else(ServiceSpec::default, |s| {
        ServiceSpec::new(&s.namespace, &s.group, &s.name)
    })
}

/// The proto reference of a service spec (as given, unresolved).
pub fn service_spec_to_proto(s: &ServiceSpec) -> pb::ServiceRef {
    pb::ServiceRef {
        namespace: s.namespace.clone(),
        group: s.group.clone(),
        name: s.name.clone(),
    }
}

/// The proto reference of a service spec (as given, unresolved), taking its strings.
pub fn service_spec_into_proto(s: ServiceSpec) -> pb::ServiceRef {
    pb::ServiceRef {
        namespace: s.namespace,
        group: s.group,
        name: s.name,
    }
}

/// The proto reference of a service.
pub fn service_to_proto(s: &distro_core::Service) -> pb::ServiceRef {
    pb::ServiceRef {
        namespace: s.namespace().to_string(),
        group: s.group().to_string(),
        name: s.name().to_string(),
    }
}

fn member_addr(node: &Node, m: MemberId) -> String {
    node.member_addr(m).to_string()
}

/// The member id of `addr` (a current member, or one that left: its last syncs and
/// forwards are still taken), or an error naming it.
pub fn member_id(node: &Node, addr: &str) -> Result<MemberId, WireError> {
    node.members()
        .known(addr)
        .ok_or_else(|| WireError::Malformed(format!("{addr:?} is not a member of this cluster")))
}

/// The member id of the owner a peer's record names: a member this node knows, or one
/// it learns as a former member ([`Node::owner_id`]: a node started after a member left
/// still receives replicas that member owned), or an error naming it.
pub fn owner_id(node: &Node, addr: &str) -> Result<MemberId, WireError> {
    node.owner_id(addr)
        .map_err(|e| WireError::Malformed(format!("owner {addr:?}: {e}")))
}

/// The client a snapshot request resumes after (`SnapshotRequest.after`): none when
/// empty, else a client id, or an error naming the field.
pub fn snapshot_after(after: &str) -> Result<Option<ClientId>, WireError> {
    if after.is_empty() {
        return Ok(None);
    }
    ClientId::parse(after)
        .map(Some)
        .map_err(|e| WireError::Malformed(format!("snapshot request: after: {e}")))
}

/// The proto form of a client record.
pub fn record_to_proto(node: &Node, r: &ClientRecord) -> pb::ClientRecord {
    pb::ClientRecord {
        id: r.id.as_str().to_string(),
        revision: r.revision.0,
        owner: member_addr(node, r.owner),
        publications: r
            .publications
            .iter()
            .map(|p| pb::Publication {
                service: Some(service_to_proto(&p.service)),
                batch: p.is_batch(),
                instances: p.instances.iter().map(instance_to_proto).collect(),
            })
            .collect(),
    }
}

/// Decodes and validates a client record (names interned in `node`'s registry).
pub fn record_from_proto(node: &Node, r: pb::ClientRecord) -> Result<ClientRecord, WireError> {
    let id = ClientId::parse(&r.id)?;
    let owner = if r.owner.is_empty() {
        node.me()
    } else {
        owner_id(node, &r.owner)?
    };
    let mut publications = Vec::with_capacity(r.publications.len());
    for p in r.publications {
        let spec = service_spec(p.service.as_ref());
        let service = node
            .registry()
            .resolve_service(&spec.namespace, &spec.group, &spec.name)?;
        if p.instances.is_empty() {
            return Err(WireError::Malformed(format!(
                "client {id}: empty publication"
            )));
        }
        if p.instances.len() > distro_core::limits::MAX_BATCH_INSTANCES {
            return Err(WireError::Malformed(format!(
                "client {id}: {} instances in one publication",
                p.instances.len()
            )));
        }
        let count = p.instances.len();
        let mut instances = Vec::with_capacity(count);
        for i in p.instances {
            instances
                .push(instance_spec_owned(i).to_instance(node.registry().interner(), &service)?);
        }
        publications.push(Arc::new(if p.batch {
            Publication::batch(service, instances)
        } else {
            let Some(i) = instances.pop().filter(|_| count == 1) else {
                return Err(WireError::Malformed(format!(
                    "client {id}: a single publication with {count} instances"
                )));
            };
            Publication::single(service, i)
        }));
    }
    publications.sort_by(|a, b| a.service.cmp(&b.service));
    publications.dedup_by(|a, b| a.service == b.service);
    Ok(ClientRecord {
        id,
        revision: Revision(r.revision),
        owner,
        publications,
    })
}

/// The proto form of a change.
pub fn change_to_proto(node: &Node, c: &ClientChange) -> pb::ClientChange {
    pb::ClientChange {
        change: Some(match c {
            ClientChange::Upsert(r) => pb::client_change::Change::Upsert(record_to_proto(node, r)),
            ClientChange::Stored(s) => {
                pb::client_change::Change::Upsert(record_to_proto(node, &s.to_record()))
            }
            ClientChange::Delete { id, revision } => {
                pb::client_change::Change::Delete(pb::Deletion {
                    id: id.as_str().to_string(),
                    revision: revision.0,
                })
            }
        }),
    }
}

/// Decodes a change.
pub fn change_from_proto(node: &Node, c: pb::ClientChange) -> Result<ClientChange, WireError> {
    match c.change {
        Some(pb::client_change::Change::Upsert(r)) => {
            Ok(ClientChange::Upsert(record_from_proto(node, r)?))
        }
        Some(pb::client_change::Change::Delete(d)) => Ok(ClientChange::Delete {
            id: ClientId::parse(&d.id)?,
            revision: Revision(d.revision),
        }),
        None => Err(WireError::Malformed(
            "a change with neither upsert nor delete".into(),
        )),
    }
}

/// Digests to proto.
pub fn digests_to_proto(v: &VerifyDigests) -> Vec<pb::ShardDigest> {
    v.digests
        .iter()
        .map(|d| pb::ShardDigest {
            count: d.count,
            sum_lo: d.sum_lo,
            sum_hi: d.sum_hi,
        })
        .collect()
}

/// Digests from proto.
pub fn digests_from_proto(v: &[pb::ShardDigest]) -> VerifyDigests {
    VerifyDigests {
        digests: v
            .iter()
            .map(|d| ShardDigest {
                count: d.count,
                sum_lo: d.sum_lo,
                sum_hi: d.sum_hi,
            })
            .collect(),
    }
}

fn versions_to_proto(v: &[(ClientId, Revision)]) -> Vec<pb::ClientVersion> {
    v.iter()
        .map(|(id, r)| pb::ClientVersion {
            id: id.as_str().to_string(),
            revision: r.0,
        })
        .collect()
}

fn versions_from_proto(v: &[pb::ClientVersion]) -> Result<Vec<(ClientId, Revision)>, WireError> {
    v.iter()
        .map(|c| Ok((ClientId::parse(&c.id)?, Revision(c.revision))))
        .collect()
}

/// A verify list to proto.
pub fn list_to_proto(l: &VerifyList) -> Vec<pb::ShardList> {
    l.shards
        .iter()
        .map(|s| pb::ShardList {
            shard: s.shard,
            clients: versions_to_proto(&s.clients),
        })
        .collect()
}

/// A verify list from proto.
pub fn list_from_proto(v: &[pb::ShardList]) -> Result<VerifyList, WireError> {
    Ok(VerifyList {
        shards: v
            .iter()
            .map(|s| {
                Ok(ShardList {
                    shard: s.shard,
                    clients: versions_from_proto(&s.clients)?,
                })
            })
            .collect::<Result<_, WireError>>()?,
    })
}

/// Per-client verify to proto.
pub fn verify_clients_to_proto(v: &VerifyClients) -> Vec<pb::ClientVersion> {
    versions_to_proto(&v.clients)
}

/// Per-client verify from proto.
pub fn verify_clients_from_proto(v: &[pb::ClientVersion]) -> Result<VerifyClients, WireError> {
    Ok(VerifyClients {
        clients: versions_from_proto(v)?,
    })
}

/// Verify needs to proto.
pub fn needs_to_proto(node: &Node, needs: &[(ClientId, Need)]) -> Vec<pb::Need> {
    needs
        .iter()
        .map(|(id, n)| pb::Need {
            id: id.as_str().to_string(),
            need: Some(match n {
                Need::Missing => pb::need::Need::Missing(true),
                Need::Stale => pb::need::Need::Stale(true),
                Need::Newer(c) => pb::need::Need::Newer(change_to_proto(node, c)),
            }),
        })
        .collect()
}

/// Verify needs from proto.
pub fn needs_from_proto(node: &Node, v: Vec<pb::Need>) -> Result<Vec<(ClientId, Need)>, WireError> {
    v.into_iter()
        .map(|n| {
            let id = ClientId::parse(&n.id)?;
            let need = match n.need {
                Some(pb::need::Need::Missing(_)) => Need::Missing,
                Some(pb::need::Need::Stale(_)) => Need::Stale,
                Some(pb::need::Need::Newer(c)) => Need::Newer(change_from_proto(node, c)?),
                None => return Err(WireError::Malformed(format!("need of {id} without a kind"))),
            };
            Ok((id, need))
        })
        .collect()
}

/// A probe from proto.
pub fn probe_from_proto(p: &pb::ProbeRequest) -> Probe {
    Probe {
        incarnation: p.incarnation,
        loaded: p.loaded,
    }
}
