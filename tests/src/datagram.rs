//! The datagram level: every host runs a full [`Node`] (the manager on
//! QUIC: quinn-proto, TLS 1.3 by rustls with the nodes' Ed25519 keys), and
//! the level carries the UDP datagrams it sends over the virtual
//! [`Network`].
//!
//! Nothing of a connection is modelled here: handshakes, requests, loss
//! recovery, keep-alives and idle timeouts are QUIC's own, on real packets.
//! The level only plays the socket and the rest of the driver:
//! - a datagram leaves through [`Network::outbound`] (the sender's NAT maps
//!   it and remembers the destination), may be lost ([`Network::lost`]),
//!   travels the link's latency, and reaches the host owning the
//!   destination address only if [`Network::accepts`] lets it through the
//!   NAT; the receiver sees the NAT's public source address. Hole-punching
//!   packets are datagrams like any other;
//! - partitions and hosts offline drop datagrams at delivery time; a host
//!   that left drops everything; its peers notice by QUIC's idle timeout;
//! - store batches commit at once; mDNS finds nothing (no LAN); hostnames
//!   do not resolve;
//! - application events ([`AppEvent`]) are kept per host, in order, for
//!   the scenario to act on ([`DatagramLevel::app_events`]); it drives
//!   streams through [`Sim::with_node`].
//!
//! The [`crate::NetConfig`]'s `retransmit` and `idle_timeout` model QUIC at
//! the manager level and are unused here: the [`QuicConfig`] of each node
//! decides. Lookup hops ([`crate::Lookups`]) are not measured: requests
//! travel inside QUIC streams, out of the level's sight.
//!
//! Determinism: every choice the level makes comes from the simulation's
//! seed, and each node's generator (its quinn-proto endpoint included) from
//! the level's seed. ring still draws OS randomness for the TLS key
//! exchange, and quinn-proto for a client's first connection id (see
//! [`Node`]), so packet *contents* differ between runs while their sizes,
//! times and fates do not; the trace hashes datagrams by sender, addresses
//! and length, not by content.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keynode_core::net::{
    AppEvent, DriverEvent, NetCommand, NetConfig as QuicConfig, Node, Transmit,
};
use keynode_core::{
    ApiError, Config, FindOptions, NodeAddress, NodeId, NodeManager, Now, OpError, OpId, OpValue,
    SeedNodes, UserCall,
};

use crate::net::{HostId, NatType, Network, mix};
use crate::outputs::HostOutputs;
use crate::sim::{Ctx, Level, Sim};

/// What travels in the datagram-level simulation.
#[derive(Clone, Debug)]
pub enum Packet {
    /// A UDP datagram on the wire.
    Udp {
        /// The sending host.
        from: HostId,
        /// The source address as the receiver sees it (after the sender's NAT).
        source: SocketAddr,
        /// The address it was sent to.
        destination: SocketAddr,
        /// The payload.
        bytes: Vec<u8>,
    },
    /// An event from the host's own driver (a failed resolution).
    Local(DriverEvent<'static>),
}

/// Counters of the datagrams, over all hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Datagrams handed to the receiving node.
    pub delivered: u64,
    /// Datagrams lost on the way.
    pub lost: u64,
    /// Datagrams the receiver's NAT filtered.
    pub filtered: u64,
    /// Datagrams to no host, or to a host offline, gone or across a partition.
    pub unreachable: u64,
}

struct Host {
    node: Option<Box<Node>>,
    id: NodeId,
    /// The node's `poll_timeout` after its last drain (it needs `&mut`).
    next_wake: Option<Instant>,
    /// Its application events, in order.
    app: Vec<AppEvent>,
}

/// The datagram level: full nodes and the sockets between them.
pub struct DatagramLevel {
    hosts: Vec<Host>,
    by_id: BTreeMap<NodeId, HostId>,
    /// The operations' results and the node events.
    pub outputs: HostOutputs,
    /// The QUIC settings of nodes added from now on.
    pub quic: QuicConfig,
    /// The datagram counters.
    pub stats: DatagramStats,
    seed: u64,
}

/// A simulation of full nodes over QUIC.
pub type DatagramSim = Sim<DatagramLevel>;

impl DatagramLevel {
    /// An empty level; `seed` seeds every node's generator.
    pub fn new(seed: u64) -> Self {
        Self {
            hosts: Vec::new(),
            by_id: BTreeMap::new(),
            outputs: HostOutputs::default(),
            quic: QuicConfig::default(),
            stats: DatagramStats::default(),
            seed,
        }
    }

    /// The node of a host (`None` once it left).
    pub fn node(&self, host: HostId) -> Option<&Node> {
        self.hosts.get(host.index())?.node.as_deref()
    }

