//! `find_node` and friends over small scripted topologies (the original's
//! 5-node chain, tree and cycle), with offline nodes, limits, deadlines,
//! cancellation and each strategy winning.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Net, STEPS, Script, addr, connects, id, know, network, quiet_config};
use keynode_core::{
    Command, Config, ContactMode, Event, FindOptions, MdnsConfig, NodeAddress, NodeAddressScopes,
    NodeContactAddressData, NodeId, OpError, OpValue,
};

fn find(net: &mut Net, from: u8, target: NodeId, options: FindOptions) -> Result<OpValue, OpError> {
    let op = net.call(id(from), |n, now| {
        n.find_node(now, target, options).unwrap()
    });
    net.run_until_done(id(from), op, STEPS)
}

fn found_at(result: Result<OpValue, OpError>) -> Option<(NodeAddress, ContactMode)> {
    match result {
        Ok(OpValue::Found(Some((address, data)))) => Some((address, data.mode)),
        Ok(OpValue::Found(None)) => None,
        other => panic!("unexpected result {other:?}"),
    }
}

#[test]
fn chain_of_five_finds_every_node() {
    for target in 2..=5u8 {
        let mut net = network(5);
        for i in 1..5 {
            know(&mut net, i, i + 1);
        }
        let result = find(&mut net, 1, id(target), FindOptions::default());
        assert_eq!(
            found_at(result),
            Some((NodeAddress::from(addr(target.into())), ContactMode::Direct)),
            "node 1 finds node {target} along the chain"
        );
        // The found node is now a contact of the finder.
        assert!(net.node(id(1)).graph().contains(&id(target)));
    }
}

#[test]
fn tree_and_cycle_find_every_node() {
    // Tree: 1 -> {2, 3}, 2 -> {4}, 3 -> {5}.
    for target in 2..=5u8 {
        let mut net = network(5);
        for (a, b) in [(1, 2), (1, 3), (2, 4), (3, 5)] {
            know(&mut net, a, b);
        }
        assert!(found_at(find(&mut net, 1, id(target), FindOptions::default())).is_some());
    }
    // Cycle: 1 -> 2 -> 3 -> 4 -> 5 -> 1, searched from every node.
    for from in 1..=5u8 {
        let mut net = network(5);
        for i in 1..=5u8 {
            know(&mut net, i, i % 5 + 1);
        }
        for target in (1..=5u8).filter(|t| *t != from) {
            assert!(
                found_at(find(&mut net, from, id(target), FindOptions::default())).is_some(),
                "cycle: {from} finds {target}"
            );
        }
    }
}

#[test]
fn offline_target_and_offline_middle_are_not_found() {
    let mut net = network(5);
    for i in 1..5 {
        know(&mut net, i, i + 1);
    }
    net.set_offline(id(5), true);
    assert_eq!(
        found_at(find(&mut net, 1, id(5), FindOptions::default())),
        None
    );

    let mut net = network(5);
    for i in 1..5 {
        know(&mut net, i, i + 1);
    }
    net.set_offline(id(3), true);
    assert_eq!(
        found_at(find(&mut net, 1, id(5), FindOptions::default())),
        None
    );
}

#[test]
fn unknown_target_ends_not_found_by_the_kademlia_rule() {
    let mut net = network(5);
    for i in 1..5 {
        know(&mut net, i, i + 1);
    }
    let result = find(&mut net, 1, id(99), FindOptions::default());
    assert_eq!(result, Ok(OpValue::Found(None)));
}

#[test]
fn limit_stops_the_lookup() {
    let mut net = network(5);
    for i in 1..5 {
        know(&mut net, i, i + 1);
    }
    let options = FindOptions {
        limit: Some(2),
        ..FindOptions::default()
    };
    assert_eq!(found_at(find(&mut net, 1, id(5), options)), None);
    // Node 1 contacted 2 and 3, and never 4.
    assert!(!net.node(id(4)).graph().contains(&id(1)));
    assert!(net.node(id(3)).graph().contains(&id(1)));
}

#[test]
fn deadline_ends_with_timeout() {
    let mut net = network(5);
    for i in 1..5 {
        know(&mut net, i, i + 1);
    }
    net.latency = Duration::from_millis(100);
    let options = FindOptions {
        timeout: Some(Duration::from_millis(250)),
        ..FindOptions::default()
    };
    assert_eq!(find(&mut net, 1, id(5), options), Err(OpError::Timeout));
}

