mod common;

// The node manager's background work and lifecycle, driven by scripted
// events: refresh jitter, persisted tasks across a restart,
// `update_refresh_bucket_delay`, the periodic connection check,
// `acquire_connection` with leases and idle TTLs, start and stop, and
// `reset_buckets` after a key renewal.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::{ModelStore, Script, addr, connects, id, seed};
use keynode_core::wire::{Request, Response};
use keynode_core::{
    ApiError, AttemptId, BucketIndex, Command, Config, ConnId, ConnectFailure, ConnectionErrorCode,
    ContactMode, Event, FindOptions, LeaseId, MdnsConfig, NodeAddress, NodeAddressScopes,
    NodeContactAddressData, NodeEvent, NodeGraph, NodeGraphSpace, NodeId, NodeManager, Now,
    OpError, OpId, OpValue, Output, RequestId, StoreOp, TaskKey, TaskRecord, Timer,
};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

// ----- helpers -----

/// No background refresh or connection check: the test drives everything.
fn quiet_config() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

fn data(connected_time: u64) -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap()
}

/// A NodeId in bucket `bucket` of `own`'s table; `n` varies the bits below
/// the bucket's bit (as far as there are any in the lowest byte).
fn in_bucket(own: NodeId, bucket: u8, n: u8) -> NodeId {
    let mut bytes = *own.as_bytes();
    let b = usize::from(bucket);
    bytes[31 - b / 8] ^= 1 << (b % 8);
    for i in 0..b.min(8) {
        if (n >> i) & 1 == 1 {
            bytes[31] ^= 1 << i;
        }
    }
    let node = NodeId::from_bytes(bytes);
    assert_eq!(own.bucket_index(&node), Some(BucketIndex::new(bucket)));
    node
}

fn task_map(node: &NodeManager) -> BTreeMap<TaskKey, TaskRecord> {
    node.tasks().collect()
}

/// The due times of the refresh tasks, by bucket.
fn refresh_dues(tasks: &BTreeMap<TaskKey, TaskRecord>) -> BTreeMap<BucketIndex, u64> {
    tasks
        .iter()
        .filter_map(|(k, r)| match k {
            TaskKey::RefreshBucket(b) => Some((*b, r.due_unix_ms)),
            _ => None,
        })
        .collect()
}

/// The monotonic instant a task due at `due_unix_ms` should fire at.
fn mono_due(now: Now, due_unix_ms: u64) -> std::time::Instant {
    now.mono + Duration::from_millis(due_unix_ms.saturating_sub(now.unix_ms))
}

fn closes(cmds: &[Command]) -> Vec<(ConnId, ConnectionErrorCode)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::CloseConnection { conn, code } => Some((*conn, *code)),
            _ => None,
        })
        .collect()
}

fn closest_requests(cmds: &[Command]) -> Vec<(ConnId, RequestId, NodeId)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::SendRequest {
                conn,
                request,
                body: Request::ClosestNodes { target },
                ..
            } => Some((*conn, *request, *target)),
            _ => None,
        })
        .collect()
}

fn has_event(s: &Script, event: &NodeEvent) -> bool {
    s.outputs
        .iter()
        .any(|o| matches!(o, Output::Event(e) if e == event))
}

/// Commits the batches a script held back.
fn commit_held(s: &mut Script) {
    s.hold_store = false;
    for batch in std::mem::take(&mut s.held) {
        s.store.apply(&batch.ops);
        s.node.handle(s.now, Event::StoreCommitted(batch.id));
    }
    s.drain();
}

/// A new manager for `own` on `old`'s store, its snapshot loaded, not started.
fn restart(old: &Script, config: Config, own: NodeId, now: Now) -> Script {
    let node = NodeManager::new(config, own, now, seed(2)).expect("valid config");
    let mut s = Script {
        node,
        now,
        store: old.store.clone(),
        outputs: Vec::new(),
        hold_store: false,
        held: Vec::new(),
        log: Vec::new(),
        observations: Vec::new(),
    };
    let snapshot = s.store.snapshot();
    s.handle(Event::SnapshotLoaded(snapshot));
    s
}

fn start(s: &mut Script) -> Vec<Command> {
    let op = s.node.start(s.now).expect("start");
    let cmds = s.drain();
    assert_eq!(
        s.done(op),
        Some(Ok(OpValue::Unit)),
        "start ends when committed"
    );
    cmds
}

fn set_contact(s: &mut Script, node: NodeId, at: SocketAddr, connected_time: u64) {
    let op = s
        .node
        .set_node(
            s.now,
            node,
            NodeAddress::from(at),
            data(connected_time),
            false,
            false,
            None,
        )
        .unwrap();
    s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
}

fn lease_of(result: Option<Result<OpValue, OpError>>) -> (LeaseId, ConnId, NodeId) {
    match result {
        Some(Ok(OpValue::Connection { lease, conn, peer })) => (lease, conn, peer),
        other => panic!("expected a connection, got {other:?}"),
    }
}

// ----- 1. refresh jitter -----

