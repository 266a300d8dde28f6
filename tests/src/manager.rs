//! The manager level: every host runs a real `NodeManager`; the level plays
//! the driver for all of them (connections, requests, responses, the
//! store) over the virtual [`Network`](crate::Network). The loop that
//! carries out a node's commands is the core's simulated driver
//! (`keynode_core::testing::drain`); this level supplies its hooks.
//!
//! What a driver would do with QUIC is modelled message by message:
//! - a dial is a packet to the address the core chose; it must pass the
//!   destination's NAT ([`Network::accepts`](crate::Network::accepts)); a
//!   lost or filtered dial is resent after 1 s, 2 s, 4 s ... (QUIC resends
//!   its first packet) until the connect timeout, so a hole punch that
//!   opens the NAT a moment later still lets it in;
//! - requests and responses travel on connections: no NAT filter, the
//!   link's latency, lost packets resent;
//! - a host that goes offline stays in its peers' tables until QUIC's idle
//!   timeout closes the connections on both sides;
//! - store batches commit at once; mDNS finds nothing; hostnames do not resolve.

use crate::hash::FxHashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keynode_core::testing::{self, Connect, Driver, Outgoing};
use keynode_core::wire::{Request, Response};
use keynode_core::{
    AttemptId, Config, ConnId, ConnectFailure, ConnectionErrorCode, Event, FindOptions, Hostname,
    NodeAddress, NodeId, NodeManager, Now, OpError, OpId, OpValue, Output, PeerRequestId,
    RequestId, ResolveId, RpcFailure, SeedNodes, Snapshot,
};

use crate::lookup::{LookupOutcome, Lookups};
use crate::net::{HostId, NatType, Network, mix};
use crate::outputs::HostOutputs;
use crate::sim::{Ctx, Level, Sim};
use crate::trace::digest_bytes;

/// The first resend of a dial packet that got no answer.
const DIAL_RETRY: Duration = Duration::from_secs(1);

/// A dial in flight: QUIC's first packet, resent until the deadline.
#[derive(Clone, Debug)]
pub struct Dial {
    from: HostId,
    attempt: AttemptId,
    expected: NodeId,
    /// The address dialled.
    dst: SocketAddr,
    /// The dialler's public address towards `dst`.
    src: SocketAddr,
    sent: Duration,
    retry: Duration,
    deadline: Duration,
}

/// What travels in the manager-level simulation.
#[derive(Clone, Debug)]
pub enum Msg {
    /// A dial packet reaching the host at `dst`.
    Dial(Box<Dial>),
    /// The dialler resends a dial that got no answer.
    Redial(Box<Dial>),
    /// The handshake is done: the dialler learns its connection is up.
    Accepted {
        /// The host that accepted.
        from: HostId,
        /// The connection.
        conn: ConnId,
        /// The dialler's attempt.
        attempt: AttemptId,
        /// The accepting node.
        peer: NodeId,
        /// The address dialled.
        remote: SocketAddr,
        /// The dialler's connect deadline.
        deadline: Duration,
    },
    /// A request on a connection.
    Request {
        /// The sender.
        from: HostId,
        /// The connection.
        conn: ConnId,
        /// The sender's request id.
        request: RequestId,
        /// The request.
        body: Request,
        /// When the sender gives up (time since the start).
        deadline: Duration,
    },
    /// The response to a request.
    Response {
        /// The responder.
        from: HostId,
        /// The requester's id for it.
        request: RequestId,
        /// The response.
        body: Response,
        /// When the requester gives up.
        deadline: Duration,
    },
    /// The other side closed the connection.
    Closed {
        /// Who closed it.
        from: HostId,
        /// The connection.
        conn: ConnId,
    },
    /// An event from the host's own driver (a timeout, a failure noticed).
    Local(Event),
}

/// One connection between two hosts.
#[derive(Clone, Copy, Debug)]
struct Link {
    dialler: HostId,
    acceptor: HostId,
    /// One side went offline: nothing passes until the idle timeout closes it.
    broken: bool,
}

impl Link {
    fn other(&self, host: HostId) -> HostId {
        if host == self.dialler {
            self.acceptor
        } else {
            self.dialler
        }
    }
}

