//! Property tests of the routing table and NodeId text form.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use keynode_core::{
    BucketIndex, Config, ContactMode, GraphSnapshot, NodeAddress, NodeAddressScopes,
    NodeContactAddressData, NodeGraph, NodeGraphSpace, NodeId, NodeIdParseError,
};
use proptest::prelude::*;

mod common;
use common::ModelStore;

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}

fn addr(port: u16) -> NodeAddress {
    NodeAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn data(time: u64) -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: time,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

fn config(k: usize, pending: usize) -> Config {
    let mut config = Config::default();
    config.k = k;
    config.max_pending_per_bucket = pending;
    config
}

/// A graph with `ids` offered in order (full buckets refuse the rest).
fn graph_with(own: NodeId, k: usize, ids: &[(NodeId, u16, u64)]) -> NodeGraph {
    let mut graph = NodeGraph::new(own, &config(k, 4)).unwrap();
    for (id, port, time) in ids {
        let _ = graph.set(*id, addr(*port), data(*time));
    }
    graph
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize, u16, u64),
    ForceSet(usize, u16, u64),
    AddPending(usize, u16, u64),
    Unset(usize),
    TakePending(usize),
    Reset(usize),
}

fn op(pool: usize) -> impl Strategy<Value = Op> {
    let i = 0..pool;
    prop_oneof![
        4 => (i.clone(), 1u16..6, 0u64..1000).prop_map(|(i, p, t)| Op::Set(i, p, t)),
        1 => (i.clone(), 1u16..6, 0u64..1000).prop_map(|(i, p, t)| Op::ForceSet(i, p, t)),
        2 => (i.clone(), 1u16..6, 0u64..1000).prop_map(|(i, p, t)| Op::AddPending(i, p, t)),
        1 => i.clone().prop_map(Op::Unset),
        1 => i.clone().prop_map(Op::TakePending),
        1 => i.prop_map(Op::Reset),
    ]
}

/// The graph a store holds.
fn model_graph(store: &ModelStore) -> GraphSnapshot {
    store.snapshot().graph.expect("an active space was written")
}

fn sorted(mut snapshot: GraphSnapshot) -> GraphSnapshot {
    snapshot.contacts.sort_by_key(|(id, _)| *id);
    snapshot.pending.sort_by_key(|(id, _)| *id);
    snapshot
}