#[test]
fn every_bucket_gets_one_jittered_refresh_task_at_start() {
    let s = Script::started(common::t0(), Config::default(), id(1));
    let start = s.now;
    let tasks = task_map(&s.node);
    let dues = refresh_dues(&tasks);
    assert_eq!(dues.len(), 256, "one refresh task per bucket");
    assert!(BucketIndex::all().all(|b| dues.contains_key(&b)));
    assert_eq!(tasks.len(), 257, "256 refreshes and the connection check");

    for (bucket, due) in &dues {
        let after = Duration::from_millis(due - start.unix_ms);
        assert!(
            (45 * MINUTE..=75 * MINUTE).contains(&after),
            "bucket {bucket} refresh due after {after:?}, outside 45..=75 min"
        );
        assert_eq!(
            s.node.timer(Timer::Task(TaskKey::RefreshBucket(*bucket))),
            Some(mono_due(start, *due)),
            "the timer of bucket {bucket} matches its persisted due time"
        );
    }
    let distinct: BTreeSet<u64> = dues.values().copied().collect();
    assert!(distinct.len() > 200, "jitter spreads the due times");
    let spread = distinct.last().unwrap() - distinct.first().unwrap();
    assert!(
        spread > ms(20 * MINUTE),
        "jitter uses its range: spread {spread} ms"
    );

    // The connection check is due one retry delay after start.
    assert_eq!(
        tasks[&TaskKey::CheckConnections].due_unix_ms,
        start.unix_ms + 45_000
    );
    assert_eq!(
        s.node.timer(Timer::Task(TaskKey::CheckConnections)),
        Some(start.mono + 45 * SECOND)
    );
    // Everything is persisted.
    assert_eq!(s.store.tasks, tasks);
}

#[test]
fn jitter_factor_sets_the_width_of_the_window() {
    // No jitter: exactly the delay.
    let mut config = Config::default();
    config.refresh_bucket_delay_jitter = 0.0;
    let s = Script::started(common::t0(), config, id(1));
    let dues = refresh_dues(&task_map(&s.node));
    assert_eq!(dues.len(), 256);
    assert!(dues.values().all(|d| *d == s.now.unix_ms + ms(HOUR)));

    // Full jitter: 30 to 90 minutes.
    let mut config = Config::default();
    config.refresh_bucket_delay_jitter = 1.0;
    let s = Script::started(common::t0(), config, id(1));
    let dues = refresh_dues(&task_map(&s.node));
    assert_eq!(dues.len(), 256);
    for due in dues.values() {
        let after = due - s.now.unix_ms;
        assert!((ms(30 * MINUTE)..=ms(90 * MINUTE)).contains(&after));
    }
    assert!(dues.values().any(|d| d - s.now.unix_ms < ms(45 * MINUTE)));
    assert!(dues.values().any(|d| d - s.now.unix_ms > ms(75 * MINUTE)));
}

// ----- 2. tasks across a restart -----

#[test]
fn tasks_resume_after_a_restart_without_duplicates_or_rescheduling() {
    let mut s = Script::started(common::t0(), Config::default(), id(1));
    let t0 = s.now;
    s.advance(10 * MINUTE);
    let persisted = s.store.tasks.clone();
    assert_eq!(
        persisted,
        task_map(&s.node),
        "the store has what memory has"
    );
    s.node.stop(s.now).unwrap();
    s.drain();
    assert_eq!(
        s.store.tasks, persisted,
        "stop keeps the tasks in the store"
    );

    // Restart 50 minutes after the first start: the connection check and the
    // refreshes due in 45..50 min are overdue, the others are not.
    let now = t0.advanced(50 * MINUTE);
    let mut r = restart(&s, Config::default(), id(1), now);
    start(&mut r);
    let tasks = task_map(&r.node);
    assert_eq!(tasks, persisted, "same tasks, same due times, nothing new");
    assert_eq!(refresh_dues(&tasks).len(), 256);
    assert_eq!(tasks.len(), 257, "256 refreshes + 1 connection check");
    assert!(
        r.log.iter().all(|c| !matches!(
            c,
            Command::Store(b) if b.ops.iter().any(|op| matches!(op, StoreOp::PutTask { .. }))
        )),
        "start rewrites no persisted task"
    );
    for (key, record) in &tasks {
        assert_eq!(
            r.node.timer(Timer::Task(*key)),
            Some(mono_due(now, record.due_unix_ms)),
            "{key:?} resumes at its persisted due time"
        );
    }
    let overdue: BTreeSet<TaskKey> = tasks
        .iter()
        .filter(|(_, r)| r.due_unix_ms <= now.unix_ms)
        .map(|(k, _)| *k)
        .collect();
    assert!(overdue.contains(&TaskKey::CheckConnections));
    assert!(
        overdue.len() > 1 && overdue.len() < 257,
        "some refreshes are overdue, some are not: {}",
        overdue.len()
    );
    assert_eq!(
        r.node.poll_timeout().map(|(at, _)| at),
        Some(now.mono),
        "overdue tasks are due at once"
    );

    // Right after start, the overdue tasks run and reschedule themselves;
    // the others keep their time.
    r.advance(Duration::ZERO);
    let after = task_map(&r.node);
    assert_eq!(after.len(), 257);
    assert_eq!(refresh_dues(&after).len(), 256);
    for (key, record) in &after {
        if overdue.contains(key) {
            let window = match key {
                TaskKey::CheckConnections => 45 * SECOND..=45 * SECOND,
                _ => 45 * MINUTE..=75 * MINUTE,
            };
            let next = Duration::from_millis(record.due_unix_ms - now.unix_ms);
            assert!(
                window.contains(&next),
                "{key:?} ran and is next due in {next:?}"
            );
        } else {
            assert_eq!(record, &persisted[key], "{key:?} did not run");
        }
    }
    assert_eq!(r.store.tasks, after);
    assert_eq!(r.node.operations_in_flight(), 0);
}

