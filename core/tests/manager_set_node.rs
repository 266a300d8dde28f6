mod common;

// `set_node` and the bucket upkeep around it, driven by scripted events:
// the three set_node scenarios (known node, room, full bucket), `force`,
// `block`, the own NodeId; garbage collection (ping order, concurrency,
// removal, admission from the pending list, one collection per bucket, the
// pending bound); `unset_node`, `get_bucket`, `add_pending_node`, the GC
// task; and every operation ending only once its store batch is committed.
//
// With own id `[0; 32]`, ids whose first byte is `0x80` are all in bucket
// 255 and ids whose first byte is `0x40` in bucket 254; `k` is 3 unless a
// test says otherwise. A garbage-collection ping is a `Command::Connect`,
// answered alive with `ConnectionUp` or dead with `ConnectFailed`.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use common::{Script, addr, id};
use keynode_core::{
    ApiError, AttemptId, BucketIndex, Command, Config, ConnId, ConnectFailure, ContactMode, Event,
    NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeEvent, NodeId, OpError, OpId,
    OpValue, Output, StoreBatch, StoreErrorKind, StoreOp, TaskKey, Timer,
};

const FAR: BucketIndex = BucketIndex::FARTHEST;
const NEXT: BucketIndex = BucketIndex::new(254);

/// k contacts per bucket; no background refresh or connection check.
fn config(k: usize) -> Config {
    let mut config = Config::default();
    config.k = k;
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

fn started(config: Config) -> Script {
    let s = Script::started(common::t0(), config, id(0));
    assert_eq!(
        s.node.tasks().count(),
        0,
        "a quiet config schedules nothing"
    );
    s
}

/// Node `n` of bucket 255.
fn far(n: u8) -> NodeId {
    let mut bytes = [0u8; 32];
    bytes[0] = 0x80;
    bytes[31] = n;
    NodeId::from_bytes(bytes)
}

/// Node `n` of bucket 254.
fn next(n: u8) -> NodeId {
    let mut bytes = [0u8; 32];
    bytes[0] = 0x40;
    bytes[31] = n;
    NodeId::from_bytes(bytes)
}

/// Where a node listens: derived from its id, so every node has its own.
fn sock(node: NodeId) -> SocketAddr {
    let b = node.as_bytes();
    addr(u16::from_be_bytes([b[0], b[31]]))
}

fn home(node: NodeId) -> NodeAddress {
    NodeAddress::from(sock(node))
}

fn data(t: u64) -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: t,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

/// `set_node(node, its address, ..)`; returns the op and the commands other
/// than store batches and outputs.
fn set(s: &mut Script, node: NodeId, block: bool, force: bool) -> (OpId, Vec<Command>) {
    set_at(s, node, home(node), block, force, None)
}

fn set_at(
    s: &mut Script,
    node: NodeId,
    address: NodeAddress,
    block: bool,
    force: bool,
    timeout: Option<Duration>,
) -> (OpId, Vec<Command>) {
    let t = s.now.unix_secs();
    let op = s
        .node
        .set_node(s.now, node, address, data(t), block, force, timeout)
        .expect("set_node is accepted");
    (op, s.drain())
}

/// Adds nodes to buckets with room: each is done at once, with no ping.
fn fill(s: &mut Script, nodes: &[NodeId]) {
    for node in nodes {
        let (op, cmds) = set(s, *node, false, false);
        assert!(pings(&cmds).is_empty(), "no ping to add {node}: {cmds:?}");
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)), "{node} added");
        assert!(s.node.graph().contains(node));
    }
}

/// The pings (connection attempts) among `cmds`, in order.
fn pings(cmds: &[Command]) -> Vec<(AttemptId, NodeId)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Connect {
                attempt, node_id, ..
            } => Some((*attempt, *node_id)),
            _ => None,
        })
        .collect()
}

/// Every Connect the manager ever asked for.
fn connects_logged(s: &Script) -> usize {
    s.log
        .iter()
        .filter(|c| matches!(c, Command::Connect { .. }))
        .count()
}

/// Answers a ping: the node is alive.
fn up(s: &mut Script, attempt: AttemptId, node: NodeId) -> Vec<Command> {
    s.handle(Event::ConnectionUp {
        conn: ConnId(attempt.0),
        peer: node,
        remote: sock(node),
        attempt: Some(attempt),
    })
}

/// Answers a ping: the node does not answer.
fn down(s: &mut Script, attempt: AttemptId) -> Vec<Command> {
    s.handle(Event::ConnectFailed {
        attempt,
        failure: ConnectFailure::Timeout,
    })
}

/// What answering pings showed.
struct Pinged {
    /// The pinged nodes, in the order the pings were asked for.
    order: Vec<NodeId>,
    /// The most pings outstanding at once.
    max_in_flight: usize,
}

/// Answers the pings in `cmds` and every ping they lead to, first asked
/// first answered: the nodes in `dead` fail, the others are alive.
fn answer_pings(s: &mut Script, cmds: &[Command], dead: &[NodeId]) -> Pinged {
    answer(s, pings(cmds), dead)
}

