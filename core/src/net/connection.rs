//! One QUIC connection of a [`Node`] and its life: the handshake (with the
//! manager's attempt waiting on an outbound one), the connection up, and
//! its end. Each [`ConnState`] holds the data of that state only, so an
//! attempt cannot be answered twice and a connection that is not up has no
//! peer to report. Also here: moving a connection along (its transmits,
//! endpoint events and application events).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use quinn_proto::{ConnectionError, ConnectionHandle, Dir, StreamEvent, VarInt};

use super::app::{AppEvent, StreamDir, StreamHandle};
use super::node::Node;
use super::streams::{Role, Stream, flush};
use super::timers::NetTimer;
use super::tls::{ExpectNodeId, node_id_of};
use crate::conn_error::CloseReason;
use crate::id::NodeId;
use crate::manager::{AttemptId, ConnId, ConnectFailure, Event, LeaseId};

/// Where a connection stands.
pub(super) enum ConnState {
    /// Outbound, in its handshake: the manager's `attempt` waits for it,
    /// and the peer must prove `expected`.
    Dialing {
        /// The manager's attempt.
        attempt: AttemptId,
        /// The TLS verifier, which notes the NodeId the peer presented.
        verifier: Arc<ExpectNodeId>,
        /// The NodeId dialled.
        expected: NodeId,
    },
    /// Inbound, in its handshake.
    Accepting,
    /// Up: the manager knows it (it got `ConnectionUp`).
    Established {
        /// The peer's NodeId, proven in the handshake.
        peer: NodeId,
    },
    /// Given up by this node (its deadline passed, the wrong peer) or
    /// lost, its attempt answered; quinn drains it.
    Closing,
}

/// A QUIC connection and its streams.
pub(super) struct QuicConn {
    pub(super) handle: ConnectionHandle,
    pub(super) conn: quinn_proto::Connection,
    pub(super) state: ConnState,
    pub(super) streams: BTreeMap<quinn_proto::StreamId, Stream>,
    /// Application streams open on it, in either direction.
    pub(super) app_streams: usize,
    /// The use of the connection its application streams hold while any
    /// is open.
    pub(super) lease: Option<LeaseId>,
    /// Bytes of headers and frames begun and not yet complete in its
    /// streams' receive buffers.
    pub(super) partial_bytes: usize,
    /// On a relayed path: the use of the relay's connection it holds.
    pub(super) relay_lease: Option<LeaseId>,
}

impl QuicConn {
    pub(super) fn new(
        handle: ConnectionHandle,
        conn: quinn_proto::Connection,
        state: ConnState,
    ) -> Self {
        Self {
            handle,
            conn,
            state,
            streams: BTreeMap::new(),
            app_streams: 0,
            lease: None,
            partial_bytes: 0,
            relay_lease: None,
        }
    }

    /// Whether the connection is up (the manager may use it).
    pub(super) fn is_up(&self) -> bool {
        matches!(self.state, ConnState::Established { .. })
    }

    /// The peer of an up connection.
    pub(super) fn peer(&self) -> Option<NodeId> {
        match self.state {
            ConnState::Established { peer } => Some(peer),
            _ => None,
        }
    }
}

/// Datagrams one connection hands the driver per drive, at most (quinn's
/// connection driver stops at 20 too, `MAX_TRANSMIT_DATAGRAMS`); the next
/// poll after they are sent drives again.
const MAX_DATAGRAMS_PER_DRIVE: usize = 20;

impl Node {
    /// A connection, if it is up (the manager knows it).
    pub(super) fn up_conn(&mut self, conn: ConnId) -> Option<&mut QuicConn> {
        self.conns.get_mut(&conn).filter(|c| c.is_up())
    }

    /// Whether a connection to `address` is up.
    pub(super) fn connected_to(&self, address: SocketAddr) -> bool {
        self.conns
            .values()
            .any(|c| c.is_up() && c.conn.remote_address() == address)
    }

