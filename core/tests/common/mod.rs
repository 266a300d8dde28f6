//! Test harnesses for the node manager: `Script` drives one manager with
//! hand-written events; `Net` runs several managers over an in-memory
//! network with latency, offline nodes and deterministic ordering.

#![allow(dead_code, clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use keynode_core::{
    Command, Config, ConnId, ContactRecord, Event, GraphSnapshot, NodeGraphSpace, NodeId,
    NodeManager, Now, OpError, OpId, OpValue, Output, PeerRequestId, PendingRecord, RequestId,
    RpcFailure, Snapshot, StoreOp, TaskKey, TaskRecord,
};

/// Everything a store would hold, from the batches applied.
#[derive(Default, Debug, Clone)]
pub struct ModelStore {
    pub active: Option<NodeGraphSpace>,
    pub owners: BTreeMap<NodeGraphSpace, NodeId>,
    pub contacts: BTreeMap<(NodeGraphSpace, NodeId), ContactRecord>,
    pub pending: BTreeMap<(NodeGraphSpace, NodeId), PendingRecord>,
    pub tasks: BTreeMap<TaskKey, TaskRecord>,
    pub claims: BTreeMap<u64, keynode_core::claims::SignedClaim>,
    pub gestalt: BTreeSet<(NodeId, NodeId)>,
    pub permissions: BTreeSet<NodeId>,
    pub batches: usize,
}

impl ModelStore {
    pub fn apply(&mut self, ops: &[StoreOp]) {
        self.batches += 1;
        for op in ops {
            match op.clone() {
                StoreOp::PutSpaceOwner { space, own } => {
                    self.owners.insert(space, own);
                }
                StoreOp::SetActiveSpace(space) => self.active = Some(space),
                StoreOp::PutContact {
                    space,
                    node_id,
                    record,
                } => {
                    self.contacts.insert((space, node_id), record);
                }
                StoreOp::DeleteContact { space, node_id } => {
                    self.contacts.remove(&(space, node_id));
                }
                StoreOp::PutPending {
                    space,
                    node_id,
                    record,
                } => {
                    self.pending.insert((space, node_id), record);
                }
                StoreOp::DeletePending { space, node_id } => {
                    self.pending.remove(&(space, node_id));
                }
                StoreOp::ClearSpace(space) => {
                    self.owners.remove(&space);
                    self.contacts.retain(|(s, _), _| *s != space);
                    self.pending.retain(|(s, _), _| *s != space);
                }
                StoreOp::PutTask { key, record } => {
                    self.tasks.insert(key, record);
                }
                StoreOp::DeleteTask(key) => {
                    self.tasks.remove(&key);
                }
                StoreOp::PutClaim { seq, claim } => {
                    self.claims.insert(seq, claim);
                }
                StoreOp::PutGestaltLink { a, b } => {
                    self.gestalt.insert((a, b));
                }
                StoreOp::PutClaimPermission(node) => {
                    self.permissions.insert(node);
                }
                StoreOp::DeleteClaimPermission(node) => {
                    self.permissions.remove(&node);
                }
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let graph = self.active.map(|space| GraphSnapshot {
            space,
            own: self.owners[&space],
            contacts: self
                .contacts
                .iter()
                .filter(|((s, _), _)| *s == space)
                .map(|((_, id), r)| (*id, r.clone()))
                .collect(),
            pending: self
                .pending
                .iter()
                .filter(|((s, _), _)| *s == space)
                .map(|((_, id), r)| (*id, r.clone()))
                .collect(),
        });
        Snapshot {
            graph,
            tasks: self.tasks.clone().into_iter().collect(),
            claims: self.claims.values().cloned().collect(),
            gestalt_links: self.gestalt.iter().copied().collect(),
            claim_permissions: self.permissions.iter().copied().collect(),
        }
    }
}

pub fn t0() -> Now {
    Now::new(Instant::now(), 1_700_000_000_000)
}

pub fn seed(n: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

pub fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

pub fn addr(n: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, 0, (n >> 8) as u8, n as u8]), 1314)
}

/// One manager driven by hand. Store batches are committed at once unless
/// `hold_store` is set; outputs are collected.
pub struct Script {
    pub node: NodeManager,
    pub now: Now,
    pub store: ModelStore,
    pub outputs: Vec<Output>,
    pub hold_store: bool,
    pub held: Vec<keynode_core::StoreBatch>,
    pub log: Vec<Command>,
}

impl Script {
    pub fn new(config: Config, own: NodeId) -> Self {
        let now = t0();
        let node = NodeManager::new(config, own, now, seed(1)).expect("valid config");
        Self {
            node,
            now,
            store: ModelStore::default(),
            outputs: Vec::new(),
            hold_store: false,
            held: Vec::new(),
            log: Vec::new(),
        }
    }