/// A request a host received and has not answered yet.
#[derive(Clone, Copy, Debug)]
struct Inbound {
    from: HostId,
    request: RequestId,
    deadline: Duration,
}

struct Host {
    node: Option<Box<NodeManager>>,
    id: NodeId,
}

/// Counters of the driver's work, over all hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Dial packets sent (first sends and resends).
    pub dial_packets: u64,
    /// Connections established.
    pub connections: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that timed out.
    pub request_timeouts: u64,
    /// Dials that failed (timed out or reached the wrong node).
    pub dial_failures: u64,
}

/// The manager level: the hosts' `NodeManager`s and the driver around them.
pub struct ManagerLevel {
    hosts: Vec<Host>,
    by_id: FxHashMap<NodeId, HostId>,
    links: FxHashMap<ConnId, Link>,
    next_conn: u64,
    inbound: FxHashMap<(HostId, PeerRequestId), Inbound>,
    next_peer_request: u64,
    /// The operations' results and the node events.
    pub outputs: HostOutputs,
    /// The lookups whose hops are measured.
    pub lookups: Lookups,
    /// The driver's counters.
    pub stats: DriverStats,
    seed: u64,
}

/// A simulation of `NodeManager`s.
pub type ManagerSim = Sim<ManagerLevel>;

impl ManagerLevel {
    /// An empty level; `seed` seeds every node's generator.
    pub fn new(seed: u64) -> Self {
        Self {
            hosts: Vec::new(),
            by_id: FxHashMap::default(),
            links: FxHashMap::default(),
            next_conn: 1,
            inbound: FxHashMap::default(),
            next_peer_request: 1,
            outputs: HostOutputs::default(),
            lookups: Lookups::default(),
            stats: DriverStats::default(),
            seed,
        }
    }

    /// The node of a host (`None` once it left).
    pub fn node(&self, host: HostId) -> Option<&NodeManager> {
        self.hosts.get(host.index())?.node.as_deref()
    }

    /// The NodeId of a host.
    pub fn node_id(&self, host: HostId) -> NodeId {
        self.hosts[host.index()].id
    }

    /// The host of a NodeId.
    pub fn host_of(&self, node_id: &NodeId) -> Option<HostId> {
        self.by_id.get(node_id).copied()
    }

    /// The number of hosts ever added.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host was added.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Whether the host's node runs (it did not leave).
    pub fn is_alive(&self, host: HostId) -> bool {
        self.node(host).is_some()
    }

    /// Connections open, counted once each.
    pub fn open_connections(&self) -> usize {
        self.links.len()
    }

    fn node_mut(&mut self, host: HostId) -> Option<&mut NodeManager> {
        self.hosts.get_mut(host.index())?.node.as_deref_mut()
    }

    fn at(ctx: &Ctx<'_, Msg>, deadline: Duration) -> Duration {
        deadline.saturating_sub(ctx.elapsed)
    }

    /// Feeds an event to a host's node and drains its commands.
    fn handle(&mut self, ctx: &mut Ctx<'_, Msg>, host: HostId, event: Event) {
        let now = ctx.now;
        if let Some(node) = self.node_mut(host) {
            node.handle(now, event);
            self.pump(ctx, host);
        }
    }

    /// Carries out everything a host's node asks for (the core's one
    /// driver loop, with this level's hooks: [`Pump`]).
    pub(crate) fn pump(&mut self, ctx: &mut Ctx<'_, Msg>, host: HostId) {
        ctx.touch(host);
        testing::drain(&mut Pump { level: self, ctx }, host);
    }

    fn send_dial(&mut self, ctx: &mut Ctx<'_, Msg>, mut dial: Box<Dial>) {
        self.stats.dial_packets += 1;
        dial.src = ctx.net.outbound(dial.from, dial.dst);
        dial.sent = ctx.elapsed;
        match ctx.net.host_of(dial.dst) {
            Some(to) if to != dial.from && !ctx.net.lost(ctx.rng) => {
                let delay = ctx.net.latency(dial.from, to);
                ctx.schedule(delay, to, Msg::Dial(dial));
            }
            _ => self.dial_unanswered(ctx, dial),
        }
    }

