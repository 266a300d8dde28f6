//! Agents on loopback with real UDP sockets, QUIC and LMDB directories.
//!
//! What every runtime must do alike (sync, find, ping, claim, chain data,
//! restart, mDNS, stop while operations run) is in the conformance suite,
//! `tests/conformance.rs`; this file holds what is this driver's own.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use keynode_core::claims::KeyPair;
use keynode_core::wire::{Request, Response};
use keynode_core::{NodeAddress, SeedNodes};
use keynode_tokio::demo::{self, DemoOptions};
use keynode_tokio::{
    Agent, AgentConfig, AgentError, ClaimOptions, FindOptions, PingOptions, SetupError,
    SyncOptions, WithConnOptions,
};

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
async fn twenty_agents_sync_through_one_seed_and_find_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for i in 0..20 {
        agents.push(start(dir.path(), &format!("a{i}")).await);
    }
    let seed = seeds(&agents[0]);
    for agent in agents.iter().skip(1) {
        agent
            .sync_node_graph(seed.clone(), SyncOptions::default().blocking(true))
            .await
            .unwrap();
    }
    for (i, from) in agents.iter().enumerate() {
        for (j, to) in agents.iter().enumerate() {
            if i == j {
                continue;
            }
            let found = from
                .find_node(to.node_id(), FindOptions::default())
                .await
                .unwrap();
            let (address, _) = found.unwrap_or_else(|| panic!("agent {i} finds agent {j}"));
            assert_eq!(address, NodeAddress::from(to.local_addr()));
        }
    }
    for agent in &agents {
        agent.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_certificate_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a").await;
    let b = start(dir.path(), "b").await;
    let impostor = KeyPair::from_seed(&[42; 32]).unwrap().node_id();
    let at_b = NodeAddress::from(b.local_addr());
    assert!(
        !a.ping_node_address(impostor, at_b.clone(), PingOptions::default())
            .await
            .unwrap()
    );
    assert!(
        a.ping_node_address(b.node_id(), at_b, PingOptions::default())
            .await
            .unwrap()
    );
    assert!(
        a.connections()
            .await
            .unwrap()
            .iter()
            .all(|(_, peer, _)| *peer != impostor)
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_its_id_graph_sigchain_and_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a").await;
    let b = start(dir.path(), "b").await;
    b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    a.allow_claims_from(b.node_id(), true).await.unwrap();
    b.claim_node(a.node_id(), ClaimOptions::default())
        .await
        .unwrap();
    let id = b.node_id();
    let graph = b.get_all().await.unwrap();
    let chain = b.sigchain().await.unwrap();
    let tasks = b.scheduled_tasks();
    assert!(!graph.is_empty());
    assert_eq!(chain.len(), 1);
    assert_eq!(
        tasks.len(),
        257,
        "256 refresh tasks and the connection check"
    );
    b.stop().await.unwrap();

    let again = start(dir.path(), "b").await;
    assert_eq!(again.node_id(), id);
    assert_eq!(again.get_all().await.unwrap(), graph);
    assert_eq!(again.sigchain().await.unwrap(), chain);
    let tasks_again = again.scheduled_tasks();
    assert_eq!(tasks_again, tasks);
    again.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_conn_releases_its_use_on_error_and_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "a").await;
    let b = start(dir.path(), "b").await;
    b.sync_node_graph(seeds(&a), SyncOptions::default().blocking(true))
        .await
        .unwrap();
    let target = a.node_id();
    let leases = |agent: Agent| async move { agent.in_flight().leases };

    // A closure that talks to the peer and succeeds.
    let answer = b
        .with_conn_f(target, WithConnOptions::default(), |conn| async move {
            conn.request(Request::ClosestNodes { target }).await
        })
        .await
        .unwrap();
    assert!(matches!(answer, Response::ClosestNodes { .. }));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(leases(b.clone()).await, 0, "released after success");

    // A closure that fails.
    let failed: Result<(), AgentError> = b
        .with_conn_f(target, WithConnOptions::default(), |_conn| async move {
            Err::<(), _>(AgentError::Stopped)
        })
        .await;
    assert!(failed.is_err());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(leases(b.clone()).await, 0, "released after an error");

    // A stream held, then dropped half-way.
    let stream = b
        .with_conn_g(target, WithConnOptions::default(), |conn| {
            futures::stream::iter(0..3).then(move |i| {
                let conn = conn.clone();
                async move { (i, conn.peer()) }
            })
        })
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first, (0, target));
    assert_eq!(leases(b.clone()).await, 1, "held while the stream lives");
    drop(stream);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        leases(b.clone()).await,
        0,
        "released when the stream is dropped"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_key_moves_every_contact_and_the_agent_is_found_under_its_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(start(dir.path(), &format!("r{i}")).await);
    }
    let seed = seeds(&agents[0]);
    for agent in agents.iter().skip(1) {
        agent
            .sync_node_graph(seed.clone(), SyncOptions::default().blocking(true))
            .await
            .unwrap();
    }
    let x = agents[3].clone();
    let old = x.node_id();
    let before: usize = x
        .get_all()
        .await
        .unwrap()
        .iter()
        .map(|(_, b)| b.len())
        .sum();
    let new = x.renew_key().await.unwrap();
    assert_ne!(old, new);
    assert_eq!(x.node_id(), new);
    let after = x.get_all().await.unwrap();
    for (bucket, contacts) in &after {
        for (id, _) in contacts {
            assert_eq!(
                new.bucket_index(id),
                Some(*bucket),
                "{id} is in its bucket under the new id"
            );
        }
    }
    assert_eq!(after.iter().map(|(_, b)| b.len()).sum::<usize>(), before);
    // The key file holds the new key: a restart keeps the new NodeId.
    let secret = keynode_tokio::load_or_create_key(&dir.path().join("r3")).unwrap();
    assert_eq!(KeyPair::from_seed(&secret).unwrap().node_id(), new);
    // The others learn the new NodeId and find the agent under it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, other) in agents.iter().enumerate() {
        if i == 3 {
            continue;
        }
        let found = other.find_node(new, FindOptions::default()).await.unwrap();
        assert_eq!(
            found.map(|(address, _)| address),
            Some(NodeAddress::from(x.local_addr())),
            "agent {i} finds the renewed agent"
        );
    }
    for agent in &agents {
        agent.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_data_directory_serves_one_agent_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), "same").await;
    let second = keynode_tokio::start(AgentConfig::new(dir.path().join("same"), loopback())).await;
    match second {
        Err(AgentError::Setup(SetupError::DataDir { source, .. })) => {
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock);
        }
        Err(other) => panic!("expected the directory to be busy, got {other}"),
        Ok(_) => panic!("two agents opened one data directory"),
    }
    a.stop().await.unwrap();
    // Free again as soon as the first has stopped.
    let again = start(dir.path(), "same").await;
    again.stop().await.unwrap();
}

