//! The store on real LMDB directories.

use std::net::{IpAddr, Ipv4Addr};

use heed::types::Bytes;
use keynode_core::{
    Config, ContactMode, ContactRecord, NodeAddress, NodeAddressScopes, NodeContact,
    NodeContactAddressData, NodeGraph, NodeGraphSpace, NodeId, NodeIdParseError, StoreErrorKind,
    StoreOp, TaskKey, TaskPayload, TaskRecord,
};
use keynode_store::{CorruptRecord, SCHEMA_VERSION, Store, StoreError, StoreOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn data(time: u64) -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: time,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

fn addr(port: u16) -> NodeAddress {
    NodeAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// A NodeId in bucket `bucket` of `own` (random below it).
fn in_bucket(own: &NodeId, bucket: u8, rng: &mut ChaCha8Rng) -> NodeId {
    own.random_in_bucket(keynode_core::BucketIndex::new(bucket), rng)
}

/// Applies a random history of changes to a graph and to the store, one batch
/// per change, as a driver would.
fn random_history(graph: &mut NodeGraph, store: &mut Store, rng: &mut ChaCha8Rng, steps: usize) {
    store.apply(&graph.persist_all()).unwrap();
    let own = graph.own_node_id();
    let mut known: Vec<NodeId> = Vec::new();
    for step in 0..steps {
        let id = if !known.is_empty() && rng.random_bool(0.3) {
            known[rng.random_range(0..known.len())]
        } else {
            let id = in_bucket(&own, rng.random_range(250..=255), rng);
            known.push(id);
            id
        };
        let port = rng.random_range(1..8);
        let time = step as u64;
        let ops = match rng.random_range(0..10) {
            0..=5 => graph
                .set(id, addr(port), data(time))
                .map(|u| u.ops)
                .unwrap_or_else(|_| {
                    graph
                        .add_pending(id, addr(port), data(time))
                        .map(|u| u.ops)
                        .unwrap_or_default()
                }),
            6 => graph.force_set(id, addr(port), data(time)).unwrap().ops,
            7 => graph.unset(&id).ops,
            _ => graph
                .add_pending(id, addr(port), data(time))
                .map(|u| u.ops)
                .unwrap_or_default(),
        };
        store.apply(&ops).unwrap();
    }
}

fn reopen_and_restore(path: &std::path::Path, config: &Config) -> NodeGraph {
    let store = Store::open(path, &StoreOptions::default()).unwrap();
    let snapshot = store.load_graph().unwrap().expect("a graph was written");
    store.close();
    let (graph, fix) = NodeGraph::restore(snapshot, config).unwrap();
    assert!(fix.is_empty(), "nothing to trim with the same config");
    graph
}

#[test]
fn write_close_reopen_gives_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut config = Config::default();
    config.k = 5;
    config.max_pending_per_bucket = 3;
    let own = NodeId::random(&mut rng);
    let mut graph = NodeGraph::new(own, &config).unwrap();
    let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    assert!(
        store.load_graph().unwrap().is_none(),
        "a new store holds no graph"
    );
    random_history(&mut graph, &mut store, &mut rng, 500);
    store.close();
    assert!(graph.len() > 10, "the history filled several buckets");
    assert!(graph.iter_pending().count() > 0, "and left pending nodes");

    let restored = reopen_and_restore(dir.path(), &config);
    assert_eq!(restored.snapshot(), graph.snapshot());
    // Same order in every bucket, and it keeps working from where it was.
    for (index, _) in graph.bucket_sizes() {
        assert_eq!(restored.get_bucket(index), graph.get_bucket(index));
        assert_eq!(restored.oldest(index), graph.oldest(index));
    }
}

#[test]
fn reset_switches_space_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let config = Config::default();
    let mut graph = NodeGraph::new(NodeId::random(&mut rng), &config).unwrap();
    let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    random_history(&mut graph, &mut store, &mut rng, 200);
    let new_own = NodeId::random(&mut rng);
    store.apply(&graph.reset(new_own).ops).unwrap();
    store.close();

    let restored = reopen_and_restore(dir.path(), &config);
    assert_eq!(restored.space(), NodeGraphSpace::One);
    assert_eq!(restored.own_node_id(), new_own);
    assert_eq!(restored.snapshot(), graph.snapshot());
}

/// A contact as large as one gets: five long hostnames.
fn big_contact(n: u64) -> ContactRecord {
    let addresses = (0..5)
        .map(|i| {
            let host = format!("{}.{n}.{i}.example", "h".repeat(60));
            let address: NodeAddress = format!("{host}:{i}").parse().unwrap();
            (address, data(n))
        })
        .collect();
    ContactRecord {
        contact: NodeContact::from_addresses(addresses).unwrap(),
        updated: n,
    }
}

