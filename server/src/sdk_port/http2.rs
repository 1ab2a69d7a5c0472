//! The HTTP/2 server side of one SDK-port connection, without I/O: it takes the frames
//! [`h2wire`] parsed out of the connection's input, keeps the streams, the settings and
//! both directions of flow control, and appends every frame it answers with to one
//! output buffer, which the connection's task writes in one go (see `connection`).
//!
//! * Streams are routed on the `:path` bytes when their header block is decoded:
//!   `/Request/request` is read ([`unary::Message`]) and answered right here, inline, the
//!   moment its message is whole; the tonic services' paths become [`Bridged`] streams,
//!   polled when their waker fires; any other path gets a trailers-only `UNIMPLEMENTED`.
//! * Flow control, receiving: the windows we advertise are 1 MiB (stream and
//!   connection). What the connection buffers is bounded per connection: a bridged
//!   stream's DATA is handed back to the connection window only once the service has read
//!   it (so every bridged body of a connection together holds at most 1 MiB); a unary
//!   message being assembled is handed back as it arrives while the unary messages of the
//!   connection together hold at most the message limit (or 1 MiB), beyond that only once
//!   one is whole or gone. A stream's window comes back as its body is read, in halves of
//!   the window. Sending: a stream's DATA goes out only within the client's stream and
//!   connection windows and while the output is under its high-water mark ([`Conn::limit`]);
//!   the rest waits in the stream (one body frame at most: a bridged body is not polled
//!   again until it is out), and goes when a WINDOW_UPDATE, a larger
//!   SETTINGS_INITIAL_WINDOW_SIZE or room in the output comes.
//! * Errors: a connection error ([`ConnError`]) becomes a GOAWAY and the connection's end;
//!   a stream error a RST_STREAM, and the connection keeps serving. Streams reset with an
//!   error or refused (REFUSED_STREAM, malformed requests, flow-control and state errors)
//!   and streams the client resets before they are answered count against the
//!   connection, less one for every stream answered: past [`MAX_STRIKES`] the connection
//!   ends with ENHANCE_YOUR_CALM (h2's `max_local_error_reset_streams`, and the "rapid
//!   reset" attack, CVE-2023-44487: a client opening streams and resetting them at once).
//!   A trailers-only gRPC refusal (UNIMPLEMENTED, RESOURCE_EXHAUSTED) is an answer, not
//!   counted; the path it repeats is cut at [`MAX_ECHOED_PATH`] bytes.

use crate::sdk_port::bridge::{BodyShared, Bridged, InBody, Out, Woken};
use crate::sdk_port::connection::NACOS_UNARY;
use crate::sdk_port::fields::Fields;
use crate::sdk_port::grpc::{self, Code, Status};
use crate::sdk_port::unary::{self, Message};
use crate::sdk_port::{Inner, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST, WINDOW};
use bytes::{Buf as _, Bytes};
use h2wire::frame::{self, DEFAULT_WINDOW, ErrorCode, Frame, MAX_WINDOW};
use h2wire::hpack::{self, HpackErrorKind};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::transport::server::TcpConnectInfo;

/// The largest frame we accept (the default: we do not advertise another).
pub(crate) const MAX_FRAME: u32 = frame::DEFAULT_MAX_FRAME_SIZE;
/// The highest stream id (the first GOAWAY of a graceful close names it).
const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// The payload of the PING sent with that GOAWAY (keep-alive PINGs count from 1).
const DRAIN_PING: [u8; 8] = *b"draining";
/// The largest header block (HEADERS and its CONTINUATIONs) buffered before it is decoded.
const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The most of a request's path an UNIMPLEMENTED answer repeats.
const MAX_ECHOED_PATH: usize = 128;
/// Streams reset (by us with an error, or by the client before their answer), net of
/// those answered, past which the connection ends with ENHANCE_YOUR_CALM (h2's
/// `max_local_error_reset_streams` is 1,024 too).
pub(crate) const MAX_STRIKES: u32 = 1024;
/// How many of the streams we closed while the client was still sending are remembered:
/// their late DATA and trailers are dropped (RFC 9113 §5.1, "closed"), while a frame on
/// any other closed stream is a connection error.
const RECENT: usize = 128;