#[test]
fn zero_refresh_delay_disables_refresh_tasks_and_deletes_persisted_ones() {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    let s = Script::started(common::t0(), config.clone(), id(1));
    let tasks = task_map(&s.node);
    assert!(refresh_dues(&tasks).is_empty());
    assert!(tasks.contains_key(&TaskKey::CheckConnections));
    assert!(refresh_dues(&s.store.tasks).is_empty());
    assert_eq!(
        s.node
            .timer(Timer::Task(TaskKey::RefreshBucket(BucketIndex::new(7)))),
        None
    );

    // Persisted refresh tasks of an earlier run are deleted on start.
    let mut old = Script::started(common::t0(), Config::default(), id(1));
    old.node.stop(old.now).unwrap();
    old.drain();
    assert_eq!(refresh_dues(&old.store.tasks).len(), 256);
    let mut r = restart(&old, config, id(1), old.now.advanced(MINUTE));
    start(&mut r);
    assert!(refresh_dues(&task_map(&r.node)).is_empty());
    assert!(
        refresh_dues(&r.store.tasks).is_empty(),
        "deleted from the store"
    );
    assert!(BucketIndex::all().all(|b| {
        r.node
            .timer(Timer::Task(TaskKey::RefreshBucket(b)))
            .is_none()
    }));
    // Nothing refreshes, ever.
    let cmds = r.advance(3 * HOUR);
    assert!(connects(&cmds).is_empty());
    assert!(refresh_dues(&r.store.tasks).is_empty());
}

#[test]
fn zero_retry_delay_disables_the_connection_check() {
    let mut config = Config::default();
    config.retry_connections_delay = Duration::ZERO;
    let mut s = Script::started(common::t0(), config.clone(), id(1));
    assert!(!task_map(&s.node).contains_key(&TaskKey::CheckConnections));
    assert!(!s.store.tasks.contains_key(&TaskKey::CheckConnections));
    assert_eq!(s.node.timer(Timer::Task(TaskKey::CheckConnections)), None);
    set_contact(&mut s, id(2), addr(2), 1);
    for _ in 0..5 {
        let cmds = s.advance(45 * SECOND);
        assert!(connects(&cmds).is_empty(), "no connection check runs");
    }

    // A persisted connection check is deleted on start.
    let mut old = Script::started(common::t0(), Config::default(), id(1));
    old.node.stop(old.now).unwrap();
    old.drain();
    assert!(old.store.tasks.contains_key(&TaskKey::CheckConnections));
    let mut r = restart(&old, config, id(1), old.now.advanced(MINUTE));
    start(&mut r);
    assert!(!r.store.tasks.contains_key(&TaskKey::CheckConnections));
    assert!(!task_map(&r.node).contains_key(&TaskKey::CheckConnections));
    assert_eq!(refresh_dues(&r.store.tasks).len(), 256, "refreshes stay");
}

#[test]
fn contacts_of_a_fresh_node_survive_a_restart() {
    let mut s = Script::started(common::t0(), quiet_config(), id(1));
    set_contact(&mut s, id(2), addr(2), 1);
    set_contact(&mut s, id(0x81), addr(3), 2);
    s.node.stop(s.now).unwrap();
    s.drain();
    let mut r = restart(&s, quiet_config(), id(1), s.now.advanced(MINUTE));
    start(&mut r);
    assert!(r.node.graph().contains(&id(2)), "contact lost on restart");
    assert!(r.node.graph().contains(&id(0x81)));
    assert_eq!(r.node.graph().len(), 2);
}

// ----- 3. update_refresh_bucket_delay -----

#[test]
fn lazy_update_moves_the_one_task_and_is_done_after_commit() {
    let mut s = Script::started(common::t0(), Config::default(), id(1));
    let bucket = BucketIndex::new(200);
    let key = TaskKey::RefreshBucket(bucket);
    let before = task_map(&s.node);

    s.hold_store = true;
    let op = s
        .node
        .update_refresh_bucket_delay(s.now, bucket, Some(10 * MINUTE), true)
        .unwrap();
    s.drain();
    assert_eq!(s.done(op), None, "not done before the batch commits");
    assert_eq!(s.held.len(), 1);
    let puts: Vec<&StoreOp> = s.held[0].ops.iter().collect();
    assert!(
        matches!(puts.as_slice(), [StoreOp::PutTask { key: k, .. }] if *k == key),
        "one PutTask for the bucket: {puts:?}"
    );
    let tasks = task_map(&s.node);
    assert_eq!(refresh_dues(&tasks).len(), 256, "moved, not added");
    let due = tasks[&key].due_unix_ms;
    let after = Duration::from_millis(due - s.now.unix_ms);
    assert!(
        (7 * MINUTE + 30 * SECOND..=12 * MINUTE + 30 * SECOND).contains(&after),
        "due after {after:?}: 10 min with jitter"
    );
    assert_eq!(s.node.timer(Timer::Task(key)), Some(mono_due(s.now, due)));
    for (k, r) in &before {
        if *k != key {
            assert_eq!(&tasks[k], r, "other tasks are untouched");
        }
    }

    commit_held(&mut s);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(s.done_count(op), 1);
    assert_eq!(s.store.tasks[&key].due_unix_ms, due);
    assert_eq!(refresh_dues(&s.store.tasks).len(), 256);

    // Again, with the configured delay: still one task.
    let op = s
        .node
        .update_refresh_bucket_delay(s.now, bucket, None, true)
        .unwrap();
    s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(refresh_dues(&task_map(&s.node)).len(), 256);
    let after = Duration::from_millis(s.store.tasks[&key].due_unix_ms - s.now.unix_ms);
    assert!((45 * MINUTE..=75 * MINUTE).contains(&after));
}