    /// The manager of a host's node, to read (`None` once it left).
    pub fn manager(&self, host: HostId) -> Option<&NodeManager> {
        self.node(host).map(Node::manager_ref)
    }

    /// The NodeId of a host.
    pub fn node_id(&self, host: HostId) -> NodeId {
        self.hosts[host.index()].id
    }

    /// The host of a NodeId.
    pub fn host_of(&self, node_id: &NodeId) -> Option<HostId> {
        self.by_id.get(node_id).copied()
    }

    /// The seed nodes entry of a host: its NodeId and public address.
    pub fn seed_entry(&self, host: HostId) -> (NodeId, NodeAddress) {
        (
            self.node_id(host),
            NodeAddress::from(Network::listen_address(host)),
        )
    }

    /// The application events of a host's node so far, in order (streams
    /// incoming, readable, writable; datagrams; connections lost).
    pub fn app_events(&self, host: HostId) -> &[AppEvent] {
        self.hosts.get(host.index()).map_or(&[], |h| &h.app)
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

    /// QUIC connections up, summed over the hosts (each connection counts
    /// once per side).
    pub fn connection_ends(&self) -> usize {
        self.hosts
            .iter()
            .filter_map(|h| h.node.as_deref())
            .map(Node::connection_count)
            .sum()
    }

    fn node_mut(&mut self, host: HostId) -> Option<&mut Node> {
        self.hosts.get_mut(host.index())?.node.as_deref_mut()
    }

    /// Carries out everything a host's node asks for, then notes its next
    /// deadline.
    fn pump(&mut self, ctx: &mut Ctx<'_, Packet>, host: HostId) {
        ctx.touch(host);
        loop {
            let now = ctx.now;
            let Some(h) = self.hosts.get_mut(host.index()) else {
                return;
            };
            let Some(node) = h.node.as_deref_mut() else {
                h.next_wake = None;
                return;
            };
            let Some(command) = node.poll() else {
                h.next_wake = node.poll_timeout().map(|(at, _)| at);
                return;
            };
            match command {
                NetCommand::Transmit(t) => self.send(ctx, host, t),
                NetCommand::Store(batch) => {
                    node.handle(now, DriverEvent::StoreCommitted(batch.id));
                }
                NetCommand::Done { op, result } => {
                    ctx.trace
                        .add(&[3, u64::from(host.0), op.0, done_digest(&result)]);
                    self.outputs.done(host, op, result);
                }
                NetCommand::Event(event) => {
                    self.outputs.event(host, event);
                }
                NetCommand::App(event) => h.app.push(event),
                NetCommand::Resolve { resolve, .. } => ctx.schedule(
                    Duration::ZERO,
                    host,
                    Packet::Local(DriverEvent::Resolved {
                        resolve,
                        // The simulation has no DNS: no name is found.
                        result: Err(std::io::ErrorKind::NotFound),
                    }),
                ),
                // No LAN in the simulation: mDNS finds nothing.
                NetCommand::MdnsTransmit(_) => {}
            }
        }
    }

    /// A datagram leaves `from`'s socket.
    fn send(&mut self, ctx: &mut Ctx<'_, Packet>, from: HostId, t: Transmit) {
        self.stats.sent += 1;
        self.stats.bytes += t.contents.len() as u64;
        let source = ctx.net.outbound(from, t.destination);
        let Some(to) = ctx.net.host_of(t.destination).filter(|to| *to != from) else {
            self.stats.unreachable += 1;
            return;
        };
        if ctx.net.lost(ctx.rng) {
            self.stats.lost += 1;
            return;
        }
        let delay = ctx.net.latency(from, to);
        ctx.schedule(
            delay,
            to,
            Packet::Udp {
                from,
                source,
                destination: t.destination,
                bytes: t.contents,
            },
        );
    }
}

impl Level for DatagramLevel {
    type Msg = Packet;

    fn deliver(&mut self, ctx: &mut Ctx<'_, Packet>, to: HostId, msg: Packet) {
        match msg {
            Packet::Udp {
                source,
                destination,
                bytes,
                ..
            } => {
                if !ctx.net.accepts(to, destination, source) {
                    self.stats.filtered += 1;
                    return;
                }
                let now = ctx.now;
                let Some(node) = self
                    .hosts
                    .get_mut(to.index())
                    .and_then(|h| h.node.as_deref_mut())
                else {
                    self.stats.unreachable += 1;
                    return;
                };
                self.stats.delivered += 1;
                node.handle(
                    now,
                    DriverEvent::Datagram {
                        from: source,
                        bytes: &bytes,
                    },
                );
                self.pump(ctx, to);
            }
            Packet::Local(event) => {
                let now = ctx.now;
                if let Some(node) = self.node_mut(to) {
                    node.handle(now, event);
                    self.pump(ctx, to);
                }
            }
        }
    }

