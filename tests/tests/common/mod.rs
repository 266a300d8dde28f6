//! What the scenario tests share: networks, joins, lookups, invariants.

#![allow(dead_code)]

use std::time::Duration;

use keynode_core::{Config, FindOptions, NodeId, OpError, OpValue};
use keynode_tests::{
    HostId, Latency, LookupOutcome, ManagerLevel, ManagerSim, NatType, NetConfig, Network,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Virtual time any one operation may take.
pub const LIMIT: Duration = Duration::from_secs(600);

/// The defaults without background work (no bucket refresh, no
/// connection check): the library's, shared by every simulator test.
#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use keynode_tests::nat_report::quiet_config as quiet;

/// A network with 10 ms on every link.
pub fn network(seed: u64) -> ManagerSim {
    network_with(
        seed,
        NetConfig {
            latency: Latency::Constant(Duration::from_millis(10)),
            ..NetConfig::default()
        },
    )
}

/// A network with these parameters.
pub fn network_with(seed: u64, config: NetConfig) -> ManagerSim {
    ManagerSim::new(ManagerLevel::new(seed), Network::new(config, seed), seed)
}

/// `n` random NodeIds from `seed`.
pub fn random_ids(seed: u64, n: usize) -> Vec<NodeId> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| NodeId::random(&mut rng)).collect()
}

/// Adds `n` public nodes with random ids and `config`.
pub fn add_nodes(sim: &mut ManagerSim, seed: u64, n: usize, config: &Config) -> Vec<HostId> {
    random_ids(seed, n)
        .into_iter()
        .map(|id| sim.add_node(config.clone(), id, NatType::None))
        .collect()
}

/// `host` joins from `seeds` and the join succeeds.
pub fn join(sim: &mut ManagerSim, host: HostId, seeds: &[HostId]) {
    join_within(sim, host, seeds, LIMIT);
}

/// `host` joins from `seeds` and the join succeeds within `limit`.
pub fn join_within(sim: &mut ManagerSim, host: HostId, seeds: &[HostId], limit: Duration) {
    let op = sim.join(host, seeds);
    let result = sim.run_until_done(host, op, limit);
    let state = sim.level.node(host).map(|n| {
        format!(
            "ops in flight {}, next timer {:?}, connections {:?}, {:?}",
            n.operations_in_flight(),
            n.poll_timeout().map(|(_, t)| t),
            n.connections(),
            n.stats()
        )
    });
    assert!(
        matches!(result, Some(Ok(OpValue::Unit))),
        "{host:?} joins from {seeds:?}: {result:?} at {:?}; {state:?}",
        sim.elapsed()
    );
}

/// `host` joins from `seeds` while every other host of `all` is offline,
/// so that it learns only the seeds; then everyone is back online.
pub fn join_isolated(sim: &mut ManagerSim, all: &[HostId], host: HostId, seeds: &[HostId]) {
    for h in all {
        if *h != host && !seeds.contains(h) {
            sim.set_online(*h, false);
        }
    }
    join(sim, host, seeds);
    for h in all {
        sim.set_online(*h, true);
    }
}

/// Lets every connection idle out (nothing else runs with [`quiet`]).
pub fn idle_out(sim: &mut ManagerSim) {
    sim.advance(Duration::from_secs(3 * 3600));
}

/// A measured lookup of `target` by `finder`, run to its end.
pub fn find(
    sim: &mut ManagerSim,
    finder: HostId,
    target: NodeId,
) -> (Result<OpValue, OpError>, LookupOutcome) {
    let op = sim.find(finder, target, FindOptions::default());
    let result = sim
        .run_until_done(finder, op, LIMIT)
        .unwrap_or_else(|| panic!("the lookup of {target} by {finder:?} did not end"));
    let outcome = sim.lookup_outcome(finder, op).expect("a measured lookup");
    (result, outcome)
}

/// Whether a lookup result is a connection to the target.
pub fn found(result: &Result<OpValue, OpError>) -> bool {
    matches!(result, Ok(OpValue::Found(Some(_))))
}

/// No node's bucket holds more than k contacts.
pub fn assert_buckets_within_k(sim: &ManagerSim) {
    for i in 0..sim.level.len() {
        let Some(node) = sim.level.node(HostId(i as u32)) else {
            continue;
        };
        let k = node.config().k;
        for (bucket, size) in node.graph().bucket_sizes() {
            assert!(size <= k, "host {i} bucket {bucket} holds {size} > k = {k}");
        }
    }
}