    /// A dial packet got no answer: resend it, or fail at the deadline.
    fn dial_unanswered(&mut self, ctx: &mut Ctx<'_, Msg>, mut dial: Box<Dial>) {
        let resend_at = dial.sent + dial.retry;
        if resend_at < dial.deadline {
            dial.retry *= 2;
            let delay = resend_at.saturating_sub(ctx.elapsed);
            let from = dial.from;
            ctx.schedule(delay, from, Msg::Redial(dial));
        } else {
            self.stats.dial_failures += 1;
            let delay = Self::at(ctx, dial.deadline);
            ctx.schedule(
                delay,
                dial.from,
                Msg::Local(Event::ConnectFailed {
                    attempt: dial.attempt,
                    failure: ConnectFailure::Timeout,
                }),
            );
        }
    }

    fn accept(&mut self, ctx: &mut Ctx<'_, Msg>, to: HostId, dial: Box<Dial>) {
        if !self.is_alive(to) || !ctx.net.accepts(to, dial.dst, dial.src) {
            return self.dial_unanswered(ctx, dial);
        }
        let latency = ctx.net.latency(dial.from, to);
        let found = self.node_id(to);
        if found != dial.expected {
            self.stats.dial_failures += 1;
            ctx.schedule(
                latency,
                dial.from,
                Msg::Local(Event::ConnectFailed {
                    attempt: dial.attempt,
                    failure: ConnectFailure::WrongNodeId { found },
                }),
            );
            return;
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.stats.connections += 1;
        self.links.insert(
            conn,
            Link {
                dialler: dial.from,
                acceptor: to,
                broken: false,
            },
        );
        let peer = self.node_id(dial.from);
        self.handle(
            ctx,
            to,
            Event::ConnectionUp {
                conn,
                peer,
                remote: dial.src,
                attempt: None,
            },
        );
        ctx.schedule(
            latency,
            dial.from,
            Msg::Accepted {
                from: to,
                conn,
                attempt: dial.attempt,
                peer: found,
                remote: dial.dst,
                deadline: dial.deadline,
            },
        );
    }

    fn timeout_at(ctx: &mut Ctx<'_, Msg>, host: HostId, request: RequestId, deadline: Duration) {
        let delay = Self::at(ctx, deadline);
        ctx.schedule(
            delay,
            host,
            Msg::Local(Event::ResponseReceived {
                request,
                result: Err(RpcFailure::Timeout),
            }),
        );
    }

    fn send_request(
        &mut self,
        ctx: &mut Ctx<'_, Msg>,
        host: HostId,
        conn: ConnId,
        request: RequestId,
        body: Request,
        timeout: Duration,
    ) {
        self.stats.requests += 1;
        let deadline = ctx.elapsed + timeout;
        let Some(link) = self.links.get(&conn).copied() else {
            ctx.schedule(
                Duration::ZERO,
                host,
                Msg::Local(Event::ResponseReceived {
                    request,
                    result: Err(RpcFailure::ConnectionClosed),
                }),
            );
            return;
        };
        let to = link.other(host);
        if let Request::ClosestNodes { .. } | Request::Signal { .. } = &body {
            let peer = self.node_id(to);
            self.lookups.on_request(host, request, peer, &body);
        }
        let delay = if link.broken {
            Err(crate::net::Drop::Offline)
        } else {
            ctx.net.connection_delay(ctx.rng, host, to, timeout)
        };
        match delay {
            Ok(delay) => ctx.schedule(
                delay,
                to,
                Msg::Request {
                    from: host,
                    conn,
                    request,
                    body,
                    deadline,
                },
            ),
            Err(_) => {
                self.stats.request_timeouts += 1;
                Self::timeout_at(ctx, host, request, deadline);
            }
        }
    }

    fn send_response(
        &mut self,
        ctx: &mut Ctx<'_, Msg>,
        host: HostId,
        request: PeerRequestId,
        body: Response,
    ) {
        let Some(inbound) = self.inbound.remove(&(host, request)) else {
            return;
        };
        let budget = Self::at(ctx, inbound.deadline);
        match ctx
            .net
            .connection_delay(ctx.rng, host, inbound.from, budget)
        {
            Ok(delay) => ctx.schedule(
                delay,
                inbound.from,
                Msg::Response {
                    from: host,
                    request: inbound.request,
                    body,
                    deadline: inbound.deadline,
                },
            ),
            Err(_) => {
                self.stats.request_timeouts += 1;
                Self::timeout_at(ctx, inbound.from, inbound.request, inbound.deadline);
            }
        }
    }

    /// Closes every connection of `host`: at once on its side if
    /// `notify_self`, after `delay` on the other sides.
    fn drop_links(
        &mut self,
        ctx: &mut Ctx<'_, Msg>,
        host: HostId,
        delay: Duration,
        notify_self: bool,
    ) {
        let Some(node) = self.node(host) else {
            return;
        };
        let conns: Vec<ConnId> = node.connections().into_iter().map(|(c, ..)| c).collect();
        for conn in conns {
            let Some(link) = self.links.remove(&conn) else {
                continue;
            };
            let other = link.other(host);
            ctx.schedule(delay, other, Msg::Local(Event::ConnectionClosed { conn }));
            if notify_self {
                ctx.schedule(
                    Duration::ZERO,
                    host,
                    Msg::Local(Event::ConnectionClosed { conn }),
                );
            }
        }
    }
}

/// The level as the driver of one host's node: the hooks of the core's
/// drain loop. Store batches commit at once (the default); mDNS finds
/// nothing and claim streams are not carried at the manager level (the
/// claim exchange is tested in core/tests/claims.rs and over QUIC).
struct Pump<'l, 'c, 'n> {
    level: &'l mut ManagerLevel,
    ctx: &'c mut Ctx<'n, Msg>,
}

