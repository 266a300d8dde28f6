//! What a user watching agents sees: `Agent::events()` in the order a
//! scripted scenario predicts, lag reported to a subscriber that does not
//! read, and metrics that count the scenario and that `promtool` accepts.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use keynode_agent::{AgentEvent, ClaimOptions, Events, EventsLagged, FindOptions, SyncOptions};
use keynode_core::metrics::{ConnKind, Direction, LookupOutcome};
use keynode_core::{ContactMode, NodeAddress, NodeId, Observation, SeedNodes};
use keynode_tokio::{Agent, AgentConfig};

mod common;

use common::{promtool_check, sample};

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

async fn start_with(dir: &std::path::Path, name: &str, f: impl FnOnce(&mut AgentConfig)) -> Agent {
    let mut config = AgentConfig::new(dir.join(name), loopback());
    f(&mut config);
    keynode_tokio::start(config).await.expect("agent starts")
}

async fn start(dir: &std::path::Path, name: &str) -> Agent {
    start_with(dir, name, |_| {}).await
}

fn seeds(agent: &Agent) -> SeedNodes {
    SeedNodes::new([(agent.node_id(), NodeAddress::from(agent.local_addr()))])
}

/// Reads `events` until one matches `until`; returns every event read,
/// the match last. A guard, not an assertion on time: a scenario that
/// never produces the event fails with what it did produce.
async fn read_until(
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
    match tokio::time::timeout(Duration::from_secs(60), read).await {
        Ok(true) => seen,
        Ok(false) => panic!("the stream ended before {what}; saw {seen:#?}"),
        Err(_) => panic!("no {what}; saw {seen:#?}"),
    }
}

fn connection_up(event: &AgentEvent, peer: NodeId) -> bool {
    matches!(event, AgentEvent::Node(Observation::ConnectionUp { node_id, .. }) if *node_id == peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_join_find_claim_and_stop_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a").await;
    let b = start(dir.path(), "b").await;
    let c = start(dir.path(), "c").await;
    let mut events = b.events();

    // Join: the connection to the seed, the seed as a contact, then the
    // sync's end.
    b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    let joined = read_until(&mut events, "SyncFinished", |e| {
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
        .unwrap();
    assert!(
        b.find_node(c.node_id(), FindOptions::default())
            .await
            .unwrap()
            .is_some()
    );
    read_until(&mut events, "the connection to c", |e| {
        connection_up(e, c.node_id())
    })
    .await;

    // Claim: a allows b, b claims a.
    a.allow_claims_from(b.node_id(), true).await.unwrap();
    b.claim_node(a.node_id(), ClaimOptions::default())
        .await
        .unwrap();
    read_until(&mut events, "ClaimLinked", |e| {
        matches!(e, AgentEvent::Node(Observation::ClaimLinked { node_id }) if *node_id == a.node_id())
    })
    .await;

    // Stop a: b sees its connection go down.
    a.stop().await.unwrap();
    let down = read_until(&mut events, "a's connection down", |e| {
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
    b.stop().await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(60), events.count())
        .await
        .expect("the stream ends after the stop");
    assert!(rest < 1024, "{rest}");
    c.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_is_told_how_many_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a").await;
    let b = start_with(dir.path(), "b", |c| c.max_buffered_events = 4).await;
    let mut idle = b.events();
    // More events than the buffer holds: every sync ends with one.
    for _ in 0..8 {
        b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
            .await
            .unwrap();
    }
    b.stop().await.unwrap();
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
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_and_lookups_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a").await;
    let b = start(dir.path(), "b").await;
    let c = start(dir.path(), "c").await;
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

    b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    c.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    let joined = b.metrics();
    assert!(joined.core.connections_opened.get(outbound) >= 1);
    assert!(a.metrics().core.connections_opened.get(inbound) >= 2);

    // A find of a node held by the seed: one more lookup, found.
    let found_before = b.metrics().core.lookups.get(LookupOutcome::Found);
    assert!(
        b.find_node(c.node_id(), FindOptions::default())
            .await
            .unwrap()
            .is_some()
    );
    let after = b.metrics();
    assert!(after.core.lookups.get(LookupOutcome::Found) > found_before);
    assert!(after.core.lookup_hops.count() >= 1);
    assert!(after.core.requests_served.total() + a.metrics().core.requests_served.total() >= 1);

    // The text says what the snapshot says, and promtool accepts it.
    let text = b.metrics_text();
    promtool_check(&text);
    let snapshot = b.metrics();
    assert_eq!(
        sample(
            &text,
            "keynode_connections_opened_total{mode=\"direct\",direction=\"outbound\"}"
        ),
        snapshot.core.connections_opened.get(outbound)
    );
    assert_eq!(
        sample(&text, "keynode_lookups_total{outcome=\"found\"}"),
        snapshot.core.lookups.get(LookupOutcome::Found)
    );
    assert_eq!(sample(&text, "keynode_contacts"), snapshot.contacts as u64);
    // Its peers all share one IP (127.0.0.1): one observer, no NAT class.
    assert_eq!(sample(&text, "keynode_nat_class{class=\"unknown\"}"), 1);
    assert_eq!(sample(&text, "keynode_nat_class{class=\"public\"}"), 0);
    // Each agent has its own registry: a's text counts a's connections.
    let a_text = a.metrics_text();
    promtool_check(&a_text);
    assert_eq!(
        sample(
            &a_text,
            "keynode_connections_opened_total{mode=\"direct\",direction=\"inbound\"}"
        ),
        a.metrics().core.connections_opened.get(inbound)
    );

    // Stopping a closes b's connection to it.
    let closed_before = b.metrics().core.connections_closed.get(outbound);
    a.stop().await.unwrap();
    let mut events = b.events();
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while b.metrics().core.connections_closed.get(outbound) == closed_before {
            if events.next().await.is_none() {
                break;
            }
        }
    })
    .await;
    assert!(b.metrics().core.connections_closed.get(outbound) > closed_before);
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}