    /// An outbound connection's handshake took too long: it is closed and
    /// its attempt fails.
    pub(super) fn on_connect_deadline(&mut self, id: ConnId) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match c.state {
            ConnState::Dialing { attempt, .. } => {
                c.conn
                    .close(now.mono, VarInt::from_u32(0), bytes::Bytes::new());
                c.state = ConnState::Closing;
                self.manager.handle(
                    now,
                    Event::ConnectFailed {
                        attempt,
                        failure: ConnectFailure::Timeout,
                    },
                );
            }
            // An inbound handshake not done in time: closed, it leaves
            // every table once quinn has drained it.
            ConnState::Accepting => {
                c.conn
                    .close(now.mono, VarInt::from_u32(0), bytes::Bytes::new());
                c.state = ConnState::Closing;
                self.admission.stats.handshakes_timed_out += 1;
            }
            // The deadline is stopped when the handshake ends.
            ConnState::Established { .. } | ConnState::Closing => {}
        }
    }

    /// Moves one connection along; true if anything happened.
    pub(super) fn drive_conn(&mut self, id: ConnId) -> bool {
        let now = self.now;
        let mut progressed = false;
        let mut events = Vec::new();
        let mut transmits = Vec::new();
        let mut drained = false;
        let mut up = false;
        let mut spent = false;
        if let Some(c) = self.conns.get_for_drive(&id) {
            self.admission.stats.connections_driven += 1;
            up = c.is_up();
            while let Some(event) = c.conn.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(reply) = self.endpoint.handle_event(c.handle, event) {
                    c.conn.handle_event(reply);
                }
            }
            while let Some(event) = c.conn.poll() {
                events.push(event);
            }
            // A handshake's datagrams go one per transmit: a hole punch
            // may hold them back one by one.
            let max = if up { self.max_segments } else { 1 };
            let mut datagrams = 0;
            loop {
                if datagrams >= MAX_DATAGRAMS_PER_DRIVE {
                    // The rest after these are sent: packets go out while
                    // they are still in the cache they were sealed in, and
                    // the node's queue holds a few, not a congestion window.
                    self.send_budget_spent = true;
                    spent = true;
                    break;
                }
                // Each transmit's own buffer becomes its contents: no copy.
                let mut buf = Vec::new();
                let Some(t) = c.conn.poll_transmit(now.mono, max, &mut buf) else {
                    break;
                };
                buf.truncate(t.size);
                datagrams += t.segment_size.map_or(1, |s| t.size.div_ceil(s.max(1)));
                transmits.push((t.destination, buf, t.segment_size));
            }
        }
        for (destination, contents, segment_size) in transmits {
            progressed = true;
            if up {
                self.send_segments(destination, contents, segment_size);
            } else {
                self.transmit_vec(destination, contents);
            }
        }
        for event in events {
            progressed = true;
            self.on_conn_event(id, event);
        }
        if drained {
            self.forget_conn(id);
            progressed = true;
        } else {
            if spent {
                self.conns.mark_dirty(id);
            }
            self.conns.refresh_deadline(id);
        }
        progressed
    }

    fn on_conn_event(&mut self, id: ConnId, event: quinn_proto::Event) {
        match event {
            quinn_proto::Event::Connected => self.on_connected(id),
            quinn_proto::Event::ConnectionLost { reason } => self.on_lost(id, reason),
            quinn_proto::Event::Stream(StreamEvent::Opened { dir }) => {
                let mut accepted = Vec::new();
                if let Some(c) = self.conns.get_mut(&id) {
                    while let Some(stream) = c.conn.streams().accept(dir) {
                        c.streams.insert(stream, Stream::new(Role::Header));
                        accepted.push(stream);
                    }
                }
                // Data that came with the opening raises no Readable event of its own.
                for stream in accepted {
                    self.on_readable(id, stream);
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Readable { id: stream }) => {
                self.on_readable(id, stream)
            }
            quinn_proto::Event::Stream(StreamEvent::Writable { id: stream }) => {
                let app = match self.conns.get_mut(&id) {
                    Some(c) => {
                        flush(c, stream);
                        c.streams.get(&stream).is_some_and(|s| s.role == Role::App)
                    }
                    None => false,
                };
                if app {
                    self.app_ready(AppEvent::Writable(StreamHandle::new(id, stream)));
                }
                self.after_flush(id, stream);
            }
            quinn_proto::Event::Stream(StreamEvent::Stopped {
                id: stream,
                error_code,
            }) => {
                let app = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.streams.get(&stream))
                    .and_then(|s| s.app.as_ref())
                    .map(|a| a.send_open);
                let handle = StreamHandle::new(id, stream);
                match app {
                    // The writer learns the code from its next write.
                    Some(true) => self.app_ready(AppEvent::Writable(handle)),
                    // Finished, with bytes still held back: they will
                    // never be taken.
                    Some(false) => self.abandon_send(handle, error_code),
                    // keynode's own: nothing more goes on it. Reset, so
                    // that quinn frees our sending side too.
                    None => self.abandon_stream(id, stream, VarInt::from_u32(0)),
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Available { dir }) => {
                let dir = match dir {
                    Dir::Bi => StreamDir::Bi,
                    Dir::Uni => StreamDir::Uni,
                };
                self.app_ready(AppEvent::StreamsAvailable { conn: id, dir });
            }
            quinn_proto::Event::DatagramReceived => self.on_datagrams(id),
            // A finished stream acknowledged, datagrams unblocked, a
            // handshake's data: nothing to do.
            _ => {}
        }
    }

    fn on_connected(&mut self, id: ConnId) {
        let now = self.now;
        self.timers.cancel(NetTimer::ConnectDeadline(id));
        let inbound = matches!(
            self.conns.get(&id).map(|c| &c.state),
            Some(ConnState::Accepting)
        );
        if inbound && !self.admission.came_up(&self.net, id) {
            // An unvalidated handshake from a source over its bound.
            self.close_with(id, CloseReason::ConnectionLimit);
            return;
        }
        if !inbound {
            if self.up_count() >= self.max_connections && !self.peer_has_another(id) {
                // Our own dial at the limit: room is made by closing the
                // least useful inbound connection, not by refusing it. Not
                // for a second connection to a node already connected (the
                // manager's dial-back of an inbound peer): that one would
                // evict its own peer's inbound connection, or another's, and
                // so turn inbound peers into outbound ones past every
                // inbound bound. The manager closes it once it has proved
                // the address; until then the node holds at most
                // `Config::max_dial_backs` over its limit.
                self.evict_inbound();
            }
            self.admission.dialed_up(id);
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let (attempt, expected) = match c.state {
            ConnState::Dialing {
                attempt, expected, ..
            } => (Some(attempt), Some(expected)),
            ConnState::Accepting => (None, None),
            // A connection given up on is not taken up again.
            ConnState::Established { .. } | ConnState::Closing => return,
        };
        let peer = c
            .conn
            .crypto_session()
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|certs| certs.first().and_then(|cert| node_id_of(cert).ok()));
        let remote = c.conn.remote_address();
        match peer {
            Some(peer) if expected.is_none_or(|e| e == peer) => {
                c.state = ConnState::Established { peer };
                self.relay_conn_up(id, remote);
                self.manager.handle(
                    now,
                    Event::ConnectionUp {
                        conn: id,
                        peer,
                        remote,
                        attempt,
                    },
                );
                // The first thing on the connection: where this node sees
                // the peer (its NAT classification rests on such words).
                self.tell_observed(id);
            }
            found => {
                let code = CloseReason::WrongNodeId.code();
                c.conn.close(
                    now.mono,
                    VarInt::from_u32(code.code()),
                    bytes::Bytes::from_static(code.reason().as_bytes()),
                );
                c.state = ConnState::Closing;
                if let Some(attempt) = attempt {
                    let failure = match found {
                        Some(found) => ConnectFailure::WrongNodeId { found },
                        None => ConnectFailure::NoPeerCertificate,
                    };
                    self.manager
                        .handle(now, Event::ConnectFailed { attempt, failure });
                }
            }
        }
    }

    fn on_lost(&mut self, id: ConnId, reason: ConnectionError) {
        let now = self.now;
        self.timers.cancel(NetTimer::ConnectDeadline(id));
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match std::mem::replace(&mut c.state, ConnState::Closing) {
            ConnState::Dialing {
                attempt,
                verifier,
                expected,
            } => {
                let found = verifier.found.lock().ok().and_then(|f| *f);
                let failure = match found {
                    Some(found) if found != expected => ConnectFailure::WrongNodeId { found },
                    _ => match reason {
                        ConnectionError::TimedOut => ConnectFailure::Timeout,
                        other => ConnectFailure::Transport(other),
                    },
                };
                self.manager
                    .handle(now, Event::ConnectFailed { attempt, failure });
            }
            ConnState::Established { .. } => {
                self.fail_streams(id);
                self.app_ready(AppEvent::ConnectionLost { conn: id });
                self.manager
                    .handle(now, Event::ConnectionClosed { conn: id });
            }
            ConnState::Accepting | ConnState::Closing => {}
        }
    }

    /// Closes a connection that is not up (the manager does not know it).
    fn close_with(&mut self, id: ConnId, reason: CloseReason) {
        let code = reason.code();
        let now = self.now;
        if let Some(c) = self.conns.get_mut(&id) {
            c.conn.close(
                now.mono,
                VarInt::from_u32(code.code()),
                bytes::Bytes::from_static(code.reason().as_bytes()),
            );
            c.state = ConnState::Closing;
        }
    }

    /// Whether the node dialled by outbound connection `id` already has
    /// another connection up (a scan: only at the connection limit).
    fn peer_has_another(&self, id: ConnId) -> bool {
        let Some(ConnState::Dialing { expected, .. }) = self.conns.get(&id).map(|c| &c.state)
        else {
            return false;
        };
        let expected = *expected;
        self.conns
            .iter()
            .any(|(other, c)| *other != id && c.peer() == Some(expected))
    }

    /// Connections up, inbound and outbound.
    fn up_count(&self) -> usize {
        let s = self.admission.stats();
        s.inbound_up + s.outbound_up
    }

    /// A drained connection is gone for good.
    fn forget_conn(&mut self, id: ConnId) {
        self.admission.remove(id);
        self.fail_streams(id);
        if let Some(c) = self.conns.remove(&id) {
            self.by_handle.remove(&c.handle.0);
            let remote = c.conn.remote_address();
            if let Some(lease) = c.relay_lease {
                self.manager
                    .handle(self.now, Event::ConnectionReleased { lease });
            }
            self.relay_conn_gone(id, remote);
            if c.is_up() {
                self.app_ready(AppEvent::ConnectionLost { conn: id });
                self.manager
                    .handle(self.now, Event::ConnectionClosed { conn: id });
            }
        }
        self.timers.cancel(NetTimer::ConnectDeadline(id));
    }
}