impl Driver for Pump<'_, '_, '_> {
    type Host = HostId;

    fn manager(&mut self, host: HostId) -> Option<&mut NodeManager> {
        self.level.node_mut(host)
    }

    fn now(&self) -> Now {
        self.ctx.now
    }

    fn output(&mut self, host: HostId, output: Output) {
        match output {
            Output::Done { op, result } => {
                self.ctx
                    .trace
                    .add(&[3, u64::from(host.0), op.0, done_digest(&result)]);
                if let Some(outcome) = self.level.lookups.finish(host, op, &result) {
                    self.ctx
                        .trace
                        .add(&[4, u64::from(outcome.hops), outcome.requests.into()]);
                }
                self.level.outputs.done(host, op, result);
            }
            Output::Event(event) => self.level.outputs.event(host, event),
        }
    }

    fn connect(&mut self, host: HostId, c: Connect) {
        let dial = Dial {
            from: host,
            attempt: c.attempt,
            expected: c.node_id,
            dst: c.address,
            src: c.address,
            sent: self.ctx.elapsed,
            retry: DIAL_RETRY,
            deadline: self.ctx.elapsed + c.timeout,
        };
        self.level.send_dial(self.ctx, Box::new(dial));
    }

    fn send_request(&mut self, host: HostId, r: Outgoing) {
        self.level
            .send_request(self.ctx, host, r.conn, r.request, r.body, r.timeout);
    }

    fn send_response(&mut self, host: HostId, _: ConnId, request: PeerRequestId, body: Response) {
        self.level.send_response(self.ctx, host, request, body);
    }

    fn close(&mut self, host: HostId, conn: ConnId, _: ConnectionErrorCode) {
        if let Some(link) = self.level.links.remove(&conn) {
            let other = link.other(host);
            let delay = self.ctx.net.latency(host, other);
            self.ctx
                .schedule(delay, other, Msg::Closed { from: host, conn });
        }
    }

    fn hole_punch(&mut self, host: HostId, address: SocketAddr, _: Duration) {
        let _source = self.ctx.net.outbound(host, address);
    }

    fn resolve(&mut self, host: HostId, resolve: ResolveId, _: Hostname) {
        // The simulation has no DNS: no name is found.
        let result = Err(std::io::ErrorKind::NotFound);
        let resolved = Msg::Local(Event::Resolved { resolve, result });
        self.ctx.schedule(Duration::ZERO, host, resolved);
    }
}

impl Level for ManagerLevel {
    type Msg = Msg;

