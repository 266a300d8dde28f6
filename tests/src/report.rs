//! The `simulate` report: build a network of N nodes that join through
//! `sync_node_graph`, run L lookups of random live nodes, and measure them.
//!
//! The run, all of it drawn from `--seed`:
//! 1. N random NodeIds. Node 0 starts alone; node i joins at `i × interval`
//!    of virtual time with `sync_node_graph` (blocking) from 3 seed nodes
//!    drawn among the nodes that joined before it. The interval spreads the
//!    joins over [`BUILD_TIME`], so the build ends before the first hourly
//!    bucket refresh can fall due (45 min with the default jitter).
//! 2. The network settles for [`SETTLE_TIME`]: most connections idle out.
//! 3. `--dead F`: a fraction F of the nodes leave for good (their peers'
//!    connections idle out, their contacts stay in routing tables).
//! 4. L lookups, 16 at a time: a random live finder looks up a random live
//!    target (`find_node`, default options).
//!
//! Node configuration: the defaults, except that the periodic connection
//! check is off (`retry_connections_delay = 0`): it would have every node
//! run two lookups every 45 s, which multiplies the cost of a large run by
//! several times without changing what the lookups measure, and
//! `gc_contact_fresh` is the refresh delay (1 h). Bucket diversity
//! (`bucket_diversity_bits`) is at its default, 4.
//!
//! `--ideal` skips the joining: every node's routing table is filled with k
//! random members of each bucket's range (through `set_node`), then the
//! same lookups run. `--closest` looks up random keys instead of nodes and
//! checks the k nodes that answered closest to the key against the true k
//! closest live nodes (libp2p's `get_closest_peers`), with `find_node`'s cap
//! of contacted nodes lifted ([`CLOSEST_LIMIT`]).

use std::time::{Duration, Instant};

use keynode_core::{
    Config, ContactMode, FindOptions, NodeAddress, NodeAddressScopes, NodeContactAddressData,
    NodeId, OpError, OpId, OpValue,
};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::alloc;
use crate::manager::{ManagerLevel, ManagerSim};
use crate::net::{HostId, NatType, NetConfig, Network};

/// The virtual time over which the nodes join (at most one join per ms).
pub const BUILD_TIME: Duration = Duration::from_secs(1800);
/// The quiet time between the build and the lookups.
pub const SETTLE_TIME: Duration = Duration::from_secs(300);
/// Lookups in flight at once.
pub const CONCURRENT_LOOKUPS: usize = 16;
/// `--closest`: the most nodes one lookup contacts. `find_node` stops at 20
/// by default (the original's `limit`); libp2p's `get_closest_peers` has no
/// such cap and ends by the Kademlia rule alone, as these lookups then do.
pub const CLOSEST_LIMIT: usize = 1000;
/// Seed nodes each newcomer syncs from.
pub const SEEDS_PER_JOIN: usize = 3;

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Nodes in the network.
    pub nodes: usize,
    /// Lookups to run.
    pub lookups: usize,
    /// The seed of everything.
    pub seed: u64,
    /// The fraction of nodes that leave before the lookups.
    pub dead: f64,
    /// Ideal routing tables instead of joining.
    pub ideal: bool,
    /// Lookups of the k closest nodes to random keys instead of node lookups.
    pub closest: bool,
    /// Print a line on standard error at every tenth of the build and at
    /// each phase (a 100,000-node run takes over an hour).
    pub progress: bool,
}

