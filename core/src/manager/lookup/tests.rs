//! The lookup machine by itself: no manager, no connections, no timers. A
//! small world hands out ids for what the lookup asks and tells it what
//! happened; each test checks what it asks next.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::Config;
use crate::id::BucketIndex;

/// What the world did for the lookup, with the id it handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Did {
    Dial(NodeId, NodeAddress, ContactMode, AttemptId),
    Signal(ConnId, NodeId, RequestId),
    Ask(ConnId, NodeId, RequestId),
    Punch(SocketAddr),
    Query(NodeId, OpId),
    RelayOpen(ConnId, NodeId, RequestId),
    DialRelayed(NodeId, ConnId, SocketAddr, AttemptId),
}

/// How a drain ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Wait,
    Done(Outcome),
}

#[derive(Default)]
struct FakePeers(BTreeMap<NodeId, (ConnId, SocketAddr, ContactMode)>);

impl Peers for FakePeers {
    fn primary(&self, node: &NodeId) -> Option<(ConnId, SocketAddr, ContactMode)> {
        self.0.get(node).copied()
    }

    fn is_connected(&self, node: &NodeId) -> bool {
        self.0.contains_key(node)
    }
}

struct World {
    peers: FakePeers,
    graph: NodeGraph,
    rng: ChaCha8Rng,
    now: Now,
    next_id: u64,
}

impl World {
    fn new() -> Self {
        // A start for the test's clock; the lookup never reads one.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        Self {
            peers: FakePeers::default(),
            graph: NodeGraph::new(own(), &Config::default()).unwrap(),
            rng: ChaCha8Rng::seed_from_u64(1),
            now: Now::new(t0, 5_000),
            next_id: 1,
        }
    }

    fn fresh(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// `node` is connected, as `conn`.
    fn connect(&mut self, node: NodeId, conn: u64) {
        self.peers
            .0
            .insert(node, (ConnId(conn), sock(node), ContactMode::Direct));
    }

    /// Carries out what the lookup asks until it waits or is over.
    fn drain(&mut self, lookup: &mut Lookup) -> (Vec<Did>, End) {
        let mut did = Vec::new();
        for _ in 0..1000 {
            let next = lookup.next(self.now, &self.peers, &self.graph, &mut self.rng);
            match next {
                Next::Dial {
                    node_id,
                    address,
                    mode,
                    timeout,
                } => {
                    assert_eq!(timeout, CONNECT);
                    let attempt = AttemptId(self.fresh());
                    lookup.dialing(attempt);
                    did.push(Did::Dial(node_id, address, mode, attempt));
                }
                Next::Signal { conn, target } => {
                    let request = RequestId(self.fresh());
                    lookup.requested(request);
                    did.push(Did::Signal(conn, target, request));
                }
                Next::Ask { conn, target } => {
                    let request = RequestId(self.fresh());
                    lookup.requested(request);
                    did.push(Did::Ask(conn, target, request));
                }
                Next::Punch { address, timeout } => {
                    assert_eq!(timeout, CONNECT);
                    did.push(Did::Punch(address));
                }
                Next::RelayOpen { conn, target } => {
                    let request = RequestId(self.fresh());
                    lookup.requested(request);
                    did.push(Did::RelayOpen(conn, target, request));
                }
                Next::DialRelayed {
                    node_id,
                    via,
                    relayed,
                    timeout,
                } => {
                    assert_eq!(timeout, CONNECT);
                    let attempt = AttemptId(self.fresh());
                    lookup.dialing(attempt);
                    did.push(Did::DialRelayed(node_id, via, relayed.seen_at, attempt));
                }
                Next::QueryMdns { node_id, timeout } => {
                    assert_eq!(timeout, MDNS);
                    let query = OpId(self.fresh());
                    lookup.querying(Some(query));
                    did.push(Did::Query(node_id, query));
                }
                Next::Wait => return (did, End::Wait),
                Next::Done(outcome) => return (did, End::Done(outcome)),
            }
        }
        panic!("the lookup never waits: {did:?}");
    }
}

