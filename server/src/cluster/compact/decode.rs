//! Decoding the compact layout (the layout is the parent module's documentation): every
//! length, count and index checked before use, into a [`Decoded`] the core applies
//! borrowed.

use super::text::{IdBuf, MillisHigh, ipv4_text, push_decimal};
use super::{
    CUSTOM_ID, DELETION, ENABLED, FLOOR_SHIFT, HEALTHY, ID_CONNECTION, ID_STRING, IPV4, IPV6,
    MEMBER_BITS, METADATA, MILLIS_ESCAPE, VERSION, WEIGHT, malformed,
};
use crate::cluster::wire::WireError;
use distro_core::limits::{MAX_CLIENT_ID_LEN, MAX_IP_LEN, MAX_WEIGHT, MIN_WEIGHT};
use distro_core::model::{
    ClientId, Instance, InstanceFields, Ipv4Bits, Metadata, Publication, Revision, Service,
    SmallStr, ascii_string, check_cluster_name, default_instance_id, push_within_capacity,
    validate_metadata,
};
use distro_core::name::Name;
use distro_core::{
    ChangeRef, ClientChange, ClientRecord, Field, MemberId, Node, StateMut, ValidationError,
};
use std::net::Ipv6Addr;
use std::sync::Arc;

mod reader;
#[cfg(test)]
mod tests;

use reader::Reader;

/// The decoded tables of one batch.
struct Tables<'a> {
    base: u64,
    strings: Vec<&'a str>,
    maps: Vec<Metadata>,
    services: Vec<Service>,
    /// Interned cluster names by string index, filled on first use.
    clusters: Vec<Option<Name>>,
    /// Member ids by string index, filled on first use.
    owners: Vec<Option<MemberId>>,
}

impl<'a> Tables<'a> {
    /// The tables at the reader's position, and the reader after them (out of line: once
    /// a batch).
    #[inline(never)]
    fn read(node: &Node, mut r: Reader<'a>, base: u64) -> Result<(Self, Reader<'a>), WireError> {
        let r = &mut r;
        let n = r.count("strings", 1)?;
        let mut lens = Vec::with_capacity(n);
        let mut total = 0usize;
        for i in 0..n {
            let at = r.at();
            let len = r.varint("string length")?;
            total = total.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
            if total > r.len {
                return Err(malformed(
                    at,
                    format!("string {i}: {len} bytes do not fit in the batch"),
                ));
            }
            lens.push(len as usize);
        }
        let blob_at = r.at();
        let blob = r.take(total, "string table")?;
        let blob = std::str::from_utf8(blob)
            .map_err(|e| malformed(blob_at + e.valid_up_to(), "a string is not UTF-8"))?;
        let mut strings = Vec::with_capacity(n);
        let mut start = 0;
        for (i, len) in lens.into_iter().enumerate() {
            let e = start + len;
            if !blob.is_char_boundary(e) {
                return Err(malformed(
                    blob_at + e,
                    format!("string {i} ends inside a character"),
                ));
            }
            strings.push(&blob[start..e]);
            start = e;
        }
        let string = |at: usize, i: u32, what: &str| string_of(&strings, at, i, what);
        let n_maps = r.count("metadata maps", 1)?;
        let mut maps = Vec::with_capacity(n_maps);
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for _ in 0..n_maps {
            let at = r.at();
            let entries = r.count("metadata entries", 2)?;
            pairs.clear();
            for _ in 0..entries {
                let kat = r.at();
                let k = r.index("metadata key")?;
                let k = string(kat, k, "metadata key")?;
                let vat = r.at();
                let v = r.index("metadata value")?;
                let v = string(vat, v, "metadata value")?;
                pairs.push((k, v));
            }
            validate_metadata(pairs.iter().copied())
                .map_err(|e| malformed(at, format!("metadata map: {e}")))?;
            maps.push(Metadata::from_pairs(
                node.registry().interner(),
                pairs.iter().copied(),
            ));
        }
        let n_services = r.count("services", 3)?;
        let mut services = Vec::with_capacity(n_services);
        let resolver = node.registry().service_resolver();
        for _ in 0..n_services {
            let at = r.at();
            let ns = r.index("namespace")?;
            let ns = string(at, ns, "namespace")?;
            let at = r.at();
            let group = r.index("group")?;
            let group = string(at, group, "group")?;
            let at = r.at();
            let name = r.index("service")?;
            let name = string(at, name, "service")?;
            services.push(resolver.resolve(ns, group, name)?);
        }
        let t = Tables {
            base,
            clusters: vec![None; strings.len()],
            owners: vec![None; strings.len()],
            strings,
            maps,
            services,
        };
        Ok((t, *r))
    }

