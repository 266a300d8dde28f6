//! A message network of managers for the core's own tests: every node is a
//! real [`NodeManager`], the network plays its driver (a [`Driver`] keyed by
//! `NodeId`) with one latency for every link, and the test scripts the
//! failures: nodes offline, nodes behind a NAT, claim messages or responses
//! changed in flight. Everything happens in one deterministic order: by
//! time, then by the sequence number of the scheduling.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::driver::{self, Connect, Driver, Outgoing};
use super::script::done;
use super::{ModelStore, seed};
use crate::claims::Identity;
use crate::wire::{ClaimMessage, Request, Response};
use crate::{
    AttemptId, Command, Config, ConnId, ConnectFailure, ConnectionErrorCode, ContactMode, Event,
    NodeId, NodeManager, Now, OpError, OpId, OpValue, Output, PeerRequestId, RequestId, RpcFailure,
    StoreBatch, StreamId,
};

/// A node of the in-memory network.
pub struct Peer {
    /// Its manager.
    pub node: NodeManager,
    /// Where it listens.
    pub address: SocketAddr,
    /// Its store, with every batch committed at once.
    pub store: ModelStore,
    /// Everything its manager told the caller.
    pub outputs: Vec<Output>,
    /// Our connection id → the peer's node.
    pub links: BTreeMap<ConnId, NodeId>,
}

/// What is in flight.
#[derive(Debug, Clone)]
enum Delivery {
    Event(NodeId, Event),
    /// A connection attempt reaching its target.
    Dial {
        from: NodeId,
        attempt: AttemptId,
        to: NodeId,
        expected: NodeId,
        timeout: Duration,
    },
    Request {
        from: NodeId,
        to: NodeId,
        conn: ConnId,
        request: RequestId,
        body: Request,
        timeout: Duration,
    },
    Response {
        to: NodeId,
        request: RequestId,
        body: Response,
    },
}

/// Changes (or drops, returning false) a claim message sent by a node.
pub type StreamTamper = Box<dyn FnMut(NodeId, &mut ClaimMessage) -> bool>;
/// Changes a response on its way to a node.
pub type ResponseTamper = Box<dyn FnMut(NodeId, &mut Response)>;

/// Several managers on an in-memory network. Deliveries take `latency`;
/// messages to an offline node are lost (the sender times out). Everything
/// happens in a deterministic order: by time, then by sequence number.
///
/// The hooks a test gets: `latency`, `offline` ([`Net::set_offline`]),
/// `behind_nat` (direct dials fail, dials after a signal get in),
/// `tamper_stream` and `tamper_response` (a man in the middle).
pub struct Net {
    /// The nodes.
    pub peers: BTreeMap<NodeId, Peer>,
    /// Who listens where.
    pub by_address: BTreeMap<SocketAddr, NodeId>,
    /// Nodes whose messages (in and out) are lost.
    pub offline: BTreeSet<NodeId>,
    /// Nodes behind a NAT: direct dials to them fail; dials after a signal work.
    pub behind_nat: BTreeSet<NodeId>,
    /// The virtual time.
    pub now: Now,
    /// The one-way delay of every message.
    pub latency: Duration,
    queue: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    next_conn: u64,
    /// Requests in flight at the receiver: (receiver, PeerRequestId) → (sender, RequestId).
    inbound: BTreeMap<(NodeId, PeerRequestId), (NodeId, RequestId)>,
    /// How many times [`Net::step`] ran.
    pub steps: u64,
    /// Claim streams: (node, its stream id) → (other node, its stream id).
    streams: BTreeMap<(NodeId, StreamId), (NodeId, StreamId)>,
    next_stream: u64,
    /// Changes (or drops, returning false) claim messages in flight: a
    /// man in the middle, for tests of tampering.
    pub tamper_stream: Option<StreamTamper>,
    /// Changes responses in flight.
    pub tamper_response: Option<ResponseTamper>,
    /// Every claim message sent: (sender, message).
    pub claim_log: Vec<(NodeId, ClaimMessage)>,
    /// Node i gets seed `seed_base + i`.
    pub seed_base: u64,
    /// Every command of every node, with `keep_trace`.
    pub trace: Vec<(NodeId, Command)>,
    /// Whether to keep `trace`.
    pub keep_trace: bool,
}