#[test]
fn eager_update_is_done_only_after_that_refresh_ran() {
    let mut s = Script::started(common::t0(), Config::default(), id(1));
    let bucket = BucketIndex::new(17);
    let key = TaskKey::RefreshBucket(bucket);
    let op = s
        .node
        .update_refresh_bucket_delay(s.now, bucket, Some(10 * MINUTE), false)
        .unwrap();
    s.drain();
    assert_eq!(s.done(op), None, "committed, but the refresh has not run");
    let tasks = task_map(&s.node);
    assert_eq!(refresh_dues(&tasks).len(), 256);
    let due = tasks[&key].due_unix_ms;
    let delay = Duration::from_millis(due - s.now.unix_ms);
    assert!((7 * MINUTE + 30 * SECOND..=12 * MINUTE + 30 * SECOND).contains(&delay));
    assert_eq!(s.store.tasks[&key].due_unix_ms, due);

    s.advance(delay - MS);
    assert_eq!(s.done(op), None, "still waiting just before the refresh");
    assert_eq!(task_map(&s.node)[&key].due_unix_ms, due);

    // The refresh runs; its lookup (empty graph) ends at once, it
    // reschedules the bucket and the update is done.
    s.advance(MS);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(s.done_count(op), 1);
    let tasks = task_map(&s.node);
    assert_eq!(refresh_dues(&tasks).len(), 256);
    let next = Duration::from_millis(tasks[&key].due_unix_ms - s.now.unix_ms);
    assert!(
        (45 * MINUTE..=75 * MINUTE).contains(&next),
        "the refresh rescheduled itself: {next:?}"
    );
    assert_eq!(s.store.tasks, tasks);
    assert_eq!(s.node.operations_in_flight(), 0);
}

#[test]
fn touching_a_bucket_with_an_eager_waiter_does_not_refresh_it_at_once() {
    let own = id(1);
    let mut s = Script::started(common::t0(), Config::default(), own);
    let contact = in_bucket(own, 200, 1);
    let bucket = BucketIndex::new(200);
    let key = TaskKey::RefreshBucket(bucket);
    let op = s
        .node
        .update_refresh_bucket_delay(s.now, bucket, Some(10 * MINUTE), false)
        .unwrap();
    s.drain();
    assert_eq!(s.done(op), None);

    // A contact is set in that bucket: the bucket was just touched, so its
    // refresh moves back (never forward to now) and no lookup starts.
    set_contact(&mut s, contact, addr(2), 1);
    let due = task_map(&s.node)[&key].due_unix_ms;
    assert!(
        due >= s.now.unix_ms + ms(7 * MINUTE + 30 * SECOND),
        "the refresh of bucket 200 was moved to {} ms from now",
        due.saturating_sub(s.now.unix_ms)
    );
    let cmds = s.advance(Duration::ZERO);
    assert!(connects(&cmds).is_empty(), "no refresh lookup at once");
    assert_eq!(s.done(op), None, "the eager update still waits");
    assert_eq!(refresh_dues(&task_map(&s.node)).len(), 256);

    // It is done once the (moved) refresh runs.
    let cmds = s.advance(Duration::from_millis(due - s.now.unix_ms));
    for (attempt, _, _) in connects(&cmds) {
        s.handle(Event::ConnectFailed {
            attempt,
            failure: ConnectFailure::Timeout,
        });
    }
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
}

// ----- 4. the connection check -----

#[test]
fn connection_check_looks_up_own_id_and_far_bucket_every_period() {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    let own = id(1);
    let peer = id(2);
    let mut s = Script::started(common::t0(), config, own);
    set_contact(&mut s, peer, addr(2), 1);
    let mut far_targets = BTreeSet::new();
    let mut next_conn = 100;

    for period in 1..=3 {
        let cmds = s.advance(45 * SECOND - MS);
        assert!(connects(&cmds).is_empty(), "period {period}: not yet");
        let cmds = s.advance(MS);
        let dials = connects(&cmds);
        assert_eq!(dials.len(), 2, "period {period}: one dial per lookup");
        assert!(dials.iter().all(|(_, n, a)| *n == peer && *a == addr(2)));
        // It rescheduled itself.
        let tasks = task_map(&s.node);
        assert_eq!(
            tasks[&TaskKey::CheckConnections].due_unix_ms,
            s.now.unix_ms + 45_000
        );
        assert_eq!(
            s.node.timer(Timer::Task(TaskKey::CheckConnections)),
            Some(s.now.mono + 45 * SECOND)
        );
        assert_eq!(s.store.tasks, tasks);

        // The peer answers: each lookup asks it for its target.
        let mut requests = Vec::new();
        let mut conns = Vec::new();
        for (attempt, _, address) in dials {
            let conn = ConnId(next_conn);
            next_conn += 1;
            conns.push(conn);
            let cmds = s.handle(Event::ConnectionUp {
                conn,
                peer,
                remote: address,
                attempt: Some(attempt),
            });
            requests.extend(closest_requests(&cmds));
        }
        assert_eq!(requests.len(), 2, "period {period}: {requests:?}");
        let targets: Vec<NodeId> = requests.iter().map(|(_, _, t)| *t).collect();
        assert!(targets.contains(&own), "one lookup is of the own NodeId");
        let far: Vec<NodeId> = targets.iter().copied().filter(|t| *t != own).collect();
        assert_eq!(far.len(), 1);
        assert_eq!(own.bucket_index(&far[0]), Some(BucketIndex::FARTHEST));
        far_targets.insert(far[0]);
        for (_, request, _) in requests {
            s.handle(Event::ResponseReceived {
                request,
                result: Ok(Response::ClosestNodes {
                    active: Vec::new(),
                    contacts: Vec::new(),
                }),
            });
        }
        assert_eq!(s.node.operations_in_flight(), 0, "the check ended");
        for conn in conns {
            s.handle(Event::ConnectionClosed { conn });
        }
    }
    assert_eq!(far_targets.len(), 3, "a random far target each period");
}

