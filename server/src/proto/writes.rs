//! The write requests the servers receive, `distro.v1.Registry`'s `RegisterRequest`,
//! `DeregisterRequest` and `HeartbeatRequest` and `distro.v1.Peer`'s `ForwardRequest`,
//! read straight from the request's bytes.
//!
//! Decoded with the generated types, every registration became five `String`s, a
//! `HashMap` and two nested structs, and every forwarded one was encoded again field by
//! field for its owner, which decoded it into the same structs once more. Here each item
//! ([`Received`]) is its encoded message, a slice of the request's buffer (no copy), and
//! where its fields lie in it: the receiving node reads the ip:port to route it, builds
//! the core's types only for the items it owns, and forwards the others as the bytes it
//! received.
//!
//! Acceptance and errors are prost's: the fast reader takes the messages as the generated
//! code writes them (known fields, each of its wire type, strings valid UTF-8) and gives up
//! on anything else (unknown fields, malformed input), and then the whole request is
//! decoded field by field with the generated item types (their [`Message::merge_field`]
//! below), which accepts what prost accepts and fails with prost's own error (message and
//! field named). The servers use these types (`build.rs` maps them for the generated
//! servers only); clients keep the generated structs.

use crate::proto::distro as pb;
use distro_core::model::DEFAULT_CLUSTER;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType, decode_varint, skip_field};
use prost::{DecodeError, Message};

/// A range of an item's bytes, checked to be UTF-8 when the item was read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// Where the `ServiceRef` fields lie.
#[derive(Clone, Debug, Default)]
struct ServiceSpans {
    namespace: Span,
    group: Span,
    name: Span,
}

/// Where the `Instance` fields lie, and its scalars (a `Beat` fills the address fields).
#[derive(Clone, Debug)]
struct InstanceSpans {
    ip: Span,
    port: u32,
    weight: f64,
    healthy: bool,
    enabled: bool,
    cluster: Span,
    /// `(key, value)` entries in the order received (a later key wins, as in a map).
    metadata: Vec<(Span, Span)>,
    instance_id: Span,
}

impl Default for InstanceSpans {
    /// Protobuf's defaults (not the core's).
    fn default() -> Self {
        Self {
            ip: Span::default(),
            port: 0,
            weight: 0.0,
            healthy: false,
            enabled: false,
            cluster: Span::default(),
            metadata: Vec::new(),
            instance_id: Span::default(),
        }
    }
}

/// One received `Registration` or `Beat`: its encoded message and where its fields are.
#[derive(Clone, Debug)]
pub struct Received {
    bytes: Bytes,
    service: ServiceSpans,
    /// `None`: a registration without its `instance`.
    instance: Option<InstanceSpans>,
}

/// The borrowed fields of a received instance (a beat's: the address fields, the others
/// at protobuf's defaults).
#[derive(Clone, Debug)]
pub struct InstanceRef<'a> {
    /// `ip`.
    pub ip: &'a str,
    /// `port`.
    pub port: u32,
    /// `weight`.
    pub weight: f64,
    /// `healthy`.
    pub healthy: bool,
    /// `enabled`.
    pub enabled: bool,
    /// `cluster`.
    pub cluster: &'a str,
    /// `instance_id`.
    pub instance_id: &'a str,
    spans: &'a InstanceSpans,
    bytes: &'a [u8],
}

impl<'a> InstanceRef<'a> {
    /// The metadata entries as a map holds them: each key once, with the value of its last
    /// entry, sorted by key.
    pub fn metadata(&self) -> Vec<(String, String)> {
        if self.spans.metadata.is_empty() {
            return Vec::new();
        }
        let mut kept = self.spans.metadata.clone();
        fold_metadata(self.bytes, &mut kept);
        kept.into_iter()
            .map(|(k, v)| {
                (
                    text(self.bytes, k).to_owned(),
                    text(self.bytes, v).to_owned(),
                )
            })
            .collect()
    }
}

