//! Application streams and datagrams between two real QUIC [`Node`]s on an
//! in-memory network: node A (the peer) dials node B and holds the
//! connection; B registers a few protocols, two with small caps on inbound
//! streams. The input is a list of actions: A opens streams that start with
//! any bytes where the protocol header belongs (a registered name, an
//! unknown one, keynode's own RPC or another reserved name, a header cut
//! short, an empty or overlong length), writes raw bytes, bulk data or
//! keynode RPC frames (valid requests, claim messages, garbage, overlong
//! lengths), finishes, resets, stops, reads and (misusing the API)
//! refuses them, and sends datagrams with any header; B reads, writes,
//! finishes, resets, stops and refuses what came in, and registers and
//! deregisters protocols; time passes (one network hop after every action,
//! more when asked). So the header decoding and the routing of every
//! inbound stream role (header, RPC, application, answered, claim) run on
//! real QUIC.
//!
//! Checked after every action:
//! - nothing panics;
//! - no protocol has more inbound streams than its cap;
//! - B's stream table holds no more inbound streams than quinn lets A have
//!   open (B's stream limits): an entry beyond them is one quinn has freed;
//! - B hears of a stream (`Incoming`) only for a protocol registered at
//!   that moment, named by the stream's first bytes, from A; and what B
//!   reads of it is what A wrote after that header (a prefix of it); what
//!   A reads of a stream B writes is a prefix of what B wrote;
//! - a datagram B takes is one A sent, header removed, of a registered
//!   protocol.
//!
//! At the end both sides give up every stream (reset and stop, those that
//! come in meanwhile too) while the network runs for two virtual seconds,
//! and the managers' own requests in flight are answered: then both nodes'
//! stream tables are empty and no protocol counts an inbound stream.
//!
//! Two nodes and a handshake per input (a quinn connection cannot be
//! cloned): about 2 ms, most of it key generation, signatures and key
//! exchange; inputs are at most `MAX_ACTIONS` actions.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use keynode_core::claims::{AbortReason, SignedClaim};
use keynode_core::net::{
    AppEvent, DriverEvent, NetCommand, NetConfig, Node, Protocol, ProtocolOptions, StreamDir,
    StreamHandle, StreamTables,
};
use keynode_core::wire::{self, ClaimMessage, Frame, Request, Response};
use keynode_core::{
    Config, ConnId, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId,
    Now, OpError, OpId, OpValue, UserCall,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// One monotonic instant per process; inputs run on virtual time from it.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

const UNIX_MS: u64 = 1_700_000_000_000;
const MAX_ACTIONS: usize = 48;
/// More commands than this in one drain means `poll` never runs dry.
const MAX_COMMANDS: usize = 100_000;
/// More network steps than this in one wait is a livelock.
const MAX_STEPS: usize = 100_000;
const LATENCY: Duration = Duration::from_millis(2);
/// The frame limit (`Config::default().max_message_size`).
const MAX_FRAME: usize = 64 * 1024;

const A: usize = 0;
const B: usize = 1;

/// B's limits: few streams at once, and small flow-control windows, so
/// that A runs into them (blocked headers and writes, stream credit).
const B_BI: u32 = 6;
const B_UNI: u32 = 6;
const B_STREAM_WINDOW: u32 = 4 * 1024;
const B_WINDOW: u32 = 8 * 1024;

/// Names A's headers may carry; B registers the first three at the start
/// with these caps (the third is as long as a name may be).
const NAMES: [&[u8]; 6] = [
    b"fz/one",
    b"fz/two",
    b"fz/long-name-of-sixty-four-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    b"fz/unregistered",
    b"keynode/rpc/1",
    b"keynode/other/1",
];
const CAPS: [usize; 3] = [1, 2, 8];

fn address(host: usize) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1 + host as u8], 4000))
}

fn start() -> Now {
    Now::new(*BASE, UNIX_MS)
}

/// A name's header: its length byte, then the name.
fn header_of(name: &[u8]) -> Vec<u8> {
    let mut header = vec![name.len() as u8];
    header.extend_from_slice(name);
    header
}

