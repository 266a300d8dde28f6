//! The relay's limits, on full nodes over QUIC (the datagram level): one
//! public node relays (`RelayServe::Always`, so that it relays from the
//! start) for nodes behind symmetric NATs, which reach each other only
//! through it. Each test sets one limit of `RelayConfig` low and checks
//! what a user would: the relay's counters (`Node::relay_stats`), how the
//! lookups end, and that the peers the limit does not concern are served
//! as before. Every run is bounded in virtual time.

use std::time::Duration;

use keynode_core::net::{Node, RelayConfig, RelayServe, RelayStats, StreamDir, is_relayed};
use keynode_core::net::{Protocol, ProtocolOptions};
use keynode_core::{ContactMode, FindOptions, Observation, OpError, OpValue};
use keynode_tests::{
    DatagramLevel, DatagramSim, HostId, Latency, NatType, NetConfig, Network, Sim,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Virtual time any one operation may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The defaults without background work (no bucket refresh, no
/// connection check): the library's, shared by every simulator test.
use keynode_tests::nat_report::quiet_config as quiet;

/// A network without loss, log-normal latencies.
fn network(seed: u64) -> DatagramSim {
    eprintln!("seed {seed}");
    let config = NetConfig {
        latency: Latency::default(),
        loss: 0.0,
        ..NetConfig::default()
    };
    Sim::new(DatagramLevel::new(seed), Network::new(config, seed), seed)
}

/// The hosts of a test: the relay first, then the nodes behind NATs.
struct Hosts {
    sim: DatagramSim,
    relay: HostId,
    rng: ChaCha8Rng,
}

impl Hosts {
    /// A public relay whose limits `limits` sets; every other node added
    /// later never relays.
    fn new(seed: u64, limits: impl FnOnce(&mut RelayConfig)) -> Self {
        let mut sim = network(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_6c61);
        sim.level.quic.relay.serve = RelayServe::Always;
        limits(&mut sim.level.quic.relay);
        let relay = sim.add_node(quiet(), rng.random(), NatType::None);
        sim.level.quic.relay = RelayConfig::default();
        sim.level.quic.relay.serve = RelayServe::Never;
        Self { sim, relay, rng }
    }

    /// A node behind `nat`, joined through the relay.
    fn add(&mut self, nat: NatType) -> HostId {
        let host = self.sim.add_node(quiet(), self.rng.random(), nat);
        let op = self.sim.join(host, &[self.relay]);
        let result = self.sim.run_until_done(host, op, LIMIT);
        assert_eq!(result, Some(Ok(OpValue::Unit)), "{host:?} joins");
        host
    }

    /// The relay's counters.
    fn stats(&self) -> RelayStats {
        self.sim
            .level
            .node(self.relay)
            .expect("alive")
            .relay_stats()
    }

    /// A lookup of `target` by `finder`, run to its end.
    fn find(&mut self, finder: HostId, target: HostId) -> Result<OpValue, OpError> {
        let id = self.sim.level.node_id(target);
        let op = self.sim.find(finder, id, FindOptions::default());
        self.sim
            .run_until_done(finder, op, LIMIT)
            .unwrap_or_else(|| panic!("the lookup of {target:?} by {finder:?} did not end"))
    }

    /// `finder` finds `target` through the relay: found at the target's
    /// NAT address, on a relayed connection.
    fn finds_relayed(&mut self, finder: HostId, target: HostId) {
        match self.find(finder, target) {
            Ok(OpValue::Found(Some((at, data)))) => {
                assert_eq!(data.mode, ContactMode::Relay, "{finder:?} -> {target:?}");
                // Where the relay sees the target if the finder dialled
                // the connection; a connection the target dialled is
                // shown at its mapped address (the finder never learnt
                // the other).
                let at = at.socket_addr().expect("an IP address");
                assert!(
                    self.sim.net.host_of(at) == Some(target) || is_relayed(&at),
                    "{finder:?} finds {target:?} at {at}"
                );
            }
            other => panic!("{finder:?} finding {target:?}: {other:?}"),
        }
        assert!(self.connected(finder, target));
    }

    /// Whether `host` has a connection up to `peer`.
    fn connected(&self, host: HostId, peer: HostId) -> bool {
        let peer = self.sim.level.node_id(peer);
        self.sim
            .level
            .manager(host)
            .is_some_and(|m| m.connections().iter().any(|(_, p, _)| *p == peer))
    }
}

fn flood_protocol() -> Protocol {
    Protocol::try_from("sim/flood/1").expect("a protocol name")
}

/// `from` opens a stream to `to` (which serves the protocol and never
/// reads) and writes all it may: far more than the pair's rate carries.
fn flood(sim: &mut DatagramSim, from: HostId, to: HostId) -> usize {
    let protocol = flood_protocol();
    for host in [from, to] {
        sim.with_node(host, |node, _| {
            node.register_protocol(protocol.clone(), ProtocolOptions::default())
        })
        .expect("registered");
    }
    let peer = sim.level.node_id(to);
    let conn = sim
        .level
        .manager(from)
        .and_then(|m| m.connections().into_iter().find(|(_, p, _)| *p == peer))
        .map(|(conn, _, _)| conn)
        .expect("connected");
    let data = vec![0x5a; 1 << 20];
    sim.with_node(from, |node: &mut Node, now| {
        let stream = node
            .open_stream(now, conn, &protocol, StreamDir::Uni)
            .expect("a stream");
        let mut sent = 0;
        while sent < data.len() {
            match node.write(now, stream, &data[sent..]) {
                Ok(k) if k > 0 => sent += k,
                _ => break,
            }
        }
        sent
    })
}

/// A pair over its byte rate loses frames at the relay, and the relay
/// goes on serving everyone else meanwhile: two nodes that join during
/// the flood find each other through it.
#[test]
fn a_pair_over_its_rate_is_dropped_while_the_relay_serves_others() {
    let mut hosts = Hosts::new(21, |r| {
        r.pair_bytes_per_second = 4_000;
        r.pair_burst = 16_000;
    });
    let a = hosts.add(NatType::Symmetric);
    let b = hosts.add(NatType::Symmetric);
    hosts.finds_relayed(a, b);
    let before = hosts.stats();
    let written = flood(&mut hosts.sim, a, b);
    assert!(written > 100_000, "{written} bytes written");

    // During the flood: two more nodes join and find each other.
    let c = hosts.add(NatType::Symmetric);
    let d = hosts.add(NatType::Symmetric);
    let start = hosts.sim.elapsed();
    hosts.finds_relayed(c, d);
    assert!(
        hosts.sim.elapsed() - start < Duration::from_secs(30),
        "c's lookup of d took {:?} during the flood",
        hosts.sim.elapsed() - start
    );
    hosts.sim.advance(Duration::from_secs(5));
    let after = hosts.stats();
    eprintln!("before {before:?}\nafter {after:?}");
    assert!(
        after.dropped_over_rate > before.dropped_over_rate,
        "the flood went over the pair's rate: {after:?}"
    );
    assert!(after.frames_forwarded > before.frames_forwarded);
    // The flooding pair is still up: the relay dropped frames, not the pair.
    assert!(hosts.connected(a, b));
    assert!(hosts.connected(c, d));
}

/// With one pair per node, a node already in a pair is refused another
/// (`RelayPeerLimit`, counted in `refused_per_peer`), its lookup still
/// ends, and two nodes in no pair are relayed as before.
#[test]
fn a_node_over_its_pairs_is_refused_and_others_are_relayed() {
    let mut hosts = Hosts::new(22, |r| r.max_pairs_per_node = 1);
    let a = hosts.add(NatType::Symmetric);
    let b = hosts.add(NatType::Symmetric);
    hosts.finds_relayed(a, b);
    assert_eq!(hosts.stats().pairs, 1);
    let c = hosts.add(NatType::Symmetric);
    let refused = hosts.stats().refused_per_peer;
    // a is a side of one pair: c's pair with it is refused, and c's lookup
    // ends, not found, within the lookup's own bounds.
    let start = hosts.sim.elapsed();
    match hosts.find(c, a) {
        Ok(OpValue::Found(None)) => {}
        Ok(OpValue::Found(Some((at, data)))) => panic!("c reached a at {at} ({:?})", data.mode),
        other => panic!("c's lookup of a: {other:?}"),
    }
    let took = hosts.sim.elapsed() - start;
    let stats = hosts.stats();
    eprintln!("{stats:?} ({refused} refused before), c's lookup took {took:?}");
    assert!(took < Duration::from_secs(120), "{took:?}");
    assert!(stats.refused_per_peer > refused, "{stats:?}");
    assert!(!hosts.connected(c, a));
    // The pair that was there is kept (its connection idled out in the
    // meantime; a reaches b through it again), and two nodes in no pair
    // are relayed.
    assert_eq!(stats.pairs, 1, "{stats:?}");
    hosts.finds_relayed(a, b);
    let d = hosts.add(NatType::Symmetric);
    hosts.finds_relayed(c, d);
    assert_eq!(hosts.stats().pairs, 2);
}

/// With one pair in all, a second is refused (`RelayFull`, counted in
/// `refused_full`), its lookup ends, and the pair open carries on.
#[test]
fn a_relay_with_all_its_pairs_taken_refuses_more() {
    let mut hosts = Hosts::new(23, |r| r.max_pairs = 1);
    let a = hosts.add(NatType::Symmetric);
    let b = hosts.add(NatType::Symmetric);
    hosts.finds_relayed(a, b);
    let c = hosts.add(NatType::Symmetric);
    let d = hosts.add(NatType::Symmetric);
    let refused = hosts.stats().refused_full;
    match hosts.find(c, d) {
        Ok(OpValue::Found(None)) => {}
        Ok(OpValue::Found(Some((at, data)))) => panic!("c reached d at {at} ({:?})", data.mode),
        other => panic!("c's lookup of d: {other:?}"),
    }
    let stats = hosts.stats();
    eprintln!("{stats:?}");
    assert!(stats.refused_full > refused, "{stats:?}");
    assert_eq!(stats.pairs, 1);
    assert!(!hosts.connected(c, d));
    // The open pair still carries a's requests to b.
    let forwarded = stats.frames_forwarded;
    hosts.finds_relayed(a, b);
    let id = hosts.sim.level.node_id(b);
    let op = hosts
        .sim
        .call(
            a,
            keynode_core::UserCall::PingNode {
                node_id: id,
                options: FindOptions::default(),
            },
        )
        .expect("ping starts")
        .expect("ping is an operation");
    let pinged = hosts.sim.run_until_done(a, op, LIMIT);
    assert!(
        matches!(pinged, Some(Ok(OpValue::Found(Some(_))))),
        "{pinged:?}"
    );
    hosts.sim.advance(Duration::from_secs(15));
    assert!(hosts.stats().frames_forwarded > forwarded, "keep-alives");
}

/// The observations of `host` so far, drained.
fn observations(sim: &mut DatagramSim, host: HostId) -> Vec<Observation> {
    sim.with_node(host, |node, _| {
        std::iter::from_fn(|| node.poll_observation()).collect()
    })
}

/// With room for one reservation, the first node behind a NAT to ask gets
/// it (and says so: `Observation::RelayReserved`), the next is refused
/// (`RelayFull`, counted in `refused_full`) and holds none.
///
/// The limit per IP (`max_reservations_per_ip`) cannot be reached here:
/// every simulated host, and so every NAT, has an IP of its own. The total
/// (`max_reservations = 1`) stands in for it; the per-IP rule is the
/// relay's unit test `limits_refuse_with_their_reason`.
#[test]
fn a_relay_with_its_reservations_taken_refuses_more() {
    let mut hosts = Hosts::new(24, |r| r.max_reservations = 1);
    // A second public node, which does not relay: two observers, so that
    // the nodes behind NATs learn their class and ask for reservations.
    let other = hosts.add(NatType::None);
    let a = hosts.add(NatType::Symmetric);
    hosts.sim.advance(Duration::from_secs(5));
    let relay_id = hosts.sim.level.node_id(hosts.relay);
    let held = |hosts: &Hosts, h: HostId| {
        hosts
            .sim
            .level
            .manager(h)
            .expect("alive")
            .relay_reservations()
    };
    assert_eq!(
        held(&hosts, a),
        vec![relay_id],
        "a holds the one reservation"
    );
    let seen = observations(&mut hosts.sim, a);
    assert!(
        seen.iter().any(|o| matches!(
            o,
            Observation::RelayReserved { relay, .. } if *relay == relay_id
        )),
        "{seen:?}"
    );
    let b = hosts.add(NatType::Symmetric);
    hosts.sim.advance(Duration::from_secs(5));
    let stats = hosts.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.reservations, 1, "{stats:?}");
    assert!(stats.refused_full >= 1, "{stats:?}");
    assert_eq!(held(&hosts, b), Vec::new(), "b is refused");
    let other_stats = hosts.sim.level.node(other).expect("alive").relay_stats();
    assert!(other_stats.refused_not_relaying >= 1, "{other_stats:?}");
    // a still holds its reservation.
    assert_eq!(held(&hosts, a), vec![relay_id]);
}