/// As [`answer_pings`], from the pings themselves.
fn answer(s: &mut Script, asked: Vec<(AttemptId, NodeId)>, dead: &[NodeId]) -> Pinged {
    let mut queue: VecDeque<(AttemptId, NodeId)> = asked.into();
    let mut order: Vec<NodeId> = queue.iter().map(|(_, n)| *n).collect();
    let mut max_in_flight = queue.len();
    while let Some((attempt, node)) = queue.pop_front() {
        let more = if dead.contains(&node) {
            down(s, attempt)
        } else {
            up(s, attempt, node)
        };
        let more = pings(&more);
        order.extend(more.iter().map(|(_, n)| *n));
        queue.extend(more);
        max_in_flight = max_in_flight.max(queue.len());
    }
    Pinged {
        order,
        max_in_flight,
    }
}

/// Closes every connection, so that the next pings really dial.
fn close_all(s: &mut Script) {
    for (conn, _, _) in s.node.connections() {
        s.handle(Event::ConnectionClosed { conn });
    }
    assert!(s.node.connections().is_empty());
}

fn bucket_ids(s: &Script, bucket: BucketIndex) -> Vec<NodeId> {
    s.node
        .get_bucket(bucket)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

fn pending_ids(s: &Script, bucket: BucketIndex) -> Vec<NodeId> {
    s.node
        .graph()
        .pending(bucket)
        .iter()
        .map(|p| p.node_id)
        .collect()
}

fn stored_contacts(s: &Script) -> BTreeSet<NodeId> {
    s.store.contacts.keys().map(|(_, n)| *n).collect()
}

fn stored_pending(s: &Script) -> BTreeSet<NodeId> {
    s.store.pending.keys().map(|(_, n)| *n).collect()
}

fn set_of(nodes: &[NodeId]) -> BTreeSet<NodeId> {
    nodes.iter().copied().collect()
}

/// The buckets with a scheduled garbage-collection task.
fn gc_tasks(s: &Script) -> Vec<BucketIndex> {
    s.node
        .tasks()
        .filter_map(|(k, _)| match k {
            TaskKey::GarbageCollect(b) => Some(b),
            _ => None,
        })
        .collect()
}

fn gc_timer(s: &Script, bucket: BucketIndex) -> Option<std::time::Instant> {
    s.node.timer(Timer::Task(TaskKey::GarbageCollect(bucket)))
}

fn events(s: &Script) -> Vec<NodeEvent> {
    s.outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            Output::Done { .. } => None,
        })
        .collect()
}

fn removed(s: &Script) -> Vec<NodeId> {
    events(s)
        .into_iter()
        .filter_map(|e| match e {
            NodeEvent::ContactRemoved { node_id } => Some(node_id),
            _ => None,
        })
        .collect()
}

/// How many store batches put a GC task for `bucket`.
fn gc_task_puts(s: &Script, bucket: BucketIndex) -> usize {
    s.log
        .iter()
        .filter_map(|c| match c {
            Command::Store(batch) => Some(batch),
            _ => None,
        })
        .flat_map(|b| b.ops.iter())
        .filter(|op| {
            matches!(op, StoreOp::PutTask { key: TaskKey::GarbageCollect(b), .. } if *b == bucket)
        })
        .count()
}

// ----- held store batches -----

/// Takes the held batches for which `pick` holds, leaving the others held.
fn take_held(s: &mut Script, pick: impl Fn(&StoreBatch) -> bool) -> Vec<StoreBatch> {
    let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut s.held).into_iter().partition(pick);
    s.held = kept;
    taken
}

fn commit(s: &mut Script, batches: Vec<StoreBatch>) {
    for batch in batches {
        s.store.apply(&batch.ops);
        s.handle(Event::StoreCommitted(batch.id));
    }
}

/// Commits every held batch, and the batches that leads to, until none is held.
fn commit_all(s: &mut Script) {
    while !s.held.is_empty() {
        let batches = std::mem::take(&mut s.held);
        commit(s, batches);
    }
}

fn fail(s: &mut Script, batches: Vec<StoreBatch>) {
    for batch in batches {
        s.handle(Event::StoreFailed {
            batch: batch.id,
            error: StoreErrorKind::MapFull,
        });
    }
}

fn puts_pending(node: NodeId) -> impl Fn(&StoreBatch) -> bool {
    move |b| {
        b.ops
            .iter()
            .any(|op| matches!(op, StoreOp::PutPending { node_id, .. } if *node_id == node))
    }
}

/// The batch of a garbage collection: it deletes pending entries or contacts.
fn is_gc_batch(b: &StoreBatch) -> bool {
    b.ops.iter().any(|op| {
        matches!(
            op,
            StoreOp::DeletePending { .. } | StoreOp::DeleteContact { .. }
        )
    })
}

fn is_store_error(result: Option<Result<OpValue, OpError>>) -> bool {
    matches!(result, Some(Err(OpError::Store(e))) if e == StoreErrorKind::MapFull)
}

// ===== 1. set_node scenarios =====

#[test]
fn set_node_adds_a_node_to_a_bucket_with_room() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2)]);
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(2)]);
    let contact = s.node.graph().get(&far(1)).expect("far(1) is a contact");
    assert_eq!(contact.len(), 1);
    assert_eq!(
        contact.get(&home(far(1))).map(|d| d.mode),
        Some(ContactMode::Direct)
    );
    assert_eq!(stored_contacts(&s), set_of(&[far(1), far(2)]));
    assert!(events(&s).contains(&NodeEvent::ContactSet {
        node_id: far(2),
        bucket: FAR
    }));
    assert_eq!(connects_logged(&s), 0);
    assert!(pending_ids(&s, FAR).is_empty());
    assert!(gc_tasks(&s).is_empty());
}