#[test]
fn cancellation_ends_with_cancelled_once() {
    let mut net = network(3);
    know(&mut net, 1, 2);
    know(&mut net, 2, 3);
    let op = net.call(id(1), |n, now| {
        n.find_node(now, id(3), FindOptions::default()).unwrap()
    });
    net.call(id(1), |n, now| n.cancel(now, op).unwrap());
    assert_eq!(net.done(id(1), op), Some(Err(OpError::Cancelled)));
    for _ in 0..1000 {
        net.step();
    }
    let dones = net.peers[&id(1)]
        .outputs
        .iter()
        .filter(|o| matches!(o, keynode_core::Output::Done { op: x, .. } if *x == op))
        .count();
    assert_eq!(dones, 1, "exactly one Done per operation");
}

#[test]
fn signal_wins_when_the_target_is_behind_nat() {
    // 3 is behind NAT; 2 is connected to it (3 dialled out to 2).
    let mut net = network(3);
    know(&mut net, 1, 2);
    know(&mut net, 3, 2);
    net.behind_nat.insert(id(3));
    let op = net.call(id(3), |n, now| {
        n.ping_node_address(now, id(2), NodeAddress::from(addr(2)), None)
            .unwrap()
    });
    assert_eq!(
        net.run_until_done(id(3), op, STEPS),
        Ok(OpValue::Reachable(true))
    );

    let result = find(&mut net, 1, id(3), FindOptions::default());
    assert_eq!(
        found_at(result),
        Some((NodeAddress::from(addr(3)), ContactMode::Signal)),
        "direct dials of a node behind NAT fail; the signal through 2 succeeds"
    );
    // Counted: 3 punched at the signal, 1's signalled dial came up.
    let signalled = keynode_core::metrics::ConnKind {
        mode: ContactMode::Signal,
        direction: keynode_core::metrics::Direction::Outbound,
    };
    let m1 = net.peers[&id(1)].node.metrics();
    assert_eq!(m1.punches_succeeded, 1);
    assert_eq!(m1.connections_opened.get(signalled), 1);
    assert!(net.peers[&id(3)].node.metrics().punches_tried >= 1);
    assert_eq!(
        m1.lookups.get(keynode_core::metrics::LookupOutcome::Found),
        1
    );

    // With the direct strategy alone it cannot be reached.
    let mut again = net_behind_nat();
    let op = again.call(id(1), |n, now| {
        n.find_node_by_direct(now, id(3), FindOptions::default())
            .unwrap()
    });
    assert_eq!(
        again.run_until_done(id(1), op, STEPS),
        Ok(OpValue::Found(None))
    );
    // And with the signal strategy alone it can, once 1 is connected to 2.
    let mut again = net_behind_nat();
    let op = again.call(id(1), |n, now| {
        n.ping_node_address(now, id(2), NodeAddress::from(addr(2)), None)
            .unwrap()
    });
    assert_eq!(
        again.run_until_done(id(1), op, STEPS),
        Ok(OpValue::Reachable(true))
    );
    let op = again.call(id(1), |n, now| {
        n.find_node_by_signal(now, id(3), FindOptions::default())
            .unwrap()
    });
    let result = again.run_until_done(id(1), op, STEPS);
    assert_eq!(
        found_at(result),
        Some((NodeAddress::from(addr(3)), ContactMode::Signal))
    );
}

fn net_behind_nat() -> Net {
    let mut net = network(3);
    know(&mut net, 1, 2);
    know(&mut net, 3, 2);
    net.behind_nat.insert(id(3));
    let op = net.call(id(3), |n, now| {
        n.ping_node_address(now, id(2), NodeAddress::from(addr(2)), None)
            .unwrap()
    });
    assert_eq!(
        net.run_until_done(id(3), op, STEPS),
        Ok(OpValue::Reachable(true))
    );
    net
}

#[test]
fn existing_connection_is_found_at_once() {
    let mut net = network(2);
    know(&mut net, 1, 2);
    let op = net.call(id(1), |n, now| {
        n.ping_node_address(now, id(2), NodeAddress::from(addr(2)), None)
            .unwrap()
    });
    assert_eq!(
        net.run_until_done(id(1), op, STEPS),
        Ok(OpValue::Reachable(true))
    );
    let op = net.call(id(1), |n, now| {
        n.ping_node(now, id(2), FindOptions::default()).unwrap()
    });
    // Done without a step of the network.
    assert!(matches!(
        net.done(id(1), op),
        Some(Ok(OpValue::Found(Some(_))))
    ));
}

