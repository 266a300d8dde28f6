//! A [`Node`] as a relay and as a relay's client: the frames it forwards,
//! the requests that open pairs and reservations, and its own connections
//! over relayed paths (see `relay.rs` for the design).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use super::node::Node;
use super::relay::{self, FROM_PEER, RELAY_HEADER_LEN, RelayServe, Side, TO_PEER, is_relayed};
use crate::id::NodeId;
use crate::manager::{AttemptId, ConnId, ConnectFailure, Event};
use crate::nat::NatClass;
use crate::wire::{RefusalReason, Request, Response};

impl Node {
    /// Whether this node relays for others now: its
    /// [`RelayConfig::serve`](relay::RelayConfig::serve) setting, and for
    /// [`RelayServe::WhenPublic`] its NAT class.
    pub fn relaying(&self) -> bool {
        match self.net.relay.serve {
            RelayServe::Always => true,
            RelayServe::WhenPublic => self.manager.nat_class() == NatClass::Public,
            RelayServe::Never => false,
        }
    }

    /// A datagram that is a relay frame is taken here (`None`); anything
    /// else is given back, for QUIC.
    pub(super) fn take_relay_frame(
        &mut self,
        from: SocketAddr,
        bytes: BytesMut,
    ) -> Option<BytesMut> {
        let Some((tag, node)) = relay::decode(&bytes) else {
            return Some(bytes);
        };
        let now = self.now.mono;
        if tag == TO_PEER {
            if !self.relaying() {
                self.relay.stats.dropped_no_pair += 1;
                return None;
            }
            let forward = self
                .relay
                .forward(now, &self.net.relay, from, node, bytes.len())?;
            let packet = bytes.get(RELAY_HEADER_LEN..).unwrap_or_default();
            let frame = relay::encode(FROM_PEER, &forward.source, packet);
            self.send_raw(forward.to, frame);
            return None;
        }
        debug_assert_eq!(tag, FROM_PEER);
        // Only from a node this node is connected to: a relay it uses.
        if self.conn_at(from).is_none() {
            self.relay.stats.dropped_unexpected += 1;
            return None;
        }
        let Some(mapped) = self.paths.mapped(from, node, self.net.relay.max_paths) else {
            self.relay.stats.dropped_unexpected += 1;
            return None;
        };
        let mut packet = bytes;
        packet.advance(RELAY_HEADER_LEN);
        self.handle_quic(mapped, packet);
        None
    }

    /// A datagram to a mapped address goes to its relay as a frame; one
    /// whose path is gone is dropped (QUIC resends, or times out).
    pub(super) fn send_relayed(
        &mut self,
        destination: SocketAddr,
        contents: Vec<u8>,
        segment: Option<usize>,
    ) {
        let Some((relay, peer)) = self.paths.route(&destination) else {
            return;
        };
        let size = segment.unwrap_or(contents.len()).max(1);
        for packet in contents.chunks(size) {
            let frame = relay::encode(TO_PEER, &peer, packet);
            self.send_raw(relay, frame);
        }
    }

    /// The manager's `ConnectRelayed`: a QUIC connection to `node_id` at
    /// its mapped address through the relay on connection `via`.
    pub(super) fn connect_relayed(
        &mut self,
        attempt: AttemptId,
        node_id: NodeId,
        via: ConnId,
        timeout: Duration,
    ) {
        let relay = self
            .up_conn(via)
            .map(|c| c.conn.remote_address())
            .filter(|a| !is_relayed(a));
        let mapped =
            relay.and_then(|relay| self.paths.mapped(relay, node_id, self.net.relay.max_paths));
        match mapped {
            Some(mapped) => self.connect(attempt, node_id, mapped, timeout),
            None => self.manager.handle(
                self.now,
                Event::ConnectFailed {
                    attempt,
                    failure: ConnectFailure::NoRelayPath,
                },
            ),
        }
    }