#[test]
fn set_node_updates_a_known_node_and_makes_it_newest() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(2), far(3)]);
    // The bucket is full, but far(1) is known: it is updated, not pended.
    let other = NodeAddress::from(addr(999));
    let (op, cmds) = set_at(&mut s, far(1), other.clone(), false, false, None);
    assert!(pings(&cmds).is_empty(), "an update pings nobody: {cmds:?}");
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(1)]);
    let contact = s.node.graph().get(&far(1)).expect("still a contact");
    assert_eq!(contact.len(), 2, "the new address is merged in");
    assert!(contact.get(&other).is_some());
    assert!(contact.get(&home(far(1))).is_some());
    let stored = s
        .store
        .contacts
        .iter()
        .find(|((_, n), _)| *n == far(1))
        .map(|(_, r)| r.contact.len());
    assert_eq!(stored, Some(2), "the update is persisted");
    assert!(pending_ids(&s, FAR).is_empty());
    assert!(gc_tasks(&s).is_empty(), "an update needs no collection");
    assert!(removed(&s).is_empty());
}

#[test]
fn full_bucket_with_a_live_oldest_keeps_it_and_drops_the_newcomer() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (op, cmds) = set(&mut s, far(4), false, false);
    assert!(
        pings(&cmds).is_empty(),
        "without block nothing is pinged yet"
    );
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(!s.node.graph().contains(&far(4)));
    assert_eq!(
        pending_ids(&s, FAR),
        vec![far(4)],
        "the newcomer is pending"
    );
    assert_eq!(stored_pending(&s), set_of(&[far(4)]));
    assert_eq!(gc_tasks(&s), vec![FAR], "a collection is scheduled");

    // The collection runs: everybody answers.
    let cmds = s.advance(Duration::ZERO);
    let pinged = answer_pings(&mut s, &cmds, &[]);
    assert_eq!(pinged.order[0], far(1), "the oldest is pinged first");
    assert_eq!(bucket_ids(&s, FAR).len(), 3);
    for n in 1..=3 {
        assert!(s.node.graph().contains(&far(n)), "far({n}) stays");
    }
    assert!(
        !s.node.graph().contains(&far(4)),
        "no room: far(4) is dropped"
    );
    assert!(pending_ids(&s, FAR).is_empty());
    assert_eq!(stored_contacts(&s), set_of(&[far(1), far(2), far(3)]));
    assert!(stored_pending(&s).is_empty());
    assert!(removed(&s).is_empty());
    assert!(gc_tasks(&s).is_empty());
}

#[test]
fn full_bucket_with_a_dead_oldest_replaces_it_after_gc() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (op, _) = set(&mut s, far(4), false, false);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(
        s.node.graph().contains(&far(1)),
        "nothing removed before GC"
    );
    assert!(!s.node.graph().contains(&far(4)));

    let cmds = s.advance(Duration::ZERO);
    let pinged = answer_pings(&mut s, &cmds, &[far(1)]);
    assert_eq!(pinged.order, vec![far(1), far(2), far(3)]);
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(4)]);
    assert_eq!(removed(&s), vec![far(1)]);
    assert!(pending_ids(&s, FAR).is_empty());
    assert_eq!(stored_contacts(&s), set_of(&[far(2), far(3), far(4)]));
    assert!(stored_pending(&s).is_empty());
    assert!(events(&s).contains(&NodeEvent::ContactSet {
        node_id: far(4),
        bucket: FAR
    }));
}

#[test]
fn force_evicts_the_oldest_without_pinging() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (op, cmds) = set(&mut s, far(4), false, true);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(pings(&cmds).is_empty());
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(4)]);
    assert_eq!(removed(&s), vec![far(1)]);
    assert_eq!(stored_contacts(&s), set_of(&[far(2), far(3), far(4)]));
    assert!(pending_ids(&s, FAR).is_empty());
    assert!(gc_tasks(&s).is_empty(), "force needs no collection");
    // Nothing happens later either.
    let cmds = s.advance(Duration::from_secs(60));
    assert!(pings(&cmds).is_empty());
    assert_eq!(connects_logged(&s), 0);

    // force with block evicts too, and does not wait for anything.
    let (op, cmds) = set(&mut s, far(5), true, true);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(pings(&cmds).is_empty());
    assert_eq!(bucket_ids(&s, FAR), vec![far(3), far(4), far(5)]);

    // In a bucket with room, force simply adds.
    let (op, _) = set(&mut s, next(1), false, true);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, NEXT), vec![next(1)]);
    assert_eq!(removed(&s), vec![far(1), far(2)]);
}

#[test]
fn block_makes_set_node_wait_for_the_collection() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (op, cmds) = set(&mut s, far(4), true, false);
    let asked = pings(&cmds);
    assert_eq!(
        asked.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        vec![far(1), far(2), far(3)],
        "with block the collection runs at once"
    );
    assert!(gc_tasks(&s).is_empty(), "nothing scheduled: it runs now");
    assert_eq!(s.done(op), None);
    down(&mut s, asked[0].0);
    assert_eq!(s.done(op), None, "two pings still out");
    up(&mut s, asked[1].0, far(2));
    assert_eq!(s.done(op), None, "one ping still out");
    assert!(
        s.node.graph().contains(&far(1)),
        "far(1) removed only at the end"
    );
    up(&mut s, asked[2].0, far(3));
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(s.done_count(op), 1);
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(4)]);
    assert_eq!(stored_contacts(&s), set_of(&[far(2), far(3), far(4)]));
}

