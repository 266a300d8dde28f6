//! Application streams and datagrams on a [`Node`]'s connections, in the
//! manner of quinn-proto's stream API, without I/O: open a stream of a
//! protocol on a connection, write what flow control allows, read what
//! arrived, finish, reset, stop; send and receive DATAGRAM frames.
//! Readiness comes out of [`Node::poll`] as [`NetCommand::App`] events
//! ([`AppEvent`]): a stream that was blocked may be retried.
//!
//! A stream opens with its protocol's header; an inbound stream is taken
//! only if its protocol is registered ([`Node::register_protocol`]) and
//! below its cap of inbound streams, and is otherwise refused with a code
//! the opener reads as [`StreamError::Refused`]. Every application stream is
//! a use of its connection (the spec's acquireConnection): a connection
//! with an open stream, in either direction, does not idle out. A stream
//! leaves every table once both of its sides are done (read to its end,
//! reset or stopped; finished, reset or stopped by the peer). A refusal
//! read ends both sides; a side the peer stopped is reset with the peer's
//! code, so that quinn frees the stream on both ends.

use bytes::Bytes;
use quinn_proto::{Dir, VarInt};

use super::connection::QuicConn;
use super::driver::NetCommand;
use super::node::Node;
use super::protocol::{Header, Protocol, parse_header};
use super::registry::{Admission, Admitted, ProtocolOptions, RegisterError};
use super::streams::{Role, Stream, flush, receives, sends};
use crate::id::NodeId;
use crate::manager::{ConnId, Event};
use crate::time::{Now, TimeSource};

/// One application stream: its connection and its QUIC stream.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct StreamHandle {
    conn: ConnId,
    id: u64,
}

impl StreamHandle {
    pub(super) fn new(conn: ConnId, stream: quinn_proto::StreamId) -> Self {
        Self {
            conn,
            id: VarInt::from(stream).into_inner(),
        }
    }

    /// Its connection.
    pub fn conn(self) -> ConnId {
        self.conn
    }

    /// Bidirectional or unidirectional.
    pub fn dir(self) -> StreamDir {
        match self.quic().dir() {
            Dir::Bi => StreamDir::Bi,
            Dir::Uni => StreamDir::Uni,
        }
    }

    /// The smallest handle of `conn` (to range over a connection's streams).
    pub fn first_of(conn: ConnId) -> Self {
        Self { conn, id: 0 }
    }

    pub(super) fn quic(self) -> quinn_proto::StreamId {
        // A handle is made from a StreamId, whose value fits a VarInt.
        quinn_proto::StreamId::from(VarInt::from_u64(self.id).unwrap_or(VarInt::MAX))
    }
}

/// Whether a stream carries data both ways or only from its opener.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum StreamDir {
    /// Both ways.
    Bi,
    /// From the opener only.
    Uni,
}

impl StreamDir {
    fn quic(self) -> Dir {
        match self {
            Self::Bi => Dir::Bi,
            Self::Uni => Dir::Uni,
        }
    }
}

/// Readiness of application streams and datagrams, for the node's caller.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum AppEvent {
    /// A peer opened a stream of a registered protocol.
    Incoming {
        /// The stream (its direction in [`StreamHandle::dir`]).
        stream: StreamHandle,
        /// Who opened it.
        peer: NodeId,
        /// Its protocol.
        protocol: Protocol,
    },
    /// A stream may have data (or its end, or a reset) to read.
    Readable(StreamHandle),
    /// A stream may take more data (or was stopped by the peer).
    Writable(StreamHandle),
    /// More streams of this direction may be opened on the connection.
    StreamsAvailable {
        /// The connection.
        conn: ConnId,
        /// Which direction.
        dir: StreamDir,
    },
    /// A datagram of a registered protocol arrived.
    Datagram {
        /// The connection it came on.
        conn: ConnId,
        /// Its protocol.
        protocol: Protocol,
        /// Its payload, header removed.
        payload: Bytes,
    },
    /// The connection is lost: its streams are gone.
    ConnectionLost {
        /// The connection.
        conn: ConnId,
    },
}

/// Why the peer refused a stream. Sent as a stream error code above the
/// codes applications use (which are `u32`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum Refusal {
    /// The peer has not registered the protocol.
    #[error("the peer does not serve this protocol")]
    UnknownProtocol,
    /// The peer serves as many streams of the protocol as it takes.
    #[error("the peer serves as many streams of this protocol as it takes")]
    InboundLimit,
    /// The stream's header was not one.
    #[error("the stream's protocol header was malformed")]
    MalformedHeader,
}