/// A 256 KiB map: a few hundred big contacts fill it.
fn small_map() -> StoreOptions {
    StoreOptions::with_map_size(256 * 1024)
}

/// A store on [`small_map`] in `dir` holding an empty graph of a random own id.
fn small_store_with_graph(dir: &std::path::Path, rng: &mut ChaCha8Rng) -> Store {
    let own = NodeId::random(rng);
    let mut store = Store::open(dir, &small_map()).unwrap();
    store
        .apply(
            &NodeGraph::new(own, &Config::default())
                .unwrap()
                .persist_all(),
        )
        .unwrap();
    store
}

#[test]
fn a_batch_is_all_or_nothing_and_a_full_map_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (options, mut rng) = (small_map(), ChaCha8Rng::seed_from_u64(9));
    let mut store = small_store_with_graph(dir.path(), &mut rng);

    let mut committed: Vec<NodeId> = Vec::new();
    let mut failed: Option<Vec<NodeId>> = None;
    for batch in 0..1000u64 {
        let ids: Vec<NodeId> = (0..40).map(|_| NodeId::random(&mut rng)).collect();
        let ops: Vec<StoreOp> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| StoreOp::PutContact {
                space: NodeGraphSpace::Zero,
                node_id: *id,
                record: big_contact(batch * 100 + i as u64),
            })
            .collect();
        match store.apply(&ops) {
            Ok(()) => committed.extend(ids),
            Err(StoreError::MapFull { map_size, .. }) => {
                assert_eq!(map_size, 256 * 1024);
                failed = Some(ids);
                break;
            }
            Err(other) => panic!("expected MapFull, got {other}"),
        }
    }
    let failed = failed.expect("the map filled up");
    assert!(
        !committed.is_empty(),
        "some batches fit before the map filled"
    );
    // The store still works after the failure: a small batch goes in.
    let small = NodeId::random(&mut rng);
    let small_op = StoreOp::PutContact {
        space: NodeGraphSpace::Zero,
        node_id: small,
        record: ContactRecord {
            contact: NodeContact::new(addr(1), data(1)),
            updated: 1,
        },
    };
    let small_fits = store.apply(std::slice::from_ref(&small_op)).is_ok();
    store.close();

    let store = Store::open(dir.path(), &options).unwrap();
    let snapshot = store.load_graph().unwrap().unwrap();
    store.close();
    let on_disk: std::collections::BTreeSet<NodeId> =
        snapshot.contacts.iter().map(|(id, _)| *id).collect();
    for id in &committed {
        assert!(on_disk.contains(id), "a committed batch is all there");
    }
    for id in &failed {
        assert!(
            !on_disk.contains(id),
            "nothing of the failed batch is there"
        );
    }
    assert_eq!(on_disk.contains(&small), small_fits);
    assert_eq!(
        on_disk.len(),
        committed.len() + usize::from(small_fits),
        "nothing else either"
    );
}

#[test]
fn tasks_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let seed = (NodeId::from_bytes([3; 32]), addr(9));
    let sync = TaskRecord {
        due_unix_ms: 5,
        payload: TaskPayload::Sync {
            seeds: vec![seed],
            connect_timeout_ms: 100,
        },
    };
    let refresh = |due| TaskRecord {
        due_unix_ms: due,
        payload: TaskPayload::None,
    };
    let bucket = keynode_core::BucketIndex::new(7);
    store
        .apply(&[
            StoreOp::PutTask {
                key: TaskKey::RefreshBucket(bucket),
                record: refresh(1),
            },
            StoreOp::PutTask {
                key: TaskKey::RefreshBucket(bucket),
                record: refresh(2),
            },
            StoreOp::PutTask {
                key: TaskKey::SyncNodeGraph,
                record: sync.clone(),
            },
            StoreOp::PutTask {
                key: TaskKey::CheckConnections,
                record: refresh(3),
            },
            StoreOp::DeleteTask(TaskKey::CheckConnections),
        ])
        .unwrap();
    store.close();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let snapshot = store.load().unwrap();
    store.close();
    assert!(snapshot.graph.is_none());
    assert_eq!(
        snapshot.tasks,
        vec![
            (TaskKey::RefreshBucket(bucket), refresh(2)),
            (TaskKey::SyncNodeGraph, sync),
        ]
    );
}