/// What the run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Nodes in the network.
    pub nodes: usize,
    /// Lookups run.
    pub lookups: usize,
    /// Node lookups: the fraction that connected to the target.
    /// `--closest`: the fraction whose answer was exactly the true k closest.
    pub success_rate: f64,
    /// Hops of successful lookups (`--closest`: the longest request chain).
    pub hops_mean: f64,
    /// The 99th percentile of hops.
    pub hops_p99: u32,
    /// The most hops.
    pub hops_max: u32,
    /// `ClosestNodes` requests per lookup.
    pub requests_mean: f64,
    /// Bytes allocated per node once the network is built (live bytes after
    /// the build and settling, minus those before it, over N).
    pub bytes_per_node: u64,
    /// The peak of allocated bytes during the build, per node.
    pub peak_bytes_per_node: u64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// The hash of the whole event trace.
    pub trace_hash: u64,
    /// Joins that failed.
    pub joins_failed: usize,
    /// Virtual time at the end.
    pub virtual_s: f64,
    /// Events processed.
    pub events: u64,
    /// Contacts per node's routing table once the network is built.
    pub contacts_mean: f64,
    /// Connections open per node once the network is built.
    pub connections_mean: f64,
}

/// The configuration of every simulated node.
pub fn node_config() -> Config {
    let mut config = Config::default();
    config.retry_connections_delay = Duration::ZERO;
    config.gc_contact_fresh = config.refresh_bucket_delay;

    config
}

fn rng(seed: u64, stream: &[u8; 8]) -> ChaCha8Rng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(stream);
    ChaCha8Rng::from_seed(bytes)
}

/// Runs the simulation the options describe.
pub fn run(options: &Options) -> Report {
    #[allow(clippy::disallowed_methods)]
    let wall = Instant::now();
    let n = options.nodes.max(2);
    let mut ids_rng = rng(options.seed, b"node-ids");
    let ids: Vec<NodeId> = (0..n).map(|_| NodeId::random(&mut ids_rng)).collect();
    let net = Network::new(NetConfig::default(), options.seed);
    let mut sim = ManagerSim::new(ManagerLevel::new(options.seed), net, options.seed);
    let before = alloc::live_bytes();
    alloc::reset_peak();
    let progress = Progress {
        on: options.progress,
        wall,
    };
    let joins_failed = if options.ideal {
        build_ideal(&mut sim, &ids, options.seed);
        0
    } else {
        build_by_joining(&mut sim, &ids, options.seed, &progress)
    };
    progress.note(&sim, "network built");
    let bytes_per_node = (alloc::live_bytes().saturating_sub(before) / n) as u64;
    let contacts_mean = (0..n)
        .filter_map(|i| sim.level.node(HostId(i as u32)))
        .map(|node| node.graph().len() as f64)
        .sum::<f64>()
        / n as f64;
    let connections_mean = sim.level.open_connections() as f64 * 2.0 / n as f64;
    let peak_bytes_per_node = (alloc::peak_bytes().saturating_sub(before) / n) as u64;

    let mut pick = rng(options.seed, b"lookups!");
    let mut alive: Vec<HostId> = (0..n).map(|i| HostId(i as u32)).collect();
    if options.dead > 0.0 {
        let dead = ((n as f64) * options.dead.min(1.0)).round() as usize;
        alive.shuffle(&mut pick);
        for host in alive.drain(..dead.min(n - 2)) {
            sim.kill(host);
        }
        alive.sort();
        sim.advance(Duration::from_secs(60));
        progress.note(&sim, "dead nodes gone");
    }
    let outcomes = run_lookups(&mut sim, &alive, options, &mut pick);
    let mut report = summarise(
        &sim,
        options,
        &outcomes,
        wall,
        joins_failed,
        bytes_per_node,
        peak_bytes_per_node,
    );
    report.contacts_mean = contacts_mean;
    report.connections_mean = connections_mean;
    report
}

/// `--progress`: where a long run is, on standard error.
struct Progress {
    on: bool,
    wall: Instant,
}

impl Progress {
    fn note(&self, sim: &ManagerSim, what: &str) {
        if self.on {
            eprintln!(
                "simulate: {what}: virtual {:.0} s, {} events, wall {:.0} s",
                sim.elapsed().as_secs_f64(),
                sim.steps(),
                self.wall.elapsed().as_secs_f64()
            );
        }
    }
}

