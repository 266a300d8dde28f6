//! A smol agent and a tokio agent talking to each other, on loopback with
//! real UDP sockets, QUIC and LMDB directories: what no single runtime's
//! run of the conformance suite shows.
//!
//! What every runtime must do alike (sync, find, ping, claim, chain data,
//! key renewal, restart, mDNS, stop, `with_conn_*`) is in the conformance
//! suite, `tests/conformance.rs`.

use std::net::SocketAddr;

use keynode_core::{NodeAddress, SeedNodes};
use keynode_smol::{
    Agent, AgentConfig, ChainOptions, ClaimOptions, FindOptions, PingOptions, SyncOptions,
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