#[test]
fn the_sigchain_gestalt_and_permissions_survive_a_reopen_byte_for_byte() {
    use keynode_core::claims::{CLAIM_VERSION, Claim, ClaimBody, ClaimId, KeyPair, SignedClaim};
    let dir = tempfile::tempdir().unwrap();
    let owner = KeyPair::from_seed(&[1; 32]).unwrap();
    let mut claims = Vec::new();
    let mut prev: Option<(ClaimId, [u8; 32])> = None;
    for seq in 0..5u64 {
        let partner = KeyPair::from_seed(&[seq as u8 + 2; 32]).unwrap();
        let claim = Claim {
            version: CLAIM_VERSION,
            id: ClaimId([seq as u8; 16]),
            seq,
            prev_claim_id: prev.map(|p| p.0),
            prev_digest: prev.map(|p| p.1),
            iat: 1000 + seq,
            nbf: 1000 + seq,
            body: ClaimBody::LinkNode {
                iss: owner.node_id(),
                sub: partner.node_id(),
            },
        };
        let mut signed = SignedClaim::sign(&claim, &owner).unwrap();
        signed.countersign(&partner);
        prev = Some((claim.id, signed.digest()));
        claims.push(signed);
    }
    let ops: Vec<StoreOp> = claims
        .iter()
        .enumerate()
        .map(|(seq, claim)| StoreOp::PutClaim {
            seq: seq as u64,
            claim: claim.clone(),
        })
        .chain([
            StoreOp::PutGestaltLink {
                a: NodeId::from_bytes([1; 32]),
                b: NodeId::from_bytes([2; 32]),
            },
            StoreOp::PutClaimPermission(NodeId::from_bytes([5; 32])),
            StoreOp::PutClaimPermission(NodeId::from_bytes([6; 32])),
            StoreOp::DeleteClaimPermission(NodeId::from_bytes([5; 32])),
        ])
        .collect();
    let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    store.apply(&ops).unwrap();
    store.close();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let snapshot = store.load().unwrap();
    store.close();
    assert_eq!(
        snapshot.claims, claims,
        "same claims, same bytes, in seq order"
    );
    for (loaded, written) in snapshot.claims.iter().zip(&claims) {
        assert_eq!(loaded.payload, written.payload);
        assert_eq!(loaded.digest(), written.digest());
    }
    assert_eq!(
        snapshot.gestalt_links,
        vec![(NodeId::from_bytes([1; 32]), NodeId::from_bytes([2; 32]))]
    );
    assert_eq!(
        snapshot.claim_permissions,
        vec![NodeId::from_bytes([6; 32])]
    );
    let (ok, bad) = keynode_core::claims::verify_chain(&owner.node_id(), &snapshot.claims, None);
    assert_eq!((ok.len(), bad.len()), (5, 0));
}

#[test]
fn a_path_opens_once_per_process_and_again_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    match Store::open(dir.path(), &StoreOptions::default()) {
        Err(StoreError::AlreadyOpen { path }) => {
            assert!(path.ends_with(dir.path().file_name().unwrap()))
        }
        other => panic!("expected AlreadyOpen, got {other:?}"),
    }
    store.close();
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    store.close();
}

#[test]
fn a_store_of_another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), &StoreOptions::default())
        .unwrap()
        .close();
    {
        // Write another version with heed directly, as a future keynode would.
        let env = unsafe {
            heed::EnvOpenOptions::new()
                .max_dbs(8)
                .map_size(1 << 20)
                .open(dir.path())
                .unwrap()
        };
        let txn = env.write_txn().unwrap();
        env.create_databases_and_commit(txn, |opener, txn| -> heed::Result<_> {
            let meta = opener.create_database::<Bytes, Bytes>(txn, Some("meta"))?;
            let version = (SCHEMA_VERSION + 1).to_be_bytes();
            meta.put(txn, b"schema_version", &version)?;
            Ok(heed::CommitOrAbort::<(), ()>::Commit(()))
        })
        .unwrap();
        env.prepare_for_closing().wait();
    }
    match Store::open(dir.path(), &StoreOptions::default()) {
        Err(
            e @ StoreError::SchemaMismatch {
                found, expected, ..
            },
        ) => {
            assert_eq!((found, expected), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert!(e.to_string().contains("schema version 2"), "{e}");
        }
        other => panic!("expected SchemaMismatch, got {other:?}"),
    }
}

