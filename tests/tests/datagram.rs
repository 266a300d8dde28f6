//! Full nodes over real QUIC on the virtual network (the datagram level):
//! every handshake, request and hole punch below is quinn-proto and rustls
//! exchanging datagrams. Nodes join through one seed and find each other;
//! the same seed gives the same run; QUIC recovers lost packets; NATs
//! filter, and signalling plus hole punching gets through the ones the
//! core can traverse; a node offline or gone is noticed by QUIC itself;
//! nodes punched through their NATs run application streams both ways,
//! over a lossy link too.

use std::time::Duration;

use keynode_core::net::{
    AppEvent, Protocol, ProtocolOptions, StreamDir, StreamError, StreamHandle, StreamTables,
};
use keynode_core::{
    Config, ConnId, ContactMode, FindOptions, NodeAddress, NodeId, OpError, OpValue,
};
use keynode_tests::{
    DatagramLevel, DatagramSim, DatagramStats, HostId, Latency, NatType, NetConfig, Network, Sim,
    nat_report,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Virtual time any one operation may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The defaults without background work (no bucket refresh, no
/// connection check): the library's, shared by every simulator test.
use keynode_tests::nat_report::quiet_config as quiet;

/// A network of log-normal latencies (median 40 ms) losing `loss` of the
/// datagrams.
fn network(seed: u64, loss: f64) -> DatagramSim {
    eprintln!("seed {seed}, loss {loss}");
    let config = NetConfig {
        latency: Latency::default(),
        loss,
        ..NetConfig::default()
    };
    Sim::new(DatagramLevel::new(seed), Network::new(config, seed), seed)
}

/// Adds one node per NAT type, with keys drawn from `seed`.
fn add_nodes(sim: &mut DatagramSim, seed: u64, nats: &[NatType]) -> Vec<HostId> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973);
    nats.iter()
        .map(|nat| {
            let secret: [u8; 32] = rng.random();
            sim.add_node(quiet(), secret, *nat)
        })
        .collect()
}

/// `host` joins from `seeds` and the join succeeds.
fn join(sim: &mut DatagramSim, host: HostId, seeds: &[HostId]) {
    let op = sim.join(host, seeds);
    let result = sim.run_until_done(host, op, LIMIT);
    assert_eq!(
        result,
        Some(Ok(OpValue::Unit)),
        "{host:?} joins from {seeds:?} at {:?}",
        sim.elapsed()
    );
}

/// A lookup of `target` by `finder`, run to its end.
fn find(sim: &mut DatagramSim, finder: HostId, target: NodeId) -> Result<OpValue, OpError> {
    let op = sim.find(finder, target, FindOptions::default());
    sim.run_until_done(finder, op, LIMIT)
        .unwrap_or_else(|| panic!("the lookup of {target} by {finder:?} did not end"))
}

/// Lets every connection close: the manager's idle TTL (60 s), then
/// QUIC's idle timeout (30 s).
fn idle_out(sim: &mut DatagramSim) {
    sim.advance(Duration::from_secs(300));
    assert_eq!(sim.level.connection_ends(), 0, "every connection closed");
}

/// Whether `host`'s node has a QUIC connection up to `peer`.
fn connected(sim: &DatagramSim, host: HostId, peer: HostId) -> bool {
    let peer = sim.level.node_id(peer);
    sim.level
        .manager(host)
        .is_some_and(|m| m.connections().iter().any(|(_, p, _)| *p == peer))
}

