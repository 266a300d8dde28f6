//! The original's scenarios (REFERENCE.md, "Tests the original has") on the
//! simulator, plus NAT traversal, key renewal and churn. Every node joins
//! through `sync_node_graph`; topologies are made by who is online while a
//! node joins, never by filling routing tables.

mod common;

use std::time::Duration;

use common::*;
use keynode_core::{BucketIndex, ContactMode, NodeId, OpError, OpValue};
use keynode_tests::{HostId, NatType, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Builds a topology of 5 nodes: each entry joins from its seeds while the
/// others are offline, so each node knows exactly its neighbours.
fn topology(seed: u64, joins: &[(usize, &[usize])]) -> (keynode_tests::ManagerSim, Vec<HostId>) {
    let mut sim = network(seed);
    let hosts = add_nodes(&mut sim, seed, 5, &quiet());
    for (node, seeds) in joins {
        let seeds: Vec<HostId> = seeds.iter().map(|s| hosts[*s]).collect();
        join_isolated(&mut sim, &hosts, hosts[*node], &seeds);
    }
    idle_out(&mut sim);
    (sim, hosts)
}

const CHAIN: &[(usize, &[usize])] = &[(3, &[4]), (2, &[3]), (1, &[2]), (0, &[1])];
const TREE: &[(usize, &[usize])] = &[(1, &[3]), (2, &[4]), (0, &[1, 2])];
const CYCLE: &[(usize, &[usize])] = &[(1, &[0]), (2, &[1]), (3, &[2]), (4, &[3, 0])];

#[test]
fn chain_of_five_finds_every_node_one_hop_per_link() {
    for target in 1..5 {
        let (mut sim, hosts) = topology(1, CHAIN);
        // Node 0 knows only node 1.
        let graph = sim.level.node(hosts[0]).unwrap().graph();
        assert_eq!(graph.len(), 1);
        let id = sim.level.node_id(hosts[target]);
        let (result, outcome) = find(&mut sim, hosts[0], id);
        assert!(found(&result), "0 finds {target}: {result:?}");
        assert_eq!(outcome.hops, target as u32 - 1, "hops to node {target}");
        assert!(sim.level.node(hosts[0]).unwrap().graph().contains(&id));
    }
}

#[test]
fn tree_finds_every_node() {
    let expected_hops = [0, 0, 0, 1, 1];
    for target in 1..5 {
        let (mut sim, hosts) = topology(2, TREE);
        let id = sim.level.node_id(hosts[target]);
        let (result, outcome) = find(&mut sim, hosts[0], id);
        assert!(found(&result), "root finds {target}: {result:?}");
        assert_eq!(outcome.hops, expected_hops[target], "hops to node {target}");
    }
}

#[test]
fn cycle_finds_every_node_from_every_node() {
    for from in 0..5usize {
        for target in (0..5).filter(|t| *t != from) {
            let (mut sim, hosts) = topology(3, CYCLE);
            let id = sim.level.node_id(hosts[target]);
            let (result, outcome) = find(&mut sim, hosts[from], id);
            assert!(found(&result), "cycle: {from} finds {target}: {result:?}");
            let ring = (from + 5 - target) % 5;
            let ring = ring.min(5 - ring) as u32;
            assert_eq!(
                outcome.hops,
                ring - 1,
                "cycle: hops from {from} to {target}"
            );
        }
    }
}

#[test]
fn offline_middle_or_target_is_not_found_until_it_is_back() {
    let (mut sim, hosts) = topology(4, CHAIN);
    let target = sim.level.node_id(hosts[4]);
    sim.set_online(hosts[2], false);
    let (result, _) = find(&mut sim, hosts[0], target);
    assert_eq!(
        result,
        Ok(OpValue::Found(None)),
        "the chain is cut at node 2"
    );
    sim.set_online(hosts[2], true);
    let (result, _) = find(&mut sim, hosts[0], target);
    assert!(found(&result), "node 2 is back: {result:?}");

    let (mut sim, hosts) = topology(4, CHAIN);
    sim.set_online(hosts[4], false);
    let (result, _) = find(&mut sim, hosts[0], target);
    assert_eq!(result, Ok(OpValue::Found(None)), "the target is offline");
}

#[test]
fn target_behind_a_partition_is_unreachable() {
    let mut sim = network(5);
    let hosts = add_nodes(&mut sim, 5, 6, &quiet());
    for h in &hosts[1..] {
        join(&mut sim, *h, &[hosts[0]]);
    }
    idle_out(&mut sim);
    let target = sim.level.node_id(hosts[5]);
    sim.net.partition(&[&[hosts[5]]]);
    let (result, _) = find(&mut sim, hosts[1], target);
    assert_eq!(result, Ok(OpValue::Found(None)));
    sim.net.heal();
    let (result, _) = find(&mut sim, hosts[1], target);
    assert!(found(&result), "healed: {result:?}");
}

/// How a finder behind `finder_nat` reaches a target behind `target_nat`,
/// both joined through one public seed: `None` if it cannot.
fn reach(finder_nat: NatType, target_nat: NatType) -> Option<ContactMode> {
    let mut sim = network(6);
    let ids = random_ids(6, 3);
    let seed = sim.add_node(quiet(), ids[0], NatType::None);
    let target = sim.add_node(quiet(), ids[1], target_nat);
    let finder = sim.add_node(quiet(), ids[2], finder_nat);
    join(&mut sim, target, &[seed]);
    join(&mut sim, finder, &[seed]);
    let (result, _) = find(&mut sim, finder, ids[1]);
    match result {
        Ok(OpValue::Found(Some((_, data)))) => Some(data.mode),
        Ok(OpValue::Found(None)) => None,
        other => panic!("{finder_nat:?} -> {target_nat:?}: {other:?}"),
    }
}

/// The manager level has no relay (relaying is the net layer's: a manager
/// alone refuses every relay request), so where the model relays it
/// finds nothing; `datagram.rs` checks the relayed pairs over QUIC.
#[test]
fn nat_traversal_follows_the_nat_types() {
    for finder in NatType::ALL {
        for target in NatType::ALL {
            let expected = NatType::reach(finder, target).filter(|m| *m != ContactMode::Relay);
            assert_eq!(
                reach(finder, target),
                expected,
                "{finder:?} finds {target:?}"
            );
        }
    }
}

/// k = 2, and a network whose first node's farthest bucket will fill.
fn small_buckets() -> keynode_core::Config {
    let mut config = quiet();
    config.k = 2;
    config
}

/// Node `a` at all zeroes and nodes in its farthest bucket (top bit set).
fn bucket_network(n: usize) -> (keynode_tests::ManagerSim, HostId, Vec<HostId>) {
    bucket_network_with(n, &small_buckets())
}

fn bucket_network_with(
    n: usize,
    config: &keynode_core::Config,
) -> (keynode_tests::ManagerSim, HostId, Vec<HostId>) {
    let mut sim = network(7);
    let a = sim.add_node(config.clone(), NodeId::from_bytes([0; 32]), NatType::None);
    let others = (1..=n)
        .map(|i| {
            let mut id = [0u8; 32];
            id[0] = 0x80 | (i as u8);
            id[31] = i as u8;
            sim.add_node(config.clone(), NodeId::from_bytes(id), NatType::None)
        })
        .collect();
    (sim, a, others)
}

fn contains(sim: &keynode_tests::ManagerSim, at: HostId, who: HostId) -> bool {
    let id = sim.level.node_id(who);
    sim.level.node(at).unwrap().graph().contains(&id)
}

#[test]
fn full_bucket_with_the_oldest_alive_keeps_it() {
    let (mut sim, a, n) = bucket_network(3);
    join(&mut sim, n[0], &[a]);
    join(&mut sim, n[1], &[a]);
    idle_out(&mut sim);
    join(&mut sim, n[2], &[a]);
    assert!(contains(&sim, a, n[0]) && contains(&sim, a, n[1]));
    assert!(!contains(&sim, a, n[2]), "no room: the newcomer is dropped");
    assert_buckets_within_k(&sim);
}

#[test]
fn full_bucket_with_the_oldest_dead_replaces_it() {
    let (mut sim, a, n) = bucket_network(3);
    join(&mut sim, n[0], &[a]);
    join(&mut sim, n[1], &[a]);
    sim.kill(n[0]);
    idle_out(&mut sim);
    join(&mut sim, n[2], &[a]);
    assert!(!contains(&sim, a, n[0]), "the dead oldest contact is gone");
    assert!(contains(&sim, a, n[1]) && contains(&sim, a, n[2]));
    assert_buckets_within_k(&sim);
}

/// How many connections node `a` attempts to its bucket's contacts while a
/// newcomer joins its full bucket, ten minutes after the contacts last
/// connected (their connections have idled out). The newcomer connected
/// in, so `a` first dials it back to prove its address (one connection,
/// see "Who becomes a contact" in the manager's docs); that one is not a
/// ping of the bucket and is left out.
fn pings_for_a_newcomer(gc_contact_fresh: Duration) -> u64 {
    let mut config = small_buckets();
    config.gc_contact_fresh = gc_contact_fresh;
    let (mut sim, a, n) = bucket_network_with(3, &config);
    join(&mut sim, n[0], &[a]);
    join(&mut sim, n[1], &[a]);
    sim.advance(Duration::from_secs(600));
    let before = sim.level.node(a).unwrap().stats().connects;
    join(&mut sim, n[2], &[a]);
    assert!(!contains(&sim, a, n[2]), "no room: the newcomer is dropped");
    assert!(contains(&sim, a, n[0]) && contains(&sim, a, n[1]));
    let dial_back = 1;
    sim.level.node(a).unwrap().stats().connects - before - dial_back
}

#[test]
fn recently_connected_contacts_are_not_pinged_with_gc_contact_fresh() {
    assert_eq!(
        pings_for_a_newcomer(Duration::ZERO),
        2,
        "the original pings both"
    );
    assert_eq!(pings_for_a_newcomer(Duration::from_secs(3600)), 0);
    assert_eq!(
        pings_for_a_newcomer(Duration::from_secs(300)),
        2,
        "10 min is stale"
    );
}

#[test]
fn garbage_collection_admits_the_newest_pending_nodes() {
    let (mut sim, a, n) = bucket_network(5);
    join(&mut sim, n[0], &[a]);
    join(&mut sim, n[1], &[a]);
    sim.kill(n[0]);
    sim.kill(n[1]);
    idle_out(&mut sim);
    // Three newcomers, a second apart, all wait on the pending list: the
    // first starts a collection that takes a connect timeout (its pings of
    // the dead time out), the next two join it.
    let ops: Vec<_> = n[2..]
        .iter()
        .map(|h| {
            let op = sim.join(*h, &[a]);
            sim.advance(Duration::from_secs(1));
            (*h, op)
        })
        .collect();
    let bucket = BucketIndex::FARTHEST;
    assert_eq!(sim.level.node(a).unwrap().graph().pending(bucket).len(), 3);
    for (h, op) in ops {
        assert!(matches!(sim.run_until_done(h, op, LIMIT), Some(Ok(_))));
    }
    assert!(!contains(&sim, a, n[0]) && !contains(&sim, a, n[1]));
    assert!(
        !contains(&sim, a, n[2]),
        "the oldest pending node is dropped"
    );
    assert!(contains(&sim, a, n[3]) && contains(&sim, a, n[4]));
    assert!(
        sim.level
            .node(a)
            .unwrap()
            .graph()
            .pending(bucket)
            .is_empty()
    );
    assert_buckets_within_k(&sim);
}

#[test]
fn sync_with_some_seeds_down_joins_and_with_all_down_fails() {
    let mut sim = network(8);
    let hosts = add_nodes(&mut sim, 8, 8, &quiet());
    for h in &hosts[1..4] {
        join(&mut sim, *h, &[hosts[0]]);
    }
    let seeds = [hosts[0], hosts[1], hosts[2]];
    sim.kill(hosts[0]);
    sim.kill(hosts[1]);
    join(&mut sim, hosts[4], &seeds);
    let graph = sim.level.node(hosts[4]).unwrap().graph();
    assert!(graph.contains(&sim.level.node_id(hosts[2])));
    assert!(
        graph.contains(&sim.level.node_id(hosts[3])),
        "found through the live seed"
    );

    sim.kill(hosts[2]);
    let op = sim.join(hosts[5], &seeds);
    match sim.run_until_done(hosts[5], op, LIMIT) {
        Some(Err(OpError::SeedsUnreachable(failures))) => {
            let mut failed: Vec<NodeId> = failures.iter().map(|f| f.node_id).collect();
            failed.sort();
            let mut expected: Vec<NodeId> = seeds.iter().map(|s| sim.level.node_id(*s)).collect();
            expected.sort();
            assert_eq!(failed, expected, "every seed's failure is listed");
        }
        other => panic!("a join with every seed down: {other:?}"),
    }
}

#[test]
fn key_renewal_rebuilds_the_graph_and_the_node_is_found_by_its_new_id() {
    let mut sim = network(9);
    let hosts = add_nodes(&mut sim, 9, 20, &quiet());
    for h in &hosts[1..] {
        join(&mut sim, *h, &[hosts[0]]);
    }
    idle_out(&mut sim);
    let x = hosts[7];
    let old = sim.level.node_id(x);
    let new = random_ids(99, 1)[0];
    let known = sim.level.node(x).unwrap().graph().len();
    sim.renew_key(x, new);
    let graph = sim.level.node(x).unwrap().graph();
    assert_eq!(graph.own_node_id(), new);
    assert_eq!(graph.len(), known, "contacts move to their new buckets");
    // It announces its new id by joining again.
    join(&mut sim, x, &[hosts[0]]);
    let (result, _) = find(&mut sim, hosts[13], new);
    match result {
        Ok(OpValue::Found(Some((address, _)))) => {
            assert_eq!(address.socket_addr(), Some(Network::listen_address(x)));
        }
        other => panic!("the new id is found: {other:?}"),
    }
    let (result, _) = find(&mut sim, hosts[13], old);
    assert_eq!(
        result,
        Ok(OpValue::Found(None)),
        "nobody answers to the old id"
    );
    let other = sim.level.node_id(hosts[3]);
    let (result, _) = find(&mut sim, x, other);
    assert!(found(&result), "the renewed node still finds others");
}

#[test]
fn lookups_keep_working_while_thirty_percent_of_nodes_leave() {
    const N: usize = 100;
    let mut sim = network_with(10, keynode_tests::NetConfig::default());
    let hosts = add_nodes(&mut sim, 10, N, &keynode_tests::report::node_config());
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    for (i, h) in hosts.iter().enumerate().skip(1) {
        let seeds: Vec<HostId> = (0..3.min(i))
            .map(|_| hosts[rng.random_range(0..i)])
            .collect();
        let mut seeds = seeds;
        seeds.sort();
        seeds.dedup();
        join(&mut sim, *h, &seeds);
    }
    sim.advance(Duration::from_secs(120));
    let mut alive: Vec<HostId> = hosts.clone();
    let mut running = Vec::new();
    let (mut succeeded, mut counted) = (0, 0);
    // 300 s: a node leaves every 10 s (30 in all), a lookup starts every 2 s.
    for second in 0..300u32 {
        if second % 10 == 0 {
            let victim = alive.swap_remove(rng.random_range(0..alive.len()));
            sim.kill(victim);
        }
        if second % 2 == 0 {
            let finder = alive[rng.random_range(0..alive.len())];
            let target = alive[rng.random_range(0..alive.len())];
            if finder != target {
                let id = sim.level.node_id(target);
                let op = sim.find(finder, id, Default::default());
                running.push((finder, op, target));
            }
        }
        sim.advance(Duration::from_secs(1));
        running.retain(|(finder, op, target)| {
            let Some(result) = sim.level.outputs.take_result(*finder, *op) else {
                return true;
            };
            // Only lookups whose target stayed count.
            if sim.level.is_alive(*target) && sim.level.is_alive(*finder) {
                counted += 1;
                succeeded += usize::from(found(&result));
            }
            false
        });
    }
    assert_eq!(alive.len(), N - 30);
    sim.advance(Duration::from_secs(120));
    assert!(
        running.iter().all(
            |(f, op, _)| sim.level.outputs.result(*f, *op).is_some() || !sim.level.is_alive(*f)
        ),
        "every lookup of a live finder ended"
    );
    assert!(counted >= 100, "{counted} lookups counted");
    let rate = succeeded as f64 / counted as f64;
    eprintln!("churn: {succeeded}/{counted} lookups of live targets found");
    assert!(
        rate >= 0.95,
        "success {succeeded}/{counted} while nodes leave"
    );
    assert_buckets_within_k(&sim);
}

/// How many of the 16 sub-ranges of each of `host`'s three farthest
/// buckets hold a contact, summed (at most 48).
fn far_sub_ranges_covered(sim: &keynode_tests::ManagerSim, host: HostId) -> usize {
    let graph = sim.level.node(host).expect("alive").graph();
    let own = graph.own_node_id();
    (253..=255u8)
        .map(keynode_core::BucketIndex::new)
        .map(|bucket| {
            let mut seen = [false; 16];
            for e in graph.bucket(bucket) {
                seen[own.distance(&e.node_id).bits_below(bucket, 4) as usize] = true;
            }
            seen.iter().filter(|s| **s).count()
        })
        .sum()
}

/// The last of `n` nodes to join, and the network it joined.
fn last_joiner(n: usize, config: &keynode_core::Config) -> (keynode_tests::ManagerSim, HostId) {
    let mut sim = network(21);
    let hosts = add_nodes(&mut sim, 21, n, config);
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    for (i, h) in hosts.iter().enumerate().skip(1) {
        let mut seeds: Vec<HostId> = (0..3).map(|_| hosts[rng.random_range(0..i)]).collect();
        seeds.sort();
        seeds.dedup();
        join(&mut sim, *h, &seeds);
    }
    (sim, hosts[n - 1])
}

#[test]
fn a_newcomer_spreads_its_far_buckets_over_their_ranges() {
    // A refresh heading for one random target fills its bucket with nodes
    // near that target; with bucket diversity on, the lookup turns to the
    // emptiest sub-range once the bucket holds its share of the current one.
    let mut config = keynode_tests::report::node_config();
    let (sim, newcomer) = last_joiner(800, &config);
    let spread = far_sub_ranges_covered(&sim, newcomer);
    config.bucket_diversity_bits = 0;
    let (sim, newcomer) = last_joiner(800, &config);
    let clustered = far_sub_ranges_covered(&sim, newcomer);
    eprintln!("far sub-ranges covered: {spread} with diversity, {clustered} without");
    assert!(
        spread >= clustered + 8,
        "{spread} sub-ranges covered with diversity, {clustered} without"
    );
    assert_buckets_within_k(&sim);
}
