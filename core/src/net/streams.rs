//! Streams of a [`Node`]'s connections: their protocol header (see
//! [`super::protocol`]), keynode's RPC framing (each frame a 4-byte
//! big-endian length and a [`wire`] message) and their routing (which
//! manager request, peer request, claim exchange or application stream a
//! QUIC stream carries: its [`Role`]). A frame is matched against the role of
//! its stream; a frame the role does not allow resets the stream.

use quinn_proto::{Dir, VarInt};

use super::app::{AppEvent, AppSides, Refusal, StreamHandle};
use super::connection::QuicConn;
use super::node::Node;
use super::protocol::{Header, Protocol, parse_header};
use super::timers::NetTimer;
use crate::conn_error::ConnectionErrorCode;
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
                c.streams.remove(&stream);
            }
            self.manager.handle(
                now,
                Event::ResponseReceived {
                    request,
                    result: Err(RpcFailure::Timeout),
                },
            );
        }
    }

    /// Ends the requests and claim streams of a lost connection.
    pub(super) fn fail_streams(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let streams: Vec<Stream> = std::mem::take(&mut c.streams).into_values().collect();
        // The connection's use by its application streams ends with it.
        c.app_streams = 0;
        c.lease = None;
        for s in streams {
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
            Role::Header | Role::Rpc | Role::App | Role::Answered => {}
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
                c.streams.remove(&stream);
            }
            Role::App => self.app_flushed(conn, stream),
            _ => {}
        }
    }

    pub(super) fn close_stream(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let Some(s) = self
            .conns
            .get_mut(&id)
            .and_then(|c| c.streams.remove(&stream))
        else {
            return;
        };
        self.end_role(s.role, true);
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
            Some(Role::Rpc | Role::Request(_) | Role::Serve(_) | Role::Claim(_)) => {
                self.read_frames(id, stream)
            }
            // Whatever follows the request is not read.
            Some(Role::Answered) => {}
        }
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
                            Ok(Some(chunk)) => s.recv.extend_from_slice(&chunk.bytes),
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
            if let Some(c) = self.conns.get_mut(&id) {
                if stream.dir() == Dir::Bi {
                    let _ = c
                        .conn
                        .send_stream(stream)
                        .reset(Refusal::MalformedHeader.code());
                }
                c.streams.remove(&stream);
            }
            return false;
        }
        match header {
            Some(protocol) => {
                if let Some(s) = self
                    .conns
                    .get_mut(&id)
                    .and_then(|c| c.streams.get_mut(&stream))
                {
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
        let mut finished = false;
        let mut too_big = false;
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
                            s.recv.extend_from_slice(&chunk.bytes);
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
        if too_big {
            self.reject_stream(id, stream);
            return;
        }
        while let Some(frame) = self.take_frame(id, stream) {
            match frame {
                Ok(frame) => self.on_frame(id, stream, frame),
                Err(_) => {
                    self.reject_stream(id, stream);
                    return;
                }
            }
        }
        let ends = self
            .conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .is_some_and(|s| match s.role {
                // The exchange is over when the peer finishes.
                Role::Claim(_) | Role::Request(_) => true,
                // Ended before its first frame: nothing will come.
                Role::Rpc => true,
                // We answer first.
                Role::Serve(_) | Role::Header | Role::App | Role::Answered => false,
            });
        if finished && ends {
            if self
                .conns
                .get(&id)
                .and_then(|c| c.streams.get(&stream))
                .is_some_and(|s| s.role == Role::Rpc)
            {
                // Nothing will be answered on it: reset, so that quinn
                // frees our half as well.
                self.reject_stream(id, stream);
                return;
            }
            self.close_stream(id, stream);
        }
    }

    /// The next whole frame of a stream's receive buffer.
    fn take_frame(
        &mut self,
        id: ConnId,
        stream: quinn_proto::StreamId,
    ) -> Option<Result<Frame, DecodeError>> {
        let max = self.max_frame;
        let s = self.conns.get_mut(&id)?.streams.get_mut(&stream)?;
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
        Some(wire::decode_frame(&frame, max))
    }

    /// A peer broke the framing or sent too much: the stream is stopped
    /// and reset (whichever of its sides this node has).
    pub(super) fn reject_stream(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        if let Some(c) = self.conns.get_mut(&id) {
            let code = VarInt::from_u32(ConnectionErrorCode::ProtocolViolation.code());
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
        match (role, frame) {
            (Role::Rpc, Frame::Request(body)) => {
                let request = PeerRequestId(self.fresh_id());
                self.set_role(id, stream, Role::Serve(request));
                self.peer_requests.insert(request, (id, stream));
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
            // A response nobody asked for, a second request, a request or
            // response inside a claim exchange, anything after our answer.
            (Role::Rpc, Frame::Response(_))
            | (Role::Request(_), Frame::Request(_) | Frame::Claim(_))
            | (Role::Serve(_), Frame::Request(_) | Frame::Response(_) | Frame::Claim(_))
            | (Role::Claim(_), Frame::Request(_) | Frame::Response(_)) => {
                self.reject_stream(id, stream)
            }
            // Frames are read from RPC streams only.
            (Role::Header | Role::App | Role::Answered, _) => {}
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