/// keynode's own stream error codes start here; an application's codes
/// (`u32`) are below.
const REFUSAL_BASE: u64 = 1 << 32;

impl Refusal {
    const ALL: [Refusal; 3] = [
        Self::UnknownProtocol,
        Self::InboundLimit,
        Self::MalformedHeader,
    ];

    pub(super) fn code(self) -> VarInt {
        let n = match self {
            Self::UnknownProtocol => 1,
            Self::InboundLimit => 2,
            Self::MalformedHeader => 3,
        };
        VarInt::from_u64(REFUSAL_BASE + n).unwrap_or(VarInt::MAX)
    }

    fn from_code(code: VarInt) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// What went wrong with a stream operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Nothing can be read, or nothing more written, now: an
    /// [`AppEvent::Readable`] or [`AppEvent::Writable`] tells when to retry.
    #[error("the stream is blocked")]
    Blocked,
    /// The peer reset the stream with this code.
    #[error("the peer reset the stream (code {0})")]
    Reset(u64),
    /// The peer stopped reading the stream with this code.
    #[error("the peer stopped the stream (code {0})")]
    Stopped(u64),
    /// The peer refused the stream.
    #[error("the peer refused the stream: {0}")]
    Refused(Refusal),
    /// This side of the stream is done already (or never existed).
    #[error("stream {0:?} is closed on this side")]
    Closed(StreamHandle),
    /// Its connection is lost.
    #[error("connection {0:?} is lost")]
    ConnectionLost(ConnId),
}

impl StreamError {
    fn reset(code: VarInt) -> Self {
        match Refusal::from_code(code) {
            Some(r) => Self::Refused(r),
            None => Self::Reset(code.into_inner()),
        }
    }

    fn stopped(code: VarInt) -> Self {
        match Refusal::from_code(code) {
            Some(r) => Self::Refused(r),
            None => Self::Stopped(code.into_inner()),
        }
    }
}

/// Why a stream could not be opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The connection is not up (lost, closing, or never known).
    #[error("connection {0:?} is not up")]
    NotConnected(ConnId),
    /// The peer's limit of streams of this direction is reached: an
    /// [`AppEvent::StreamsAvailable`] tells when to retry.
    #[error("the peer's limit of {dir:?} streams on {conn:?} is reached")]
    StreamsExhausted {
        /// The connection.
        conn: ConnId,
        /// The direction.
        dir: StreamDir,
    },
}

/// Why a datagram could not be sent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The connection is not up.
    #[error("connection {0:?} is not up")]
    NotConnected(ConnId),
    /// The peer takes no datagrams.
    #[error("the peer takes no datagrams")]
    Unsupported,
    /// The payload is larger than the path and the peer allow.
    #[error("a datagram payload of {len} bytes is larger than {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The largest payload now.
        max: usize,
    },
}

/// The sizes of the net layer's stream tables, to check that streams leave
/// them when they end.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct StreamTables {
    /// QUIC streams the node tracks, over every connection.
    pub streams: usize,
    /// Of which application streams.
    pub app_streams: usize,
    /// Requests sent, waiting for their response.
    pub requests: usize,
    /// Peers' requests being answered.
    pub peer_requests: usize,
    /// Claim exchanges.
    pub claim_streams: usize,
    /// Bytes of stream headers and keynode frames received but not yet
    /// complete, over every connection (bounded by
    /// `NetConfig::max_partial_frame_bytes`).
    pub partial_frame_bytes: usize,
}

/// Counters of what the net layer refused or dropped.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct AppStats {
    /// Inbound streams of a protocol not registered.
    pub refused_unknown_protocol: u64,
    /// Inbound streams over their protocol's cap.
    pub refused_inbound_limit: u64,
    /// Inbound streams (or datagrams) with a malformed header.
    pub malformed_headers: u64,
    /// Datagrams of a protocol not registered.
    pub datagrams_dropped: u64,
    /// keynode streams reset because reading them would have held more
    /// bytes of incomplete headers and frames than a connection, or the
    /// node, may (`NetConfig::max_partial_frame_bytes_per_conn`,
    /// `NetConfig::max_partial_frame_bytes`).
    pub partial_frames_over_limit: u64,
    /// Streams reset because a header or frame begun was not complete
    /// within `NetConfig::frame_timeout`.
    pub frames_timed_out: u64,
    /// keynode streams the peer ended in the middle of a frame, reset.
    pub frames_cut_short: u64,
}