const CONNECT: Duration = Duration::from_secs(2);
const MDNS: Duration = Duration::from_secs(3);

/// Node `n`: the smaller `n`, the closer to [`target`].
fn id(n: u8) -> NodeId {
    let mut bytes = [0u8; 32];
    bytes[0] = n;
    NodeId::from_bytes(bytes)
}

fn target() -> NodeId {
    NodeId::from_bytes([0u8; 32])
}

fn own() -> NodeId {
    NodeId::from_bytes([0xff; 32])
}

/// Where node `n` answers (one address of a candidate), each node in a /24
/// of its own (a lookup takes few candidates of one /24).
fn sock(node: NodeId) -> SocketAddr {
    let n = node.as_bytes()[0];
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, n, 1)), 4000)
}

fn at(node: NodeId, port: u16) -> NodeAddress {
    let n = node.as_bytes()[0];
    NodeAddress::new(IpAddr::V4(Ipv4Addr::new(10, 0, n, 1)), port)
}

fn loopback(port: u16) -> NodeAddress {
    NodeAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn params(strategies: Strategies, concurrency: usize, k: usize) -> Params {
    Params {
        strategies,
        mdns_available: true,
        connect_timeout: CONNECT,
        mdns_timeout: MDNS,
        concurrency,
        limit: 100,
        k,
        max_candidates: 20,
        ip_groups: crate::IpGroupLimits::default(),
        own_symmetric: false,
        upgrade: false,
    }
}

/// [`params`] of a node without mDNS (k = 20).
fn without_mdns(strategies: Strategies, concurrency: usize) -> Params {
    Params {
        mdns_available: false,
        ..params(strategies, concurrency, 20)
    }
}

/// A started lookup of [`target`] seeded with `seeds` (each at one address).
fn lookup(world: &World, params: Params, seeds: &[u8]) -> Lookup {
    let mut lookup = Lookup::new(target(), params, None);
    assert!(lookup.on_start(&world.peers));
    for &n in seeds {
        lookup.offer(own(), id(n), vec![at(id(n), 4000)], None);
    }
    lookup
}

fn dial(n: u8, attempt: u64) -> Did {
    Did::Dial(
        id(n),
        at(id(n), 4000),
        ContactMode::Direct,
        AttemptId(attempt),
    )
}

fn nothing() -> Answer {
    Answer::Closest {
        active: Vec::new(),
        contacts: Vec::new(),
    }
}

/// A contact at one global address.
fn contact(node: NodeId) -> NodeContact {
    NodeContact::new(
        at(node, 4000),
        NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: 1,
            scopes: NodeAddressScopes::GLOBAL,
        },
    )
}

/// Connects candidate `n`'s attempt and answers its question with `answer`.
fn answers(world: &mut World, lookup: &mut Lookup, n: u8, attempt: u64, answer: Answer) -> End {
    lookup.on_connected(AttemptId(attempt), ConnId(100 + u64::from(n)), sock(id(n)));
    let (did, end) = world.drain(lookup);
    let [Did::Ask(conn, asked_for, request)] = did[..] else {
        panic!("asked {did:?}");
    };
    assert_eq!((conn, asked_for), (ConnId(100 + u64::from(n)), target()));
    assert_eq!(end, End::Wait);
    lookup.on_answer(request, answer, own());
    world.drain(lookup).1
}

