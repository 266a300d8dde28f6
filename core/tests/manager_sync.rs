//! `sync_node_graph`: joining through seed nodes, with some and with all
//! seeds down, blocking and not.

mod common;

use std::time::Duration;

use common::{Net, addr, id};
use keynode_core::{
    Config, ConnectFailure, NodeAddress, NodeId, OpError, OpValue, SeedNodes, TaskKey, Timer,
};

const STEPS: u64 = 200_000;

fn config() -> Config {
    let mut config = Config::default();
    config.retry_connections_delay = Duration::ZERO;
    config
}

fn seeds(list: &[u8]) -> SeedNodes {
    SeedNodes::new(
        list.iter()
            .map(|n| (id(*n), NodeAddress::from(addr((*n).into())))),
    )
}

fn sync(
    net: &mut Net,
    node: u8,
    seed_list: &SeedNodes,
    blocking: bool,
) -> Result<OpValue, OpError> {
    let op = net.call(id(node), |n, now| {
        n.sync_node_graph(now, seed_list, Some(Duration::from_secs(2)), blocking)
            .unwrap()
    });
    net.run_until_done(id(node), op, STEPS)
}

fn find(net: &mut Net, from: u8, target: NodeId) -> bool {
    let op = net.call(id(from), |n, now| {
        n.find_node(now, target, Default::default()).unwrap()
    });
    matches!(
        net.run_until_done(id(from), op, STEPS),
        Ok(OpValue::Found(Some(_)))
    )
}

#[test]
fn nodes_joining_through_one_seed_find_each_other() {
    let mut net = Net::new(common::t0());
    for i in 1..=12u8 {
        net.add(id(i), addr(i.into()), config());
    }
    for i in 2..=12u8 {
        assert_eq!(
            sync(&mut net, i, &seeds(&[1]), true),
            Ok(OpValue::Unit),
            "node {i} joins"
        );
        assert!(
            net.node(id(i)).graph().contains(&id(1)),
            "the seed is a contact"
        );
    }
    // The seed learnt of every joiner (each connected to it).
    assert_eq!(net.node(id(1)).graph().len(), 11);
    for from in 2..=12u8 {
        for to in (1..=12u8).filter(|t| *t != from) {
            assert!(find(&mut net, from, id(to)), "{from} finds {to}");
        }
    }
}

#[test]
fn sync_refreshes_buckets_farther_than_the_closest_neighbour() {
    let mut net = Net::new(common::t0());
    for i in 1..=6u8 {
        net.add(id(i), addr(i.into()), config());
    }
    for i in 2..=5u8 {
        assert_eq!(sync(&mut net, i, &seeds(&[1]), true), Ok(OpValue::Unit));
    }
    let before = net.now;
    assert_eq!(sync(&mut net, 6, &seeds(&[1]), true), Ok(OpValue::Unit));
    let me = id(6);
    let closest = net
        .node(me)
        .graph()
        .closest(&me, 1)
        .first()
        .map(|e| me.bucket_index(&e.node_id).unwrap())
        .unwrap();
    // Every bucket above the closest neighbour's was refreshed during the
    // sync: its next refresh is a full delay (45 min or more) after the sync began.
    for (key, record) in net.node(me).tasks() {
        if let TaskKey::RefreshBucket(b) = key {
            let refreshed = record.due_unix_ms >= before.unix_ms + 45 * 60 * 1000;
            if b > closest {
                assert!(
                    refreshed,
                    "bucket {b} above the closest ({closest}) was refreshed"
                );
            }
        }
    }
}

#[test]
fn some_seeds_down_is_fine() {
    let mut net = Net::new(common::t0());
    for i in 1..=3u8 {
        net.add(id(i), addr(i.into()), config());
    }
    net.set_offline(id(2), true);
    // 2 is offline and 9 does not exist.
    assert_eq!(
        sync(&mut net, 3, &seeds(&[2, 9, 1]), true),
        Ok(OpValue::Unit)
    );
    assert!(net.node(id(3)).graph().contains(&id(1)));
}

#[test]
fn all_seeds_down_lists_each_failure() {
    let mut net = Net::new(common::t0());
    for i in 1..=3u8 {
        net.add(id(i), addr(i.into()), config());
    }
    net.set_offline(id(1), true);
    net.set_offline(id(2), true);
    match sync(&mut net, 3, &seeds(&[1, 2, 9]), true) {
        Err(OpError::SeedsUnreachable(failures)) => {
            let mut named: Vec<NodeId> = failures.iter().map(|f| f.node_id).collect();
            named.sort();
            assert_eq!(named, vec![id(1), id(2), id(9)]);
            assert!(failures.iter().all(|f| f.reason == ConnectFailure::Timeout));
            let message = OpError::SeedsUnreachable(failures).to_string();
            assert!(message.contains(&id(9).to_string()), "{message}");
        }
        other => panic!("expected SeedsUnreachable, got {other:?}"),
    }
}

#[test]
fn an_empty_seed_list_is_an_error() {
    let mut net = Net::new(common::t0());
    net.add(id(1), addr(1), config());
    assert_eq!(
        sync(&mut net, 1, &SeedNodes::default(), true),
        Err(OpError::NoSeedNodes)
    );
    assert_eq!(
        sync(&mut net, 1, &SeedNodes::default(), false),
        Err(OpError::NoSeedNodes)
    );
}

#[test]
fn non_blocking_sync_schedules_one_task() {
    let mut net = Net::new(common::t0());
    for i in 1..=3u8 {
        net.add(id(i), addr(i.into()), config());
    }
    let op = net.call(id(3), |n, now| {
        n.sync_node_graph(now, &seeds(&[1]), None, false).unwrap()
    });
    let op2 = net.call(id(3), |n, now| {
        n.sync_node_graph(now, &seeds(&[2]), None, false).unwrap()
    });
    // Done as soon as the task is persisted; one task, the latest wins.
    assert_eq!(net.done(id(3), op), Some(Ok(OpValue::Unit)));
    assert_eq!(net.done(id(3), op2), Some(Ok(OpValue::Unit)));
    let syncs = net
        .node(id(3))
        .tasks()
        .filter(|(k, _)| *k == TaskKey::SyncNodeGraph)
        .count();
    assert_eq!(syncs, 1);
    assert!(
        net.node(id(3))
            .timer(Timer::Task(TaskKey::SyncNodeGraph))
            .is_some()
    );
    assert!(net.node(id(3)).graph().is_empty());
    for _ in 0..2000 {
        net.step();
    }
    // The task ran (with the latest seeds) and is gone.
    assert!(net.node(id(3)).graph().contains(&id(2)));
    assert!(
        net.node(id(3))
            .tasks()
            .all(|(k, _)| k != TaskKey::SyncNodeGraph)
    );
}
