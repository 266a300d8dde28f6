//! Signalling for hole punching as an attacker would use it (issue 15,
//! defect 9): a `SignalFinal` makes the target send datagrams to the address
//! it names, so only a signaller the target dialled may send one, and fresh
//! NodeIds from one address cannot multiply the rate limit.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::{Script, addr, connects, id, t0};
use keynode_core::wire::{RefusalReason, Request, Response};
use keynode_core::{Command, Config, ConnId, Event, NodeAddress, NodeId, PeerRequestId};

/// A third party the attacker wants flooded.
fn victim() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 53)
}

/// A fresh NodeId, as free as an attacker wants them.
fn fresh(n: u16) -> NodeId {
    let mut bytes = [0xf0; 32];
    bytes[..2].copy_from_slice(&n.to_be_bytes());
    NodeId::from_bytes(bytes)
}

fn response_to(cmds: &[Command], request: PeerRequestId) -> Option<Response> {
    cmds.iter().find_map(|c| match c {
        Command::SendResponse {
            request: r, body, ..
        } if *r == request => Some(body.clone()),
        _ => None,
    })
}

fn punches(cmds: &[Command]) -> Vec<SocketAddr> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::HolePunch { address, .. } => Some(*address),
            _ => None,
        })
        .collect()
}

/// Node 1 dials node `peer` and the connection comes up as `conn`.
fn dial(s: &mut Script, peer: u8, conn: u64) {
    let now = s.now;
    s.node
        .ping_node_address(now, id(peer), NodeAddress::from(addr(peer.into())), None)
        .unwrap();
    let cmds = s.drain();
    let (attempt, _, _) = connects(&cmds)[0];
    s.handle(Event::ConnectionUp {
        conn: ConnId(conn),
        peer: id(peer),
        remote: addr(peer.into()),
        attempt: Some(attempt),
    });
}

#[test]
fn a_signal_final_from_a_peer_we_did_not_dial_punches_nothing() {
    let mut s = Script::started(t0(), Config::default(), id(1));
    // The attacker connects in with a fresh key and names the victim.
    s.handle(Event::ConnectionUp {
        conn: ConnId(1),
        peer: fresh(1),
        remote: addr(66),
        attempt: None,
    });
    let cmds = s.handle(Event::RequestReceived {
        conn: ConnId(1),
        request: PeerRequestId(1),
        body: Request::SignalFinal {
            source: fresh(2),
            source_address: victim(),
        },
    });
    assert_eq!(
        punches(&cmds),
        Vec::<SocketAddr>::new(),
        "punched for an unvouched signaller"
    );
    assert_eq!(
        response_to(&cmds, PeerRequestId(1)),
        Some(Response::Refused(RefusalReason::Unvouched))
    );
    assert_eq!(s.node.stats().signals_unvouched, 1);

    // A signaller we dialled is trusted with the address it observed...
    dial(&mut s, 2, 2);
    let requester = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)), 40_000);
    let cmds = s.handle(Event::RequestReceived {
        conn: ConnId(2),
        request: PeerRequestId(2),
        body: Request::SignalFinal {
            source: id(3),
            source_address: requester,
        },
    });
    assert_eq!(punches(&cmds), vec![requester]);
    assert_eq!(response_to(&cmds, PeerRequestId(2)), Some(Response::Ack));
    // ...but not with one no relay could have observed.
    for (request, bogus) in [
        (3, SocketAddr::new(requester.ip(), 0)),
        (
            4,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 250)), 64023),
        ),
        (5, SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), 9)),
        (6, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9)),
    ] {
        let cmds = s.handle(Event::RequestReceived {
            conn: ConnId(2),
            request: PeerRequestId(request),
            body: Request::SignalFinal {
                source: id(3),
                source_address: bogus,
            },
        });
        assert_eq!(
            punches(&cmds),
            Vec::<SocketAddr>::new(),
            "punched towards {bogus}"
        );
    }
    assert_eq!(s.node.stats().signals_unvouched, 5);
}

/// Relayed signals for `requesters` (each a fresh key connected in from its
/// address) asking the relay (node 1) to signal node 2.
fn relay_flood(s: &mut Script, requesters: &[SocketAddr]) -> usize {
    let mut relayed = 0;
    for (i, remote) in requesters.iter().enumerate() {
        let n = u16::try_from(i).unwrap();
        let conn = ConnId(100 + u64::from(n));
        s.handle(Event::ConnectionUp {
            conn,
            peer: fresh(n),
            remote: *remote,
            attempt: None,
        });
        let cmds = s.handle(Event::RequestReceived {
            conn,
            request: PeerRequestId(u64::from(n)),
            body: Request::Signal { target: id(2) },
        });
        relayed += cmds
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Command::SendRequest {
                        body: Request::SignalFinal { .. },
                        ..
                    }
                )
            })
            .count();
        // Close it again: the flood is of connections as much as of signals.
        s.handle(Event::ConnectionClosed { conn });
    }
    relayed
}

#[test]
fn fresh_keys_at_one_address_share_one_signal_budget() {
    let config = Config::default();
    let per_ip = config.signal_rate_per_ip_capacity as usize;
    let mut s = Script::started(t0(), config, id(1));
    s.handle(Event::ConnectionUp {
        conn: ConnId(1),
        peer: id(2),
        remote: addr(2),
        attempt: None,
    });
    let attacker = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 66));
    let flood: Vec<SocketAddr> = (0..100)
        .map(|port| SocketAddr::new(attacker, 30_000 + port))
        .collect();
    let relayed = relay_flood(&mut s, &flood);
    assert_eq!(relayed, per_ip, "signals relayed for one address");
    assert_eq!(s.node.stats().signals_rate_limited, (100 - per_ip) as u64);
    // Another address still gets its signal through.
    let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 67)), 30_000);
    assert_eq!(relay_flood(&mut s, &[other]), 1);
}

#[test]
fn signals_are_bounded_in_total_whatever_the_addresses() {
    let config = Config::default();
    let total = config.signal_rate_total_capacity as usize;
    let mut s = Script::started(t0(), config, id(1));
    s.handle(Event::ConnectionUp {
        conn: ConnId(1),
        peer: id(2),
        remote: addr(2),
        attempt: None,
    });
    let flood: Vec<SocketAddr> = (0..2 * total)
        .map(|i| {
            let i = u32::try_from(i).unwrap();
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xcb00_7100 + i)), 30_000)
        })
        .collect();
    assert_eq!(relay_flood(&mut s, &flood), total);
    assert_eq!(s.node.stats().signals_rate_limited, total as u64);
}
