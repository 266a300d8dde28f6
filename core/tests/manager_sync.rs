//! `sync_node_graph`: joining through seed nodes, with some and with all
//! seeds down, blocking and not.

mod common;

use std::time::Duration;

use common::{Net, addr, id};
use keynode_core::{
    Config, ConnectFailure, NodeAddress, NodeEvent, NodeId, OpError, OpValue, Output, SeedNodes,
    TaskKey, Timer,
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

#[test]
fn a_background_sync_whose_seeds_are_down_retries_with_backoff_until_it_joins() {
    let mut net = Net::new(common::t0());
    let mut joiner = config();
    joiner.sync_retry_initial_delay = Duration::from_secs(1);
    joiner.sync_retry_max_delay = Duration::from_secs(4);
    joiner.sync_retry_attempts = 5;
    net.add(id(1), addr(1), config());
    net.add(id(2), addr(2), joiner.clone());
    net.set_offline(id(1), true);
    let op = net.call(id(2), |n, now| {
        n.sync_node_graph(now, &seeds(&[1]), Some(Duration::from_secs(2)), false)
            .unwrap()
    });
    assert_eq!(net.done(id(2), op), Some(Ok(OpValue::Unit)));
    assert!(!net.node(id(2)).join_status().joined);

    // Four failures: each names the seed, and the next attempt waits 1, 2,
    // 4, 4 s (doubling, capped at the maximum).
    let mut failures: Vec<(u32, Option<Duration>, std::time::Instant)> = Vec::new();
    let mut seen = 0;
    for _ in 0..STEPS {
        if failures.len() == 4 {
            break;
        }
        net.step();
        let outputs = &net.peers[&id(2)].outputs;
        for output in &outputs[seen..] {
            if let Output::Event(NodeEvent::SyncFailed {
                error,
                attempt,
                retry_in,
            }) = output
            {
                match error {
                    OpError::SeedsUnreachable(seeds) => {
                        assert_eq!(seeds.len(), 1);
                        assert_eq!(seeds[0].node_id, id(1));
                    }
                    other => panic!("expected SeedsUnreachable, got {other:?}"),
                }
                failures.push((*attempt, *retry_in, net.now.mono));
            }
        }
        seen = outputs.len();
    }
    let schedule: Vec<(u32, Option<Duration>)> =
        failures.iter().map(|(a, r, _)| (*a, *r)).collect();
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(
        schedule,
        vec![(1, secs(1)), (2, secs(2)), (3, secs(4)), (4, secs(4))]
    );
    // Each attempt waited its delay, then its 2 s connection timeout.
    for pair in failures.windows(2) {
        let (_, retry_in, at) = pair[0];
        let (_, _, next) = pair[1];
        assert_eq!(
            next - at,
            retry_in.unwrap() + Duration::from_secs(2),
            "{failures:?}"
        );
    }
    let status = net.node(id(2)).join_status();
    assert!(!status.joined);
    assert_eq!(status.failed_attempts, 4);
    assert!(matches!(
        status.last_error,
        Some(OpError::SeedsUnreachable(_))
    ));
    assert_eq!(status.retry_in, secs(4));

    // The seed comes up: the fifth attempt joins by itself.
    net.set_offline(id(1), false);
    for _ in 0..STEPS {
        if net.node(id(2)).join_status().joined {
            break;
        }
        net.step();
    }
    let status = net.node(id(2)).join_status();
    assert!(status.joined, "{status:?}");
    assert_eq!(status.failed_attempts, 0);
    assert_eq!(status.last_error, None);
    assert!(net.node(id(2)).graph().contains(&id(1)));
    assert!(
        net.node(id(2))
            .tasks()
            .all(|(k, _)| k != TaskKey::SyncNodeGraph),
        "no retry left once joined"
    );
}

#[test]
fn a_background_sync_gives_up_after_its_attempts() {
    let mut net = Net::new(common::t0());
    let mut joiner = config();
    joiner.sync_retry_initial_delay = Duration::from_millis(100);
    joiner.sync_retry_max_delay = Duration::from_millis(100);
    joiner.sync_retry_attempts = 2;
    net.add(id(2), addr(2), joiner);
    let _op = net.call(id(2), |n, now| {
        n.sync_node_graph(now, &seeds(&[1]), Some(Duration::from_secs(1)), false)
            .unwrap()
    });
    for _ in 0..STEPS {
        if !net.step() {
            break;
        }
    }
    let attempts: Vec<(u32, Option<Duration>)> = net.peers[&id(2)]
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(NodeEvent::SyncFailed {
                attempt, retry_in, ..
            }) => Some((*attempt, *retry_in)),
            _ => None,
        })
        .collect();
    let ms = Some(Duration::from_millis(100));
    // The first try and two retries; the last says none follows.
    assert_eq!(attempts, vec![(1, ms), (2, ms), (3, None)]);
    let status = net.node(id(2)).join_status();
    assert!(!status.joined);
    assert_eq!(status.retry_in, None);
    assert!(
        net.node(id(2))
            .tasks()
            .all(|(k, _)| k != TaskKey::SyncNodeGraph)
    );
}
