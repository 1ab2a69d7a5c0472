//! A sync batch through a serialization library (bitcode), for comparison with the
//! server's own compact layout (`distro_server::cluster::compact`): issue 13 asks whether
//! a library beats that layout in instructions per client.
//!
//! The wire form is the natural one for a library: the records nested as the core holds
//! them, strings inline (borrowed on decode, no copy). Decoding then does what the compact
//! decoder does with its tables, with the same per-batch sharing: every field through the
//! same validation as any peer input, each distinct service, cluster name, metadata map
//! and owner resolved once per batch (looked up in hash maps by their strings, where the
//! compact layout refers to them by index), names interned in the replica's registry. So
//! `decode` produces the same [`ClientChange`]s as the compact decoder, which a test checks.

use distro_core::model::{
    ClientId, Instance, InstanceFields, Metadata, Publication, Revision, Service, ServiceSpec,
    check_cluster_name, validate_metadata,
};
use distro_core::name::Name;
use distro_core::{ClientChange, ClientRecord, MemberId, MemberList, Node};
use std::collections::HashMap;
use std::sync::Arc;

type Fast = foldhash::fast::FixedState;

/// One change as bitcode carries it.
#[derive(bitcode::Encode, bitcode::Decode)]
pub struct WireChange<'a> {
    id: &'a str,
    revision: u64,
    /// `None` for a deletion.
    state: Option<WireState<'a>>,
}

#[derive(bitcode::Encode, bitcode::Decode)]
struct WireState<'a> {
    owner: &'a str,
    publications: Vec<WirePublication<'a>>,
}

#[derive(bitcode::Encode, bitcode::Decode)]
struct WirePublication<'a> {
    namespace: &'a str,
    group: &'a str,
    service: &'a str,
    batch: bool,
    instances: Vec<WireInstance<'a>>,
}

#[derive(bitcode::Encode, bitcode::Decode)]
struct WireInstance<'a> {
    ip: &'a str,
    port: u16,
    weight: f64,
    healthy: bool,
    enabled: bool,
    cluster: &'a str,
    metadata: Vec<(&'a str, &'a str)>,
    custom_id: Option<&'a str>,
}

/// Encodes the changes of a sync batch of `node` with bitcode.
pub fn encode(node: &Node, changes: &[ClientChange]) -> Vec<u8> {
    let members = node.members();
    // A stored client's id may be derived from its instance: written out first, to be
    // borrowed by the wire structs.
    let ids: Vec<Option<distro_core::ClientId>> = changes
        .iter()
        .map(|c| match c {
            ClientChange::Stored(s) => Some(s.id()),
            _ => None,
        })
        .collect();
    let wire: Vec<WireChange<'_>> = changes
        .iter()
        .zip(&ids)
        .map(|(c, id)| match c {
            ClientChange::Upsert(r) => {
                let publications = r.publications.iter().map(|p| &**p);
                wire_state(&members, r.id.as_str(), r.revision, r.owner, publications)
            }
            ClientChange::Stored(s) => {
                let publications = s.publications().iter().map(|p| &**p);
                wire_state(
                    &members,
                    id.as_ref().map_or("", |id| id.as_str()),
                    s.revision(),
                    s.owner(),
                    publications,
                )
            }
            ClientChange::Delete { id, revision } => WireChange {
                id: id.as_str(),
                revision: revision.0,
                state: None,
            },
        })
        .collect();
    bitcode::encode(&wire)
}

/// A full state in bitcode's structs.
fn wire_state<'a>(
    members: &'a MemberList,
    id: &'a str,
    revision: Revision,
    owner: MemberId,
    publications: impl Iterator<Item = &'a Publication>,
) -> WireChange<'a> {
    WireChange {
        id,
        revision: revision.0,
        state: Some(WireState {
            owner: members.addr(owner).as_str(),
            publications: publications
                .map(|p| WirePublication {
                    namespace: p.service.namespace().as_str(),
                    group: p.service.group().as_str(),
                    service: p.service.name().as_str(),
                    batch: p.is_batch(),
                    instances: p
                        .instances
                        .iter()
                        .map(|i| WireInstance {
                            ip: i.ip.as_str(),
                            port: i.port,
                            weight: i.weight,
                            healthy: i.healthy,
                            enabled: i.enabled,
                            cluster: i.cluster.as_str(),
                            metadata: i.metadata.iter().collect(),
                            custom_id: i.custom_id.as_deref(),
                        })
                        .collect(),
                })
                .collect(),
        }),
    }
}

/// Decodes a batch into bitcode's own structs only (the library's share of the work).
pub fn decode_wire(b: &[u8]) -> Result<Vec<WireChange<'_>>, String> {
    bitcode::decode(b).map_err(|e| format!("malformed bitcode batch: {e}"))
}

/// What one batch resolves once: services, clusters, metadata maps and owners.
#[derive(Default)]
struct Shared<'a> {
    services: HashMap<(&'a str, &'a str, &'a str), Service, Fast>,
    clusters: HashMap<&'a str, Name, Fast>,
    maps: HashMap<&'a [(&'a str, &'a str)], Metadata, Fast>,
    owners: HashMap<&'a str, MemberId, Fast>,
}