/// A registrable protocol of `NAMES` (one of the first four).
fn protocol(i: usize) -> Protocol {
    Protocol::new(NAMES[i % 4].to_vec()).expect("a valid name")
}

/// The number in a handle's QUIC stream id, the same on both ends of the
/// stream (the handle shows it only in its `Debug` form), so that what B
/// reads can be matched with what A wrote.
fn stream_id(h: StreamHandle) -> u64 {
    let text = format!("{h:?}");
    let digits = text
        .rsplit("id: ")
        .next()
        .unwrap_or_default()
        .trim_end_matches([' ', '}']);
    digits.parse().expect("a stream handle shows its id")
}

#[derive(Debug)]
enum HeaderBytes {
    /// The header of one of `NAMES`.
    Name(u8),
    /// The header of one of `NAMES`, cut after this many bytes.
    Cut(u8, u8),
    /// A length byte (often an invalid one) and a name.
    Length(u8, Vec<u8>),
    /// Any bytes.
    Raw(Vec<u8>),
}

impl HeaderBytes {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Name(i) => header_of(NAMES[usize::from(*i) % NAMES.len()]),
            Self::Cut(i, cut) => {
                let mut h = header_of(NAMES[usize::from(*i) % NAMES.len()]);
                h.truncate(usize::from(*cut) % h.len());
                h
            }
            Self::Length(len, name) => {
                let mut h = vec![*len];
                h.extend_from_slice(name);
                h
            }
            Self::Raw(bytes) => bytes.clone(),
        }
    }
}

#[derive(Debug)]
enum Target {
    A,
    B,
    Other(u8),
}

impl Target {
    fn id(&self, ids: &[NodeId; 2]) -> NodeId {
        match self {
            Self::A => ids[A],
            Self::B => ids[B],
            Self::Other(n) => NodeId::from_bytes([*n; 32]),
        }
    }
}

/// One frame of keynode's RPC framing (4-byte big-endian length, message).
#[derive(Debug)]
enum RpcFrame {
    ClosestNodes(Target),
    Signal(Target),
    ChainData(u32),
    SignalFinal(Target, u16),
    /// A response nobody asked for.
    Ack,
    /// A claim exchange's first message, unsigned.
    ClaimRequest(Vec<u8>),
    ClaimAbort,
    /// A length prefix and bytes that need not match it nor be a message.
    Raw(u32, Vec<u8>),
}

impl RpcFrame {
    fn bytes(&self, ids: &[NodeId; 2]) -> Vec<u8> {
        let frame = match self {
            Self::ClosestNodes(t) => Frame::Request(Request::ClosestNodes { target: t.id(ids) }),
            Self::Signal(t) => Frame::Request(Request::Signal { target: t.id(ids) }),
            Self::ChainData(limit) => Frame::Request(Request::ChainData {
                from: None,
                limit: *limit,
            }),
            Self::SignalFinal(t, port) => Frame::Request(Request::SignalFinal {
                source: t.id(ids),
                source_address: SocketAddr::from(([192, 0, 2, 9], *port)),
            }),
            Self::Ack => Frame::Response(Response::Ack),
            Self::ClaimRequest(payload) => Frame::Claim(ClaimMessage::Request(SignedClaim {
                payload: payload.clone(),
                signatures: Vec::new(),
            })),
            Self::ClaimAbort => Frame::Claim(ClaimMessage::Abort(AbortReason::Invalid)),
            Self::Raw(len, body) => {
                let mut bytes = len.to_be_bytes().to_vec();
                bytes.extend_from_slice(body);
                return bytes;
            }
        };
        let message = wire::encode(&frame, MAX_FRAME).expect("a small frame encodes");
        let mut bytes = (message.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&message);
        bytes
    }
}

#[derive(Debug)]
enum Payload {
    Bytes(Vec<u8>),
    /// `n % 32 + 1` KiB of filler: enough to fill B's windows.
    Bulk(u8),
    Frames(Vec<RpcFrame>),
}

impl Payload {
    fn bytes(&self, ids: &[NodeId; 2]) -> Vec<u8> {
        match self {
            Self::Bytes(b) => b.clone(),
            Self::Bulk(k) => vec![0xa5; (usize::from(*k) % 32 + 1) * 1024],
            Self::Frames(frames) => frames.iter().flat_map(|f| f.bytes(ids)).collect(),
        }
    }
}