    /// The string that the index just read at `at` refers to.
    #[inline(always)]
    fn string(&self, at: usize, i: u32, what: &str) -> Result<&'a str, WireError> {
        string_of(&self.strings, at, i, what)
    }

    /// The cluster name an instance names: a name of the batch's cache in line, its first
    /// use out of line (a call of the whole, with its error paths, cost ~40 a record).
    #[inline(always)]
    fn cluster(&mut self, node: &Node, r: &mut Reader<'_>) -> Result<Name, WireError> {
        let at = r.at();
        let i = r.index("cluster")?;
        // Interned on first use (the cache is as long as the strings: a hit is in range).
        if let Some(Some(c)) = self.clusters.get(i as usize) {
            return Ok(c.clone());
        }
        self.first_cluster(node, at, i)
    }

    /// String `i` (read at `at`) checked as a cluster name and interned, cached for the
    /// batch's other instances.
    #[cold]
    #[inline(never)]
    fn first_cluster(&mut self, node: &Node, at: usize, i: u32) -> Result<Name, WireError> {
        let s = self.string(at, i, "cluster")?;
        check_cluster_name(s).map_err(|e| malformed(at, format!("cluster: {e}")))?;
        let c = node.registry().interner().intern(s);
        self.clusters[i as usize] = Some(c.clone());
        Ok(c)
    }

    #[inline(always)]
    fn owner(&mut self, node: &Node, r: &mut Reader<'_>) -> Result<MemberId, WireError> {
        let at = r.at();
        let i = r.index("owner")?;
        self.owner_of(node, at, i)
    }

    /// Service `s` of the batch's table (an index read at `at`).
    #[inline(always)]
    fn service_of(&self, at: usize, s: u32) -> Result<Service, WireError> {
        self.services
            .get(s as usize)
            .cloned()
            .ok_or_else(|| malformed(at, format!("service {s} of {}", self.services.len())))
    }

    /// The member that string `i` (an index read at `at`) names.
    #[inline(always)]
    fn owner_of(&mut self, node: &Node, at: usize, i: u32) -> Result<MemberId, WireError> {
        if let Some(Some(m)) = self.owners.get(i as usize) {
            return Ok(*m);
        }
        let s = self.string(at, i, "owner")?;
        let m = crate::cluster::wire::owner_id(node, s)?;
        self.owners[i as usize] = Some(m);
        Ok(m)
    }

    #[inline(always)]
    fn revision(&self, r: &mut Reader<'_>) -> Result<Revision, WireError> {
        let at = r.at();
        let d = r.varint("revision")?;
        let low = if d & 1 != 0 {
            let lat = r.at();
            let low = r.varint("revision low bits")?;
            if low == 0 || low >= 1 << FLOOR_SHIFT {
                return Err(malformed(lat, format!("revision low bits {low}")));
            }
            low
        } else {
            0
        };
        let mat = r.at();
        let member = r.varint("revision member")?;
        self.revision_of(at, d, low, mat, member)
    }

    /// The revision of the varints `d` (read at `at`), `low` (0: none sent) and `member`
    /// (read at `mat`), checked.
    #[inline(always)]
    fn revision_of(
        &self,
        at: usize,
        d: u64,
        low: u64,
        mat: usize,
        member: u64,
    ) -> Result<Revision, WireError> {
        if member >= 1 << MEMBER_BITS {
            return Err(malformed(mat, format!("revision member {member}")));
        }
        let logical = (d >> 1)
            .checked_mul(1 << FLOOR_SHIFT)
            .and_then(|x| x.checked_add(low))
            .and_then(|x| x.checked_add(self.base))
            .filter(|x| x.leading_zeros() >= MEMBER_BITS)
            .ok_or_else(|| malformed(at, "revision exceeds 64 bits"))?;
        Ok(Revision(logical << MEMBER_BITS | member))
    }
}

