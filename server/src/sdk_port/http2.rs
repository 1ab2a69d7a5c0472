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
//!   connection). The connection window is handed back as DATA arrives (what a stream may
//!   buffer is bounded by its own window, or by the message limit for a unary call); a
//!   stream's window as its body is read, in halves of the window. Sending: a stream's DATA
//!   goes out only within the client's stream and connection windows; the rest waits in
//!   the stream (one body frame at most: a bridged body is not polled again until it is
//!   out), and goes when a WINDOW_UPDATE or a larger SETTINGS_INITIAL_WINDOW_SIZE comes.
//! * Errors: a connection error ([`ConnError`]) becomes a GOAWAY and the connection's end;
//!   a stream error a RST_STREAM, and the connection keeps serving.

use crate::sdk_port::bridge::{BodyShared, Bridged, InBody, Out, Woken};
use crate::sdk_port::connection::NACOS_UNARY;
use crate::sdk_port::fields::Fields;
use crate::sdk_port::grpc::{self, Code, Status};
use crate::sdk_port::unary::{self, Message, Progress};
use crate::sdk_port::{Inner, MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST, WINDOW};
use bytes::{Buf as _, Bytes};
use h2wire::frame::{self, ErrorCode, Frame};
use h2wire::hpack::{self, HpackErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::transport::server::TcpConnectInfo;

/// The largest frame we accept (the default: we do not advertise another).
pub(crate) const MAX_FRAME: u32 = 16_384;
/// The largest flow-control window RFC 9113 allows.
const MAX_WINDOW: i64 = 0x7fff_ffff;
/// The window of a connection or stream before SETTINGS change it.
const DEFAULT_WINDOW: i64 = 65_535;
/// The highest stream id (the first GOAWAY of a graceful close names it).
const MAX_STREAM_ID: u32 = 0x7fff_ffff;
/// The payload of the PING sent with that GOAWAY (keep-alive PINGs count from 1).
const DRAIN_PING: [u8; 8] = *b"draining";
/// The largest header block (HEADERS and its CONTINUATIONs) buffered before it is decoded.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// A connection error: GOAWAY with this code, then the connection's end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnError {
    pub(crate) code: ErrorCode,
    pub(crate) reason: &'static str,
}

fn protocol(reason: &'static str) -> ConnError {
    ConnError {
        code: ErrorCode::PROTOCOL_ERROR,
        reason,
    }
}

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