/// The application side of a stream: its protocol and which of its sides
/// are still open.
#[derive(Debug)]
pub(super) struct AppSides {
    pub(super) protocol: Protocol,
    /// Opened by the peer, and counted against its protocol's caps;
    /// `None`: opened by this node.
    pub(super) inbound_from: Option<Admitted>,
    pub(super) send_open: bool,
    pub(super) recv_open: bool,
}

/// Which side of a stream is done.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Send,
    Recv,
}

impl Node {
    /// Registers `protocol`: streams and datagrams of it are accepted from
    /// now on. The caller learns of its streams as [`AppEvent::Incoming`].
    pub fn register_protocol(
        &mut self,
        protocol: Protocol,
        options: ProtocolOptions,
    ) -> Result<(), RegisterError> {
        let limit = self.net.max_protocols;
        self.registry.register(protocol, options, limit)
    }

    /// Stops accepting `protocol`; its streams open now stay open. True if
    /// it was registered.
    pub fn deregister_protocol(&mut self, protocol: &Protocol) -> bool {
        self.registry.deregister(protocol)
    }

    /// Whether `protocol` is registered.
    pub fn is_registered(&self, protocol: &Protocol) -> bool {
        self.registry.is_registered(protocol)
    }

    /// The peer of an up connection.
    pub fn connection_peer(&self, conn: ConnId) -> Option<NodeId> {
        self.conns.get(&conn).and_then(QuicConn::peer)
    }

    /// Opens a stream of `protocol` on an up connection; its header goes
    /// out with the next transmit. Refused when the peer's limit of streams
    /// of that direction is reached.
    pub fn open_stream(
        &mut self,
        now: Now,
        conn: ConnId,
        protocol: &Protocol,
        dir: StreamDir,
    ) -> Result<StreamHandle, OpenError> {
        self.open_with(now, conn, protocol, dir, protocol.header())
    }