/// `n` public nodes join through the first, every connection closes, then
/// every node finds every other at its public address. Returns the trace
/// hash and the datagram counters.
fn all_find_all(seed: u64, n: usize, loss: f64) -> (u64, DatagramStats) {
    let mut sim = network(seed, loss);
    let hosts = add_nodes(&mut sim, seed, &vec![NatType::None; n]);
    for h in &hosts[1..] {
        join(&mut sim, *h, &[hosts[0]]);
    }
    for h in &hosts {
        let graph = sim.level.manager(*h).expect("alive").graph();
        assert!(!graph.is_empty(), "{h:?} knows someone after the joins");
    }
    // From here on every lookup dials: nothing is connected.
    idle_out(&mut sim);
    for from in &hosts {
        for to in &hosts {
            if from == to {
                continue;
            }
            let target = sim.level.node_id(*to);
            match find(&mut sim, *from, target) {
                Ok(OpValue::Found(Some((at, data)))) => {
                    assert_eq!(at, NodeAddress::from(Network::listen_address(*to)));
                    if loss == 0.0 {
                        assert_eq!(data.mode, ContactMode::Direct);
                    } else {
                        // Under loss the direct dial may lose the race to
                        // the signalled one (findNode races its strategies);
                        // either reaches the public address.
                        assert!(
                            matches!(data.mode, ContactMode::Direct | ContactMode::Signal),
                            "{from:?} finding {to:?}: {:?}",
                            data.mode
                        );
                    }
                }
                other => panic!("{from:?} finding {to:?}: {other:?}"),
            }
            assert!(connected(&sim, *from, *to), "{from:?} connected to {to:?}");
        }
    }
    (sim.trace_hash(), sim.level.stats)
}

#[test]
fn nine_nodes_join_through_one_seed_and_all_find_each_other_over_quic() {
    let (_, stats) = all_find_all(1, 9, 0.0);
    assert_eq!(stats.lost + stats.filtered + stats.unreachable, 0);
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    // With loss, so that the network's draws are part of the run.
    let a = all_find_all(2, 4, 0.05);
    let b = all_find_all(2, 4, 0.05);
    let c = all_find_all(3, 4, 0.05);
    assert_eq!(a, b, "seed 2 twice");
    assert_ne!(a.0, c.0, "seeds 2 and 3");
}

#[test]
fn lookups_complete_when_ten_percent_of_datagrams_are_lost() {
    let (_, stats) = all_find_all(4, 6, 0.1);
    // QUIC resent what was lost: the handshakes and requests all went through.
    assert!(stats.lost * 20 > stats.sent, "about 10% lost: {stats:?}");
}

#[test]
fn a_node_behind_a_port_restricted_nat_is_reached_by_signal_and_hole_punch() {
    let mut sim = network(8, 0.0);
    let nats = [NatType::None, NatType::PortRestricted, NatType::None];
    let hosts = add_nodes(&mut sim, 8, &nats);
    let (seed, target, finder) = (hosts[0], hosts[1], hosts[2]);
    join(&mut sim, target, &[seed]);
    assert!(
        connected(&sim, seed, target),
        "the seed can signal the target"
    );

    // The finder's join looks up its own NodeId: the seed names the target
    // (at its NAT's address) and says it is connected to it. The finder
    // asks the seed to signal the target before it sends the target
    // anything; both sides punch, and the first QUIC handshake gets
    // through, well before a direct dial would have timed out.
    let start = sim.elapsed();
    join(&mut sim, finder, &[seed]);
    assert!(sim.elapsed() - start < quiet().connection_connect_timeout);
    assert!(connected(&sim, finder, target));
    assert!(connected(&sim, target, finder));

    // A lookup reports the connection and how it was made.
    let id = sim.level.node_id(target);
    let result = find(&mut sim, finder, id);
    let Ok(OpValue::Found(Some((at, data)))) = result else {
        panic!("the finder does not reach the target: {result:?}");
    };
    assert_eq!(data.mode, ContactMode::Signal);
    assert_eq!(
        Some(target),
        at.socket_addr().and_then(|a| sim.net.host_of(a))
    );
    assert_ne!(
        at.socket_addr(),
        Some(Network::listen_address(target)),
        "a NAT port"
    );
}

#[test]
fn nat_traversal_over_quic_follows_the_nat_types() {
    // The function `simulate --nat-matrix` reports. The finder's join
    // already looks up its own NodeId, which is how it first reaches the
    // target; the lookup then reports that connection.
    for outcome in nat_report::nat_matrix(6) {
        let (finder, target) = (outcome.finder, outcome.target);
        assert_eq!(
            outcome.mode,
            NatType::reach(finder, target),
            "{finder:?} finds {target:?}"
        );
        // Reached at the target's public (NAT) address (where the relay
        // sees it, if relayed), on a live connection both sides have.
        assert!(outcome.at_target, "{finder:?} -> {target:?}: {outcome:?}");
        assert!(
            outcome.connected_both_ways,
            "{finder:?} -> {target:?}: {outcome:?}"
        );
        assert!(
            outcome.connect_time.is_some_and(|t| t < LIMIT),
            "{outcome:?}"
        );
    }
}