/// Node i joins at `i × interval` from seeds among the nodes before it.
fn build_by_joining(sim: &mut ManagerSim, ids: &[NodeId], seed: u64, progress: &Progress) -> usize {
    let n = ids.len();
    let interval = (BUILD_TIME / n as u32).max(Duration::from_millis(1));
    let mut seeds_rng = rng(seed, b"seednode");
    let mut joins: Vec<(HostId, OpId)> = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sim.advance(interval);
        }
        let host = sim.add_node(node_config(), *id, NatType::None);
        if i == 0 {
            continue;
        }
        let mut seeds: Vec<HostId> = if i <= SEEDS_PER_JOIN {
            (0..i).map(|s| HostId(s as u32)).collect()
        } else {
            let mut chosen = Vec::with_capacity(SEEDS_PER_JOIN);
            while chosen.len() < SEEDS_PER_JOIN {
                let s = HostId(seeds_rng.random_range(0..i) as u32);
                if !chosen.contains(&s) {
                    chosen.push(s);
                }
            }
            chosen
        };
        seeds.sort();
        joins.push((host, sim.join(host, &seeds)));
        if (i + 1) % n.div_ceil(10) == 0 {
            progress.note(sim, &format!("{} of {n} nodes joining", i + 1));
        }
    }
    // Let the last joins finish, then let connections idle out.
    sim.advance(SETTLE_TIME);
    joins
        .into_iter()
        .filter(|(host, op)| !matches!(sim.level.outputs.take_result(*host, *op), Some(Ok(_))))
        .count()
}

/// Fills every node's buckets with k random members of their ranges.
fn build_ideal(sim: &mut ManagerSim, ids: &[NodeId], seed: u64) {
    let config = node_config();
    let k = config.k;
    let hosts: Vec<HostId> = ids
        .iter()
        .map(|id| sim.add_node(config.clone(), *id, NatType::None))
        .collect();
    let mut sorted: Vec<(NodeId, HostId)> =
        ids.iter().copied().zip(hosts.iter().copied()).collect();
    sorted.sort();
    let mut fill = rng(seed, b"idealtbl");
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: crate::sim::START_UNIX_MS / 1000,
        scopes: NodeAddressScopes::GLOBAL,
    };
    for (i, own) in ids.iter().enumerate() {
        let host = hosts[i];
        for bucket in 0..=255u16 {
            let (lo, hi) = bucket_range(own, bucket as usize);
            let start = sorted.partition_point(|(id, _)| *id < lo);
            let end = sorted.partition_point(|(id, _)| *id <= hi);
            if start >= end {
                continue;
            }
            let members = &sorted[start..end];
            let chosen: Vec<(NodeId, HostId)> = if members.len() <= k {
                members.to_vec()
            } else {
                members.choose_multiple(&mut fill, k).copied().collect()
            };
            for (id, peer) in chosen {
                let address = NodeAddress::from(Network::listen_address(peer));
                sim.call(host, |node, now| {
                    node.set_node(now, id, address, data, false, false, None)
                        .expect("set_node starts")
                });
            }
        }
        // The set_node operations are done at once (the buckets have room).
        sim.level.outputs.take_results_of(host);
    }
}

/// The smallest and largest NodeId in bucket `bucket` of `own`: the top bits
/// above `bucket` as `own`'s, bit `bucket` flipped, anything below.
fn bucket_range(own: &NodeId, bucket: usize) -> (NodeId, NodeId) {
    let mut lo = *own.as_bytes();
    let mut hi = *own.as_bytes();
    // Bit b counts from the least significant bit of the last byte.
    let byte = 31 - bucket / 8;
    let bit = bucket % 8;
    lo[byte] ^= 1 << bit;
    hi[byte] ^= 1 << bit;
    let below = (1u16 << bit) as u8 - 1;
    lo[byte] &= !below;
    hi[byte] |= below;
    for b in byte + 1..32 {
        lo[b] = 0;
        hi[b] = 0xff;
    }
    (NodeId::from_bytes(lo), NodeId::from_bytes(hi))
}

