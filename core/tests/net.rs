//! Full nodes (manager + QUIC) exchanging real QUIC datagrams over an
//! in-memory network with a virtual clock: handshakes, requests, lookups,
//! claims, and a wrong certificate key refused.

mod common;
mod datagram_net;

use datagram_net::{DatagramNet, Sent, address};
use keynode_core::claims::KeyPair;
use keynode_core::net::NetConfig;
use keynode_core::{ContactMode, FindOptions, NodeAddress, NodeId, OpValue, UserCall};

#[test]
fn quic_handshake_proves_the_node_id_and_lookups_work() {
    let mut net = DatagramNet::new();
    let ids: Vec<NodeId> = (1..=4).map(|n| net.add(n)).collect();
    // A chain: 1 knows 2, 2 knows 3, 3 knows 4.
    for n in 1..=3u8 {
        net.know(n, ids[n as usize], n + 1);
    }
    let op = net.call(
        1,
        UserCall::FindNode {
            node_id: ids[3],
            options: FindOptions::default(),
        },
    );
    match net.wait(1, op) {
        Ok(OpValue::Found(Some((found_at, data)))) => {
            assert_eq!(found_at, NodeAddress::from(address(4)));
            assert_eq!(data.mode, ContactMode::Direct);
        }
        other => panic!("expected node 4 found over QUIC, got {other:?}"),
    }
    // Every hop was a real QUIC connection, recorded in both graphs.
    for _ in 0..100 {
        net.step();
    }
    let host4 = &net.hosts[&address(4)];
    assert!(host4.node.manager_ref().graph().contains(&ids[0]));
    assert!(net.hosts[&address(1)].node.connection_count() >= 1);
}

#[test]
fn a_wrong_certificate_key_is_refused() {
    let mut net = DatagramNet::new();
    let one = net.add(1);
    let _two = net.add(2);
    let _ = one;
    // Node 1 dials address 2 expecting some other NodeId.
    let impostor = KeyPair::from_seed(&[99; 32]).unwrap().node_id();
    let op = net.call(
        1,
        UserCall::PingNodeAddress {
            node_id: impostor,
            address: NodeAddress::from(address(2)),
            connect_timeout: None,
        },
    );
    assert_eq!(net.wait(1, op), Ok(OpValue::Reachable(false)));
    assert!(
        !net.hosts[&address(1)]
            .node
            .manager_ref()
            .graph()
            .contains(&impostor)
    );
    assert_eq!(net.hosts[&address(1)].node.connection_count(), 0);
}

#[test]
fn claims_cross_sign_over_quic() {
    let mut net = DatagramNet::new();
    let a = net.add(1);
    let b = net.add(2);
    net.know(1, b, 2);
    let op = net.call(
        2,
        UserCall::AllowClaimsFrom {
            node_id: a,
            allowed: true,
        },
    );
    assert_eq!(net.wait(2, op), Ok(OpValue::Unit));
    let op = net.call(
        1,
        UserCall::ClaimNode {
            node_id: b,
            timeout: None,
        },
    );
    assert_eq!(net.wait(1, op), Ok(OpValue::Unit));
    for _ in 0..500 {
        net.step();
    }
    let chain_a = net.hosts[&address(1)].node.manager_ref().sigchain();
    let chain_b = net.hosts[&address(2)].node.manager_ref().sigchain();
    assert_eq!(chain_a.len(), 1);
    assert_eq!(chain_b.len(), 1);
    assert!(chain_a[0].verify(&[a, b]).is_ok());
    assert!(chain_b[0].verify(&[a, b]).is_ok());
    // And chain data travels as a request over QUIC.
    let op = net.call(
        1,
        UserCall::RequestChainData {
            node_id: b,
            from: None,
            limit: None,
        },
    );
    match net.wait(1, op) {
        Ok(OpValue::Chain { claims, rejected }) => {
            assert_eq!(claims, chain_b);
            assert!(rejected.is_empty());
        }
        other => panic!("expected chain data, got {other:?}"),
    }
}