/// String `i` of `strings`, read at `at` (in line: a call cost more than the lookup; the
/// error out of line).
#[inline(always)]
fn string_of<'a>(strings: &[&'a str], at: usize, i: u32, what: &str) -> Result<&'a str, WireError> {
    match strings.get(i as usize) {
        Some(&s) => Ok(s),
        None => Err(no_string(at, i, what, strings.len())),
    }
}

#[cold]
#[inline(never)]
fn no_string(at: usize, i: u32, what: &str, n: usize) -> WireError {
    malformed(at, format!("{what} refers to string {i} of {n}"))
}

/// An instance's flags, ip and port read field by field (see [`instance`]). Returns the
/// reader after them too (the reader is copied: see [`Reader`]).
#[inline(never)]
#[allow(clippy::type_complexity)]
fn flags_ip_port<'a>(
    t: &Tables<'_>,
    mut r: Reader<'a>,
) -> Result<(u8, SmallStr, u16, Reader<'a>), WireError> {
    let r = &mut r;
    let at = r.at();
    let flags = r.u8("flags")?;
    if flags & 0x80 != 0 || flags & (IPV4 | IPV6) == IPV4 | IPV6 {
        return Err(malformed(at, format!("instance flags {flags:#04x}")));
    }
    let ip: SmallStr = if flags & IPV4 != 0 {
        let b = r.take(4, "ip")?;
        ipv4_text([b[0], b[1], b[2], b[3]])
    } else if flags & IPV6 != 0 {
        let b = r.take(16, "ip")?;
        let mut o = [0u8; 16];
        o.copy_from_slice(b);
        SmallStr::from(Ipv6Addr::from(o).to_string())
    } else {
        let at = r.at();
        let i = r.index("ip")?;
        SmallStr::new(t.string(at, i, "ip")?)
    };
    let port = r.u16("port")?;
    Ok((flags, ip, port, *r))
}

// Inlined into its two callers (a publication of one instance, and each of a batch):
// the call's register saves and the copy of the returned instance cost ~17 a record.
#[inline(always)]
fn instance(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
    service: &Service,
) -> Result<Instance, WireError> {
    let at = r.at();
    // The flags, a packed IPv4 address and the port (nearly every instance) in one read
    // when the batch holds them; else field by field.
    let (flags, ip, ipv4, port) = match r.rest.split_first_chunk::<7>() {
        Some((&[flags, a, b, c, d, p0, p1], rest)) if flags & (0x80 | IPV4 | IPV6) == IPV4 => {
            r.rest = rest;
            let o = [a, b, c, d];
            let port = u16::from_le_bytes([p0, p1]);
            (flags, ipv4_text(o), Ipv4Bits::from_octets(o), port)
        }
        _ => {
            let (flags, ip, port, after) = flags_ip_port(t, *r)?;
            *r = after;
            let ipv4 = Ipv4Bits::of(&ip);
            (flags, ip, ipv4, port)
        }
    };
    let weight = if flags & WEIGHT != 0 {
        f64::from_bits(r.u64("weight")?)
    } else {
        1.0
    };
    let cluster = t.cluster(node, r)?;
    let metadata = if flags & METADATA != 0 {
        let at = r.at();
        let map = r.index("metadata")?;
        t.maps.get(map as usize).cloned().ok_or_else(|| {
            malformed(
                at,
                format!("metadata refers to map {map} of {}", t.maps.len()),
            )
        })?
    } else {
        Metadata::EMPTY
    };
    let custom = if flags & CUSTOM_ID != 0 {
        let at = r.at();
        let i = r.index("custom id")?;
        Some(t.string(at, i, "custom id")?)
    } else {
        None
    };
    // The scalar fields through the same validation as any input; cluster and metadata
    // were validated once for the batch. A packed address is valid by construction, and
    // a port read as u16 needs only the zero check: with no custom id either, what is
    // left to check is done here (same limits, same errors) without the whole pass.
    let packed = flags & (IPV4 | IPV6) != 0;
    if packed && custom.is_none() {
        if port == 0 {
            return Err(malformed(
                at,
                ValidationError::new(Field::Port, "0 is outside 1..=65535"),
            ));
        }
        // A weight of 1 (no weight sent) is in range; a sent one is compared with the
        // bounds only: they are finite, so NaN and the infinities fall outside (as
        // `InstanceFields::validate`'s finiteness check refuses them).
        const _: () = assert!(
            MIN_WEIGHT.is_finite()
                && MAX_WEIGHT.is_finite()
                && MIN_WEIGHT <= 1.0
                && 1.0 <= MAX_WEIGHT
        );
        if flags & WEIGHT != 0 && !(MIN_WEIGHT..=MAX_WEIGHT).contains(&weight) {
            return Err(malformed(
                at,
                ValidationError::new(
                    Field::Weight,
                    format!("{weight} is outside {MIN_WEIGHT}..={MAX_WEIGHT}"),
                ),
            ));
        }
    } else {
        InstanceFields {
            ip: ip.as_str(),
            port: i64::from(port),
            weight,
            healthy: true,
            enabled: true,
            cluster: "",
            metadata: std::iter::empty(),
            instance_id: custom,
        }
        .validate()
        .map_err(|e| malformed(at, format!("instance: {e}")))?;
    }
    let (healthy, enabled) = (flags & HEALTHY != 0, flags & ENABLED != 0);
    // A custom id is kept only if it is not the one the instance implies; the instance is
    // built where it is returned (no copy from a local).
    let custom_id = match custom.filter(|s| !s.is_empty()) {
        Some(id) if id != default_instance_id(ip.as_str(), port, cluster.as_str(), service) => {
            Some(Name::new(id))
        }
        _ => None,
    };
    Ok(Instance {
        ip,
        ipv4,
        port,
        weight,
        healthy,
        enabled,
        cluster,
        metadata,
        custom_id,
    })
}

