mod common;

// A store batch that fails is undone in memory (issue 15, defect 13): the
// graph always equals what committed plus the batches still in flight. The
// real LMDB version of this, through an agent, is driver-tokio's
// `store_full` test.

use std::time::Duration;

use common::{Script, addr};
use keynode_core::{
    BucketIndex, Config, ContactMode, Event, NodeAddress, NodeAddressScopes,
    NodeContactAddressData, NodeEvent, NodeId, OpError, OpId, Output, StoreBatch, StoreErrorKind,
};

fn quiet(k: usize) -> Config {
    let mut config = Config::default();
    config.k = k;
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

/// Node `n` of bucket 255 of `[0; 32]`.
fn far(n: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = 0x80;
    b[31] = n;
    NodeId::from_bytes(b)
}

fn data() -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

fn set(s: &mut Script, n: u8, force: bool) -> OpId {
    let op = s
        .node
        .set_node(
            s.now,
            far(n),
            NodeAddress::from(addr(n.into())),
            data(),
            false,
            force,
            None,
        )
        .unwrap();
    s.drain();
    op
}

fn held(s: &mut Script) -> Vec<StoreBatch> {
    std::mem::take(&mut s.held)
}

fn fail(s: &mut Script, batch: &StoreBatch) {
    s.handle(Event::StoreFailed {
        batch: batch.id,
        error: StoreErrorKind::MapFull,
    });
}

fn commit(s: &mut Script, batch: &StoreBatch) {
    s.store.apply(&batch.ops);
    s.handle(Event::StoreCommitted(batch.id));
}

/// The contacts of bucket 255, oldest first.
fn contacts(s: &Script) -> Vec<NodeId> {
    s.node
        .graph()
        .bucket(BucketIndex::FARTHEST)
        .iter()
        .map(|e| e.node_id)
        .collect()
}

#[test]
fn a_failed_set_node_leaves_no_contact_behind() {
    let mut s = Script::started(common::t0(), quiet(3), NodeId::from_bytes([0; 32]));
    s.hold_store = true;
    let op = set(&mut s, 1, false);
    assert_eq!(contacts(&s), vec![far(1)], "in memory while in flight");
    let batches = held(&mut s);
    fail(&mut s, &batches[0]);
    assert!(matches!(
        s.done(op),
        Some(Err(OpError::Store(StoreErrorKind::MapFull)))
    ));
    assert!(contacts(&s).is_empty(), "a failed batch is undone");
    assert!(
        s.outputs.iter().any(|o| matches!(
            o,
            Output::Event(NodeEvent::ContactRemoved { node_id }) if *node_id == far(1)
        )),
        "the undone contact is announced as removed"
    );
}

#[test]
fn batches_in_flight_survive_an_earlier_failure() {
    let mut s = Script::started(common::t0(), quiet(3), NodeId::from_bytes([0; 32]));
    s.hold_store = true;
    let _one = set(&mut s, 1, false);
    let _two = set(&mut s, 2, false);
    let batches = held(&mut s);
    assert_eq!(batches.len(), 2);
    fail(&mut s, &batches[0]);
    // The second batch may still land: it stays in memory.
    assert_eq!(contacts(&s), vec![far(2)]);
    commit(&mut s, &batches[1]);
    assert_eq!(contacts(&s), vec![far(2)]);
    // Memory equals the store.
    let stored: Vec<NodeId> = s
        .store
        .snapshot()
        .graph
        .map(|g| g.contacts.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    assert_eq!(stored, vec![far(2)]);
}

#[test]
fn a_failed_eviction_is_undone() {
    let mut s = Script::started(common::t0(), quiet(2), NodeId::from_bytes([0; 32]));
    let _ = set(&mut s, 1, false);
    let _ = set(&mut s, 2, false);
    assert_eq!(contacts(&s), vec![far(1), far(2)]);
    s.hold_store = true;
    // A forced set in a full bucket evicts the oldest, in one batch.
    let op = set(&mut s, 3, true);
    assert_eq!(contacts(&s), vec![far(2), far(3)]);
    let batches = held(&mut s);
    fail(&mut s, &batches[0]);
    assert!(matches!(
        s.done(op),
        Some(Err(OpError::Store(StoreErrorKind::MapFull)))
    ));
    assert_eq!(
        contacts(&s),
        vec![far(1), far(2)],
        "the evicted contact is back"
    );
    // And the graph works on: the next set lands.
    s.hold_store = false;
    let _ = set(&mut s, 4, true);
    assert_eq!(contacts(&s), vec![far(2), far(4)]);
}