impl Net {
    /// An empty network whose clock starts at `now`.
    pub fn new(now: Now) -> Self {
        Self {
            peers: BTreeMap::new(),
            by_address: BTreeMap::new(),
            offline: BTreeSet::new(),
            behind_nat: BTreeSet::new(),
            now,
            latency: Duration::from_millis(10),
            queue: BTreeMap::new(),
            seq: 0,
            next_conn: 1,
            inbound: BTreeMap::new(),
            steps: 0,
            streams: BTreeMap::new(),
            next_stream: 1,
            tamper_stream: None,
            tamper_response: None,
            claim_log: Vec::new(),
            seed_base: 7,
            trace: Vec::new(),
            keep_trace: false,
        }
    }

    /// Adds and starts a node.
    pub fn add(&mut self, node_id: NodeId, address: SocketAddr, config: Config) {
        self.add_identity(node_id.into(), address, config);
    }

    /// Adds and starts a node with this identity (a key pair signs claims).
    pub fn add_identity(&mut self, identity: Identity, address: SocketAddr, config: Config) {
        let node_id = identity.node_id();
        let node_seed = seed(self.seed_base.wrapping_add(self.peers.len() as u64));
        let mut node =
            NodeManager::new(config, identity, self.now, node_seed).expect("valid config");
        node.start(self.now).expect("start");
        self.by_address.insert(address, node_id);
        self.peers.insert(
            node_id,
            Peer {
                node,
                address,
                store: ModelStore::default(),
                outputs: Vec::new(),
                links: BTreeMap::new(),
            },
        );
        self.pump(node_id);
    }

    fn schedule(&mut self, after: Duration, delivery: Delivery) {
        self.seq += 1;
        self.queue
            .insert((self.now.mono + after, self.seq), delivery);
    }

    /// Fails `from`'s attempt after `after`.
    fn fail_dial(
        &mut self,
        after: Duration,
        from: NodeId,
        attempt: AttemptId,
        failure: ConnectFailure,
    ) {
        let event = Event::ConnectFailed { attempt, failure };
        self.schedule(after, Delivery::Event(from, event));
    }

    /// Times `from`'s request out after `timeout`.
    fn time_out(&mut self, timeout: Duration, from: NodeId, request: RequestId) {
        let result = Err(RpcFailure::Timeout);
        let event = Event::ResponseReceived { request, result };
        self.schedule(timeout, Delivery::Event(from, event));
    }

    /// Drains one node's commands into the network.
    pub fn pump(&mut self, node_id: NodeId) {
        driver::drain(self, node_id);
    }

    /// Feeds `event` to a node, then drains it.
    fn handle(&mut self, to: NodeId, event: Event) {
        driver::feed(self, to, event);
        self.pump(to);
    }

    fn send_claim(
        &mut self,
        from: NodeId,
        to: NodeId,
        open_on: Option<ConnId>,
        stream: StreamId,
        mut message: ClaimMessage,
    ) {
        if let Some(tamper) = self.tamper_stream.as_mut()
            && !tamper(from, &mut message)
        {
            return;
        }
        self.claim_log.push((from, message.clone()));
        if self.offline.contains(&to) {
            return;
        }
        let event = match open_on {
            Some(conn) => Event::StreamOpened {
                conn,
                stream,
                message,
            },
            None => Event::StreamReceived { stream, message },
        };
        self.schedule(self.latency, Delivery::Event(to, event));
    }

    /// Pairs a new stream of `from` with a new remote stream of `to`.
    fn pair_stream(&mut self, from: NodeId, local: Option<StreamId>, to: NodeId) -> StreamId {
        let remote = StreamId::Remote(self.next_stream);
        self.next_stream += 1;
        let local = local.unwrap_or(StreamId::Local(u64::MAX - self.next_stream));
        self.streams.insert((from, local), (to, remote));
        self.streams.insert((to, remote), (from, local));
        remote
    }

    /// Opens a claim stream from `from` to `to` on their connection, as if
    /// `from` had sent `message` (replays, forged first messages).
    pub fn inject_stream_open(&mut self, from: NodeId, to: NodeId, message: ClaimMessage) -> bool {
        let Some(conn) = self.peers[&from]
            .links
            .iter()
            .find(|(_, peer)| **peer == to)
            .map(|(c, _)| *c)
        else {
            return false;
        };
        let remote = self.pair_stream(from, None, to);
        self.send_claim(from, to, Some(conn), remote, message);
        true
    }

