//! [`Node`]: a node manager on QUIC. Datagrams in, datagrams out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, ConnectionError, ConnectionHandle, DatagramEvent, Dir, EndpointConfig,
    ServerConfig, StreamEvent, TransportConfig, VarInt,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mdns::MdnsService;
use super::tls::{
    EventClock, ExpectNodeId, NodeCertificate, TlsError, client_config, node_id_of, server_config,
};
use crate::claims::KeyPair;
use crate::config::{Config, ConfigError};
use crate::conn_error::ConnectionErrorCode;
use crate::id::NodeId;
use crate::manager::{
    AttemptId, Command, ConnId, ConnectFailure, Event, NodeManager, PeerRequestId, RequestId,
    RpcFailure, StreamId,
};
use crate::time::Now;
use crate::wire::{self, DecodeError, Frame};

/// QUIC settings of a [`Node`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetConfig {
    /// A connection with no traffic for this long is closed. Default 30 s.
    pub max_idle_timeout: Duration,
    /// Keep-alive interval. Default 10 s.
    pub keep_alive: Duration,
    /// Bidirectional streams a peer may open at once per connection. Default 64.
    pub max_concurrent_streams: u32,
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
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            max_idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
            max_concurrent_streams: 64,
            punch_packet_len: 32,
            max_punches: 64,
            punch_ttl: 2,
            punch_delay: Duration::from_millis(100),
        }
    }
}

/// Why a [`Node`] could not be made.
#[derive(Debug, thiserror::Error)]
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

/// A UDP datagram to send.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub struct Transmit {
    /// Where.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
    /// The IP TTL (hop limit) to send with; `None`: the socket's own.
    pub ttl: Option<u32>,
}

/// What a [`Node`] asks its driver to do.
#[derive(Clone, PartialEq, Debug)]
#[must_use]
pub enum NetCommand {
    /// Send a datagram from the node's socket.
    Transmit(Transmit),
    /// Send a datagram from the mDNS socket (to a multicast group or a
    /// unicast querier).
    MdnsTransmit(Transmit),
    /// Everything else the manager asks (store batches, resolutions,
    /// outputs): the manager's own [`Command`].
    Manager(Command),
}

/// Timers of the net layer itself.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum NetTimer {
    ConnectDeadline(ConnId),
    Request(RequestId),
    Punch(SocketAddr),
}

#[derive(Debug)]
enum Role {
    /// Inbound, before its first frame says what it is.
    Unknown,
    /// We sent a request; the response comes back on it.
    Request(RequestId),
    /// The peer's request; we answer on it.
    Serve(PeerRequestId),
    /// A claim exchange.
    Claim(StreamId),
}

#[derive(Debug)]
struct Stream {
    role: Role,
    recv: Vec<u8>,
    send: Vec<u8>,
    finish: bool,
}

impl Stream {
    fn new(role: Role) -> Self {
        Self {
            role,
            recv: Vec::new(),
            send: Vec::new(),
            finish: false,
        }
    }
}

struct QuicConn {
    handle: ConnectionHandle,
    conn: quinn_proto::Connection,
    attempt: Option<AttemptId>,
    verifier: Option<Arc<ExpectNodeId>>,
    expected: Option<NodeId>,
    up: bool,
    streams: BTreeMap<quinn_proto::StreamId, Stream>,
}

struct Punch {
    interval: Duration,
    until: Instant,
    /// Until then only the low-TTL packet has gone out, and datagrams of
    /// connections not up yet to the address wait in `held`.
    full_at: Instant,
    /// The first full packet went out and `held` with it.
    released: bool,
    /// At most [`MAX_HELD_PER_PUNCH`]; more are dropped (QUIC resends).
    held: Vec<Vec<u8>>,
    /// The low-TTL packet went out.
    opened: bool,
}

/// Datagrams held back per punched address during its first
/// [`NetConfig::punch_delay`]: a handshake's first flight.
const MAX_HELD_PER_PUNCH: usize = 8;