struct Measured {
    found: bool,
    exact: bool,
    hops: u32,
    requests: u32,
}

fn run_lookups(
    sim: &mut ManagerSim,
    alive: &[HostId],
    options: &Options,
    pick: &mut ChaCha8Rng,
) -> Vec<Measured> {
    let k = node_config().k;
    let alive_ids: Vec<NodeId> = alive.iter().map(|h| sim.level.node_id(*h)).collect();
    let mut outstanding: Vec<(HostId, OpId, NodeId)> = Vec::new();
    let mut measured = Vec::with_capacity(options.lookups);
    let mut started = 0;
    let limit = Duration::from_secs(3600);
    while measured.len() < options.lookups {
        while outstanding.len() < CONCURRENT_LOOKUPS && started < options.lookups {
            let finder = alive[pick.random_range(0..alive.len())];
            let target = if options.closest {
                NodeId::random(pick)
            } else {
                loop {
                    let t = alive[pick.random_range(0..alive.len())];
                    if t != finder {
                        break sim.level.node_id(t);
                    }
                }
            };
            // One measured lookup per (finder, target) at a time; on a
            // duplicate, wait for one to end (a tiny network has fewer
            // pairs than lookups in flight).
            if outstanding
                .iter()
                .any(|(f, _, t)| *f == finder && *t == target)
            {
                break;
            }
            let options = if options.closest {
                FindOptions {
                    limit: Some(CLOSEST_LIMIT),
                    ..FindOptions::default()
                }
            } else {
                FindOptions::default()
            };
            let op = sim.find(finder, target, options);
            outstanding.push((finder, op, target));
            started += 1;
        }
        let end = sim.elapsed() + limit;
        let any_done = sim.run_until(end, |s| {
            outstanding
                .iter()
                .any(|(h, op, _)| s.level.outputs.result(*h, *op).is_some())
        });
        assert!(
            any_done,
            "a lookup did not end within {limit:?} of virtual time"
        );
        let mut i = 0;
        while i < outstanding.len() {
            let (host, op, target) = outstanding[i];
            let Some(result) = sim.level.outputs.take_result(host, op) else {
                i += 1;
                continue;
            };
            outstanding.swap_remove(i);
            let outcome = sim.lookup_outcome(host, op).expect("a measured lookup");
            let exact = options.closest && {
                let finder_id = sim.level.node_id(host);
                let mut answered = outcome.answered.clone();
                answered.sort_by_key(|id| id.distance(&target));
                answered.dedup();
                answered.truncate(k);
                let mut truth: Vec<NodeId> = alive_ids
                    .iter()
                    .copied()
                    .filter(|id| *id != finder_id)
                    .collect();
                let cut = k.min(truth.len());
                if cut < truth.len() {
                    truth.select_nth_unstable_by_key(cut, |id| id.distance(&target));
                }
                truth.truncate(cut);
                truth.sort_by_key(|id| id.distance(&target));
                answered == truth
            };
            let found = matches!(result, Ok(OpValue::Found(Some(_))));
            debug_assert!(found == outcome.found || !matches!(result, Err(OpError::Cancelled)));
            measured.push(Measured {
                found,
                exact,
                hops: if options.closest {
                    outcome.chain
                } else {
                    outcome.hops
                },
                requests: outcome.requests,
            });
        }
    }
    measured
}

