//! Streams of a [`Node`]'s connections: their protocol header (see
//! [`super::protocol`]), keynode's RPC framing (each frame a 4-byte
//! big-endian length and a [`wire`] message) and their routing (which
//! manager request, peer request, claim exchange or application stream a
//! QUIC stream carries: its [`Role`]). A frame is matched against the role of
//! its stream; a frame the role does not allow resets the stream.
//!
//! What a peer can make a node hold on its streams is bounded: bytes of
//! headers and frames begun but not complete are counted per connection
//! and over all ([`super::NetConfig::max_partial_frame_bytes_per_conn`],
//! [`super::NetConfig::max_partial_frame_bytes`]), and a stream whose
//! read would go past either is reset; a header, or a frame, must be
//! complete within [`super::NetConfig::frame_timeout`] of its first byte
//! (an RPC stream's first frame, of its header) or the stream is reset. A
//! stream the peer ends in the middle of a frame is reset. Every stream
//! leaves every table when it ends, ours and quinn-proto's: a side this
//! node no longer uses is finished, stopped or reset, never left open.

use quinn_proto::{Dir, VarInt};

use super::app::{AppEvent, AppSides, Refusal, StreamHandle};
use super::connection::QuicConn;
use super::node::Node;
use super::protocol::{Header, Protocol, parse_header};
use super::timers::NetTimer;
use crate::conn_error::CloseReason;
use crate::manager::{ConnId, Event, PeerRequestId, RequestId, RpcFailure, StreamId};
use crate::wire::{self, DecodeError, Frame};

/// A length prefix: 4 bytes, big-endian.
const LEN_PREFIX: usize = 4;

/// What a QUIC stream carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    /// Inbound, before its protocol header is complete.
    Header,
    /// Inbound keynode RPC, before its first frame says what it is.
    Rpc,
    /// An application's stream: the caller reads and writes it.
    App,
    /// We sent a request; the response comes back on it.
    Request(RequestId),
    /// The peer's request; we answer on it.
    Serve(PeerRequestId),
    /// A peer's request we answered: it goes once the answer is written.
    Answered,
    /// A claim exchange.
    Claim(StreamId),
    /// Ours, unidirectional: what we tell the peer once (its observed
    /// address); it goes once written.
    Told,
    /// The peer's unidirectional stream that told us our observed address:
    /// nothing more may come on it.
    Observed,
}

/// A stream's role and its buffers.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) role: Role,
    /// Received bytes not yet a whole frame (or header).
    pub(super) recv: Vec<u8>,
    /// Bytes the stream could not take yet.
    pub(super) send: Vec<u8>,
    /// Finish the sending side once `send` is written.
    pub(super) finish: bool,
    /// An application stream's protocol and open sides.
    pub(super) app: Option<AppSides>,
}

impl Stream {
    pub(super) fn new(role: Role) -> Self {
        Self {
            role,
            recv: Vec::new(),
            send: Vec::new(),
            finish: false,
            app: None,
        }
    }
}

/// Writes what a stream has pending, and finishes it when asked and done.
pub(super) fn flush(c: &mut QuicConn, stream: quinn_proto::StreamId) {
    let Some(s) = c.streams.get_mut(&stream) else {
        return;
    };
    let mut send = c.conn.send_stream(stream);
    while !s.send.is_empty() {
        match send.write(&s.send) {
            Ok(n) if n > 0 => {
                s.send.drain(..n);
            }
            _ => break,
        }
    }
    if s.send.is_empty() && s.finish {
        let _ = send.finish();
        s.finish = false;
    }
}

/// Whether this node reads `stream`: a unidirectional stream has only its
/// opener's sending side (and quinn panics when asked for the other).
pub(super) fn receives(conn: &quinn_proto::Connection, stream: quinn_proto::StreamId) -> bool {
    stream.dir() == Dir::Bi || stream.initiator() != conn.side()
}

/// Whether this node writes `stream` (see [`receives`]).
pub(super) fn sends(conn: &quinn_proto::Connection, stream: quinn_proto::StreamId) -> bool {
    stream.dir() == Dir::Bi || stream.initiator() == conn.side()
}

