//! Making room for the node's own dials: when an outbound connection comes
//! up with every one of `Config::max_connections` slots taken, the least
//! useful inbound connection is closed rather than our dial refused. Least
//! useful: an inbound connection carrying no request, claim exchange or
//! application stream and held by no lease, its peer preferably not in the
//! graph, the oldest first. If every inbound connection is in use, none is
//! closed (and the manager refuses the dial as before).

use std::collections::BTreeSet;

use quinn_proto::VarInt;

use super::app::AppEvent;
use super::connection::ConnState;
use super::node::Node;
use crate::conn_error::ConnectionErrorCode;
use crate::manager::{ConnId, Event};

impl Node {
    /// Closes the least useful inbound connection, if one is idle; true if
    /// one was closed.
    pub(super) fn evict_inbound(&mut self) -> bool {
        // Connections carrying a request, a peer's request or a claim
        // exchange (a scan of those routes: only when the node is full).
        let busy: BTreeSet<ConnId> = self
            .requests
            .values()
            .chain(self.peer_requests.values())
            .chain(self.claim_streams.values())
            .map(|(conn, _)| *conn)
            .collect();
        let graph = self.manager.graph();
        let victim = self
            .conns
            .iter()
            .filter(|(id, c)| {
                self.admission.is_inbound_up(**id)
                    && !busy.contains(id)
                    && c.app_streams == 0
                    && c.lease.is_none()
            })
            .filter_map(|(id, c)| c.peer().map(|peer| (graph.contains(&peer), *id)))
            .min();
        let Some((_, id)) = victim else {
            return false;
        };
        self.evict(id);
        true
    }

    /// Closes an inbound connection that is up and tells the manager it is
    /// gone; it stops counting against any admission bound.
    fn evict(&mut self, id: ConnId) {
        self.admission.evicted(id);
        self.close_up(id, ConnectionErrorCode::LimitExceeded);
    }

    /// Closes a connection that is up: its streams fail, the application
    /// and the manager are told it is gone, and it counts against no
    /// admission bound while it drains (a closed connection is no use, so
    /// it must not keep a slot another peer or our own dial could have).
    pub(super) fn close_up(&mut self, id: ConnId, code: ConnectionErrorCode) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.conn.close(
            now.mono,
            VarInt::from_u32(code.code()),
            bytes::Bytes::from_static(code.reason().as_bytes()),
        );
        c.state = ConnState::Closing;
        self.admission.closing(id);
        self.fail_streams(id);
        self.app_ready(AppEvent::ConnectionLost { conn: id });
        self.manager
            .handle(now, Event::ConnectionClosed { conn: id });
    }
}