/// The text of `span` (checked when the item was read; a span never covers anything else).
/// An ASCII text (every address and nearly every name) is taken after the ASCII scan,
/// without `from_utf8`'s call and walk (~100 instructions a text, read two or three
/// times an item).
#[inline]
fn text(bytes: &[u8], span: Span) -> &str {
    if span.start == span.end {
        return "";
    }
    bytes
        .get(span.start as usize..span.end as usize)
        .and_then(|b| distro_core::model::ascii_str(b).or_else(|| std::str::from_utf8(b).ok()))
        .unwrap_or_default()
}

/// The text of `span`, `known` itself when the span holds its bytes (then not checked
/// again: the common value of a field taken without a second UTF-8 check).
#[inline]
fn known_or_text<'a>(bytes: &'a [u8], span: Span, known: &'static str) -> &'a str {
    match bytes.get(span.start as usize..span.end as usize) {
        Some(b) if b == known.as_bytes() => known,
        _ => text(bytes, span),
    }
}

impl Received {
    /// The encoded `Registration` or `Beat`, as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The service's namespace, group and name, as given (empty when absent).
    pub fn service(&self) -> (&str, &str, &str) {
        let s = &self.service;
        (
            text(&self.bytes, s.namespace),
            text(&self.bytes, s.group),
            text(&self.bytes, s.name),
        )
    }

    /// The instance's `ip` and `port` (`None`: a registration without its instance).
    pub fn address(&self) -> Option<(&str, u32)> {
        let i = self.instance.as_ref()?;
        Some((text(&self.bytes, i.ip), i.port))
    }

    /// The instance (`None`: a registration without one).
    pub fn instance(&self) -> Option<InstanceRef<'_>> {
        let i = self.instance.as_ref()?;
        Some(self.instance_ref(i, text(&self.bytes, i.ip)))
    }

    /// [`Received::instance`], given its `ip` as [`Received::address`] returned it: that
    /// text is not checked again (an `ip` that is not the one `address` returned is read
    /// from the item as `instance` reads it).
    pub fn instance_at<'a>(&'a self, ip: &'a str) -> Option<InstanceRef<'a>> {
        let i = self.instance.as_ref()?;
        let held = self.bytes.get(i.ip.start as usize..i.ip.end as usize);
        let ip = if held.is_some_and(|b| std::ptr::eq(b, ip.as_bytes())) {
            ip
        } else {
            text(&self.bytes, i.ip)
        };
        Some(self.instance_ref(i, ip))
    }

    fn instance_ref<'a>(&'a self, i: &'a InstanceSpans, ip: &'a str) -> InstanceRef<'a> {
        let t = |s| text(&self.bytes, s);
        InstanceRef {
            ip,
            port: i.port,
            weight: i.weight,
            healthy: i.healthy,
            enabled: i.enabled,
            cluster: known_or_text(&self.bytes, i.cluster, DEFAULT_CLUSTER),
            instance_id: t(i.instance_id),
            spans: i,
            bytes: &self.bytes,
        }
    }

    /// Reads a `Registration` the way the generated code writes it, or `None`.
    fn registration(bytes: Bytes) -> Option<Self> {
        let mut service = ServiceSpans::default();
        let mut instance = None;
        let mut r = Reader::new(&bytes);
        while let Some(key) = r.short_key()? {
            match key {
                LEN_1 => r.nested(|r| r.service(&mut service))?,
                LEN_2 => {
                    let i = instance.get_or_insert_with(InstanceSpans::default);
                    r.nested(|r| r.instance(i))?;
                }
                _ => return None,
            }
        }
        Some(Self {
            bytes,
            service,
            instance,
        })
    }

    /// Reads a `Beat` the way the generated code writes it, or `None`.
    fn beat(bytes: Bytes) -> Option<Self> {
        let mut service = ServiceSpans::default();
        let mut target = InstanceSpans::default();
        let mut r = Reader::new(&bytes);
        while let Some(key) = r.short_key()? {
            match key {
                LEN_1 => r.nested(|r| r.service(&mut service))?,
                LEN_2 => target.ip = r.string()?,
                VARINT_3 => target.port = r.varint()? as u32,
                LEN_4 => target.cluster = r.string()?,
                _ => return None,
            }
        }
        Some(Self {
            bytes,
            service,
            instance: Some(target),
        })
    }

    /// A generated message (decoded by prost on the slow path) as a received item: its
    /// encoding read back.
    fn reencoded(m: &impl Message, read: fn(Bytes) -> Option<Self>) -> Result<Self, DecodeError> {
        read(m.encode_to_vec().into()).ok_or_else(|| {
            #[allow(deprecated)] // prost's way for a message implementation to fail
            DecodeError::new("an item prost decoded could not be read back")
        })
    }
}

