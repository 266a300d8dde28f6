//! One QUIC [`Node`] fed the fuzz input as datagrams on its QUIC and mDNS
//! sockets, with virtual time passing between them; every command it emits
//! is drained (store batches are committed) and its timers are run. Nothing
//! may panic, and `poll` must run dry.
//!
//! Input: one setup byte, then records of
//! `[kind/from] [time step] [len lo] [len hi] [len bytes]`:
//! - setup bit 0: the node dials a peer at `FROM[0]` first (so datagrams
//!   from there reach a client connection); bit 1: it looks for a node on
//!   mDNS (so mDNS answers are wanted);
//! - kind (low 2 bits): 0 a datagram on the QUIC socket; 1 on the mDNS
//!   socket; 2 a real client Initial (made once per process by a second
//!   node dialling this one) with the payload's `[pos lo, pos hi, xor]`
//!   triples applied, so the handshake gets past the first packet; 3 only
//!   time passes;
//! - from: bits 2..5 pick one of `FROM`;
//! - time step: `step²` milliseconds (up to about 65 s: past the idle
//!   timeout and the connect timeout).
//!
//! The client Initial depends on OS randomness (ring's key exchange, the
//! initial connection id), so a kind-2 input may take another path in
//! another process.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use keynode_core::claims::KeyPair;
use keynode_core::net::{DriverEvent, NetCommand, NetConfig, Node};
use keynode_core::{Config, FindOptions, MdnsConfig, NodeAddress, NodeId, Now, UserCall};
use libfuzzer_sys::fuzz_target;

/// One monotonic instant per process; inputs run on virtual time from it.
static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

const UNIX_MS: u64 = 1_700_000_000_000;
const MAX_RECORDS: usize = 64;
/// More commands than this from one input means `poll` never runs dry.
const MAX_COMMANDS: usize = 100_000;

const OWN_SECRET: [u8; 32] = [1; 32];
const PEER_SECRET: [u8; 32] = [3; 32];
const OWN_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1314);

const FROM: [SocketAddr; 8] = [
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 1314),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5)), 64023),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
        64023,
    ),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5353),
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        4433,
    ),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(224, 0, 0, 250)), 64023),
    SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), 65535),
];

fn start() -> Now {
    Now::new(*BASE, UNIX_MS)
}

fn node_id(secret: &[u8; 32]) -> NodeId {
    KeyPair::from_seed(secret).expect("a valid seed").node_id()
}

/// A client's first datagram to this node: a second node dials it.
static CLIENT_INITIAL: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let now = start();
    let mut client = Node::new(
        Config::default(),
        NetConfig::default(),
        &PEER_SECRET,
        now,
        PEER_SECRET,
    )
    .expect("a node");
    let _ = client.call(now, UserCall::Start).expect("start");
    drain(&mut client, now);
    let ping = UserCall::PingNodeAddress {
        node_id: node_id(&OWN_SECRET),
        address: NodeAddress::from(OWN_ADDRESS),
        connect_timeout: None,
    };
    let _ = client.call(now, ping).expect("ping");
    let mut initial = None;
    while let Some(command) = client.poll() {
        match command {
            NetCommand::Transmit(t) if t.destination == OWN_ADDRESS && initial.is_none() => {
                initial = Some(t.contents);
            }
            NetCommand::Store(batch) => {
                client.handle(now, DriverEvent::StoreCommitted(batch.id));
            }
            _ => {}
        }
    }
    initial.expect("the client sends an Initial")
});

/// Carries out every command: store batches are committed, the rest dropped.
fn drain(node: &mut Node, now: Now) {
    for _ in 0..MAX_COMMANDS {
        match node.poll() {
            None => return,
            Some(NetCommand::Store(batch)) => {
                node.handle(now, DriverEvent::StoreCommitted(batch.id));
            }
            Some(_) => {}
        }
    }
    panic!("poll did not run dry after {MAX_COMMANDS} commands");
}

/// Runs every timer due at `now`.
fn run_timers(node: &mut Node, now: Now) {
    for _ in 0..1000 {
        if node.poll_timeout().is_none_or(|(t, _)| t > now.mono) {
            return;
        }
        node.handle_timeout(now);
        drain(node, now);
    }
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = bytes.split_at(n.min(bytes.len()));
    *bytes = tail;
    head
}

fn run(input: &[u8]) {
    let Some((&setup, mut rest)) = input.split_first() else {
        return;
    };
    let mut now = start();
    let mut config = Config::default();
    config.mdns = Some(MdnsConfig::default());
    let mut node =
        Node::new(config, NetConfig::default(), &OWN_SECRET, now, [2; 32]).expect("a node");
    node.set_announced_addresses(vec![OWN_ADDRESS]);
    let _ = node.call(now, UserCall::Start).expect("start");
    drain(&mut node, now);
    let peer = node_id(&PEER_SECRET);
    if setup & 1 != 0 {
        let ping = UserCall::PingNodeAddress {
            node_id: peer,
            address: NodeAddress::from(FROM[0]),
            connect_timeout: None,
        };
        let _ = node.call(now, ping);
        drain(&mut node, now);
    }
    if setup & 2 != 0 {
        let find = UserCall::FindNodeByMdns {
            node_id: peer,
            options: FindOptions::default(),
        };
        let _ = node.call(now, find);
        drain(&mut node, now);
    }
    for _ in 0..MAX_RECORDS {
        if rest.len() < 4 {
            break;
        }
        let head = take(&mut rest, 4);
        let (ctl, step) = (head[0], u64::from(head[1]));
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        let payload = take(&mut rest, len);
        let from = FROM[usize::from(ctl >> 2) % FROM.len()];
        now = now.advanced(Duration::from_millis(step * step));
        match ctl & 3 {
            0 => node.handle(
                now,
                DriverEvent::Datagram {
                    from,
                    bytes: payload,
                },
            ),
            1 => node.handle(
                now,
                DriverEvent::MdnsDatagram {
                    from,
                    bytes: payload,
                },
            ),
            2 => {
                let mut datagram = CLIENT_INITIAL.clone();
                for edit in payload.chunks_exact(3) {
                    let at = usize::from(u16::from_le_bytes([edit[0], edit[1]]));
                    if let Some(byte) = datagram.get_mut(at) {
                        *byte ^= edit[2];
                    }
                }
                node.handle(
                    now,
                    DriverEvent::Datagram {
                        from,
                        bytes: &datagram,
                    },
                );
            }
            _ => {}
        }
        drain(&mut node, now);
        run_timers(&mut node, now);
    }
    // Let everything in flight time out.
    now = now.advanced(Duration::from_secs(120));
    run_timers(&mut node, now);
}

fuzz_target!(|input: &[u8]| run(input));