fn summarise(
    sim: &ManagerSim,
    options: &Options,
    measured: &[Measured],
    wall: Instant,
    joins_failed: usize,
    bytes_per_node: u64,
    peak_bytes_per_node: u64,
) -> Report {
    let total = measured.len().max(1) as f64;
    let successes: Vec<&Measured> = if options.closest {
        measured.iter().collect()
    } else {
        measured.iter().filter(|m| m.found).collect()
    };
    let ok = if options.closest {
        measured.iter().filter(|m| m.exact).count()
    } else {
        successes.len()
    };
    let mut hops: Vec<u32> = successes.iter().map(|m| m.hops).collect();
    hops.sort_unstable();
    let hops_mean = if hops.is_empty() {
        0.0
    } else {
        hops.iter().map(|h| f64::from(*h)).sum::<f64>() / hops.len() as f64
    };
    let p99 = if hops.is_empty() {
        0
    } else {
        let rank = ((hops.len() as f64) * 0.99).ceil() as usize;
        hops[rank.clamp(1, hops.len()) - 1]
    };
    let requests_mean = measured.iter().map(|m| f64::from(m.requests)).sum::<f64>() / total;
    Report {
        nodes: options.nodes.max(2),
        lookups: measured.len(),
        success_rate: ok as f64 / total,
        hops_mean,
        hops_p99: p99,
        hops_max: hops.last().copied().unwrap_or(0),
        requests_mean,
        bytes_per_node,
        peak_bytes_per_node,
        #[allow(clippy::disallowed_methods)]
        wall_s: wall.elapsed().as_secs_f64(),
        trace_hash: sim.trace_hash(),
        joins_failed,
        virtual_s: sim.elapsed().as_secs_f64(),
        events: sim.steps(),
        contacts_mean: 0.0,
        connections_mean: 0.0,
    }
}

impl Report {
    /// The report as text, one figure a line.
    pub fn text(&self, options: &Options) -> String {
        let mode = match (options.ideal, options.closest) {
            (false, false) => "node lookups, network built by joining",
            (true, false) => "node lookups, ideal routing tables",
            (false, true) => "k-closest lookups, network built by joining",
            (true, true) => "k-closest lookups, ideal routing tables",
        };
        let success = if options.closest {
            "exact k closest"
        } else {
            "success rate"
        };
        let hops = if options.closest {
            "request chain"
        } else {
            "hops"
        };
        format!(
            "mode              {mode}\n\
             nodes             {}\n\
             dead              {:.2}\n\
             lookups           {}\n\
             {success:<17} {:.4}\n\
             {hops:<17} mean {:.3}  p99 {}  max {}\n\
             requests/lookup   {:.2}\n\
             memory/node       {} bytes (peak {} bytes)\n\
             contacts/node     {:.1}, connections/node {:.1}\n\
             joins failed      {}\n\
             virtual time      {:.1} s, {} events\n\
             wall time         {:.2} s\n\
             trace hash        {:016x}\n",
            self.nodes,
            options.dead,
            self.lookups,
            self.success_rate,
            self.hops_mean,
            self.hops_p99,
            self.hops_max,
            self.requests_mean,
            self.bytes_per_node,
            self.peak_bytes_per_node,
            self.contacts_mean,
            self.connections_mean,
            self.joins_failed,
            self.virtual_s,
            self.events,
            self.wall_s,
            self.trace_hash,
        )
    }

    /// The report as one JSON object.
    pub fn json(&self) -> String {
        format!(
            "{{\"nodes\":{},\"lookups\":{},\"success_rate\":{},\"hops_mean\":{},\"hops_p99\":{},\"hops_max\":{},\"requests_mean\":{},\"bytes_per_node\":{},\"wall_s\":{},\"trace_hash\":\"{:016x}\"}}",
            self.nodes,
            self.lookups,
            self.success_rate,
            self.hops_mean,
            self.hops_p99,
            self.hops_max,
            self.requests_mean,
            self.bytes_per_node,
            self.wall_s,
            self.trace_hash,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ranges_hold_exactly_their_bucket() {
        let mut r = rng(5, b"testtest");
        for _ in 0..50 {
            let own = NodeId::random(&mut r);
            for bucket in [0usize, 1, 7, 8, 9, 100, 254, 255] {
                let (lo, hi) = bucket_range(&own, bucket);
                assert!(lo <= hi);
                for id in [lo, hi] {
                    assert_eq!(
                        own.bucket_index(&id).map(|b| b.get() as usize),
                        Some(bucket)
                    );
                }
            }
        }
    }
}