/// The one-byte key (`tag << 3 | wire type`) of field `tag` (1 to 15): those of the fields
/// the items' readers take, below, and of the results' fields (`proto/results.rs`).
pub(super) const fn short_key(tag: u8, wire_type: WireType) -> u8 {
    tag << 3 | wire_type as u8
}
const LEN_1: u8 = short_key(1, WireType::LengthDelimited);
const LEN_2: u8 = short_key(2, WireType::LengthDelimited);
const LEN_3: u8 = short_key(3, WireType::LengthDelimited);
const LEN_4: u8 = short_key(4, WireType::LengthDelimited);
const LEN_6: u8 = short_key(6, WireType::LengthDelimited);
const LEN_7: u8 = short_key(7, WireType::LengthDelimited);
const LEN_8: u8 = short_key(8, WireType::LengthDelimited);
const VARINT_2: u8 = short_key(2, WireType::Varint);
const VARINT_3: u8 = short_key(3, WireType::Varint);
const VARINT_4: u8 = short_key(4, WireType::Varint);
const VARINT_5: u8 = short_key(5, WireType::Varint);
const FIXED64_3: u8 = short_key(3, WireType::SixtyFourBit);

/// A cursor over an item's bytes; every reading method returns `None` on anything the
/// fast path does not take.
struct Reader<'a> {
    /// The whole item (spans are offsets into it).
    all: &'a [u8],
    /// What is left of the message being read.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(all: &'a [u8]) -> Self {
        Self { all, rest: all }
    }

    /// The offset of `part` (a slice of `all`) in `all`.
    fn offset(&self, part: &[u8]) -> usize {
        part.as_ptr() as usize - self.all.as_ptr() as usize
    }

    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        // One byte (every key, most lengths): read here; longer ones by prost, whose
        // limits they keep.
        match self.rest.split_first() {
            Some((&b, tail)) if b < 0x80 => {
                self.rest = tail;
                Some(u64::from(b))
            }
            _ => self.long_varint(),
        }
    }

    #[inline(never)]
    fn long_varint(&mut self) -> Option<u64> {
        decode_varint(&mut self.rest).ok()
    }

    /// The next field's key, `Some(None)` at the end.
    #[inline(always)]
    fn key(&mut self) -> Option<Option<(u32, WireType)>> {
        if self.rest.is_empty() {
            return Some(None);
        }
        // prost's checks: a key fits in 32 bits, a known wire type, a tag of at least 1.
        let key = u32::try_from(self.varint()?).ok()?;
        let wire_type = match key & 7 {
            0 => WireType::Varint,
            1 => WireType::SixtyFourBit,
            2 => WireType::LengthDelimited,
            5 => WireType::ThirtyTwoBit,
            _ => return None,
        };
        let tag = key >> 3;
        (tag >= 1).then_some(Some((tag, wire_type)))
    }

    /// The next field's key as its one byte (a field of tag 1 to 15), `Some(None)` at the
    /// end, `None` for a longer key. The items' readers match these bytes against the keys
    /// they take ([`LEN_1`] and the others): what [`Reader::key`] spells as a tag and a
    /// wire type, without building them (a key's two decodings were ~1/3 of an item's
    /// reading). A key of any other byte is not taken, as before.
    #[inline(always)]
    fn short_key(&mut self) -> Option<Option<u8>> {
        match self.rest.split_first() {
            None => Some(None),
            Some((&b, tail)) if b < 0x80 => {
                self.rest = tail;
                Some(Some(b))
            }
            Some(_) => None,
        }
    }

    /// A length-delimited field's bytes.
    #[inline(always)]
    fn delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.rest.len() {
            return None;
        }
        let (body, tail) = self.rest.split_at(len);
        self.rest = tail;
        Some(body)
    }

    #[inline(always)]
    fn string(&mut self) -> Option<Span> {
        let b = self.delimited()?;
        // ASCII (addresses, names) checked a word at a time, cheaper than the general check.
        if !b.is_ascii() {
            std::str::from_utf8(b).ok()?;
        }
        let start = self.offset(b);
        Some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(start + b.len()).ok()?,
        })
    }

    #[inline(always)]
    fn bool(&mut self) -> Option<bool> {
        Some(self.varint()? != 0)
    }

    #[inline(always)]
    fn double(&mut self) -> Option<f64> {
        let (b, tail) = self.rest.split_first_chunk::<8>()?;
        self.rest = tail;
        Some(f64::from_le_bytes(*b))
    }

    /// Reads a nested message with `read`, which must end exactly at its end.
    #[inline(always)]
    fn nested(&mut self, read: impl FnOnce(&mut Self) -> Option<()>) -> Option<()> {
        let body = self.delimited()?;
        let mut inner = Reader {
            all: self.all,
            rest: body,
        };
        read(&mut inner)?;
        inner.rest.is_empty().then_some(())
    }

    fn service(&mut self, s: &mut ServiceSpans) -> Option<()> {
        while let Some(key) = self.short_key()? {
            match key {
                LEN_1 => s.namespace = self.string()?,
                LEN_2 => s.group = self.string()?,
                LEN_3 => s.name = self.string()?,
                _ => return None,
            }
        }
        Some(())
    }

    fn instance(&mut self, i: &mut InstanceSpans) -> Option<()> {
        // Entries held before repeated keys are folded (see `fold_metadata`).
        let mut fold_at = FOLD_METADATA_AT;
        while let Some(key) = self.short_key()? {
            match key {
                LEN_1 => i.ip = self.string()?,
                VARINT_2 => i.port = self.varint()? as u32,
                FIXED64_3 => i.weight = self.double()?,
                VARINT_4 => i.healthy = self.bool()?,
                VARINT_5 => i.enabled = self.bool()?,
                LEN_6 => i.cluster = self.string()?,
                LEN_7 => {
                    let (mut k, mut v) = (Span::default(), Span::default());
                    self.nested(|r| {
                        while let Some(key) = r.short_key()? {
                            match key {
                                LEN_1 => k = r.string()?,
                                LEN_2 => v = r.string()?,
                                _ => return None,
                            }
                        }
                        Some(())
                    })?;
                    i.metadata.push((k, v));
                    if i.metadata.len() >= fold_at {
                        fold_metadata(self.all, &mut i.metadata);
                        fold_at = FOLD_METADATA_AT.max(2 * i.metadata.len());
                    }
                }
                LEN_8 => i.instance_id = self.string()?,
                _ => return None,
            }
        }
        Some(())
    }

    /// The next top-level item: its field's tag and its bytes (a slice of `whole`, which
    /// `all` is).
    fn item(&mut self, whole: &Bytes) -> Option<Option<(u32, Bytes)>> {
        let Some((tag, wire_type)) = self.key()? else {
            return Some(None);
        };
        if wire_type != WireType::LengthDelimited {
            return None;
        }
        let body = self.delimited()?;
        let start = self.offset(body);
        Some(Some((tag, whole.slice(start..start + body.len()))))
    }
}

