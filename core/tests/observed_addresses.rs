//! Observed addresses: what peers tell a node about its own address reaches
//! its NAT class, over real QUIC (the net layer's `Frame::Observed`) and in
//! the manager (each word held for the connection it came on).

mod common;
mod datagram_net;

use std::net::SocketAddr;

use common::{Script, id, t0};
use datagram_net::{DatagramNet, address};
use keynode_core::nat::{LocalAddresses, NatClass, ObservedAddress};
use keynode_core::{Config, ConnId, Event, FindOptions, Observation, OpValue, UserCall};

#[test]
fn two_peers_tell_a_node_its_address_over_quic_and_it_is_public() {
    let mut net = DatagramNet::new();
    let ids: Vec<_> = (1..=3).map(|n| net.add(n)).collect();
    net.node(1)
        .set_local_addresses(LocalAddresses::new(address(1), Vec::new()));
    net.pump(address(1));
    assert_eq!(net.manager(1).nat_class(), NatClass::Unknown);
    for n in [2u8, 3] {
        net.know(1, ids[usize::from(n) - 1], n);
        let op = net.call(
            1,
            UserCall::PingNode {
                node_id: ids[usize::from(n) - 1],
                options: FindOptions::default(),
            },
        );
        assert!(matches!(net.wait(1, op), Ok(OpValue::Found(Some(_)))));
    }
    let seen = net.run_until(10_000, |net| net.manager(1).nat_class() == NatClass::Public);
    assert!(
        seen,
        "class {:?}, observed {:?}, stats {:?} {:?}",
        net.manager(1).nat_class(),
        net.manager(1).observed_addresses(),
        net.manager(1).stats(),
        net.node(1).app_stats()
    );
    assert_eq!(
        net.manager(1).observed_addresses(),
        vec![ObservedAddress {
            address: address(1),
            observers: 2
        }]
    );
    // The peers heard of their own addresses too (one observer each).
    for n in [2u8, 3] {
        assert_eq!(
            net.manager(n).observed_addresses(),
            vec![ObservedAddress {
                address: address(n),
                observers: 1
            }]
        );
        assert_eq!(net.manager(n).nat_class(), NatClass::Unknown);
    }
}

/// Peer `n`'s address: a /24 of its own (observers count per network).
fn remote(n: u8) -> SocketAddr {
    SocketAddr::from(([203, 0, n, 1], 1314))
}

#[test]
fn observations_count_per_connection_and_leave_with_it() {
    let mut s = Script::started(t0(), Config::default(), id(0));
    let own: SocketAddr = "192.168.1.10:1314".parse().unwrap();
    s.node
        .set_local_addresses(LocalAddresses::new(own, Vec::new()));
    let mapped: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    for n in 1..=2u8 {
        s.handle(Event::ConnectionUp {
            conn: ConnId(u64::from(n)),
            peer: id(n),
            remote: remote(n),
            attempt: None,
        });
        s.handle(Event::AddressObserved {
            conn: ConnId(u64::from(n)),
            observed: mapped,
        });
    }
    // Two observers at different IPs see one mapped address: a cone NAT.
    assert_eq!(s.node.nat_class(), NatClass::Cone);
    let changes: Vec<_> = s
        .observations
        .iter()
        .filter_map(|o| match o {
            Observation::NatClassChanged {
                previous,
                class,
                observed,
            } => Some((*previous, *class, *observed)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![(NatClass::Unknown, NatClass::Cone, Some(mapped))]
    );
    assert_eq!(s.node.metrics().nat_class, NatClass::Cone);
    assert_eq!(s.node.metrics().nat_class_changes.get(NatClass::Cone), 1);
    // A word on a connection the manager does not hold counts for nothing.
    s.handle(Event::AddressObserved {
        conn: ConnId(99),
        observed: "192.0.2.1:1".parse().unwrap(),
    });
    assert_eq!(s.node.observed_addresses().len(), 1);
    // The connection closes: its observation goes, and one observer is
    // not enough.
    s.handle(Event::ConnectionClosed { conn: ConnId(2) });
    assert_eq!(s.node.nat_class(), NatClass::Unknown);
    assert_eq!(
        s.node.observed_addresses(),
        vec![ObservedAddress {
            address: mapped,
            observers: 1
        }]
    );
}

/// A connection up to peer `n` at `at`.
fn up(s: &mut Script, n: u8, at: SocketAddr) {
    s.handle(Event::ConnectionUp {
        conn: ConnId(u64::from(n)),
        peer: id(n),
        remote: at,
        attempt: None,
    });
}

fn observe(s: &mut Script, n: u8, observed: &str) {
    s.handle(Event::AddressObserved {
        conn: ConnId(u64::from(n)),
        observed: observed.parse().unwrap(),
    });
}

#[test]
fn a_hostile_peer_gets_one_word_one_vote_per_network_and_no_loopback_claim() {
    let mut s = Script::started(t0(), Config::default(), id(0));
    let wildcard: SocketAddr = "0.0.0.0:1314".parse().unwrap();
    s.node
        .set_local_addresses(LocalAddresses::new(wildcard, Vec::new()));
    // Two honest observers see the NAT's mapping: a cone.
    up(&mut s, 1, remote(1));
    observe(&mut s, 1, "198.51.100.7:40000");
    up(&mut s, 2, remote(2));
    observe(&mut s, 2, "198.51.100.7:40000");
    assert_eq!(s.node.nat_class(), NatClass::Cone);
    let changes = |s: &Script| {
        s.observations
            .iter()
            .filter(|o| matches!(o, Observation::NatClassChanged { .. }))
            .count()
    };
    assert_eq!(changes(&s), 1);

    // A third peer repeats itself on one connection: only its first word
    // counts, so it cannot flap the class or flood the events.
    up(&mut s, 3, remote(3));
    observe(&mut s, 3, "198.51.100.7:40000");
    for port in 0..50u16 {
        observe(&mut s, 3, &format!("198.51.100.9:{}", 1000 + port));
    }
    assert_eq!(s.node.nat_class(), NatClass::Cone);
    assert_eq!(changes(&s), 1);
    assert_eq!(s.node.metrics().observed_addresses_refused, 50);

    // Many connections from one /24 are one observer: three liars there
    // do not outvote the two honest networks.
    for n in 10..13u8 {
        up(&mut s, n, SocketAddr::from(([192, 0, 2, n], 1314)));
        observe(&mut s, n, "192.0.2.250:5");
    }
    assert_eq!(s.node.nat_class(), NatClass::Cone);
    let liars = s
        .node
        .observed_addresses()
        .into_iter()
        .find(|a| a.address == "192.0.2.250:5".parse().unwrap())
        .map(|a| a.observers);
    assert_eq!(liars, Some(1));

    // A remote peer claiming this node's loopback address (which would
    // make the wildcard socket look public) is refused.
    up(&mut s, 20, remote(20));
    observe(&mut s, 20, "127.0.0.1:1314");
    assert!(
        s.node
            .observed_addresses()
            .iter()
            .all(|a| !a.address.ip().is_loopback())
    );
    assert_eq!(s.node.nat_class(), NatClass::Cone);
}