#[test]
fn ends_when_the_k_closest_have_answered_without_a_closer_node() {
    let mut world = World::new();
    let mut lookup = lookup(&world, params(Strategies::DIRECT, 1, 3), &[2, 3, 4, 5]);
    assert_eq!(world.drain(&mut lookup), (vec![dial(2, 2)], End::Wait));
    // Node 2 knows a closer node: it is contacted next.
    let closer = Answer::Closest {
        active: Vec::new(),
        contacts: vec![(id(1), contact(id(1)))],
    };
    assert_eq!(answers(&mut world, &mut lookup, 2, 2, closer), End::Wait);
    assert_eq!(
        lookup.candidates.get(&id(1)).map(|c| &c.state),
        Some(&PeerState::Dialing {
            attempt: AttemptId(4),
            address: 0,
            via_signal: false,
            via_relay: None,
        })
    );
    assert_eq!(answers(&mut world, &mut lookup, 1, 4, nothing()), End::Wait);
    // The third of the k = 3 closest answers with nothing closer: over.
    // The check follows the starts of the same step, so node 4's dial has
    // gone out; node 5 is never contacted.
    lookup.on_connected(AttemptId(6), ConnId(103), sock(id(3)));
    let (did, _) = world.drain(&mut lookup);
    let [Did::Ask(_, _, request)] = did[..] else {
        panic!("asked {did:?}");
    };
    lookup.on_answer(request, nothing(), own());
    assert_eq!(
        world.drain(&mut lookup),
        (vec![dial(4, 8)], End::Done(Outcome::NotFound))
    );
    assert_eq!(lookup.contacted, 4);
}

#[test]
fn keeps_at_most_alpha_candidates_in_flight() {
    let mut world = World::new();
    let mut lookup = lookup(
        &world,
        params(Strategies::DIRECT, 2, 20),
        &[1, 2, 3, 4, 5, 6],
    );
    assert_eq!(
        world.drain(&mut lookup),
        (vec![dial(1, 2), dial(2, 3)], End::Wait)
    );
    // Nothing happened: nothing more is asked.
    assert_eq!(world.drain(&mut lookup), (vec![], End::Wait));
    // One failure frees one place.
    lookup.on_failed(AttemptId(2));
    assert_eq!(world.drain(&mut lookup), (vec![dial(3, 4)], End::Wait));
    // An answer frees one too; a question in flight keeps its place.
    assert_eq!(answers(&mut world, &mut lookup, 2, 3, nothing()), End::Wait);
    assert_eq!(lookup.in_flight, 2);
}

#[test]
fn a_failed_dial_moves_to_the_next_address_then_the_next_candidate() {
    let mut world = World::new();
    let mut lookup = Lookup::new(target(), params(Strategies::DIRECT, 1, 20), None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), id(1), vec![at(id(1), 1), at(id(1), 2)], None);
    lookup.offer(own(), id(2), vec![at(id(2), 4000)], None);
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::Dial(
            id(1),
            at(id(1), 1),
            ContactMode::Direct,
            AttemptId(2)
        )]
    );
    lookup.on_failed(AttemptId(2));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::Dial(
            id(1),
            at(id(1), 2),
            ContactMode::Direct,
            AttemptId(3)
        )]
    );
    // No address left and no signal allowed: the candidate failed, the next one is tried.
    lookup.on_failed(AttemptId(3));
    assert_eq!(world.drain(&mut lookup), (vec![dial(2, 4)], End::Wait));
    assert_eq!(
        lookup.candidates.get(&id(1)).map(|c| &c.state),
        Some(&PeerState::Failed)
    );
    // The last one fails: nothing left to try.
    lookup.on_failed(AttemptId(4));
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Done(Outcome::NotFound))
    );
}