fn mdns_config() -> Config {
    let mut config = quiet_config();
    config.mdns = Some(MdnsConfig::default());
    config
}

#[test]
fn query_mdns_collects_answers_until_its_timeout() {
    let mut s = Script::started(common::t0(), mdns_config(), id(1));
    let op = s.node.query_mdns(s.now, id(2), None).unwrap();
    let cmds = s.drain();
    let query = match cmds.as_slice() {
        [Command::MdnsQuery { query, node_id }] if *node_id == id(2) => *query,
        other => panic!("expected one MdnsQuery, got {other:?}"),
    };
    let a: SocketAddr = "192.168.1.5:1314".parse().unwrap();
    let b: SocketAddr = "192.168.1.6:1314".parse().unwrap();
    s.handle(Event::MdnsAnswer {
        query,
        addresses: vec![a, a],
    });
    s.advance(Duration::from_millis(1000));
    s.handle(Event::MdnsAnswer {
        query,
        addresses: vec![b],
    });
    assert_eq!(s.done(op), None);
    let cmds = s.advance(Duration::from_millis(500));
    assert_eq!(s.done(op), Some(Ok(OpValue::Addresses(vec![a, b]))));
    assert!(cmds.contains(&Command::MdnsQueryEnd { query }));

    // With mDNS off, nothing is asked and nothing found.
    let mut s = Script::started(common::t0(), quiet_config(), id(1));
    let op = s.node.query_mdns(s.now, id(2), None).unwrap();
    assert!(s.drain().is_empty());
    assert_eq!(s.done(op), Some(Ok(OpValue::Addresses(Vec::new()))));
}

#[test]
fn mdns_wins_the_race_on_a_lan() {
    let mut s = Script::started(common::t0(), mdns_config(), id(1));
    let op = s
        .node
        .find_node(s.now, id(2), FindOptions::default())
        .unwrap();
    let cmds = s.drain();
    let Some(Command::MdnsQuery { query, .. }) = cmds.first().cloned() else {
        panic!("expected an mDNS query, got {cmds:?}");
    };
    let lan: SocketAddr = "192.168.1.9:1314".parse().unwrap();
    s.handle(Event::MdnsAnswer {
        query,
        addresses: vec![lan],
    });
    let cmds = s.advance(Duration::from_millis(1500));
    let attempt = cmds
        .iter()
        .find_map(|c| match c {
            Command::Connect {
                attempt, address, ..
            } if *address == lan => Some(*attempt),
            _ => None,
        })
        .expect("a connection to the mDNS address");
    s.handle(Event::ConnectionUp {
        conn: keynode_core::ConnId(1),
        peer: id(2),
        remote: lan,
        attempt: Some(attempt),
    });
    match s.done(op) {
        Some(Ok(OpValue::Found(Some((address, data))))) => {
            assert_eq!(address, NodeAddress::from(lan));
            assert_eq!(data.scopes, NodeAddressScopes::LOCAL);
        }
        other => panic!("expected found over mDNS, got {other:?}"),
    }
}

#[test]
fn ping_node_address_proves_the_node_id() {
    let mut net = network(3);
    // Right node at the address.
    let op = net.call(id(1), |n, now| {
        n.ping_node_address(now, id(2), NodeAddress::from(addr(2)), None)
            .unwrap()
    });
    assert_eq!(
        net.run_until_done(id(1), op, STEPS),
        Ok(OpValue::Reachable(true))
    );
    // Another node answers at that address: false.
    let op = net.call(id(1), |n, now| {
        n.ping_node_address(now, id(3), NodeAddress::from(addr(2)), None)
            .unwrap()
    });
    assert_eq!(
        net.run_until_done(id(1), op, STEPS),
        Ok(OpValue::Reachable(false))
    );
    // Nobody there: false after the connect timeout.
    let op = net.call(id(1), |n, now| {
        n.ping_node_address(
            now,
            id(3),
            NodeAddress::from(addr(77)),
            Some(Duration::from_secs(1)),
        )
        .unwrap()
    });
    assert_eq!(
        net.run_until_done(id(1), op, STEPS),
        Ok(OpValue::Reachable(false))
    );
    // The own NodeId is refused.
    assert!(
        net.call(id(1), |n, now| n.ping_node_address(
            now,
            id(1),
            NodeAddress::from(addr(1)),
            None
        ))
        .is_err()
    );
}