fn check_invariants(graph: &NodeGraph, max_pending: usize) -> Result<(), TestCaseError> {
    let own = graph.own_node_id();
    let mut contacts = BTreeSet::new();
    let mut total = 0;
    for index in BucketIndex::all() {
        let bucket = graph.bucket(index);
        prop_assert!(
            bucket.len() <= graph.k(),
            "bucket {} holds {}",
            index,
            bucket.len()
        );
        prop_assert!(graph.pending(index).len() <= max_pending);
        prop_assert!(bucket.windows(2).all(|w| w[0].updated < w[1].updated));
        for entry in bucket {
            prop_assert_eq!(own.bucket_index(&entry.node_id), Some(index));
            prop_assert!(contacts.insert(entry.node_id), "{:?} twice", entry.node_id);
        }
        for pending in graph.pending(index) {
            prop_assert_eq!(own.bucket_index(&pending.node_id), Some(index));
            prop_assert!(!contacts.contains(&pending.node_id));
        }
        total += bucket.len();
    }
    prop_assert_eq!(total, graph.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn node_id_text_round_trips(bytes in any::<[u8; 32]>()) {
        let id = NodeId::from_bytes(bytes);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 53);
        prop_assert!(text.starts_with('v'));
        prop_assert_eq!(text.parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn node_id_text_rejects_mutations(
        bytes in any::<[u8; 32]>(),
        position in 0usize..53,
        replacement in any::<char>(),
        kind in 0u8..3,
    ) {
        let id = NodeId::from_bytes(bytes);
        let text = id.to_string();
        let mut chars: Vec<char> = text.chars().collect();
        match kind {
            0 => {
                prop_assume!(chars[position] != replacement);
                chars[position] = replacement;
            }
            1 => chars.insert(position, replacement),
            _ => { chars.remove(position); }
        }
        let mutated: String = chars.into_iter().collect();
        let parsed = mutated.parse::<NodeId>();
        // A mutated text never names the same node: it is refused, or (a
        // substitution by another valid digit) names a different one.
        prop_assert_ne!(&parsed, &Ok(id));
        if kind != 0 {
            prop_assert!(parsed.is_err());
        }
        if let Ok(other) = parsed {
            prop_assert_eq!(other.to_string(), mutated);
        }
    }

    #[test]
    fn uppercase_is_refused(bytes in any::<[u8; 32]>()) {
        let text = NodeId::from_bytes(bytes).to_string();
        let upper = format!("v{}", text[1..].to_uppercase());
        prop_assume!(upper != text);
        let is_bad_character = matches!(
            upper.parse::<NodeId>(),
            Err(NodeIdParseError::BadCharacter { .. })
        );
        prop_assert!(is_bad_character);
    }

    #[test]
    fn closest_equals_brute_force(
        own in node_id(),
        k in 1usize..12,
        seeds in prop::collection::vec((0usize..256, any::<[u8; 32]>(), 0u64..100), 0..300),
        targets in prop::collection::vec((any::<[u8; 32]>(), 0usize..256), 1..8),
        limit in 0usize..50,
    ) {
        let ids: Vec<(NodeId, u16, u64)> = seeds
            .into_iter()
            .map(|(shared, random, time)| {
                let mut bytes = *own.as_bytes();
                for bit in 0..(256 - shared) {
                    let byte = 31 - bit / 8;
                    let mask = 1u8 << (bit % 8);
                    bytes[byte] = (bytes[byte] & !mask) | (random[byte] & mask);
                }
                (NodeId::from_bytes(bytes), 1, time)
            })
            .collect();
        let graph = graph_with(own, k, &ids);
        let members: Vec<NodeId> = graph.iter().map(|e| e.node_id).collect();
        for (random, pick) in targets {
            // Targets: random ids, the own id, and members themselves.
            let target = match pick % 3 {
                0 => NodeId::from_bytes(random),
                1 => own,
                _ => members.get(pick % members.len().max(1)).copied().unwrap_or(own),
            };
            let mut expected = members.clone();
            expected.sort_by_key(|id| id.distance(&target));
            expected.truncate(limit);
            let got: Vec<NodeId> = graph.closest(&target, limit).iter().map(|e| e.node_id).collect();
            prop_assert_eq!(got, expected);
            // With a filter (as a closest-nodes answer leaves out nodes
            // without global addresses): the closest of those that pass.
            let keep = |id: &NodeId| !id.as_bytes()[31].is_multiple_of(3);
            let mut expected: Vec<NodeId> = members.iter().copied().filter(keep).collect();
            expected.sort_by_key(|id| id.distance(&target));
            expected.truncate(limit);
            let got: Vec<NodeId> = graph
                .closest_where(&target, limit, |e| keep(&e.node_id))
                .iter()
                .map(|e| e.node_id)
                .collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn random_operations_keep_invariants_and_ops_persist_them(
        own in node_id(),
        k in 1usize..6,
        max_pending in 0usize..4,
        pool_seed in prop::collection::vec(any::<[u8; 32]>(), 24),
        ops in prop::collection::vec(op(24), 1..120),
    ) {
        // A pool of ids concentrated in few buckets, so buckets fill up.
        let pool: Vec<NodeId> = pool_seed
            .iter()
            .enumerate()
            .map(|(i, random)| {
                let mut bytes = *own.as_bytes();
                bytes[31] ^= (i as u8 % 7) + 1;
                bytes[30] ^= random[0] & 0x03;
                NodeId::from_bytes(bytes)
            })
            .collect();
        let mut graph = NodeGraph::new(own, &config(k, max_pending)).unwrap();
        let mut store = ModelStore::default();
        store.apply(&graph.persist_all());
        for op in ops {
            let ops = match op {
                Op::Set(i, p, t) => graph.set(pool[i], addr(p), data(t)).map(|u| u.ops).unwrap_or_default(),
                Op::ForceSet(i, p, t) => graph.force_set(pool[i], addr(p), data(t)).map(|u| u.ops).unwrap_or_default(),
                Op::AddPending(i, p, t) => graph.add_pending(pool[i], addr(p), data(t)).map(|u| u.ops).unwrap_or_default(),
                Op::Unset(i) => graph.unset(&pool[i]).ops,
                Op::TakePending(i) => {
                    let index = graph.bucket_index(&pool[i]).unwrap_or(BucketIndex::CLOSEST);
                    graph.take_pending(index).ops
                }
                Op::Reset(i) => graph.reset(pool[i]).ops,
            };
            store.apply(&ops);
            check_invariants(&graph, max_pending)?;
            prop_assert_eq!(sorted(model_graph(&store)), sorted(graph.snapshot()));
        }
        let (restored, fix) = NodeGraph::restore(model_graph(&store), &config(k, max_pending))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(fix.is_empty());
        prop_assert_eq!(restored.snapshot(), graph.snapshot());
    }

    #[test]
    fn reset_keeps_the_most_recently_connected_per_bucket(
        new_own in node_id(),
        delta in 1u16..,
        k in 1usize..5,
        contacts in prop::collection::vec((1u16.., 0u64..20), 1..200),
    ) {
        // The old and new own ids differ only in the last 16 bits, and so do
        // the contacts: buckets below the highest bit of `delta` merge into one
        // new bucket, which then overflows.
        let xor_low = |id: NodeId, x: u16| {
            let mut bytes = *id.as_bytes();
            bytes[30] ^= (x >> 8) as u8;
            bytes[31] ^= x as u8;
            NodeId::from_bytes(bytes)
        };
        let own = xor_low(new_own, delta);
        let ids: Vec<(NodeId, u16, u64)> = contacts
            .iter()
            .map(|(x, time)| (xor_low(new_own, *x), 1, *time))
            .collect();
        let mut graph = graph_with(own, k, &ids);
        let members: Vec<(NodeId, u64, u64)> = graph
            .iter()
            .map(|e| (e.node_id, e.contact.last_connected(), e.updated))
            .collect();
        let _ = graph.reset(new_own);

        let mut expected: BTreeMap<BucketIndex, Vec<(NodeId, u64, u64)>> = BTreeMap::new();
        for m in &members {
            if let Some(index) = new_own.bucket_index(&m.0) {
                expected.entry(index).or_default().push(*m);
            }
        }
        let mut kept = 0;
        for (index, mut candidates) in expected {
            candidates.sort_by_key(|c| std::cmp::Reverse((c.1, c.2)));
            candidates.truncate(k);
            kept += candidates.len();
            let want: BTreeSet<NodeId> = candidates.iter().map(|c| c.0).collect();
            let got: BTreeSet<NodeId> = graph.bucket(index).iter().map(|e| e.node_id).collect();
            prop_assert_eq!(got, want, "bucket {}", index);
        }
        prop_assert_eq!(graph.len(), kept);
        prop_assert!(!graph.contains(&new_own));
        prop_assert_eq!(graph.space(), NodeGraphSpace::One);
        prop_assert_eq!(graph.own_node_id(), new_own);
    }
}