#[test]
fn a_signal_comes_first_then_the_punch_and_the_dial_then_the_address() {
    let mut world = World::new();
    world.connect(id(9), 7);
    let mut lookup = Lookup::new(target(), params(Strategies::ALL, 1, 20), None);
    assert!(lookup.on_start(&world.peers));
    // Candidate 1 has an address, and node 9 (connected) can signal it.
    lookup.offer(own(), id(1), vec![at(id(1), 4000)], Some(id(9)));
    let (did, end) = world.drain(&mut lookup);
    assert_eq!(did[0], Did::Query(target(), OpId(2)));
    assert_eq!(did[1], Did::Signal(ConnId(7), id(1), RequestId(3)));
    assert_eq!(did.len(), 2);
    assert_eq!(end, End::Wait);
    // The signaller reached it: punch, then dial where it said, as a signalled contact.
    let punched = SocketAddr::from(([192, 0, 2, 1], 999));
    lookup.on_answer(RequestId(3), Answer::Signalled(punched), own());
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![
            Did::Punch(punched),
            Did::Dial(
                id(1),
                NodeAddress::from(punched),
                ContactMode::Signal,
                AttemptId(4)
            ),
        ]
    );
    // The signalled dial failed: the signaller is asked to relay; it
    // does not, so the address we have, once.
    lookup.on_failed(AttemptId(4));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![Did::RelayOpen(ConnId(7), id(1), RequestId(5))]);
    lookup.on_answer(RequestId(5), Answer::Failed, own());
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![dial(1, 6)]);
    lookup.on_failed(AttemptId(6));
    let (did, end) = world.drain(&mut lookup);
    assert_eq!((did, end), (vec![], End::Wait), "mDNS still runs");
    lookup.on_mdns(OpId(2), Vec::new());
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Done(Outcome::NotFound))
    );
}

#[test]
fn a_target_no_punch_reaches_is_reached_through_the_signaller_as_a_relay() {
    let mut world = World::new();
    world.connect(id(9), 7);
    let mut lookup = Lookup::new(target(), without_mdns(Strategies::ALL, 1), None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), target(), Vec::new(), Some(id(9)));
    // The target's signaller is asked to relay first: the pair opens, and
    // the target holds no reservation there (its NAT class is not told).
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![Did::RelayOpen(ConnId(7), target(), RequestId(2))]);
    let seen = SocketAddr::from(([192, 0, 2, 7], 999));
    let opened = Answer::RelayOpened {
        target_address: seen,
        target_class: None,
    };
    lookup.on_answer(RequestId(2), opened, own());
    // So the punch is tried.
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![Did::Signal(ConnId(7), target(), RequestId(3))]);
    lookup.on_answer(RequestId(3), Answer::Signalled(seen), own());
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did[0], Did::Punch(seen));
    // The punch fails (a symmetric NAT): through the pair already open.
    lookup.on_failed(AttemptId(4));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::DialRelayed(target(), ConnId(7), seen, AttemptId(5))]
    );
    // Up at a mapped address; found where the relay sees it, relayed.
    let mapped: SocketAddr = "[100::1]:1".parse().unwrap();
    lookup.on_connected(AttemptId(5), ConnId(8), mapped);
    let (_, end) = world.drain(&mut lookup);
    let End::Done(Outcome::Found(address, data)) = end else {
        panic!("not found: {end:?}");
    };
    assert_eq!(
        (address, data.mode),
        (NodeAddress::from(seen), ContactMode::Relay)
    );
}

#[test]
fn a_target_reserved_as_symmetric_is_not_punched_but_relayed_at_once() {
    let mut world = World::new();
    world.connect(id(9), 7);
    let mut lookup = Lookup::new(target(), without_mdns(Strategies::ALL, 1), None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), target(), Vec::new(), Some(id(9)));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![Did::RelayOpen(ConnId(7), target(), RequestId(2))]);
    let seen = SocketAddr::from(([192, 0, 2, 7], 999));
    let opened = |class| Answer::RelayOpened {
        target_address: seen,
        target_class: Some(class),
    };
    lookup.on_answer(RequestId(2), opened(crate::nat::NatClass::Symmetric), own());
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::DialRelayed(target(), ConnId(7), seen, AttemptId(3))]
    );
    // A cone target is punched by a node not known to be symmetric.
    let mut lookup = Lookup::new(target(), without_mdns(Strategies::ALL, 1), None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), target(), Vec::new(), Some(id(9)));
    let (did, _) = world.drain(&mut lookup);
    let Did::RelayOpen(_, _, request) = did[0] else {
        panic!("{did:?}");
    };
    lookup.on_answer(request, opened(crate::nat::NatClass::Cone), own());
    let (did, _) = world.drain(&mut lookup);
    assert!(matches!(did[..], [Did::Signal(ConnId(7), _, _)]), "{did:?}");
}