#[test]
fn connection_check_runs_again_after_failed_dials() {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    let mut s = Script::started(common::t0(), config, id(1));
    set_contact(&mut s, id(2), addr(2), 1);
    for period in 1..=3 {
        let cmds = s.advance(45 * SECOND);
        let dials = connects(&cmds);
        assert_eq!(dials.len(), 2, "period {period}");
        for (attempt, _, _) in dials {
            s.handle(Event::ConnectFailed {
                attempt,
                failure: ConnectFailure::Timeout,
            });
        }
        assert_eq!(s.node.operations_in_flight(), 0);
    }
}

// ----- 5. acquire_connection and release -----

#[test]
fn existing_connection_is_leased_and_idles_out_only_when_released() {
    let own = id(1);
    let peer = in_bucket(own, 255, 1);
    let mut s = Script::started(common::t0(), quiet_config(), own);
    let conn = ConnId(7);
    s.handle(Event::ConnectionUp {
        conn,
        peer,
        remote: addr(9),
        attempt: None,
    });
    assert_eq!(s.node.connection_leases(conn), Some(0));
    assert_eq!(
        s.node.timer(Timer::ConnIdle(conn)),
        Some(s.now.mono + 60 * SECOND)
    );

    let a = s.node.acquire_connection(s.now, peer, None).unwrap();
    let cmds = s.drain();
    assert!(connects(&cmds).is_empty(), "no dial for a connected node");
    let (lease1, c, p) = lease_of(s.done(a));
    assert_eq!((c, p), (conn, peer));
    assert_eq!(s.node.connection_leases(conn), Some(1));
    assert_eq!(s.node.timer(Timer::ConnIdle(conn)), None);

    let b = s.node.acquire_connection(s.now, peer, None).unwrap();
    s.drain();
    let (lease2, c, _) = lease_of(s.done(b));
    assert_eq!(c, conn);
    assert_ne!(lease1, lease2);
    assert_eq!(s.node.connection_leases(conn), Some(2));

    // Leased: never idles out.
    let cmds = s.advance(3 * HOUR);
    assert!(closes(&cmds).is_empty());
    s.handle(Event::ConnectionReleased { lease: lease1 });
    assert_eq!(s.node.connection_leases(conn), Some(1));
    assert_eq!(s.node.timer(Timer::ConnIdle(conn)), None, "still leased");
    let cmds = s.advance(3 * HOUR);
    assert!(closes(&cmds).is_empty(), "one lease left");
    assert_eq!(s.node.connections().len(), 1);

    // Released: closes after the idle TTL (bucket 255: 60 s exactly).
    s.handle(Event::ConnectionReleased { lease: lease2 });
    assert_eq!(s.node.connection_leases(conn), Some(0));
    assert_eq!(
        s.node.timer(Timer::ConnIdle(conn)),
        Some(s.now.mono + 60 * SECOND)
    );
    let cmds = s.advance(60 * SECOND - MS);
    assert!(closes(&cmds).is_empty());
    let cmds = s.advance(MS);
    assert_eq!(
        closes(&cmds),
        vec![(conn, ConnectionErrorCode::IdleTimeout)]
    );
    assert!(s.node.connections().is_empty());
    assert_eq!(s.node.connection_leases(conn), None);

    // A lease released twice is a stale event, nothing else.
    let stale = s.node.stats().stale_events;
    let cmds = s.handle(Event::ConnectionReleased { lease: lease2 });
    assert!(cmds.is_empty());
    assert_eq!(s.node.stats().stale_events, stale + 1);
}

#[test]
fn idle_ttl_is_longer_for_the_primary_connection_of_a_closer_node() {
    let own = id(1);
    let bonus = Config::default().connection_primary_ttl_bonus;
    let ttl = |bucket: u8| 60 * SECOND + bonus.mul_f64(1.0 - f64::from(bucket) / 255.0);

    for bucket in [0u8, 100, 254, 255] {
        let mut s = Script::started(common::t0(), quiet_config(), own);
        let peer = in_bucket(own, bucket, 3);
        let t = s.now;
        s.handle(Event::ConnectionUp {
            conn: ConnId(1),
            peer,
            remote: addr(1),
            attempt: None,
        });
        s.handle(Event::ConnectionUp {
            conn: ConnId(2),
            peer,
            remote: addr(2),
            attempt: None,
        });
        let primary = ttl(bucket);
        if bucket == 0 {
            assert_eq!(primary, 60 * SECOND + 2 * HOUR);
        }
        if bucket < 255 {
            assert!(primary > 60 * SECOND, "bucket {bucket}: longer than 60 s");
        }
        assert_eq!(
            s.node.timer(Timer::ConnIdle(ConnId(1))),
            Some(t.mono + primary),
            "bucket {bucket}: primary (smaller ConnId)"
        );
        assert_eq!(
            s.node.timer(Timer::ConnIdle(ConnId(2))),
            Some(t.mono + 60 * SECOND),
            "bucket {bucket}: non-primary"
        );

        let cmds = s.advance(60 * SECOND - MS);
        assert!(closes(&cmds).is_empty());
        let cmds = s.advance(MS);
        let mut closed = vec![(ConnId(2), ConnectionErrorCode::IdleTimeout)];
        if bucket == 255 {
            // No bonus for the farthest bucket: both go at 60 s.
            closed.insert(0, (ConnId(1), ConnectionErrorCode::IdleTimeout));
        }
        assert_eq!(
            closes(&cmds),
            closed,
            "bucket {bucket}: the non-primary one goes after 60 s"
        );
        if primary > 60 * SECOND {
            let left = primary - 60 * SECOND;
            let cmds = s.advance(left - MS);
            assert!(closes(&cmds).is_empty(), "bucket {bucket}");
            let cmds = s.advance(MS);
            assert_eq!(
                closes(&cmds),
                vec![(ConnId(1), ConnectionErrorCode::IdleTimeout)],
                "bucket {bucket}: the primary one after {primary:?}"
            );
        }
        assert!(s.node.connections().is_empty());
    }
    // Closer buckets keep their primary connection longer.
    assert!(ttl(0) > ttl(100) && ttl(100) > ttl(254) && ttl(254) > ttl(255));
    assert_eq!(ttl(255), 60 * SECOND);
}