#[test]
fn own_node_id_is_ignored() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let before = s.node.graph().clone();
    let log_before = s.log.len();
    let outputs_before = s.outputs.len();
    for (block, force) in [(false, false), (true, false), (false, true), (true, true)] {
        let (op, cmds) = set(&mut s, id(0), block, force);
        assert!(cmds.is_empty(), "nothing to do: {cmds:?}");
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    }
    assert_eq!(s.node.graph(), &before, "graph unchanged");
    assert!(!s.node.graph().contains(&id(0)));
    let stores = s.log[log_before..]
        .iter()
        .filter(|c| matches!(c, Command::Store(_)))
        .count();
    assert_eq!(stores, 0, "nothing persisted");
    assert!(
        s.outputs[outputs_before..]
            .iter()
            .all(|o| matches!(o, Output::Done { .. })),
        "no events: {:?}",
        &s.outputs[outputs_before..]
    );
    assert!(gc_tasks(&s).is_empty());
}

// ===== 2. garbage collection =====

#[test]
fn gc_pings_oldest_first_at_most_gc_concurrency_at_a_time() {
    let mut s = started(config(6));
    let nodes: Vec<NodeId> = (1..=6).map(far).collect();
    fill(&mut s, &nodes);
    let timeout = Duration::from_secs(2);
    let (op, cmds) = set_at(&mut s, far(7), home(far(7)), true, false, Some(timeout));
    let first: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Connect {
                attempt,
                node_id,
                address,
                mode,
                timeout,
            } => Some((*attempt, *node_id, *address, *mode, *timeout)),
            _ => None,
        })
        .collect();
    assert_eq!(first.len(), 3, "gc_concurrency = 3 pings at once: {cmds:?}");
    for (i, (_, node, address, mode, t)) in first.iter().enumerate() {
        assert_eq!(*node, nodes[i], "oldest first");
        assert_eq!(*address, sock(*node));
        assert_eq!(*mode, ContactMode::Direct);
        assert_eq!(*t, timeout, "set_node's connect timeout bounds each ping");
    }
    // One answer frees one slot, for the next oldest.
    let more = pings(&up(&mut s, first[1].0, far(2)));
    assert_eq!(
        more.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        vec![far(4)]
    );
    let more2 = pings(&down(&mut s, first[0].0));
    assert_eq!(
        more2.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        vec![far(5)]
    );
    assert_eq!(s.done(op), None);
    let mut rest = vec![(first[2].0, far(3))];
    rest.extend(more);
    rest.extend(more2);
    let pinged = answer(&mut s, rest, &[]);
    assert!(pinged.max_in_flight <= 3, "never more than 3 pings out");
    assert_eq!(
        pinged.order,
        vec![far(3), far(4), far(5), far(6)],
        "far(6) is asked for once a slot frees"
    );
    assert_eq!(connects_logged(&s), 6, "each contact pinged once");
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(!s.node.graph().contains(&far(1)));
    assert!(s.node.graph().contains(&far(7)));
}

#[test]
fn gc_concurrency_is_configurable() {
    let mut c = config(4);
    c.gc_concurrency = 1;
    let mut s = started(c);
    fill(&mut s, &[far(1), far(2), far(3), far(4)]);
    let (op, cmds) = set(&mut s, far(5), true, false);
    assert_eq!(pings(&cmds).len(), 1);
    let pinged = answer_pings(&mut s, &cmds, &[far(4)]);
    assert_eq!(pinged.max_in_flight, 1);
    assert_eq!(pinged.order, vec![far(1), far(2), far(3), far(4)]);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(2), far(3), far(5)]);
}

#[test]
fn gc_removes_the_dead_admits_pending_newest_first_and_drops_the_rest() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    for n in 4..=6 {
        let (op, cmds) = set(&mut s, far(n), false, false);
        assert!(pings(&cmds).is_empty());
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    }
    assert_eq!(pending_ids(&s, FAR), vec![far(4), far(5), far(6)]);
    let cmds = s.advance(Duration::ZERO);
    let pinged = answer_pings(&mut s, &cmds, &[far(1), far(2)]);
    assert_eq!(pinged.order, vec![far(1), far(2), far(3)]);
    // Two places freed: far(6) (newest) then far(5); far(4) is dropped.
    assert_eq!(bucket_ids(&s, FAR), vec![far(3), far(6), far(5)]);
    assert!(!s.node.graph().contains(&far(4)));
    assert!(s.node.graph().get_pending(&far(4)).is_none());
    assert!(pending_ids(&s, FAR).is_empty());
    assert_eq!(stored_contacts(&s), set_of(&[far(3), far(5), far(6)]));
    assert!(
        stored_pending(&s).is_empty(),
        "dropped pending nodes are deleted"
    );
    let mut gone = removed(&s);
    gone.sort();
    assert_eq!(gone, vec![far(1), far(2)]);
}

