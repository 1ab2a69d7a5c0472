//! The write responses the servers send, `distro.v1.WriteResponse` and `ForwardResponse`,
//! written as the generated code writes them, an OK result (code 200, no message: nearly
//! every item's) as its five constant bytes.
//!
//! The generated types computed each result's length twice (once for the response's, once
//! for the item's key) and wrote its code field by field: ~350 instructions a registration
//! of a burst, answered once by the node that received it and once more by its owner when
//! forwarded. Clients may decode them with the generated types (the same encoding); the
//! load generator and a node reading its forwards' answers use these, which take an OK
//! result's five bytes without prost's field loop.

use crate::proto::distro as pb;
use crate::proto::writes::short_key;
use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, message, skip_field};
use prost::{DecodeError, Message};

/// The code of a result that needs no message (see `ItemResult` in the `.proto`).
const OK: u32 = 200;

/// An `ItemResult { code: 200 }`'s length-delimited body: its length (3), the code's key
/// and 200 as a varint.
const OK_BODY: [u8; 4] = [3, 0x08, 0xc8, 0x01];

/// `ItemResult { code: 200 }` as field `tag` (1 to 15): its key, then [`OK_BODY`].
const fn ok_entry(tag: u8) -> [u8; 5] {
    let [len, key, low, high] = OK_BODY;
    [
        short_key(tag, WireType::LengthDelimited),
        len,
        key,
        low,
        high,
    ]
}

fn is_ok(r: &pb::ItemResult) -> bool {
    r.code == OK && r.message.is_empty()
}

/// Writes `results` as repeated field `tag`.
fn put_results(tag: u8, results: &[pb::ItemResult], buf: &mut impl BufMut) {
    let ok = ok_entry(tag);
    for r in results {
        if is_ok(r) {
            buf.put_slice(&ok);
        } else {
            message::encode(u32::from(tag), r, buf);
        }
    }
}

fn results_len(tag: u8, results: &[pb::ItemResult]) -> usize {
    results
        .iter()
        .map(|r| {
            if is_ok(r) {
                ok_entry(tag).len()
            } else {
                message::encoded_len(u32::from(tag), r)
            }
        })
        .sum()
}

/// Merges one occurrence of repeated field `field` of `name` as prost's generated code does;
/// an OK result written as the servers write it (its length 3, then `code: 200`) is taken
/// without prost's field loop (the same value; used at the top level of a response only,
/// where the buffer ends where the message does).
fn merge_results(
    results: &mut Vec<pb::ItemResult>,
    (name, field): (&'static str, &'static str),
    wire_type: WireType,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    if wire_type == WireType::LengthDelimited && buf.chunk().starts_with(&OK_BODY) {
        buf.advance(OK_BODY.len());
        results.push(pb::ItemResult {
            code: OK,
            message: String::new(),
        });
        return Ok(());
    }
    message::merge_repeated(wire_type, results, buf, ctx).map_err(|mut e| {
        e.push(name, field);
        e
    })
}

/// `distro.v1.WriteResponse`, as the servers write it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteResponse {
    /// One result per item, in request order.
    pub results: Vec<pb::ItemResult>,
}

impl Message for WriteResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_results(1, &self.results, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => merge_results(
                &mut self.results,
                ("WriteResponse", "results"),
                wire_type,
                buf,
                ctx,
            ),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        results_len(1, &self.results)
    }

    fn clear(&mut self) {
        self.results.clear();
    }
}

/// `distro.v1.ForwardResponse`, as the servers write it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardResponse {
    /// The registrations' results, in request order.
    pub registrations: Vec<pb::ItemResult>,
    /// The deregistrations' results, in request order.
    pub deregistrations: Vec<pb::ItemResult>,
    /// The heartbeats' results, in request order.
    pub beats: Vec<pb::ItemResult>,
}