/// Reads the publications of a state record onto `out.publications`, then sorts the
/// record's run by service (one publication per service, the first of a repeated one).
#[inline(always)]
fn publications(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
    out: &mut Decoded,
) -> Result<(), WireError> {
    let n = r.count("publications", 3)?;
    // One (nearly every record): no loop, reservation or sort.
    if n == 1 {
        return publication(node, t, r, out);
    }
    let start = out.publications.len();
    out.publications.reserve(n);
    for _ in 0..n {
        publication(node, t, r, out)?;
    }
    let run = &mut out.publications[start..];
    if run.len() > 1 {
        // Stable: of a repeated service, the first stays first, and is kept.
        run.sort_by(|a, b| service_of(a).cmp(service_of(b)));
        let mut kept = 1;
        for i in 1..run.len() {
            if service_of(&run[i]) != service_of(&run[kept - 1]) {
                run.swap(kept, i);
                kept += 1;
            }
        }
        out.publications.truncate(start + kept);
    }
    Ok(())
}

/// Reads one publication onto `out.publications`.
#[inline(always)]
fn publication(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
    out: &mut Decoded,
) -> Result<(), WireError> {
    let sat = r.at();
    let s = r.index("service")?;
    let service = t.service_of(sat, s)?;
    let vat = r.at();
    let v = r.varint("instances")?;
    publication_of(node, t, r, out, service, (vat, v))
}

/// [`publication`] once its service is found and its instance varint `v` (read at `at`)
/// read: the instances at the reader's position.
#[inline(always)]
fn publication_of(
    node: &Node,
    t: &mut Tables<'_>,
    r: &mut Reader<'_>,
    out: &mut Decoded,
    service: Service,
    (at, v): (usize, u64),
) -> Result<(), WireError> {
    {
        let batch = v & 1 != 0;
        let count = v >> 1;
        if count == 0 {
            return Err(malformed(at, "an empty publication"));
        }
        if count > distro_core::limits::MAX_BATCH_INSTANCES as u64 {
            return Err(malformed(
                at,
                format!("{count} instances in one publication"),
            ));
        }
        if !batch && count != 1 {
            return Err(malformed(
                at,
                format!("a single publication with {count} instances"),
            ));
        }
        if batch {
            let mut v = Vec::with_capacity(count as usize);
            for _ in 0..count {
                v.push(instance(node, t, r, &service)?);
            }
            out.publications.push(Some(Publication::batch(service, v)));
        } else {
            let one = instance(node, t, r, &service)?;
            let one = Some(Publication::single(service, one));
            // Stored into the vector's spare room, not built in the frame and copied
            // through `Vec::push` (the decode reserves a publication per record; a
            // record of several publications can use up a later one's, then it grows).
            if let Err(one) = push_within_capacity(&mut out.publications, one) {
                out.publications.push(one);
            }
        }
    }
    Ok(())
}