/// Decodes and validates a batch into the core's changes, as the compact decoder does.
pub fn decode(node: &Node, b: &[u8]) -> Result<Vec<ClientChange>, String> {
    let wire = decode_wire(b)?;
    let mut shared = Shared::default();
    let mut out = Vec::with_capacity(wire.len());
    for w in &wire {
        let id = ClientId::parse(w.id).map_err(|e| e.to_string())?;
        let revision = Revision(w.revision);
        out.push(match &w.state {
            None => ClientChange::Delete { id, revision },
            Some(s) => ClientChange::Upsert(record(node, &mut shared, s, id, revision)?),
        });
    }
    Ok(out)
}

fn record<'a>(
    node: &Node,
    shared: &mut Shared<'a>,
    s: &'a WireState<'a>,
    id: ClientId,
    revision: Revision,
) -> Result<ClientRecord, String> {
    let owner = match shared.owners.get(s.owner) {
        Some(m) => *m,
        None => {
            let m = node
                .members()
                .known(s.owner)
                .ok_or_else(|| format!("{:?} is not a member of this cluster", s.owner))?;
            shared.owners.insert(s.owner, m);
            m
        }
    };
    let mut publications = Vec::with_capacity(s.publications.len());
    for p in &s.publications {
        let key = (p.namespace, p.group, p.service);
        let service = match shared.services.get(&key) {
            Some(s) => s.clone(),
            None => {
                let (ns, group, name) = ServiceSpec::resolve_parts(p.namespace, p.group, p.service)
                    .map_err(|e| e.to_string())?;
                let s = node.registry().service(ns, group, name);
                shared.services.insert(key, s.clone());
                s
            }
        };
        if p.instances.is_empty()
            || p.instances.len() > distro_core::limits::MAX_BATCH_INSTANCES
            || (!p.batch && p.instances.len() != 1)
        {
            return Err(format!(
                "client {id}: {} instances in a publication",
                p.instances.len()
            ));
        }
        let mut instances = Vec::with_capacity(p.instances.len());
        for i in &p.instances {
            instances.push(instance(node, shared, i, &service)?);
        }
        publications.push(Arc::new(if p.batch {
            Publication::batch(service, instances)
        } else {
            Publication::single(service, instances.pop().expect("one instance"))
        }));
    }
    publications.sort_by(|a, b| a.service.cmp(&b.service));
    publications.dedup_by(|a, b| a.service == b.service);
    Ok(ClientRecord {
        id,
        revision,
        owner,
        publications,
    })
}

fn instance<'a>(
    node: &Node,
    shared: &mut Shared<'a>,
    i: &'a WireInstance<'a>,
    service: &Service,
) -> Result<Instance, String> {
    let cluster = match shared.clusters.get(i.cluster) {
        Some(c) => c.clone(),
        None => {
            check_cluster_name(i.cluster).map_err(|e| e.to_string())?;
            let c = node.registry().interner().intern(i.cluster);
            shared.clusters.insert(i.cluster, c.clone());
            c
        }
    };
    let metadata = if i.metadata.is_empty() {
        Metadata::EMPTY
    } else {
        match shared.maps.get(&i.metadata[..]) {
            Some(m) => m.clone(),
            None => {
                validate_metadata(i.metadata.iter().copied()).map_err(|e| e.to_string())?;
                let m =
                    Metadata::from_pairs(node.registry().interner(), i.metadata.iter().copied());
                shared.maps.insert(&i.metadata[..], m.clone());
                m
            }
        }
    };
    InstanceFields {
        ip: i.ip,
        port: i64::from(i.port),
        weight: i.weight,
        healthy: true,
        enabled: true,
        cluster: "",
        metadata: std::iter::empty(),
        instance_id: i.custom_id,
    }
    .validate()
    .map_err(|e| e.to_string())?;
    let mut out = Instance {
        ip: i.ip.into(),
        ipv4: distro_core::model::Ipv4Bits::of(i.ip),
        port: i.port,
        weight: i.weight,
        healthy: i.healthy,
        enabled: i.enabled,
        cluster,
        metadata,
        custom_id: None,
    };
    if let Some(id) = i.custom_id.filter(|s| !s.is_empty())
        && id != out.instance_id(service)
    {
        out.custom_id = Some(Name::new(id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    fn batch() -> (fixture::Cluster, distro_core::message::SyncBatch) {
        fixture::changed_batch(1_000, 200)
    }

    #[test]
    fn decodes_the_same_changes_as_the_compact_layout() {
        let (cluster, batch) = batch();
        let (owner, replica) = (&cluster.nodes[0], &cluster.nodes[1]);
        assert_eq!(batch.changes.len(), 200);
        let compact = distro_server::cluster::compact::encode_changes(owner, &batch.changes);
        let from_compact =
            distro_server::cluster::compact::decode_changes(replica, &compact).expect("valid");
        let from_bitcode = decode(replica, &encode(owner, &batch.changes)).expect("valid");
        assert_eq!(from_bitcode, from_compact);
        assert_eq!(from_bitcode, batch.changes);
    }

    #[test]
    fn a_truncated_batch_is_refused() {
        let (cluster, batch) = batch();
        let bytes = encode(&cluster.nodes[0], &batch.changes);
        let err = decode(&cluster.nodes[1], &bytes[..bytes.len() / 2]).expect_err("truncated");
        assert!(err.contains("malformed bitcode batch"), "{err}");
    }
}