/// How many metadata entries an instance's spans hold before repeated keys are folded.
/// A map holds each key once (prost's decoding keeps the last entry of a key), so a
/// request of millions of entries of one key must not be held entry by entry: folding
/// whenever the held entries double keeps them within twice the distinct keys.
const FOLD_METADATA_AT: usize = 4 * distro_core::limits::MAX_METADATA_ENTRIES;

/// Keeps the last entry of each key of `m` (spans into `all`), sorted by key: what a map
/// of them holds, as [`InstanceRef::metadata`] reads it.
fn fold_metadata(all: &[u8], m: &mut Vec<(Span, Span)>) {
    // The spans' bytes compare as their text does (UTF-8, checked when read, orders as
    // `str` does), without checking it again at every comparison.
    let key = |s: Span| &all[s.start as usize..s.end as usize];
    // Stable: entries of one key stay in the order received.
    m.sort_by(|a, b| key(a.0).cmp(key(b.0)));
    let mut kept = 0;
    for j in 0..m.len() {
        if kept > 0 && key(m[kept - 1].0) == key(m[j].0) {
            m[kept - 1] = m[j];
        } else {
            m[kept] = m[j];
            kept += 1;
        }
    }
    m.truncate(kept);
}

/// One kind of list of a request: the generated type of its items, and how they read.
trait List: Message + Default {
    fn read(bytes: Bytes) -> Option<Received>;
}