    /// The next timer due among the online nodes: (when, whose).
    fn next_timer(&self) -> Option<(Instant, NodeId)> {
        self.peers
            .iter()
            .filter(|(id, _)| !self.offline.contains(id))
            .filter_map(|(id, p)| p.node.poll_timeout().map(|(t, _)| (t, *id)))
            .min()
    }

    /// Delivers the next thing due, or runs the next timer. False when idle.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        let next_delivery = self.queue.first_key_value().map(|(k, _)| k.0);
        match (next_delivery, self.next_timer()) {
            (Some(d), Some((t, _))) if t < d => self.fire_timer(),
            (Some(_), _) => self.deliver(),
            (None, Some(_)) => self.fire_timer(),
            (None, None) => false,
        }
    }

    /// Steps until nothing is left; more than `max_steps` steps is a
    /// livelock (timers that keep rearming count: use it on networks whose
    /// nodes go quiet) and panics.
    pub fn drive_bounded(&mut self, max_steps: u64) -> u64 {
        for taken in 0..max_steps {
            if !self.step() {
                return taken;
            }
        }
        panic!("the network was still busy after {max_steps} steps");
    }

    fn advance_to(&mut self, at: Instant) {
        if at > self.now.mono {
            self.now = self.now.advanced(at - self.now.mono);
        }
    }

    fn fire_timer(&mut self) -> bool {
        let Some((t, id)) = self.next_timer() else {
            return false;
        };
        self.advance_to(t);
        if let Some(p) = self.peers.get_mut(&id) {
            p.node.handle_timeout(self.now);
        }
        self.pump(id);
        true
    }

    fn deliver(&mut self) -> bool {
        let Some(((at, _), delivery)) = self.queue.pop_first() else {
            return false;
        };
        self.advance_to(at);
        match delivery {
            Delivery::Event(to, event) => {
                if !self.offline.contains(&to) {
                    self.handle(to, event);
                }
            }
            Delivery::Dial {
                from,
                attempt,
                to,
                expected,
                timeout,
            } => self.dial_arrives(from, attempt, to, expected, timeout),
            Delivery::Request {
                from,
                to,
                conn,
                request,
                body,
                timeout,
            } => {
                if self.offline.contains(&to) {
                    self.time_out(timeout, from, request);
                    return true;
                }
                let peer_request = PeerRequestId(request.0);
                self.inbound.insert((to, peer_request), (from, request));
                let event = Event::RequestReceived {
                    conn,
                    request: peer_request,
                    body,
                };
                self.handle(to, event);
            }
            Delivery::Response {
                to,
                request,
                mut body,
            } => {
                if self.offline.contains(&to) {
                    return true;
                }
                if let Some(tamper) = self.tamper_response.as_mut() {
                    tamper(to, &mut body);
                }
                let result = Ok(body);
                self.handle(to, Event::ResponseReceived { request, result });
            }
        }
        true
    }

    /// A dial reaches `to`: it accepts (the dialler hears after another
    /// `latency`), or the dial fails.
    fn dial_arrives(
        &mut self,
        from: NodeId,
        attempt: AttemptId,
        to: NodeId,
        expected: NodeId,
        timeout: Duration,
    ) {
        if self.offline.contains(&to) {
            return self.fail_dial(timeout, from, attempt, ConnectFailure::Timeout);
        }
        if to != expected {
            let failure = ConnectFailure::WrongNodeId { found: to };
            return self.fail_dial(self.latency, from, attempt, failure);
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let from_address = self.peers[&from].address;
        let to_address = self.peers[&to].address;
        if let Some(p) = self.peers.get_mut(&to) {
            p.links.insert(conn, from);
        }
        let up = Event::ConnectionUp {
            conn,
            peer: from,
            remote: from_address,
            attempt: None,
        };
        self.handle(to, up);
        if let Some(p) = self.peers.get_mut(&from) {
            p.links.insert(conn, to);
        }
        let up = Event::ConnectionUp {
            conn,
            peer: to,
            remote: to_address,
            attempt: Some(attempt),
        };
        self.schedule(self.latency, Delivery::Event(from, up));
    }

    /// Steps until `op` of `node` is done, at most `max_steps`.
    pub fn run_until_done(
        &mut self,
        node: NodeId,
        op: OpId,
        max_steps: u64,
    ) -> Result<OpValue, OpError> {
        for _ in 0..max_steps {
            if let Some(r) = self.done(node, op) {
                return r;
            }
            if !self.step() {
                break;
            }
        }
        self.done(node, op)
            .unwrap_or_else(|| panic!("{op} of {node} not done after {max_steps} steps"))
    }

    /// How `op` of `node` ended, if it did.
    pub fn done(&self, node: NodeId, op: OpId) -> Option<Result<OpValue, OpError>> {
        done(&self.peers[&node].outputs, op)
    }

    /// A node's manager.
    pub fn node(&mut self, id: NodeId) -> &mut NodeManager {
        &mut self.peers.get_mut(&id).expect("known node").node
    }

    /// Calls a method of a node's manager, then pumps its commands.
    pub fn call<T>(&mut self, id: NodeId, f: impl FnOnce(&mut NodeManager, Now) -> T) -> T {
        let now = self.now;
        let out = f(self.node(id), now);
        self.pump(id);
        out
    }

    /// Takes a node off the network, or puts it back.
    pub fn set_offline(&mut self, id: NodeId, offline: bool) {
        if offline {
            self.offline.insert(id);
        } else {
            self.offline.remove(&id);
        }
    }
}