impl Node {
    /// Opens an RPC stream on an up connection and sends its first frame.
    pub(super) fn open_rpc_stream(
        &mut self,
        conn: ConnId,
        role: Role,
        frame: Frame,
        finish: bool,
    ) -> Option<quinn_proto::StreamId> {
        let c = self.up_conn(conn)?;
        let stream = c.conn.streams().open(Dir::Bi)?;
        let mut s = Stream::new(role);
        s.send = Protocol::rpc().header();
        c.streams.insert(stream, s);
        self.send_frame(conn, stream, &frame, finish);
        Some(stream)
    }

    /// Tells the peer of an up connection the address this node sees it
    /// at, on a unidirectional stream of its own (see `wire`'s
    /// "Versioning": an old peer resets that stream and nothing else).
    pub(super) fn tell_observed(&mut self, conn: ConnId) {
        let Some(c) = self.up_conn(conn) else {
            return;
        };
        let address = c.conn.remote_address();
        if super::relay::is_relayed(&address) {
            // A mapped address says nothing about the peer's path.
            return;
        }
        // No uni stream credit: the peer hears nothing of its address.
        let Some(stream) = c.conn.streams().open(Dir::Uni) else {
            return;
        };
        let mut s = Stream::new(Role::Told);
        s.send = Protocol::rpc().header();
        c.streams.insert(stream, s);
        self.send_frame(conn, stream, &Frame::Observed { address }, true);
        self.after_flush(conn, stream);
    }

    pub(super) fn send_frame(
        &mut self,
        conn: ConnId,
        stream: quinn_proto::StreamId,
        frame: &Frame,
        finish: bool,
    ) {
        let Ok(payload) = wire::encode(frame, self.max_frame) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(s) = c.streams.get_mut(&stream) else {
            return;
        };
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        s.send.extend_from_slice(&len.to_be_bytes());
        s.send.extend_from_slice(&payload);
        s.finish |= finish;
        flush(c, stream);
    }

    /// A request's deadline passed: its stream is abandoned and it fails.
    pub(super) fn on_request_timeout(&mut self, request: RequestId) {
        let now = self.now;
        if let Some((conn, stream)) = self.requests.remove(&request) {
            if let Some(c) = self.conns.get_mut(&conn) {
                let _ = c.conn.send_stream(stream).reset(VarInt::from_u32(0));
                let _ = c.conn.recv_stream(stream).stop(VarInt::from_u32(0));
            }
            self.remove_stream(conn, stream);
            self.manager.handle(
                now,
                Event::ResponseReceived {
                    request,
                    result: Err(RpcFailure::Timeout),
                },
            );
        }
    }

    /// Takes a stream out of its connection's table: the bytes it held
    /// are no longer counted and its frame deadline goes. Every stream
    /// leaves the table through here.
    pub(super) fn remove_stream(
        &mut self,
        id: ConnId,
        stream: quinn_proto::StreamId,
    ) -> Option<Stream> {
        let c = self.conns.get_mut(&id)?;
        let s = c.streams.remove(&stream)?;
        c.partial_bytes = c.partial_bytes.saturating_sub(s.recv.len());
        self.partial_bytes = self.partial_bytes.saturating_sub(s.recv.len());
        self.timers
            .cancel(NetTimer::Frame(StreamHandle::new(id, stream)));
        Some(s)
    }

    /// Ends the requests and claim streams of a lost connection.
    pub(super) fn fail_streams(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let streams: Vec<(quinn_proto::StreamId, Stream)> =
            std::mem::take(&mut c.streams).into_iter().collect();
        // The connection's use by its application streams ends with it.
        c.app_streams = 0;
        c.lease = None;
        self.partial_bytes = self.partial_bytes.saturating_sub(c.partial_bytes);
        c.partial_bytes = 0;
        for (stream, s) in streams {
            self.timers
                .cancel(NetTimer::Frame(StreamHandle::new(id, stream)));
            if let Some(sides) = &s.app
                && let Some(admitted) = sides.inbound_from
            {
                self.registry.inbound_ended(&sides.protocol, admitted);
            }
            self.end_role(s.role, false);
        }
    }