#[test]
fn gc_without_pending_nodes_still_removes_the_dead() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let op = s.node.garbage_collect_bucket(s.now, FAR, None).unwrap();
    let cmds = s.drain();
    let pinged = answer_pings(&mut s, &cmds, &[far(2)]);
    assert_eq!(pinged.order, vec![far(1), far(2), far(3)]);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(3)]);
    assert_eq!(stored_contacts(&s), set_of(&[far(1), far(3)]));
    assert_eq!(removed(&s), vec![far(2)]);
    // The default connect timeout bounds the pings.
    assert!(s.log.iter().all(|c| match c {
        Command::Connect { timeout, .. } =>
            *timeout == Config::default().connection_connect_timeout,
        _ => true,
    }));
}

#[test]
fn gc_keeps_a_contact_that_reconnects_while_it_runs() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (op, cmds) = set(&mut s, far(4), true, false);
    let asked = pings(&cmds);
    assert_eq!(asked.len(), 3);
    up(&mut s, asked[1].0, far(2));
    up(&mut s, asked[2].0, far(3));
    // far(1) dials in while its ping is out, then the ping fails.
    s.handle(Event::ConnectionUp {
        conn: ConnId(1_000_000),
        peer: far(1),
        remote: sock(far(1)),
        attempt: None,
    });
    down(&mut s, asked[0].0);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(
        s.node.graph().contains(&far(1)),
        "far(1) proved alive since"
    );
    assert!(!s.node.graph().contains(&far(4)), "no room for far(4)");
    assert!(removed(&s).is_empty());
}

#[test]
fn one_gc_per_bucket_for_concurrent_blocking_set_nodes() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (a, cmds_a) = set(&mut s, far(4), true, false);
    let (b, cmds_b) = set(&mut s, far(5), true, false);
    assert_eq!(pings(&cmds_a).len(), 3);
    assert!(pings(&cmds_b).is_empty(), "the second joins the running GC");
    // An explicit collection of the bucket joins it too.
    let c = s.node.garbage_collect_bucket(s.now, FAR, None).unwrap();
    assert!(pings(&s.drain()).is_empty());
    assert_eq!(pending_ids(&s, FAR), vec![far(4), far(5)]);
    answer_pings(&mut s, &cmds_a, &[far(1)]);
    assert_eq!(connects_logged(&s), 3, "one collection: 3 pings in all");
    for op in [a, b, c] {
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
        assert_eq!(s.done_count(op), 1);
    }
    // One place freed: the newest pending node gets it.
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(5)]);
    assert!(!s.node.graph().contains(&far(4)));
    assert!(pending_ids(&s, FAR).is_empty());
    assert!(s.node.operations_in_flight() == 0, "nothing left running");
}

#[test]
fn pending_list_bound_drops_the_oldest_pending_node() {
    let mut c = config(3);
    c.max_pending_per_bucket = 2;
    let mut s = started(c);
    fill(&mut s, &[far(1), far(2), far(3)]);
    for n in 4..=6 {
        let (op, _) = set(&mut s, far(n), false, false);
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    }
    assert_eq!(pending_ids(&s, FAR), vec![far(5), far(6)]);
    assert_eq!(s.node.graph().pending_dropped(), 1);
    assert_eq!(stored_pending(&s), set_of(&[far(5), far(6)]));
    // Offering far(5) again makes it the newest: far(6) would go next.
    let (op, _) = set(&mut s, far(5), false, false);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(pending_ids(&s, FAR), vec![far(6), far(5)]);
    // Every contact is dead: the two pending nodes get in, far(4) never does.
    let cmds = s.advance(Duration::ZERO);
    answer_pings(&mut s, &cmds, &[far(1), far(2), far(3)]);
    assert_eq!(bucket_ids(&s, FAR), vec![far(5), far(6)]);
    assert!(!s.node.graph().contains(&far(4)));
    assert_eq!(stored_contacts(&s), set_of(&[far(5), far(6)]));
}

#[test]
fn gc_never_removes_a_contact_it_could_not_ping() {
    // Room for the set_node, the collection and two pings, not a third.
    let mut c = config(3);
    c.max_operations = 3;
    let mut s = started(c);
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (op, cmds) = set(&mut s, far(4), true, false);
    let asked = pings(&cmds);
    assert!(asked.len() < 3, "the operation limit leaves a ping out");
    answer_pings(&mut s, &cmds, &[]);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    for n in 1..=3 {
        assert!(
            s.node.graph().contains(&far(n)),
            "far({n}) never failed a ping, so it must stay: bucket {:?}",
            bucket_ids(&s, FAR)
        );
    }
    assert!(!s.node.graph().contains(&far(4)));
}

// ===== 3. unset_node, get_bucket, add_pending_node, the GC task =====