    fn undeliverable(&mut self, _ctx: &mut Ctx<'_, Packet>, _to: HostId, msg: Packet) {
        // A datagram is simply gone; QUIC's timers notice.
        if let Packet::Udp { .. } = msg {
            self.stats.unreachable += 1;
        }
    }

    fn wake(&mut self, ctx: &mut Ctx<'_, Packet>, host: HostId) {
        let now = ctx.now;
        if let Some(node) = self.node_mut(host) {
            node.handle_timeout(now);
            self.pump(ctx, host);
        }
    }

    fn next_wake(&self, host: HostId) -> Option<Instant> {
        self.hosts.get(host.index())?.next_wake
    }

    fn digest(msg: &Packet) -> u64 {
        match msg {
            // Not the bytes: their TLS parts differ from run to run.
            Packet::Udp {
                from,
                source,
                destination,
                bytes,
            } => mix(mix(20 ^ u64::from(from.0))
                ^ (u64::from(source.port()) << 16)
                ^ (u64::from(destination.port()) << 32)
                ^ ((bytes.len() as u64) << 48)),
            Packet::Local(_) => mix(21),
        }
    }

    fn via_network(msg: &Packet) -> Option<HostId> {
        match msg {
            Packet::Udp { from, .. } => Some(*from),
            Packet::Local(_) => None,
        }
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

impl Sim<DatagramLevel> {
    /// Adds a host behind `nat` running a started node whose key is the
    /// Ed25519 key of `secret` (its NodeId is that key).
    pub fn add_node(&mut self, config: Config, secret: [u8; 32], nat: NatType) -> HostId {
        let host = self.net.add_host(nat);
        let seed = self.level.seed;
        let now = self.now();
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&mix(seed ^ mix(u64::from(host.0))).to_le_bytes());
        bytes[8..16].copy_from_slice(&seed.to_le_bytes());
        bytes[16..24].copy_from_slice(b"datagram");
        let quic = self.level.quic.clone();
        let mut node = Node::new(config, quic, &secret, now, bytes).expect("a valid node");
        // The address its socket is bound to, as an agent tells its node:
        // a host without a NAT is seen there, and is public.
        node.set_local_addresses(keynode_core::nat::LocalAddresses::new(
            Network::listen_address(host),
            Vec::new(),
        ));
        let id = node.node_id();
        let start = node
            .call(now, UserCall::Start)
            .expect("a new node starts")
            .expect("start is an operation");
        self.level.hosts.push(Host {
            node: Some(Box::new(node)),
            id,
            next_wake: None,
            app: Vec::new(),
        });
        self.level.by_id.insert(id, host);
        self.with(|level, ctx| level.pump(ctx, host));
        let _started = self.level.outputs.take_result(host, start);
        host
    }

    /// Calls a method of a host's manager, then carries out its commands.
    pub fn call(&mut self, host: HostId, call: UserCall) -> Result<Option<OpId>, ApiError> {
        self.with(|level, ctx| {
            let now = ctx.now;
            let node = level.node_mut(host).expect("a live host");
            let out = node.call(now, call);
            level.pump(ctx, host);
            out
        })
    }

    /// Runs `f` on a live host's node at the current time (an application
    /// stream's open, write, read...), then carries out its commands.
    pub fn with_node<T>(&mut self, host: HostId, f: impl FnOnce(&mut Node, Now) -> T) -> T {
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
        let seeds = SeedNodes::new(seeds.iter().map(|s| self.level.seed_entry(*s)));
        let call = UserCall::SyncNodeGraph {
            seeds,
            connect_timeout: None,
            blocking: true,
        };
        self.call(host, call)
            .expect("sync starts")
            .expect("sync is an operation")
    }

    /// Starts a `find_node`.
    pub fn find(&mut self, host: HostId, target: NodeId, options: FindOptions) -> OpId {
        let call = UserCall::FindNode {
            node_id: target,
            options,
        };
        self.call(host, call)
            .expect("find starts")
            .expect("find is an operation")
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

    /// The host leaves for good: its node is dropped without a word, and
    /// its peers notice when their connections idle out.
    pub fn kill(&mut self, host: HostId) {
        self.with(|level, ctx| {
            if let Some(h) = level.hosts.get_mut(host.index()) {
                h.node = None;
                h.next_wake = None;
            }
            ctx.net.set_online(host, false);
            ctx.touch(host);
        });
    }

    /// Takes a host off the network (its node keeps running) or puts it
    /// back. Datagrams to and from it are dropped meanwhile; QUIC decides
    /// what becomes of its connections.
    pub fn set_online(&mut self, host: HostId, online: bool) {
        self.net.set_online(host, online);
    }
}