#[test]
fn a_symmetric_node_asks_the_relay_first_and_skips_the_punch_to_a_symmetric_target() {
    let mut world = World::new();
    world.connect(id(9), 7);
    let params = Params {
        own_symmetric: true,
        ..without_mdns(Strategies::ALL, 1)
    };
    let mut lookup = Lookup::new(target(), params, None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), target(), Vec::new(), Some(id(9)));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![Did::RelayOpen(ConnId(7), target(), RequestId(2))]);
    let seen = SocketAddr::from(([192, 0, 2, 7], 999));
    let opened = |class| Answer::RelayOpened {
        target_address: seen,
        target_class: Some(class),
    };
    // Both symmetric: no punch, straight through the relay.
    lookup.on_answer(RequestId(2), opened(crate::nat::NatClass::Symmetric), own());
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::DialRelayed(target(), ConnId(7), seen, AttemptId(3))]
    );

    // A public target: the signal and the punch first.
    let mut lookup = Lookup::new(target(), params, None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), target(), Vec::new(), Some(id(9)));
    let (did, _) = world.drain(&mut lookup);
    let Did::RelayOpen(_, _, request) = did[0] else {
        panic!("{did:?}");
    };
    lookup.on_answer(request, opened(crate::nat::NatClass::Public), own());
    let (did, _) = world.drain(&mut lookup);
    assert!(matches!(did[..], [Did::Signal(ConnId(7), _, _)]), "{did:?}");
}

#[test]
fn a_failed_signal_falls_back_to_the_address() {
    let mut world = World::new();
    world.connect(id(9), 7);
    let mut lookup = Lookup::new(target(), without_mdns(Strategies::ALL, 1), None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), id(1), vec![at(id(1), 4000)], Some(id(9)));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![Did::Signal(ConnId(7), id(1), RequestId(2))]);
    lookup.on_answer(RequestId(2), Answer::Failed, own());
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![dial(1, 3)]);
}

#[test]
fn a_candidate_on_this_host_is_dialled_before_it_is_signalled() {
    let mut world = World::new();
    world.connect(id(9), 7);
    let mut lookup = Lookup::new(target(), without_mdns(Strategies::ALL, 1), None);
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), id(1), vec![loopback(5000)], Some(id(9)));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::Dial(
            id(1),
            loopback(5000),
            ContactMode::Direct,
            AttemptId(2)
        )]
    );
    // Its only address failed: now the signal.
    lookup.on_failed(AttemptId(2));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(did, vec![Did::Signal(ConnId(7), id(1), RequestId(3))]);
    // The signal is tried once: a failure then ends the candidate.
    lookup.on_answer(RequestId(3), Answer::Failed, own());
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Done(Outcome::NotFound))
    );
}

#[test]
fn a_connected_candidate_is_asked_and_the_connected_target_is_found() {
    let mut world = World::new();
    world.connect(id(1), 7);
    let mut lookup = lookup(&world, params(Strategies::DIRECT, 3, 20), &[1]);
    lookup.offer(own(), target(), vec![at(target(), 4000)], None);
    let (did, end) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![
            Did::Dial(
                target(),
                at(target(), 4000),
                ContactMode::Direct,
                AttemptId(2)
            ),
            Did::Ask(ConnId(7), target(), RequestId(3)),
        ]
    );
    assert_eq!(end, End::Wait);
    // The target connects: found, at the address it connected from.
    let from = SocketAddr::from(([10, 0, 0, 0], 4000));
    lookup.on_connected(AttemptId(2), ConnId(8), from);
    let (did, end) = world.drain(&mut lookup);
    assert!(did.is_empty());
    let End::Done(Outcome::Found(address, data)) = end else {
        panic!("{end:?}");
    };
    assert_eq!(address, NodeAddress::from(from));
    assert_eq!(data.mode, ContactMode::Direct);
    assert_eq!(data.connected_time, world.now.unix_secs());
    assert_eq!(data.scopes, NodeAddressScopes::GLOBAL);
}

