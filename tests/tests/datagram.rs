//! Full nodes over real QUIC on the virtual network (the datagram level):
//! every handshake, request and hole punch below is quinn-proto and rustls
//! exchanging datagrams. Nodes join through one seed and find each other;
//! the same seed gives the same run; QUIC recovers lost packets; NATs
//! filter, and signalling plus hole punching gets through the ones the
//! core can traverse; a node offline or gone is noticed by QUIC itself.

use std::time::Duration;

use keynode_core::{Config, ContactMode, FindOptions, NodeAddress, NodeId, OpError, OpValue};
use keynode_tests::{
    DatagramLevel, DatagramSim, DatagramStats, HostId, Latency, NatType, NetConfig, Network, Sim,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Virtual time any one operation may take.
const LIMIT: Duration = Duration::from_secs(600);

/// The defaults without background work (no bucket refresh, no connection
/// check): the tests decide everything that happens.
fn quiet() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

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
                    assert_eq!(data.mode, ContactMode::Direct);
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

/// How a finder behind `finder_nat` reaches a target behind `target_nat`,
/// both joined through one public seed (the target first): `None` if it
/// cannot. The finder's join already looks up its own NodeId, which is how
/// it first reaches the target; the lookup then reports that connection.
fn reach(finder_nat: NatType, target_nat: NatType) -> Option<ContactMode> {
    let mut sim = network(6, 0.0);
    let hosts = add_nodes(&mut sim, 6, &[NatType::None, target_nat, finder_nat]);
    let (seed, target, finder) = (hosts[0], hosts[1], hosts[2]);
    join(&mut sim, target, &[seed]);
    join(&mut sim, finder, &[seed]);
    let id = sim.level.node_id(target);
    match find(&mut sim, finder, id) {
        Ok(OpValue::Found(Some((at, data)))) => {
            // Reached at the target's public (NAT) address, on a live connection.
            assert_eq!(
                Some(target),
                at.socket_addr().and_then(|a| sim.net.host_of(a))
            );
            assert!(connected(&sim, finder, target));
            assert!(connected(&sim, target, finder));
            Some(data.mode)
        }
        Ok(OpValue::Found(None)) => None,
        other => panic!("{finder_nat:?} -> {target_nat:?}: {other:?}"),
    }
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
    for finder in NatType::ALL {
        for target in NatType::ALL {
            let expected = NatType::reach(finder, target);
            assert_eq!(
                reach(finder, target),
                expected,
                "{finder:?} finds {target:?}"
            );
        }
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