impl List for pb::Registration {
    fn read(bytes: Bytes) -> Option<Received> {
        Received::registration(bytes)
    }
}

impl List for pb::Beat {
    fn read(bytes: Bytes) -> Option<Received> {
        Received::beat(bytes)
    }
}

/// Merges one occurrence of a repeated item field the slow way: prost decodes it as the
/// generated `M` (its errors, with `message.field` pushed as prost's generated code does).
fn merge_items<M: List>(
    items: &mut Vec<Received>,
    (message, field): (&'static str, &'static str),
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    let mut decoded: Vec<M> = Vec::new();
    prost::encoding::message::merge_repeated(wire_type, &mut decoded, buf, ctx).map_err(
        |mut e| {
            e.push(message, field);
            e
        },
    )?;
    for m in &decoded {
        items.push(Received::reencoded(m, M::read)?);
    }
    Ok(())
}

/// Decodes `bytes` as `T`: the fast reader, or prost's decoding field by field.
fn decode_with<T: Message + Default>(
    bytes: Bytes,
    fast: impl FnOnce(&Bytes) -> Option<T>,
) -> Result<T, DecodeError> {
    if let Some(t) = fast(&bytes) {
        return Ok(t);
    }
    let mut t = T::default();
    t.merge(bytes)?;
    Ok(t)
}

/// Writes `items` as repeated field `tag`.
fn put_items(tag: u32, items: &[Received], buf: &mut impl BufMut) {
    for i in items {
        put_delimited(tag, i.as_bytes(), buf);
    }
}

fn items_len(tag: u32, items: &[Received]) -> usize {
    items.iter().map(|i| delimited_len(tag, i.as_bytes())).sum()
}