/// The network as every node's driver.
impl Driver for Net {
    type Host = NodeId;

    fn manager(&mut self, host: NodeId) -> Option<&mut NodeManager> {
        self.peers.get_mut(&host).map(|p| &mut p.node)
    }

    fn now(&self) -> Now {
        self.now
    }

    fn observe(&mut self, host: NodeId, command: &Command) {
        if self.keep_trace {
            self.trace.push((host, command.clone()));
        }
    }

    fn output(&mut self, host: NodeId, output: Output) {
        if let Some(p) = self.peers.get_mut(&host) {
            p.outputs.push(output);
        }
    }

    fn store(&mut self, host: NodeId, batch: StoreBatch) {
        if let Some(p) = self.peers.get_mut(&host) {
            p.store.apply(&batch.ops);
        }
        driver::commit(self, host, &batch);
    }

    fn connect(&mut self, host: NodeId, c: Connect) {
        match self.by_address.get(&c.address).copied() {
            Some(to)
                if !self.offline.contains(&to)
                    && (c.mode == ContactMode::Signal || !self.behind_nat.contains(&to)) =>
            {
                let dial = Delivery::Dial {
                    from: host,
                    attempt: c.attempt,
                    to,
                    expected: c.node_id,
                    timeout: c.timeout,
                };
                self.schedule(self.latency, dial);
            }
            _ => self.fail_dial(c.timeout, host, c.attempt, ConnectFailure::Timeout),
        }
    }

    fn send_request(&mut self, host: NodeId, r: Outgoing) {
        let to = self.peers.get(&host).and_then(|p| p.links.get(&r.conn));
        match to.copied() {
            Some(to) if !self.offline.contains(&to) => {
                let request = Delivery::Request {
                    from: host,
                    to,
                    conn: r.conn,
                    request: r.request,
                    body: r.body,
                    timeout: r.timeout,
                };
                self.schedule(self.latency, request);
            }
            _ => self.time_out(r.timeout, host, r.request),
        }
    }

    fn send_response(&mut self, host: NodeId, _: ConnId, request: PeerRequestId, body: Response) {
        if let Some((sender, request)) = self.inbound.remove(&(host, request)) {
            let response = Delivery::Response {
                to: sender,
                request,
                body,
            };
            self.schedule(self.latency, response);
        }
    }

    fn close(&mut self, host: NodeId, conn: ConnId, _: ConnectionErrorCode) {
        let other = self
            .peers
            .get_mut(&host)
            .and_then(|p| p.links.remove(&conn));
        if let Some(other) = other {
            if let Some(o) = self.peers.get_mut(&other) {
                o.links.remove(&conn);
            }
            let closed = Event::ConnectionClosed { conn };
            self.schedule(self.latency, Delivery::Event(other, closed));
        }
    }

    fn open_stream(&mut self, host: NodeId, conn: ConnId, stream: StreamId, message: ClaimMessage) {
        let to = self.peers.get(&host).and_then(|p| p.links.get(&conn));
        if let Some(to) = to.copied() {
            let remote = self.pair_stream(host, Some(stream), to);
            self.send_claim(host, to, Some(conn), remote, message);
        }
    }

    fn stream_send(&mut self, host: NodeId, stream: StreamId, message: ClaimMessage, _: bool) {
        if let Some((to, theirs)) = self.streams.get(&(host, stream)).copied() {
            self.send_claim(host, to, None, theirs, message);
        }
    }
}