/// A node manager driven over QUIC: the manager's connections, requests and
/// claim streams become QUIC connections and streams, and those become UDP
/// datagrams. Sans-IO like the manager: the driver feeds datagrams and time,
/// and sends what [`Node::poll`] returns.
///
/// Determinism: quinn-proto's endpoint RNG, its stateless-reset key and its
/// connection-id generator are all derived from the node's seed, and rustls
/// reads time from the inputs (its clock is the wall-clock time of the last
/// event). What still draws OS randomness is ring's TLS key exchange
/// (ephemeral X25519 keys and the handshake randoms) and the client's initial
/// destination connection id, so two runs agree in outcome, not byte for byte.
pub struct Node {
    manager: NodeManager,
    endpoint: quinn_proto::Endpoint,
    cert: NodeCertificate,
    net: NetConfig,
    max_frame: usize,
    conns: BTreeMap<ConnId, QuicConn>,
    by_handle: BTreeMap<usize, ConnId>,
    requests: BTreeMap<RequestId, (ConnId, quinn_proto::StreamId)>,
    peer_requests: BTreeMap<PeerRequestId, (ConnId, quinn_proto::StreamId)>,
    claim_streams: BTreeMap<StreamId, (ConnId, quinn_proto::StreamId)>,
    timers: BTreeSet<(Instant, NetTimer)>,
    timer_at: BTreeMap<NetTimer, Instant>,
    punches: BTreeMap<SocketAddr, Punch>,
    out: VecDeque<NetCommand>,
    rng: ChaCha8Rng,
    now: Now,
    next_id: u64,
    buf: Vec<u8>,
    mdns: Option<MdnsService>,
    /// The addresses mDNS announces: the node's QUIC socket addresses.
    announced: Vec<SocketAddr>,
    /// rustls's clock: the wall-clock time of the last input.
    clock: EventClock,
}