// A derived id is digits, separators and a validated ip (an IP address or a host name:
// printable ASCII, at most `MAX_IP_LEN` bytes), so it is a valid client id by
// construction: at most 20 + 1 + `MAX_IP_LEN` + 1 + 5 bytes (a connection's), and no
// control character.
const _: () = assert!(20 + 1 + MAX_IP_LEN + 1 + 5 <= MAX_CLIENT_ID_LEN);

/// `#true`, the end of an ip:port client's id, as the low bytes of a word.
const TRUE: u64 = u64::from_le_bytes(*b"#true\0\0\0");

/// Writes the id derived from the record's first instance onto `ids`: a connection
/// client's (`<millis>_<ip>_<port>`, millis and port from the record) or an ip:port
/// client's (`<ip>:<port>#true`). Built in `b` (the batch's buffer on the stack, zeroed
/// once for the batch) with word stores, then copied once (an ip longer than
/// [`IdBuf::MAX_IP`], a host name, piece by piece).
fn derived_id(
    ids: &mut Vec<u8>,
    b: &mut IdBuf,
    publications: &[Option<Publication>],
    at: usize,
    connection: Option<(u64, u16)>,
    last: &mut MillisHigh,
) -> Result<(), WireError> {
    let Some(first) = publications
        .first()
        .and_then(|p| p.as_ref())
        .and_then(|p| p.instances.first())
    else {
        return Err(malformed(at, "a derived client id without an instance"));
    };
    let start = ids.len();
    let ip = first.ip.as_bytes();
    if ip.len() <= IdBuf::MAX_IP {
        b.clear();
        match connection {
            Some((millis, port)) => {
                b.millis(millis, last);
                b.byte(b'_');
                b.text(ip);
                b.byte(b'_');
                b.port(port);
            }
            None => {
                b.text(ip);
                b.byte(b':');
                b.port(first.port);
                b.word(TRUE, 5);
            }
        }
        b.append_to(ids);
    } else {
        match connection {
            Some((millis, port)) => {
                push_decimal(ids, millis);
                ids.push(b'_');
                ids.extend_from_slice(ip);
                ids.push(b'_');
                push_decimal(ids, u64::from(port));
            }
            None => {
                ids.extend_from_slice(ip);
                ids.push(b':');
                push_decimal(ids, u64::from(first.port));
                ids.extend_from_slice(b"#true");
            }
        }
    }
    debug_assert!(
        std::str::from_utf8(&ids[start..]).is_ok_and(|s| ClientId::check(s).is_ok()),
        "a derived id is valid by construction"
    );
    Ok(())
}

/// A decoded sync batch or snapshot chunk, every field validated as any peer input and
/// every name interned, held for the apply without a structure per record: the ids'
/// text back to back in one string, the publications in one vector (no allocation per
/// record: a publication of one instance holds it inline), and per record its revision,
/// owner and where its id and publications lie. The core applies it with the
/// publications handed over ([`Decoded::changes`], [`Node::handle_sync`];
/// [`Decoded::states`], [`Node::load_states`]): each one it stores is moved into the
/// stored client, not copied; an id is stored only for a client it does not hold yet.
#[derive(Debug, Default)]
pub struct Decoded {
    ids: String,
    /// Every one `Some` until the apply takes it.
    publications: Vec<Option<Publication>>,
    records: Vec<Record>,
}

/// The service of a decoded publication (not taken yet).
fn service_of(p: &Option<Publication>) -> &Service {
    &p.as_ref().expect("decoded, not taken yet").service
}

/// Where one record of a [`Decoded`] lies.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// The end of the id in `ids` (it starts where the previous one ends).
    id_end: u32,
    /// The end of the publications in `publications` (likewise; none: a deletion).
    pubs_end: u32,
    revision: Revision,
    /// The sender's attribution; `None`: a deletion.
    owner: Option<MemberId>,
    /// The id was derived as a connection client's (see [`StateMut::connection`]).
    connection: bool,
}