#[test]
fn nodes_sync_through_a_seed_and_find_each_other_over_quic() {
    let mut net = DatagramNet::new();
    let ids: Vec<NodeId> = (1..=5).map(|n| net.add(n)).collect();
    let seeds = keynode_core::SeedNodes::new([(ids[0], NodeAddress::from(address(1)))]);
    for n in 2..=5u8 {
        let op = net.call(
            n,
            UserCall::SyncNodeGraph {
                seeds: seeds.clone(),
                connect_timeout: None,
                blocking: true,
            },
        );
        assert_eq!(net.wait(n, op), Ok(OpValue::Unit), "node {n} joins");
    }
    for from in 1..=5u8 {
        for (j, target) in ids.iter().enumerate() {
            if usize::from(from) == j + 1 {
                continue;
            }
            let target = *target;
            let op = net.call(
                from,
                UserCall::FindNode {
                    node_id: target,
                    options: FindOptions::default(),
                },
            );
            match net.wait(from, op) {
                Ok(OpValue::Found(Some((at, _)))) => {
                    assert_eq!(at, NodeAddress::from(address(j as u8 + 1)));
                }
                other => panic!("node {from} finding node {}: {other:?}", j + 1),
            }
        }
    }
}

/// A lookup signals a candidate it learned from a node connected to it
/// before sending the candidate anything, and each side's punch opens its
/// own NAT with a low-TTL packet before anything else goes to the other:
/// the handshake waits `punch_delay` behind it.
#[test]
fn a_signalled_connection_starts_with_low_ttl_punches_and_a_held_handshake() {
    let mut net = DatagramNet::new();
    let seed_id = net.add(1);
    let b = net.add(2);
    net.add(3);
    for n in [2u8, 3] {
        net.know(n, seed_id, 1);
        let op = net.call(
            n,
            UserCall::PingNode {
                node_id: seed_id,
                options: FindOptions::default(),
            },
        );
        assert!(matches!(net.wait(n, op), Ok(OpValue::Found(Some(_)))));
    }
    net.sent.clear();
    let op = net.call(
        3,
        UserCall::FindNode {
            node_id: b,
            options: FindOptions::default(),
        },
    );
    let Ok(OpValue::Found(Some((at, data)))) = net.wait(3, op) else {
        panic!("node 3 does not find node 2");
    };
    assert_eq!(
        (at, data.mode),
        (NodeAddress::from(address(2)), ContactMode::Signal)
    );

    let net_config = NetConfig::default();
    let between = |from: u8, to: u8| -> Vec<Sent> {
        net.sent
            .iter()
            .filter(|s| s.from == address(from) && s.to == address(to))
            .copied()
            .collect()
    };
    let (to_b, to_finder) = (between(3, 2), between(2, 3));
    for (who, sent) in [("the finder", &to_b), ("the target", &to_finder)] {
        let first = sent.first().unwrap_or_else(|| panic!("{who} sent nothing"));
        assert_eq!(
            (first.ttl, first.len),
            (Some(net_config.punch_ttl), net_config.punch_packet_len),
            "{who}'s first datagram is the low-TTL punch: {sent:?}"
        );
        assert!(
            sent.iter()
                .skip(1)
                .all(|s| s.ttl.is_none() && s.at >= first.at + net_config.punch_delay),
            "{who} sends nothing else until the punch delay is over: {sent:?}"
        );
    }
    // The finder's handshake (QUIC Initials are padded to 1200 bytes) went
    // out when the delay was over, not before.
    let initial = to_b.iter().find(|s| s.len >= 1200).expect("a QUIC Initial");
    assert_eq!(initial.at, to_b[0].at + net_config.punch_delay);
}