    fn deliver(&mut self, ctx: &mut Ctx<'_, Msg>, to: HostId, msg: Msg) {
        match msg {
            Msg::Dial(dial) => self.accept(ctx, to, dial),
            Msg::Redial(dial) => {
                if self.is_alive(to) {
                    self.send_dial(ctx, dial);
                }
            }
            Msg::Accepted {
                conn,
                attempt,
                peer,
                remote,
                ..
            } => self.handle(
                ctx,
                to,
                Event::ConnectionUp {
                    conn,
                    peer,
                    remote,
                    attempt: Some(attempt),
                },
            ),
            Msg::Request {
                from,
                conn,
                request,
                body,
                deadline,
            } => {
                if !self.is_alive(to) {
                    Self::timeout_at(ctx, from, request, deadline);
                    return;
                }
                let peer_request = PeerRequestId(self.next_peer_request);
                self.next_peer_request += 1;
                self.inbound.insert(
                    (to, peer_request),
                    Inbound {
                        from,
                        request,
                        deadline,
                    },
                );
                self.handle(
                    ctx,
                    to,
                    Event::RequestReceived {
                        conn,
                        request: peer_request,
                        body,
                    },
                );
            }
            Msg::Response {
                request,
                body,
                deadline,
                ..
            } => {
                let result = if ctx.elapsed > deadline {
                    Err(RpcFailure::Timeout)
                } else {
                    Ok(body)
                };
                if let Ok(response) = &result {
                    self.lookups.on_response(to, request, response);
                } else {
                    self.lookups.on_failure(to, request);
                }
                self.handle(ctx, to, Event::ResponseReceived { request, result });
            }
            Msg::Closed { conn, .. } => self.handle(ctx, to, Event::ConnectionClosed { conn }),
            Msg::Local(event) => {
                match &event {
                    Event::ResponseReceived { request, .. } => {
                        self.lookups.on_failure(to, *request);
                    }
                    Event::ConnectionClosed { conn } => {
                        self.links.remove(conn);
                    }
                    _ => {}
                }
                self.handle(ctx, to, event);
            }
        }
    }

    fn undeliverable(&mut self, ctx: &mut Ctx<'_, Msg>, to: HostId, msg: Msg) {
        let idle = ctx.net.config().idle_timeout;
        match msg {
            Msg::Dial(dial) => self.dial_unanswered(ctx, dial),
            Msg::Accepted {
                from,
                conn,
                attempt,
                deadline,
                ..
            } => {
                // The dialler never hears back: its attempt times out, and
                // the acceptor's side idles out.
                if self.links.remove(&conn).is_some() {
                    ctx.schedule(idle, from, Msg::Local(Event::ConnectionClosed { conn }));
                }
                self.stats.dial_failures += 1;
                ctx.schedule(
                    Self::at(ctx, deadline),
                    to,
                    Msg::Local(Event::ConnectFailed {
                        attempt,
                        failure: ConnectFailure::Timeout,
                    }),
                );
            }
            Msg::Request {
                from,
                request,
                deadline,
                ..
            } => {
                self.stats.request_timeouts += 1;
                Self::timeout_at(ctx, from, request, deadline);
            }
            Msg::Response {
                request, deadline, ..
            } => {
                self.stats.request_timeouts += 1;
                self.lookups.on_failure(to, request);
                Self::timeout_at(ctx, to, request, deadline);
            }
            Msg::Closed { conn, .. } => {
                ctx.schedule(idle, to, Msg::Local(Event::ConnectionClosed { conn }));
            }
            Msg::Redial(_) | Msg::Local(_) => {}
        }
    }

    fn wake(&mut self, ctx: &mut Ctx<'_, Msg>, host: HostId) {
        let now = ctx.now;
        if let Some(node) = self.node_mut(host) {
            node.handle_timeout(now);
            self.pump(ctx, host);
        }
    }

    fn next_wake(&self, host: HostId) -> Option<Instant> {
        self.node(host)?.poll_timeout().map(|(at, _)| at)
    }