impl Message for ForwardResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_results(1, &self.registrations, buf);
        put_results(2, &self.deregistrations, buf);
        put_results(3, &self.beats, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        const NAME: &str = "ForwardResponse";
        match tag {
            1 => merge_results(
                &mut self.registrations,
                (NAME, "registrations"),
                wire_type,
                buf,
                ctx,
            ),
            2 => merge_results(
                &mut self.deregistrations,
                (NAME, "deregistrations"),
                wire_type,
                buf,
                ctx,
            ),
            3 => merge_results(&mut self.beats, (NAME, "beats"), wire_type, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        results_len(1, &self.registrations)
            + results_len(2, &self.deregistrations)
            + results_len(3, &self.beats)
    }

    fn clear(&mut self) {
        self.registrations.clear();
        self.deregistrations.clear();
        self.beats.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: u32, message: &str) -> pb::ItemResult {
        pb::ItemResult {
            code,
            message: message.into(),
        }
    }

    /// Every kind of result: OK, OK with a message, another code, code 0 (protobuf's
    /// default, not written), a long message (a two-byte length).
    fn mixed() -> Vec<pb::ItemResult> {
        vec![
            result(200, ""),
            result(200, "noted"),
            result(400, "instance.port: must be 1-65535"),
            result(0, ""),
            result(503, &"x".repeat(300)),
            result(200, ""),
        ]
    }

    /// What the servers write is what the generated types write for the same results, and
    /// reads back as them (with the generated types, as clients read it, and with these).
    #[test]
    fn responses_are_written_as_the_generated_types_write_them() {
        for results in [Vec::new(), vec![result(200, "")], mixed()] {
            let ours = WriteResponse {
                results: results.clone(),
            };
            let generated = pb::WriteResponse {
                results: results.clone(),
            };
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, generated.encode_to_vec());
            assert_eq!(ours.encoded_len(), bytes.len());
            assert_eq!(pb::WriteResponse::decode(&bytes[..]), Ok(generated));
            assert_eq!(WriteResponse::decode(&bytes[..]), Ok(ours));

            let (a, b, c) = (
                results.clone(),
                mixed(),
                results.iter().rev().cloned().collect::<Vec<_>>(),
            );
            let ours = ForwardResponse {
                registrations: a.clone(),
                deregistrations: b.clone(),
                beats: c.clone(),
            };
            let generated = pb::ForwardResponse {
                registrations: a,
                deregistrations: b,
                beats: c,
            };
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, generated.encode_to_vec());
            assert_eq!(ours.encoded_len(), bytes.len());
            assert_eq!(pb::ForwardResponse::decode(&bytes[..]), Ok(generated));
            assert_eq!(ForwardResponse::decode(&bytes[..]), Ok(ours));
        }
    }

    /// Results that look like an OK one up to a point: each decodes as prost decodes it.
    #[test]
    fn near_ok_results_decode_as_the_generated_types_decode_them() {
        for bytes in [
            &[0x0a, 0x03, 0x08, 0xc8, 0x01][..],
            &[0x0a, 0x03, 0x08, 0xc8, 0x02],
            &[0x0a, 0x03, 0x08, 0xc9, 0x01],
            &[0x0a, 0x05, 0x08, 0xc8, 0x01, 0x12, 0x00],
            &[0x0a, 0x04, 0x08, 0xc8, 0x81, 0x00],
            &[0x0a, 0x00],
            &[0x0a, 0x03, 0x08, 0xc8],
            &[0x0a, 0x03, 0x08],
        ] {
            let want = pb::WriteResponse::decode(bytes).map(|g| g.results);
            let got = WriteResponse::decode(bytes).map(|o| o.results);
            assert_eq!(got.is_ok(), want.is_ok(), "{bytes:x?}");
            if let (Ok(got), Ok(want)) = (got, want) {
                assert_eq!(got, want, "{bytes:x?}");
            }
        }
    }

    #[test]
    fn a_malformed_response_fails_with_the_field_named() {
        // Field 1 claims 5 bytes; 2 follow.
        let err = WriteResponse::decode(&[0x0a, 0x05, 0x08, 0xc8][..]).expect_err("malformed");
        assert!(err.to_string().contains("WriteResponse.results"), "{err}");
        let err = ForwardResponse::decode(&[0x1a, 0x05, 0x08][..]).expect_err("malformed");
        assert!(err.to_string().contains("ForwardResponse.beats"), "{err}");
    }
}