/// A signal naming an address we are already connected to opens nothing
/// and holds nothing back: the connection's datagrams keep flowing (a
/// peer could otherwise stall our traffic to any node by naming it).
#[test]
fn a_punch_towards_a_connected_address_sends_and_holds_nothing() {
    let mut net = DatagramNet::new();
    let relay = net.add(1);
    let b = net.add(2);
    let c = net.add(3);
    for n in [2u8, 3] {
        net.know(n, relay, 1);
        let op = net.call(
            n,
            UserCall::PingNode {
                node_id: relay,
                options: FindOptions::default(),
            },
        );
        assert!(matches!(net.wait(n, op), Ok(OpValue::Found(Some(_)))));
    }
    // b and c are connected directly.
    net.know(2, c, 3);
    let op = net.call(
        2,
        UserCall::PingNode {
            node_id: c,
            options: FindOptions::default(),
        },
    );
    assert!(matches!(net.wait(2, op), Ok(OpValue::Found(Some(_)))));
    net.sent.clear();

    // c asks the relay to signal b: b is told to punch towards c.
    let (conn, _, _) = net
        .manager(3)
        .connections()
        .into_iter()
        .find(|(_, peer, _)| *peer == relay)
        .expect("c is connected to the relay");
    let op = net.call(
        3,
        UserCall::Request {
            conn,
            body: keynode_core::wire::Request::Signal { target: b },
        },
    );
    assert!(matches!(
        net.wait(3, op),
        Ok(OpValue::Response(
            keynode_core::wire::Response::Signal { .. }
        ))
    ));
    // And b still talks to c at once: a ping over their connection.
    let op = net.call(
        2,
        UserCall::PingNode {
            node_id: c,
            options: FindOptions::default(),
        },
    );
    assert!(matches!(net.wait(2, op), Ok(OpValue::Found(Some(_)))));
    // Whatever b would have punched is due by now.
    for _ in 0..2_000 {
        if !net.step() {
            break;
        }
    }
    let from_b: Vec<Sent> = net
        .sent
        .iter()
        .filter(|s| s.from == address(2) && s.to == address(3))
        .copied()
        .collect();
    assert!(
        from_b.iter().all(|s| s.ttl.is_none()),
        "b punched towards a connected peer: {from_b:?}"
    );
}

/// A response the asker cannot decode (here: larger than its
/// `max_message_size`) fails the request with why, not as "not connected".
#[test]
fn an_undecodable_response_says_why() {
    use keynode_core::wire::{DecodeError, Request};
    use keynode_core::{NodeAddressScopes, NodeContactAddressData, OpError};

    let mut net = DatagramNet::new();
    let mut small = datagram_net::config();
    small.max_message_size = 1024;
    let _asker = net.add_with(1, small, NetConfig::default());
    let answerer = net.add(2);
    // The answerer knows twenty nodes at long hostnames: its answer to a
    // lookup is well over 1 KiB.
    for n in 0..20u8 {
        let mut id = [n + 1; 32];
        id[0] = 0x80;
        let op = net.call(
            2,
            UserCall::SetNode {
                node_id: NodeId::from_bytes(id),
                address: NodeAddress::new(
                    keynode_core::Host::Name(
                        format!("node{n}-{}.example", "x".repeat(50))
                            .parse()
                            .unwrap(),
                    ),
                    4000,
                ),
                data: NodeContactAddressData {
                    mode: ContactMode::Direct,
                    connected_time: 1,
                    scopes: NodeAddressScopes::GLOBAL,
                },
                block: false,
                force: true,
                connect_timeout: None,
            },
        );
        assert_eq!(net.wait(2, op), Ok(OpValue::Unit));
    }
    let op = net.call(
        1,
        UserCall::PingNodeAddress {
            node_id: answerer,
            address: NodeAddress::from(address(2)),
            connect_timeout: None,
        },
    );
    assert_eq!(net.wait(1, op), Ok(OpValue::Reachable(true)));
    let (conn, _, _) = net
        .manager(1)
        .connections()
        .into_iter()
        .find(|(_, peer, _)| *peer == answerer)
        .expect("connected to the answerer");
    let op = net.call(
        1,
        UserCall::Request {
            conn,
            body: Request::ClosestNodes {
                target: NodeId::from_bytes([7; 32]),
            },
        },
    );
    match net.wait(1, op) {
        Err(OpError::InvalidResponse(DecodeError::TooLarge { size, limit })) => {
            assert_eq!(limit, 1024);
            assert!(size > limit);
        }
        other => panic!("expected an invalid response, got {other:?}"),
    }
}