/// See the module documentation.
pub(crate) struct Conn {
    /// Frames to write, in order.
    pub(crate) out: Vec<u8>,
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
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    peer_window: i64,
    peer_max_frame: u32,
    got_settings: bool,
    partial: Option<Partial>,
    /// Streams with DATA waiting for window.
    blocked: Vec<u32>,
    woken: Arc<Woken>,
    /// Bridged streams to poll.
    to_poll: Vec<u32>,
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
        frame::write_window_update(&mut out, 0, WINDOW - DEFAULT_WINDOW as u32);
        Self {
            out,
            port,
            peer: info.remote_addr,
            info,
            decoder: hpack::Decoder::new(4096),
            streams: Map::default(),
            last_stream: 0,
            send_window: DEFAULT_WINDOW,
            recv_window: i64::from(WINDOW),
            recv_unacked: 0,
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE,
            got_settings: false,
            partial: None,
            blocked: Vec::new(),
            woken,
            to_poll: Vec::new(),
            fields: Fields::default(),
            draining: false,
            stopping: false,
            peer_away: false,
            pong: None,
        }
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
        frame::write_goaway(&mut self.out, self.last_stream, ErrorCode::NO_ERROR, b"");
    }

    /// The GOAWAY of a connection error.
    pub(crate) fn fail(&mut self, e: ConnError) {
        frame::write_goaway(&mut self.out, self.last_stream, e.code, e.reason.as_bytes());
    }

    /// One frame from the client.
    pub(crate) fn handle(&mut self, f: Frame<'_>) -> Result<(), ConnError> {
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
                self.remove(stream);
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
            match id {
                frame::INITIAL_WINDOW_SIZE if i64::from(value) > MAX_WINDOW => {
                    return Err(ConnError {
                        code: ErrorCode::FLOW_CONTROL_ERROR,
                        reason: "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1",
                    });
                }
                frame::INITIAL_WINDOW_SIZE => window = i64::from(value),
                frame::MAX_FRAME_SIZE if !(16_384..=16_777_215).contains(&value) => {
                    return Err(protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
                }
                frame::MAX_FRAME_SIZE => self.peer_max_frame = value,
                frame::ENABLE_PUSH if value > 1 => {
                    return Err(protocol("SETTINGS_ENABLE_PUSH neither 0 nor 1"));
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
                if s.send_window > MAX_WINDOW {
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
            if self.send_window > MAX_WINDOW {
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
            self.reset(id, ErrorCode::PROTOCOL_ERROR);
            return Ok(());
        }
        s.send_window += i64::from(increment);
        if s.send_window > MAX_WINDOW {
            self.reset(id, ErrorCode::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        if !s.pending.is_empty() {
            self.blocked.retain(|b| *b != id);
            self.resume(id);
        }
        Ok(())
    }

    /// Flushes every stream waiting for window, as far as the windows go.
    fn unblock_all(&mut self) {
        for id in std::mem::take(&mut self.blocked) {
            self.resume(id);
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
            self.to_poll.push(id);
        }
    }

    fn on_data(
        &mut self,
        id: u32,
        end_stream: bool,
        data: &[u8],
        flow_len: u32,
    ) -> Result<(), ConnError> {
        self.recv_window -= i64::from(flow_len);
        if self.recv_window < 0 {
            return Err(ConnError {
                code: ErrorCode::FLOW_CONTROL_ERROR,
                reason: "DATA beyond the connection window",
            });
        }
        // Handed back at once: what a stream buffers is bounded on its own.
        self.recv_unacked += flow_len;
        if self.recv_unacked >= WINDOW / 2 {
            frame::write_window_update(&mut self.out, 0, self.recv_unacked);
            self.recv_window += i64::from(self.recv_unacked);
            self.recv_unacked = 0;
        }
        let Some(s) = self.streams.get_mut(&id) else {
            if id > self.last_stream {
                return Err(protocol("DATA on a stream never opened"));
            }
            // A stream already answered or reset: its late frames are dropped.
            return Ok(());
        };
        if s.recv_closed {
            self.reset(id, ErrorCode::STREAM_CLOSED);
            return Ok(());
        }
        s.recv_window -= i64::from(flow_len);
        if s.recv_window < 0 {
            self.reset(id, ErrorCode::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        match &mut s.recv {
            Recv::Unary(m) => {
                s.recv_unacked += flow_len;
                match m.push(data, self.port.max_message_bytes) {
                    Progress::More => {}
                    Progress::Whole(message) => {
                        s.recv = Recv::Answered;
                        self.answer(id, message);
                    }
                    Progress::Refused(status) => {
                        self.refuse(id, &status);
                        return Ok(());
                    }
                }
            }
            Recv::Answered => s.recv_unacked += flow_len,
            Recv::Bridged(body) => {
                // The padding now, the payload once the service has read it.
                s.recv_unacked += flow_len - data.len() as u32;
                if !data.is_empty() {
                    body.push(Bytes::copy_from_slice(data));
                }
            }
        }
        if end_stream {
            self.end_recv(id);
        } else {
            self.release(id, 0);
        }
        Ok(())
    }

    /// Hands `read` more bytes of stream `id` back to the client, in halves of the window.
    fn release(&mut self, id: u32, read: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.recv_unacked += read;
        if s.recv_unacked >= WINDOW / 2 && !s.recv_closed {
            frame::write_window_update(&mut self.out, id, s.recv_unacked);
            s.recv_window += i64::from(s.recv_unacked);
            s.recv_unacked = 0;
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
            Recv::Answered => {
                if s.send_closed {
                    self.streams.remove(&id);
                }
            }
            Recv::Bridged(body) => {
                body.end();
                if s.send_closed {
                    self.streams.remove(&id);
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
                self.reset(id, ErrorCode::PROTOCOL_ERROR);
            } else if s.recv_closed {
                self.reset(id, ErrorCode::STREAM_CLOSED);
            } else {
                self.end_recv(id);
            }
            return Ok(());
        }
        if id <= self.last_stream {
            // A stream already answered or reset.
            return Ok(());
        }
        self.last_stream = id;
        if self.stopping || self.streams.len() >= MAX_CONCURRENT_STREAMS as usize {
            frame::write_rst_stream(&mut self.out, id, ErrorCode::REFUSED_STREAM);
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
            tracing::debug!(peer = ?self.peer, stream = id, why, "malformed request");
            frame::write_rst_stream(&mut self.out, id, ErrorCode::PROTOCOL_ERROR);
            return Ok(());
        }
        let path = &self.fields.path;
        if path == NACOS_UNARY {
            let s = Stream::new(Recv::Unary(Message::default()), self.peer_window);
            self.streams.insert(id, s);
            if end_stream {
                self.end_recv(id);
            }
        } else if self.port.bridged.iter().any(|p| path.starts_with(p)) {
            let request = match self.fields.request() {
                Ok(r) => r,
                Err(why) => {
                    tracing::debug!(peer = ?self.peer, stream = id, why, "malformed request");
                    frame::write_rst_stream(&mut self.out, id, ErrorCode::PROTOCOL_ERROR);
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
            self.to_poll.push(id);
        } else {
            let status = Status::new(
                Code::Unimplemented,
                format!(
                    "this port serves no method {}",
                    String::from_utf8_lossy(path)
                ),
            );
            self.refuse_new(id, end_stream, &status);
        }
        Ok(())
    }

    /// Answers the unary call of stream `id`, whose message is `message`.
    fn answer(&mut self, id: u32, message: Bytes) {
        let data = match self.port.nacos.answer_unary(self.peer, message) {
            Ok(data) => data,
            Err(e) => {
                let status = Status::new(
                    Code::Internal,
                    format!("cannot decode the request as a Nacos Payload: {e}"),
                );
                return self.refuse(id, &status);
            }
        };
        frame::write_headers(
            &mut self.out,
            id,
            &grpc::RESPONSE_HEAD,
            false,
            self.peer_max_frame,
        );
        if let Some(s) = self.streams.get_mut(&id) {
            s.pending = data;
            s.end = Some(End::Ok);
        }
        self.flush(id);
    }

    /// Refuses a stream never stored: a trailers-only response, and RST_STREAM(NO_ERROR)
    /// when the client is still sending.
    fn refuse_new(&mut self, id: u32, end_stream: bool, status: &Status) {
        frame::write_headers(
            &mut self.out,
            id,
            &status.trailers_only(),
            true,
            self.peer_max_frame,
        );
        if !end_stream {
            frame::write_rst_stream(&mut self.out, id, ErrorCode::NO_ERROR);
        }
    }

    /// Refuses stream `id` with a trailers-only response and forgets it.
    fn refuse(&mut self, id: u32, status: &Status) {
        if let Some(s) = self.streams.remove(&id) {
            self.refuse_new(id, s.recv_closed, status);
        }
    }

    /// Resets stream `id` and forgets it.
    fn reset(&mut self, id: u32, code: ErrorCode) {
        frame::write_rst_stream(&mut self.out, id, code);
        self.remove(id);
    }

    fn remove(&mut self, id: u32) {
        if self.streams.remove(&id).is_some() {
            self.blocked.retain(|b| *b != id);
        }
    }

    /// Writes the pending DATA of stream `id` as far as the windows allow, then its end.
    fn flush(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        while !s.pending.is_empty() {
            let n = (s.pending.len() as i64)
                .min(self.send_window)
                .min(s.send_window)
                .min(i64::from(self.peer_max_frame));
            if n <= 0 {
                if !self.blocked.contains(&id) {
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
        let max = self.peer_max_frame;
        match &end {
            End::Ok => frame::write_headers(&mut self.out, id, &grpc::OK_TRAILERS, true, max),
            End::Trailers(block) => frame::write_headers(&mut self.out, id, block, true, max),
            End::Data => frame::write_data(&mut self.out, id, &[], true),
        }
        s.send_closed = true;
        if s.recv_closed {
            self.streams.remove(&id);
        } else if s.bridged.is_some() {
            // The service is done with the stream: the client may stop sending.
            self.reset(id, ErrorCode::NO_ERROR);
        }
    }

    /// Polls the bridged streams that were woken, writing what they have, while the
    /// output is under `high_water` bytes (the rest wait for the next round).
    pub(crate) fn poll_bridged(&mut self, high_water: usize) {
        self.woken.drain_into(&mut self.to_poll);
        if self.to_poll.is_empty() {
            return;
        }
        self.to_poll.sort_unstable();
        self.to_poll.dedup();
        let mut ids = std::mem::take(&mut self.to_poll);
        let mut polled = 0;
        for &id in &ids {
            if self.out.len() >= high_water {
                break;
            }
            self.poll_stream(id);
            polled += 1;
        }
        // The rest wait for the next round, with the streams woken meanwhile.
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
            self.release(id, read);
        }
        loop {
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
                    frame::write_headers(&mut self.out, id, &block, end, self.peer_max_frame);
                    if end {
                        s.send_closed = true;
                        if s.recv_closed {
                            self.streams.remove(&id);
                        } else {
                            self.reset(id, ErrorCode::NO_ERROR);
                        }
                        return;
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
                Out::Failed => return self.reset(id, ErrorCode::INTERNAL_ERROR),
            }
        }
    }
}
