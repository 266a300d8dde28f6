//! [`Node`]: a node manager on QUIC, the composition of the net layer. It
//! owns the manager, the quinn-proto endpoint and its connections, the hole
//! punches, the mDNS service and the net layer's timers; it carries out the
//! manager's commands that need a connection, a stream, a punch or mDNS,
//! and hands the driver only what needs a socket, the store or a resolver.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, DatagramEvent, EndpointConfig, ServerConfig, TransportConfig, VarInt,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::admission::{Admission, AdmissionStats, Decision};
use super::app::AppStats;
use super::conn_table::ConnTable;
use super::connection::{ConnState, QuicConn};
use super::driver::{DriverEvent, NetCommand, Transmit};
use super::mdns::MdnsService;
use super::punch::Punch;
use super::registry::Registry;
use super::relay::is_relayed;
use super::streams::Role;
use super::timers::{NetTimer, NetTimers, NodeTimer};
use super::tls::{EventClock, NodeCertificate, TlsError, client_config, server_config};
use crate::claims::KeyPair;
use crate::config::{Config, ConfigError};
use crate::id::NodeId;
use crate::manager::{
    ApiError, AttemptId, Command, ConnId, ConnectFailure, Event, NodeManager, OpId, Output,
    PeerRequestId, RequestId, RpcFailure, StreamId, UserCall,
};
use crate::time::Now;
use crate::wire::Frame;