/// A connection error: GOAWAY with this code, then the connection's end.
pub(crate) type ConnError = h2wire::frame::FrameError;

fn protocol(reason: &'static str) -> ConnError {
    ConnError::protocol(reason)
}

mod recv;
#[cfg(test)]
mod tests;

type Map<V> = std::collections::HashMap<u32, V, foldhash::fast::FixedState>;

/// One open stream.
struct Stream {
    recv: Recv,
    recv_closed: bool,
    /// What the client may still send on the stream.
    recv_window: i64,
    /// Read and not yet handed back.
    recv_unacked: u32,
    /// What we may still send on the stream.
    send_window: i64,
    /// DATA waiting for window, then what ends the stream.
    pending: Bytes,
    end: Option<End>,
    send_closed: bool,
    bridged: Option<Box<Bridged>>,
    /// Bytes of this stream the connection holds: a unary message being assembled, or a
    /// bridged body not yet read (see the module documentation).
    held: u32,
    /// In `Conn::to_poll`.
    queued: bool,
    /// In `Conn::blocked`.
    listed: bool,
}

enum Recv {
    Unary(Message),
    /// The unary message is in and answered.
    Answered,
    Bridged(Arc<BodyShared>),
}

/// What ends a stream once its pending DATA is out.
enum End {
    /// `grpc-status: 0`.
    Ok,
    Trailers(Vec<u8>),
    /// An empty DATA frame with END_STREAM.
    Data,
}

