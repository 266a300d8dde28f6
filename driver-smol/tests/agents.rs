//! Agents on smol, on loopback, with real UDP sockets, QUIC and LMDB
//! directories; and a smol agent and a tokio agent talking to each other.
//!
//! What every runtime must do alike (sync, find, ping, claim, chain data,
//! restart, mDNS, stop while operations run) is in the conformance suite,
//! `tests/conformance.rs`; this file holds what is this driver's own.

use std::net::SocketAddr;

use keynode_core::{NodeAddress, SeedNodes};
use keynode_smol::{
    Agent, AgentConfig, AgentError, ChainOptions, ClaimOptions, FindOptions, PingOptions,
    SetupError, SyncOptions,
};

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

fn config(dir: &std::path::Path, name: &str) -> AgentConfig {
    AgentConfig::new(dir.join(name), loopback())
}

async fn start(dir: &std::path::Path, name: &str) -> Agent {
    keynode_smol::start(config(dir, name))
        .await
        .expect("agent starts")
}

fn seeds(agent: &Agent) -> SeedNodes {
    SeedNodes::new([(agent.node_id(), NodeAddress::from(agent.local_addr()))])
}

/// Each of `agents` finds, pings and claims every other one.
async fn find_ping_and_claim_all(agents: &[Agent]) {
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
            let pinged = from
                .ping_node(to.node_id(), PingOptions::default())
                .await
                .unwrap();
            assert!(pinged.is_some(), "agent {i} pings agent {j}");
        }
    }
    for (i, from) in agents.iter().enumerate() {
        for (j, to) in agents.iter().enumerate() {
            if i < j {
                to.allow_claims_from(from.node_id(), true).await.unwrap();
                from.claim_node(to.node_id(), ClaimOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("agent {i} claims agent {j}: {e}"));
            }
        }
    }
    // Every agent's chain holds one link per other agent, each verified
    // when fetched by another agent.
    for (i, agent) in agents.iter().enumerate() {
        let chain = agent.sigchain().await.unwrap();
        assert_eq!(chain.len(), agents.len() - 1, "agent {i}'s sigchain");
        let other = &agents[(i + 1) % agents.len()];
        let fetched = other
            .request_chain_data(agent.node_id(), ChainOptions::default())
            .await
            .unwrap();
        assert_eq!(
            fetched, chain,
            "agent {i}'s chain as another agent verified it"
        );
    }
}

#[test]
fn a_smol_agent_and_a_tokio_agent_find_ping_and_claim_each_other() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The tokio agent's loop runs on the tokio runtime; its handle, like
    // the smol agent's, only awaits channels and is used from smol here.
    let on_tokio = runtime
        .block_on(keynode_tokio::start(config(dir.path(), "tokio")))
        .expect("the tokio agent starts");
    smol::block_on(async {
        let on_smol = start(dir.path(), "smol").await;
        on_smol
            .sync_node_graph(seeds(&on_tokio), SyncOptions::default().blocking(true))
            .await
            .unwrap();
        let agents = [on_smol, on_tokio];
        find_ping_and_claim_all(&agents).await;
        for agent in &agents {
            agent.stop().await.unwrap();
        }
    });
}

#[test]
fn a_seed_named_by_hostname_is_resolved_and_joined() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let seed = start(dir.path(), "seed").await;
        let newcomer = start(dir.path(), "newcomer").await;
        let by_name: SeedNodes =
            format!("{}@localhost:{}", seed.node_id(), seed.local_addr().port())
                .parse()
                .unwrap();
        newcomer
            .sync_node_graph(by_name, SyncOptions::default().blocking(true))
            .await
            .unwrap();
        let found = newcomer
            .find_node(seed.node_id(), FindOptions::default())
            .await
            .unwrap();
        assert!(
            found.is_some(),
            "the seed, resolved from localhost, is found"
        );
        assert!(
            newcomer
                .connections()
                .await
                .unwrap()
                .iter()
                .any(|(_, peer, at)| *peer == seed.node_id() && *at == seed.local_addr()),
            "connected to the seed at the address localhost resolved to"
        );
        newcomer.stop().await.unwrap();
        seed.stop().await.unwrap();
    });
}

/// `stop` returns once the agent's sockets are closed, so an agent on a
/// fixed port restarts on it at once.
#[test]
fn a_stopped_smol_agent_restarts_at_once_on_its_port() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let first = start(dir.path(), "a").await;
        let (at, id) = (first.local_addr(), first.node_id());
        first.stop().await.unwrap();
        for round in 0..30 {
            let again = keynode_smol::start(AgentConfig::new(dir.path().join("a"), at))
                .await
                .unwrap_or_else(|e| panic!("restart {round} on {at}: {e}"));
            assert_eq!((again.local_addr(), again.node_id()), (at, id));
            again.stop().await.unwrap();
        }
    });
}

/// With every handle gone the agent stops by itself: its store is closed
/// and its directory freed for the next agent.
#[test]
fn dropping_every_handle_stops_the_agent_and_frees_its_directory() {
    smol::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let a = start(dir.path(), "a").await;
        let id = a.node_id();
        let copy = a.clone();
        drop(a);
        assert_eq!(
            copy.get_all().await.unwrap(),
            Vec::new(),
            "a clone keeps it running"
        );
        drop(copy);
        // The loop notices on its own time: retry while the directory is busy.
        let mut busy = 0;
        let again = loop {
            match keynode_smol::start(config(dir.path(), "a")).await {
                Ok(again) => break again,
                Err(AgentError::Setup(SetupError::DataDir { source, .. }))
                    if source.kind() == std::io::ErrorKind::WouldBlock && busy < 1000 =>
                {
                    busy += 1;
                    smol::Timer::after(std::time::Duration::from_millis(5)).await;
                }
                Err(e) => panic!("the directory stays busy ({busy} tries): {e}"),
            }
        };
        assert_eq!(again.node_id(), id);
        again.stop().await.unwrap();
    });
}
