//! How the manager's connections are made, used and closed: dials (with
//! hostname resolution), a connection up or failed, the idle time to live,
//! leases (the spec's acquireConnection uses), and requests sent on them.
//! Every new dialled connection becomes a blocking `set_node`; an inbound
//! one does too when its peer is a contact at that address already, and is
//! otherwise dialled back first (the manager's module docs: who becomes a
//! contact).

use std::net::SocketAddr;
use std::time::Duration;

use super::dials::{Attempt, Resolving};
use super::waits::Wait;
use super::{
    AttemptId, Command, ConnId, ConnectFailure, Input, LeaseId, NodeManager, OpId, Parent,
    RequestId, ResolveId, RunState, Timer,
};
use crate::address::{Host, NodeAddress};
use crate::conn_error::CloseReason;
use crate::contact::{ContactMode, NodeAddressScopes, NodeContactAddressData};
use crate::id::NodeId;
use crate::manager::conns::Conn;
use crate::manager::observations::Observation;
use crate::metrics::{ConnKind, Direction, HandshakeFailure};
use crate::wire::Request;

impl NodeManager {
    /// A new attempt, in the table and waited for by `op`.
    fn new_attempt(
        &mut self,
        op: OpId,
        node_id: NodeId,
        mode: ContactMode,
        timeout: Duration,
        relayed: Option<super::dials::RelayedVia>,
    ) -> AttemptId {
        let attempt = AttemptId(self.fresh_id());
        self.dials.insert(
            attempt,
            Attempt {
                node_id,
                mode,
                timeout,
                relayed,
                started: self.now.mono,
            },
        );
        self.waits.register(Wait::Attempt(attempt), op);
        attempt
    }

    /// Asks the driver to connect to `address` (resolving a hostname first).
    pub(super) fn dial(
        &mut self,
        op: OpId,
        node_id: NodeId,
        address: &NodeAddress,
        mode: ContactMode,
        timeout: Duration,
    ) -> AttemptId {
        let attempt = self.new_attempt(op, node_id, mode, timeout, None);
        match &address.host {
            Host::Ip(ip) => self.connect(attempt, SocketAddr::new(*ip, address.port)),
            Host::Name(hostname) => {
                let resolve = ResolveId(self.fresh_id());
                self.dials.resolving(
                    resolve,
                    Resolving {
                        attempt,
                        hostname: hostname.clone(),
                        port: address.port,
                    },
                );
                self.commands.push_back(Command::Resolve {
                    resolve,
                    hostname: hostname.clone(),
                });
            }
        }
        attempt
    }

    /// Asks the net layer to connect to `node_id` through the relay on
    /// connection `via`, as `relayed` says.
    pub(super) fn dial_relayed(
        &mut self,
        op: OpId,
        node_id: NodeId,
        via: ConnId,
        relayed: super::dials::RelayedVia,
        timeout: Duration,
    ) -> AttemptId {
        let attempt = self.new_attempt(op, node_id, ContactMode::Relay, timeout, Some(relayed));
        self.stats.connects += 1;
        self.commands.push_back(Command::ConnectRelayed {
            attempt,
            node_id,
            via,
            timeout,
        });
        attempt
    }

    fn connect(&mut self, attempt: AttemptId, address: SocketAddr) {
        let Some(a) = self.dials.get(attempt) else {
            return;
        };
        self.stats.connects += 1;
        self.commands.push_back(Command::Connect {
            attempt,
            node_id: a.node_id,
            address,
            mode: a.mode,
            timeout: a.timeout,
        });
    }

    pub(super) fn on_resolved(
        &mut self,
        resolve: ResolveId,
        result: Result<Vec<std::net::IpAddr>, std::io::ErrorKind>,
    ) {
        let Some(Resolving {
            attempt,
            hostname,
            port,
        }) = self.dials.resolved(resolve)
        else {
            self.stats.stale_events += 1;
            return;
        };
        // The first address is tried; the resolver orders them by preference.
        match result.map(|ips| ips.first().copied()) {
            Ok(Some(ip)) => self.connect(attempt, SocketAddr::new(ip, port)),
            Ok(None) => self.on_connect_failed(attempt, ConnectFailure::NoAddresses { hostname }),
            Err(kind) => {
                self.on_connect_failed(attempt, ConnectFailure::Resolve { hostname, kind })
            }
        }
    }

    pub(super) fn on_connect_failed(&mut self, attempt: AttemptId, failure: ConnectFailure) {
        if self.dials.get(attempt).is_some() {
            self.count_handshake_failure(&failure);
        }
        match self.dials.remove(attempt) {
            Some(_) => self.input_wait(
                Wait::Attempt(attempt),
                Input::ConnectFailed { attempt, failure },
            ),
            None => self.stats.stale_events += 1,
        }
    }