    fn digest(msg: &Msg) -> u64 {
        match msg {
            Msg::Dial(d) => mix(10 ^ d.attempt.0 ^ (u64::from(d.src.port()) << 40)),
            Msg::Redial(d) => mix(11 ^ d.attempt.0),
            Msg::Accepted { conn, attempt, .. } => mix(12 ^ conn.0 ^ (attempt.0 << 32)),
            Msg::Request {
                conn,
                request,
                body,
                ..
            } => {
                let target = match body {
                    Request::ClosestNodes { target }
                    | Request::Signal { target }
                    | Request::RelayOpen { target } => digest_bytes(&target.as_bytes()[..8]),
                    Request::Reserve { class } => 0x5e5e ^ (*class as u64),
                    Request::SignalFinal { source, .. } => digest_bytes(&source.as_bytes()[..8]),
                    Request::ChainData { limit, .. } => u64::from(*limit),
                };
                mix(13 ^ conn.0 ^ (request.0 << 24) ^ target)
            }
            Msg::Response { request, body, .. } => {
                let shape = match body {
                    Response::ClosestNodes { active, contacts } => {
                        let first = contacts
                            .first()
                            .map_or(0, |(id, _)| digest_bytes(&id.as_bytes()[..8]));
                        ((active.len() as u64) << 16) ^ (contacts.len() as u64) ^ first
                    }
                    Response::Signal { target_address } => u64::from(target_address.port()),
                    Response::Ack => 1,
                    Response::Refused(_) => 2,
                    Response::ChainData { claims } => 3 ^ ((claims.len() as u64) << 8),
                    Response::RelayOpened { target_address, .. } => {
                        4 ^ (u64::from(target_address.port()) << 8)
                    }
                    Response::Reserved { lifetime_secs } => 5 ^ (u64::from(*lifetime_secs) << 8),
                };
                mix(14 ^ (request.0 << 8) ^ shape)
            }
            Msg::Closed { conn, .. } => mix(15 ^ conn.0),
            Msg::Local(event) => mix(16 ^ event_digest(event)),
        }
    }

    fn via_network(msg: &Msg) -> Option<HostId> {
        match msg {
            Msg::Dial(d) => Some(d.from),
            Msg::Accepted { from, .. }
            | Msg::Request { from, .. }
            | Msg::Response { from, .. }
            | Msg::Closed { from, .. } => Some(*from),
            Msg::Redial(_) | Msg::Local(_) => None,
        }
    }
}

fn event_digest(event: &Event) -> u64 {
    match event {
        Event::ConnectFailed { attempt, .. } => (1 << 60) ^ attempt.0,
        Event::ConnectionClosed { conn } => (2 << 60) ^ conn.0,
        Event::ResponseReceived { request, .. } => (3 << 60) ^ request.0,
        Event::Resolved { resolve, .. } => (4 << 60) ^ resolve.0,
        _ => 5 << 60,
    }
}

fn done_digest(result: &Result<OpValue, OpError>) -> u64 {
    match result {
        Ok(OpValue::Found(Some((address, _)))) => {
            7 ^ address.socket_addr().map_or(0, |a| u64::from(a.port()))
        }
        Ok(OpValue::Found(None)) => 8,
        Ok(_) => 9,
        Err(_) => 10,
    }
}

/// The seed nodes entry of a host: its NodeId and public address.
pub fn seed_entry(sim: &ManagerSim, host: HostId) -> (NodeId, NodeAddress) {
    (
        sim.level.node_id(host),
        NodeAddress::from(Network::listen_address(host)),
    )
}