#[test]
fn a_node_offline_is_not_found_until_it_is_back_and_one_gone_is_dropped() {
    let mut sim = network(7, 0.0);
    let hosts = add_nodes(&mut sim, 7, &[NatType::None; 4]);
    for h in &hosts[1..] {
        join(&mut sim, *h, &[hosts[0]]);
    }
    let (finder, target) = (hosts[1], hosts[3]);
    let id = sim.level.node_id(target);

    sim.set_online(target, false);
    idle_out(&mut sim);
    assert_eq!(find(&mut sim, finder, id), Ok(OpValue::Found(None)));
    sim.set_online(target, true);
    assert!(matches!(
        find(&mut sim, finder, id),
        Ok(OpValue::Found(Some(_)))
    ));

    // The target leaves without a word: the finder's QUIC connection idles
    // out (30 s), well before the manager's own TTL (60 s) would close it.
    assert!(connected(&sim, finder, target));
    sim.kill(target);
    sim.advance(Duration::from_secs(40));
    assert!(!connected(&sim, finder, target));
    assert!(!sim.level.is_alive(target));
}

/// A target behind a port-restricted NAT joins through a public seed, its
/// connection check running every `check` (zero: off); after `idle`, a
/// public finder joins through the seed and looks the target up. Returns
/// whether the seed was still connected to the target, and whether the
/// finder reached it.
fn reached_after_idle(check: Duration, idle: Duration) -> (bool, bool) {
    let mut sim = network(9, 0.0);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let seed = sim.add_node(quiet(), rng.random(), NatType::None);
    let mut config = quiet();
    config.retry_connections_delay = check;
    let target = sim.add_node(config, rng.random(), NatType::PortRestricted);
    let finder = sim.add_node(quiet(), rng.random(), NatType::None);
    join(&mut sim, target, &[seed]);
    sim.advance(idle);
    let still = connected(&sim, seed, target);
    join(&mut sim, finder, &[seed]);
    let id = sim.level.node_id(target);
    let reached = match find(&mut sim, finder, id) {
        Ok(OpValue::Found(Some(_))) => true,
        Ok(OpValue::Found(None)) => false,
        other => panic!("{other:?}"),
    };
    (still, reached)
}

/// A node behind a NAT can only be reached through a node connected to
/// it, and idle connections close after 60 s. The periodic connection
/// check (every 45 s by default: a lookup of the node's own NodeId) uses
/// its connections to its closest nodes, so they stay up and it stays
/// reachable however long it is idle. Without the check it is not.
#[test]
fn a_node_behind_a_nat_stays_reachable_while_its_connection_check_runs() {
    let idle = Duration::from_secs(20 * 60);
    let default_check = Config::default().retry_connections_delay;
    assert_eq!(reached_after_idle(default_check, idle), (true, true));
    assert_eq!(reached_after_idle(Duration::ZERO, idle), (false, false));
}

/// Two nodes, each behind a port-restricted NAT, joined through a public
/// seed: the finder's join looks the target up, the seed signals it, both
/// punch, and their QUIC connection is up. Returns the finder and target.
fn punched_pair(sim: &mut DatagramSim, seed: u64) -> (HostId, HostId) {
    let nats = [
        NatType::None,
        NatType::PortRestricted,
        NatType::PortRestricted,
    ];
    let hosts = add_nodes(sim, seed, &nats);
    let (public, target, finder) = (hosts[0], hosts[1], hosts[2]);
    join(sim, target, &[public]);
    join(sim, finder, &[public]);
    assert!(connected(sim, finder, target), "the punch got through");
    assert!(connected(sim, target, finder));
    (finder, target)
}

/// The connection of `host` to `peer`.
fn conn_to(sim: &DatagramSim, host: HostId, peer: HostId) -> ConnId {
    let peer = sim.level.node_id(peer);
    sim.level
        .manager(host)
        .and_then(|m| m.connections().into_iter().find(|(_, p, _)| *p == peer))
        .map(|(conn, _, _)| conn)
        .expect("connected")
}

/// FNV-1a of what went through a stream.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The protocol of [`exchange_streams`]: the opener sends its bytes and
/// finishes; the receiver answers with the checksum of what it read.
fn sum_protocol() -> Protocol {
    Protocol::try_from("sim/sum/1").expect("a protocol name")
}

