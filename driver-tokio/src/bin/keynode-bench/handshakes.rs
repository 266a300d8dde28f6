//! QUIC handshakes per second between agents, an agent's start-to-ready
//! time and its resident memory.

use std::net::SocketAddr;
use std::time::Instant;

use keynode_core::NodeAddress;
use keynode_tokio::{AgentConfig, PingOptions};
use serde::Serialize;

/// What the handshake run measured.
#[derive(Serialize)]
pub(crate) struct Report {
    /// Handshakes timed (all clients connecting at once).
    handshakes: usize,
    /// Handshakes that proved the server's NodeId.
    handshakes_ok: usize,
    /// Handshakes per second.
    handshakes_per_s: f64,
    /// Time from `keynode_tokio::start` to a started manager, median over the clients, ms.
    start_to_ready_p50_ms: f64,
    /// Resident memory of the process per agent, KiB (all agents running).
    rss_per_agent_kib: f64,
    /// Resident memory of the process with one agent, KiB.
    rss_one_agent_kib: f64,
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0.0)
}

/// Starts a server agent and `clients` client agents, then times every
/// client's handshake with the server, all at once.
pub(crate) async fn run(count: usize) -> crate::BenchResult<Report> {
    let root = tempfile::tempdir()?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let base = rss_kib();
    let server =
        keynode_tokio::start(AgentConfig::new(root.path().join("server"), loopback)).await?;
    let rss_one = rss_kib() - base;
    let mut clients = Vec::with_capacity(count);
    let mut starts = Vec::with_capacity(count);
    for i in 0..count {
        let t = Instant::now();
        clients.push(
            keynode_tokio::start(AgentConfig::new(
                root.path().join(format!("c{i}")),
                loopback,
            ))
            .await?,
        );
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rss_all = rss_kib() - base;
    let at = NodeAddress::from(server.local_addr());
    let id = server.node_id();
    let t = Instant::now();
    let pings = clients.iter().map(|c| {
        let at = at.clone();
        let c = c.clone();
        tokio::spawn(async move { c.ping_node_address(id, at, PingOptions::default()).await })
    });
    let mut ok = 0;
    for p in pings.collect::<Vec<_>>() {
        if matches!(p.await, Ok(Ok(true))) {
            ok += 1;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    starts.sort_by(f64::total_cmp);
    let report = Report {
        handshakes: clients.len(),
        handshakes_ok: ok,
        handshakes_per_s: clients.len() as f64 / elapsed,
        start_to_ready_p50_ms: starts.get(starts.len() / 2).copied().unwrap_or(0.0),
        rss_per_agent_kib: rss_all / (clients.len() + 1) as f64,
        rss_one_agent_kib: rss_one,
    };
    for c in &clients {
        c.stop().await?;
    }
    server.stop().await?;
    Ok(report)
}