#[test]
fn a_target_connected_already_is_found_at_once() {
    let mut world = World::new();
    world.connect(target(), 7);
    let mut lookup = Lookup::new(target(), params(Strategies::ALL, 3, 20), None);
    assert!(!lookup.on_start(&world.peers), "no candidates wanted");
    let (did, end) = world.drain(&mut lookup);
    assert!(did.is_empty(), "not even mDNS: {did:?}");
    assert!(matches!(end, End::Done(Outcome::Found(..))));
}

#[test]
fn the_deadline_ends_the_lookup_whatever_is_in_flight() {
    let mut world = World::new();
    let mut lookup = lookup(&world, params(Strategies::ALL, 3, 20), &[1, 2]);
    let (did, end) = world.drain(&mut lookup);
    assert_eq!(did.len(), 3, "the query and two dials: {did:?}");
    assert_eq!(end, End::Wait);
    lookup.on_deadline();
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Done(Outcome::Timeout))
    );
    // Late news changes nothing.
    lookup.on_failed(AttemptId(3));
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Done(Outcome::Timeout))
    );
}

#[test]
fn mdns_dials_each_answer_in_turn_and_wins_with_a_local_address() {
    let mut world = World::new();
    let mut lookup = lookup(&world, params(Strategies::MDNS, 3, 20), &[1]);
    let (did, end) = world.drain(&mut lookup);
    // mDNS only: the candidate is not reachable without direct or signal.
    assert_eq!(did, vec![Did::Query(target(), OpId(2))]);
    assert_eq!(end, End::Wait, "the query holds the lookup open");
    let (a, b) = (
        SocketAddr::from(([192, 168, 1, 5], 1314)),
        SocketAddr::from(([192, 168, 1, 6], 1314)),
    );
    lookup.on_mdns(OpId(99), vec![a]);
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Wait),
        "not its query"
    );
    lookup.on_mdns(OpId(2), vec![a, b]);
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::Dial(
            target(),
            NodeAddress::from(a),
            ContactMode::Direct,
            AttemptId(3)
        )]
    );
    lookup.on_failed(AttemptId(3));
    let (did, _) = world.drain(&mut lookup);
    assert_eq!(
        did,
        vec![Did::Dial(
            target(),
            NodeAddress::from(b),
            ContactMode::Direct,
            AttemptId(4)
        )]
    );
    lookup.on_connected(AttemptId(4), ConnId(1), b);
    let (_, end) = world.drain(&mut lookup);
    let End::Done(Outcome::Found(address, data)) = end else {
        panic!("{end:?}");
    };
    assert_eq!(address, NodeAddress::from(b));
    assert_eq!(data.scopes, NodeAddressScopes::LOCAL);
}

#[test]
fn a_query_that_cannot_start_leaves_the_lookup_without_mdns() {
    let mut world = World::new();
    let mut lookup = Lookup::new(target(), params(Strategies::MDNS, 3, 20), None);
    let next = lookup.next(world.now, &world.peers, &world.graph, &mut world.rng);
    assert!(matches!(next, Next::QueryMdns { .. }));
    lookup.querying(None);
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Done(Outcome::NotFound))
    );
}

#[test]
fn contacts_at_most_limit_candidates() {
    let mut world = World::new();
    let mut params = params(Strategies::DIRECT, 5, 20);
    params.limit = 2;
    let mut lookup = lookup(&world, params, &[1, 2, 3, 4]);
    assert_eq!(
        world.drain(&mut lookup),
        (vec![dial(1, 2), dial(2, 3)], End::Wait)
    );
    lookup.on_failed(AttemptId(2));
    assert_eq!(world.drain(&mut lookup), (vec![], End::Wait));
    lookup.on_failed(AttemptId(3));
    assert_eq!(
        world.drain(&mut lookup),
        (vec![], End::Done(Outcome::NotFound))
    );
}

