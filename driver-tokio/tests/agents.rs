//! What is this driver's own, with agents on loopback (real UDP sockets,
//! QUIC and LMDB directories): the demo, and agents on a current-thread
//! runtime.
//!
//! What every runtime must do alike (sync, find, ping, claim, chain data,
//! key renewal, restart, mDNS, stop, `with_conn_*`) is in the conformance
//! suite, `tests/conformance.rs`.

use std::net::SocketAddr;

use keynode_core::{NodeAddress, SeedNodes};
use keynode_tokio::demo::{self, DemoOptions};
use keynode_tokio::{Agent, AgentConfig, FindOptions, SyncOptions};

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

async fn start(dir: &std::path::Path, name: &str) -> Agent {
    keynode_tokio::start(AgentConfig::new(dir.join(name), loopback()))
        .await
        .expect("agent starts")
}

fn seeds(agent: &Agent) -> SeedNodes {
    SeedNodes::new([(agent.node_id(), NodeAddress::from(agent.local_addr()))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_defaults_succeeds() {
    let options = DemoOptions {
        progress: false,
        ..DemoOptions::default()
    };
    let report = demo::run(options).await.unwrap();
    assert!(report.nodes >= 10);
    assert!(report.finds > 0);
    assert_eq!(report.finds_ok, report.finds);
    assert!(report.claims_ok > 0);
    assert_eq!(report.transfers, report.nodes, "one transfer an agent");
    assert_eq!(report.transfer_ok, report.transfers, "{report:?}");
    assert!(report.transfer_mib_s.is_some(), "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert_eq!(report.mdns_queries, 0, "mDNS is off by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_with_mdns_finds_every_agent_by_mdns() {
    let options = DemoOptions {
        nodes: 4,
        progress: false,
        transfer_bytes: 0,
        // A port of this test's own, so that parallel runs do not hear each other.
        mdns_port: Some(40_000 + (std::process::id() % 20_000) as u16 + 1),
        ..DemoOptions::default()
    };
    let report = demo::run(options).await.unwrap();
    assert_eq!(report.mdns_queries, 4, "{report:?}");
    assert_eq!(report.mdns_ok, 4, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
}

/// Opening and closing LMDB run on tokio's blocking threads, not in
/// `block_in_place`, which a current-thread runtime does not allow.
#[tokio::test]
async fn agents_start_work_and_stop_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a").await;
    let b = start(dir.path(), "b").await;
    b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    let found = b
        .find_node(a.node_id(), FindOptions::default())
        .await
        .unwrap();
    assert_eq!(
        found.map(|(address, _)| address),
        Some(NodeAddress::from(a.local_addr()))
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