    /// A relay request on connection `conn`, answered here (the relay is
    /// the net layer's); `None` for every other request.
    pub(super) fn serve_relay(&mut self, conn: ConnId, body: &Request) -> Option<Response> {
        if !matches!(body, Request::RelayOpen { .. } | Request::Reserve { .. }) {
            return None;
        }
        let Some(requester) = self.relay_side(conn) else {
            return Some(Response::Refused(RefusalReason::NotConnected));
        };
        if !self.relaying() {
            self.relay.stats.refused_not_relaying += 1;
            return Some(Response::Refused(RefusalReason::NotRelaying));
        }
        let now = self.now.mono;
        let response = match *body {
            Request::RelayOpen { target } => {
                let target_side = self
                    .manager
                    .primary_conn(&target)
                    .filter(|_| target != requester.node)
                    .and_then(|c| self.relay_side(c));
                let Some(target_side) = target_side else {
                    return Some(Response::Refused(RefusalReason::NotConnected));
                };
                let manager = &mut self.manager;
                let opened =
                    self.relay
                        .open_pair(now, &self.net.relay, requester, target_side, &mut |c| {
                            manager.lease_for_streams(c)
                        });
                match opened {
                    Ok(()) => Response::RelayOpened {
                        target_address: target_side.address,
                        target_class: self.relay.reserved_class(now, &target),
                    },
                    Err(reason) => Response::Refused(reason),
                }
            }
            Request::Reserve { class } => {
                let manager = &mut self.manager;
                let reserved =
                    self.relay
                        .reserve(now, &self.net.relay, requester, class, &mut |c| {
                            manager.lease_for_streams(c)
                        });
                match reserved {
                    Ok(lifetime) => Response::Reserved {
                        lifetime_secs: u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
                    },
                    Err(reason) => Response::Refused(reason),
                }
            }
            _ => return None,
        };
        self.release_relay_leases();
        Some(response)
    }

    /// The side of a pair an up, direct connection is.
    fn relay_side(&self, conn: ConnId) -> Option<Side> {
        let c = self.conns.get(&conn).filter(|c| c.is_up())?;
        let address = c.conn.remote_address();
        if is_relayed(&address) {
            // No relaying over relays.
            return None;
        }
        Some(Side {
            node: c.peer()?,
            conn,
            address,
        })
    }

    /// Hands the uses closed pairs and reservations held back to the manager.
    pub(super) fn release_relay_leases(&mut self) {
        let now = self.now;
        for lease in std::mem::take(&mut self.relay.released) {
            self.manager
                .handle(now, Event::ConnectionReleased { lease });
        }
    }

    /// A connection came up: frames from its address are a relay's.
    pub(super) fn relay_conn_up(&mut self, conn: ConnId, remote: SocketAddr) {
        if is_relayed(&remote) {
            // The connection runs over a relay: it holds a use of the
            // relay's connection, so that neither side's manager closes
            // that one as idle under it.
            let relay = self.paths.route(&remote).map(|(relay, _)| relay);
            let relay_conn = relay.and_then(|r| self.conn_at(r));
            let lease = relay_conn.and_then(|c| self.manager.lease_for_streams(c));
            if let Some(c) = self.conns.get_mut(&conn) {
                c.relay_lease = lease;
            }
        } else {
            self.by_remote.insert((remote, conn));
        }
    }

    /// An up, direct connection from `remote` (a peer may hold several).
    fn conn_at(&self, remote: SocketAddr) -> Option<ConnId> {
        self.by_remote
            .range((remote, ConnId(0))..=(remote, ConnId(u64::MAX)))
            .next()
            .map(|(_, c)| *c)
    }

    /// A connection is gone: its relay state with it.
    pub(super) fn relay_conn_gone(&mut self, conn: ConnId, remote: SocketAddr) {
        if self.by_remote.remove(&(remote, conn)) && self.conn_at(remote).is_none() {
            self.paths.forget_relay(remote);
        }
        self.relay.forget_conn(conn);
        self.release_relay_leases();
    }

    /// What the relay and its clients counted.
    pub fn relay_stats(&self) -> relay::RelayStats {
        relay::RelayStats {
            paths: self.paths.len() as u64,
            ..self.relay.stats()
        }
    }

    /// When this node relays for others (`NetConfig::relay.serve`).
    pub fn relay_serve(&self) -> RelayServe {
        self.net.relay.serve
    }
}