    /// Forgets what a stream carried and tells the manager it ended; with
    /// `only_if_routed` (a stream closed by either side) only if its route
    /// was still known. A lost connection tells of every stream it had.
    fn end_role(&mut self, role: Role, only_if_routed: bool) {
        let now = self.now;
        match role {
            Role::Request(request) => {
                let known = self.requests.remove(&request).is_some();
                if known || !only_if_routed {
                    self.timers.cancel(NetTimer::Request(request));
                    self.manager.handle(
                        now,
                        Event::ResponseReceived {
                            request,
                            result: Err(RpcFailure::ConnectionClosed),
                        },
                    );
                }
            }
            Role::Claim(stream) => {
                let known = self.claim_streams.remove(&stream).is_some();
                if known || !only_if_routed {
                    self.manager.handle(now, Event::StreamClosed { stream });
                }
            }
            Role::Serve(peer_request) => {
                self.peer_requests.remove(&peer_request);
            }
            Role::Header | Role::Rpc | Role::App | Role::Answered | Role::Told | Role::Observed => {
            }
        }
    }

    /// Queues the answer to a peer's request; the stream goes once the
    /// answer is written (at once, unless flow control holds it).
    pub(super) fn answer(&mut self, request: PeerRequestId, frame: &Frame) {
        let Some((conn, stream)) = self.peer_requests.remove(&request) else {
            return;
        };
        self.set_role(conn, stream, Role::Answered);
        self.send_frame(conn, stream, frame, true);
        self.after_flush(conn, stream);
    }

    /// A stream's pending bytes may have been written: an answered request
    /// whose answer is out, or an application stream done on both sides,
    /// leaves the table.
    pub(super) fn after_flush(&mut self, conn: ConnId, stream: quinn_proto::StreamId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(s) = c.streams.get(&stream) else {
            return;
        };
        match s.role {
            Role::Answered if s.send.is_empty() => {
                // The request's end may not have been read yet: stopping
                // frees quinn's side of it too.
                let _ = c.conn.recv_stream(stream).stop(VarInt::from_u32(0));
                self.remove_stream(conn, stream);
            }
            // Ours to send only (unidirectional): written and finished.
            Role::Told if s.send.is_empty() => {
                self.remove_stream(conn, stream);
            }
            Role::App => self.app_flushed(conn, stream),
            _ => {}
        }
    }

    pub(super) fn close_stream(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let Some(s) = self.remove_stream(id, stream) else {
            return;
        };
        self.end_role(s.role, true);
    }

    /// The peer finished a claim exchange's stream: the exchange is over
    /// (the manager hears so), and this node finishes its own side once
    /// what it queued is written, so that quinn frees the stream on both
    /// ends (left open, it would hold the peer's stream credit and both
    /// nodes' tables until the connection closed).
    fn end_claim_stream(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let Some(role) = self
            .conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .map(|s| s.role)
        else {
            return;
        };
        self.end_role(role, true);
        if let Some(c) = self.conns.get_mut(&id)
            && let Some(s) = c.streams.get_mut(&stream)
        {
            s.role = Role::Answered;
            s.finish = true;
            flush(c, stream);
        }
        self.after_flush(id, stream);
    }

    /// A stream's frame (or header) deadline passed: if it is still not
    /// complete, the stream is reset.
    pub(super) fn on_frame_timeout(&mut self, handle: StreamHandle) {
        let (id, stream) = (handle.conn(), handle.quic());
        if self.frame_incomplete(id, stream) {
            self.app_stats.frames_timed_out += 1;
            self.reject_stream(id, stream);
        }
    }

    /// Whether a stream waits for the rest of a header or frame: its
    /// header, an RPC stream's first frame, or bytes of a frame begun.
    fn frame_incomplete(&self, id: ConnId, stream: quinn_proto::StreamId) -> bool {
        self.conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .is_some_and(|s| match s.role {
                Role::Header | Role::Rpc => true,
                Role::Request(_) | Role::Serve(_) | Role::Claim(_) | Role::Observed => {
                    !s.recv.is_empty()
                }
                // Not read by the net layer (or no longer).
                Role::App | Role::Answered | Role::Told => false,
            })
    }

    /// Sets a stream's frame deadline when a header or frame is begun (and
    /// leaves it where it is while it stays incomplete), clears it once
    /// nothing is.
    fn arm_frame_deadline(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let timer = NetTimer::Frame(StreamHandle::new(id, stream));
        if !self.frame_incomplete(id, stream) {
            self.timers.cancel(timer);
        } else if !self.timers.is_set(timer) {
            self.timers
                .set(timer, self.now.mono + self.net.frame_timeout);
        }
    }