/// A relay answers a signal request with the target's address and sends
/// the target a fire-and-forget `SignalFinal`; the target's answer to that
/// is expected, not a stale event. An answer nobody asked for still is.
#[test]
fn a_relayed_signal_answer_is_expected_and_a_stray_one_is_stale() {
    use keynode_core::wire::{Request, Response};
    use keynode_core::{ConnId, PeerRequestId, RequestId};

    let mut s = Script::started(common::t0(), quiet_config(), id(1));
    for (conn, peer) in [(1, 2u8), (2, 3)] {
        s.handle(Event::ConnectionUp {
            conn: ConnId(conn),
            peer: id(peer),
            remote: addr(peer.into()),
            attempt: None,
        });
    }
    let cmds = s.handle(Event::RequestReceived {
        conn: ConnId(1),
        request: PeerRequestId(7),
        body: Request::Signal { target: id(3) },
    });
    let answer = cmds.iter().find_map(|c| match c {
        Command::SendResponse { request, body, .. } if *request == PeerRequestId(7) => {
            Some(body.clone())
        }
        _ => None,
    });
    assert_eq!(
        answer,
        Some(Response::Signal {
            target_address: addr(3)
        })
    );
    let relayed = cmds.iter().find_map(|c| match c {
        Command::SendRequest {
            conn: ConnId(2),
            request,
            body: Request::SignalFinal { source, .. },
            ..
        } if *source == id(2) => Some(*request),
        _ => None,
    });
    let relayed = relayed.expect("the target is told to punch towards the requester");

    s.handle(Event::ResponseReceived {
        request: relayed,
        result: Ok(Response::Ack),
    });
    assert_eq!(s.node.stats().stale_events, 0);
    // Only once, and a stray answer counts.
    for request in [relayed, RequestId(999_999)] {
        s.handle(Event::ResponseReceived {
            request,
            result: Ok(Response::Ack),
        });
    }
    assert_eq!(s.node.stats().stale_events, 2);
}

/// A direct dial that fails moves on to the candidate's next address (most
/// recently connected first), and the lookup ends where that one answered.
#[test]
fn a_failed_dial_moves_on_to_the_candidates_next_address() {
    use keynode_core::{AttemptId, ConnId, ConnectFailure};

    let mut s = Script::started(common::t0(), quiet_config(), id(1));
    let (older, newer) = (addr(20), addr(21));
    for (address, connected_time) in [(older, 100), (newer, 200)] {
        let data = NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time,
            scopes: NodeAddressScopes::GLOBAL,
        };
        let op = s
            .node
            .set_node(
                s.now,
                id(2),
                NodeAddress::from(address),
                data,
                false,
                false,
                None,
            )
            .unwrap();
        s.drain();
        assert!(matches!(s.done(op), Some(Ok(_))));
    }
    let dials = |cmds: &[Command]| -> Vec<(AttemptId, SocketAddr)> {
        connects(cmds)
            .into_iter()
            .map(|(a, _, at)| (a, at))
            .collect()
    };

    let op = s
        .node
        .find_node(s.now, id(2), FindOptions::default())
        .unwrap();
    let first = dials(&s.drain());
    assert_eq!(first.iter().map(|d| d.1).collect::<Vec<_>>(), vec![newer]);
    let cmds = s.handle(Event::ConnectFailed {
        attempt: first[0].0,
        failure: ConnectFailure::Timeout,
    });
    let second = dials(&cmds);
    assert_eq!(second.iter().map(|d| d.1).collect::<Vec<_>>(), vec![older]);
    assert_eq!(s.done(op), None);
    s.handle(Event::ConnectionUp {
        conn: ConnId(1),
        peer: id(2),
        remote: older,
        attempt: Some(second[0].0),
    });
    match s.done(op) {
        Some(Ok(OpValue::Found(Some((at, data))))) => {
            assert_eq!(at, NodeAddress::from(older));
            assert_eq!(data.mode, ContactMode::Direct);
        }
        other => panic!("{other:?}"),
    }
}