/// `stop` returns once the agent's sockets are closed, so an agent on a
/// fixed port restarts on it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_restarts_at_once_on_its_port() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path(), "a").await;
    let (at, id) = (first.local_addr(), first.node_id());
    first.stop().await.unwrap();
    for round in 0..30 {
        let again = keynode_tokio::start(AgentConfig::new(dir.path().join("a"), at))
            .await
            .unwrap_or_else(|e| panic!("restart {round} on {at}: {e}"));
        assert_eq!((again.local_addr(), again.node_id()), (at, id));
        again.stop().await.unwrap();
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_mdns_group_is_refused_at_start_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(dir.path().join("v6"), loopback());
    config.config.mdns = Some(keynode_core::MdnsConfig {
        groups: vec![
            std::net::IpAddr::from([224, 0, 0, 250]),
            "ff02::fa17".parse().unwrap(),
        ],
        port: 40_000 + (std::process::id() % 20_000) as u16,
    });
    match keynode_tokio::start(config).await {
        Err(AgentError::Setup(keynode_tokio::SetupError::Socket { source, .. })) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput);
            let message = source.to_string();
            assert!(
                message.contains("ff02::fa17") && message.contains("IPv4 only"),
                "{message}"
            );
        }
        Err(other) => panic!("expected the IPv6 group to be refused, got {other}"),
        Ok(_) => panic!("an agent started with an IPv6 mDNS group its socket cannot join"),
    }
}
