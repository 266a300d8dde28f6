mod common;

// Eclipse and address-diversity rules of the manager, driven by scripted
// events (issue 15, defects 4 and 5):
// - a full bucket of live honest contacts keeps them all while one attacker
//   address connects with many fresh NodeIds (no live contact leaves without
//   a failed ping; one /24 holds at most `ip_group_limits.per_bucket`);
// - the /24 limits hold on loopback once its exemption is off, per bucket
//   and per table;
// - a lookup takes at most `per_bucket` candidates of one /24 from answers;
// - an inbound peer becomes a contact only after a dial-back to the
//   address it came from succeeded.
//
// Own id `[0; 32]`: ids whose first byte has the top bit set are in bucket
// 255; the four bits below it are the id's diversity sub-range.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::Script;
use keynode_core::wire::{Request, Response};
use keynode_core::{
    BucketIndex, Command, Config, ConnId, ConnectFailure, ContactMode, Event, FindOptions,
    NodeAddress, NodeAddressScopes, NodeContact, NodeContactAddressData, NodeId, OpError, OpValue,
};

const FAR: BucketIndex = BucketIndex::FARTHEST;

fn quiet() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

/// Node `n` of bucket 255, in sub-range `sub` (0..16).
fn far(sub: u8, n: u16) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = 0x80 | (sub << 3);
    b[30] = (n >> 8) as u8;
    b[31] = n as u8;
    NodeId::from_bytes(b)
}

/// A NodeId in bucket `bucket` (< 255) of `[0; 32]`.
fn in_bucket(bucket: u8, n: u8) -> NodeId {
    let bit = usize::from(bucket);
    let mut b = [0u8; 32];
    b[31 - bit / 8] |= 1 << (bit % 8);
    if bit >= 8 {
        b[31] = n;
    }
    NodeId::from_bytes(b)
}

/// Honest host `n`: a /24 of its own.
fn honest_at(n: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(8, (n >> 8) as u8, n as u8, 1)),
        1314,
    )
}

fn data(t: u64) -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: t,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

/// `set_node` (not blocking, not forced) and how it ended.
fn set(s: &mut Script, node: NodeId, at: SocketAddr) -> Option<Result<OpValue, OpError>> {
    let op = s
        .node
        .set_node(
            s.now,
            node,
            NodeAddress::from(at),
            data(1),
            false,
            false,
            None,
        )
        .expect("set_node is accepted");
    s.drain();
    s.done(op)
}

/// Answers every connection attempt in `cmds` and those they lead to: a
/// node in `listening` answers at its address there (an honest contact's
/// ping, an attacker's dial-back), any other attempt fails.
fn answer_dials(s: &mut Script, cmds: Vec<Command>, listening: &[(NodeId, SocketAddr)]) {
    let mut queue: VecDeque<Command> = cmds.into();
    let mut conn = 10_000;
    while let Some(cmd) = queue.pop_front() {
        let Command::Connect {
            attempt,
            node_id,
            address,
            ..
        } = cmd
        else {
            continue;
        };
        let more = if listening.contains(&(node_id, address)) {
            conn += 1;
            s.handle(Event::ConnectionUp {
                conn: ConnId(conn),
                peer: node_id,
                remote: address,
                attempt: Some(attempt),
            })
        } else {
            s.handle(Event::ConnectFailed {
                attempt,
                failure: ConnectFailure::Timeout,
            })
        };
        queue.extend(more);
    }
}