/// QUIC settings of a [`Node`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetConfig {
    /// A connection with no traffic for this long is closed. Default 30 s.
    pub max_idle_timeout: Duration,
    /// Keep-alive interval. Default 10 s.
    pub keep_alive: Duration,
    /// Bidirectional streams a peer may open at once per connection
    /// (keynode's requests and the applications' together). Default 100,
    /// quinn's.
    pub max_concurrent_streams: u32,
    /// Unidirectional streams a peer may open at once per connection.
    /// Default 100, quinn's.
    pub max_concurrent_uni_streams: u32,
    /// Bytes a peer may send on one stream ahead of what is read (the
    /// stream's flow-control window). Default 1,250,000, quinn's.
    pub stream_receive_window: u32,
    /// Bytes a peer may send on a connection ahead of what is read, over
    /// every stream. Default 10,000,000 (quinn has no limit: here the
    /// memory a peer can make a connection hold is bounded).
    pub receive_window: u32,
    /// Bytes written but not yet acknowledged, over every stream of a
    /// connection: a writer is blocked beyond it. Default 10,000,000, quinn's.
    pub send_window: u64,
    /// Bytes of received datagrams held until read; the oldest are dropped
    /// beyond it. 0: datagrams are refused. Default 1,250,000, quinn's.
    pub datagram_receive_buffer: usize,
    /// Bytes of datagrams waiting to be sent; the oldest are dropped beyond
    /// it. Default 1 MiB, quinn's.
    pub datagram_send_buffer: usize,
    /// Application protocols registered at once. Default 64.
    pub max_protocols: usize,
    /// Bytes of one hole-punching packet. Default 32.
    pub punch_packet_len: usize,
    /// Hole punches in progress at once; more are dropped. Default 64.
    pub max_punches: usize,
    /// The IP TTL of a punch's first packet. It is to open our own NAT's
    /// mapping without reaching the peer's NAT: a NAT that tracks
    /// connections (Linux's) keeps the first datagram from outside that
    /// arrives before its host has sent anything to that peer as a flow of
    /// its own, and the host's datagrams to the peer then leave from another
    /// port. 2 passes a home router and dies at the next hop. 0: no such
    /// packet. Default 2.
    pub punch_ttl: u32,
    /// How long after that first packet the punch, and any other datagram
    /// to the punched address (a QUIC handshake), goes out at full TTL:
    /// time for the peer, signalled at the same moment, to open its NAT
    /// first. Default 100 ms.
    pub punch_delay: Duration,
    /// Probe each connection's path for datagrams larger than QUIC's
    /// 1,200 bytes, up to 1,452 (RFC 8899's DPLPMTUD, quinn-proto's
    /// default `MtuDiscoveryConfig`). A bulk transfer at 1,200 bytes a
    /// packet seals, sends and acknowledges a fifth more packets than at
    /// 1,452. A probe that is lost only keeps the smaller size, but a probe
    /// must not be fragmented on its way: a driver whose socket cannot set
    /// Don't Fragment turns this off (quinn does the same). Default on.
    pub mtu_discovery: bool,
    /// Bytes of stream headers and keynode frames received but not yet
    /// complete that one connection's streams may hold; a stream whose
    /// read would pass it is reset (counted in
    /// [`super::AppStats::partial_frames_over_limit`]). Sixteen frames of
    /// the default `Config::max_message_size`. Default 1 MiB.
    pub max_partial_frame_bytes_per_conn: usize,
    /// The same over every connection. Default 64 MiB.
    pub max_partial_frame_bytes: usize,
    /// How long a stream's header, or a keynode frame, may take to arrive
    /// once its first byte has (an RPC stream's first frame counts from its
    /// header): a stream still short of it then is reset (counted in
    /// [`super::AppStats::frames_timed_out`]), so that a peer cannot keep
    /// bytes held by sending a frame but never its end. Application
    /// streams, once their header is read, are not timed. Default 10 s.
    pub frame_timeout: Duration,
    /// Inbound handshakes in progress at once (counting those closing
    /// without having come up); past it, an Initial is answered with a
    /// Retry or refused before any TLS work (see the admission rules in
    /// `admission.rs`). Default 256.
    pub max_handshakes: usize,
    /// Inbound handshakes in progress at once from one source IP, counted
    /// apart for addresses validated by a Retry and not. Default 8.
    pub max_handshakes_per_ip: usize,
    /// Past this many inbound handshakes from unvalidated addresses, an
    /// Initial without a Retry token is answered with a Retry (stateless
    /// address validation, one round trip more). 0: always. Default 16.
    pub retry_above_handshakes: usize,
    /// An inbound handshake not done by then is closed, and its state
    /// leaves every table once drained. Default 10 s.
    pub handshake_timeout: Duration,
    /// Inbound connections (up or in a validated handshake) from one IP.
    /// Default 8.
    pub max_inbound_per_ip: usize,
    /// Inbound connections from one /24 (IPv4) or /48 (IPv6). Default 32.
    pub max_inbound_per_prefix: usize,
    /// Slots of `Config::max_connections` that inbound connections never
    /// take: the node's own dials always have room (at the limit, an idle
    /// inbound connection is closed to make room for one). Default 64.
    pub reserved_outbound: usize,
    /// Whether loopback sources are exempt from the per-IP and per-prefix
    /// bounds (for many agents on one host). Default false.
    pub exempt_loopback: bool,
    /// Relaying, as a relay and as its client (see `relay.rs`).
    pub relay: super::relay::RelayConfig,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            max_concurrent_streams: 100,
            max_concurrent_uni_streams: 100,
            stream_receive_window: 1_250_000,
            receive_window: 10_000_000,
            send_window: 10_000_000,
            datagram_receive_buffer: 1_250_000,
            datagram_send_buffer: 1 << 20,
            max_protocols: 64,
            punch_packet_len: 32,
            max_punches: 64,
            punch_ttl: 2,
            punch_delay: Duration::from_millis(100),
            mtu_discovery: true,
            max_partial_frame_bytes_per_conn: 1 << 20,
            max_partial_frame_bytes: 64 << 20,
            frame_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_handshakes_per_ip: 8,
            retry_above_handshakes: 16,
            handshake_timeout: Duration::from_secs(10),
            max_inbound_per_ip: 8,
            max_inbound_per_prefix: 32,
            reserved_outbound: 64,
            exempt_loopback: false,
            relay: super::relay::RelayConfig::default(),
        }
    }
}

/// Why a [`Node`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The manager's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The node key is invalid.
    #[error("invalid node key")]
    Key,
}

