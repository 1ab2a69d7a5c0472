//! The gRPC codec of every generated service and client: prost messages, as
//! `tonic_prost::ProstCodec`, but decoded from the message's bytes taken out of tonic's
//! receive buffer as one [`Bytes`].
//!
//! tonic hands a decoder its `BytesMut` receive buffer; prost reading fields from it pays
//! `BytesMut::advance` (the buffer's kind and offset bookkeeping, ~35 instructions) for
//! every varint and field, a few dozen times per registration in a native `Register`
//! batch. Taken out first (`copy_to_bytes`: a split of the shared buffer, no copy), the
//! message is read through `Bytes::advance`, a pointer bump; `bytes` fields (the peer
//! codec's compact batches) stay slices of the same buffer. Encoding is prost's.

use bytes::{Buf, Bytes};
use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder};

/// Bytes already encoded as a protobuf message body (a request built by hand). Decoding
/// one checks the message's framing (each field's tag, wire type and length) and keeps
/// nothing.
#[derive(Clone, Debug, Default)]
pub struct Raw(pub Bytes);

impl Message for Raw {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// `application/grpc+proto` with prost messages (the path `build.rs` gives the generated
/// code).
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = BytesDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder(PhantomData)
    }
}

/// Decodes a `U` from the message's bytes as one [`Bytes`].
#[derive(Debug, Clone)]
pub struct BytesDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for BytesDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let message: Bytes = buf.copy_to_bytes(buf.remaining());
        // As tonic-prost: a malformed message is INTERNAL (gRPC status code guide).
        U::decode(message)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::distro as pb;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tonic::codec::Streaming;

    fn registrations(n: usize) -> pb::RegisterRequest {
        pb::RegisterRequest {
            registrations: (0..n)
                .map(|i| pb::Registration {
                    service: Some(pb::ServiceRef {
                        name: format!("svc-{i}"),
                        ..Default::default()
                    }),
                    instance: Some(pb::Instance {
                        ip: format!("10.0.{}.{}", i / 256, i % 256),
                        port: 8080,
                        weight: 1.0,
                        healthy: true,
                        enabled: true,
                        metadata: [("k".to_string(), format!("v{i}"))].into(),
                        ..Default::default()
                    }),
                })
                .collect(),
        }
    }

    /// A request body of one chunk.
    struct Chunk(Option<Bytes>);

    impl http_body::Body for Chunk {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    /// gRPC length-prefixed messages, all in one chunk (tonic's buffer then holds the
    /// next message behind the one being decoded).
    fn frames(messages: &[&[u8]]) -> Chunk {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        Chunk(Some(out.into()))
    }

    #[tokio::test]
    async fn decodes_messages_that_share_a_buffer_each_to_its_end() {
        let (a, b) = (registrations(300), registrations(2));
        let body = frames(&[&a.encode_to_vec(), &b.encode_to_vec()]);
        let mut s = Streaming::new_request(BytesDecoder(PhantomData), body, None, None);
        assert_eq!(s.message().await.expect("valid"), Some(a));
        assert_eq!(s.message().await.expect("valid"), Some(b));
        assert_eq!(s.message().await.expect("end"), None);
    }

    #[tokio::test]
    async fn a_malformed_message_is_internal_and_says_why() {
        let bytes = registrations(3).encode_to_vec();
        let body = frames(&[&bytes[..bytes.len() - 3]]);
        let mut s = Streaming::<pb::RegisterRequest>::new_request(
            BytesDecoder(PhantomData),
            body,
            None,
            None,
        );
        let e = s.message().await.expect_err("truncated");
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(e.message().contains("buffer underflow"), "{e:?}");
    }
}
