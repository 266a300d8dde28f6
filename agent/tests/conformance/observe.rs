//! What a user watching agents sees: `Agent::events()` in the order a
//! scripted scenario predicts, lag reported to a subscriber that does not
//! read, and `Agent::metrics()` counting the scenario's connections and
//! lookups. (That the text format passes `promtool` is checked once, in
//! keynode-tokio's `tests/observe.rs`: the text is the agent's, not the
//! runtime's.)

use std::time::Duration;

use futures::StreamExt;
use keynode_agent::{
    Agent, AgentEvent, ClaimOptions, Events, EventsLagged, FindOptions, SyncOptions,
};
use keynode_core::metrics::{ConnKind, Direction, LookupOutcome};
use keynode_core::{ContactMode, NodeAddress, NodeId, Observation, SeedNodes};

use super::*;

/// How long one step of a scenario may wait for its event: a guard
/// against a hang, not an assertion on time.
const STEP: Duration = Duration::from_secs(60);

fn seeds(agent: &Agent) -> SeedNodes {
    SeedNodes::new([(agent.node_id(), NodeAddress::from(agent.local_addr()))])
}

/// Reads `events` until one matches `until`; returns every event read,
/// the match last. A scenario that never produces the event fails with
/// what it did produce.
async fn read_until<R: Runtime>(
    events: &mut Events,
    what: &str,
    until: impl Fn(&AgentEvent) -> bool,
) -> Vec<AgentEvent> {
    let mut seen = Vec::new();
    let read = async {
        while let Some(event) = events.next().await {
            let event = event.expect("a subscriber that reads does not lag");
            let done = until(&event);
            seen.push(event);
            if done {
                return true;
            }
        }
        false
    };
    match within::<R, _>(STEP, read).await {
        Some(true) => seen,
        Some(false) => panic!("the stream ended before {what}; saw {seen:#?}"),
        None => panic!("no {what}; saw {seen:#?}"),
    }
}

fn connection_up(event: &AgentEvent, peer: NodeId) -> bool {
    matches!(event, AgentEvent::Node(Observation::ConnectionUp { node_id, .. }) if *node_id == peer)
}

/// b joins through a, finds c, claims a, and sees a stop: its events say
/// so in that order (the connection to the seed and the seed as a contact
/// before the sync's end), and the stream ends once b stops.
pub fn events_follow_join_find_claim_and_stop_in_order<R: Runtime>() {
    run::<R>(Duration::from_secs(300), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let c = start::<R>(dir.path(), "c", |_| {}).await;
        let mut events = b.events();

        // Join: the connection to the seed, the seed as a contact, then the
        // sync's end.
        b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
            .await
            .expect("b syncs through a");
        let joined = read_until::<R>(&mut events, "SyncFinished", |e| {
            matches!(e, AgentEvent::Node(Observation::SyncFinished))
        })
        .await;
        let up = joined
            .iter()
            .position(|e| connection_up(e, a.node_id()))
            .unwrap_or_else(|| panic!("the connection to the seed: {joined:#?}"));
        match &joined[up] {
            AgentEvent::Node(Observation::ConnectionUp {
                remote,
                mode,
                direction,
                ..
            }) => {
                assert_eq!(*remote, a.local_addr());
                assert_eq!(*mode, ContactMode::Direct);
                assert_eq!(*direction, Direction::Outbound);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            joined.iter().any(|e| matches!(
                e,
                AgentEvent::Node(Observation::ContactAdded { node_id, .. }) if *node_id == a.node_id()
            )),
            "the seed became a contact before the sync ended: {joined:#?}"
        );

        // Find: c joins through a; b finds it and is connected to it.
        c.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
            .await
            .expect("c syncs through a");
        assert!(
            b.find_node(c.node_id(), FindOptions::default())
                .await
                .expect("find_node")
                .is_some(),
            "b finds c"
        );
        read_until::<R>(&mut events, "the connection to c", |e| {
            connection_up(e, c.node_id())
        })
        .await;

        // Claim: a allows b, b claims a.
        a.allow_claims_from(b.node_id(), true)
            .await
            .expect("allowed");
        b.claim_node(a.node_id(), ClaimOptions::default())
            .await
            .expect("claimed");
        read_until::<R>(&mut events, "ClaimLinked", |e| {
            matches!(e, AgentEvent::Node(Observation::ClaimLinked { node_id }) if *node_id == a.node_id())
        })
        .await;

        // Stop a: b sees its connection go down.
        a.stop().await.expect("a stops");
        let down = read_until::<R>(&mut events, "a's connection down", |e| {
            matches!(e, AgentEvent::Node(Observation::ConnectionDown { node_id, .. }) if *node_id == a.node_id())
        })
        .await;
        match down.last() {
            Some(AgentEvent::Node(Observation::ConnectionDown { remote, mode, .. })) => {
                assert_eq!(*remote, a.local_addr());
                assert_eq!(*mode, ContactMode::Direct);
            }
            other => panic!("{other:?}"),
        }

        // The stream ends once b has stopped.
        b.stop().await.expect("b stops");
        let rest = within::<R, _>(STEP, events.count())
            .await
            .expect("the stream ends after the stop");
        assert!(rest < 1024, "{rest}");
        c.stop().await.expect("c stops");
    });
}

