//! Cancellation, per-call timeouts and the bounded call queue (issue 16),
//! on real UDP: a call's future dropped, or past its time, cancels its
//! operation in the node, and nothing it held is left behind; and
//! `with_conn_f`/`with_conn_g` give their connection's use back however
//! they end.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{Either, select};
use keynode_agent::{Agent, AgentError, FindOptions, PingOptions, SetNodeOptions, WithConnOptions};
use keynode_core::wire::{Request, Response};
use keynode_core::{ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId};

use super::{Runtime, connect, eventually, leases, run, start, stop_all};

/// Nothing listens there: an attempt waits for its connect timeout.
fn nowhere() -> NodeAddress {
    NodeAddress::from(SocketAddr::from(([127, 0, 0, 1], 9)))
}

/// A node nobody runs.
fn stranger() -> NodeId {
    NodeId::from_bytes([7; 32])
}

/// An agent whose connection attempts wait ten minutes, far beyond any
/// test's limit: an operation waiting on one ends before only if it is
/// cancelled. It knows the stranger at an address where nothing answers.
async fn lonely<R: Runtime>(dir: &std::path::Path, max_queued_calls: usize) -> Agent {
    let a = start::<R>(dir, "a", |c| {
        c.config.connection_connect_timeout = Duration::from_secs(600);
        c.config.find_node_timeout = Duration::from_secs(600);
        c.max_queued_calls = max_queued_calls;
    })
    .await;
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    };
    a.set_node(
        stranger(),
        nowhere(),
        data,
        SetNodeOptions::default().force(true),
    )
    .await
    .expect("set_node");
    a
}

/// Runs `call` until the node has an operation under way and waits on
/// the network, then drops it.
async fn drop_mid_flight<R: Runtime, T>(agent: &Agent, call: impl Future<Output = T>) {
    let under_way = eventually::<R, _>(|| async {
        let held = agent.in_flight();
        held.operations > 0 && held.waits > 0
    });
    match select(Box::pin(call), Box::pin(under_way)).await {
        Either::Left(_) => panic!("the call ended before it was dropped"),
        Either::Right(((), call)) => drop(call),
    }
}

/// Asserts that the agent holds nothing for operations: no operation,
/// use of a connection, request or waiting call. A call made first goes
/// through the loop after the cancels sent before it, so they have all
/// been carried out. (A connection attempt a cancelled operation started
/// still runs to its own timeout; its answer is then dropped as stale.)
async fn assert_released(agent: &Agent) {
    agent
        .allow_claims_from(stranger(), false)
        .await
        .expect("a call after the cancels");
    let held = agent.in_flight();
    assert_eq!(
        (held.operations, held.leases, held.requests, held.calls),
        (0, 0, 0, 0),
        "{held:?}"
    );
}

/// A find dropped mid-lookup is cancelled in the node: no operation, use
/// of a connection, request or waiting call is left behind.
pub fn a_dropped_find_leaves_no_operation_lease_or_slot_behind<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = lonely::<R>(dir.path(), 16).await;
        assert_released(&a).await;
        drop_mid_flight::<R, _>(&a, a.find_node(stranger(), FindOptions::default())).await;
        // Without the cancel the lookup would wait on its attempt for ten
        // minutes.
        assert_released(&a).await;
        // The agent goes on serving calls.
        a.unset_node(stranger()).await.expect("unset_node");
        stop_all(&[&a]).await;
    });
}

/// A call past its own timeout ends with the typed timeout and is
/// cancelled in the node as a dropped one is.
pub fn a_call_past_its_timeout_ends_typed_and_is_cancelled<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = lonely::<R>(dir.path(), 16).await;
        let limit = Duration::from_millis(200);
        let options = PingOptions::default().with_timeout(limit);
        match a.ping_node_address(stranger(), nowhere(), options).await {
            Err(AgentError::Timeout(d)) => assert_eq!(d, limit),
            other => panic!("a ping of nowhere within {limit:?}: {other:?}"),
        }
        assert_released(&a).await;
        let find = FindOptions::default().with_timeout(limit);
        match a.find_node(stranger(), find).await {
            Err(AgentError::Timeout(d)) => assert_eq!(d, limit),
            other => panic!("a find of the stranger within {limit:?}: {other:?}"),
        }
        assert_released(&a).await;
        stop_all(&[&a]).await;
    });
}

/// With the call queue full, one more call is refused with `Busy`; once
/// a call ends, calls go through again.
pub fn a_full_call_queue_refuses_with_busy<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = lonely::<R>(dir.path(), 1).await;
        let waiting = a.ping_node_address(stranger(), nowhere(), PingOptions::default());
        let refused = async {
            eventually::<R, _>(|| async { a.in_flight().operations > 0 }).await;
            a.unset_node(stranger()).await
        };
        match select(Box::pin(waiting), Box::pin(refused)).await {
            Either::Right((refused, waiting)) => {
                assert!(
                    matches!(refused, Err(AgentError::Busy { limit: 1 })),
                    "{refused:?}"
                );
                drop(waiting);
            }
            Either::Left((ended, _)) => panic!("the ping of nowhere ended: {ended:?}"),
        }
        assert_released(&a).await;
        a.unset_node(stranger())
            .await
            .expect("a slot is free again");
        stop_all(&[&a]).await;
    });
}

/// The use of a connection that `with_conn_f` or `with_conn_g` takes is
/// given back when the closure succeeds, when it fails, and when the
/// stream `with_conn_g` made is dropped half-way (and held while it lives).
pub fn with_conn_f_and_g_give_their_use_back_on_success_error_and_drop<R: Runtime>() {
    run::<R>(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        // b knows a and has a connection to it, unused.
        drop(connect(&b, &a).await);
        eventually::<R, _>(|| async { leases(&b).await == 0 }).await;
        let target = a.node_id();

        // A closure that talks to the peer and succeeds.
        let answer = b
            .with_conn_f(target, WithConnOptions::default(), |conn| async move {
                conn.request(Request::ClosestNodes { target }).await
            })
            .await
            .expect("the request is answered");
        assert!(
            matches!(answer, Response::ClosestNodes { .. }),
            "{answer:?}"
        );
        eventually::<R, _>(|| async { leases(&b).await == 0 }).await;

        // A closure that fails.
        let failed: Result<(), AgentError> = b
            .with_conn_f(target, WithConnOptions::default(), |_conn| async move {
                Err::<(), _>(AgentError::Stopped)
            })
            .await;
        assert!(matches!(failed, Err(AgentError::Stopped)), "{failed:?}");
        eventually::<R, _>(|| async { leases(&b).await == 0 }).await;

        // A stream held, then dropped half-way.
        let stream = b
            .with_conn_g(target, WithConnOptions::default(), |conn| {
                futures::stream::iter(0..3).then(move |i| {
                    let conn = conn.clone();
                    async move { (i, conn.peer()) }
                })
            })
            .await
            .expect("with_conn_g starts");
        let mut stream = Box::pin(stream);
        let first = stream
            .next()
            .await
            .expect("a first item")
            .expect("the first item is the closure's");
        assert_eq!(first, (0, target));
        assert_eq!(leases(&b).await, 1, "held while the stream lives");
        drop(stream);
        eventually::<R, _>(|| async { leases(&b).await == 0 }).await;
        stop_all(&[&a, &b]).await;
    });
}