    pub(super) fn on_readable(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let role = self
            .conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .map(|s| s.role);
        match role {
            None => {}
            Some(Role::App) => self.app_ready(AppEvent::Readable(StreamHandle::new(id, stream))),
            Some(Role::Header) if self.read_header(id, stream) => self.read_frames(id, stream),
            Some(Role::Header) => {}
            Some(
                Role::Rpc | Role::Request(_) | Role::Serve(_) | Role::Claim(_) | Role::Observed,
            ) => self.read_frames(id, stream),
            // Whatever follows the request is not read; ours to send only.
            Some(Role::Answered | Role::Told) => {}
        }
        self.arm_frame_deadline(id, stream);
    }

    /// Reads an inbound stream's header, exactly (the data after it is the
    /// protocol's). True if the stream is now keynode's RPC, with frames to
    /// read; an application stream is handed to the caller, a stream of an
    /// unknown protocol is refused.
    fn read_header(&mut self, id: ConnId, stream: quinn_proto::StreamId) -> bool {
        let mut header = None;
        let mut malformed = false;
        let mut ended = false;
        {
            let Some(c) = self.conns.get_mut(&id) else {
                return false;
            };
            let Some(s) = c.streams.get_mut(&stream) else {
                return false;
            };
            let mut recv = c.conn.recv_stream(stream);
            if let Ok(mut chunks) = recv.read(true) {
                loop {
                    match parse_header(&s.recv) {
                        Ok(Header::Partial { need }) => match chunks.next(need) {
                            Ok(Some(chunk)) => {
                                s.recv.extend_from_slice(&chunk.bytes);
                                c.partial_bytes += chunk.bytes.len();
                                self.partial_bytes += chunk.bytes.len();
                            }
                            // Nothing more now.
                            Err(quinn_proto::ReadError::Blocked) => break,
                            // Ended or reset before its header: quinn has
                            // freed it (the peer may open another).
                            Ok(None) | Err(quinn_proto::ReadError::Reset(_)) => {
                                ended = true;
                                break;
                            }
                        },
                        Ok(Header::Complete { protocol, .. }) => {
                            header = Some(protocol);
                            break;
                        }
                        Err(_) => {
                            malformed = true;
                            break;
                        }
                    }
                }
                let _ = chunks.finalize();
            }
        }
        if malformed {
            self.app_stats.malformed_headers += 1;
            self.refuse_stream(id, stream, Refusal::MalformedHeader);
            return false;
        }
        if ended {
            // Nothing to answer on a bi stream without a protocol: its
            // sending side is reset, so that quinn frees that half too.
            if let Some(c) = self.conns.get_mut(&id)
                && stream.dir() == Dir::Bi
            {
                let _ = c
                    .conn
                    .send_stream(stream)
                    .reset(Refusal::MalformedHeader.code());
            }
            self.remove_stream(id, stream);
            return false;
        }
        match header {
            Some(protocol) => {
                if let Some(c) = self.conns.get_mut(&id)
                    && let Some(s) = c.streams.get_mut(&stream)
                {
                    c.partial_bytes = c.partial_bytes.saturating_sub(s.recv.len());
                    self.partial_bytes = self.partial_bytes.saturating_sub(s.recv.len());
                    s.recv.clear();
                }
                self.on_header(id, stream, protocol)
            }
            None => false,
        }
    }