#[test]
fn unset_node_removes_a_contact_and_a_pending_entry() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (pended, _) = set(&mut s, far(4), false, false);
    assert_eq!(s.done(pended), Some(Ok(OpValue::Unit)));
    assert_eq!(pending_ids(&s, FAR), vec![far(4)]);

    let op = s.node.unset_node(s.now, far(2)).unwrap();
    s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(3)]);
    assert_eq!(stored_contacts(&s), set_of(&[far(1), far(3)]));
    assert_eq!(removed(&s), vec![far(2)]);

    let op = s.node.unset_node(s.now, far(4)).unwrap();
    s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(pending_ids(&s, FAR).is_empty());
    assert!(stored_pending(&s).is_empty());
    assert_eq!(removed(&s), vec![far(2)], "a pending node is no contact");

    // Unknown nodes and the own NodeId: done, nothing changes.
    let before = s.node.graph().clone();
    for node in [far(9), id(0)] {
        let op = s.node.unset_node(s.now, node).unwrap();
        s.drain();
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    }
    assert_eq!(s.node.graph(), &before);
    assert_eq!(removed(&s), vec![far(2)]);

    // The freed place takes a new node without any ping.
    let (op, cmds) = set(&mut s, far(7), false, false);
    assert!(pings(&cmds).is_empty());
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(3), far(7)]);
}

#[test]
fn get_bucket_lists_contacts_oldest_to_newest() {
    let mut s = started(config(5));
    assert!(s.node.get_bucket(FAR).is_empty());
    fill(&mut s, &[far(3), far(1), far(2), next(1)]);
    let bucket = s.node.get_bucket(FAR);
    assert_eq!(
        bucket.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![far(3), far(1), far(2)],
        "insertion order, not id order"
    );
    for (node, contact) in &bucket {
        assert_eq!(contact.len(), 1);
        assert!(contact.get(&home(*node)).is_some());
    }
    assert_eq!(bucket_ids(&s, NEXT), vec![next(1)]);
    assert!(s.node.get_bucket(BucketIndex::new(3)).is_empty());
    // Updating the oldest makes it the newest.
    fill(&mut s, &[far(3)]);
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(2), far(3)]);
    // Pending nodes are not in the bucket.
    let op = s
        .node
        .add_pending_node(s.now, far(8), home(far(8)), data(1), false, None)
        .unwrap();
    s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(2), far(3)]);
}

#[test]
fn add_pending_node_without_block_schedules_a_collection() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let op = s
        .node
        .add_pending_node(s.now, far(4), home(far(4)), data(1), false, None)
        .unwrap();
    let cmds = s.drain();
    assert!(pings(&cmds).is_empty());
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(pending_ids(&s, FAR), vec![far(4)]);
    assert_eq!(stored_pending(&s), set_of(&[far(4)]));
    assert_eq!(gc_tasks(&s), vec![FAR]);
    assert_eq!(gc_timer(&s, FAR), Some(s.now.mono), "due now");
    assert!(s.store.tasks.contains_key(&TaskKey::GarbageCollect(FAR)));

    let cmds = s.advance(Duration::ZERO);
    answer_pings(&mut s, &cmds, &[far(3)]);
    assert_eq!(bucket_ids(&s, FAR), vec![far(1), far(2), far(4)]);
    assert!(gc_tasks(&s).is_empty(), "the task ran");
    assert_eq!(gc_timer(&s, FAR), None);
    assert!(!s.store.tasks.contains_key(&TaskKey::GarbageCollect(FAR)));
}

#[test]
fn add_pending_node_with_block_runs_the_collection_and_waits() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let op = s
        .node
        .add_pending_node(s.now, far(4), home(far(4)), data(1), true, None)
        .unwrap();
    let cmds = s.drain();
    assert_eq!(pings(&cmds).len(), 3);
    assert_eq!(s.done(op), None, "waits for the collection");
    assert!(gc_tasks(&s).is_empty());
    answer_pings(&mut s, &cmds, &[far(1)]);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(4)]);

    // In a bucket with room the collection admits the node straight away.
    let op = s
        .node
        .add_pending_node(s.now, next(1), home(next(1)), data(1), true, None)
        .unwrap();
    let cmds = s.drain();
    assert!(
        pings(&cmds).is_empty(),
        "an empty bucket has nobody to ping"
    );
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, NEXT), vec![next(1)]);
}

#[test]
fn add_pending_node_refuses_the_own_node_id() {
    let mut s = started(config(3));
    let result = s
        .node
        .add_pending_node(s.now, id(0), home(far(1)), data(1), true, None);
    assert_eq!(result, Err(ApiError::OwnNodeId(id(0))));
    assert!(s.drain().is_empty());
}

#[test]
fn at_most_one_gc_task_per_bucket() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3), next(1), next(2), next(3)]);
    for n in [far(4), far(5), next(4), next(5), far(6)] {
        let (op, cmds) = set(&mut s, n, false, false);
        assert!(pings(&cmds).is_empty());
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    }
    assert_eq!(gc_tasks(&s), vec![NEXT, FAR], "one task per full bucket");
    assert_eq!(gc_task_puts(&s, FAR), 1, "scheduled once, not per set_node");
    assert_eq!(gc_task_puts(&s, NEXT), 1);
    assert_eq!(gc_timer(&s, FAR), Some(s.now.mono));
    assert_eq!(gc_timer(&s, NEXT), Some(s.now.mono));
    assert!(s.store.tasks.contains_key(&TaskKey::GarbageCollect(FAR)));
    assert!(s.store.tasks.contains_key(&TaskKey::GarbageCollect(NEXT)));

    // Both run; while they do, new pending nodes schedule nothing more.
    let cmds = s.advance(Duration::ZERO);
    let asked = pings(&cmds);
    assert_eq!(asked.len(), 6, "3 pings for each bucket");
    assert!(gc_tasks(&s).is_empty());
    let (op, cmds2) = set(&mut s, far(7), false, false);
    assert!(pings(&cmds2).is_empty());
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(
        gc_tasks(&s).is_empty(),
        "a collection of the bucket is running"
    );
    assert_eq!(gc_timer(&s, FAR), None);
    assert_eq!(gc_task_puts(&s, FAR), 1);

    answer_pings(&mut s, &cmds, &[]);
    assert_eq!(connects_logged(&s), 6);
    assert!(gc_tasks(&s).is_empty());
    assert!(s.store.tasks.is_empty());
    // Everybody answered: all pending nodes, far(7) included, are dropped.
    assert!(pending_ids(&s, FAR).is_empty());
    assert!(pending_ids(&s, NEXT).is_empty());
    assert!(stored_pending(&s).is_empty());
    assert_eq!(s.node.operations_in_flight(), 0);
}