/// A full bucket of 20 live honest contacts, all in one sub-range (as a
/// refresh lookup leaves a bucket), and an attacker at one IP:port that
/// connects with 160 fresh NodeIds spread over every sub-range, answering
/// every dial-back: no honest contact is evicted, and the attacker holds
/// at most two contacts (the per-/24 limit).
///
/// Before the fix, bucket diversity replaced the oldest honest contact of
/// the crowded sub-range without a ping, for each attacker id in an empty
/// one: 18 of the 20 honest contacts went.
#[test]
fn one_address_with_fresh_node_ids_evicts_no_live_contact() {
    let mut s = Script::started(common::t0(), quiet(), NodeId::from_bytes([0; 32]));
    let honest: Vec<(NodeId, SocketAddr)> = (1..=20).map(|n| (far(0, n), honest_at(n))).collect();
    for (node, at) in &honest {
        assert_eq!(set(&mut s, *node, *at), Some(Ok(OpValue::Unit)));
    }
    assert_eq!(s.node.graph().bucket_len(FAR), 20);

    let attacker_at = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(66, 66, 66, 66)), 4000);
    let attackers: Vec<NodeId> = (0..160u16).map(|i| far((i % 16) as u8, 1000 + i)).collect();
    let mut listening = honest.clone();
    listening.extend(attackers.iter().map(|a| (*a, attacker_at)));
    for (i, attacker) in attackers.iter().enumerate() {
        let cmds = s.handle(Event::ConnectionUp {
            conn: ConnId(1 + i as u64),
            peer: *attacker,
            remote: attacker_at,
            attempt: None,
        });
        answer_dials(&mut s, cmds, &listening);
        // Garbage collection and dial-backs run at once; nothing waits.
        let later = s.advance(Duration::from_secs(1));
        answer_dials(&mut s, later, &listening);
    }

    let graph = s.node.graph();
    let evicted: Vec<NodeId> = honest
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !graph.contains(n))
        .collect();
    assert!(
        evicted.is_empty(),
        "{} live honest contacts evicted",
        evicted.len()
    );
    let held = attackers.iter().filter(|a| graph.contains(a)).count();
    assert!(held <= 2, "the attacker holds {held} contacts");
    assert_eq!(graph.bucket_len(FAR), 20);
}

/// With the loopback exemption off, contacts at 127.0.0.1 (one /24) are
/// limited like any other network: two per bucket, six in the table; with
/// it on (the default), they are not.
#[test]
fn the_slash_24_limits_hold_on_loopback_with_the_exemption_off() {
    let lo = |port: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let mut config = quiet();
    config.ip_group_limits.exempt_loopback = false;
    let mut s = Script::started(common::t0(), config, NodeId::from_bytes([0; 32]));
    assert_eq!(set(&mut s, far(0, 1), lo(1)), Some(Ok(OpValue::Unit)));
    assert_eq!(set(&mut s, far(1, 2), lo(2)), Some(Ok(OpValue::Unit)));
    assert!(matches!(
        set(&mut s, far(2, 3), lo(3)),
        Some(Err(OpError::IpGroupFull(_)))
    ));
    assert_eq!(s.node.graph().bucket_len(FAR), 2);
    // Another /24 still gets in; a known contact still updates.
    assert_eq!(
        set(&mut s, far(2, 3), honest_at(3)),
        Some(Ok(OpValue::Unit))
    );
    assert_eq!(set(&mut s, far(0, 1), lo(9)), Some(Ok(OpValue::Unit)));
    // The table: six of one /24 over all buckets, the seventh refused.
    for bucket in 250..254 {
        assert_eq!(
            set(&mut s, in_bucket(bucket, 1), lo(u16::from(bucket))),
            Some(Ok(OpValue::Unit)),
            "bucket {bucket}"
        );
    }
    assert!(matches!(
        set(&mut s, in_bucket(249, 1), lo(249)),
        Some(Err(OpError::IpGroupFull(_)))
    ));
    assert!(s.node.stats().ip_group_refused >= 2);

    // The default exempts loopback: a bucket fills from 127.0.0.1.
    let mut s = Script::started(common::t0(), quiet(), NodeId::from_bytes([0; 32]));
    for n in 1..=5 {
        assert_eq!(set(&mut s, far(0, n), lo(n)), Some(Ok(OpValue::Unit)));
    }
    assert_eq!(s.node.graph().bucket_len(FAR), 5);
}