    /// A started manager with its start batch committed.
    pub fn started(config: Config, own: NodeId) -> Self {
        let mut s = Self::new(config, own);
        let op = s.node.start(s.now).expect("start");
        s.drain();
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
        s
    }

    /// Drains commands: commits store batches, collects outputs, returns the rest.
    pub fn drain(&mut self) -> Vec<Command> {
        let mut out = Vec::new();
        while let Some(cmd) = self.node.poll() {
            self.log.push(cmd.clone());
            match cmd {
                Command::Store(batch) if !self.hold_store => {
                    self.store.apply(&batch.ops);
                    self.node.handle(self.now, Event::StoreCommitted(batch.id));
                }
                Command::Store(batch) => self.held.push(batch),
                Command::Output(o) => self.outputs.push(o),
                other => out.push(other),
            }
        }
        out
    }

    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        self.node.handle(self.now, event);
        self.drain()
    }

    pub fn advance(&mut self, by: Duration) -> Vec<Command> {
        self.now = self.now.advanced(by);
        self.node.handle_timeout(self.now);
        self.drain()
    }

    pub fn done(&self, op: OpId) -> Option<Result<OpValue, OpError>> {
        self.outputs.iter().find_map(|o| match o {
            Output::Done { op: o, result } if *o == op => Some(result.clone()),
            _ => None,
        })
    }

    pub fn done_count(&self, op: OpId) -> usize {
        self.outputs
            .iter()
            .filter(|o| matches!(o, Output::Done { op: x, .. } if *x == op))
            .count()
    }
}

/// A node of the in-memory network.
pub struct Peer {
    pub node: NodeManager,
    pub address: SocketAddr,
    pub store: ModelStore,
    pub outputs: Vec<Output>,
    /// Our connection id → the peer's node.
    pub links: BTreeMap<ConnId, NodeId>,
}

#[derive(Debug, Clone)]
enum Delivery {
    Event(NodeId, Event),
    /// A connection attempt reaching its target.
    Dial {
        from: NodeId,
        attempt: keynode_core::AttemptId,
        to: NodeId,
        expected: NodeId,
        timeout: Duration,
    },
    Request {
        from: NodeId,
        to: NodeId,
        conn: ConnId,
        request: RequestId,
        body: keynode_core::wire::Request,
        timeout: Duration,
    },
    Response {
        to: NodeId,
        request: RequestId,
        body: keynode_core::wire::Response,
    },
}

/// Changes (or drops, returning false) a claim message sent by a node.
pub type StreamTamper = Box<dyn FnMut(NodeId, &mut keynode_core::wire::ClaimMessage) -> bool>;
/// Changes a response on its way to a node.
pub type ResponseTamper = Box<dyn FnMut(NodeId, &mut keynode_core::wire::Response)>;

/// Several managers on an in-memory network. Deliveries take `latency`;
/// messages to an offline node are lost (the sender times out). Everything
/// happens in a deterministic order: by time, then by sequence number.
pub struct Net {
    pub peers: BTreeMap<NodeId, Peer>,
    pub by_address: BTreeMap<SocketAddr, NodeId>,
    pub offline: BTreeSet<NodeId>,
    /// Nodes behind a NAT: direct dials to them fail; dials after a signal work.
    pub behind_nat: BTreeSet<NodeId>,
    pub now: Now,
    pub latency: Duration,
    queue: BTreeMap<(Instant, u64), Delivery>,
    seq: u64,
    next_conn: u64,
    /// Requests in flight at the receiver: (receiver, PeerRequestId) → (sender, RequestId).
    inbound: BTreeMap<(NodeId, PeerRequestId), (NodeId, RequestId)>,
    pub steps: u64,
    /// Claim streams: (node, its stream id) → (other node, its stream id).
    streams: BTreeMap<(NodeId, keynode_core::StreamId), (NodeId, keynode_core::StreamId)>,
    next_stream: u64,
    /// Changes (or drops, returning false) claim messages in flight: a
    /// man in the middle, for tests of tampering.
    pub tamper_stream: Option<StreamTamper>,
    /// Changes responses in flight.
    pub tamper_response: Option<ResponseTamper>,
    /// Every claim message sent: (sender, message).
    pub claim_log: Vec<(NodeId, keynode_core::wire::ClaimMessage)>,
    /// Node i gets seed `seed_base + i`.
    pub seed_base: u64,
    pub trace: Vec<(NodeId, Command)>,
    pub keep_trace: bool,
}