#[test]
fn remaining_connection_gets_the_primary_ttl_when_the_primary_closes() {
    let own = id(1);
    let peer = in_bucket(own, 0, 0);
    let mut s = Script::started(common::t0(), quiet_config(), own);
    for (conn, at) in [(ConnId(1), addr(1)), (ConnId(2), addr(2))] {
        s.handle(Event::ConnectionUp {
            conn,
            peer,
            remote: at,
            attempt: None,
        });
    }
    let t = s.now;
    assert_eq!(
        s.node.timer(Timer::ConnIdle(ConnId(2))),
        Some(t.mono + 60 * SECOND)
    );
    // The primary closes (the peer closed it); ConnId(2) is now the primary
    // connection of a bucket-0 node: 60 s + 2 h since its last use.
    s.handle(Event::ConnectionClosed { conn: ConnId(1) });
    assert_eq!(
        s.node.timer(Timer::ConnIdle(ConnId(2))),
        Some(t.mono + 60 * SECOND + 2 * HOUR)
    );
    let cmds = s.advance(MINUTE + MS);
    assert!(
        closes(&cmds).is_empty(),
        "the only connection to a close node"
    );
    assert_eq!(s.node.connections().len(), 1);
}

#[test]
fn acquire_refuses_own_id_and_fails_for_an_unknown_node() {
    let own = id(1);
    let mut s = Script::started(common::t0(), quiet_config(), own);
    assert_eq!(
        s.node.acquire_connection(s.now, own, None),
        Err(ApiError::OwnNodeId(own))
    );
    let unknown = id(9);
    let op = s.node.acquire_connection(s.now, unknown, None).unwrap();
    let cmds = s.drain();
    assert!(connects(&cmds).is_empty());
    assert_eq!(s.done(op), Some(Err(OpError::NodeNotFound(unknown))));
    assert_eq!(s.done_count(op), 1);
    assert_eq!(s.node.operations_in_flight(), 0);
}

#[test]
fn acquire_connects_through_a_lookup_and_leases_the_new_connection() {
    let own = id(1);
    let peer = id(2);
    let mut s = Script::started(common::t0(), quiet_config(), own);
    set_contact(&mut s, peer, addr(2), 1);
    let op = s.node.acquire_connection(s.now, peer, None).unwrap();
    let cmds = s.drain();
    let dials = connects(&cmds);
    assert_eq!(dials.len(), 1);
    assert_eq!(s.done(op), None);
    let (attempt, node, address) = dials[0];
    assert_eq!((node, address), (peer, addr(2)));
    s.handle(Event::ConnectionUp {
        conn: ConnId(3),
        peer,
        remote: address,
        attempt: Some(attempt),
    });
    let (lease, conn, p) = lease_of(s.done(op));
    assert_eq!((conn, p), (ConnId(3), peer));
    assert_eq!(s.node.connection_leases(conn), Some(1));
    let cmds = s.advance(3 * HOUR);
    assert!(closes(&cmds).is_empty());
    s.handle(Event::ConnectionReleased { lease });
    let ttl = 60 * SECOND
        + Config::default()
            .connection_primary_ttl_bonus
            .mul_f64(1.0 - f64::from(own.bucket_index(&peer).unwrap().get()) / 255.0);
    assert_eq!(s.node.timer(Timer::ConnIdle(conn)), Some(s.now.mono + ttl));
}

// ----- 6. start and stop -----

#[test]
fn calls_before_start_are_refused_and_start_twice_is_refused() {
    let own = id(1);
    let mut s = Script::new(common::t0(), Config::default(), own);
    let now = s.now;
    let n = &mut s.node;
    let b = BucketIndex::new(3);
    assert_eq!(
        n.acquire_connection(now, id(2), None),
        Err(ApiError::NotRunning)
    );
    assert_eq!(
        n.find_node(now, id(2), FindOptions::default()),
        Err(ApiError::NotRunning)
    );
    assert_eq!(
        n.set_node(
            now,
            id(2),
            NodeAddress::from(addr(2)),
            data(1),
            false,
            false,
            None
        ),
        Err(ApiError::NotRunning)
    );
    assert_eq!(n.refresh_bucket(now, b, None), Err(ApiError::NotRunning));
    assert_eq!(
        n.update_refresh_bucket_delay(now, b, None, true),
        Err(ApiError::NotRunning)
    );
    assert_eq!(n.reset_buckets(now, id(5)), Err(ApiError::NotRunning));
    assert_eq!(
        n.garbage_collect_bucket(now, b, None),
        Err(ApiError::NotRunning)
    );
    assert_eq!(n.stop(now), Err(ApiError::NotRunning));
    assert!(!n.is_running());
    assert_eq!(n.poll_timeout(), None);
    assert!(s.drain().is_empty(), "refused calls emit nothing");

    let op = s.node.start(s.now).unwrap();
    s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(s.node.is_running());
    assert!(s.node.poll_timeout().is_some());
    assert_eq!(s.node.start(s.now), Err(ApiError::AlreadyRunning));
    assert!(s.drain().is_empty());
    assert_eq!(
        task_map(&s.node).len(),
        257,
        "the refused start added nothing"
    );
}

