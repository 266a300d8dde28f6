//! State-machine fuzzing of one `NodeManager` (STYLE.md §11): the input
//! becomes up to 64 steps (user calls, driver events, time passing) and the
//! manager's invariants are checked after every step:
//! - no bucket holds more than k contacts, no pending list more than its
//!   bound, and the own NodeId is never a contact;
//! - every `OpId` ends in at most one `Output::Done`, and only ops handed to
//!   the caller end in one;
//! - at the end, after `stop`, every op handed out has ended exactly once;
//! - a small reference model: after `unset_node` the node is neither a
//!   contact nor pending.
//!
//! The fuzzer plays the driver and keeps its contract: it answers only
//! attempts, requests, batches and resolutions the manager asked for, each
//! once; connection ids are fresh; a closed connection's requests fail with
//! `ConnectionClosed` before it is reported closed (as the net layer does).
//! So a failed check is a bug in the core, not in the harness.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use keynode_core::claims::{ClaimId, KeyPair, Signature, SignedClaim};
use keynode_core::testing::{self, Connect, Driver, Outgoing};
use keynode_core::wire::{RefusalReason, Request, Response};
use keynode_core::{
    AttemptId, BatchId, BucketIndex, Config, ConnId, ConnectFailure, ConnectionErrorCode,
    ContactMode, Event, FindOptions, Hostname, NodeAddress, NodeAddressScopes, NodeContact,
    NodeContactAddressData, NodeId, NodeManager, Now, OpId, Output, PeerRequestId, RequestId,
    ResolveId, RpcFailure, SeedNodes, StoreBatch,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const MAX_STEPS: usize = 64;
const UNIX_MS: u64 = 1_700_000_000_000;
/// More commands than this after one step means `poll` never runs dry
/// (the drain panics: a livelock).
const MAX_COMMANDS: usize = 100_000;

/// One monotonic instant per process; inputs run on virtual time from it.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

static KEY: LazyLock<KeyPair> =
    LazyLock::new(|| KeyPair::from_seed(&[1; 32]).expect("a valid seed"));

/// The own NodeId and eight others: five in the farthest bucket, two in the
/// next, one in the closest, so small buckets overflow.
static POOL: LazyLock<Vec<NodeId>> = LazyLock::new(|| {
    let own = KEY.node_id();
    let with = |byte: usize, xor: u8| {
        let mut bytes = *own.as_bytes();
        bytes[byte] ^= xor;
        NodeId::from_bytes(bytes)
    };
    let mut pool = vec![own];
    pool.extend((0..5).map(|i| with(0, 0x80 | i)));
    pool.extend((0..2).map(|i| with(0, 0x40 | i)));
    pool.push(with(31, 1));
    pool
});

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Peer {
    Pool(u8),
    Raw([u8; 32]),
}

impl Peer {
    fn id(self) -> NodeId {
        match self {
            Peer::Pool(i) => POOL[usize::from(i) % POOL.len()],
            Peer::Raw(bytes) => NodeId::from_bytes(bytes),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    V4([u8; 4], u16),
    V6([u8; 16], u16),
    /// A hostname: the manager asks for it to be resolved.
    Host(u8, u16),
}

impl Addr {
    fn socket(self) -> SocketAddr {
        match self {
            Addr::V4(ip, port) => SocketAddr::new(IpAddr::from(ip), port),
            Addr::V6(ip, port) => SocketAddr::new(IpAddr::from(ip), port),
            Addr::Host(n, port) => SocketAddr::new(IpAddr::from([10, 0, 0, n]), port),
        }
    }

    fn node_address(self) -> NodeAddress {
        match self {
            Addr::Host(n, port) => format!("node{}.example:{port}", n % 4)
                .parse()
                .unwrap_or_else(|_| NodeAddress::from(self.socket())),
            _ => NodeAddress::from(self.socket()),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Data {
    mode: u8,
    connected_time: u32,
    local: bool,
    global: bool,
}

impl Data {
    fn get(self) -> NodeContactAddressData {
        NodeContactAddressData {
            mode: match self.mode % 3 {
                0 => ContactMode::Direct,
                1 => ContactMode::Signal,
                _ => ContactMode::Relay,
            },
            connected_time: u64::from(self.connected_time),
            scopes: NodeAddressScopes {
                local: self.local,
                global: self.global,
            },
        }
    }
}

/// A claim as a peer might send it (signatures rarely valid).
#[derive(Arbitrary, Debug)]
struct Claim {
    payload: Vec<u8>,
    signatures: Vec<(Peer, [u8; 64])>,
}

#[derive(Arbitrary, Debug)]
enum Answer {
    ClosestNodes {
        active: Vec<Peer>,
        contacts: Vec<(Peer, Addr, Data)>,
    },
    Signal(Addr),
    Ack,
    ChainData(Vec<Claim>),
    Refused(u8),
    Failed(u8),
}

impl Answer {
    fn get(self) -> Result<Response, RpcFailure> {
        Ok(match self {
            Answer::ClosestNodes { active, contacts } => Response::ClosestNodes {
                active: active.into_iter().map(Peer::id).collect(),
                contacts: contacts
                    .into_iter()
                    .map(|(p, a, d)| (p.id(), NodeContact::new(a.node_address(), d.get())))
                    .collect(),
            },
            Answer::Signal(a) => Response::Signal {
                target_address: a.socket(),
            },
            Answer::Ack => Response::Ack,
            Answer::ChainData(claims) => Response::ChainData {
                claims: claims
                    .into_iter()
                    .map(|c| SignedClaim {
                        payload: c.payload,
                        signatures: c
                            .signatures
                            .into_iter()
                            .map(|(p, s)| (p.id(), Signature(s)))
                            .collect(),
                    })
                    .collect(),
            },
            Answer::Refused(r) => Response::Refused(match r % 3 {
                0 => RefusalReason::NotConnected,
                1 => RefusalReason::RateLimited,
                _ => RefusalReason::Stopping,
            }),
            Answer::Failed(f) => {
                return Err(match f % 3 {
                    0 => RpcFailure::Timeout,
                    1 => RpcFailure::ConnectionClosed,
                    _ => RpcFailure::InvalidResponse(keynode_core::wire::DecodeError::Empty),
                });
            }
        })
    }
}

#[derive(Arbitrary, Debug)]
enum Ask {
    ClosestNodes(Peer),
    Signal(Peer),
    ChainData { from: Option<[u8; 16]>, limit: u32 },
    SignalFinal(Peer, Addr),
}

impl Ask {
    fn get(self) -> Request {
        match self {
            Ask::ClosestNodes(p) => Request::ClosestNodes { target: p.id() },
            Ask::Signal(p) => Request::Signal { target: p.id() },
            Ask::ChainData { from, limit } => Request::ChainData {
                from: from.map(ClaimId),
                limit,
            },
            Ask::SignalFinal(p, a) => Request::SignalFinal {
                source: p.id(),
                source_address: a.socket(),
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    // User calls.
    SetNode {
        peer: Peer,
        addr: Addr,
        data: Data,
        block: bool,
        force: bool,
    },
    UnsetNode(Peer),
    FindNode {
        peer: Peer,
        strategy: u8,
        short: bool,
    },
    PingNode(Peer),
    SyncNodeGraph {
        seeds: u8,
        blocking: bool,
    },
    RefreshBucket(u8),
    GarbageCollect(u8),
    RequestChainData(Peer),
    Cancel(u8),
    // Driver events, answering what the manager asked.
    ConnectionUp(u8),
    ConnectFailed {
        attempt: u8,
        failure: u8,
    },
    Inbound {
        peer: Peer,
        addr: Addr,
    },
    ConnectionClosed(u8),
    Response {
        request: u8,
        answer: Answer,
    },
    RequestReceived {
        conn: u8,
        ask: Ask,
    },
    StoreCommitted(u8),
    StoreFailed(u8),
    Resolved {
        resolve: u8,
        ok: bool,
    },
    // Time.
    Advance(u16),
    NextTimer,
}

#[derive(Arbitrary, Debug)]
struct Input {
    k: u8,
    max_pending: u8,
    /// Commit every store batch at once (otherwise only `StoreCommitted` does).
    auto_commit: bool,
    steps: Vec<Step>,
}

/// Removes and returns the `i`-th (mod len) element of a list of outstanding ids.
fn pick<T>(list: &mut Vec<T>, i: u8) -> Option<T> {
    if list.is_empty() {
        None
    } else {
        let i = usize::from(i) % list.len();
        Some(list.remove(i))
    }
}

struct Harness {
    node: NodeManager,
    now: Now,
    auto_commit: bool,
    /// Ops handed to the caller, and how many times each ended.
    handed: BTreeMap<OpId, usize>,
    attempts: Vec<(AttemptId, NodeId, SocketAddr)>,
    /// Connections up (or closing at the manager's request), oldest first.
    conns: Vec<ConnId>,
    requests: Vec<(RequestId, ConnId)>,
    batches: Vec<BatchId>,
    resolves: Vec<ResolveId>,
    next_conn: u64,
    next_peer_request: u64,
}

impl Harness {
    fn new(input: &Input) -> Self {
        let mut config = Config::default();
        config.k = 1 + usize::from(input.k % 3);
        config.max_pending_per_bucket = usize::from(input.max_pending % 3);
        let now = Now::new(*BASE, UNIX_MS);
        let node = NodeManager::new(config, KEY.clone(), now, [7; 32]).expect("a valid config");
        let mut h = Self {
            node,
            now,
            auto_commit: input.auto_commit,
            handed: BTreeMap::new(),
            attempts: Vec::new(),
            conns: Vec::new(),
            requests: Vec::new(),
            batches: Vec::new(),
            resolves: Vec::new(),
            next_conn: 1,
            next_peer_request: 1,
        };
        let op = h.node.start(now);
        h.handed(op);
        h.drain();
        h
    }

    fn handed(&mut self, op: Result<OpId, keynode_core::ApiError>) {
        if let Ok(op) = op {
            let before = self.handed.insert(op, 0);
            assert!(before.is_none(), "{op} handed out twice");
        }
    }

    fn handle(&mut self, event: Event) {
        self.node.handle(self.now, event);
    }

    /// Takes every command, as a driver would (the shared loop; this
    /// harness's hooks are in its `Driver` impl below).
    fn drain(&mut self) {
        testing::drain(self, ());
    }

    /// A connection goes down: its requests fail first, as in the net layer.
    fn close(&mut self, conn: ConnId) {
        let (failed, kept): (Vec<_>, Vec<_>) = self.requests.iter().partition(|(_, c)| *c == conn);
        self.requests = kept;
        for (request, _) in failed {
            self.handle(Event::ResponseReceived {
                request,
                result: Err(RpcFailure::ConnectionClosed),
            });
        }
        self.handle(Event::ConnectionClosed { conn });
    }

    fn fresh_conn(&mut self) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.push(conn);
        conn
    }

    fn step(&mut self, step: Step) {
        let now = self.now;
        match step {
            Step::SetNode {
                peer,
                addr,
                data,
                block,
                force,
            } => {
                let op = self.node.set_node(
                    now,
                    peer.id(),
                    addr.node_address(),
                    data.get(),
                    block,
                    force,
                    None,
                );
                self.handed(op);
            }
            Step::UnsetNode(peer) => {
                let id = peer.id();
                let op = self.node.unset_node(now, id);
                if op.is_ok() {
                    // The model: an unset node is gone, contact and pending entry.
                    let graph = self.node.graph();
                    assert!(
                        !graph.contains(&id) && graph.get_pending(&id).is_none(),
                        "{id} still in the graph after unset_node"
                    );
                }
                self.handed(op);
            }
            Step::FindNode {
                peer,
                strategy,
                short,
            } => {
                let options = FindOptions {
                    timeout: short.then_some(Duration::from_secs(5)),
                    ..FindOptions::default()
                };
                let op = match strategy % 4 {
                    0 => self.node.find_node(now, peer.id(), options),
                    1 => self.node.find_node_by_direct(now, peer.id(), options),
                    2 => self.node.find_node_by_signal(now, peer.id(), options),
                    _ => self.node.find_node_by_mdns(now, peer.id(), options),
                };
                self.handed(op);
            }
            Step::PingNode(peer) => {
                let op = self.node.ping_node(now, peer.id(), FindOptions::default());
                self.handed(op);
            }
            Step::SyncNodeGraph { seeds, blocking } => {
                let seeds = SeedNodes::new(
                    POOL.iter()
                        .enumerate()
                        .skip(1)
                        .filter(|(i, _)| seeds & (1 << (i - 1)) != 0)
                        .map(|(i, id)| {
                            (*id, NodeAddress::from(Addr::Host(i as u8, 1314).socket()))
                        }),
                );
                let op = self.node.sync_node_graph(now, &seeds, None, blocking);
                self.handed(op);
            }
            Step::RefreshBucket(b) => {
                let op = self.node.refresh_bucket(now, BucketIndex::new(b), None);
                self.handed(op);
            }
            Step::GarbageCollect(b) => {
                let op = self
                    .node
                    .garbage_collect_bucket(now, BucketIndex::new(b), None);
                self.handed(op);
            }
            Step::RequestChainData(peer) => {
                let op = self.node.request_chain_data(now, peer.id(), None, None);
                self.handed(op);
            }
            Step::Cancel(i) => {
                let ops: Vec<OpId> = self.handed.keys().copied().collect();
                if !ops.is_empty() {
                    let _ = self.node.cancel(now, ops[usize::from(i) % ops.len()]);
                }
            }
            Step::ConnectionUp(i) => {
                if let Some((attempt, peer, remote)) = pick(&mut self.attempts, i) {
                    let conn = self.fresh_conn();
                    self.handle(Event::ConnectionUp {
                        conn,
                        peer,
                        remote,
                        attempt: Some(attempt),
                    });
                }
            }
            Step::ConnectFailed { attempt, failure } => {
                if let Some((attempt, _, _)) = pick(&mut self.attempts, attempt) {
                    let failure = match failure % 4 {
                        0 => ConnectFailure::Timeout,
                        1 => ConnectFailure::WrongNodeId {
                            found: POOL[usize::from(failure) % POOL.len()],
                        },
                        2 => ConnectFailure::Resolve {
                            hostname: "fuzz.invalid"
                                .parse::<Hostname>()
                                .expect("a valid hostname"),
                            kind: std::io::ErrorKind::NotFound,
                        },
                        _ => ConnectFailure::NoPeerCertificate,
                    };
                    self.handle(Event::ConnectFailed { attempt, failure });
                }
            }
            Step::Inbound { peer, addr } => {
                let conn = self.fresh_conn();
                self.handle(Event::ConnectionUp {
                    conn,
                    peer: peer.id(),
                    remote: addr.socket(),
                    attempt: None,
                });
            }
            Step::ConnectionClosed(i) => {
                if let Some(conn) = pick(&mut self.conns, i) {
                    self.close(conn);
                }
            }
            Step::Response { request, answer } => {
                if let Some((request, _)) = pick(&mut self.requests, request) {
                    self.handle(Event::ResponseReceived {
                        request,
                        result: answer.get(),
                    });
                }
            }
            Step::RequestReceived { conn, ask } => {
                if !self.conns.is_empty() {
                    let conn = self.conns[usize::from(conn) % self.conns.len()];
                    let request = PeerRequestId(self.next_peer_request);
                    self.next_peer_request += 1;
                    self.handle(Event::RequestReceived {
                        conn,
                        request,
                        body: ask.get(),
                    });
                }
            }
            Step::StoreCommitted(i) => {
                if let Some(batch) = pick(&mut self.batches, i) {
                    self.handle(Event::StoreCommitted(batch));
                }
            }
            Step::StoreFailed(i) => {
                if let Some(batch) = pick(&mut self.batches, i) {
                    self.handle(Event::StoreFailed {
                        batch,
                        error: keynode_core::StoreErrorKind::MapFull,
                    });
                }
            }
            Step::Resolved { resolve, ok } => {
                if let Some(resolve) = pick(&mut self.resolves, resolve) {
                    let result = if ok {
                        Ok(vec![IpAddr::from([10, 0, 1, resolve.0 as u8])])
                    } else {
                        Err(std::io::ErrorKind::NotFound)
                    };
                    self.handle(Event::Resolved { resolve, result });
                }
            }
            Step::Advance(ms) => {
                self.now = now.advanced(Duration::from_millis(u64::from(ms) * 10));
                self.node.handle_timeout(self.now);
            }
            Step::NextTimer => {
                if let Some((at, _)) = self.node.poll_timeout() {
                    if at > now.mono {
                        self.now = now.advanced(at - now.mono);
                    }
                    self.node.handle_timeout(self.now);
                }
            }
        }
        self.drain();
    }

    fn check(&self) {
        let graph = self.node.graph();
        let config = self.node.config();
        for (index, size) in graph.bucket_sizes() {
            assert!(
                size <= graph.k(),
                "bucket {index} holds {size} contacts, k is {}",
                graph.k()
            );
        }
        let mut pending: BTreeMap<BucketIndex, usize> = BTreeMap::new();
        for p in graph.iter_pending() {
            if let Some(index) = graph.bucket_index(&p.node_id) {
                *pending.entry(index).or_default() += 1;
            }
        }
        for (index, size) in pending {
            assert!(
                size <= config.max_pending_per_bucket,
                "bucket {index} has {size} pending, the bound is {}",
                config.max_pending_per_bucket
            );
        }
        let own = self.node.node_id();
        assert!(!graph.contains(&own), "the own NodeId is a contact");
    }

    /// `stop` ends every op: each handed out must have ended exactly once.
    fn finish(mut self) {
        let _ = self.node.stop(self.now);
        self.drain();
        let open: BTreeSet<OpId> = self
            .handed
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(op, _)| *op)
            .collect();
        assert!(open.is_empty(), "ops never ended after stop: {open:?}");
    }
}

/// The fuzzer's driver: it records what the manager asked for, so that the
/// input bytes choose which of those is answered, and how.
impl Driver for Harness {
    type Host = ();
    const MAX_COMMANDS: usize = MAX_COMMANDS;

    fn manager(&mut self, _: ()) -> Option<&mut NodeManager> {
        Some(&mut self.node)
    }

    fn now(&self) -> Now {
        self.now
    }

    fn output(&mut self, _: (), output: Output) {
        if let Output::Done { op, .. } = output {
            match self.handed.get_mut(&op) {
                Some(count) => {
                    *count += 1;
                    assert!(*count == 1, "{op} ended {count} times");
                }
                None => panic!("{op} ended but was never handed to the caller"),
            }
        }
    }

    fn store(&mut self, _: (), batch: StoreBatch) {
        if self.auto_commit {
            testing::commit(self, (), &batch);
        } else {
            self.batches.push(batch.id);
        }
    }

    fn connect(&mut self, _: (), c: Connect) {
        self.attempts.push((c.attempt, c.node_id, c.address));
    }

    fn send_request(&mut self, _: (), r: Outgoing) {
        if self.conns.contains(&r.conn) {
            self.requests.push((r.request, r.conn));
        } else {
            self.handle(Event::ResponseReceived {
                request: r.request,
                result: Err(RpcFailure::ConnectionClosed),
            });
        }
    }

    fn resolve(&mut self, _: (), resolve: ResolveId, _: Hostname) {
        self.resolves.push(resolve);
    }

    // Answers go out unheard; closing is reported by `ConnectionClosed` when
    // the fuzzer says so; streams, mDNS and punches are not modelled (the
    // defaults).
    fn send_response(&mut self, _: (), _: ConnId, _: PeerRequestId, _: Response) {}

    fn close(&mut self, _: (), _: ConnId, _: ConnectionErrorCode) {}
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(&input);
    h.check();
    for step in input.steps.into_iter().take(MAX_STEPS) {
        h.step(step);
        h.check();
    }
    h.finish();
});