impl Stream {
    fn new(recv: Recv, send_window: i64) -> Self {
        Self {
            recv,
            recv_closed: false,
            recv_window: i64::from(WINDOW),
            recv_unacked: 0,
            send_window,
            pending: Bytes::new(),
            end: None,
            send_closed: false,
            bridged: None,
            held: 0,
            queued: false,
            listed: false,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Recv::Bridged(body) = &self.recv {
            body.reset();
        }
    }
}

/// A HEADERS frame waiting for its CONTINUATIONs.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

/// Writes our header blocks: after the client lowered SETTINGS_HEADER_TABLE_SIZE, the
/// next block starts with a table size update to 0 (RFC 7541 §4.2; the encoder never
/// indexes, so 0 is always right).
struct Heads {
    size_update: bool,
    /// The client's SETTINGS_MAX_FRAME_SIZE.
    max_frame: u32,
}

impl Heads {
    fn write(&mut self, out: &mut Vec<u8>, id: u32, block: &[u8], end: bool) {
        if self.size_update {
            self.size_update = false;
            let mut b = Vec::with_capacity(block.len() + 1);
            hpack::encode_table_size_update(&mut b, 0);
            b.extend_from_slice(block);
            frame::write_headers(out, id, &b, end, self.max_frame);
        } else {
            frame::write_headers(out, id, block, end, self.max_frame);
        }
    }
}

/// See the module documentation.
pub(crate) struct Conn {
    /// Frames to write, in order.
    pub(crate) out: Vec<u8>,
    /// The length of `out` at which frames stop being parsed, stream DATA stops being
    /// written and bridged streams stop being polled (the connection's task sets it).
    pub(crate) limit: usize,
    /// A stream's DATA waits in `blocked` for room in the output.
    out_stalled: bool,
    port: Arc<Inner>,
    info: TcpConnectInfo,
    peer: Option<SocketAddr>,
    decoder: hpack::Decoder,
    streams: Map<Stream>,
    /// The highest stream id the client opened.
    last_stream: u32,
    send_window: i64,
    recv_window: i64,
    recv_unacked: u32,
    /// The bytes of the unary messages being assembled, and the connection window not
    /// handed back because they are over the budget.
    unary_held: usize,
    deferred: u32,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    peer_window: i64,
    heads: Heads,
    got_settings: bool,
    /// Streams reset (see [`MAX_STRIKES`]), less those answered.
    strikes: u32,
    /// Streams we closed while the client was still sending (newest last).
    recent: VecDeque<u32>,
    /// The stream id the final GOAWAY named.
    final_id: Option<u32>,
    partial: Option<Partial>,
    /// Streams with DATA waiting for window, each at most once (`Stream::listed`). A
    /// stream resumed or removed keeps its place until the next sweep (resuming a stream
    /// with nothing waiting does nothing), so no change of a stream searches the list.
    blocked: Vec<u32>,
    /// Places in `blocked` of streams since removed.
    blocked_gone: usize,
    woken: Arc<Woken>,
    /// Bridged streams to poll, in order (each at most once: `Stream::queued`).
    to_poll: Vec<u32>,
    /// The streams just woken (kept for its allocation).
    woken_ids: Vec<u32>,
    fields: Fields,
    /// The first GOAWAY of a graceful close is out (streams still accepted until the
    /// client acknowledges the PING sent with it).
    draining: bool,
    /// We sent the final GOAWAY: no new streams.
    stopping: bool,
    /// The client sent GOAWAY.
    peer_away: bool,
    /// The payload of a PING acknowledgement received.
    pub(crate) pong: Option<[u8; 8]>,
}

impl Conn {
    /// A connection whose first output is the server's SETTINGS and connection window.
    pub(crate) fn new(port: Arc<Inner>, info: TcpConnectInfo, woken: Arc<Woken>) -> Self {
        let mut out = Vec::with_capacity(1024);
        frame::write_settings(
            &mut out,
            &[
                (frame::MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS),
                (frame::INITIAL_WINDOW_SIZE, WINDOW),
                (frame::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
            ],
        );
        frame::write_window_update(&mut out, 0, WINDOW - DEFAULT_WINDOW);
        Self {
            out,
            limit: usize::MAX,
            out_stalled: false,
            port,
            peer: info.remote_addr,
            info,
            decoder: hpack::Decoder::new(hpack::DEFAULT_TABLE_SIZE),
            streams: Map::default(),
            last_stream: 0,
            send_window: i64::from(DEFAULT_WINDOW),
            recv_window: i64::from(WINDOW),
            recv_unacked: 0,
            unary_held: 0,
            deferred: 0,
            peer_window: i64::from(DEFAULT_WINDOW),
            heads: Heads {
                size_update: false,
                max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            },
            got_settings: false,
            strikes: 0,
            recent: VecDeque::new(),
            final_id: None,
            partial: None,
            blocked: Vec::new(),
            blocked_gone: 0,
            woken,
            to_poll: Vec::new(),
            woken_ids: Vec::new(),
            fields: Fields::default(),
            draining: false,
            stopping: false,
            peer_away: false,
            pong: None,
        }
    }

    /// The output is at its high-water mark.
    pub(crate) fn over(&self) -> bool {
        self.out.len() >= self.limit
    }

    /// Nothing more will happen: a side sent GOAWAY and every stream is done.
    pub(crate) fn finished(&self) -> bool {
        (self.stopping || self.peer_away) && self.streams.is_empty()
    }

    /// A graceful close, in two steps as RFC 9113 §6.8 advises: a GOAWAY naming the
    /// highest stream id possible, with a PING; once the client acknowledges that PING
    /// (so it has seen the GOAWAY, and every stream it opened before is in), the final
    /// GOAWAY names the last stream taken, and newer ones are refused. The open streams
    /// finish. A request the client sent while the first GOAWAY was on its way is thus
    /// served, not refused.
    pub(crate) fn go_away(&mut self) {
        if !self.draining && !self.stopping {
            self.draining = true;
            frame::write_goaway(&mut self.out, MAX_STREAM_ID, ErrorCode::NO_ERROR, b"");
            frame::write_ping(&mut self.out, false, DRAIN_PING);
        }
    }

    /// The client acknowledged the PING of the first GOAWAY: the final one.
    fn drained(&mut self) {
        self.draining = false;
        self.stopping = true;
        self.final_id = Some(self.last_stream);
        frame::write_goaway(&mut self.out, self.last_stream, ErrorCode::NO_ERROR, b"");
    }

    /// The GOAWAY of a connection error (naming the same stream as the final GOAWAY if
    /// that is out: a later GOAWAY must not name a higher one).
    pub(crate) fn fail(&mut self, e: ConnError) {
        let last = self.final_id.unwrap_or(self.last_stream);
        frame::write_goaway(&mut self.out, last, e.code, e.reason.as_bytes());
    }

    /// One frame from the client.
    pub(crate) fn handle(&mut self, f: Frame<'_>) -> Result<(), ConnError> {
        let r = self.on_frame(f);
        if self.strikes > MAX_STRIKES {
            return Err(ConnError {
                code: ErrorCode::ENHANCE_YOUR_CALM,
                reason: "too many streams refused or reset",
            });
        }
        r
    }

    fn on_frame(&mut self, f: Frame<'_>) -> Result<(), ConnError> {
        if let Some(p) = self.partial.as_mut() {
            let Frame::Continuation {
                stream,
                end_headers,
                block,
            } = f
            else {
                return Err(protocol("a header block interrupted by another frame"));
            };
            if stream != p.stream {
                return Err(protocol("CONTINUATION on another stream"));
            }
            if p.block.len() + block.len() > MAX_HEADER_BLOCK {
                return Err(ConnError {
                    code: ErrorCode::ENHANCE_YOUR_CALM,
                    reason: "a header block over 64 KiB",
                });
            }
            p.block.extend_from_slice(block);
            if end_headers && let Some(p) = self.partial.take() {
                self.on_headers(p.stream, p.end_stream, &p.block)?;
            }
            return Ok(());
        }
        if !self.got_settings && !matches!(f, Frame::Settings { ack: false, .. }) {
            return Err(protocol("the client's first frame is not SETTINGS"));
        }
        match f {
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => self.on_data(stream, end_stream, data, flow_len),
            Frame::Headers {
                stream,
                end_stream,
                end_headers: true,
                block,
            } => self.on_headers(stream, end_stream, block),
            Frame::Headers {
                stream,
                end_stream,
                block,
                ..
            } => {
                self.partial = Some(Partial {
                    stream,
                    end_stream,
                    block: block.to_vec(),
                });
                Ok(())
            }
            Frame::Priority { .. } | Frame::Unknown { .. } => Ok(()),
            Frame::RstStream { stream, .. } => {
                if stream > self.last_stream {
                    return Err(protocol("RST_STREAM on a stream never opened"));
                }
                if let Some(s) = self.streams.remove(&stream) {
                    if !s.send_closed {
                        // Cancelled before it was answered.
                        self.strikes += 1;
                    }
                    self.forget(stream, s);
                }
                Ok(())
            }
            Frame::Settings { ack: true, .. } => Ok(()),
            Frame::Settings { params, .. } => {
                self.got_settings = true;
                self.on_settings(params)
            }
            Frame::PushPromise { .. } => Err(protocol("a client cannot push")),
            Frame::Ping { ack: false, data } => {
                frame::write_ping(&mut self.out, true, data);
                Ok(())
            }
            Frame::Ping { ack: true, data } => {
                if data == DRAIN_PING && self.draining {
                    self.drained();
                } else {
                    self.pong = Some(data);
                }
                Ok(())
            }
            Frame::GoAway { .. } => {
                self.peer_away = true;
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
            Frame::Continuation { .. } => Err(protocol("CONTINUATION without HEADERS")),
        }
    }

    fn on_settings(&mut self, params: &[u8]) -> Result<(), ConnError> {
        let mut window = self.peer_window;
        for (id, value) in frame::settings_params(params) {
            frame::check_setting(id, value)?;
            match id {
                frame::INITIAL_WINDOW_SIZE => window = i64::from(value),
                frame::MAX_FRAME_SIZE => self.heads.max_frame = value,
                frame::HEADER_TABLE_SIZE if (value as usize) < hpack::DEFAULT_TABLE_SIZE => {
                    self.heads.size_update = true
                }
                _ => {}
            }
        }
        frame::write_settings_ack(&mut self.out);
        let delta = window - self.peer_window;
        self.peer_window = window;
        if delta != 0 {
            for s in self.streams.values_mut() {
                s.send_window += delta;
                if s.send_window > i64::from(MAX_WINDOW) {
                    return Err(ConnError {
                        code: ErrorCode::FLOW_CONTROL_ERROR,
                        reason: "a stream window over 2^31-1",
                    });
                }
            }
            if delta > 0 {
                self.unblock_all();
            }
        }
        Ok(())
    }

    fn on_window_update(&mut self, id: u32, increment: u32) -> Result<(), ConnError> {
        if id == 0 {
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return Err(ConnError {
                    code: ErrorCode::FLOW_CONTROL_ERROR,
                    reason: "the connection window over 2^31-1",
                });
            }
            self.unblock_all();
            return Ok(());
        }
        if id > self.last_stream {
            return Err(protocol("WINDOW_UPDATE on a stream never opened"));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if increment == 0 {
            self.strikes += 1;
            self.reset(id, ErrorCode::PROTOCOL_ERROR);
            return Ok(());
        }
        s.send_window += i64::from(increment);
        if s.send_window > i64::from(MAX_WINDOW) {
            self.strikes += 1;
            self.reset(id, ErrorCode::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        if !s.pending.is_empty() {
            self.resume(id);
        }
        Ok(())
    }

    /// Flushes every stream waiting for window, as far as the windows go.
    fn unblock_all(&mut self) {
        self.blocked_gone = 0;
        for id in std::mem::take(&mut self.blocked) {
            if let Some(s) = self.streams.get_mut(&id) {
                s.listed = false;
                self.resume(id);
            }
        }
    }

    /// Flushes stream `id`; a bridged stream whose DATA is all out is polled again.
    fn resume(&mut self, id: u32) {
        self.flush(id);
        if let Some(s) = self.streams.get(&id)
            && s.pending.is_empty()
            && s.end.is_none()
            && s.bridged.is_some()
        {
            self.queue(id);
        }
    }

    /// Queues bridged stream `id` to be polled (once).
    fn queue(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.queued
        {
            s.queued = true;
            self.to_poll.push(id);
        }
    }

    /// The client ended stream `id` (END_STREAM on DATA or trailers).
    fn end_recv(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_closed = true;
        match &s.recv {
            Recv::Unary(_) => self.refuse(id, &unary::ended_early()),
            Recv::Answered | Recv::Bridged(_) => {
                if let Recv::Bridged(body) = &s.recv {
                    body.end();
                }
                if s.send_closed {
                    self.remove(id);
                }
            }
        }
    }

    fn on_headers(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), ConnError> {
        if id.is_multiple_of(2) {
            return Err(protocol("HEADERS on an even stream id"));
        }
        let fields = &mut self.fields;
        fields.clear();
        let decoded = self
            .decoder
            .decode(block, MAX_HEADER_LIST as usize, |n, v| fields.add(n, v));
        let too_large = match decoded {
            Ok(()) => false,
            Err(e) => match e.kind {
                HpackErrorKind::Compression => {
                    return Err(ConnError {
                        code: ErrorCode::COMPRESSION_ERROR,
                        reason: e.reason,
                    });
                }
                HpackErrorKind::ListTooLarge => true,
            },
        };
        if let Some(s) = self.streams.get(&id) {
            // Trailers.
            if !end_stream {
                self.strikes += 1;
                self.reset(id, ErrorCode::PROTOCOL_ERROR);
            } else if s.recv_closed {
                self.strikes += 1;
                self.reset(id, ErrorCode::STREAM_CLOSED);
            } else {
                self.end_recv(id);
            }
            return Ok(());
        }
        if id <= self.last_stream {
            // Trailers of a stream we closed while the client was sending are dropped
            // (the block is decoded above, for the HPACK state); on any other stream, a
            // new id lower than the highest or a closed stream, a connection error
            // (RFC 9113 §5.1, §5.1.1).
            if self.recent.contains(&id) {
                return Ok(());
            }
            return Err(protocol(
                "HEADERS on a closed stream or an id lower than the highest",
            ));
        }
        self.last_stream = id;
        if self.stopping || self.streams.len() >= MAX_CONCURRENT_STREAMS as usize {
            self.reset_new(id, end_stream, ErrorCode::REFUSED_STREAM);
            return Ok(());
        }
        if too_large {
            let status = Status::new(
                Code::ResourceExhausted,
                format!("the request's header list is over {MAX_HEADER_LIST} bytes"),
            );
            self.refuse_new(id, end_stream, &status);
            return Ok(());
        }
        if let Some(why) = self.fields.malformed() {
            self.malformed(id, end_stream, why);
            return Ok(());
        }
        let path = &self.fields.path;
        if path == NACOS_UNARY && self.port.nacos.is_some() {
            let s = Stream::new(Recv::Unary(Message::default()), self.peer_window);
            self.streams.insert(id, s);
            if end_stream {
                self.end_recv(id);
            }
        } else if self.port.bridged.iter().any(|p| path.starts_with(p)) {
            let request = match self.fields.request() {
                Ok(r) => r,
                Err(why) => {
                    self.malformed(id, end_stream, why);
                    return Ok(());
                }
            };
            let waker = self.woken.waker(id);
            let body = BodyShared::new(waker.clone(), end_stream);
            let request = request.map(|()| InBody(body.clone()));
            let mut s = Stream::new(Recv::Bridged(body), self.peer_window);
            s.recv_closed = end_stream;
            s.bridged = Some(Box::new(Bridged::call(
                &self.port.routes,
                request,
                &self.info,
                waker,
            )));
            self.streams.insert(id, s);
            self.queue(id);
        } else {
            let echoed = &path[..path.len().min(MAX_ECHOED_PATH)];
            let status = Status::new(
                Code::Unimplemented,
                format!(
                    "this port serves no method {}",
                    String::from_utf8_lossy(echoed)
                ),
            );
            self.refuse_new(id, end_stream, &status);
        }
        Ok(())
    }

    /// Resets a stream never stored with `code`, a strike (see [`MAX_STRIKES`]).
    fn reset_new(&mut self, id: u32, end_stream: bool, code: ErrorCode) {
        self.strikes += 1;
        frame::write_rst_stream(&mut self.out, id, code);
        self.remember(id, end_stream);
    }

    /// Resets a new stream whose request is malformed (`why`).
    fn malformed(&mut self, id: u32, end_stream: bool, why: &'static str) {
        tracing::debug!(peer = ?self.peer, stream = id, why, "malformed request");
        self.reset_new(id, end_stream, ErrorCode::PROTOCOL_ERROR);
    }

    /// Answers the unary call of stream `id`, whose message is `message`.
    fn answer(&mut self, id: u32, message: Bytes) {
        let Some(nacos) = &self.port.nacos else {
            unreachable!("a unary stream is opened only on a port with Nacos calls")
        };
        let data = match nacos.answer_unary(self.peer, message) {
            Ok(data) => data,
            Err(e) => {
                let status = Status::new(
                    Code::Internal,
                    format!("cannot decode the request as a Nacos Payload: {e}"),
                );
                return self.refuse(id, &status);
            }
        };
        self.heads
            .write(&mut self.out, id, &grpc::RESPONSE_HEAD, false);
        if let Some(s) = self.streams.get_mut(&id) {
            s.pending = data;
            s.end = Some(End::Ok);
        }
        self.flush(id);
    }

    /// Refuses a stream never stored: a trailers-only response, and RST_STREAM(NO_ERROR)
    /// when the client is still sending.
    fn refuse_new(&mut self, id: u32, end_stream: bool, status: &Status) {
        self.heads
            .write(&mut self.out, id, &status.trailers_only(), true);
        if !end_stream {
            frame::write_rst_stream(&mut self.out, id, ErrorCode::NO_ERROR);
            self.remember(id, false);
        }
    }

    /// Refuses stream `id` with a trailers-only response and forgets it.
    fn refuse(&mut self, id: u32, status: &Status) {
        if let Some(s) = self.streams.remove(&id) {
            let end_stream = s.recv_closed;
            self.forget(id, s);
            self.refuse_new(id, end_stream, status);
        }
    }

    /// Resets stream `id` and forgets it.
    fn reset(&mut self, id: u32, code: ErrorCode) {
        frame::write_rst_stream(&mut self.out, id, code);
        self.remove(id);
    }

    fn remove(&mut self, id: u32) {
        if let Some(s) = self.streams.remove(&id) {
            self.forget(id, s);
        }
    }

    /// Lets go of removed stream `s`: what the connection held for it, its place in
    /// `blocked`, and, when the client may still be sending, a place in `recent`.
    fn forget(&mut self, id: u32, mut s: Stream) {
        if s.listed {
            self.blocked_gone += 1;
            if self.blocked_gone > 16 && self.blocked_gone * 2 > self.blocked.len() {
                let streams = &self.streams;
                self.blocked.retain(|b| streams.contains_key(b));
                self.blocked_gone = 0;
            }
        }
        let held = std::mem::take(&mut s.held);
        if held > 0 {
            self.unhold(matches!(s.recv, Recv::Bridged(_)), held);
        }
        self.remember(id, s.recv_closed);
    }

    /// Stream `id` is closed while the client may still send on it (`recv_closed`
    /// false): its late frames are to be dropped, for a while.
    fn remember(&mut self, id: u32, recv_closed: bool) {
        if recv_closed {
            return;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// Our side of stream `id` is done (the stream answered): forget it if the client's
    /// side is done too; otherwise a bridged stream's service is done with it, and the
    /// client may stop sending (RST_STREAM(NO_ERROR)); a unary stream waits for the
    /// client's END_STREAM.
    fn sent_all(&mut self, id: u32) {
        self.strikes = self.strikes.saturating_sub(1);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.send_closed = true;
        if s.recv_closed {
            self.remove(id);
        } else if s.bridged.is_some() {
            self.reset(id, ErrorCode::NO_ERROR);
        }
    }

    /// Writes the pending DATA of stream `id` as far as the windows and the output's
    /// high-water mark allow, then its end.
    fn flush(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        while !s.pending.is_empty() {
            let n = (s.pending.len() as i64)
                .min(self.send_window)
                .min(s.send_window)
                .min(i64::from(self.heads.max_frame.min(MAX_FRAME)));
            if n <= 0 || self.out.len() >= self.limit {
                self.out_stalled |= n > 0;
                if !s.listed {
                    s.listed = true;
                    self.blocked.push(id);
                }
                return;
            }
            frame::write_data(&mut self.out, id, &s.pending[..n as usize], false);
            s.pending.advance(n as usize);
            self.send_window -= n;
            s.send_window -= n;
        }
        let Some(end) = s.end.take() else { return };
        match &end {
            End::Ok => self
                .heads
                .write(&mut self.out, id, &grpc::OK_TRAILERS, true),
            End::Trailers(block) => self.heads.write(&mut self.out, id, block, true),
            End::Data => frame::write_data(&mut self.out, id, &[], true),
        }
        self.sent_all(id);
    }

    /// Polls the bridged streams queued and woken, in the order they were queued (those
    /// left over from the last round first), writing what they have, while the output is
    /// under its high-water mark (the rest wait for the next round). Streams whose DATA
    /// waited for room in the output go first.
    pub(crate) fn poll_bridged(&mut self) {
        if self.out_stalled && !self.over() {
            self.out_stalled = false;
            self.unblock_all();
        }
        let mut fresh = std::mem::take(&mut self.woken_ids);
        self.woken.drain_into(&mut fresh);
        for id in fresh.drain(..) {
            self.queue(id);
        }
        self.woken_ids = fresh;
        if self.to_poll.is_empty() {
            return;
        }
        let mut ids = std::mem::take(&mut self.to_poll);
        let mut polled = 0;
        for &id in &ids {
            if self.over() {
                break;
            }
            polled += 1;
            if let Some(s) = self.streams.get_mut(&id) {
                s.queued = false;
                self.poll_stream(id);
            }
        }
        // The rest first next round, then the streams queued meanwhile.
        ids.drain(..polled);
        ids.append(&mut self.to_poll);
        self.to_poll = ids;
    }

    fn poll_stream(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let read = match &s.recv {
            Recv::Bridged(body) => body.take_consumed(),
            _ => 0,
        };
        if read > 0 {
            let held = read.min(s.held);
            s.held -= held;
            self.credit(held);
            self.release(id, read);
        }
        loop {
            if self.over() {
                // Again once the output has room.
                return self.queue(id);
            }
            let Some(s) = self.streams.get_mut(&id) else {
                return;
            };
            if !s.pending.is_empty() || s.end.is_some() || s.send_closed {
                return;
            }
            let Some(b) = s.bridged.as_mut() else { return };
            match b.poll() {
                Out::Pending => return,
                Out::Head(block, end) => {
                    self.heads.write(&mut self.out, id, &block, end);
                    if end {
                        return self.sent_all(id);
                    }
                }
                Out::Data(data) => {
                    s.pending = data;
                    self.flush(id);
                }
                Out::Trailers(block) => {
                    s.end = Some(End::Trailers(block));
                    self.flush(id);
                }
                Out::End => {
                    s.end = Some(End::Data);
                    self.flush(id);
                }
                Out::Failed => {
                    self.strikes += 1;
                    return self.reset(id, ErrorCode::INTERNAL_ERROR);
                }
            }
        }
    }
}
