//! Benchmarks of the routing table, [`NodeGraph`].
//!
//! Two tables, both offered the same 10,000 random contacts:
//! - `Config::default()` (k = 20): keeps only about k per bucket, so it ends
//!   with a few hundred contacts (the count is printed to stderr);
//! - k = 1024 (`Config::MAX_K`, the largest accepted): keeps a few thousand
//!   contacts, to see how the linear bucket scans and the closest-nodes
//!   selection scale with buckets of a thousand.
//!
//! Every input (NodeIds, targets, addresses) is drawn from a seeded RNG before
//! measuring, so the RNG is never timed and every run sees the same tables.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use keynode_core::{
    Change, Config, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeGraph,
    NodeId, SetContactError,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// How many random contacts each table is offered.
const OFFERED: usize = 10_000;
/// How many pre-generated NodeIds a benchmark cycles through.
const POOL: usize = 4096;
/// The size of a closest-nodes answer (the default k).
const LIMIT: usize = 20;

fn addr(port: u16) -> NodeAddress {
    NodeAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn data(connected_time: u64) -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

/// A NodeId, its address and its address data, ready to hand to `set`.
type Offer = (NodeId, NodeAddress, NodeContactAddressData);

/// `n` random offers; ports and times count up from 1.
fn offers(rng: &mut ChaCha8Rng, n: usize) -> Vec<Offer> {
    (1..=n)
        .map(|i| {
            let port = u16::try_from(i % usize::from(u16::MAX)).unwrap_or(1);
            (NodeId::random(rng), addr(port), data(i as u64))
        })
        .collect()
}

/// A table for a random own NodeId offered `OFFERED` random contacts;
/// full buckets refuse the newcomers, as `NodeManager` would before pinging.
fn build(rng: &mut ChaCha8Rng, config: &Config) -> NodeGraph {
    let mut graph = NodeGraph::new(NodeId::random(rng), config).expect("a valid config");
    for (node_id, address, data) in offers(rng, OFFERED) {
        match graph.set(node_id, address, data) {
            Ok(update) => {
                let _ = black_box(update);
            }
            Err(SetContactError::BucketFull { .. }) => {}
            Err(e) => panic!("unexpected error building the table: {e}"),
        }
    }
    graph
}

/// Every contact of `graph` with its first address, in a random order, to
/// re-offer unchanged: the update then only moves the contact to the end of its
/// bucket, so repeating it never changes the table's shape.
fn existing(graph: &NodeGraph, rng: &mut ChaCha8Rng) -> Vec<Offer> {
    let mut out: Vec<Offer> = graph
        .iter()
        .map(|e| {
            let (address, data) = e.contact.iter().next().expect("a contact has an address");
            (e.node_id, address.clone(), *data)
        })
        .collect();
    out.shuffle(rng);
    out
}

fn targets(rng: &mut ChaCha8Rng, n: usize) -> Vec<NodeId> {
    (0..n).map(|_| NodeId::random(rng)).collect()
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// Benchmarks `set` of offers taken in turn from `pool`.
fn bench_set(g: &mut Group<'_>, name: &str, graph: &NodeGraph, pool: &[Offer]) {
    let mut graph = graph.clone();
    let mut i = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            let (node_id, address, data) = &pool[i];
            i = (i + 1) % pool.len();
            let result = graph.set(black_box(*node_id), address.clone(), *data);
            let _ = black_box(result);
        });
    });
}

/// Benchmarks `closest(target, LIMIT)` for targets taken in turn from `pool`.
fn bench_closest(g: &mut Group<'_>, name: &str, graph: &NodeGraph, pool: &[NodeId]) {
    let mut i = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            let target = &pool[i];
            i = (i + 1) % pool.len();
            let found = graph.closest(black_box(target), LIMIT);
            black_box(found);
        });
    });
}

/// What a pass of `pool` through `set` does to `graph`, counted:
/// (inserted, replaced for bucket diversity, updated, refused as full).
fn outcomes(graph: &mut NodeGraph, pool: &[Offer]) -> (usize, usize, usize, usize) {
    let (mut inserted, mut replaced, mut updated, mut full) = (0, 0, 0, 0);
    for (node_id, address, data) in pool {
        match graph.set(*node_id, address.clone(), *data) {
            Ok(update) => match update.change {
                Change::Inserted => inserted += 1,
                Change::Replaced { .. } => replaced += 1,
                Change::Updated => updated += 1,
                other => panic!("unexpected change {other:?}"),
            },
            Err(SetContactError::BucketFull { .. }) => full += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    (inserted, replaced, updated, full)
}

fn graph_k20(g: &mut Group<'_>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6b65_796e_6f64_6501);
    let graph = build(&mut rng, &Config::default());
    let buckets = graph.bucket_sizes().count();
    eprintln!(
        "graph (k = {}): {} contacts in {buckets} buckets after offering {OFFERED}",
        graph.k(),
        graph.len()
    );

    let pool = existing(&graph, &mut rng);
    bench_set(g, "set_node/update_existing", &graph, &pool);

    // Fresh ids mostly land in a full far bucket and are refused, which is the
    // common case. The few that fit (room, or an emptier part of the bucket's
    // range) are taken in the first passes through the pool and merely updated
    // on later ones; bucket diversity only evicts to even a bucket out, so the
    // table stops changing: those passes are made here, before measuring.
    let fresh = offers(&mut rng, POOL);
    let mut settled = graph.clone();
    let first = outcomes(&mut settled, &fresh);
    let mut steady = outcomes(&mut settled, &fresh);
    for _ in 0..20 {
        if steady.0 + steady.1 == 0 {
            break;
        }
        steady = outcomes(&mut settled, &fresh);
    }
    assert_eq!(steady.0 + steady.1, 0, "the table settles");
    eprintln!(
        "graph/set_node/new_random: first pass (inserted, replaced, updated, full) = {first:?}, \
         steady state = {steady:?} of {POOL}"
    );
    bench_set(g, "set_node/new_random", &settled, &fresh);

    let pool = targets(&mut rng, POOL);
    bench_closest(g, "closest/20", &graph, &pool);
}

fn graph_max_k(g: &mut Group<'_>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6b65_796e_6f64_6502);
    // `Config` is `#[non_exhaustive]`: outside the crate it can only be made
    // from `Default` and then changed field by field.
    let mut config = Config::default();
    config.k = Config::MAX_K;
    // A lookup must be able to remember k candidates.
    config.max_lookup_candidates = config.k;
    let graph = build(&mut rng, &config);
    let largest = graph.bucket_sizes().map(|(_, n)| n).max().unwrap_or(0);
    eprintln!(
        "graph (k = {}): {} contacts after offering {OFFERED}; largest bucket {largest}",
        graph.k(),
        graph.len()
    );

    let pool = targets(&mut rng, POOL);
    bench_closest(g, "closest_k1024/20", &graph, &pool);

    let pool = existing(&graph, &mut rng);
    bench_set(g, "set_node_k1024/update_existing", &graph, &pool);
}

fn graph(c: &mut Criterion) {
    let mut g = c.benchmark_group("graph");
    graph_k20(&mut g);
    graph_max_k(&mut g);
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = graph
}
criterion_main!(benches);
