//! Datagrams straight into the mDNS service, which is at once a responder
//! (announcing this node, answering questions for it) and a querier
//! (asking for a peer), with virtual time passing between them. Nothing
//! may panic, every poll must run dry, and the service's bounds must hold:
//! queries in flight, answers, addresses per answer.
//!
//! Input: one setup byte, then records of
//! `[kind/from] [time step] [len lo] [len hi] [len bytes]`:
//! - setup bit 0: announce; bit 1: query for the peer; bit 2: query for
//!   this node itself;
//! - kind (low 2 bits): 0 a datagram; 1 a datagram, then stop (announcing
//!   and querying); 2 a datagram, then announce and query again; 3 only
//!   time passes;
//! - from: bits 2..5 pick one of [`FROM`];
//! - time step: `step²` milliseconds (up to about 65 s, past the query
//!   lifetime with a few records).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use keynode_core::claims::KeyPair;
use keynode_core::net::mdns::{
    MAX_ADDRESSES, MAX_PENDING_ANSWERS, MAX_PENDING_TRANSMITS, MAX_QUERIES, MdnsService,
};
use keynode_core::{MdnsConfig, NodeId, QueryId};

use crate::take;

/// One monotonic instant per process; inputs run on virtual time from it.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

const MAX_RECORDS: usize = 64;
/// The own node's key seed.
pub const OWN_SECRET: [u8; 32] = [1; 32];
/// The key seed of the peer it asks for.
pub const PEER_SECRET: [u8; 32] = [3; 32];
/// The address the own node announces.
pub const OWN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1314);

/// Where datagrams come from: the mDNS port and 5353 (trusted for
/// responses), other ports (legacy unicast questions), both families.
pub const FROM: [SocketAddr; 8] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 64023),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5)), 5353),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        64023,
    ),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        5353,
    ),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 250)), 64023),
    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 1),
];

const PEER_QUERY: QueryId = QueryId(1);
const SELF_QUERY: QueryId = QueryId(2);

/// The NodeId of a key seed.
pub fn node_id(secret: &[u8; 32]) -> NodeId {
    KeyPair::from_seed(secret).expect("a valid seed").node_id()
}

/// A service for `secret`'s node announcing `addresses` on the default groups.
pub fn service(secret: &[u8; 32], addresses: Vec<SocketAddr>) -> MdnsService {
    MdnsService::new(node_id(secret), addresses, *BASE, &MdnsConfig::default())
        .expect("a valid mDNS configuration")
}

/// The virtual clock's start.
pub fn start() -> Instant {
    *BASE
}

/// Takes everything the service has to send and report, checking the bounds.
fn drain(mdns: &mut MdnsService) {
    let mut transmits = 0;
    while mdns.poll_transmit().is_some() {
        transmits += 1;
        assert!(
            transmits <= MAX_PENDING_TRANSMITS,
            "more queued transmits than the bound"
        );
    }
    let mut answers = 0;
    while let Some((query, found)) = mdns.poll_answer() {
        answers += 1;
        assert!(
            answers <= MAX_PENDING_ANSWERS,
            "more pending answers than the bound"
        );
        assert!(
            query == PEER_QUERY || query == SELF_QUERY,
            "an answer to {query:?}, which was never asked"
        );
        assert!(!found.is_empty(), "an answer without addresses");
        assert!(
            found.len() <= MAX_ADDRESSES,
            "{} addresses in one answer",
            found.len()
        );
    }
    assert!(mdns.queries_in_flight() <= MAX_QUERIES);
}

/// Runs every timeout due at `now`.
fn run_timers(mdns: &mut MdnsService, now: Instant) {
    for _ in 0..1000 {
        if mdns.poll_timeout().is_none_or(|t| t > now) {
            return;
        }
        mdns.handle_timeout(now);
        drain(mdns);
    }
}

fn begin(mdns: &mut MdnsService, setup: u8, now: Instant) {
    if setup & 1 != 0 {
        let _ = mdns.announce(now);
    }
    if setup & 2 != 0 {
        let _ = mdns.query(now, PEER_QUERY, node_id(&PEER_SECRET));
    }
    if setup & 4 != 0 {
        let _ = mdns.query(now, SELF_QUERY, node_id(&OWN_SECRET));
    }
    drain(mdns);
}

/// The target.
pub fn run(input: &[u8]) {
    let Some((&setup, mut rest)) = input.split_first() else {
        return;
    };
    let mut now = start();
    let mut mdns = service(&OWN_SECRET, vec![OWN_ADDRESS]);
    begin(&mut mdns, setup, now);
    for _ in 0..MAX_RECORDS {
        if rest.len() < 4 {
            break;
        }
        let head = take(&mut rest, 4);
        let (ctl, step) = (head[0], u64::from(head[1]));
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let payload = take(&mut rest, len);
        let from = FROM[usize::from(ctl >> 2) % FROM.len()];
        now += Duration::from_millis(step * step);
        run_timers(&mut mdns, now);
        if ctl & 3 != 3 {
            mdns.handle_datagram(now, from, payload);
            drain(&mut mdns);
        }
        match ctl & 3 {
            1 => mdns.stop(now),
            2 => begin(&mut mdns, setup | 1, now),
            _ => {}
        }
        drain(&mut mdns);
    }
    // Let everything in flight time out.
    now += Duration::from_secs(120);
    run_timers(&mut mdns, now);
}