/// A length prefix: 4 bytes, big-endian.
const LEN_PREFIX: usize = 4;

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
        let clock = EventClock::default();
        clock.set(now.unix_ms);
        let tls = QuicServerConfig::try_from(server_config(&cert, &clock)?)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut server = ServerConfig::with_crypto(Arc::new(tls));
        server.transport_config(Arc::new(transport(&net)));
        let mut endpoint_seed = [0u8; 32];
        rng.fill_bytes(&mut endpoint_seed);
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server)),
            false,
            Some(endpoint_seed),
        );
        Ok(Self {
            manager,
            endpoint,
            cert,
            net,
            max_frame,
            conns: BTreeMap::new(),
            by_handle: BTreeMap::new(),
            requests: BTreeMap::new(),
            peer_requests: BTreeMap::new(),
            claim_streams: BTreeMap::new(),
            timers: BTreeSet::new(),
            timer_at: BTreeMap::new(),
            punches: BTreeMap::new(),
            out: VecDeque::new(),
            rng,
            now,
            next_id: 1,
            buf: Vec::new(),
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
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut server = ServerConfig::with_crypto(Arc::new(tls));
        server.transport_config(Arc::new(transport(&self.net)));
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

    /// mDNS counters, while mDNS runs.
    pub fn mdns_stats(&self) -> Option<super::mdns::MdnsStats> {
        self.mdns.as_ref().map(MdnsService::stats)
    }

    /// Feeds a datagram received on the mDNS socket.
    pub fn handle_mdns_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        self.advance(now);
        if let Some(mdns) = self.mdns.as_mut() {
            mdns.handle_datagram(now.mono, from, bytes);
        }
        self.drive();
    }

    /// The NodeId.
    pub fn node_id(&self) -> NodeId {
        self.manager.node_id()
    }

    /// The manager, to call its methods (`find_node`, `claim_node`, ...)
    /// at `now`; drain [`Node::poll`] afterwards.
    pub fn manager(&mut self, now: Now) -> &mut NodeManager {
        self.advance(now);
        &mut self.manager
    }

    /// The manager, to read.
    pub fn manager_ref(&self) -> &NodeManager {
        &self.manager
    }

    fn advance(&mut self, now: Now) {
        if now.mono >= self.now.mono {
            self.now = now;
            self.clock.set(now.unix_ms);
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Feeds an event for the manager (store commits, resolutions, mDNS
    /// answers, the snapshot, key renewal).
    pub fn handle(&mut self, now: Now, event: Event) {
        self.advance(now);
        self.manager.handle(now, event);
        self.drive();
    }

    /// Feeds a datagram received on the node's socket.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        self.advance(now);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let event =
            self.endpoint
                .handle(now.mono, from, None, None, BytesMut::from(bytes), &mut buf);
        match event {
            Some(DatagramEvent::NewConnection(incoming)) => {
                match self.endpoint.accept(incoming, now.mono, &mut buf, None) {
                    Ok((handle, conn)) => {
                        let id = ConnId(self.fresh_id());
                        self.by_handle.insert(handle.0, id);
                        self.conns.insert(
                            id,
                            QuicConn {
                                handle,
                                conn,
                                attempt: None,
                                verifier: None,
                                expected: None,
                                up: false,
                                streams: BTreeMap::new(),
                            },
                        );
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.transmit(t.destination, buf.get(..t.size).unwrap_or_default());
                        }
                    }
                }
            }
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
                self.transmit(t.destination, buf.get(..t.size).unwrap_or_default());
            }
            None => {}
        }
        self.buf = buf;
        self.drive();
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.advance(now);
        self.manager.handle_timeout(now);
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now.mono {
                break;
            }
            self.timers.remove(&(at, timer));
            self.timer_at.remove(&timer);
            self.fire(timer);
        }
        for c in self.conns.values_mut() {
            if c.conn.poll_timeout().is_some_and(|t| t <= now.mono) {
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
        if self.out.is_empty() {
            self.drive();
        }
        self.out.pop_front()
    }

    /// When to call [`Node::handle_timeout`] next.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let manager = self.manager.poll_timeout().map(|(t, _)| t);
        let own = self.timers.first().map(|(t, _)| *t);
        let conns = self
            .conns
            .values_mut()
            .filter_map(|c| c.conn.poll_timeout())
            .min();
        // mDNS announcements, jittered responses and query retransmissions
        // are timers too: without them a driver that sleeps until this
        // deadline never sends them.
        let mdns = self.mdns.as_ref().and_then(MdnsService::poll_timeout);
        [manager, own, conns, mdns].into_iter().flatten().min()
    }

    /// The connections up, with their peers.
    pub fn connection_count(&self) -> usize {
        self.conns.values().filter(|c| c.up).count()
    }

    fn set_timer(&mut self, timer: NetTimer, at: Instant) {
        if let Some(old) = self.timer_at.insert(timer, at) {
            self.timers.remove(&(old, timer));
        }
        self.timers.insert((at, timer));
    }

    fn cancel_timer(&mut self, timer: NetTimer) {
        if let Some(old) = self.timer_at.remove(&timer) {
            self.timers.remove(&(old, timer));
        }
    }

    fn transmit(&mut self, destination: SocketAddr, bytes: &[u8]) {
        self.transmit_vec(destination, bytes.to_vec());
    }

    /// Sends a datagram (one of a connection not up yet, or the endpoint's
    /// own), unless its address is being punched and the punch's low-TTL
    /// packet has not had its head start yet: then it waits for the punch's
    /// first full packet, and goes out after it.
    fn transmit_vec(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        if let Some(punch) = self.punches.get_mut(&destination)
            && !punch.released
        {
            if punch.held.len() < MAX_HELD_PER_PUNCH {
                punch.held.push(contents);
            }
            return;
        }
        self.send(destination, contents, None);
    }

    fn send(&mut self, destination: SocketAddr, contents: Vec<u8>, ttl: Option<u32>) {
        self.out.push_back(NetCommand::Transmit(Transmit {
            destination,
            contents,
            ttl,
        }));
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
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            for id in ids {
                progressed |= self.drive_conn(id);
            }
            progressed |= self.drive_mdns();
            if !progressed {
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
            }));
        }
        for (query, addresses) in answers {
            progressed = true;
            self.manager
                .handle(self.now, Event::MdnsAnswer { query, addresses });
        }
        progressed
    }

    fn carry_out(&mut self, command: Command) {
        let now = self.now;
        match command {
            Command::Connect {
                attempt,
                node_id,
                address,
                timeout,
                ..
            } => self.connect(attempt, node_id, address, timeout),
            Command::SendRequest {
                conn,
                request,
                body,
                timeout,
            } => {
                let opened =
                    self.open_stream(conn, Role::Request(request), Frame::Request(body), true);
                match opened {
                    Some(stream) => {
                        self.requests.insert(request, (conn, stream));
                        self.set_timer(NetTimer::Request(request), now.mono + timeout);
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
            Command::SendResponse { request, body, .. } => {
                if let Some((conn, stream)) = self.peer_requests.remove(&request) {
                    self.send_frame(conn, stream, &Frame::Response(body), true);
                }
            }
            Command::OpenStream {
                conn,
                stream,
                message,
            } => match self.open_stream(conn, Role::Claim(stream), Frame::Claim(message), false) {
                Some(s) => {
                    self.claim_streams.insert(stream, (conn, s));
                }
                None => self.manager.handle(now, Event::StreamClosed { stream }),
            },
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
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.conn.close(
                        now.mono,
                        VarInt::from_u32(code.code()),
                        bytes::Bytes::from_static(code.reason().as_bytes()),
                    );
                }
            }
            Command::HolePunch { address, timeout } => {
                let connected = self
                    .conns
                    .values()
                    .any(|c| c.up && c.conn.remote_address() == address);
                if connected {
                    // Nothing to open: the peer is reached already.
                } else if let Some(punch) = self.punches.get_mut(&address) {
                    // Concurrent punches to one address share one schedule.
                    punch.until = punch.until.max(now.mono + timeout);
                } else if self.punches.len() < self.net.max_punches {
                    let delay = if self.net.punch_ttl == 0 {
                        Duration::ZERO
                    } else {
                        self.net.punch_delay
                    };
                    self.punches.insert(
                        address,
                        Punch {
                            interval: Duration::from_secs(1),
                            until: now.mono + timeout,
                            full_at: now.mono + delay,
                            released: false,
                            held: Vec::new(),
                            opened: self.net.punch_ttl == 0,
                        },
                    );
                    self.set_timer(NetTimer::Punch(address), now.mono);
                }
            }
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
            other => self.out.push_back(NetCommand::Manager(other)),
        }
    }

    fn connect(
        &mut self,
        attempt: AttemptId,
        node_id: NodeId,
        address: SocketAddr,
        timeout: Duration,
    ) {
        let now = self.now;
        let config = client_config(&self.cert, node_id, &self.clock).and_then(|(tls, verifier)| {
            let quic =
                QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
            let mut client = ClientConfig::new(Arc::new(quic));
            client.transport_config(Arc::new(transport(&self.net)));
            Ok((client, verifier))
        });
        let result = config
            .map_err(|e| e.to_string())
            .and_then(|(client, verifier)| {
                self.endpoint
                    .connect(now.mono, client, address, "keynode")
                    .map(|c| (c, verifier))
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok(((handle, conn), verifier)) => {
                let id = ConnId(self.fresh_id());
                self.by_handle.insert(handle.0, id);
                self.conns.insert(
                    id,
                    QuicConn {
                        handle,
                        conn,
                        attempt: Some(attempt),
                        verifier: Some(verifier),
                        expected: Some(node_id),
                        up: false,
                        streams: BTreeMap::new(),
                    },
                );
                self.set_timer(NetTimer::ConnectDeadline(id), now.mono + timeout);
            }
            Err(e) => self.manager.handle(
                now,
                Event::ConnectFailed {
                    attempt,
                    failure: ConnectFailure::Transport(e),
                },
            ),
        }
    }

    fn fire(&mut self, timer: NetTimer) {
        let now = self.now;
        match timer {
            NetTimer::ConnectDeadline(id) => {
                if let Some(c) = self.conns.get_mut(&id)
                    && !c.up
                {
                    c.conn
                        .close(now.mono, VarInt::from_u32(0), bytes::Bytes::new());
                    if let Some(attempt) = c.attempt.take() {
                        self.manager.handle(
                            now,
                            Event::ConnectFailed {
                                attempt,
                                failure: ConnectFailure::Timeout,
                            },
                        );
                    }
                }
            }
            NetTimer::Request(request) => {
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
            NetTimer::Punch(address) => {
                let connected = self
                    .conns
                    .values()
                    .any(|c| c.up && c.conn.remote_address() == address);
                let Some(punch) = self.punches.get_mut(&address) else {
                    return;
                };
                let mut packet = vec![0u8; self.net.punch_packet_len];
                if !punch.opened && !connected {
                    // Our NAT's mapping first, at low TTL; the rest later.
                    punch.opened = true;
                    let next = punch.full_at;
                    self.rng.fill_bytes(&mut packet);
                    self.send(address, packet, Some(self.net.punch_ttl));
                    self.set_timer(NetTimer::Punch(address), next);
                    return;
                }
                punch.released = true;
                let held = std::mem::take(&mut punch.held);
                if connected || now.mono >= punch.until {
                    self.punches.remove(&address);
                } else {
                    let next = now.mono + punch.interval;
                    punch.interval *= 2;
                    self.rng.fill_bytes(&mut packet);
                    self.send(address, packet, None);
                    self.set_timer(NetTimer::Punch(address), next);
                }
                for bytes in held {
                    self.send(address, bytes, None);
                }
            }
        }
    }

    fn open_stream(
        &mut self,
        conn: ConnId,
        role: Role,
        frame: Frame,
        finish: bool,
    ) -> Option<quinn_proto::StreamId> {
        let c = self.conns.get_mut(&conn).filter(|c| c.up)?;
        let stream = c.conn.streams().open(Dir::Bi)?;
        c.streams.insert(stream, Stream::new(role));
        self.send_frame(conn, stream, &frame, finish);
        Some(stream)
    }

    fn send_frame(
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

    /// Moves one connection along; true if anything happened.
    fn drive_conn(&mut self, id: ConnId) -> bool {
        let now = self.now;
        let mut progressed = false;
        let mut events = Vec::new();
        let mut transmits = Vec::new();
        let mut drained = false;
        let mut up = false;
        if let Some(c) = self.conns.get_mut(&id) {
            up = c.up;
            while let Some(event) = c.conn.poll_endpoint_events() {
                drained |= event.is_drained();
                if let Some(reply) = self.endpoint.handle_event(c.handle, event) {
                    c.conn.handle_event(reply);
                }
            }
            while let Some(event) = c.conn.poll() {
                events.push(event);
            }
            let mut buf = Vec::new();
            while let Some(t) = c.conn.poll_transmit(now.mono, 1, &mut buf) {
                transmits.push((
                    t.destination,
                    buf.get(..t.size).unwrap_or_default().to_vec(),
                ));
                buf.clear();
            }
        }
        for (destination, contents) in transmits {
            progressed = true;
            if up {
                self.send(destination, contents, None);
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
        }
        progressed
    }

    fn on_conn_event(&mut self, id: ConnId, event: quinn_proto::Event) {
        let now = self.now;
        match event {
            quinn_proto::Event::Connected => self.on_connected(id),
            quinn_proto::Event::ConnectionLost { reason } => self.on_lost(id, reason),
            quinn_proto::Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                let mut accepted = Vec::new();
                if let Some(c) = self.conns.get_mut(&id) {
                    while let Some(stream) = c.conn.streams().accept(Dir::Bi) {
                        c.streams.insert(stream, Stream::new(Role::Unknown));
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
                if let Some(c) = self.conns.get_mut(&id) {
                    flush(c, stream);
                }
            }
            quinn_proto::Event::Stream(StreamEvent::Stopped { id: stream, .. }) => {
                self.close_stream(id, stream);
            }
            _ => {}
        }
        let _ = now;
    }

    fn on_connected(&mut self, id: ConnId) {
        let now = self.now;
        self.cancel_timer(NetTimer::ConnectDeadline(id));
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = c
            .conn
            .crypto_session()
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|certs| certs.first().and_then(|cert| node_id_of(cert)));
        let remote = c.conn.remote_address();
        match (peer, c.expected) {
            (Some(peer), expected) if expected.is_none_or(|e| e == peer) => {
                c.up = true;
                let attempt = c.attempt.take();
                self.manager.handle(
                    now,
                    Event::ConnectionUp {
                        conn: id,
                        peer,
                        remote,
                        attempt,
                    },
                );
            }
            (found, _) => {
                let code = ConnectionErrorCode::PeerIdMismatch;
                c.conn.close(
                    now.mono,
                    VarInt::from_u32(code.code()),
                    bytes::Bytes::from_static(code.reason().as_bytes()),
                );
                if let Some(attempt) = c.attempt.take() {
                    let failure = match found {
                        Some(found) => ConnectFailure::WrongNodeId { found },
                        None => ConnectFailure::Transport("no peer certificate".to_owned()),
                    };
                    self.manager
                        .handle(now, Event::ConnectFailed { attempt, failure });
                }
            }
        }
    }

    fn on_lost(&mut self, id: ConnId, reason: ConnectionError) {
        let now = self.now;
        self.cancel_timer(NetTimer::ConnectDeadline(id));
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if let Some(attempt) = c.attempt.take() {
            let found = c
                .verifier
                .as_ref()
                .and_then(|v| v.found.lock().ok().and_then(|f| *f));
            let failure = match (found, c.expected) {
                (Some(found), Some(expected)) if found != expected => {
                    ConnectFailure::WrongNodeId { found }
                }
                _ => match reason {
                    ConnectionError::TimedOut => ConnectFailure::Timeout,
                    other => ConnectFailure::Transport(other.to_string()),
                },
            };
            self.manager
                .handle(now, Event::ConnectFailed { attempt, failure });
        }
        if c.up {
            c.up = false;
            self.fail_streams(id);
            self.manager
                .handle(now, Event::ConnectionClosed { conn: id });
        }
    }

    /// Ends the requests and claim streams of a lost connection.
    fn fail_streams(&mut self, id: ConnId) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let streams: Vec<Stream> = std::mem::take(&mut c.streams).into_values().collect();
        for s in streams {
            match s.role {
                Role::Request(request) => {
                    self.requests.remove(&request);
                    self.cancel_timer(NetTimer::Request(request));
                    self.manager.handle(
                        now,
                        Event::ResponseReceived {
                            request,
                            result: Err(RpcFailure::ConnectionClosed),
                        },
                    );
                }
                Role::Claim(stream) => {
                    self.claim_streams.remove(&stream);
                    self.manager.handle(now, Event::StreamClosed { stream });
                }
                Role::Serve(peer_request) => {
                    self.peer_requests.remove(&peer_request);
                }
                Role::Unknown => {}
            }
        }
    }

    fn forget_conn(&mut self, id: ConnId) {
        self.fail_streams(id);
        if let Some(c) = self.conns.remove(&id) {
            self.by_handle.remove(&c.handle.0);
            if c.up {
                self.manager
                    .handle(self.now, Event::ConnectionClosed { conn: id });
            }
        }
        self.cancel_timer(NetTimer::ConnectDeadline(id));
    }

    fn close_stream(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        let now = self.now;
        let Some(s) = self
            .conns
            .get_mut(&id)
            .and_then(|c| c.streams.remove(&stream))
        else {
            return;
        };
        match s.role {
            Role::Request(request) => {
                if self.requests.remove(&request).is_some() {
                    self.cancel_timer(NetTimer::Request(request));
                    self.manager.handle(
                        now,
                        Event::ResponseReceived {
                            request,
                            result: Err(RpcFailure::ConnectionClosed),
                        },
                    );
                }
            }
            Role::Claim(core_stream) => {
                if self.claim_streams.remove(&core_stream).is_some() {
                    self.manager.handle(
                        now,
                        Event::StreamClosed {
                            stream: core_stream,
                        },
                    );
                }
            }
            Role::Serve(peer_request) => {
                self.peer_requests.remove(&peer_request);
            }
            Role::Unknown => {}
        }
    }

    fn on_readable(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
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
        if finished
            && self
                .conns
                .get(&id)
                .and_then(|c| c.streams.get(&stream))
                .is_some_and(|s| matches!(s.role, Role::Claim(_) | Role::Request(_)))
        {
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

    /// A peer broke the framing or sent too much: the stream is reset.
    fn reject_stream(&mut self, id: ConnId, stream: quinn_proto::StreamId) {
        if let Some(c) = self.conns.get_mut(&id) {
            let code = VarInt::from_u32(ConnectionErrorCode::ProtocolViolation.code());
            let _ = c.conn.recv_stream(stream).stop(code);
            let _ = c.conn.send_stream(stream).reset(code);
        }
        self.close_stream(id, stream);
    }

    fn on_frame(&mut self, id: ConnId, stream: quinn_proto::StreamId, frame: Frame) {
        let now = self.now;
        let Some(role) = self
            .conns
            .get(&id)
            .and_then(|c| c.streams.get(&stream))
            .map(|s| match s.role {
                Role::Unknown => 0,
                Role::Request(_) => 1,
                Role::Serve(_) => 2,
                Role::Claim(_) => 3,
            })
        else {
            return;
        };
        match (role, frame) {
            (0, Frame::Request(body)) => {
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
            (0, Frame::Claim(message)) => {
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
            (1, Frame::Response(body)) => {
                let request = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.streams.get(&stream))
                    .and_then(|s| match s.role {
                        Role::Request(r) => Some(r),
                        _ => None,
                    });
                if let Some(request) = request
                    && self.requests.remove(&request).is_some()
                {
                    self.cancel_timer(NetTimer::Request(request));
                    self.manager.handle(
                        now,
                        Event::ResponseReceived {
                            request,
                            result: Ok(body),
                        },
                    );
                }
            }
            (3, Frame::Claim(message)) => {
                let core = self
                    .conns
                    .get(&id)
                    .and_then(|c| c.streams.get(&stream))
                    .and_then(|s| match s.role {
                        Role::Claim(c) => Some(c),
                        _ => None,
                    });
                if let Some(core_stream) = core {
                    self.manager.handle(
                        now,
                        Event::StreamReceived {
                            stream: core_stream,
                            message,
                        },
                    );
                }
            }
            _ => self.reject_stream(id, stream),
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

/// Writes what a stream has pending, and finishes it when asked and done.
fn flush(c: &mut QuicConn, stream: quinn_proto::StreamId) {
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

fn transport(net: &NetConfig) -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport.max_idle_timeout(quinn_proto::IdleTimeout::try_from(net.max_idle_timeout).ok());
    transport.keep_alive_interval(Some(net.keep_alive));
    transport.max_concurrent_bidi_streams(VarInt::from_u32(net.max_concurrent_streams));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport
}