impl Decoded {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records as the core applies them, the publications handed over (the apply
    /// takes those it stores: a second call finds them gone).
    pub fn changes(&mut self) -> impl Iterator<Item = ChangeRef<'_>> {
        let (mut ids, mut pubs) = (self.ids.as_str(), self.publications.as_mut_slice());
        let (mut id_at, mut pubs_at) = (0, 0);
        self.records.iter().map(move |r| {
            let (id_end, pubs_end) = (r.id_end as usize, r.pubs_end as usize);
            let (text, rest) = ids.split_at(id_end - id_at);
            let (ps, rest_pubs) = std::mem::take(&mut pubs).split_at_mut(pubs_end - pubs_at);
            (ids, pubs, id_at, pubs_at) = (rest, rest_pubs, id_end, pubs_end);
            match r.owner {
                Some(owner) => ChangeRef::Moved(StateMut {
                    id: text,
                    revision: r.revision,
                    owner,
                    publications: ps,
                    connection: r.connection,
                }),
                None => ChangeRef::Delete(text, r.revision),
            }
        })
    }

    /// The records of a snapshot chunk (every one a full state, handed over as by
    /// [`Decoded::changes`]), or an error naming the first deletion.
    pub fn states(&mut self) -> Result<impl Iterator<Item = StateMut<'_>>, WireError> {
        if let Some(at) = self.records.iter().position(|r| r.owner.is_none()) {
            let start = at
                .checked_sub(1)
                .map_or(0, |p| self.records[p].id_end as usize);
            let id = &self.ids[start..self.records[at].id_end as usize];
            return Err(WireError::Malformed(format!(
                "malformed compact chunk: a deletion of {id} in a snapshot"
            )));
        }
        Ok(self.changes().filter_map(|c| match c {
            ChangeRef::Moved(s) => Some(s),
            ChangeRef::State(_) | ChangeRef::Delete(..) => None,
        }))
    }

    /// The records of a snapshot chunk as the core's owned records (tests and tools), or
    /// an error naming the first deletion.
    pub fn into_records(mut self) -> Result<Vec<ClientRecord>, WireError> {
        Ok(self.states()?.map(record_of).collect())
    }

    /// Adds a change decoded by another path (the per-change protobuf fields).
    pub fn push(&mut self, c: ClientChange) {
        self.ids.push_str(c.id().as_str());
        let revision = c.revision();
        let owner = match c {
            ClientChange::Upsert(r) => {
                let publications = r.publications.into_iter().map(Arc::unwrap_or_clone);
                self.publications.extend(publications.map(Some));
                Some(r.owner)
            }
            ClientChange::Stored(s) => {
                let publications = s.publications().iter().map(|p| Some(p.get().clone()));
                self.publications.extend(publications);
                Some(s.owner())
            }
            ClientChange::Delete { .. } => None,
        };
        self.end_record(self.ids.len(), revision, owner, false);
    }

    /// Ends a record whose id ends at `id_end`.
    fn end_record(
        &mut self,
        id_end: usize,
        revision: Revision,
        owner: Option<MemberId>,
        connection: bool,
    ) {
        self.records.push(Record {
            id_end: u32::try_from(id_end).expect("a batch under 4 GiB"),
            pubs_end: u32::try_from(self.publications.len()).expect("a batch under 4 GiB"),
            revision,
            owner,
            connection,
        });
    }

    /// The records as the core's owned changes (tests and tools).
    pub fn into_changes(mut self) -> Vec<ClientChange> {
        self.changes()
            .map(|c| match c {
                ChangeRef::Moved(s) => ClientChange::Upsert(record_of(s)),
                ChangeRef::State(s) => ClientChange::Upsert(s.to_record()),
                ChangeRef::Delete(id, revision) => ClientChange::Delete {
                    id: ClientId::parse(id).expect("checked when decoded"),
                    revision,
                },
            })
            .collect()
    }
}

/// Decodes the changes of a sync batch or the records of a snapshot chunk, validating
/// every field as any peer input; names are interned in `node`'s registry. A malformed
/// batch is refused whole (with the byte offset and the field).
pub fn decode(node: &Node, b: &[u8]) -> Result<Decoded, WireError> {
    let mut out = Decoded::default();
    decode_into(node, b, &mut out)?;
    Ok(out)
}

/// The most client id text one [`Decoded`] holds: 1 GiB. A record's id can be far longer
/// than its bytes on the wire (a 256-byte string id is named by a 1-byte index, a derived
/// one by its millis and port), so a peer message within the size limit could otherwise
/// make a replica allocate gigabytes, past the 32-bit offsets of [`Decoded`]'s records.
/// A 1 MiB sync batch or snapshot chunk holds at most ~90 MiB of ids.
pub(super) const MAX_DECODED_ID_BYTES: usize = 1 << 30;