    pub(super) fn on_connection_up(
        &mut self,
        conn: ConnId,
        peer: NodeId,
        remote: SocketAddr,
        attempt: Option<AttemptId>,
    ) {
        if self.state != RunState::Running {
            return;
        }
        let attempt = attempt.and_then(|a| self.dials.remove(a).map(|x| (a, x)));
        if let Some((id, a)) = &attempt {
            // The driver checks the certificate; this guards against a driver bug.
            if a.node_id != peer {
                self.commands.push_back(Command::CloseConnection {
                    conn,
                    code: CloseReason::WrongNodeId.code(),
                });
                self.metrics
                    .handshakes_failed
                    .inc(HandshakeFailure::WrongNodeId);
                self.input_wait(
                    Wait::Attempt(*id),
                    Input::ConnectFailed {
                        attempt: *id,
                        failure: ConnectFailure::WrongNodeId { found: peer },
                    },
                );
                return;
            }
        }
        if peer == self.graph.own_node_id() || self.conns.len() >= self.config.max_connections {
            self.stats.connections_refused += 1;
            let reason = if peer == self.graph.own_node_id() {
                CloseReason::OwnNodeId
            } else {
                CloseReason::ConnectionLimit
            };
            self.commands.push_back(Command::CloseConnection {
                conn,
                code: reason.code(),
            });
            if let Some((id, _)) = attempt {
                self.metrics
                    .handshakes_failed
                    .inc(HandshakeFailure::Refused);
                self.input_wait(
                    Wait::Attempt(id),
                    Input::ConnectFailed {
                        attempt: id,
                        failure: ConnectFailure::Declined(reason),
                    },
                );
            }
            return;
        }
        let relayed = crate::net::is_relayed(&remote);
        let mode = match &attempt {
            Some((_, a)) => a.mode,
            None if relayed => ContactMode::Relay,
            // In through the hole this node punched when signalled.
            None if self.relay.was_punched(remote, self.now.mono) => ContactMode::Signal,
            None => ContactMode::Direct,
        };
        let direction = if attempt.is_some() {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        self.metrics
            .connections_opened
            .inc(ConnKind { mode, direction });
        if let Some((_, a)) = &attempt {
            let elapsed = self.now.mono.saturating_duration_since(a.started);
            self.metrics.time_to_connect.observe_duration(elapsed);
            if mode == ContactMode::Signal {
                self.metrics.punches_succeeded += 1;
            }
        }
        self.observe(Observation::ConnectionUp {
            node_id: peer,
            remote,
            mode,
            direction,
        });
        // Before this one is in the table: a dialled connection already up.
        let dialled_before = self.conns.has_outbound(&peer);
        self.conns.insert(
            conn,
            Conn {
                peer,
                remote,
                mode,
                leases: 0,
                dialled: attempt.is_some(),
                relayed: attempt.as_ref().and_then(|(_, a)| a.relayed),
            },
        );
        self.arm_idle(conn);
        if !relayed {
            // A relayed connection to the peer is no longer its primary:
            // its shorter time to live starts (it ends once unused).
            let superseded = self.conns.relayed_to(&peer);
            if !superseded.is_empty() {
                self.metrics.relay_upgrades_succeeded += 1;
            }
            for old in superseded {
                self.arm_idle(old);
            }
        }
        // Where the peer is recorded as a contact, if anywhere.
        let record_at = if relayed {
            if attempt.is_some() {
                self.arm_upgrades();
            }
            // A mapped address is no address of the peer's: what is
            // recorded is where the relay saw it (a dialled one's), and an
            // inbound one is not dialled back (it came through the relay
            // because nothing else reaches it).
            attempt
                .as_ref()
                .and_then(|(_, a)| a.relayed)
                .map(|r| NodeAddress::from(r.seen_at))
        } else {
            let address = NodeAddress::from(remote);
            let verified = attempt.is_some()
                || self
                    .graph
                    .get(&peer)
                    .is_some_and(|c| c.get(&address).is_some())
                || self
                    .graph
                    .get_pending(&peer)
                    .is_some_and(|p| p.address == address);
            if !verified && !dialled_before {
                // (A peer this node dialled was recorded by that connection;
                // dialling it back would answer its own dial-back in turn.)
                self.dial_back(peer, address.clone());
            }
            verified.then_some(address)
        };
        if let Some(address) = record_at {
            // Spec: every new connection leads to set_node(.., block = true);
            // here only those at an address known to take connections.
            let data = NodeContactAddressData {
                mode,
                connected_time: self.now.unix_secs(),
                scopes: NodeAddressScopes::GLOBAL,
            };
            let _op = self.set_node_inner(peer, address, data, true, false, None, Parent::Internal);
        }
        if let Some((id, _)) = attempt {
            self.input_wait(
                Wait::Attempt(id),
                Input::Connected {
                    attempt: id,
                    conn,
                    remote,
                },
            );
        }
    }

    pub(super) fn on_connection_closed(&mut self, conn: ConnId) {
        if let Some(closed) = self.conns.remove(conn) {
            self.observe_closed(&closed);
            self.forget_observation(conn);
            self.timers.cancel(Timer::ConnIdle(conn));
            // Another connection to the node may now be its primary one, with
            // the primary's longer time to live.
            if let Some((primary, _)) = self.conns.primary(&closed.peer) {
                self.arm_idle(primary);
            }
            self.forget_signal_source(&closed.peer);
        }
    }

    /// Counts a kept connection's end and tells a watcher.
    fn observe_closed(&mut self, closed: &Conn) {
        let direction = if closed.dialled {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let mode = closed.mode;
        self.metrics
            .connections_closed
            .inc(ConnKind { mode, direction });
        self.observe(Observation::ConnectionDown {
            node_id: closed.peer,
            remote: closed.remote,
            mode,
            direction,
        });
    }

    fn count_handshake_failure(&mut self, failure: &ConnectFailure) {
        let reason = match failure {
            ConnectFailure::Timeout => HandshakeFailure::Timeout,
            ConnectFailure::WrongNodeId { .. } => HandshakeFailure::WrongNodeId,
            ConnectFailure::Resolve { .. } | ConnectFailure::NoAddresses { .. } => {
                HandshakeFailure::Resolve
            }
            _ => HandshakeFailure::Transport,
        };
        self.metrics.handshakes_failed.inc(reason);
    }

    /// A node with no connection left to us sends us no signal requests:
    /// its bucket goes once it has refilled (see `SignalLimiter`).
    fn forget_signal_source(&mut self, peer: &NodeId) {
        if self.conns.primary(peer).is_none() {
            self.relay.limiter.forget_if_full(peer, self.now.mono);
        }
    }

    /// The idle time to live of a connection: longer for a node's primary
    /// connection, the more so the closer its bucket.
    fn idle_ttl(&self, conn: ConnId) -> Duration {
        let base = self.config.connection_idle_ttl;
        let Some(c) = self.conns.get(conn) else {
            return base;
        };
        if !self.conns.is_primary(conn) {
            return base;
        }
        let bucket = self
            .graph
            .bucket_index(&c.peer)
            .map_or(255.0, |b| f64::from(b.get()));
        base + self
            .config
            .connection_primary_ttl_bonus
            .mul_f64(1.0 - bucket / 255.0)
    }

    pub(super) fn arm_idle(&mut self, conn: ConnId) {
        if self.conns.get(conn).is_some_and(|c| c.leases == 0) {
            let at = self.now.mono + self.idle_ttl(conn);
            self.timers.set(Timer::ConnIdle(conn), at);
        }
    }

    pub(super) fn on_idle(&mut self, conn: ConnId) {
        if self.conns.get(conn).is_some_and(|c| c.leases == 0) {
            if let Some(closed) = self.conns.remove(conn) {
                self.observe_closed(&closed);
                self.forget_signal_source(&closed.peer);
            }
            self.commands.push_back(Command::CloseConnection {
                conn,
                code: CloseReason::Idle.code(),
            });
        }
    }

    pub(super) fn on_released(&mut self, lease: LeaseId) {
        match self.conns.release(lease) {
            Some((conn, 0)) => self.arm_idle(conn),
            Some(_) => {}
            None => self.stats.stale_events += 1,
        }
    }

    /// Hands out a use of `conn`.
    pub(super) fn lease(&mut self, conn: ConnId) -> Option<(LeaseId, NodeId)> {
        let lease = LeaseId(self.fresh_id());
        self.conns.lease(conn, lease)?;
        self.timers.cancel(Timer::ConnIdle(conn));
        self.conns.get(conn).map(|c| (lease, c.peer))
    }

    /// A use of `conn` for the net layer's application streams, held while
    /// any is open (released with `Event::ConnectionReleased`).
    /// The primary connection to `node`, if one is up (for the net
    /// layer's relay).
    pub(crate) fn primary_conn(&self, node: &NodeId) -> Option<ConnId> {
        self.conns.primary(node).map(|(id, _)| id)
    }

    pub(crate) fn lease_for_streams(&mut self, conn: ConnId) -> Option<LeaseId> {
        self.lease(conn).map(|(lease, _)| lease)
    }

    pub(super) fn send_request(&mut self, op: OpId, conn: ConnId, body: Request) -> RequestId {
        let request = RequestId(self.fresh_id());
        self.waits.register(Wait::Request(request), op);
        self.stats.requests_sent += 1;
        self.commands.push_back(Command::SendRequest {
            conn,
            request,
            body,
            timeout: self.config.rpc_timeout,
        });
        // A use keeps the connection from idling out under the request.
        self.arm_idle(conn);
        request
    }
}