impl Net {
    pub fn new() -> Self {
        Self {
            peers: BTreeMap::new(),
            by_address: BTreeMap::new(),
            offline: BTreeSet::new(),
            behind_nat: BTreeSet::new(),
            now: t0(),
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
    pub fn add_identity(
        &mut self,
        identity: keynode_core::claims::Identity,
        address: SocketAddr,
        config: Config,
    ) {
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

    /// Drains one node's commands into the network.
    pub fn pump(&mut self, node_id: NodeId) {
        loop {
            let Some(peer) = self.peers.get_mut(&node_id) else {
                return;
            };
            let Some(cmd) = peer.node.poll() else {
                return;
            };
            if self.keep_trace {
                self.trace.push((node_id, cmd.clone()));
            }
            let latency = self.latency;
            match cmd {
                Command::Store(batch) => {
                    peer.store.apply(&batch.ops);
                    peer.node.handle(self.now, Event::StoreCommitted(batch.id));
                }
                Command::Output(o) => peer.outputs.push(o),
                Command::Connect {
                    attempt,
                    node_id: expected,
                    address,
                    timeout,
                    mode,
                } => match self.by_address.get(&address).copied() {
                    Some(to)
                        if !self.offline.contains(&to)
                            && (mode == keynode_core::ContactMode::Signal
                                || !self.behind_nat.contains(&to)) =>
                    {
                        self.schedule(
                            latency,
                            Delivery::Dial {
                                from: node_id,
                                attempt,
                                to,
                                expected,
                                timeout,
                            },
                        )
                    }
                    _ => self.schedule(
                        timeout,
                        Delivery::Event(
                            node_id,
                            Event::ConnectFailed {
                                attempt,
                                failure: keynode_core::ConnectFailure::Timeout,
                            },
                        ),
                    ),
                },
                Command::SendRequest {
                    conn,
                    request,
                    body,
                    timeout,
                } => {
                    let to = peer.links.get(&conn).copied();
                    match to {
                        Some(to) if !self.offline.contains(&to) => self.schedule(
                            latency,
                            Delivery::Request {
                                from: node_id,
                                to,
                                conn,
                                request,
                                body,
                                timeout,
                            },
                        ),
                        _ => self.schedule(
                            timeout,
                            Delivery::Event(
                                node_id,
                                Event::ResponseReceived {
                                    request,
                                    result: Err(RpcFailure::Timeout),
                                },
                            ),
                        ),
                    }
                }
                Command::SendResponse {
                    conn,
                    request,
                    body,
                } => {
                    if let Some((sender, req)) = self.inbound.remove(&(node_id, request)) {
                        let _ = conn;
                        self.schedule(
                            latency,
                            Delivery::Response {
                                to: sender,
                                request: req,
                                body,
                            },
                        );
                    }
                }
                Command::OpenStream {
                    conn,
                    stream,
                    message,
                } => {
                    if let Some(to) = peer.links.get(&conn).copied() {
                        let remote = keynode_core::StreamId::Remote(self.next_stream);
                        self.next_stream += 1;
                        self.streams.insert((node_id, stream), (to, remote));
                        self.streams.insert((to, remote), (node_id, stream));
                        self.send_claim(node_id, to, latency, Some(conn), remote, message);
                    }
                }
                Command::StreamSend {
                    stream, message, ..
                } => {
                    if let Some((to, their)) = self.streams.get(&(node_id, stream)).copied() {
                        self.send_claim(node_id, to, latency, None, their, message);
                    }
                }
                Command::CloseConnection { conn, .. } => {
                    if let Some(other) = peer.links.remove(&conn) {
                        if let Some(o) = self.peers.get_mut(&other) {
                            o.links.remove(&conn);
                        }
                        self.schedule(
                            latency,
                            Delivery::Event(other, Event::ConnectionClosed { conn }),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    fn send_claim(
        &mut self,
        from: NodeId,
        to: NodeId,
        latency: Duration,
        open_on: Option<ConnId>,
        stream: keynode_core::StreamId,
        mut message: keynode_core::wire::ClaimMessage,
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
        self.schedule(latency, Delivery::Event(to, event));
    }

    /// Opens a claim stream from `from` to `to` on their connection, as if
    /// `from` had sent `message` (replays, forged first messages).
    pub fn inject_stream_open(
        &mut self,
        from: NodeId,
        to: NodeId,
        message: keynode_core::wire::ClaimMessage,
    ) -> bool {
        let Some(conn) = self.peers[&from]
            .links
            .iter()
            .find(|(_, peer)| **peer == to)
            .map(|(c, _)| *c)
        else {
            return false;
        };
        let remote = keynode_core::StreamId::Remote(self.next_stream);
        self.next_stream += 1;
        let local = keynode_core::StreamId::Local(u64::MAX - self.next_stream);
        self.streams.insert((from, local), (to, remote));
        self.streams.insert((to, remote), (from, local));
        let latency = self.latency;
        self.send_claim(from, to, latency, Some(conn), remote, message);
        true
    }

    /// Delivers the next thing due, or runs the next timer. False when idle.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        let next_delivery = self.queue.first_key_value().map(|(k, _)| k.0);
        let next_timer = self
            .peers
            .iter()
            .filter(|(id, _)| !self.offline.contains(id))
            .filter_map(|(id, p)| p.node.poll_timeout().map(|(t, _)| (t, *id)))
            .min();
        match (next_delivery, next_timer) {
            (Some(d), Some((t, _))) if t < d => self.fire_timer(),
            (Some(_), _) => self.deliver(),
            (None, Some(_)) => self.fire_timer(),
            (None, None) => false,
        }
    }

    fn fire_timer(&mut self) -> bool {
        let Some((t, id)) = self
            .peers
            .iter()
            .filter(|(id, _)| !self.offline.contains(id))
            .filter_map(|(id, p)| p.node.poll_timeout().map(|(t, _)| (t, *id)))
            .min()
        else {
            return false;
        };
        if t > self.now.mono {
            self.now = self.now.advanced(t - self.now.mono);
        }
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
        if at > self.now.mono {
            self.now = self.now.advanced(at - self.now.mono);
        }
        let now = self.now;
        match delivery {
            Delivery::Event(to, event) => {
                if self.offline.contains(&to) {
                    return true;
                }
                if let Some(p) = self.peers.get_mut(&to) {
                    p.node.handle(now, event);
                }
                self.pump(to);
            }
            Delivery::Dial {
                from,
                attempt,
                to,
                expected,
                timeout,
            } => {
                if self.offline.contains(&to) {
                    self.schedule(
                        timeout,
                        Delivery::Event(
                            from,
                            Event::ConnectFailed {
                                attempt,
                                failure: keynode_core::ConnectFailure::Timeout,
                            },
                        ),
                    );
                    return true;
                }
                if to != expected {
                    self.schedule(
                        self.latency,
                        Delivery::Event(
                            from,
                            Event::ConnectFailed {
                                attempt,
                                failure: keynode_core::ConnectFailure::WrongNodeId { found: to },
                            },
                        ),
                    );
                    return true;
                }
                let conn = ConnId(self.next_conn);
                self.next_conn += 1;
                let from_address = self.peers[&from].address;
                let to_address = self.peers[&to].address;
                if let Some(p) = self.peers.get_mut(&to) {
                    p.links.insert(conn, from);
                    p.node.handle(
                        now,
                        Event::ConnectionUp {
                            conn,
                            peer: from,
                            remote: from_address,
                            attempt: None,
                        },
                    );
                }
                self.pump(to);
                if let Some(p) = self.peers.get_mut(&from) {
                    p.links.insert(conn, to);
                }
                self.schedule(
                    self.latency,
                    Delivery::Event(
                        from,
                        Event::ConnectionUp {
                            conn,
                            peer: to,
                            remote: to_address,
                            attempt: Some(attempt),
                        },
                    ),
                );
            }
            Delivery::Request {
                from,
                to,
                conn,
                request,
                body,
                timeout,
            } => {
                if self.offline.contains(&to) {
                    self.schedule(
                        timeout,
                        Delivery::Event(
                            from,
                            Event::ResponseReceived {
                                request,
                                result: Err(RpcFailure::Timeout),
                            },
                        ),
                    );
                    return true;
                }
                let peer_request = PeerRequestId(request.0);
                self.inbound.insert((to, peer_request), (from, request));
                if let Some(p) = self.peers.get_mut(&to) {
                    p.node.handle(
                        now,
                        Event::RequestReceived {
                            conn,
                            request: peer_request,
                            body,
                        },
                    );
                }
                self.pump(to);
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
                if let Some(p) = self.peers.get_mut(&to) {
                    p.node.handle(
                        now,
                        Event::ResponseReceived {
                            request,
                            result: Ok(body),
                        },
                    );
                }
                self.pump(to);
            }
        }
        true
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

    pub fn done(&self, node: NodeId, op: OpId) -> Option<Result<OpValue, OpError>> {
        self.peers[&node].outputs.iter().find_map(|o| match o {
            Output::Done { op: o, result } if *o == op => Some(result.clone()),
            _ => None,
        })
    }

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

    pub fn set_offline(&mut self, id: NodeId, offline: bool) {
        if offline {
            self.offline.insert(id);
        } else {
            self.offline.remove(&id);
        }
    }
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

/// A queue of scripted responses, for tests that answer by hand.
pub type Scripted = VecDeque<Command>;

/// The connection attempts among `cmds`, in order.
pub fn connects(cmds: &[Command]) -> Vec<(keynode_core::AttemptId, NodeId, SocketAddr)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Connect {
                attempt,
                node_id,
                address,
                ..
            } => Some((*attempt, *node_id, *address)),
            _ => None,
        })
        .collect()
}