/// Writes `body` as length-delimited field `tag`.
pub fn put_delimited(tag: u32, body: &[u8], buf: &mut impl BufMut) {
    prost::encoding::encode_key(tag, WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(body.len() as u64, buf);
    buf.put_slice(body);
}

fn delimited_len(tag: u32, body: &[u8]) -> usize {
    crate::cluster::sync_codec::nested_len(tag, body.len())
}

/// The most items a list is sized for before its items are read: one over the native
/// API's per-request limit, whose refusal needs no more. A request that claims more (an
/// empty item is 2 bytes, a `Received` 120) grows its list as items are read, so a 16 MiB
/// request of empty items cannot have ~1 GB reserved before its first item is checked.
const PRESIZE_LIMIT: usize = crate::api::native::MAX_ITEMS_PER_REQUEST + 1;

/// The capacity to give a list of `claimed` items: at most [`PRESIZE_LIMIT`].
fn presize(claimed: usize) -> usize {
    claimed.min(PRESIZE_LIMIT)
}

/// How many length-delimited top-level fields of each tag 1..=4 `whole` holds (index 0
/// unused), to size the lists before they are read; a scan of keys and lengths that stops
/// at the first field it does not take (the reading that follows refuses it).
fn count_items(whole: &[u8]) -> [usize; 5] {
    let mut n = [0; 5];
    let mut r = Reader::new(whole);
    while let Some(Some((tag, WireType::LengthDelimited))) = r.key() {
        if r.delimited().is_none() {
            break;
        }
        if let Some(c) = n.get_mut(tag as usize) {
            *c += 1;
        }
    }
    n
}

/// A request of one repeated field 1 of items (`M`: their generated type).
macro_rules! item_request {
    ($(#[$doc:meta])* $name:ident, $field:ident, $item:ty) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default)]
        pub struct $name {
            /// The items, in request order.
            pub $field: Vec<Received>,
        }

        impl Message for $name {
            fn encode_raw(&self, buf: &mut impl BufMut) {
                put_items(1, &self.$field, buf);
            }

            fn merge_field(
                &mut self,
                tag: u32,
                wire_type: WireType,
                buf: &mut impl Buf,
                ctx: DecodeContext,
            ) -> Result<(), DecodeError> {
                match tag {
                    1 => merge_items::<$item>(
                        &mut self.$field,
                        (stringify!($name), stringify!($field)),
                        wire_type,
                        buf,
                        ctx,
                    ),
                    _ => skip_field(wire_type, tag, buf, ctx),
                }
            }

            fn encoded_len(&self) -> usize {
                items_len(1, &self.$field)
            }

            fn clear(&mut self) {
                self.$field.clear();
            }

            fn decode(mut buf: impl Buf) -> Result<Self, DecodeError> {
                let bytes = buf.copy_to_bytes(buf.remaining());
                decode_with(bytes, |whole| {
                    let mut r = Reader::new(whole);
                    // Sized once (no regrowth copying the items).
                    let mut items = Vec::with_capacity(presize(count_items(whole)[1]));
                    while let Some((tag, item)) = r.item(whole)? {
                        if tag != 1 {
                            return None;
                        }
                        items.push(<$item as List>::read(item)?);
                    }
                    Some(Self { $field: items })
                })
            }
        }
    };
}

item_request!(
    /// `distro.v1.RegisterRequest`, as the server reads it.
    RegisterRequest,
    registrations,
    pb::Registration
);
item_request!(
    /// `distro.v1.DeregisterRequest`, as the server reads it.
    DeregisterRequest,
    registrations,
    pb::Registration
);
item_request!(
    /// `distro.v1.HeartbeatRequest`, as the server reads it.
    HeartbeatRequest,
    beats,
    pb::Beat
);

/// `distro.v1.ForwardRequest`, as the server reads it.
#[derive(Clone, Debug, Default)]
pub struct ForwardRequest {
    /// The sender's member address.
    pub from: String,
    /// Registrations, in request order.
    pub registrations: Vec<Received>,
    /// Deregistrations, in request order.
    pub deregistrations: Vec<Received>,
    /// Heartbeats, in request order.
    pub beats: Vec<Received>,
}

impl Message for ForwardRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        prost::encoding::string::encode(1, &self.from, buf);
        put_items(2, &self.registrations, buf);
        put_items(3, &self.deregistrations, buf);
        put_items(4, &self.beats, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "ForwardRequest";
        match tag {
            1 => prost::encoding::string::merge(wire_type, &mut self.from, buf, ctx).map_err(
                |mut e| {
                    e.push(NAME, "from");
                    e
                },
            ),
            2 => merge_items::<pb::Registration>(
                &mut self.registrations,
                (NAME, "registrations"),
                wire_type,
                buf,
                ctx,
            ),
            3 => merge_items::<pb::Registration>(
                &mut self.deregistrations,
                (NAME, "deregistrations"),
                wire_type,
                buf,
                ctx,
            ),
            4 => merge_items::<pb::Beat>(&mut self.beats, (NAME, "beats"), wire_type, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let from = if self.from.is_empty() {
            0
        } else {
            delimited_len(1, self.from.as_bytes())
        };
        from + items_len(2, &self.registrations)
            + items_len(3, &self.deregistrations)
            + items_len(4, &self.beats)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }

    fn decode(mut buf: impl Buf) -> Result<Self, DecodeError> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        decode_with(bytes, |whole| {
            let mut r = Reader::new(whole);
            // Each list sized once (no regrowth copying the items).
            let n = count_items(whole);
            let mut req = Self {
                from: String::new(),
                registrations: Vec::with_capacity(presize(n[2])),
                deregistrations: Vec::with_capacity(presize(n[3])),
                beats: Vec::with_capacity(presize(n[4])),
            };
            while let Some((tag, item)) = r.item(whole)? {
                match tag {
                    1 => req.from = std::str::from_utf8(&item).ok()?.to_owned(),
                    2 => req.registrations.push(Received::registration(item)?),
                    3 => req.deregistrations.push(Received::registration(item)?),
                    4 => req.beats.push(Received::beat(item)?),
                    _ => return None,
                }
            }
            Some(req)
        })
    }
}

#[cfg(test)]
mod tests;
