//! The Nacos unary call (`/Request/request`), read and answered on the connection's own
//! task.
//!
//! [`Message`] gathers the request's one gRPC message from its DATA frames, however they
//! are split. It checks the declared length against `--max-message-bytes` as soon as the
//! 5-byte prefix is in, so an oversized message is refused with `RESOURCE_EXHAUSTED`
//! before its body is read, and it never holds more than one message plus one DATA frame.
//! The usual case (the whole message in one DATA frame) is copied once, out of the
//! connection's read buffer, and not buffered at all. The connection then decodes the
//! `Payload`, calls the synchronous handler and appends the reply (HEADERS, DATA and the
//! `grpc-status: 0` trailers) to its output, which goes out with every other ready frame
//! in one write.

use crate::sdk_port::grpc::{Code, PREFIX, Status};
use bytes::Bytes;

/// What a DATA frame brought to a unary request.
pub(crate) enum Progress {
    /// Not yet a whole message.
    More,
    /// The whole message (without its prefix).
    Whole(Bytes),
    /// The call is refused with this status.
    Refused(Status),
}

/// The message of a unary request, as it arrives.
#[derive(Default)]
pub(crate) struct Message {
    buf: Vec<u8>,
}

impl Message {
    /// Adds the payload of one DATA frame; `max` is `--max-message-bytes`.
    pub(crate) fn push(&mut self, data: &[u8], max: usize) -> Progress {
        if self.buf.is_empty() {
            match declared(data, max) {
                Err(s) => return Progress::Refused(s),
                Ok(Some(len)) if data.len() >= PREFIX + len => {
                    return Progress::Whole(Bytes::copy_from_slice(&data[PREFIX..PREFIX + len]));
                }
                Ok(_) => {}
            }
        }
        self.buf.extend_from_slice(data);
        match declared(&self.buf, max) {
            Err(s) => Progress::Refused(s),
            Ok(Some(len)) if self.buf.len() >= PREFIX + len => {
                let mut buf = std::mem::take(&mut self.buf);
                buf.truncate(PREFIX + len);
                Progress::Whole(Bytes::from(buf).slice(PREFIX..))
            }
            Ok(_) => Progress::More,
        }
    }
}

/// The refusal of a request that ended before one whole message.
pub(crate) fn ended_early() -> Status {
    Status::new(
        Code::Unimplemented,
        "the request ended before one whole message: /Request/request takes exactly one",
    )
}

/// The declared length of the message in `b`, once its prefix is in; a refusal for a
/// compressed or oversized message.
fn declared(b: &[u8], max: usize) -> Result<Option<usize>, Status> {
    let Some(prefix) = b.first_chunk::<PREFIX>() else {
        return Ok(None);
    };
    if prefix[0] != 0 {
        return Err(Status::new(
            Code::Unimplemented,
            "compressed messages are not supported: send grpc-encoding identity",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > max {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!(
                "the request message is {len} bytes, more than this server accepts \
                 ({max} bytes, --max-message-bytes)"
            ),
        ));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_message_in_one_frame_or_split_byte_by_byte_is_whole() {
        let f = framed(b"hello");
        let mut m = Message::default();
        assert!(matches!(m.push(&f, 100), Progress::Whole(b) if b == "hello"));
        let mut m = Message::default();
        for (i, byte) in f.iter().enumerate() {
            match m.push(&[*byte], 100) {
                Progress::Whole(b) => {
                    assert_eq!((i, &b[..]), (f.len() - 1, &b"hello"[..]));
                }
                Progress::More => assert!(i < f.len() - 1),
                Progress::Refused(s) => panic!("{s:?}"),
            }
        }
    }

    #[test]
    fn oversized_and_compressed_messages_are_refused_from_their_prefix() {
        let mut m = Message::default();
        let r = m.push(&framed(&[0; 10])[..5], 9);
        assert!(matches!(r, Progress::Refused(s) if s.code == Code::ResourceExhausted));
        let mut m = Message::default();
        let r = m.push(&[1, 0, 0, 0, 1], 9);
        assert!(matches!(r, Progress::Refused(s) if s.code == Code::Unimplemented));
    }
}