/// A node manager driven over QUIC: the manager's connections, requests and
/// claim streams become QUIC connections and streams, and those become UDP
/// datagrams. Sans-IO like the manager: the driver feeds what it observed
/// ([`Node::handle`]), time ([`Node::handle_timeout`]) and its caller's
/// requests ([`Node::call`]), and carries out what [`Node::poll`] returns.
///
/// Determinism: quinn-proto's endpoint RNG, its stateless-reset key and its
/// connection-id generator are all derived from the node's seed, and rustls
/// reads time from the inputs (its clock is the wall-clock time of the last
/// event). What still draws OS randomness is ring's TLS key exchange
/// (ephemeral X25519 keys and the handshake randoms) and the client's initial
/// destination connection id, so two runs agree in outcome, not byte for byte.
pub struct Node {
    pub(super) manager: NodeManager,
    pub(super) endpoint: quinn_proto::Endpoint,
    cert: NodeCertificate,
    pub(super) net: NetConfig,
    pub(super) max_frame: usize,
    /// Bytes of headers and frames begun and not yet complete, over every
    /// connection's streams.
    pub(super) partial_bytes: usize,
    pub(super) conns: ConnTable,
    /// Every connection by source and kind, and the admission counters.
    pub(super) admission: Admission,
    /// The manager's `Config::max_connections`.
    pub(super) max_connections: usize,
    /// The key of Retry tokens, from the seed (kept across key renewals).
    token_key: Arc<ring::hkdf::Prk>,
    pub(super) by_handle: BTreeMap<usize, ConnId>,
    /// Routes of the manager's requests, the peers' requests and the claim
    /// exchanges to their QUIC streams.
    pub(super) requests: BTreeMap<RequestId, (ConnId, quinn_proto::StreamId)>,
    pub(super) peer_requests: BTreeMap<PeerRequestId, (ConnId, quinn_proto::StreamId)>,
    pub(super) claim_streams: BTreeMap<StreamId, (ConnId, quinn_proto::StreamId)>,
    pub(super) timers: NetTimers,
    pub(super) punches: BTreeMap<SocketAddr, Punch>,
    /// The relay's pairs and reservations.
    pub(super) relay: super::relay::RelayServer,
    /// This node's relayed paths, by mapped address.
    pub(super) paths: super::relay::RelayPaths,
    /// Up, direct connections by remote address: where relay frames from
    /// a relay this node uses come from.
    pub(super) by_remote: std::collections::BTreeSet<(SocketAddr, ConnId)>,
    /// The application protocols this node serves.
    pub(super) registry: Registry,
    pub(super) app_stats: AppStats,
    pub(super) out: VecDeque<NetCommand>,
    pub(super) rng: ChaCha8Rng,
    pub(super) now: Now,
    next_id: u64,
    buf: Vec<u8>,
    /// Datagrams per transmit (GSO); see [`Node::set_max_segments`].
    pub(super) max_segments: usize,
    /// A read freed window the peer must hear of; see [`Node::take_credit_due`].
    pub(super) credit_due: bool,
    /// An input came since the last drive that ended with nothing left to
    /// do: `poll` must drive before it can say the node is drained.
    pub(super) stale: bool,
    /// A connection stopped at its share of datagrams in this drive.
    pub(super) send_budget_spent: bool,
    mdns: Option<MdnsService>,
    /// The addresses mDNS announces: the node's QUIC socket addresses.
    announced: Vec<SocketAddr>,
    /// rustls's clock: the wall-clock time of the last input.
    clock: EventClock,
}