    /// Testing only (tests and fuzzing): opens a stream that starts with
    /// `prefix` where its protocol header belongs, so that a peer's header
    /// parsing and routing can be fed any bytes (a malformed header, one
    /// cut short, keynode's own RPC). Otherwise an ordinary application
    /// stream of this side.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn open_raw_stream(
        &mut self,
        now: Now,
        conn: ConnId,
        dir: StreamDir,
        prefix: &[u8],
    ) -> Result<StreamHandle, OpenError> {
        self.open_with(now, conn, &Protocol::rpc(), dir, prefix.to_vec())
    }

    /// Opens a stream whose first bytes are `first` (its header).
    fn open_with(
        &mut self,
        now: Now,
        conn: ConnId,
        protocol: &Protocol,
        dir: StreamDir,
        first: Vec<u8>,
    ) -> Result<StreamHandle, OpenError> {
        self.advance(now);
        let c = self.up_conn(conn).ok_or(OpenError::NotConnected(conn))?;
        let stream = c
            .conn
            .streams()
            .open(dir.quic())
            .ok_or(OpenError::StreamsExhausted { conn, dir })?;
        let mut s = Stream::new(Role::App);
        s.send = first;
        s.app = Some(AppSides {
            protocol: protocol.clone(),
            inbound_from: None,
            send_open: true,
            recv_open: dir == StreamDir::Bi,
        });
        c.streams.insert(stream, s);
        flush(c, stream);
        self.app_stream_added(conn);
        Ok(StreamHandle::new(conn, stream))
    }

    /// Writes what flow control allows of `data`; `Blocked` if nothing fits.
    /// `now` is read only when the write ends the sending side (see
    /// [`TimeSource`]).
    pub fn write(
        &mut self,
        now: impl TimeSource,
        stream: StreamHandle,
        data: &[u8],
    ) -> Result<usize, StreamError> {
        // Whatever the write changed goes out on the next poll.
        self.stale = true;
        let c = self.app_conn(stream)?;
        let id = stream.quic();
        let s = open_side(c, stream, Side::Send)?;
        if !s.send.is_empty() {
            // The header goes first.
            flush(c, id);
            if c.streams.get(&id).is_some_and(|s| !s.send.is_empty()) {
                return Err(StreamError::Blocked);
            }
        }
        match c.conn.send_stream(id).write(data) {
            Ok(n) => {
                self.manager
                    .metrics_mut()
                    .stream_bytes
                    .add(crate::metrics::Flow::Sent, n as u64);
                Ok(n)
            }
            Err(quinn_proto::WriteError::Blocked) => Err(StreamError::Blocked),
            Err(quinn_proto::WriteError::Stopped(code)) => {
                self.advance(now.now());
                self.abandon_send(stream, code);
                Err(StreamError::stopped(code))
            }
            Err(quinn_proto::WriteError::ClosedStream) => {
                self.advance(now.now());
                self.side_done(stream, Side::Send);
                Err(StreamError::Closed(stream))
            }
        }
    }

    /// True once after a [`Node::read`] freed enough of a flow-control
    /// window that the peer must be told (quinn-proto's `ShouldTransmit`):
    /// the driver must poll to send the credit. Most reads do not, and a
    /// driver that polls only then is not woken for every chunk read.
    pub fn take_credit_due(&mut self) -> bool {
        std::mem::take(&mut self.credit_due)
    }

    /// Reads up to `max` bytes in order: `Ok(None)` at the stream's end.
    /// See [`Node::take_credit_due`]. `now` is read only when the read ends
    /// the receiving side (see [`TimeSource`]).
    pub fn read(
        &mut self,
        now: impl TimeSource,
        stream: StreamHandle,
        max: usize,
    ) -> Result<Option<Bytes>, StreamError> {
        // Whatever the read changed (credit for the peer) goes out on the
        // next poll.
        self.stale = true;
        let c = self.app_conn(stream)?;
        let id = stream.quic();
        open_side(c, stream, Side::Recv)?;
        let mut recv = c.conn.recv_stream(id);
        let mut credit_due = false;
        let result = match recv.read(true) {
            Ok(mut chunks) => {
                let next = chunks.next(max.max(1));
                credit_due = chunks.finalize().should_transmit();
                match next {
                    Ok(Some(chunk)) => Ok(Some(chunk.bytes)),
                    Ok(None) => Ok(None),
                    Err(quinn_proto::ReadError::Blocked) => Err(StreamError::Blocked),
                    Err(quinn_proto::ReadError::Reset(code)) => Err(StreamError::reset(code)),
                }
            }
            Err(_) => Err(StreamError::Closed(stream)),
        };
        self.credit_due |= credit_due;
        if let Ok(Some(bytes)) = &result {
            self.manager
                .metrics_mut()
                .stream_bytes
                .add(crate::metrics::Flow::Received, bytes.len() as u64);
        }
        match result {
            Ok(Some(_)) | Err(StreamError::Blocked) => {}
            Ok(None) | Err(_) => {
                self.advance(now.now());
                self.side_done(stream, Side::Recv);
            }
        }
        if let Err(StreamError::Refused(why)) = result {
            // The peer stopped our side as well: nothing more can go out.
            self.abandon_send(stream, why.code());
        }
        result
    }

    /// Finishes the sending side: the peer reads to the end of what was
    /// written. This side is done.
    pub fn finish(&mut self, now: Now, stream: StreamHandle) -> Result<(), StreamError> {
        self.advance(now);
        let c = self.app_conn(stream)?;
        let id = stream.quic();
        open_side(c, stream, Side::Send)?;
        if let Ok(Some(code)) = c.conn.send_stream(id).stopped() {
            self.abandon_send(stream, code);
            return Err(StreamError::stopped(code));
        }
        if let Some(s) = c.streams.get_mut(&id) {
            s.finish = true;
        }
        flush(c, id);
        self.side_done(stream, Side::Send);
        Ok(())
    }

    /// Abandons the sending side with an application error `code`.
    pub fn reset(&mut self, now: Now, stream: StreamHandle, code: u32) -> Result<(), StreamError> {
        self.advance(now);
        let c = self.app_conn(stream)?;
        let s = open_side(c, stream, Side::Send)?;
        // What flow control still holds back (the header, perhaps) goes
        // with the reset: a reset stream is never writable again, so it
        // would keep the stream in the table for good.
        s.send.clear();
        s.finish = false;
        let _ = c
            .conn
            .send_stream(stream.quic())
            .reset(VarInt::from_u32(code));
        self.side_done(stream, Side::Send);
        Ok(())
    }

    /// Stops reading: the peer is asked to stop sending, with an
    /// application error `code`.
    pub fn stop(&mut self, now: Now, stream: StreamHandle, code: u32) -> Result<(), StreamError> {
        self.advance(now);
        let c = self.app_conn(stream)?;
        open_side(c, stream, Side::Recv)?;
        let _ = c
            .conn
            .recv_stream(stream.quic())
            .stop(VarInt::from_u32(code));
        self.side_done(stream, Side::Recv);
        Ok(())
    }

    /// Refuses an inbound stream the caller will not take (its listener
    /// went after it came in): the opener reads
    /// [`Refusal::UnknownProtocol`], and the stream leaves the tables.
    pub fn refuse(&mut self, now: Now, stream: StreamHandle) {
        self.advance(now);
        let id = stream.quic();
        let Some(c) = self.conns.get_mut(&stream.conn) else {
            return;
        };
        if !c.streams.contains_key(&id) {
            return;
        }
        send_refusal(&mut c.conn, id, Refusal::UnknownProtocol);
        if let Some(s) = self.remove_stream(stream.conn, id) {
            self.app_stream_ended(stream.conn, s);
        }
    }

    /// The largest datagram payload of `protocol` the connection takes now.
    pub fn max_datagram_size(&mut self, conn: ConnId, protocol: &Protocol) -> Option<usize> {
        let c = self.up_conn(conn)?;
        c.conn
            .datagrams()
            .max_size()
            .and_then(|m| m.checked_sub(protocol.header_len()))
    }

    /// Sends an unreliable datagram of `protocol`. When the send buffer is
    /// full the oldest datagram waiting is dropped, as quinn does.
    pub fn send_datagram(
        &mut self,
        now: Now,
        conn: ConnId,
        protocol: &Protocol,
        payload: &[u8],
    ) -> Result<(), DatagramError> {
        self.advance(now);
        let max = self.max_datagram_size(conn, protocol);
        let c = self
            .up_conn(conn)
            .ok_or(DatagramError::NotConnected(conn))?;
        let max = max.ok_or(DatagramError::Unsupported)?;
        if payload.len() > max {
            return Err(DatagramError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let mut bytes = Vec::with_capacity(protocol.header_len() + payload.len());
        protocol.write_header(&mut bytes);
        bytes.extend_from_slice(payload);
        send_datagram_bytes(&mut c.conn, bytes, payload.len(), max)
    }

    /// Testing only (tests and fuzzing): sends `bytes` as a datagram as
    /// they are, with no protocol header in front, so that a peer's parsing
    /// of datagram headers can be fed any bytes (an empty or overlong name,
    /// a header cut short, keynode's own prefix). Errors as
    /// [`Node::send_datagram`]'s, `len` and `max` counting whole datagrams.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn send_raw_datagram(
        &mut self,
        now: Now,
        conn: ConnId,
        bytes: &[u8],
    ) -> Result<(), DatagramError> {
        self.advance(now);
        let c = self
            .up_conn(conn)
            .ok_or(DatagramError::NotConnected(conn))?;
        let max = c
            .conn
            .datagrams()
            .max_size()
            .ok_or(DatagramError::Unsupported)?;
        if bytes.len() > max {
            return Err(DatagramError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        send_datagram_bytes(&mut c.conn, bytes.to_vec(), bytes.len(), max)
    }

    /// The sizes of the stream tables.
    pub fn stream_tables(&self) -> StreamTables {
        let mut t = StreamTables {
            requests: self.requests.len(),
            peer_requests: self.peer_requests.len(),
            claim_streams: self.claim_streams.len(),
            partial_frame_bytes: self.partial_bytes,
            ..StreamTables::default()
        };
        for c in self.conns.values() {
            t.streams += c.streams.len();
            t.app_streams += c.app_streams;
        }
        t
    }

    /// The streams quinn-proto still keeps state for, over every
    /// connection: sending sides that may have data unacknowledged, and
    /// streams the peers opened that are not yet freed (each holds one of
    /// the peer's stream credits). Together with [`Node::stream_tables`],
    /// to check that streams leave every table when they end.
    pub fn quic_streams(&mut self) -> usize {
        // Reading counts changes nothing: no connection is marked to drive.
        let ids: Vec<ConnId> = self.conns.iter().map(|(id, _)| *id).collect();
        let mut total = 0usize;
        for id in ids {
            if let Some(c) = self.conns.get_for_drive(&id) {
                let streams = c.conn.streams();
                let remote =
                    streams.remote_open_streams(Dir::Bi) + streams.remote_open_streams(Dir::Uni);
                total += streams.send_streams() + usize::try_from(remote).unwrap_or(usize::MAX);
            }
        }
        total
    }

    /// What the net layer refused or dropped.
    pub fn app_stats(&self) -> AppStats {
        self.app_stats
    }

    /// Inbound streams of `protocol` open now.
    pub fn inbound_streams(&self, protocol: &Protocol) -> usize {
        self.registry.inbound(protocol)
    }

    fn app_conn(&mut self, stream: StreamHandle) -> Result<&mut QuicConn, StreamError> {
        self.up_conn(stream.conn)
            .ok_or(StreamError::ConnectionLost(stream.conn))
    }

    /// Gives up the sending side after the peer stopped (or refused) it:
    /// what is still held back is dropped and the stream is reset with the
    /// peer's code. quinn frees a stopped stream's state, on both sides,
    /// only once it is reset (quinn's own `SendStream` does so when
    /// dropped); until then it counts against the peer's stream limit.
    pub(super) fn abandon_send(&mut self, stream: StreamHandle, code: VarInt) {
        let id = stream.quic();
        let Some(c) = self.conns.get_mut(&stream.conn) else {
            return;
        };
        let Some(s) = c.streams.get_mut(&id) else {
            return;
        };
        s.send.clear();
        s.finish = false;
        let _ = c.conn.send_stream(id).reset(code);
        self.side_done(stream, Side::Send);
        // Its send side may have been done already (finished, with bytes
        // held back by flow control): the stream may go now.
        self.app_flushed(stream.conn, id);
    }

    /// One side of an application stream is done; once both are, the
    /// stream leaves the tables.
    fn side_done(&mut self, stream: StreamHandle, side: Side) {
        let id = stream.quic();
        let Some(c) = self.conns.get_mut(&stream.conn) else {
            return;
        };
        let Some(sides) = c.streams.get_mut(&id).and_then(|s| s.app.as_mut()) else {
            return;
        };
        match side {
            Side::Send => sides.send_open = false,
            Side::Recv => sides.recv_open = false,
        }
        if sides.send_open || sides.recv_open {
            return;
        }
        // The header, or the end of a finished stream, may still be waiting
        // for flow control: the stream stays until it is written.
        if c.streams.get(&id).is_some_and(|s| !s.send.is_empty()) {
            return;
        }
        if let Some(s) = self.remove_stream(stream.conn, id) {
            self.app_stream_ended(stream.conn, s);
        }
    }

    /// A flushed stream whose sides are both done leaves the table.
    pub(super) fn app_flushed(&mut self, conn: ConnId, id: quinn_proto::StreamId) {
        let done = self
            .conns
            .get(&conn)
            .and_then(|c| c.streams.get(&id))
            .is_some_and(|s| {
                s.send.is_empty() && s.app.as_ref().is_some_and(|a| !a.send_open && !a.recv_open)
            });
        if done && let Some(s) = self.remove_stream(conn, id) {
            self.app_stream_ended(conn, s);
        }
    }

    /// An application stream was added to a connection: the first one
    /// takes a use of it, so that it does not idle out.
    fn app_stream_added(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.app_streams += 1;
        if c.app_streams == 1 && c.lease.is_none() {
            c.lease = self.manager.lease_for_streams(conn);
        }
    }

    /// An application stream left a connection's table: the last one
    /// gives its use back.
    pub(super) fn app_stream_ended(&mut self, conn: ConnId, stream: Stream) {
        if let Some(sides) = &stream.app
            && let Some(admitted) = sides.inbound_from
        {
            self.registry.inbound_ended(&sides.protocol, admitted);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.app_streams = c.app_streams.saturating_sub(1);
        if c.app_streams == 0
            && let Some(lease) = c.lease.take()
        {
            let now = self.now;
            self.manager
                .handle(now, Event::ConnectionReleased { lease });
        }
    }

    /// The header of an inbound stream is complete: it becomes keynode's
    /// RPC (true: its frames are to be read), an application stream, or is
    /// refused.
    pub(super) fn on_header(
        &mut self,
        conn: ConnId,
        id: quinn_proto::StreamId,
        protocol: Protocol,
    ) -> bool {
        if protocol == Protocol::rpc() {
            // On a unidirectional stream no answer could go back: its one
            // frame may only be an observed address (checked when it comes).
            if let Some(s) = self
                .conns
                .get_mut(&conn)
                .and_then(|c| c.streams.get_mut(&id))
            {
                s.role = Role::Rpc;
            }
            return true;
        }
        let Some(peer) = self.connection_peer(conn) else {
            return false;
        };
        let admission = match self.registry.admit(&protocol, peer) {
            Admission::Accepted(admitted) => Ok(admitted),
            Admission::NotRegistered => {
                self.app_stats.refused_unknown_protocol += 1;
                Err(Refusal::UnknownProtocol)
            }
            Admission::AtLimit => {
                self.app_stats.refused_inbound_limit += 1;
                Err(Refusal::InboundLimit)
            }
        };
        let admitted = match admission {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.refuse_stream(conn, id, refusal);
                return false;
            }
        };
        if let Some(s) = self
            .conns
            .get_mut(&conn)
            .and_then(|c| c.streams.get_mut(&id))
        {
            s.role = Role::App;
            s.recv.clear();
            s.app = Some(AppSides {
                protocol: protocol.clone(),
                inbound_from: Some(admitted),
                send_open: id.dir() == Dir::Bi,
                recv_open: true,
            });
        }
        self.app_stream_added(conn);
        let stream = StreamHandle::new(conn, id);
        self.out.push_back(NetCommand::App(AppEvent::Incoming {
            stream,
            peer,
            protocol,
        }));
        false
    }

    /// Refuses an inbound stream: the peer reads (or its writes get) the
    /// refusal's code, and the stream leaves the table.
    pub(super) fn refuse_stream(&mut self, conn: ConnId, id: quinn_proto::StreamId, why: Refusal) {
        if let Some(c) = self.conns.get_mut(&conn) {
            send_refusal(&mut c.conn, id, why);
        }
        self.remove_stream(conn, id);
    }

    /// Datagrams arrived on a connection: each of a registered protocol
    /// goes to the caller, the rest are counted and dropped.
    pub(super) fn on_datagrams(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        while let Some(mut bytes) = c.conn.datagrams().recv() {
            match parse_header(&bytes) {
                Ok(Header::Complete { protocol, len })
                    if self.registry.is_registered(&protocol) =>
                {
                    let payload = bytes.split_off(len);
                    self.out.push_back(NetCommand::App(AppEvent::Datagram {
                        conn,
                        protocol,
                        payload,
                    }));
                }
                Ok(Header::Complete { .. }) => {
                    self.app_stats.datagrams_dropped += 1;
                }
                Ok(Header::Partial { .. }) | Err(_) => {
                    self.app_stats.malformed_headers += 1;
                }
            }
        }
    }

    /// A readiness event of an application stream for the caller.
    pub(super) fn app_ready(&mut self, event: AppEvent) {
        self.out.push_back(NetCommand::App(event));
    }
}

/// Queues a datagram (header included) on a connection; `len` and `max`
/// are what a `TooLarge` error reports.
fn send_datagram_bytes(
    conn: &mut quinn_proto::Connection,
    bytes: Vec<u8>,
    len: usize,
    max: usize,
) -> Result<(), DatagramError> {
    match conn.datagrams().send(Bytes::from(bytes), true) {
        Ok(()) => Ok(()),
        Err(quinn_proto::SendDatagramError::TooLarge) => Err(DatagramError::TooLarge { len, max }),
        Err(_) => Err(DatagramError::Unsupported),
    }
}

/// Tells the opener of an inbound stream that it is refused: its reads
/// (on a bidirectional stream) and its writes fail with `why`'s code. On a
/// stream of this node's own (`refuse` called on one), the peer's reads
/// fail so.
fn send_refusal(conn: &mut quinn_proto::Connection, id: quinn_proto::StreamId, why: Refusal) {
    if receives(conn, id) {
        let _ = conn.recv_stream(id).stop(why.code());
    }
    if sends(conn, id) {
        let _ = conn.send_stream(id).reset(why.code());
    }
}

/// The stream's application sides, if `side` is still open.
fn open_side(
    c: &mut QuicConn,
    stream: StreamHandle,
    side: Side,
) -> Result<&mut Stream, StreamError> {
    c.streams
        .get_mut(&stream.quic())
        .filter(|s| {
            s.app.as_ref().is_some_and(|a| match side {
                Side::Send => a.send_open,
                Side::Recv => a.recv_open,
            })
        })
        .ok_or(StreamError::Closed(stream))
}
