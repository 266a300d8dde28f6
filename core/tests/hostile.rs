//! Hostile peers against a node on the in-memory network (issue 15): a
//! flood of QUIC Initials, one address holding many connections, our own
//! dials at the connection limit, and the work per datagram as the node
//! holds more connections. Every limit is exercised with no loopback
//! exemption (these addresses are not loopback anyway).

mod common;
mod datagram_net;
mod initials;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use datagram_net::{DatagramNet, Host, address, config, secret};
use initials::Initials;
use keynode_core::net::{NetConfig, Node};
use keynode_core::{Config, NodeAddress, NodeId, OpValue, UserCall};

/// The attacker's address: one IP, a fresh port per Initial.
fn attacker(port: u16) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], port))
}

/// A node at any address (the harness's own are 192.0.2.n:4000).
fn add_at(net: &mut DatagramNet, at: SocketAddr, n: u8, config: Config, netc: NetConfig) -> NodeId {
    let mut node = Node::new(config, netc, &secret(n), net.now, common::seed(n.into())).unwrap();
    let id = node.node_id();
    node.call(net.now, UserCall::Start).unwrap();
    net.hosts.insert(
        at,
        Host {
            node,
            store: Default::default(),
            outputs: Vec::new(),
            app: Vec::new(),
        },
    );
    net.pump(at);
    id
}

/// Pings `node_id` at `to` from the host at `from`; whether it answered.
fn ping(net: &mut DatagramNet, from: SocketAddr, node_id: NodeId, to: SocketAddr) -> bool {
    let now = net.now;
    let op = net
        .hosts
        .get_mut(&from)
        .unwrap()
        .node
        .call(
            now,
            UserCall::PingNodeAddress {
                node_id,
                address: NodeAddress::from(to),
                connect_timeout: None,
            },
        )
        .unwrap()
        .unwrap();
    net.pump(from);
    for _ in 0..200_000 {
        let done = net.hosts[&from].outputs.iter().find_map(|o| match o {
            keynode_core::Output::Done { op: x, result } if *x == op => Some(result.clone()),
            _ => None,
        });
        if let Some(result) = done {
            return result == Ok(OpValue::Reachable(true));
        }
        if !net.step() {
            break;
        }
    }
    false
}

/// Queues `count` Initials from the attacker to `to`, `per_ms` a millisecond
/// from now on; returns the attacker's ports used.
fn flood(
    net: &mut DatagramNet,
    initials: &mut Initials,
    to: SocketAddr,
    count: usize,
    per_ms: usize,
) {
    let start = net.now.mono;
    for i in 0..count {
        let at = start + Duration::from_millis((i / per_ms) as u64);
        let bytes = initials.next(at, to);
        net.seq += 1;
        let from = attacker(10_000 + (i % 50_000) as u16);
        net.queue.insert((at, net.seq), (from, to, bytes));
    }
}

/// Defect 1: 4,000 Initials from one IP (a fresh port and connection each)
/// admit a bounded number of handshakes, the rest get a stateless Retry;
/// a third party handshakes and pings during the flood; and when the
/// admitted handshakes time out every table is empty again.
#[test]
fn a_handshake_flood_admits_a_bounded_number_and_a_third_party_is_served() {
    let mut net = DatagramNet::new();
    let victim = net.add(1);
    let _honest = net.add(2);
    let netc = NetConfig::default();
    let mut initials = Initials::new();
    flood(&mut net, &mut initials, address(1), 4_000, 4);
    // During the flood (1 s of it), the third party's ping gets through.
    net.run_for(Duration::from_millis(200));
    assert!(
        ping(&mut net, address(2), victim, address(1)),
        "a third party's handshake and ping during the flood"
    );
    net.run_for(Duration::from_secs(1));
    // Handshakes admitted: the attacker's ports that got a server flight
    // (padded to >= 1,200 bytes; a Retry is ~100).
    let flights: BTreeSet<SocketAddr> = net
        .sent
        .iter()
        .filter(|s| s.from == address(1) && s.to.ip() == attacker(0).ip() && s.len >= 1_200)
        .map(|s| s.to)
        .collect();
    assert!(
        flights.len() <= netc.max_handshakes_per_ip,
        "{} handshakes admitted from one IP",
        flights.len()
    );
    let stats = net.hosts[&address(1)].node.admission_stats();
    assert!(stats.retries_sent >= 3_000, "{stats:?}");
    assert!(stats.handshaking <= netc.max_handshakes_per_ip, "{stats:?}");
    assert!(
        stats.connections <= netc.max_handshakes_per_ip + 2,
        "{stats:?}"
    );
    // The admitted handshakes time out; their state leaves every table.
    net.run_for(netc.handshake_timeout + Duration::from_secs(10));
    let stats = net.hosts[&address(1)].node.admission_stats();
    assert_eq!(stats.handshaking, 0, "{stats:?}");
    assert_eq!(
        stats.handshakes_timed_out as usize,
        flights.len(),
        "{stats:?}"
    );
    assert!(stats.connections <= 1, "only the third party's: {stats:?}");
    assert!(stats.sources <= 2, "{stats:?}");
}