#[derive(Debug)]
enum Action {
    // The peer, A, on the streams it opened.
    Open {
        bi: bool,
        header: HeaderBytes,
    },
    Write(u8, Payload),
    Finish(u8),
    Reset(u8, u8),
    Stop(u8, u8),
    Read(u8),
    /// `refuse` on a stream of A's own: misuse, which must not panic.
    Refuse(u8),
    Datagram(HeaderBytes, Vec<u8>),
    // The receiver, B, on the streams it was told of.
    BRead(u8, u16),
    BWrite(u8, Payload),
    BFinish(u8),
    BReset(u8, u8),
    BStop(u8, u8),
    BRefuse(u8),
    Deregister(u8),
    Register(u8, u8),
    /// More time passes than the hop after every action: `n²`
    /// milliseconds (up to about 65 s).
    Run(u8),
}

// The input's actions, decoded by hand rather than derived: a derived
// enum spends four input bytes on its variant, these spend one, so that
// short inputs (those of a 20-second run) hold sequences long enough to
// open a stream, write, read and end it.

/// One of `n` variants, from one byte.
fn variant(u: &mut Unstructured<'_>, n: u8) -> arbitrary::Result<u8> {
    u.int_in_range(0..=n - 1)
}

impl<'a> Arbitrary<'a> for HeaderBytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, 4)? {
            0 => Self::Name(u.arbitrary()?),
            1 => Self::Cut(u.arbitrary()?, u.arbitrary()?),
            2 => Self::Length(u.arbitrary()?, u.arbitrary()?),
            _ => Self::Raw(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Target {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, 3)? {
            0 => Self::A,
            1 => Self::B,
            _ => Self::Other(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for RpcFrame {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, 8)? {
            0 => Self::ClosestNodes(u.arbitrary()?),
            1 => Self::Signal(u.arbitrary()?),
            2 => Self::ChainData(u.arbitrary()?),
            3 => Self::SignalFinal(u.arbitrary()?, u.arbitrary()?),
            4 => Self::Ack,
            5 => Self::ClaimRequest(u.arbitrary()?),
            6 => Self::ClaimAbort,
            _ => Self::Raw(u.arbitrary()?, u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Payload {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, 3)? {
            0 => Self::Bytes(u.arbitrary()?),
            1 => Self::Bulk(u.arbitrary()?),
            _ => Self::Frames(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Action {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match variant(u, 18)? {
            0 => Self::Open {
                bi: u.arbitrary()?,
                header: u.arbitrary()?,
            },
            1 => Self::Write(u.arbitrary()?, u.arbitrary()?),
            2 => Self::Finish(u.arbitrary()?),
            3 => Self::Reset(u.arbitrary()?, u.arbitrary()?),
            4 => Self::Stop(u.arbitrary()?, u.arbitrary()?),
            5 => Self::Read(u.arbitrary()?),
            6 => Self::Refuse(u.arbitrary()?),
            7 => Self::Datagram(u.arbitrary()?, u.arbitrary()?),
            8 => Self::BRead(u.arbitrary()?, u.arbitrary()?),
            9 => Self::BWrite(u.arbitrary()?, u.arbitrary()?),
            10 => Self::BFinish(u.arbitrary()?),
            11 => Self::BReset(u.arbitrary()?, u.arbitrary()?),
            12 => Self::BStop(u.arbitrary()?, u.arbitrary()?),
            13 => Self::BRefuse(u.arbitrary()?),
            14 => Self::Deregister(u.arbitrary()?),
            15 => Self::Register(u.arbitrary()?, u.arbitrary()?),
            16 => Self::Run(u.arbitrary()?),
            // Twice as likely as the rest: most sequences start by opening.
            _ => Self::Open {
                bi: u.arbitrary()?,
                header: u.arbitrary()?,
            },
        })
    }
}

struct World {
    nodes: [Node; 2],
    /// Each node's application events, in order.
    app: [Vec<AppEvent>; 2],
    ids: [NodeId; 2],
    /// Datagrams in flight: (arrival, sequence) → (to, from, bytes).
    queue: BTreeMap<(Instant, u64), (usize, SocketAddr, Vec<u8>)>,
    seq: u64,
    now: Now,
    /// A's finished operations.
    done: BTreeMap<OpId, Result<OpValue, OpError>>,
    /// A's connection to B.
    conn: ConnId,
    /// B's protocols registered now, with their caps.
    registered: BTreeMap<Protocol, usize>,
    /// A's streams, in the order opened.
    a_streams: Vec<StreamHandle>,
    /// Everything A wrote on each stream (its first bytes included), by id.
    a_wrote: BTreeMap<u64, Vec<u8>>,
    /// What A read of each stream, by id.
    a_read: BTreeMap<u64, Vec<u8>>,
    /// Streams B was told of, in order.
    b_streams: Vec<StreamHandle>,
    /// What B wrote on, and read of, each of them, by id.
    b_wrote: BTreeMap<u64, Vec<u8>>,
    b_read: BTreeMap<u64, Vec<u8>>,
    /// B's events already looked at.
    b_seen: usize,
    /// The datagrams A sent, whole.
    datagrams: BTreeSet<Vec<u8>>,
}

impl World {
    /// Two nodes, A's connection to B up and held by A.
    fn new() -> Self {
        let now = start();
        let mut b_net = NetConfig::default();
        b_net.max_concurrent_streams = B_BI;
        b_net.max_concurrent_uni_streams = B_UNI;
        b_net.stream_receive_window = B_STREAM_WINDOW;
        b_net.receive_window = B_WINDOW;
        let make = |n: u8, net| {
            let mut node =
                Node::new(Config::default(), net, &[n; 32], now, [n; 32]).expect("a node");
            let _ = node.call(now, UserCall::Start).expect("start");
            node
        };
        let nodes = [make(1, NetConfig::default()), make(2, b_net)];
        let ids = [nodes[A].node_id(), nodes[B].node_id()];
        let mut w = Self {
            nodes,
            app: [Vec::new(), Vec::new()],
            ids,
            queue: BTreeMap::new(),
            seq: 0,
            now,
            done: BTreeMap::new(),
            conn: ConnId(0),
            registered: BTreeMap::new(),
            a_streams: Vec::new(),
            a_wrote: BTreeMap::new(),
            a_read: BTreeMap::new(),
            b_streams: Vec::new(),
            b_wrote: BTreeMap::new(),
            b_read: BTreeMap::new(),
            b_seen: 0,
            datagrams: BTreeSet::new(),
        };
        for (i, cap) in CAPS.into_iter().enumerate() {
            w.nodes[B]
                .register_protocol(protocol(i), ProtocolOptions::with_max_inbound_streams(cap))
                .expect("registered");
            w.registered.insert(protocol(i), cap);
        }
        w.pump(A);
        w.pump(B);
        let data = NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: 1,
            scopes: NodeAddressScopes::GLOBAL,
        };
        let op = w.call_a(UserCall::SetNode {
            node_id: ids[B],
            address: NodeAddress::from(address(B)),
            data,
            block: false,
            force: true,
            connect_timeout: None,
        });
        let _ = w.wait_done(op);
        let op = w.call_a(UserCall::AcquireConnection {
            node_id: ids[B],
            timeout: None,
        });
        match w.wait_done(op) {
            Ok(OpValue::Connection { conn, .. }) => w.conn = conn,
            other => panic!("A gets no connection to B: {other:?}"),
        }
        w
    }

    fn call_a(&mut self, call: UserCall) -> OpId {
        let now = self.now;
        let op = self.nodes[A].call(now, call).expect("a call");
        self.pump(A);
        op.expect("an operation")
    }

    /// Steps until A's `op` is done.
    fn wait_done(&mut self, op: OpId) -> Result<OpValue, OpError> {
        for _ in 0..MAX_STEPS {
            if let Some(result) = self.done.remove(&op) {
                return result;
            }
            assert!(
                self.step(None),
                "the network went idle before {op} was done"
            );
        }
        panic!("{op} never done");
    }

    /// Carries out every command of node `i`.
    fn pump(&mut self, i: usize) {
        let now = self.now;
        for _ in 0..MAX_COMMANDS {
            let Some(command) = self.nodes[i].poll() else {
                if i == B {
                    self.look_at_b_events();
                }
                return;
            };
            match command {
                NetCommand::Transmit(t) => {
                    // Datagrams elsewhere (a punch a request asked for) are lost.
                    if let Some(to) = (0..2).find(|&n| address(n) == t.destination) {
                        self.seq += 1;
                        self.queue
                            .insert((now.mono + LATENCY, self.seq), (to, address(i), t.contents));
                    }
                }
                NetCommand::Store(batch) => {
                    self.nodes[i].handle(now, DriverEvent::StoreCommitted(batch.id));
                }
                NetCommand::Done { op, result } => {
                    self.done.insert(op, result);
                }
                NetCommand::App(event) => self.app[i].push(event),
                NetCommand::Event(_) | NetCommand::Resolve { .. } | NetCommand::MdnsTransmit(_) => {
                }
            }
        }
        panic!("node {i}: poll did not run dry after {MAX_COMMANDS} commands");
    }

    /// Checks what B was told of since last time.
    fn look_at_b_events(&mut self) {
        while let Some(event) = self.app[B].get(self.b_seen).cloned() {
            self.b_seen += 1;
            match event {
                AppEvent::Incoming {
                    stream,
                    peer,
                    protocol,
                } => {
                    assert_eq!(peer, self.ids[A], "{stream:?} is from A");
                    assert!(
                        self.registered.contains_key(&protocol),
                        "{stream:?} of {protocol}, not registered, came in"
                    );
                    let id = stream_id(stream);
                    let first = self.a_wrote.get(&id).map(Vec::as_slice).unwrap_or_default();
                    assert!(
                        first.starts_with(&header_of(protocol.as_bytes())),
                        "{stream:?} came in as {protocol} but starts with {first:?}"
                    );
                    self.b_wrote.insert(id, Vec::new());
                    self.b_streams.push(stream);
                }
                AppEvent::Datagram {
                    protocol, payload, ..
                } => {
                    assert!(
                        self.registered.contains_key(&protocol),
                        "a datagram of {protocol}, not registered, was taken"
                    );
                    let mut whole = header_of(protocol.as_bytes());
                    whole.extend_from_slice(&payload);
                    assert!(
                        self.datagrams.contains(&whole),
                        "B took a datagram A never sent: {protocol}, {payload:?}"
                    );
                }
                AppEvent::Readable(_)
                | AppEvent::Writable(_)
                | AppEvent::StreamsAvailable { .. }
                | AppEvent::ConnectionLost { .. } => {}
            }
        }
    }

    /// Delivers the next datagram or runs the next timer, if it is due by
    /// `until`; false if there was none.
    fn step(&mut self, until: Option<Instant>) -> bool {
        let next_datagram = self.queue.first_key_value().map(|(k, _)| k.0);
        let next_timer = (0..2)
            .filter_map(|i| self.nodes[i].poll_timeout().map(|(t, _)| (t, i)))
            .min();
        let (at, timer) = match (next_datagram, next_timer) {
            (Some(d), Some((t, _))) if d <= t => (d, None),
            (Some(d), None) => (d, None),
            (_, Some((t, i))) => (t, Some(i)),
            (None, None) => return false,
        };
        if until.is_some_and(|u| at > u) {
            return false;
        }
        if at > self.now.mono {
            self.now = self.now.advanced(at - self.now.mono);
        }
        let now = self.now;
        match timer {
            Some(i) => {
                self.nodes[i].handle_timeout(now);
                self.pump(i);
            }
            None => {
                let Some((_, (to, from, bytes))) = self.queue.pop_first() else {
                    return false;
                };
                self.nodes[to].handle(
                    now,
                    DriverEvent::Datagram {
                        from,
                        bytes: &bytes,
                    },
                );
                self.pump(to);
            }
        }
        true
    }

    /// Runs the network for `d` of virtual time.
    fn run_for(&mut self, d: Duration) {
        let until = self.now.mono + d;
        for _ in 0..MAX_STEPS {
            if !self.step(Some(until)) {
                if until > self.now.mono {
                    self.now = self.now.advanced(until - self.now.mono);
                }
                return;
            }
        }
        panic!("{MAX_STEPS} steps in {d:?}: a livelock");
    }

    fn a_stream(&self, i: u8) -> Option<StreamHandle> {
        let n = self.a_streams.len();
        (n > 0).then(|| self.a_streams[usize::from(i) % n])
    }

    fn b_stream(&self, i: u8) -> Option<StreamHandle> {
        let n = self.b_streams.len();
        (n > 0).then(|| self.b_streams[usize::from(i) % n])
    }

    fn act(&mut self, action: &Action) {
        let now = self.now;
        let conn = self.conn;
        match action {
            Action::Open { bi, header } => {
                let dir = if *bi { StreamDir::Bi } else { StreamDir::Uni };
                let first = header.bytes();
                if let Ok(h) = self.nodes[A].open_raw_stream(now, conn, dir, &first) {
                    self.a_streams.push(h);
                    self.a_wrote.insert(stream_id(h), first);
                }
            }
            Action::Write(i, payload) => {
                if let Some(h) = self.a_stream(*i) {
                    let bytes = payload.bytes(&self.ids);
                    if let Ok(n) = self.nodes[A].write(now, h, &bytes) {
                        let wrote = self.a_wrote.entry(stream_id(h)).or_default();
                        wrote.extend_from_slice(&bytes[..n]);
                    }
                }
            }
            Action::Finish(i) => {
                if let Some(h) = self.a_stream(*i) {
                    let _ = self.nodes[A].finish(now, h);
                }
            }
            Action::Reset(i, code) => {
                if let Some(h) = self.a_stream(*i) {
                    let _ = self.nodes[A].reset(now, h, u32::from(*code));
                }
            }
            Action::Stop(i, code) => {
                if let Some(h) = self.a_stream(*i) {
                    let _ = self.nodes[A].stop(now, h, u32::from(*code));
                }
            }
            Action::Read(i) => {
                if let Some(h) = self.a_stream(*i) {
                    self.read_all(A, h, 4096);
                }
            }
            Action::Refuse(i) => {
                if let Some(h) = self.a_stream(*i) {
                    self.nodes[A].refuse(now, h);
                }
            }
            Action::Datagram(header, payload) => {
                let mut bytes = header.bytes();
                bytes.extend_from_slice(payload);
                if self.nodes[A].send_raw_datagram(now, conn, &bytes).is_ok() {
                    self.datagrams.insert(bytes);
                }
            }
            Action::BRead(i, max) => {
                if let Some(h) = self.b_stream(*i) {
                    self.read_all(B, h, usize::from(*max));
                }
            }
            Action::BWrite(i, payload) => {
                if let Some(h) = self.b_stream(*i) {
                    let bytes = payload.bytes(&self.ids);
                    if let Ok(n) = self.nodes[B].write(now, h, &bytes) {
                        let wrote = self.b_wrote.entry(stream_id(h)).or_default();
                        wrote.extend_from_slice(&bytes[..n]);
                    }
                }
            }
            Action::BFinish(i) => {
                if let Some(h) = self.b_stream(*i) {
                    let _ = self.nodes[B].finish(now, h);
                }
            }
            Action::BReset(i, code) => {
                if let Some(h) = self.b_stream(*i) {
                    let _ = self.nodes[B].reset(now, h, u32::from(*code));
                }
            }
            Action::BStop(i, code) => {
                if let Some(h) = self.b_stream(*i) {
                    let _ = self.nodes[B].stop(now, h, u32::from(*code));
                }
            }
            Action::BRefuse(i) => {
                if let Some(h) = self.b_stream(*i) {
                    self.nodes[B].refuse(now, h);
                }
            }
            Action::Deregister(p) => {
                let p = protocol(usize::from(*p));
                let was = self.nodes[B].deregister_protocol(&p);
                assert_eq!(
                    was,
                    self.registered.remove(&p).is_some(),
                    "{p} was registered"
                );
            }
            Action::Register(p, cap) => {
                let p = protocol(usize::from(*p));
                let cap = usize::from(*cap % 4);
                let options = ProtocolOptions::with_max_inbound_streams(cap);
                let registered = self.nodes[B].register_protocol(p.clone(), options);
                assert_eq!(registered.is_ok(), !self.registered.contains_key(&p));
                self.registered.entry(p).or_insert(cap);
            }
            Action::Run(n) => {
                let ms = u64::from(*n) * u64::from(*n);
                self.run_for(Duration::from_millis(ms));
            }
        }
        self.pump(A);
        self.pump(B);
        // One hop: what the action sent arrives, the answers are on their
        // way (so that the next action may cross them).
        self.run_for(LATENCY);
    }

    /// Reads a stream on node `i` until it blocks or ends, checking that
    /// what arrives is what the other side wrote.
    fn read_all(&mut self, i: usize, h: StreamHandle, max: usize) {
        let id = stream_id(h);
        for _ in 0..64 {
            let now = self.now;
            let Ok(Some(bytes)) = self.nodes[i].read(now, h, max) else {
                return;
            };
            let (read, expected) = if i == A {
                // A reads B's writes on B's application streams only (an
                // RPC stream's answer is keynode's).
                let Some(wrote) = self.b_wrote.get(&id) else {
                    continue;
                };
                let read = self.a_read.entry(id).or_default();
                read.extend_from_slice(&bytes);
                (read.clone(), wrote.clone())
            } else {
                // B reads what A wrote after the header.
                let wrote = self.a_wrote.get(&id).cloned().unwrap_or_default();
                let header = wrote.first().map_or(0, |&len| 1 + usize::from(len));
                let read = self.b_read.entry(id).or_default();
                read.extend_from_slice(&bytes);
                (
                    read.clone(),
                    wrote.get(header..).unwrap_or_default().to_vec(),
                )
            };
            assert!(
                expected.starts_with(&read),
                "node {i} read {} bytes of {h:?} that the other side did not write: {read:?}",
                read.len()
            );
        }
    }

    /// The invariants that hold after every action.
    fn check(&self) {
        for (p, &cap) in &self.registered {
            let inbound = self.nodes[B].inbound_streams(p);
            assert!(
                inbound <= cap,
                "{inbound} inbound streams of {p}, cap {cap}"
            );
        }
        let t = self.nodes[B].stream_tables();
        assert!(t.app_streams <= t.streams, "{t:?}");
        // B opens streams only for its own requests and claim exchanges;
        // any other entry is an inbound stream, and quinn lets A have at
        // most B_BI + B_UNI of those open.
        let own = t.requests + t.claim_streams;
        assert!(
            t.streams <= (B_BI + B_UNI) as usize + own,
            "B tracks more streams than A may have open: {t:?}"
        );
    }

    /// Both sides give up every stream; afterwards both tables are empty.
    fn finish(&mut self) {
        for _ in 0..4 {
            let now = self.now;
            for &h in &self.a_streams {
                let _ = self.nodes[A].reset(now, h, 0);
                let _ = self.nodes[A].stop(now, h, 0);
            }
            for &h in &self.b_streams {
                let _ = self.nodes[B].stop(now, h, 0);
                let _ = self.nodes[B].reset(now, h, 0);
            }
            self.pump(A);
            self.pump(B);
            self.run_for(Duration::from_millis(500));
            self.check();
        }
        // The managers' own requests (a check of connections, say) may be
        // on their way: wait for them to be answered.
        for _ in 0..MAX_STEPS {
            let busy = self.nodes.iter().any(|n| n.stream_tables().requests > 0);
            if !busy || !self.step(None) {
                break;
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            assert_eq!(
                node.stream_tables(),
                StreamTables::default(),
                "node {i}: every stream has left the tables"
            );
        }
        for p in self.registered.keys() {
            assert_eq!(self.nodes[B].inbound_streams(p), 0, "{p} counts none");
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    actions: Vec<Action>,
}

fuzz_target!(|input: Input| {
    let mut w = World::new();
    w.check();
    for action in input.actions.iter().take(MAX_ACTIONS) {
        w.act(action);
        w.check();
    }
    w.finish();
});
