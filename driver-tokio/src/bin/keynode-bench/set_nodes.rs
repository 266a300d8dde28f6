//! Forced `set_node` calls persisted per second by one agent (LMDB on
//! disk, in a temporary directory under the current one), one at a time
//! and with many in flight: what the store thread's group commit buys.
//! A call returns only once its batch is committed, so every call counted
//! is durable.

use std::net::SocketAddr;
use std::time::Instant;

use futures::StreamExt;
use keynode_core::{ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId};
use keynode_tokio::{Agent, AgentConfig, SetNodeOptions};
use rand::SeedableRng;
use serde::Serialize;

/// What the run measured.
#[derive(Serialize)]
pub(crate) struct Report {
    /// Calls made in each of the two runs.
    calls: usize,
    /// Calls in flight at once in the second run.
    in_flight: usize,
    /// The bucket size.
    k: usize,
    /// Persisted per second, one call at a time.
    one_at_a_time_per_s: f64,
    /// Persisted per second with `in_flight` calls at once.
    in_flight_per_s: f64,
    /// The same with group commit off (`max_store_group` 1: one write
    /// transaction per batch, as before group commit), in the same run.
    in_flight_ungrouped_per_s: f64,
    /// Contacts after both runs (at most `2 * calls`: some NodeIds meet a
    /// full bucket and replace an older contact, forced).
    contacts: usize,
    /// Restart of the agent on its directory with those contacts: start to
    /// ready (LMDB opened, every record loaded, the graph restored), ms.
    restart_ms: f64,
}

fn data() -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

/// `calls` forced `set_node`s with at most `in_flight` running at once;
/// the rate per second.
async fn timed(agent: &Agent, ids: &[NodeId], in_flight: usize) -> crate::BenchResult<f64> {
    let t = Instant::now();
    let mut calls = futures::stream::iter(ids.iter().enumerate().map(|(i, id)| {
        let address = NodeAddress::from(SocketAddr::from((
            [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
            1314,
        )));
        agent.set_node(*id, address, data(), SetNodeOptions::default().force(true))
    }))
    .buffer_unordered(in_flight.max(1));
    while let Some(result) = calls.next().await {
        result?;
    }
    Ok(ids.len() as f64 / t.elapsed().as_secs_f64())
}

/// `k`: the bucket size (`Config::k`); a large one keeps more of the
/// contacts, for the restart's figure.
pub(crate) async fn run(calls: usize, in_flight: usize, k: usize) -> crate::BenchResult<Report> {
    let root = tempfile::tempdir_in(std::env::current_dir()?)?;
    let dir = root.path().join("agent");
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut config = AgentConfig::new(&dir, loopback);
    // A bench of the store, not of the table's diversity rule: the
    // addresses are private (10/8), which this lets in.
    config.config.ip_group_limits.exempt_private = true;
    config.config.k = k;
    config.config.max_lookup_candidates = config.config.max_lookup_candidates.max(k);
    let agent = keynode_tokio::start(config.clone()).await?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut ids = |n| -> Vec<NodeId> { (0..n).map(|_| NodeId::random(&mut rng)).collect() };
    let (first, second, third) = (ids(calls), ids(calls), ids(calls));
    // Group commit off first, on its own agent and directory.
    let mut ungrouped = AgentConfig::new(root.path().join("ungrouped"), loopback);
    ungrouped.config = config.config.clone();
    ungrouped.max_store_group = 1;
    let baseline = keynode_tokio::start(ungrouped).await?;
    let in_flight_ungrouped_per_s = timed(&baseline, &third, in_flight).await?;
    baseline.stop().await?;
    let one_at_a_time_per_s = timed(&agent, &first, 1).await?;
    let in_flight_per_s = timed(&agent, &second, in_flight).await?;
    let contacts = agent
        .get_all()
        .await?
        .iter()
        .map(|(_, bucket)| bucket.len())
        .sum();
    agent.stop().await?;
    let t = Instant::now();
    let again = keynode_tokio::start(config).await?;
    let restart_ms = t.elapsed().as_secs_f64() * 1000.0;
    again.stop().await?;
    Ok(Report {
        calls,
        in_flight,
        k,
        one_at_a_time_per_s,
        in_flight_per_s,
        in_flight_ungrouped_per_s,
        contacts,
        restart_ms,
    })
}