/// [`decode`] onto `out` (which may hold records already).
pub fn decode_into(node: &Node, b: &[u8], out: &mut Decoded) -> Result<(), WireError> {
    decode_into_within(node, b, out, MAX_DECODED_ID_BYTES)
}

/// [`decode_into`] with at most `max_ids` bytes of client ids in `out`.
pub(super) fn decode_into_within(
    node: &Node,
    b: &[u8],
    out: &mut Decoded,
    max_ids: usize,
) -> Result<(), WireError> {
    let mut r = Reader::new(b);
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(malformed(
            0,
            format!(
                "version {version}, this node reads version {VERSION} (all members must run \
                 the same layout version)"
            ),
        ));
    }
    let n = r.count("records", 4)?;
    let base = r.varint("revision base")?;
    let (mut t, after) = Tables::read(node, r, base)?;
    r = after;
    out.records.reserve(n);
    out.publications.reserve(n);
    // The ids as bytes (digits are written without a UTF-8 check each), text again at
    // the end: every piece is text.
    let mut ids = std::mem::take(&mut out.ids).into_bytes();
    // About an id per record (a derived id is longer than its bytes on the wire).
    ids.reserve((n * 32).min(b.len() * 2));
    let mut last_millis = MillisHigh::new();
    let mut id_buf = IdBuf::new();
    for _ in 0..n {
        let at = r.at();
        let head = r.u8("record head")?;
        if head > (ID_CONNECTION << 1) {
            return Err(malformed(at, format!("record head {head:#04x}")));
        }
        let form = head >> 1;
        let deletion = head & DELETION != 0;
        let id_start = ids.len();
        if form == ID_STRING {
            let iat = r.at();
            let i = r.index("client id")?;
            let s = t.string(iat, i, "client id")?;
            ClientId::check(s).map_err(|e| malformed(iat, format!("client id: {e}")))?;
            if ids.len() + s.len() > max_ids {
                return Err(malformed(
                    iat,
                    format!("client id: the batch's ids pass {max_ids} bytes"),
                ));
            }
            ids.extend_from_slice(s.as_bytes());
        } else if deletion {
            return Err(malformed(at, "a deletion with a derived client id"));
        }
        let connection = if form == ID_CONNECTION {
            // One word: the millis' 48 bits and the port; millis past them after it.
            let w = r.u64("connection millis and port")?;
            let (millis, port) = (w & MILLIS_ESCAPE, (w >> 48) as u16);
            if millis == MILLIS_ESCAPE {
                let (millis, after) = escaped_millis(r)?;
                r = after;
                Some((millis, port))
            } else {
                Some((millis, port))
            }
        } else {
            None
        };
        let pubs_start = out.publications.len();
        let (revision, owner);
        // Nearly every state record: a revision of one byte and no low bits, its member,
        // owner, one publication, its service and "one instance" each one byte. Taken
        // from one word, as `record_fields` would take them field by field (same checks,
        // same errors at the same offsets); any other record, and every deletion, there.
        if let Some(w) = r.rest.first_chunk::<8>().map(|w| u64::from_le_bytes(*w))
            && !deletion
            && w & SINGLE_MASK == SINGLE
        {
            let at = r.at();
            let [d, member, o, _, s, v, ..] = w.to_le_bytes();
            r.rest = &r.rest[6..];
            revision = t.revision_of(at, u64::from(d), 0, at + 1, u64::from(member))?;
            owner = t.owner_of(node, at + 2, u32::from(o))?;
            let service = t.service_of(at + 4, u32::from(s))?;
            publication_of(node, &mut t, &mut r, out, service, (at + 5, u64::from(v)))?;
        } else {
            let (fields, after) = record_fields(node, &mut t, r, out, deletion)?;
            r = after;
            match fields {
                (rev, Some(o)) => (revision, owner) = (rev, o),
                (rev, None) => {
                    out.end_record(ids.len(), rev, None, false);
                    continue;
                }
            }
        }
        let pubs = &out.publications[pubs_start..];
        if form != ID_STRING {
            derived_id(
                &mut ids,
                &mut id_buf,
                pubs,
                at,
                connection,
                &mut last_millis,
            )?;
            if ids.len() > max_ids {
                return Err(malformed(
                    at,
                    format!("client id: the batch's ids pass {max_ids} bytes"),
                ));
            }
        }
        debug_assert!(ids.len() > id_start);
        out.end_record(ids.len(), revision, Some(owner), form == ID_CONNECTION);
    }
    if !r.rest.is_empty() {
        return Err(malformed(r.at(), "bytes after the last record"));
    }
    // Nearly always ASCII (derived ids, and string ids of ASCII): taken after an ASCII
    // scan; else checked whole.
    out.ids = match ascii_string(ids) {
        Ok(ids) => ids,
        Err(ids) => String::from_utf8(ids).expect("string ids, digits, separators and ips"),
    };
    Ok(())
}