#[test]
fn stop_cancels_everything_once_closes_connections_and_goes_quiet() {
    let own = id(1);
    let mut config = Config::default();
    config.mdns = Some(MdnsConfig::default());
    let mut s = Script::new(common::t0(), config, own);
    let op = s.node.start(s.now).unwrap();
    let cmds = s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(cmds.contains(&Command::MdnsAnnounce {
        node_id: own,
        groups: MdnsConfig::default().groups,
        port: 64023,
    }));

    let contact = id(2);
    set_contact(&mut s, contact, addr(2), 1);
    for (conn, peer) in [(ConnId(5), id(3)), (ConnId(8), id(10))] {
        s.handle(Event::ConnectionUp {
            conn,
            peer,
            remote: addr(peer.as_bytes()[0].into()),
            attempt: None,
        });
    }
    let now = s.now;
    let mut ops: Vec<OpId> = vec![
        s.node
            .find_node(now, contact, FindOptions::default())
            .unwrap(),
        s.node.acquire_connection(now, id(4), None).unwrap(),
        s.node
            .update_refresh_bucket_delay(now, BucketIndex::new(9), None, false)
            .unwrap(),
        s.node
            .refresh_bucket(now, own.bucket_index(&contact).unwrap(), None)
            .unwrap(),
        s.node.query_mdns(now, id(6), None).unwrap(),
    ];
    // A lease handed out and not released.
    let lease_op = s.node.acquire_connection(now, id(3), None).unwrap();
    let before = s.drain();
    let attempts: Vec<AttemptId> = connects(&before).iter().map(|(a, _, _)| *a).collect();
    assert!(!attempts.is_empty());
    let (lease, _, _) = lease_of(s.done(lease_op));
    for op in &ops {
        assert_eq!(s.done(*op), None, "{op} is in flight");
    }

    s.node.stop(s.now).unwrap();
    let cmds = s.drain();
    for op in &ops {
        assert_eq!(s.done(*op), Some(Err(OpError::Cancelled)), "{op}");
        assert_eq!(s.done_count(*op), 1, "{op} ends exactly once");
    }
    assert_eq!(
        closes(&cmds),
        vec![
            (ConnId(5), ConnectionErrorCode::NodeStopping),
            (ConnId(8), ConnectionErrorCode::NodeStopping)
        ]
    );
    assert!(cmds.contains(&Command::MdnsStop));
    // Every mDNS query still open is ended.
    let queries: BTreeSet<_> = before
        .iter()
        .filter_map(|c| match c {
            Command::MdnsQuery { query, .. } => Some(*query),
            _ => None,
        })
        .collect();
    let ended: BTreeSet<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::MdnsQueryEnd { query } => Some(*query),
            _ => None,
        })
        .collect();
    assert!(!queries.is_empty());
    assert_eq!(ended, queries);
    assert_eq!(
        s.log.last(),
        Some(&Command::Output(Output::Event(NodeEvent::Stopped))),
        "Stopped is the last thing emitted"
    );
    assert!(!s.node.is_running());
    assert_eq!(s.node.poll_timeout(), None);
    assert_eq!(s.node.operations_in_flight(), 0);

    // Afterwards nothing is emitted, whatever comes in.
    let emitted = s.log.len();
    for attempt in attempts {
        s.handle(Event::ConnectFailed {
            attempt,
            failure: ConnectFailure::Timeout,
        });
    }
    s.handle(Event::ConnectionReleased { lease });
    s.handle(Event::ConnectionUp {
        conn: ConnId(11),
        peer: id(7),
        remote: addr(7),
        attempt: None,
    });
    s.handle(Event::KeyRenewed { node_id: id(8) });
    s.advance(2 * HOUR);
    s.advance(2 * HOUR);
    assert_eq!(s.node.poll(), None);
    assert_eq!(
        s.log.len(),
        emitted,
        "nothing after Stopped: {:?}",
        &s.log[emitted..]
    );
    assert_eq!(s.node.poll_timeout(), None);
    ops.push(lease_op);
    for op in &ops {
        assert_eq!(s.done_count(*op), 1);
    }
    assert_eq!(s.node.stop(s.now), Err(ApiError::NotRunning));
    assert!(
        s.node.start(s.now).is_err(),
        "a stopped manager stays stopped"
    );
}

#[test]
fn mdns_is_announced_and_stopped_only_when_configured() {
    let mut s = Script::new(common::t0(), quiet_config(), id(1));
    let cmds = start(&mut s);
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::MdnsAnnounce { .. }))
    );
    s.node.stop(s.now).unwrap();
    let cmds = s.drain();
    assert!(!cmds.contains(&Command::MdnsStop));
    assert_eq!(
        s.log.last(),
        Some(&Command::Output(Output::Event(NodeEvent::Stopped)))
    );

    let mut config = quiet_config();
    let mdns = MdnsConfig {
        groups: vec!["224.0.0.251".parse().unwrap()],
        port: 5353,
    };
    config.mdns = Some(mdns.clone());
    let mut s = Script::new(common::t0(), config, id(1));
    let cmds = start(&mut s);
    assert_eq!(
        cmds,
        vec![Command::MdnsAnnounce {
            node_id: id(1),
            groups: mdns.groups,
            port: 5353,
        }]
    );
    s.node.stop(s.now).unwrap();
    let cmds = s.drain();
    assert_eq!(cmds, vec![Command::MdnsStop]);
}