/// Writes `records` (table, key, value) into the store at `path` with heed
/// directly, as a damaged disk or another program would leave them.
fn write_raw(path: &std::path::Path, records: &[(&str, &[u8], &[u8])]) {
    let env = unsafe {
        heed::EnvOpenOptions::new()
            .max_dbs(8)
            .map_size(1 << 20)
            .open(path)
            .unwrap()
    };
    let txn = env.write_txn().unwrap();
    env.create_databases_and_commit(txn, |opener, txn| -> heed::Result<_> {
        for (table, key, value) in records {
            let db = opener.create_database::<Bytes, Bytes>(txn, Some(table))?;
            db.put(txn, key, value)?;
        }
        Ok(heed::CommitOrAbort::<(), ()>::Commit(()))
    })
    .unwrap();
    env.prepare_for_closing().wait();
}

#[test]
fn a_damaged_record_is_reported_by_load_with_what_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let own = NodeId::from_bytes([1; 32]);
    let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    store
        .apply(
            &NodeGraph::new(own, &Config::default())
                .unwrap()
                .persist_all(),
        )
        .unwrap();
    store.close();
    let mut key = vec![NodeGraphSpace::Zero.as_u8()];
    key.extend_from_slice(&[2; 32]);
    write_raw(dir.path(), &[("contacts", &key, &[0xff, 0xff, 0xff])]);

    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let error = store.load().unwrap_err();
    match &error {
        StoreError::Corrupt {
            what: "contact",
            problem: CorruptRecord::Decode(_),
            ..
        } => {}
        other => panic!("expected a corrupt contact, got {other:?}"),
    }
    assert_eq!(error.kind(), StoreErrorKind::Corrupted);
    assert!(
        error.to_string().contains("corrupt contact record"),
        "{error}"
    );
    store.close();

    // A claim permission whose key is not a NodeId.
    let dir = tempfile::tempdir().unwrap();
    Store::open(dir.path(), &StoreOptions::default())
        .unwrap()
        .close();
    write_raw(dir.path(), &[("permissions", &[7; 5], &[])]);
    let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    match store.load() {
        Err(StoreError::Corrupt {
            what: "claim permission",
            problem: CorruptRecord::NodeId(NodeIdParseError::WrongByteLength { found: 5 }),
            ..
        }) => {}
        other => panic!("expected a corrupt claim permission, got {other:?}"),
    }
    store.close();
}

#[test]
fn a_group_commits_every_batch_and_a_batch_that_does_not_fit_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (options, mut rng) = (small_map(), ChaCha8Rng::seed_from_u64(11));
    let mut store = small_store_with_graph(dir.path(), &mut rng);
    let put = |id: NodeId, record: ContactRecord| StoreOp::PutContact {
        space: NodeGraphSpace::Zero,
        node_id: id,
        record,
    };
    let small = |n: u64| ContactRecord {
        contact: NodeContact::new(addr(n as u16), data(n)),
        updated: n,
    };

    // A group that fits: one commit, every batch reported committed.
    let fits: Vec<NodeId> = (0..8).map(|_| NodeId::random(&mut rng)).collect();
    let batches: Vec<Vec<StoreOp>> = fits
        .iter()
        .enumerate()
        .map(|(n, id)| vec![put(*id, small(n as u64))])
        .collect();
    let refs: Vec<&[StoreOp]> = batches.iter().map(Vec::as_slice).collect();
    let results = store.apply_batches(&refs);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // A group with one batch far larger than the map: that batch fails with
    // a typed error, the small ones before and after it commit.
    let (before, after) = (NodeId::random(&mut rng), NodeId::random(&mut rng));
    let huge: Vec<NodeId> = (0..2000).map(|_| NodeId::random(&mut rng)).collect();
    let huge_ops: Vec<StoreOp> = huge
        .iter()
        .enumerate()
        .map(|(n, id)| put(*id, big_contact(n as u64)))
        .collect();
    let group = [
        vec![put(before, small(100))],
        huge_ops,
        vec![put(after, small(101))],
    ];
    let refs: Vec<&[StoreOp]> = group.iter().map(Vec::as_slice).collect();
    let results = store.apply_batches(&refs);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(StoreError::MapFull { .. })),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);
    store.close();

    // On disk: exactly what was reported committed.
    let store = Store::open(dir.path(), &options).unwrap();
    let snapshot = store.load_graph().unwrap().unwrap();
    store.close();
    let on_disk: std::collections::BTreeSet<NodeId> =
        snapshot.contacts.iter().map(|(id, _)| *id).collect();
    let mut expected: std::collections::BTreeSet<NodeId> = fits.into_iter().collect();
    expected.extend([before, after]);
    assert_eq!(on_disk, expected);
    assert!(huge.iter().all(|id| !on_disk.contains(id)));
}