/// A subscriber that reads nothing while more events happen than the
/// buffer holds is told first how many it missed, then gets the events
/// still held (no more than the buffer), then the end.
pub fn a_subscriber_that_does_not_read_is_told_how_many_it_missed<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |c| c.max_buffered_events = 4).await;
        let mut idle = b.events();
        // More events than the buffer holds: every sync ends with one.
        for _ in 0..8 {
            b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
                .await
                .expect("b syncs through a");
        }
        b.stop().await.expect("b stops");
        let first = idle.next().await.expect("events were held");
        let missed = match first {
            Err(EventsLagged(n)) => n,
            Ok(event) => panic!("expected the lag first, got {event:?}"),
        };
        assert!(missed >= 4, "{missed}");
        // Then the events still held, up to the buffer, and the end.
        let mut held = 0;
        while let Some(event) = idle.next().await {
            event.expect("one lag report, then events");
            held += 1;
        }
        assert!(held <= 4, "{held}");
        assert!(held >= 1, "{held}");
        a.stop().await.expect("a stops");
    });
}

/// Each agent's snapshot counts its own part of a scenario: nothing at
/// the start; b's outbound connection and a's two inbound ones when b and
/// c join through a; one more found lookup, with its hops, when b finds
/// c; b's connection to a closed when a stops.
pub fn metrics_count_connections_lookups_and_closes<R: Runtime>() {
    run::<R>(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let a = start::<R>(dir.path(), "a", |_| {}).await;
        let b = start::<R>(dir.path(), "b", |_| {}).await;
        let c = start::<R>(dir.path(), "c", |_| {}).await;
        let outbound = ConnKind {
            mode: ContactMode::Direct,
            direction: Direction::Outbound,
        };
        let inbound = ConnKind {
            mode: ContactMode::Direct,
            direction: Direction::Inbound,
        };
        let before = b.metrics();
        assert_eq!(before.core.connections_opened.total(), 0);
        assert_eq!(before.core.lookups.total(), 0);

        for joining in [&b, &c] {
            joining
                .sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
                .await
                .expect("synced through a");
        }
        assert!(b.metrics().core.connections_opened.get(outbound) >= 1);
        assert!(a.metrics().core.connections_opened.get(inbound) >= 2);

        // A find of a node held by the seed: one more lookup, found.
        let found_before = b.metrics().core.lookups.get(LookupOutcome::Found);
        assert!(
            b.find_node(c.node_id(), FindOptions::default())
                .await
                .expect("find_node")
                .is_some(),
            "b finds c"
        );
        let after = b.metrics();
        assert!(after.core.lookups.get(LookupOutcome::Found) > found_before);
        assert!(after.core.lookup_hops.count() >= 1);
        assert!(after.core.requests_served.total() + a.metrics().core.requests_served.total() >= 1);

        // Stopping a closes b's connection to it; b's events wake the
        // check, so that it waits on nothing but the close.
        let closed_before = b.metrics().core.connections_closed.get(outbound);
        let mut events = b.events();
        a.stop().await.expect("a stops");
        let closed = within::<R, _>(STEP, async {
            while b.metrics().core.connections_closed.get(outbound) == closed_before {
                if events.next().await.is_none() {
                    break;
                }
            }
        })
        .await;
        assert!(
            closed.is_some(),
            "b's connection to a closes within {STEP:?}"
        );
        assert!(b.metrics().core.connections_closed.get(outbound) > closed_before);
        stop_all(&[&b, &c]).await;
    });
}
