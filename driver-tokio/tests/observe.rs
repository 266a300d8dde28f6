//! The agents' metrics text: what `promtool` accepts, saying what the
//! snapshot says. Events in order, lag and the snapshot's counts are in the
//! conformance suite (`tests/conformance.rs`, `observe::`), on every
//! runtime; the text is the agent's, the same on every runtime, and this
//! check needs promtool, so it runs once, here.

use std::net::SocketAddr;

use keynode_agent::{FindOptions, SyncOptions};
use keynode_core::metrics::{ConnKind, Direction, LookupOutcome};
use keynode_core::{ContactMode, NodeAddress, SeedNodes};
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

/// After a join and a find (so that the counters are not all zero), each
/// agent's text passes `promtool check metrics` and its samples are the
/// snapshot's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_text_passes_promtool_and_says_what_the_snapshot_says() {
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
    b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    c.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    assert!(
        b.find_node(c.node_id(), FindOptions::default())
            .await
            .unwrap()
            .is_some()
    );

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
    // The relay's families too: on loopback no agent is known public, so
    // none relays (the default, `RelayServe::WhenPublic`).
    assert!(!snapshot.relay.relaying);
    assert_eq!(sample(&text, "keynode_relay_serving"), 0);
    assert_eq!(
        sample(&text, "keynode_relay_frames_forwarded_total"),
        snapshot.relay.stats.frames_forwarded
    );
    assert_eq!(
        sample(&text, "keynode_relay_reservations_held"),
        snapshot.core.relay_reservations
    );
    for (reason, count) in snapshot.relay.drops() {
        let name = format!("keynode_relay_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &name), count, "{name}");
    }
    for (reason, count) in snapshot.relay.refusals() {
        let name = format!("keynode_relay_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&text, &name), count, "{name}");
    }
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
    a.stop().await.unwrap();
    b.stop().await.unwrap();
    c.stop().await.unwrap();
}