#[test]
fn a_collection_that_runs_early_consumes_the_scheduled_task() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    let (pended, _) = set(&mut s, far(4), false, false);
    assert_eq!(s.done(pended), Some(Ok(OpValue::Unit)));
    assert_eq!(gc_tasks(&s), vec![FAR]);
    // A blocking set_node runs the collection before the task fires.
    let (op, cmds) = set(&mut s, far(5), true, false);
    answer_pings(&mut s, &cmds, &[]);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(
        pending_ids(&s, FAR).is_empty(),
        "the collection handled both"
    );
    assert_eq!(gc_timer(&s, FAR), None);
    assert!(
        gc_tasks(&s).is_empty(),
        "no GC task may stay listed once its timer is gone: {:?}",
        gc_tasks(&s)
    );
    assert!(
        !s.store.tasks.contains_key(&TaskKey::GarbageCollect(FAR)),
        "a stale GC task stays persisted and runs after a restart"
    );
}

#[test]
fn a_node_pended_while_a_collection_commits_is_not_stranded() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    s.hold_store = true;
    let (op, cmds) = set(&mut s, far(4), true, false);
    answer_pings(&mut s, &cmds, &[far(1)]);
    // The collection has applied its result and waits for its batch.
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(4)]);
    assert_eq!(s.done(op), None);
    let (late, _) = set(&mut s, far(5), false, false);
    // The blocking kind starts the next collection, which sees both.
    let (late_block, joined) = set(&mut s, far(6), true, false);
    assert_eq!(pending_ids(&s, FAR), vec![far(5), far(6)]);
    answer_pings(&mut s, &joined, &[]);
    commit_all(&mut s);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(s.done(late), Some(Ok(OpValue::Unit)));
    // Whatever decides on far(5) and far(6), it must come: let time pass, answer
    // every ping (all alive, so there is no room), commit everything.
    for _ in 0..3 {
        let cmds = s.advance(Duration::from_secs(60));
        answer_pings(&mut s, &cmds, &[]);
        commit_all(&mut s);
    }
    assert!(
        pending_ids(&s, FAR).is_empty(),
        "stranded on the pending list: {:?}, no collection due (GC tasks {:?})",
        pending_ids(&s, FAR),
        gc_tasks(&s)
    );
    assert_eq!(s.done_count(late_block), 1);
    assert!(stored_pending(&s).is_empty());
}

// ===== 4. done only after the store batch is committed =====

#[test]
fn set_node_is_done_only_after_its_batch_is_committed() {
    let mut s = started(config(3));
    s.hold_store = true;
    // Bucket with room, then an update, then a full bucket (pending), then force.
    let cases: [(NodeId, bool); 6] = [
        (far(1), false),
        (far(2), false),
        (far(3), false),
        (far(1), false),
        (far(4), false),
        (far(5), true),
    ];
    for (node, force) in cases {
        let (op, cmds) = set(&mut s, node, false, force);
        assert!(pings(&cmds).is_empty());
        assert_eq!(s.held.len(), 1, "one batch for {node}");
        assert_eq!(s.done(op), None, "{node}: not done before its commit");
        commit_all(&mut s);
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)), "{node}: done after");
    }
    assert_eq!(bucket_ids(&s, FAR), vec![far(3), far(1), far(5)]);
    assert_eq!(pending_ids(&s, FAR), vec![far(4)]);
    assert_eq!(stored_contacts(&s), set_of(&[far(3), far(1), far(5)]));
    assert_eq!(stored_pending(&s), set_of(&[far(4)]));
}

#[test]
fn blocking_set_node_is_done_only_after_both_batches_are_committed() {
    // Its own batch committed first: still waits for the collection's.
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    s.hold_store = true;
    let (op, cmds) = set(&mut s, far(4), true, false);
    let own = take_held(&mut s, puts_pending(far(4)));
    assert_eq!(own.len(), 1);
    commit(&mut s, own);
    assert_eq!(s.done(op), None, "the collection is still pinging");
    answer_pings(&mut s, &cmds, &[far(1)]);
    assert_eq!(s.done(op), None, "the collection's batch is not committed");
    let gc = take_held(&mut s, is_gc_batch);
    assert_eq!(gc.len(), 1);
    commit(&mut s, gc);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    commit_all(&mut s);
    assert_eq!(s.done_count(op), 1);

    // The collection's batch committed first: still waits for its own.
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    s.hold_store = true;
    let (op, cmds) = set(&mut s, far(4), true, false);
    answer_pings(&mut s, &cmds, &[far(1)]);
    let gc = take_held(&mut s, is_gc_batch);
    assert_eq!(gc.len(), 1);
    commit(&mut s, gc);
    assert_eq!(s.done(op), None, "set_node's own batch is not committed");
    let own = take_held(&mut s, puts_pending(far(4)));
    assert_eq!(own.len(), 1);
    commit(&mut s, own);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert_eq!(bucket_ids(&s, FAR), vec![far(2), far(3), far(4)]);
}