    /// Reads keynode RPC frames.
    fn read_frames(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let limit = self.max_frame + LEN_PREFIX;
        let per_conn = self.net.max_partial_frame_bytes_per_conn;
        let total = self.net.max_partial_frame_bytes;
        let mut finished = false;
        let mut too_big = false;
        let mut over = false;
        {
            let Some(c) = self.conns.get_mut(&id) else {
                return;
            };
            let Some(s) = c.streams.get_mut(&stream) else {
                return;
            };
            let mut recv = c.conn.recv_stream(stream);
            if let Ok(mut chunks) = recv.read(true) {
                loop {
                    match chunks.next(limit) {
                        Ok(Some(chunk)) => {
                            let n = chunk.bytes.len();
                            // Held until whole frames are taken below.
                            if c.partial_bytes + n > per_conn || self.partial_bytes + n > total {
                                over = true;
                                break;
                            }
                            s.recv.extend_from_slice(&chunk.bytes);
                            c.partial_bytes += n;
                            self.partial_bytes += n;
                            if s.recv.len() > 2 * limit {
                                too_big = true;
                                break;
                            }
                        }
                        Ok(None) => {
                            finished = true;
                            break;
                        }
                        // Nothing more for now: wait for the next Readable.
                        Err(quinn_proto::ReadError::Blocked) => break,
                        Err(quinn_proto::ReadError::Reset(_)) => {
                            finished = true;
                            break;
                        }
                    }
                }
                let _ = chunks.finalize();
            }
        }
        if over {
            self.app_stats.partial_frames_over_limit += 1;
            self.reject_stream(id, stream);
            return;
        }
        if too_big {
            // More than two frames' worth buffered: the frame in front
            // announced a length over the limit, which is why it failed.
            if let Some(Err(error)) = self.take_frame(id, stream) {
                self.fail_request(id, stream, error);
            }
            self.reject_stream(id, stream);
            return;
        }
        while let Some(frame) = self.take_frame(id, stream) {
            match frame {
                Ok(frame) => self.on_frame(id, stream, frame),
                Err(error) => {
                    self.fail_request(id, stream, error);
                    self.reject_stream(id, stream);
                    return;
                }
            }
        }
        if !finished {
            return;
        }
        let Some((role, cut_short)) = self
            .conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .map(|s| (s.role, !s.recv.is_empty()))
        else {
            return;
        };
        match role {
            // Ended in the middle of a frame, or before its first:
            // nothing will be answered on it. Reset, so that quinn frees
            // our half as well.
            Role::Rpc | Role::Request(_) | Role::Serve(_) | Role::Claim(_) | Role::Observed
                if cut_short =>
            {
                self.app_stats.frames_cut_short += 1;
                self.reject_stream(id, stream);
            }
            Role::Rpc => self.reject_stream(id, stream),
            // Told what it had to tell.
            Role::Observed => self.close_stream(id, stream),
            // Our request was finished when sent: the stream is done.
            Role::Request(_) => self.close_stream(id, stream),
            Role::Claim(_) => self.end_claim_stream(id, stream),
            // We answer first.
            Role::Serve(_) | Role::Header | Role::App | Role::Answered | Role::Told => {}
        }
    }

    /// The next whole frame of a stream's receive buffer.
    fn take_frame(
        &mut self,
        id: ConnId,
        stream: quinn_proto::StreamId,
    ) -> Option<Result<Frame, DecodeError>> {
        let max = self.max_frame;
        let c = self.conns.get_mut(&id)?;
        let s = c.streams.get_mut(&stream)?;
        let prefix: [u8; LEN_PREFIX] = s.recv.get(..LEN_PREFIX)?.try_into().ok()?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > max {
            return Some(Err(DecodeError::TooLarge {
                size: len,
                limit: max,
            }));
        }
        let frame = s.recv.get(LEN_PREFIX..LEN_PREFIX + len)?.to_vec();
        s.recv.drain(..LEN_PREFIX + len);
        c.partial_bytes = c.partial_bytes.saturating_sub(LEN_PREFIX + len);
        self.partial_bytes = self.partial_bytes.saturating_sub(LEN_PREFIX + len);
        Some(wire::decode_frame(&frame, max))
    }

    /// If `stream` carries one of this node's requests, the request fails
    /// with why its response did not decode (rather than the "connection
    /// closed" that resetting the stream would report).
    fn fail_request(&mut self, id: ConnId, stream: quinn_proto::StreamId, error: DecodeError) {
        let role = self
            .conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .map(|s| s.role);
        if let Some(Role::Request(request)) = role
            && self.requests.remove(&request).is_some()
        {
            self.timers.cancel(NetTimer::Request(request));
            let now = self.now;
            self.manager.handle(
                now,
                Event::ResponseReceived {
                    request,
                    result: Err(RpcFailure::InvalidResponse(error)),
                },
            );
        }
    }

    /// A peer broke the framing or sent too much: the stream is stopped
    /// and reset (whichever of its sides this node has).
    pub(super) fn reject_stream(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let code = VarInt::from_u32(CloseReason::ProtocolViolation.code().code());
        self.abandon_stream(id, stream, code);
    }

