//! The gRPC side of a response: the fields of its head and trailers that matter, its
//! length-prefixed messages, the outcome of a unary call.

use bytes::Bytes;
use tonic::{Code, Status};

use super::GRPC_PREFIX;
use super::conn::Slot;

/// The fields of a response head or trailers that matter to a gRPC call.
#[derive(Default)]
pub(super) struct Fields {
    pub(super) status: Option<u16>,
    pub(super) grpc_status: Option<i32>,
    grpc_message: Option<String>,
}

impl Fields {
    pub(super) fn add(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":status" => {
                self.status = digits(value).and_then(|n| u16::try_from(n).ok());
            }
            b"grpc-status" => {
                self.grpc_status = digits(value).and_then(|n| i32::try_from(n).ok());
            }
            b"grpc-message" => {
                // As an HTTP header value read as text: visible ASCII only; then
                // percent-decoded, as gRPC servers encode it.
                let text = value
                    .iter()
                    .all(|&c| c == b'\t' || (0x20..0x7f).contains(&c));
                self.grpc_message = Some(if text {
                    percent_decode(value)
                } else {
                    String::new()
                });
            }
            _ => {}
        }
    }

    pub(super) fn grpc_status(&mut self) -> Option<Status> {
        let code = self.grpc_status?;
        Some(Status::new(
            Code::from_i32(code),
            self.grpc_message.take().unwrap_or_default(),
        ))
    }
}

/// `grpc-message`'s text: each `%` and two hex digits is the byte they spell (a `%` not
/// followed by two hex digits stays as it is); invalid UTF-8 is replaced.
fn percent_decode(value: &[u8]) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let byte = match (value[i], value.get(i + 1), value.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex(h).zip(hex(l)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match byte {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(value[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A header value of ASCII digits only (at most nine) as a number.
fn digits(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 {
        return None;
    }
    v.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// The first whole gRPC message at the start of `data`, if it holds one.
pub(super) fn next_message(data: &[u8]) -> Result<Option<&[u8]>, Status> {
    if data.len() < GRPC_PREFIX {
        return Ok(None);
    }
    if data[0] != 0 {
        return Err(Status::internal(
            "compressed gRPC messages are not supported",
        ));
    }
    Ok(data.get(GRPC_PREFIX..GRPC_PREFIX + message_len(data)))
}

/// The length of the message whose prefix `data` starts with (at least [`GRPC_PREFIX`]
/// bytes).
pub(super) fn message_len(data: &[u8]) -> usize {
    u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize
}

/// The outcome of a finished unary stream: its error, else its one message unless the
/// trailers carry an error.
pub(super) fn unary_result(slot: &Slot) -> Result<Bytes, Status> {
    if let Some(e) = &slot.error {
        return Err(e.clone());
    }
    let data = &slot.data[slot.taken..];
    let message = next_message(data)?;
    if let Some(m) = message {
        // Messages after the first are read (they must be whole) but not kept.
        let mut rest = &data[m.len() + GRPC_PREFIX..];
        while !rest.is_empty() {
            match next_message(rest)? {
                Some(next) => rest = &rest[next.len() + GRPC_PREFIX..],
                None => return Err(Status::internal("the body ended inside a message")),
            }
        }
    } else if !data.is_empty() {
        return Err(Status::internal("the body ended inside a message"));
    }
    // An error in the trailers is the call's error.
    match message {
        Some(m) => Ok(Bytes::copy_from_slice(m)),
        None => Err(Status::internal("the call ended without a message")),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    /// As tonic and grpc-java encode `grpc-message`: spaces, quotes, `%`, UTF-8.
    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(
            percent_decode(b"not%20a%20member:%20%22127.0.0.4:1%22"),
            "not a member: \"127.0.0.4:1\""
        );
        assert_eq!(percent_decode(b"100%25 %C3%A9"), "100% \u{e9}");
        assert_eq!(percent_decode(b"plain text"), "plain text");
        // Not an escape: kept as it is.
        assert_eq!(percent_decode(b"50% off, %zz, %4"), "50% off, %zz, %4");
    }
}