#[test]
fn unset_add_pending_and_gc_are_done_only_after_their_batches_commit() {
    let mut s = started(config(3));
    fill(&mut s, &[far(1), far(2), far(3)]);
    s.hold_store = true;

    let op = s.node.unset_node(s.now, far(3)).unwrap();
    s.drain();
    assert_eq!(s.held.len(), 1);
    assert_eq!(s.done(op), None);
    commit_all(&mut s);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    fill_held(&mut s, far(3));

    let op = s
        .node
        .add_pending_node(s.now, far(4), home(far(4)), data(1), false, None)
        .unwrap();
    s.drain();
    assert_eq!(s.held.len(), 1);
    assert_eq!(s.done(op), None);
    commit_all(&mut s);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));

    let op = s
        .node
        .add_pending_node(s.now, far(5), home(far(5)), data(1), true, None)
        .unwrap();
    let cmds = s.drain();
    let own = take_held(&mut s, puts_pending(far(5)));
    commit(&mut s, own);
    answer_pings(&mut s, &cmds, &[far(2)]);
    assert_eq!(s.done(op), None, "the collection's batch is held");
    commit_all(&mut s);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(s.node.graph().contains(&far(5)), "newest pending admitted");

    close_all(&mut s);
    let op = s.node.garbage_collect_bucket(s.now, FAR, None).unwrap();
    let cmds = s.drain();
    answer_pings(&mut s, &cmds, &[far(1)]);
    assert_eq!(s.done(op), None);
    let gc = take_held(&mut s, is_gc_batch);
    assert_eq!(gc.len(), 1);
    commit(&mut s, gc);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
    assert!(!s.node.graph().contains(&far(1)));
}

/// Adds `node` with the store held, committing its batch.
fn fill_held(s: &mut Script, node: NodeId) {
    let (op, _) = set(s, node, false, false);
    commit_all(s);
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
}

#[test]
fn a_failed_store_batch_fails_the_operation() {
    let mut s = started(config(3));
    s.hold_store = true;

    // set_node in a bucket with room.
    let (op, _) = set(&mut s, far(1), false, false);
    let held = std::mem::take(&mut s.held);
    fail(&mut s, held);
    assert!(is_store_error(s.done(op)), "{:?}", s.done(op));
    assert_eq!(s.done_count(op), 1);
    assert_eq!(s.node.stats().store_failures, 1);
    assert!(
        events(&s)
            .iter()
            .any(|e| matches!(e, NodeEvent::StoreFailed { .. }))
    );

    for n in 1..=3 {
        fill_held(&mut s, far(n));
    }

    // unset_node.
    let op = s.node.unset_node(s.now, far(9)).unwrap();
    s.drain();
    assert_eq!(s.done(op), Some(Ok(OpValue::Unit)), "nothing to write");
    let op = s.node.unset_node(s.now, far(3)).unwrap();
    s.drain();
    let held = std::mem::take(&mut s.held);
    fail(&mut s, held);
    assert!(is_store_error(s.done(op)), "{:?}", s.done(op));

    // add_pending_node.
    fill_held(&mut s, far(3));
    let op = s
        .node
        .add_pending_node(s.now, far(4), home(far(4)), data(1), false, None)
        .unwrap();
    s.drain();
    let held = std::mem::take(&mut s.held);
    fail(&mut s, held);
    assert!(is_store_error(s.done(op)), "{:?}", s.done(op));

    // A blocking set_node whose collection's batch fails.
    let (op, cmds) = set(&mut s, far(5), true, false);
    let own = take_held(&mut s, puts_pending(far(5)));
    commit(&mut s, own);
    answer_pings(&mut s, &cmds, &[far(1)]);
    let gc = take_held(&mut s, is_gc_batch);
    assert_eq!(gc.len(), 1);
    fail(&mut s, gc);
    assert!(is_store_error(s.done(op)), "{:?}", s.done(op));
    assert_eq!(s.done_count(op), 1);
    commit_all(&mut s);
    close_all(&mut s);

    // garbage_collect_bucket.
    let op = s.node.garbage_collect_bucket(s.now, FAR, None).unwrap();
    let cmds = s.drain();
    answer_pings(&mut s, &cmds, &[far(2)]);
    let gc = take_held(&mut s, is_gc_batch);
    assert_eq!(gc.len(), 1);
    fail(&mut s, gc);
    assert!(is_store_error(s.done(op)), "{:?}", s.done(op));
    assert_eq!(s.done_count(op), 1);
    // Only the held batches of the pinged contacts' updates remain.
    commit_all(&mut s);
    assert_eq!(s.node.operations_in_flight(), 0);
    assert_eq!(s.node.stats().store_failures, 5);
}