impl Sim<ManagerLevel> {
    /// Adds a host behind `nat` running a started node with `node_id`.
    pub fn add_node(&mut self, config: Config, node_id: NodeId, nat: NatType) -> HostId {
        let host = self.net.add_host(nat);
        let seed = self.level.seed;
        let now = self.now();
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&mix(seed ^ mix(u64::from(host.0))).to_le_bytes());
        bytes[8..16].copy_from_slice(&seed.to_le_bytes());
        let mut node = NodeManager::new(config, node_id, now, bytes).expect("valid config");
        node.handle(now, Event::SnapshotLoaded(Snapshot::default()));
        let start = node.start(now).expect("a new node starts");
        self.level.hosts.push(Host {
            node: Some(Box::new(node)),
            id: node_id,
        });
        self.level.by_id.insert(node_id, host);
        self.with(|level, ctx| level.pump(ctx, host));
        let _started = self.level.outputs.take_result(host, start);
        host
    }

    /// Calls a method of a host's node, then carries out its commands.
    pub fn call<T>(
        &mut self,
        host: HostId,
        f: impl FnOnce(&mut NodeManager, keynode_core::Now) -> T,
    ) -> T {
        self.with(|level, ctx| {
            let now = ctx.now;
            let node = level.node_mut(host).expect("a live host");
            let out = f(node, now);
            level.pump(ctx, host);
            out
        })
    }

    /// Starts `sync_node_graph` (blocking) from the given seed hosts.
    pub fn join(&mut self, host: HostId, seeds: &[HostId]) -> OpId {
        let seeds = SeedNodes::new(seeds.iter().map(|s| seed_entry(self, *s)));
        self.call(host, |node, now| {
            node.sync_node_graph(now, &seeds, None, true)
                .expect("sync starts")
        })
    }

    /// Starts a `find_node` whose hops and requests are measured.
    pub fn find(&mut self, host: HostId, target: NodeId, options: FindOptions) -> OpId {
        self.with(|level, ctx| {
            let now = ctx.now;
            let node = level.node_mut(host).expect("a live host");
            let known = crate::lookup::known_at_start(node, &target);
            let op = node.find_node(now, target, options).expect("find starts");
            level.lookups.start(host, op, target, known);
            level.pump(ctx, host);
            op
        })
    }

    /// The measured outcome of a lookup started with [`Sim::find`], once done.
    pub fn lookup_outcome(&mut self, host: HostId, op: OpId) -> Option<LookupOutcome> {
        self.level.lookups.take_outcome(host, op)
    }

    /// Runs until `op` of `host` is done (or `limit` of virtual time passes).
    pub fn run_until_done(
        &mut self,
        host: HostId,
        op: OpId,
        limit: Duration,
    ) -> Option<Result<OpValue, OpError>> {
        let end = self.elapsed() + limit;
        self.run_until(end, |sim| sim.level.outputs.result(host, op).is_some());
        self.level.outputs.take_result(host, op)
    }

    /// The host leaves for good: its node stops and its peers notice when
    /// their connections idle out.
    pub fn kill(&mut self, host: HostId) {
        self.with(|level, ctx| {
            let idle = ctx.net.config().idle_timeout;
            level.drop_links(ctx, host, idle, false);
            if let Some(h) = level.hosts.get_mut(host.index()) {
                h.node = None;
            }
            ctx.net.set_online(host, false);
            ctx.touch(host);
        });
    }

    /// Takes a host off the network (its node keeps running) or puts it
    /// back. Its connections break and close on both sides after the idle
    /// timeout.
    pub fn set_online(&mut self, host: HostId, online: bool) {
        self.with(|level, ctx| {
            ctx.net.set_online(host, online);
            if !online && let Some(node) = level.node(host) {
                let idle = ctx.net.config().idle_timeout;
                let conns: Vec<ConnId> = node.connections().into_iter().map(|(c, ..)| c).collect();
                for conn in conns {
                    if let Some(link) = level.links.get_mut(&conn) {
                        // Nothing passes; both sides notice at the idle timeout.
                        link.broken = true;
                        let (a, b) = (link.dialler, link.acceptor);
                        for side in [a, b] {
                            ctx.schedule(idle, side, Msg::Local(Event::ConnectionClosed { conn }));
                        }
                    }
                }
            }
        });
    }

    /// The host's key is renewed: its node takes `new_id`, and its
    /// connections (authenticated with the old key) close.
    pub fn renew_key(&mut self, host: HostId, new_id: NodeId) {
        self.with(|level, ctx| {
            let latency = Duration::from_millis(1);
            level.drop_links(ctx, host, latency, true);
            let old = level.node_id(host);
            level.by_id.remove(&old);
            level.by_id.insert(new_id, host);
            level.hosts[host.index()].id = new_id;
            level.handle(ctx, host, Event::KeyRenewed { node_id: new_id });
        });
    }
}