    /// Gives a stream up with `code`: stopped and reset (whichever of its
    /// sides this node has), and out of the tables.
    pub(super) fn abandon_stream(
        &mut self,
        id: ConnId,
        stream: quinn_proto::StreamId,
        code: VarInt,
    ) {
        if let Some(c) = self.conns.get_mut(&id) {
            if receives(&c.conn, stream) {
                let _ = c.conn.recv_stream(stream).stop(code);
            }
            if sends(&c.conn, stream) {
                let _ = c.conn.send_stream(stream).reset(code);
            }
        }
        self.close_stream(id, stream);
    }

    /// Routes a frame by its stream's role.
    fn on_frame(&mut self, id: ConnId, stream: quinn_proto::StreamId, frame: Frame) {
        let now = self.now;
        let Some(role) = self
            .conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .map(|s| s.role)
        else {
            return;
        };
        if stream.dir() == Dir::Uni && !matches!(frame, Frame::Observed { .. }) {
            // No answer could go back on it: only a word to take in.
            return self.reject_stream(id, stream);
        }
        match (role, frame) {
            (Role::Rpc, Frame::Request(body)) => {
                let request = PeerRequestId(self.fresh_id());
                self.set_role(id, stream, Role::Serve(request));
                self.peer_requests.insert(request, (id, stream));
                if let Some(response) = self.serve_relay(id, &body) {
                    return self.answer(request, &Frame::Response(response));
                }
                self.manager.handle(
                    now,
                    Event::RequestReceived {
                        conn: id,
                        request,
                        body,
                    },
                );
            }
            (Role::Rpc, Frame::Claim(message)) => {
                let core_stream = StreamId::Remote(self.fresh_id());
                self.set_role(id, stream, Role::Claim(core_stream));
                self.claim_streams.insert(core_stream, (id, stream));
                self.manager.handle(
                    now,
                    Event::StreamOpened {
                        conn: id,
                        stream: core_stream,
                        message,
                    },
                );
            }
            (Role::Request(request), Frame::Response(body)) => {
                // The response is all a request stream carries: it is done
                // (reading is stopped, in case the peer never finishes it).
                if let Some(c) = self.conns.get_mut(&id) {
                    let _ = c.conn.recv_stream(stream).stop(VarInt::from_u32(0));
                }
                self.remove_stream(id, stream);
                if self.requests.remove(&request).is_some() {
                    self.timers.cancel(NetTimer::Request(request));
                    self.manager.handle(
                        now,
                        Event::ResponseReceived {
                            request,
                            result: Ok(body),
                        },
                    );
                }
            }
            (Role::Claim(core_stream), Frame::Claim(message)) => {
                self.manager.handle(
                    now,
                    Event::StreamReceived {
                        stream: core_stream,
                        message,
                    },
                );
            }
            // Alone on a unidirectional stream: the peer's word about our
            // address, believed for this connection only.
            (Role::Rpc, Frame::Observed { address }) if stream.dir() == Dir::Uni => {
                self.set_role(id, stream, Role::Observed);
                self.manager.handle(
                    now,
                    Event::AddressObserved {
                        conn: id,
                        observed: address,
                    },
                );
            }
            // A response nobody asked for, a second request, a request or
            // response inside a claim exchange, anything after our answer,
            // an observation anywhere but alone on a unidirectional stream.
            (Role::Rpc, Frame::Response(_) | Frame::Observed { .. })
            | (Role::Request(_), Frame::Request(_) | Frame::Claim(_) | Frame::Observed { .. })
            | (Role::Serve(_), _)
            | (Role::Claim(_), Frame::Request(_) | Frame::Response(_) | Frame::Observed { .. })
            | (Role::Observed, _) => self.reject_stream(id, stream),
            // Frames are read from RPC streams only.
            (Role::Header | Role::App | Role::Answered | Role::Told, _) => {}
        }
    }

    fn set_role(&mut self, id: ConnId, stream: quinn_proto::StreamId, role: Role) {
        if let Some(s) = self
            .conns
            .get_mut(&id)
            .and_then(|c| c.streams.get_mut(&stream))
        {
            s.role = role;
        }
    }
}