// ----- 7. reset_buckets after key renewal -----

/// A script whose store holds a graph of `contacts` for `own` in space 0,
/// loaded and started.
fn started_with_graph(config: &Config, own: NodeId, contacts: &[(NodeId, SocketAddr)]) -> Script {
    let mut graph = NodeGraph::new(own, config).unwrap();
    for (i, (node, at)) in contacts.iter().enumerate() {
        let _ = graph
            .set(*node, NodeAddress::from(*at), data(100 + i as u64))
            .unwrap();
    }
    let mut store = ModelStore::default();
    store.apply(&graph.persist_all());
    let mut s = Script::new(common::t0(), config.clone(), own);
    s.store = store;
    let snapshot = s.store.snapshot();
    s.handle(Event::SnapshotLoaded(snapshot));
    start(&mut s);
    assert_eq!(s.node.graph().len(), contacts.len());
    s
}

fn assert_placed_for(s: &Script, own: NodeId, contacts: &[(NodeId, SocketAddr)]) {
    assert_eq!(s.node.node_id(), own);
    assert_eq!(s.node.graph().own_node_id(), own);
    assert_eq!(s.node.graph().len(), contacts.len());
    for (node, at) in contacts {
        let index = own.bucket_index(node).unwrap();
        assert_eq!(s.node.graph().bucket_index(node), Some(index));
        let bucket = s.node.get_bucket(index);
        let contact = bucket
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("{node} not in bucket {index} of {own}"));
        assert!(contact.get(&NodeAddress::from(*at)).is_some());
    }
}

#[test]
fn key_renewal_rebuilds_the_graph_and_switches_the_space() {
    let own = id(1);
    let contacts = vec![
        (id(2), addr(2)),
        (id(3), addr(3)),
        (id(0x81), addr(4)),
        (id(0x10), addr(5)),
        (in_bucket(own, 5, 1), addr(6)),
        (in_bucket(own, 100, 2), addr(7)),
    ];
    let config = quiet_config();
    let mut s = started_with_graph(&config, own, &contacts);
    assert_eq!(s.store.active, Some(NodeGraphSpace::Zero));

    // The key is renewed: a new NodeId, under which buckets differ.
    let new = id(0x80);
    let moved = contacts
        .iter()
        .filter(|(n, _)| own.bucket_index(n) != new.bucket_index(n))
        .count();
    assert!(moved >= 3, "the test moves contacts between buckets");
    s.handle(Event::KeyRenewed { node_id: new });
    assert_placed_for(&s, new, &contacts);
    assert!(has_event(&s, &NodeEvent::BucketsReset { node_id: new }));
    assert_eq!(s.store.active, Some(NodeGraphSpace::One), "the space flips");
    assert_eq!(s.store.owners.get(&NodeGraphSpace::One), Some(&new));
    assert!(!s.store.owners.contains_key(&NodeGraphSpace::Zero));
    assert_eq!(s.store.contacts.len(), contacts.len());
    assert!(
        s.store
            .contacts
            .keys()
            .all(|(space, _)| *space == NodeGraphSpace::One)
    );

    // A manager restarted from that store has the same contacts.
    let mut r = restart(&s, config.clone(), new, s.now.advanced(MINUTE));
    start(&mut r);
    assert_placed_for(&r, new, &contacts);
    for (node, _) in &contacts {
        assert_eq!(r.node.graph().get(node), s.node.graph().get(node));
    }

    // The method, on the restarted one: done after the commit, back to space 0.
    let newer = id(0x40);
    r.hold_store = true;
    let op = r.node.reset_buckets(r.now, newer).unwrap();
    r.drain();
    assert_eq!(r.done(op), None, "not done before the batch commits");
    assert_eq!(r.store.active, Some(NodeGraphSpace::One));
    assert_placed_for(&r, newer, &contacts);
    assert!(has_event(&r, &NodeEvent::BucketsReset { node_id: newer }));
    commit_held(&mut r);
    assert_eq!(r.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(r.store.active, Some(NodeGraphSpace::Zero));
    assert_eq!(r.store.owners.get(&NodeGraphSpace::Zero), Some(&newer));
    let mut again = restart(&r, config, newer, r.now.advanced(MINUTE));
    start(&mut again);
    assert_placed_for(&again, newer, &contacts);
}

#[test]
fn key_renewal_while_stopped_is_applied_on_load() {
    // The store was written for the old key; the node comes back with a new one.
    let own = id(1);
    let contacts = vec![(id(2), addr(2)), (id(0x81), addr(4)), (id(0x10), addr(5))];
    let config = quiet_config();
    let mut s = started_with_graph(&config, own, &contacts);
    s.node.stop(s.now).unwrap();
    s.drain();
    let new = id(0x80);
    let mut r = restart(&s, config, new, s.now.advanced(MINUTE));
    start(&mut r);
    assert_placed_for(&r, new, &contacts);
    assert_eq!(r.store.active, Some(NodeGraphSpace::One));
    assert_eq!(r.store.owners.get(&NodeGraphSpace::One), Some(&new));
}
