//! Cancelling an operation mid-flight (what an agent does when the future
//! of a call is dropped or its time runs out): it ends with `Cancelled`
//! once, and what it held goes: the operation and its children at once, a
//! connection use at once, the answers it awaited when they arrive.

mod common;

use std::time::Duration;

use common::{Net, STEPS, id, know, network};
use keynode_core::{FindOptions, InFlight, OpError};

/// Nodes 1..=n, each knowing the next: a lookup from 1 walks the chain.
fn chain(n: u8) -> Net {
    let mut net = network(n);
    net.latency = Duration::from_millis(20);
    for i in 1..n {
        know(&mut net, i, i + 1);
    }
    net
}

fn held(net: &mut Net, node: u8) -> InFlight {
    net.node(id(node)).in_flight()
}

#[test]
fn a_find_cancelled_mid_lookup_leaves_no_operation_lease_or_wait_behind() {
    let mut net = chain(6);
    // Settle the set-ups' own traffic first: node 1 is idle.
    net.drive_bounded(STEPS);
    assert_eq!(held(&mut net, 1).operations, 0);

    let op = net.call(id(1), |m, now| {
        m.find_node(now, id(6), FindOptions::default()).unwrap()
    });
    // Until the lookup waits on the network (an attempt or a request).
    let mut steps = 0;
    while held(&mut net, 1).waits == 0 {
        assert!(net.step(), "the lookup sends something");
        steps += 1;
        assert!(steps < STEPS, "the lookup never waited on the network");
    }
    assert!(net.done(id(1), op).is_none(), "the lookup is under way");
    assert!(held(&mut net, 1).operations > 0);

    net.call(id(1), |m, now| m.cancel(now, op).unwrap());
    assert_eq!(net.done(id(1), op), Some(Err(OpError::Cancelled)));
    let now = held(&mut net, 1);
    assert_eq!(now.operations, 0, "the lookup and its children are gone");
    assert_eq!(now.leases, 0);

    // The answers it awaited come (or time out) and are dropped as stale.
    net.drive_bounded(STEPS);
    assert_eq!(held(&mut net, 1), InFlight::default());
    let dones = net.peers[&id(1)]
        .outputs
        .iter()
        .filter(|o| matches!(o, keynode_core::Output::Done { op: x, .. } if *x == op))
        .count();
    assert_eq!(dones, 1, "exactly one Done");
}

#[test]
fn an_acquire_cancelled_while_dialling_hands_out_no_lease() {
    let mut net = chain(3);
    net.drive_bounded(STEPS);
    let op = net.call(id(1), |m, now| {
        m.acquire_connection(now, id(3), None).unwrap()
    });
    let mut steps = 0;
    while held(&mut net, 1).waits == 0 {
        assert!(net.step(), "the acquire sends something");
        steps += 1;
        assert!(steps < STEPS, "the acquire never waited on the network");
    }
    net.call(id(1), |m, now| m.cancel(now, op).unwrap());
    assert_eq!(net.done(id(1), op), Some(Err(OpError::Cancelled)));
    net.drive_bounded(STEPS);
    assert_eq!(held(&mut net, 1), InFlight::default());
}