#[test]
fn answers_never_offer_this_node_and_keep_only_global_addresses() {
    let mut world = World::new();
    let mut lookup = lookup(&world, params(Strategies::DIRECT, 1, 20), &[2]);
    world.drain(&mut lookup);
    let local_only = NodeContact::new(
        at(id(1), 1),
        NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: 1,
            scopes: NodeAddressScopes::LOCAL,
        },
    );
    let answer = Answer::Closest {
        active: vec![own(), id(3)],
        contacts: vec![(own(), contact(own())), (id(1), local_only)],
    };
    answers(&mut world, &mut lookup, 2, 2, answer);
    assert!(lookup.candidates.get(&own()).is_none());
    let one = lookup.candidates.get(&id(1)).map(|c| c.addresses.clone());
    assert_eq!(one, Some(Vec::new()), "a local address is not dialled");
    let three = lookup.candidates.get(&id(3)).map(|c| c.signallers.clone());
    assert_eq!(three, Some(vec![id(2)]), "node 2 can signal node 3");
}

#[test]
fn stale_and_unknown_ids_change_nothing() {
    let mut world = World::new();
    let mut lookup = lookup(&world, params(Strategies::DIRECT, 1, 20), &[1, 2]);
    assert_eq!(world.drain(&mut lookup), (vec![dial(1, 2)], End::Wait));
    lookup.on_failed(AttemptId(77));
    lookup.on_answer(RequestId(2), nothing(), own());
    lookup.on_connected(AttemptId(78), ConnId(1), sock(id(1)));
    assert_eq!(world.drain(&mut lookup), (vec![], End::Wait));
    assert_eq!(lookup.in_flight, 1);
}

#[test]
fn a_fill_turns_only_once_its_sub_range_holds_its_share() {
    let mut world = World::new();
    // The closest bucket has no sub-ranges: nothing to fill.
    assert_eq!(Fill::new(BucketIndex::new(0), 2, 20), None);
    let fill = Fill::new(BucketIndex::new(200), 2, 20).unwrap();
    // An empty bucket lacks contacts everywhere: the target stays.
    let t = own().random_in_bucket(BucketIndex::new(200), &mut world.rng);
    assert_eq!(
        fill.turn(&t, &world.graph, &mut world.rng),
        fill::Turn::Stay
    );
    // A lookup with that fill goes for its target as any other.
    let mut lookup = Lookup::new(t, without_mdns(Strategies::DIRECT, 1), Some(fill));
    assert!(lookup.on_start(&world.peers));
    lookup.offer(own(), id(1), vec![at(id(1), 4000)], None);
    assert_eq!(world.drain(&mut lookup).0, vec![dial(1, 2)]);
    assert_eq!(lookup.target(), t);
}

#[test]
fn a_fill_turns_to_an_emptiest_sub_range_and_stops_once_even() {
    let mut world = World::new();
    let bucket = BucketIndex::new(200);
    // k = 4 over 4 sub-ranges: a share of one contact each.
    let fill = Fill::new(bucket, 2, 4).unwrap();
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    };
    let add = |world: &mut World, sub: u32| {
        let node = own().random_in_sub_range(bucket, 2, sub, &mut world.rng);
        // Loopback: exempt from the per-/24 limit by default.
        let _update = world.graph.set(node, loopback(4000), data).unwrap();
    };
    add(&mut world, 0);
    let in_first = own().random_in_sub_range(bucket, 2, 0, &mut world.rng);
    let fill::Turn::To(turned) = fill.turn(&in_first, &world.graph, &mut world.rng) else {
        panic!("sub-range 0 holds its share: the lookup turns");
    };
    assert_eq!(world.graph.bucket_index(&turned), Some(bucket));
    assert_ne!(own().distance(&turned).bits_below(bucket, 2), 0);
    for sub in 1..4 {
        add(&mut world, sub);
    }
    assert_eq!(
        fill.turn(&in_first, &world.graph, &mut world.rng),
        fill::Turn::Even
    );
}