/// A record's revision, owner and publications read field by field (a deletion, or a
/// record that [`SINGLE`] does not match), out of line: the record loop's common path keeps its
/// registers. The owner is `None` for a deletion (nothing after its revision). Returns
/// the reader after them too (copied: see [`Reader`]).
#[inline(never)]
fn record_fields<'a>(
    node: &Node,
    t: &mut Tables<'_>,
    mut r: Reader<'a>,
    out: &mut Decoded,
    deletion: bool,
) -> Result<((Revision, Option<MemberId>), Reader<'a>), WireError> {
    let revision = t.revision(&mut r)?;
    if deletion {
        return Ok(((revision, None), r));
    }
    let owner = t.owner(node, &mut r)?;
    publications(node, t, &mut r, out)?;
    Ok(((revision, Some(owner)), r))
}

/// The bytes of a state record after its id that [`decode_into_within`] reads as one
/// word: bytes 0 to 5 under [`SINGLE_MASK`] equal to [`SINGLE`] when they are a revision
/// varint of one byte without low bits (bit 0 clear), a member, an owner index, a count of
/// 1 publication, a service index and an instance varint of 2 (one, not a batch), each a
/// varint of one byte (bit 7 clear). The two bytes after them belong to the instance; a
/// record of one instance has at least five (a flags byte, an ip index, a port, a cluster).
const SINGLE_MASK: u64 = 0x0000_ff80_ff80_8081;
/// See [`SINGLE_MASK`].
const SINGLE: u64 = 0x0000_0200_0100_0000;

/// A connection's millis sent after its word (those of [`MILLIS_ESCAPE`] or more), and the
/// reader after them (out of line: no connection of this era has them).
#[cold]
#[inline(never)]
fn escaped_millis(mut r: Reader<'_>) -> Result<(u64, Reader<'_>), WireError> {
    let at = r.at();
    let millis = r.varint("connection millis")?;
    if millis < MILLIS_ESCAPE {
        return Err(malformed(
            at,
            format!("connection millis {millis} sent after the word"),
        ));
    }
    Ok((millis, r))
}

/// Decodes the changes of a sync batch into the core's owned changes (tests and tools;
/// a node applies [`decode`]'s result borrowed).
pub fn decode_changes(node: &Node, b: &[u8]) -> Result<Vec<ClientChange>, WireError> {
    Ok(decode(node, b)?.into_changes())
}

/// The number of records an encoded batch says it holds (`None` if it is too short or
/// of another version); a full decode checks it.
pub fn record_count(b: &[u8]) -> Option<usize> {
    match b {
        [VERSION, rest @ ..] => {
            let mut r = Reader::new(rest);
            r.varint("records").ok().map(|n| n as usize)
        }
        _ => None,
    }
}

/// Decodes the records of a snapshot chunk (every record a full state; tests and tools).
pub fn decode_records(node: &Node, b: &[u8]) -> Result<Vec<ClientRecord>, WireError> {
    decode(node, b)?.into_records()
}

/// A decoded state as an owned record (tests and tools).
fn record_of(s: StateMut<'_>) -> ClientRecord {
    let StateMut {
        id,
        revision,
        owner,
        publications,
        ..
    } = s;
    ClientRecord {
        id: ClientId::parse(id).expect("checked when decoded"),
        revision,
        owner,
        publications: publications
            .iter_mut()
            .map(|p| Arc::new(p.take().expect("decoded, not taken yet")))
            .collect(),
    }
}