impl Node {
    /// A node with the Ed25519 key of `secret` (32 bytes, kept by the driver)
    /// and `seed` for every random choice the core makes.
    pub fn new(
        config: Config,
        net: NetConfig,
        secret: &[u8; 32],
        now: Now,
        seed: [u8; 32],
    ) -> Result<Self, NetError> {
        let key = KeyPair::from_seed(secret).map_err(|_| NetError::Key)?;
        let cert = NodeCertificate::new(secret)?;
        let max_frame = config.max_message_size;
        let max_connections = config.max_connections;
        let manager = NodeManager::new(config, key, now, seed)?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        let mut reset_key = [0u8; 32];
        rng.fill_bytes(&mut reset_key);
        let mut endpoint_config = EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &reset_key,
        )));
        let mut cid_seed = [0u8; 32];
        rng.fill_bytes(&mut cid_seed);
        endpoint_config
            .cid_generator(move || Box::new(SeededCids(ChaCha8Rng::from_seed(cid_seed))));
        // No peer may clear the QUIC fixed bit towards this node: a
        // datagram with it clear is a relay frame (see `relay.rs`).
        endpoint_config.grease_quic_bit(false);
        let clock = EventClock::default();
        clock.set(now.unix_ms);
        let tls =
            QuicServerConfig::try_from(server_config(&cert, &clock)?).map_err(TlsError::from)?;
        let mut endpoint_seed = [0u8; 32];
        rng.fill_bytes(&mut endpoint_seed);
        let mut token_seed = [0u8; 64];
        rng.fill_bytes(&mut token_seed);
        let token_key =
            Arc::new(ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[]).extract(&token_seed));
        let server = server(tls, &net, &token_key);
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server)),
            net.mtu_discovery,
            Some(endpoint_seed),
        );
        Ok(Self {
            manager,
            endpoint,
            cert,
            net,
            max_frame,
            partial_bytes: 0,
            conns: ConnTable::default(),
            admission: Admission::default(),
            max_connections,
            token_key,
            by_handle: BTreeMap::new(),
            requests: BTreeMap::new(),
            peer_requests: BTreeMap::new(),
            claim_streams: BTreeMap::new(),
            timers: NetTimers::default(),
            punches: BTreeMap::new(),
            relay: super::relay::RelayServer::default(),
            paths: super::relay::RelayPaths::default(),
            by_remote: std::collections::BTreeSet::new(),
            registry: Registry::default(),
            app_stats: AppStats::default(),
            out: VecDeque::new(),
            rng,
            now,
            next_id: 1,
            buf: Vec::new(),
            max_segments: 1,
            credit_due: false,
            stale: true,
            send_budget_spent: false,
            mdns: None,
            announced: Vec::new(),
            clock,
        })
    }

    /// Renews the node's key: the NodeId becomes the key of `secret`, the
    /// graph is rebuilt for it, and new connections present a new
    /// certificate. Connections made with the old certificate keep working
    /// until they close.
    pub fn renew_key(&mut self, now: Now, secret: &[u8; 32]) -> Result<NodeId, NetError> {
        self.advance(now);
        let key = KeyPair::from_seed(secret).map_err(|_| NetError::Key)?;
        let cert = NodeCertificate::new(secret)?;
        let tls = QuicServerConfig::try_from(server_config(&cert, &self.clock)?)
            .map_err(TlsError::from)?;
        let server = server(tls, &self.net, &self.token_key);
        self.endpoint.set_server_config(Some(Arc::new(server)));
        self.cert = cert;
        let node_id = key.node_id();
        self.manager.renew_identity(now, key);
        self.drive();
        Ok(node_id)
    }

    /// The addresses mDNS announces for this node (its QUIC socket's
    /// addresses on the interfaces mDNS runs on). Set before `start`.
    pub fn set_announced_addresses(&mut self, addresses: Vec<SocketAddr>) {
        self.announced = addresses;
    }

    /// Tells the node its QUIC socket's own addresses (the bound address,
    /// and for a socket bound to the wildcard the host's interface
    /// addresses the driver knows), for the NAT class: an observed address
    /// among them is public (see [`crate::nat`]).
    pub fn set_local_addresses(&mut self, local: crate::nat::LocalAddresses) {
        self.manager.set_local_addresses(local);
    }

    /// mDNS counters, while mDNS runs.
    pub fn mdns_stats(&self) -> Option<super::mdns::MdnsStats> {
        self.mdns.as_ref().map(MdnsService::stats)
    }

    /// The NodeId.
    pub fn node_id(&self) -> NodeId {
        self.manager.node_id()
    }

    /// The manager, to read.
    pub fn manager_ref(&self) -> &NodeManager {
        &self.manager
    }

    /// The manager's requests sent on connections and not answered yet.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// The oldest observation (an agent event) not yet taken; see
    /// [`NodeManager::poll_observation`].
    pub fn poll_observation(&mut self) -> Option<crate::Observation> {
        self.manager.poll_observation()
    }

    /// The connections up, with their peers.
    pub fn connection_count(&self) -> usize {
        self.conns.values().filter(|c| c.is_up()).count()
    }

    /// Calls one of the manager's user-facing methods at `now` (see
    /// [`NodeManager::call`]); drain [`Node::poll`] afterwards.
    pub fn call(&mut self, now: Now, call: UserCall) -> Result<Option<OpId>, ApiError> {
        self.advance(now);
        self.manager.call(now, call)
    }

    /// Feeds what the driver observed. A datagram is only taken in: what
    /// it causes is worked out at the next [`Node::poll`], so hand over
    /// every datagram that is ready, then poll.
    pub fn handle(&mut self, now: Now, event: DriverEvent<'_>) {
        self.advance(now);
        let event = match event {
            DriverEvent::Datagram { from, bytes } => {
                return self.handle_datagram(from, BytesMut::from(bytes));
            }
            DriverEvent::MdnsDatagram { from, bytes } => {
                if let Some(mdns) = self.mdns.as_mut() {
                    mdns.handle_datagram(now.mono, from, bytes);
                }
                return self.drive();
            }
            DriverEvent::SnapshotLoaded(snapshot) => Event::SnapshotLoaded(snapshot),
            DriverEvent::StoreCommitted(batch) => Event::StoreCommitted(batch),
            DriverEvent::StoreFailed { batch, error } => Event::StoreFailed { batch, error },
            DriverEvent::Resolved { resolve, result } => Event::Resolved { resolve, result },
            DriverEvent::ConnectionReleased { lease } => Event::ConnectionReleased { lease },
        };
        self.manager.handle(now, event);
        self.drive();
    }

    /// Datagrams that arrived together from one source, each `stride`
    /// bytes but the last, which may be shorter (what a receive with GRO
    /// returns): the same as handing each to [`Node::handle`] as a
    /// `Datagram`, with one buffer shared by all of them instead of a copy
    /// of each.
    pub fn handle_segments(
        &mut self,
        now: Now,
        from: SocketAddr,
        mut data: BytesMut,
        stride: usize,
    ) {
        self.advance(now);
        let stride = if stride == 0 { data.len() } else { stride };
        while !data.is_empty() {
            let datagram = data.split_to(stride.min(data.len()));
            self.handle_datagram(from, datagram);
        }
    }

    /// The time, without an event: for a driver about to poll after
    /// something that brought no time of its own (a stream handle's wake),
    /// so that what the next poll sends is timed from now.
    pub fn advance_clock(&mut self, now: Now) {
        self.advance(now);
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        self.manager.handle_timeout(now);
        while let Some(timer) = self.timers.pop_due(now.mono) {
            match timer {
                NetTimer::ConnectDeadline(id) => self.on_connect_deadline(id),
                NetTimer::Request(request) => self.on_request_timeout(request),
                NetTimer::Punch(address) => self.on_punch_timer(address),
                NetTimer::Frame(stream) => self.on_frame_timeout(stream),
            }
        }
        // quinn's own deadlines (loss detection, idle, keep-alive) are in
        // the connections' deadline table: only the connections due are
        // touched (each is then driven, which sets its next deadline).
        while let Some(id) = self.conns.pop_due(now.mono) {
            if let Some(c) = self.conns.get_mut(&id) {
                c.conn.handle_timeout(now.mono);
            }
        }
        if let Some(mdns) = self.mdns.as_mut()
            && mdns.poll_timeout().is_some_and(|t| t <= now.mono)
        {
            mdns.handle_timeout(now.mono);
        }
        self.drive();
    }

    /// The next command for the driver.
    #[must_use]
    pub fn poll(&mut self) -> Option<NetCommand> {
        if self.out.is_empty() && (self.stale || self.conns.any_dirty()) {
            self.drive();
        }
        self.out.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next, and what for (the first
    /// of equal deadlines: the manager's, the net layer's, a connection's,
    /// mDNS's).
    pub fn poll_timeout(&mut self) -> Option<(Instant, NodeTimer)> {
        let manager = self
            .manager
            .poll_timeout()
            .map(|(t, timer)| (t, NodeTimer::Manager(timer)));
        let own = self
            .timers
            .next()
            .map(|(t, timer)| (t, NodeTimer::Net(timer)));
        // Connections changed since their last drive may have moved their
        // deadlines.
        self.conns.refresh_dirty_deadlines();
        let conns = self
            .conns
            .next_deadline()
            .map(|(t, id)| (t, NodeTimer::Connection(id)));
        // mDNS announcements, jittered responses and query retransmissions
        // are timers too: without them a driver that sleeps until this
        // deadline never sends them.
        let mdns = self
            .mdns
            .as_ref()
            .and_then(MdnsService::poll_timeout)
            .map(|t| (t, NodeTimer::Mdns));
        [manager, own, conns, mdns]
            .into_iter()
            .flatten()
            .min_by_key(|(t, _)| *t)
    }

    pub(super) fn advance(&mut self, now: Now) {
        // Every input comes through here: whatever it changed, the next
        // poll drives.
        self.stale = true;
        if now.mono >= self.now.mono {
            self.now = now;
            self.clock.set(now.unix_ms);
        }
    }

    pub(super) fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// A datagram arrived on the node's socket.
    fn handle_datagram(&mut self, from: SocketAddr, bytes: BytesMut) {
        if let Some(bytes) = self.take_relay_frame(from, bytes) {
            self.handle_quic(from, bytes);
        }
    }

    /// A QUIC datagram from `from` (an address of the socket, or a
    /// relayed path's mapped address).
    pub(super) fn handle_quic(&mut self, from: SocketAddr, bytes: BytesMut) {
        let now = self.now;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let event = self
            .endpoint
            .handle(now.mono, from, None, None, bytes, &mut buf);
        match event {
            Some(DatagramEvent::NewConnection(incoming)) => self.admit(incoming, &mut buf),
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(c) = self
                    .by_handle
                    .get(&handle.0)
                    .and_then(|id| self.conns.get_mut(id))
                {
                    c.conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(t)) => {
                let contents = buf.get(..t.size).unwrap_or_default().to_vec();
                self.transmit_vec(t.destination, contents);
            }
            None => {}
        }
        self.buf = buf;
        // No drive here: the next `poll` drives. A driver that hands over
        // every datagram it has ready before it polls lets quinn-proto see
        // them all before it decides what to send, so one ACK answers a
        // burst instead of one ACK every other packet.
    }

    /// An attempt's first Initial: accepted, retried or refused by the
    /// admission rules, before any TLS work for the latter two.
    fn admit(&mut self, incoming: quinn_proto::Incoming, buf: &mut Vec<u8>) {
        let now = self.now;
        let remote = incoming.remote_address();
        let decision = self.admission.decide(
            &self.net,
            self.max_connections,
            remote.ip(),
            incoming.remote_address_validated(),
            incoming.may_retry(),
        );
        let response = match decision {
            Decision::Accept { validated } => {
                match self.endpoint.accept(incoming, now.mono, buf, None) {
                    Ok((handle, conn)) => {
                        let id = ConnId(self.fresh_id());
                        self.by_handle.insert(handle.0, id);
                        self.conns
                            .insert(id, QuicConn::new(handle, conn, ConnState::Accepting));
                        self.admission.accepted(id, remote.ip(), validated);
                        self.timers.set(
                            NetTimer::ConnectDeadline(id),
                            now.mono + self.net.handshake_timeout,
                        );
                        None
                    }
                    Err(e) => e.response,
                }
            }
            Decision::Retry => match self.endpoint.retry(incoming, buf) {
                Ok(t) => Some(t),
                Err(e) => {
                    // Not retryable after all (it carries a token already).
                    self.endpoint.ignore(e.into_incoming());
                    self.admission.stats.ignored += 1;
                    None
                }
            },
            Decision::Refuse(_) => Some(self.endpoint.refuse(incoming, buf)),
        };
        if let Some(t) = response {
            let contents = buf.get(..t.size).unwrap_or_default().to_vec();
            self.transmit_vec(t.destination, contents);
        }
    }

    /// Admission counters, and the sizes of the connection tables now.
    pub fn admission_stats(&self) -> AdmissionStats {
        let (connections, dirty, deadlines) = self.conns.sizes();
        AdmissionStats {
            connections,
            dirty,
            deadlines,
            ..self.admission.stats()
        }
    }

    pub(super) fn send(&mut self, destination: SocketAddr, contents: Vec<u8>, ttl: Option<u32>) {
        if is_relayed(&destination) {
            return self.send_relayed(destination, contents, None);
        }
        self.out.push_back(NetCommand::Transmit(Transmit {
            destination,
            contents,
            ttl,
            segment_size: None,
        }));
    }

    /// Sends datagrams of one size, the last possibly shorter, as one
    /// transmit (see [`Node::set_max_segments`]).
    pub(super) fn send_segments(
        &mut self,
        destination: SocketAddr,
        contents: Vec<u8>,
        segment_size: Option<usize>,
    ) {
        if is_relayed(&destination) {
            return self.send_relayed(destination, contents, segment_size);
        }
        self.out.push_back(NetCommand::Transmit(Transmit {
            destination,
            contents,
            ttl: None,
            segment_size,
        }));
    }

    /// A datagram to a socket address, as it is.
    pub(super) fn send_raw(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        self.out.push_back(NetCommand::Transmit(Transmit {
            destination,
            contents,
            ttl: None,
            segment_size: None,
        }));
    }

    /// How many datagrams one [`Transmit`] may carry (its `segment_size`):
    /// the driver's socket's segmentation offload (GSO) limit. Default 1,
    /// every transmit one datagram. Only established connections use
    /// more: a handshake's datagrams may be held for a hole punch one by
    /// one.
    pub fn set_max_segments(&mut self, max: usize) {
        self.max_segments = max.max(1);
    }

    /// Carries out the manager's commands and moves every connection along,
    /// until nothing changes.
    fn drive(&mut self) {
        for _ in 0..1_000 {
            let mut progressed = false;
            while let Some(command) = self.manager.poll() {
                progressed = true;
                self.carry_out(command);
            }
            // Only the connections something reached since their last
            // drive: the work of a pass does not grow with the connections.
            for id in self.conns.take_dirty() {
                progressed |= self.drive_conn(id);
            }
            progressed |= self.drive_mdns();
            if !progressed && !self.conns.any_dirty() {
                // Nothing changes until the next input: a poll before it
                // need not pass over every connection again.
                self.stale = false;
                return;
            }
            if std::mem::take(&mut self.send_budget_spent) && !self.out.is_empty() {
                // A connection has more to send: the next poll, once the
                // driver has sent these, drives again (still stale). (With
                // nothing queued, as when a punch holds a handshake's
                // datagrams, the drive goes on: no poll would come back.)
                return;
            }
        }
    }

    /// Moves mDNS answers to the manager and its datagrams to the driver.
    fn drive_mdns(&mut self) -> bool {
        let Some(mdns) = self.mdns.as_mut() else {
            return false;
        };
        let mut progressed = false;
        let mut answers = Vec::new();
        while let Some(answer) = mdns.poll_answer() {
            answers.push(answer);
        }
        while let Some(t) = mdns.poll_transmit() {
            progressed = true;
            self.out.push_back(NetCommand::MdnsTransmit(Transmit {
                destination: t.destination,
                contents: t.bytes,
                ttl: None,
                segment_size: None,
            }));
        }
        for (query, addresses) in answers {
            progressed = true;
            self.manager
                .handle(self.now, Event::MdnsAnswer { query, addresses });
        }
        progressed
    }

    /// One manager command: carried out here if it is about connections,
    /// streams, punches or mDNS; handed to the driver if it needs the
    /// store, a resolver or the caller.
    fn carry_out(&mut self, command: Command) {
        let now = self.now;
        match command {
            Command::Connect {
                attempt,
                node_id,
                address,
                timeout,
                mode: _,
            } => self.connect(attempt, node_id, address, timeout),
            Command::ConnectRelayed {
                attempt,
                node_id,
                via,
                timeout,
            } => self.connect_relayed(attempt, node_id, via, timeout),
            Command::SendRequest {
                conn,
                request,
                body,
                timeout,
            } => {
                let opened =
                    self.open_rpc_stream(conn, Role::Request(request), Frame::Request(body), true);
                match opened {
                    Some(stream) => {
                        self.requests.insert(request, (conn, stream));
                        self.timers
                            .set(NetTimer::Request(request), now.mono + timeout);
                    }
                    None => self.manager.handle(
                        now,
                        Event::ResponseReceived {
                            request,
                            result: Err(RpcFailure::ConnectionClosed),
                        },
                    ),
                }
            }
            Command::SendResponse {
                request,
                body,
                conn: _,
            } => self.answer(request, &Frame::Response(body)),
            Command::OpenStream {
                conn,
                stream,
                message,
            } => {
                match self.open_rpc_stream(conn, Role::Claim(stream), Frame::Claim(message), false)
                {
                    Some(s) => {
                        self.claim_streams.insert(stream, (conn, s));
                    }
                    None => self.manager.handle(now, Event::StreamClosed { stream }),
                }
            }
            Command::StreamSend {
                stream,
                message,
                finish,
            } => {
                if let Some((conn, s)) = self.claim_streams.get(&stream).copied() {
                    self.send_frame(conn, s, &Frame::Claim(message), finish);
                }
            }
            Command::CloseConnection { conn, code } => {
                if self.conns.get(&conn).is_some_and(|c| c.is_up()) {
                    self.close_up(conn, code);
                } else if let Some(c) = self.conns.get_mut(&conn) {
                    c.conn.close(
                        now.mono,
                        VarInt::from_u32(code.code()),
                        bytes::Bytes::from_static(code.reason().as_bytes()),
                    );
                }
            }
            Command::HolePunch { address, timeout } => self.hole_punch(address, timeout),
            Command::MdnsAnnounce {
                node_id,
                groups,
                port,
            } => {
                if self.mdns.is_none() {
                    let config = crate::config::MdnsConfig { groups, port };
                    self.mdns =
                        MdnsService::new(node_id, self.announced.clone(), now.mono, &config).ok();
                }
                if let Some(mdns) = self.mdns.as_mut() {
                    let _ = mdns.announce(now.mono);
                }
            }
            Command::MdnsQuery { query, node_id } => {
                if let Some(mdns) = self.mdns.as_mut() {
                    // A refused query finds nothing; the manager's deadline ends it.
                    let _ = mdns.query(now.mono, query, node_id);
                }
            }
            Command::MdnsQueryEnd { query } => {
                if let Some(mdns) = self.mdns.as_mut() {
                    mdns.end_query(query);
                }
            }
            Command::MdnsStop => {
                if let Some(mdns) = self.mdns.as_mut() {
                    mdns.stop(now.mono);
                }
            }
            Command::Resolve { resolve, hostname } => self
                .out
                .push_back(NetCommand::Resolve { resolve, hostname }),
            Command::Store(batch) => self.out.push_back(NetCommand::Store(batch)),
            Command::Output(Output::Done { op, result }) => {
                self.out.push_back(NetCommand::Done { op, result })
            }
            Command::Output(Output::Event(event)) => self.out.push_back(NetCommand::Event(event)),
        }
    }

    pub(super) fn connect(
        &mut self,
        attempt: AttemptId,
        node_id: NodeId,
        address: SocketAddr,
        timeout: Duration,
    ) {
        let now = self.now;
        let config = client_config(&self.cert, node_id, &self.clock).and_then(|(tls, verifier)| {
            let quic = QuicClientConfig::try_from(tls).map_err(TlsError::from)?;
            let mut client = ClientConfig::new(Arc::new(quic));
            client.transport_config(Arc::new(transport(&self.net)));
            Ok((client, verifier))
        });
        let result = config
            .map_err(ConnectFailure::Tls)
            .and_then(|(client, verifier)| {
                self.endpoint
                    .connect(now.mono, client, address, "keynode")
                    .map(|c| (c, verifier))
                    .map_err(ConnectFailure::Connect)
            });
        match result {
            Ok(((handle, conn), verifier)) => {
                let id = ConnId(self.fresh_id());
                self.by_handle.insert(handle.0, id);
                let state = ConnState::Dialing {
                    attempt,
                    verifier,
                    expected: node_id,
                };
                self.conns.insert(id, QuicConn::new(handle, conn, state));
                self.admission.dialed(id, address.ip());
                self.timers
                    .set(NetTimer::ConnectDeadline(id), now.mono + timeout);
            }
            Err(failure) => self
                .manager
                .handle(now, Event::ConnectFailed { attempt, failure }),
        }
    }
}

/// Connection ids from the node's seeded generator, so that the endpoint
/// draws no OS randomness for them.
struct SeededCids(ChaCha8Rng);

impl quinn_proto::ConnectionIdGenerator for SeededCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.0.fill_bytes(&mut bytes);
        quinn_proto::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The length of the node's connection ids.
const CID_LEN: usize = 8;

/// The server side: the TLS config, the transport, the Retry token key.
fn server(
    tls: QuicServerConfig,
    net: &NetConfig,
    token_key: &Arc<ring::hkdf::Prk>,
) -> ServerConfig {
    let token_key: Arc<dyn quinn_proto::crypto::HandshakeTokenKey> = token_key.clone();
    let mut server = ServerConfig::new(Arc::new(tls), token_key);
    server.transport_config(Arc::new(transport(net)));
    server
}

fn transport(net: &NetConfig) -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(quinn_proto::IdleTimeout::try_from(net.max_idle_timeout).ok());
    transport.keep_alive_interval(Some(net.keep_alive));
    transport.max_concurrent_bidi_streams(VarInt::from_u32(net.max_concurrent_streams));
    transport.max_concurrent_uni_streams(VarInt::from_u32(net.max_concurrent_uni_streams));
    transport.stream_receive_window(VarInt::from_u32(net.stream_receive_window));
    transport.receive_window(VarInt::from_u32(net.receive_window));
    transport.send_window(net.send_window);
    transport.datagram_receive_buffer_size(Some(net.datagram_receive_buffer).filter(|&n| n > 0));
    transport.datagram_send_buffer_size(net.datagram_send_buffer);
    transport
}