/// The opener's side of one stream of [`exchange_streams`].
struct Sender {
    host: HostId,
    stream: StreamHandle,
    data: Vec<u8>,
    sent: usize,
    finished: bool,
    /// Writes refused by flow control.
    blocked: u32,
    reply: Vec<u8>,
    reply_ended: bool,
    writable: bool,
    readable: bool,
}

/// The receiver's side.
struct Receiver {
    host: HostId,
    stream: StreamHandle,
    received: Vec<u8>,
    ended: bool,
    answered: bool,
    readable: bool,
}

/// Reads what `stream` has into `into` until it blocks; true at its end.
fn read_some(
    sim: &mut DatagramSim,
    host: HostId,
    stream: StreamHandle,
    into: &mut Vec<u8>,
) -> bool {
    sim.with_node(host, |node, now| {
        loop {
            match node.read(now, stream, 1 << 16) {
                Ok(Some(bytes)) => into.extend_from_slice(&bytes),
                Ok(None) => return true,
                Err(StreamError::Blocked) => return false,
                Err(e) => panic!("{host:?} reading {stream:?}: {e}"),
            }
        }
    })
}

/// `a` and `b` each open a stream to the other at once and send `len`
/// seeded bytes through it, acting on their application events only
/// (`Writable` to write on, `Readable` to read on); each receiver answers
/// with the checksum of what it read. Returns the pairs of (checksum sent,
/// checksum the receiver read, checksum the receiver answered).
fn exchange_streams(
    sim: &mut DatagramSim,
    a: HostId,
    b: HostId,
    len: usize,
) -> Vec<(u64, u64, u64)> {
    let protocol = sum_protocol();
    for host in [a, b] {
        sim.with_node(host, |node, _| {
            node.register_protocol(protocol.clone(), ProtocolOptions::default())
        })
        .expect("registered");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(len as u64);
    let mut seen = [0usize; 2];
    let mut senders: Vec<Sender> = [(a, b), (b, a)]
        .into_iter()
        .map(|(from, to)| {
            let conn = conn_to(sim, from, to);
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let stream = sim
                .with_node(from, |node, now| {
                    node.open_stream(now, conn, &protocol, StreamDir::Bi)
                })
                .expect("a stream");
            Sender {
                host: from,
                stream,
                data,
                sent: 0,
                finished: false,
                blocked: 0,
                reply: Vec::new(),
                reply_ended: false,
                writable: true,
                readable: false,
            }
        })
        .collect();
    let mut receivers: Vec<Receiver> = Vec::new();
    let end = sim.elapsed() + LIMIT;
    loop {
        for s in &mut senders {
            if s.writable && !s.finished {
                s.writable = false;
                let (host, stream) = (s.host, s.stream);
                let (sent, finished) = sim.with_node(host, |node, now| {
                    let mut sent = s.sent;
                    while sent < s.data.len() {
                        match node.write(now, stream, &s.data[sent..]) {
                            Ok(k) => sent += k,
                            Err(StreamError::Blocked) => return (sent, false),
                            Err(e) => panic!("{host:?} writing: {e}"),
                        }
                    }
                    node.finish(now, stream).expect("finished");
                    (sent, true)
                });
                s.sent = sent;
                s.finished = finished;
                s.blocked += u32::from(!finished);
            }
            if s.readable && !s.reply_ended {
                s.readable = false;
                let mut reply = std::mem::take(&mut s.reply);
                s.reply_ended = read_some(sim, s.host, s.stream, &mut reply);
                s.reply = reply;
            }
        }
        for r in &mut receivers {
            if r.readable && !r.ended {
                r.readable = false;
                let mut received = std::mem::take(&mut r.received);
                r.ended = read_some(sim, r.host, r.stream, &mut received);
                r.received = received;
            }
            if r.ended && !r.answered {
                let answer = checksum(&r.received).to_be_bytes();
                let stream = r.stream;
                // Eight bytes on a stream that carried nothing our way fit
                // its window at once.
                sim.with_node(r.host, |node, now| {
                    assert_eq!(node.write(now, stream, &answer), Ok(answer.len()));
                    node.finish(now, stream).expect("finished");
                });
                r.answered = true;
            }
        }
        let done = senders.iter().all(|s| s.reply_ended)
            && receivers.len() == 2
            && receivers.iter().all(|r| r.answered);
        if done {
            break;
        }
        assert!(
            sim.next_event().is_some_and(|at| at <= end) && sim.step(),
            "the exchange did not end: {:?}",
            senders
                .iter()
                .map(|s| (s.sent, s.finished, s.reply.len()))
                .collect::<Vec<_>>()
        );
        for (i, host) in [a, b].into_iter().enumerate() {
            let events = sim.level.app_events(host)[seen[i]..].to_vec();
            seen[i] += events.len();
            for event in events {
                match event {
                    AppEvent::Incoming {
                        stream,
                        protocol: p,
                        ..
                    } => {
                        assert_eq!(p, protocol);
                        receivers.push(Receiver {
                            host,
                            stream,
                            received: Vec::new(),
                            ended: false,
                            answered: false,
                            readable: true,
                        });
                    }
                    AppEvent::Writable(h) => {
                        for s in senders
                            .iter_mut()
                            .filter(|s| s.host == host && s.stream == h)
                        {
                            s.writable = true;
                        }
                    }
                    AppEvent::Readable(h) => {
                        for s in senders
                            .iter_mut()
                            .filter(|s| s.host == host && s.stream == h)
                        {
                            s.readable = true;
                        }
                        for r in receivers
                            .iter_mut()
                            .filter(|r| r.host == host && r.stream == h)
                        {
                            r.readable = true;
                        }
                    }
                    // Connections to the seed idle out meanwhile.
                    AppEvent::ConnectionLost { conn } => assert!(
                        senders
                            .iter()
                            .all(|s| s.host != host || s.stream.conn() != conn),
                        "{host:?} lost the streams' connection {conn:?}"
                    ),
                    _ => {}
                }
            }
        }
    }
    senders
        .iter()
        .map(|s| {
            let r = receivers
                .iter()
                .find(|r| r.host != s.host)
                .expect("a receiver");
            let answered = u64::from_be_bytes(s.reply.as_slice().try_into().expect("8 bytes"));
            assert_eq!(r.received.len(), s.data.len());
            // More than a stream's window: the writer waited for Writable.
            assert!(s.blocked > 0, "{:?} never blocked", s.host);
            (checksum(&s.data), checksum(&r.received), answered)
        })
        .collect()
}

/// Each node's stream tables, once the last frames have landed.
fn tables_after(sim: &mut DatagramSim, hosts: [HostId; 2]) -> Vec<StreamTables> {
    sim.advance(Duration::from_secs(2));
    hosts
        .iter()
        .map(|h| sim.level.node(*h).expect("alive").stream_tables())
        .collect()
}

/// Two nodes behind NATs, once punched through, run application streams
/// both ways over their connection: what each read is what the other sent.
#[test]
fn punched_nodes_exchange_application_streams_both_ways() {
    let mut sim = network(10, 0.0);
    let (finder, target) = punched_pair(&mut sim, 10);
    for (sent, read, answered) in exchange_streams(&mut sim, finder, target, 4 << 20) {
        assert_eq!((read, answered), (sent, sent));
    }
    assert_eq!(
        tables_after(&mut sim, [finder, target]),
        vec![StreamTables::default(); 2]
    );
    assert!(connected(&sim, finder, target));
}

/// The same over a link that loses 5% of the datagrams once the punch is
/// through: QUIC resends, and every stream completes intact.
#[test]
fn punched_nodes_exchange_application_streams_over_a_lossy_link() {
    let mut sim = network(11, 0.0);
    let (finder, target) = punched_pair(&mut sim, 11);
    sim.net.set_loss(0.05);
    let lost = sim.level.stats.lost;
    for (sent, read, answered) in exchange_streams(&mut sim, finder, target, 4 << 20) {
        assert_eq!((read, answered), (sent, sent));
    }
    let stats = sim.level.stats;
    eprintln!(
        "DEBUG {stats:?} lost {} at {:?}",
        stats.lost - lost,
        sim.elapsed()
    );
    assert!(stats.lost - lost > 50, "datagrams were lost: {stats:?}");
    assert_eq!(
        tables_after(&mut sim, [finder, target]),
        vec![StreamTables::default(); 2]
    );
    assert!(connected(&sim, finder, target));
}