/// A contacted node answers a lookup with 19 nodes that all sit in one
/// /24, and one honest node: the lookup dials at most two of the 19 (the per-/24 limit on
/// candidates taken from answers), and still the honest one beside them.
#[test]
fn a_lookup_takes_at_most_two_candidates_of_one_slash_24_from_an_answer() {
    let mut s = Script::started(common::t0(), quiet(), NodeId::from_bytes([0; 32]));
    let responder = far(3, 1);
    assert_eq!(
        set(&mut s, responder, honest_at(1)),
        Some(Ok(OpValue::Unit))
    );
    let target = far(9, 9);
    let op = s
        .node
        .find_node(s.now, target, FindOptions::default())
        .unwrap();
    let cmds = s.drain();
    let Some(Command::Connect { attempt, .. }) =
        cmds.iter().find(|c| matches!(c, Command::Connect { .. }))
    else {
        panic!("the lookup dials the responder: {cmds:?}");
    };
    let cmds = s.handle(Event::ConnectionUp {
        conn: ConnId(1),
        peer: responder,
        remote: honest_at(1),
        attempt: Some(*attempt),
    });
    let request = cmds
        .iter()
        .find_map(|c| match c {
            Command::SendRequest {
                request,
                body: Request::ClosestNodes { .. },
                ..
            } => Some(*request),
            _ => None,
        })
        .expect("the responder is asked");
    let sybil_ip = Ipv4Addr::new(66, 66, 66, 1);
    let mut contacts: Vec<(NodeId, NodeContact)> = (0..19u16)
        .map(|i| {
            let at = NodeAddress::new(IpAddr::V4(sybil_ip), 4000 + i);
            (far(9, 100 + i), NodeContact::new(at, data(1)))
        })
        .collect();
    let honest = far(9, 50);
    // An answer is read up to k = 20 nodes: the honest one among them.
    contacts.insert(
        10,
        (
            honest,
            NodeContact::new(NodeAddress::from(honest_at(50)), data(1)),
        ),
    );
    let mut queue: VecDeque<Command> = s
        .handle(Event::ResponseReceived {
            request,
            result: Ok(Response::ClosestNodes {
                active: Vec::new(),
                contacts,
            }),
        })
        .into();
    // Every dial fails: count who was dialled.
    let mut dialled: BTreeSet<NodeId> = BTreeSet::new();
    let mut sybil_dials = 0;
    while let Some(cmd) = queue.pop_front() {
        if let Command::Connect {
            attempt,
            node_id,
            address,
            ..
        } = cmd
        {
            if address.ip() == IpAddr::V4(sybil_ip) {
                sybil_dials += 1;
            }
            dialled.insert(node_id);
            queue.extend(s.handle(Event::ConnectFailed {
                attempt,
                failure: ConnectFailure::Timeout,
            }));
        }
    }
    assert!(sybil_dials <= 2, "{sybil_dials} dials into one /24");
    assert!(dialled.contains(&honest), "the honest candidate is dialled");
    assert!(s.done(op).is_some());
}

/// An inbound peer is not a contact until a dial-back to the address it
/// connected from succeeds: a client that does not listen there (the
/// dial-back fails) never becomes one, and so is never handed out in
/// answers; one that listens does.
#[test]
fn an_inbound_peer_becomes_a_contact_only_after_a_dial_back() {
    let mut s = Script::started(common::t0(), quiet(), NodeId::from_bytes([0; 32]));
    let client = far(1, 1);
    let client_at = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9)), 51_234);
    let cmds = s.handle(Event::ConnectionUp {
        conn: ConnId(1),
        peer: client,
        remote: client_at,
        attempt: None,
    });
    assert!(
        !s.node.graph().contains(&client),
        "an inbound client is no contact before its dial-back"
    );
    let dial_back = cmds.iter().find_map(|c| match c {
        Command::Connect {
            attempt,
            node_id,
            address,
            ..
        } if *node_id == client && *address == client_at => Some(*attempt),
        _ => None,
    });
    let dial_back = dial_back.expect("the client is dialled back where it came from");
    s.handle(Event::ConnectFailed {
        attempt: dial_back,
        failure: ConnectFailure::Timeout,
    });
    assert!(!s.node.graph().contains(&client));
    assert!(s.node.graph().get_pending(&client).is_none());

    // A node that listens where it connects from gets in.
    let node = far(2, 2);
    let node_at = honest_at(2);
    let cmds = s.handle(Event::ConnectionUp {
        conn: ConnId(2),
        peer: node,
        remote: node_at,
        attempt: None,
    });
    answer_dials(&mut s, cmds, &[(node, node_at)]);
    let contact = s
        .node
        .graph()
        .get(&node)
        .expect("a dialled-back node is a contact");
    assert!(contact.get(&NodeAddress::from(node_at)).is_some());
    // Its next inbound connection from there needs no dial-back.
    let cmds = s.handle(Event::ConnectionUp {
        conn: ConnId(3),
        peer: node,
        remote: node_at,
        attempt: None,
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Connect { .. })),
        "{cmds:?}"
    );
}
