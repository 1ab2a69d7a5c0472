//! The receiving side of flow control (see the parent module's documentation): DATA
//! taken into a stream, and the connection and stream windows handed back as what the
//! connection holds is let go.

use super::{Conn, ConnError, Recv, protocol};
use crate::sdk_port::WINDOW;
use crate::sdk_port::unary::Progress;
use bytes::Bytes;
use h2wire::frame::{self, ErrorCode};

impl Conn {
    /// `n` bytes received are no longer held: hands them back to the client's connection
    /// window, in halves of the window.
    pub(super) fn credit(&mut self, n: u32) {
        let n = frame::hand_back(&mut self.out, 0, &mut self.recv_unacked, n, WINDOW);
        self.recv_window += i64::from(n);
    }

    /// What the unary messages being assembled may hold on one connection.
    fn unary_budget(&self) -> usize {
        self.port.max_message_bytes.max(WINDOW as usize)
    }

    /// A stream lets go of the `held` bytes the connection held for it.
    pub(super) fn unhold(&mut self, bridged: bool, held: u32) {
        if bridged {
            self.credit(held);
            return;
        }
        self.unary_held -= held as usize;
        if self.deferred > 0 && self.unary_held <= self.unary_budget() {
            let n = std::mem::take(&mut self.deferred);
            self.credit(n);
        }
    }

    pub(super) fn on_data(
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
        let budget = self.unary_budget();
        let Some(s) = self.streams.get_mut(&id) else {
            if id > self.last_stream {
                return Err(protocol("DATA on a stream never opened"));
            }
            if !self.recent.contains(&id) {
                return Err(ConnError {
                    code: ErrorCode::STREAM_CLOSED,
                    reason: "DATA on a closed stream",
                });
            }
            // A stream we closed while the client was sending: its late DATA is dropped.
            self.credit(flow_len);
            return Ok(());
        };
        if s.recv_closed {
            self.credit(flow_len);
            self.strikes += 1;
            self.reset(id, ErrorCode::STREAM_CLOSED);
            return Ok(());
        }
        s.recv_window -= i64::from(flow_len);
        if s.recv_window < 0 {
            self.credit(flow_len);
            self.strikes += 1;
            self.reset(id, ErrorCode::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        // What goes back to the connection window now.
        let mut free = flow_len;
        match &mut s.recv {
            Recv::Unary(m) => {
                s.recv_unacked += flow_len;
                s.held += flow_len;
                self.unary_held += flow_len as usize;
                if self.unary_held > budget {
                    self.deferred += flow_len;
                    free = 0;
                }
                match m.push(data, self.port.max_message_bytes) {
                    Progress::More => {}
                    Progress::Whole(message) => {
                        s.recv = Recv::Answered;
                        let held = std::mem::take(&mut s.held);
                        self.credit(free);
                        self.unhold(false, held);
                        self.answer(id, message);
                        free = 0;
                    }
                    Progress::Refused(status) => {
                        self.credit(free);
                        self.refuse(id, &status);
                        return Ok(());
                    }
                }
            }
            Recv::Answered => s.recv_unacked += flow_len,
            Recv::Bridged(body) => {
                // The padding now, the payload once the service has read it (or at once
                // if the service dropped the body).
                let pad = flow_len - data.len() as u32;
                s.recv_unacked += pad;
                if !data.is_empty() {
                    if body.push(Bytes::copy_from_slice(data)) {
                        s.held += data.len() as u32;
                        free = pad;
                    } else {
                        s.recv_unacked += data.len() as u32;
                    }
                }
            }
        }
        self.credit(free);
        if end_stream {
            self.end_recv(id);
        } else {
            self.release(id, 0);
        }
        Ok(())
    }

    /// Hands `read` more bytes of stream `id` back to the client, in halves of the window.
    pub(super) fn release(&mut self, id: u32, read: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.recv_closed {
            s.recv_unacked += read;
            return;
        }
        let n = frame::hand_back(&mut self.out, id, &mut s.recv_unacked, read, WINDOW);
        s.recv_window += i64::from(n);
    }
}