/// Defect 3 (per IP, per prefix, before the handshake): ten nodes at one
/// IP (fresh keys, ports of their own) connect to a node: at most
/// `max_inbound_per_ip` come up, the others are refused on their Initial;
/// and nodes of one /24 are bounded by `max_inbound_per_prefix`.
#[test]
fn one_ip_and_one_prefix_hold_a_bounded_share_of_the_inbound_connections() {
    let mut net = DatagramNet::new();
    let victim = add_at(
        &mut net,
        SocketAddr::from(([203, 0, 113, 1], 4000)),
        1,
        config(),
        NetConfig::default(),
    );
    let v = SocketAddr::from(([203, 0, 113, 1], 4000));
    let limits = NetConfig::default();
    let mut up = 0;
    for n in 0..10u8 {
        let at = SocketAddr::from(([198, 51, 100, 1], 5000 + u16::from(n)));
        add_at(&mut net, at, 10 + n, config(), NetConfig::default());
        up += usize::from(ping(&mut net, at, victim, v));
    }
    assert_eq!(up, limits.max_inbound_per_ip);
    // The dial-backs that proved the peers' addresses are closed (and
    // drained) once they have: one connection per inbound peer is left.
    net.run_for(Duration::from_secs(2));
    let node = &net.hosts[&v].node;
    assert_eq!(node.connection_count(), limits.max_inbound_per_ip);
    let stats = node.admission_stats();
    assert_eq!(stats.refused_per_ip, 2, "{stats:?}");
    // Refused on the Initial: no TLS work for them.
    assert_eq!(
        stats.handshakes_accepted as usize, limits.max_inbound_per_ip,
        "{stats:?}"
    );

    // One /24 (four nodes at each of 198.51.101.1..=9): the prefix bound.
    let mut prefix_up = 0;
    for n in 0..36u8 {
        let at = SocketAddr::from(([198, 51, 101, 1 + n / 4], 6000 + u16::from(n)));
        add_at(&mut net, at, 30 + n, config(), NetConfig::default());
        prefix_up += usize::from(ping(&mut net, at, victim, v));
    }
    assert_eq!(prefix_up, limits.max_inbound_per_prefix);
    assert!(net.hosts[&v].node.admission_stats().refused_per_prefix >= 4);
}

/// Defect 3 (slots): with `max_connections` taken by inbound connections
/// as far as they may, the node's own dials still succeed: inbound ones
/// never take the reserved slots, and at the limit an idle inbound
/// connection is closed to make room for our dial.
#[test]
fn our_own_dials_are_served_at_the_connection_limit() {
    let mut net = DatagramNet::new();
    let mut cfg = config();
    cfg.max_connections = 6;
    let mut netc = NetConfig::default();
    netc.reserved_outbound = 2;
    let v = SocketAddr::from(([203, 0, 113, 1], 4000));
    let victim = add_at(&mut net, v, 1, cfg, netc.clone());
    // Five inbound from five /24s: four come up, the fifth is refused.
    let mut up = 0;
    for n in 0..5u8 {
        let at = SocketAddr::from(([10, n, 0, 1], 4000));
        add_at(&mut net, at, 10 + n, config(), NetConfig::default());
        up += usize::from(ping(&mut net, at, victim, v));
    }
    assert_eq!(up, 4);
    assert_eq!(net.hosts[&v].node.admission_stats().refused_slots, 1);
    // Our own dials: three peers. The first two take the reserved slots,
    // the third gets one of an idle inbound connection.
    for n in 0..3u8 {
        let at = SocketAddr::from(([10, 100 + n, 0, 1], 4000));
        let peer = add_at(&mut net, at, 20 + n, config(), NetConfig::default());
        assert!(ping(&mut net, v, peer, at), "our dial {n} at the limit");
    }
    net.run_for(Duration::from_secs(2));
    let node = &net.hosts[&v].node;
    assert!(node.connection_count() <= 6);
    assert_eq!(node.admission_stats().evicted, 1);
}

/// Defect 2: a datagram drives its own connection, not every connection
/// the node holds: with 300 handshakes held open (limits raised to admit
/// them), a ping's datagrams move a handful of connections each.
#[test]
fn a_datagram_drives_only_its_own_connection() {
    let mut net = DatagramNet::new();
    let held = 300;
    let mut netc = NetConfig::default();
    netc.max_handshakes = 10_000;
    netc.max_handshakes_per_ip = 10_000;
    netc.retry_above_handshakes = 10_000;
    netc.handshake_timeout = Duration::from_secs(60);
    let victim = add_at(&mut net, address(1), 1, config(), netc);
    net.add(2);
    let mut initials = Initials::new();
    flood(&mut net, &mut initials, address(1), held, 100);
    // Until the server flights are out: the handshakes then wait for an
    // answer that never comes, their next deadline (a PTO) ~1 s away.
    assert!(net.run_until(100_000, |n| n.queue.is_empty()));
    let before = net.hosts[&address(1)].node.admission_stats();
    assert_eq!(before.handshaking, held, "{before:?}");
    let received = |net: &DatagramNet| net.sent.iter().filter(|s| s.to == address(1)).count();
    let datagrams_before = received(&net);
    assert!(ping(&mut net, address(2), victim, address(1)));
    let datagrams = received(&net) - datagrams_before;
    let after = net.hosts[&address(1)].node.admission_stats();
    let driven = after.connections_driven - before.connections_driven;
    // Each datagram (and each timer) moves its connection, a drive or two;
    // before, every drive moved all 300.
    assert!(
        driven <= 4 * datagrams as u64 + 20,
        "{driven} connections driven for {datagrams} datagrams"
    );
}
