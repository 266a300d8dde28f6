//! `keynode demo`: a local network of agents that find, ping and claim
//! each other, then send each other a payload on an application protocol
//! (the [`echo`]) and check it came back whole.

pub mod echo;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use keynode_core::{NodeAddress, SeedNodes};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{
    Agent, AgentConfig, AgentError, ClaimOptions, FindOptions, PingOptions, ProtocolOptions,
    SetupError, SyncOptions,
};

/// What the demo does.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Agents to start.
    pub nodes: usize,
    /// Lookups of a random other agent per agent.
    pub finds_per_node: usize,
    /// Seed of the random choice of pairs (and of the payload).
    pub seed: u64,
    /// Bytes each agent sends to another's echo and gets back (0: no
    /// transfers).
    pub transfer_bytes: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// mDNS on this port (group 224.0.0.250 on loopback): every agent
    /// announces itself, and each looks another up by mDNS alone.
    /// `None`: no mDNS.
    pub mdns_port: Option<u16>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            nodes: 10,
            finds_per_node: 2,
            seed: 1,
            transfer_bytes: 1 << 20,
            progress: true,
            mdns_port: None,
        }
    }
}

/// The demo's results.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DemoReport {
    /// Agents started.
    pub nodes: usize,
    /// Lookups made.
    pub finds: usize,
    /// Lookups that found their target.
    pub finds_ok: usize,
    /// Pings answered.
    pub pings_ok: usize,
    /// Claims cross-signed.
    pub claims_ok: usize,
    /// mDNS queries made (one an agent, with `mdns_port`).
    pub mdns_queries: usize,
    /// mDNS queries answered with the agent's address.
    pub mdns_ok: usize,
    /// Median lookup time, milliseconds (`None`: no lookup succeeded).
    pub find_p50_ms: Option<f64>,
    /// 99th percentile lookup time, milliseconds.
    pub find_p99_ms: Option<f64>,
    /// Median time of lookups that had to open a connection (cold), ms.
    /// `None` when every lookup found a connection open (in small
    /// networks the sync connects every agent to every other).
    pub find_cold_p50_ms: Option<f64>,
    /// Lookups that had to open a connection.
    pub finds_cold: usize,
    /// Median time of the same lookup repeated on the connection it opened (warm), ms.
    pub find_warm_p50_ms: Option<f64>,
    /// Transfers tried: one an agent, of `transfer_bytes` each way on one
    /// stream of the echo protocol.
    pub transfers: usize,
    /// Transfers whose echo came back whole (same length, same SHA-256).
    pub transfer_ok: usize,
    /// MiB per second each way over the transfers that came back whole
    /// (their payloads over their total time; they run one after another).
    pub transfer_mib_s: Option<f64>,
    /// Operations that failed (errors, not found, unanswered pings, refused
    /// claims, transfers that failed or came back different).
    pub failures: usize,
    /// Wall time of the whole demo, seconds.
    pub wall_s: f64,
    /// Wall time of the joins (each agent but the seed syncing its graph
    /// through the seed, blocking, one after another), seconds.
    pub joins_s: f64,
    /// One join's time, median, ms.
    pub join_p50_ms: Option<f64>,
    /// The slowest join, ms.
    pub join_max_ms: Option<f64>,
    /// What failed, for the log (not part of the JSON report).
    #[serde(skip)]
    pub errors: Vec<String>,
}

/// The `p`th percentile of `sorted`; `None` for no samples (not 0 ms,
/// which would read as a measurement).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = ((p / 100.0) * (sorted.len().max(1) as f64 - 1.0)).round() as usize;
    sorted.get(rank).copied()
}

/// Milliseconds for the table; `-` for no samples.
fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// Starts `nodes` agents on loopback with LMDB in a temporary directory,
/// syncs them through the first as seed node, then runs lookups, pings,
/// claims and echo transfers between random pairs.
pub async fn run(options: DemoOptions) -> Result<DemoReport, AgentError> {
    let started = Instant::now();
    let root = tempfile::tempdir().map_err(|source| {
        AgentError::Setup(SetupError::DataDir {
            path: std::env::temp_dir(),
            source,
        })
    })?;
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let transfers_per_node = usize::from(options.transfer_bytes > 0);
    let mdns_per_node = usize::from(options.mdns_port.is_some());
    let steps = (options.nodes
        * (2 + options.finds_per_node + 2 + transfers_per_node + mdns_per_node))
        as u64;
    let bar = if options.progress {
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    bar.set_message("starting");
    // A constant name, checked by echo's tests.
    let echo_protocol = echo::protocol().expect("the echo protocol's name is valid");
    let mut agents: Vec<Agent> = Vec::with_capacity(options.nodes);
    let mut echoes = Vec::with_capacity(options.nodes);
    for i in 0..options.nodes {
        let mut config = AgentConfig::new(root.path().join(format!("agent-{i}")), loopback);
        if let Some(port) = options.mdns_port {
            config.config.mdns = Some(keynode_core::MdnsConfig {
                groups: vec![std::net::IpAddr::from([224, 0, 0, 250])],
                port,
            });
            config.mdns_interface = std::net::Ipv4Addr::LOCALHOST;
        }
        let agent = crate::start(config).await?;
        let listener = agent.accept(echo_protocol.clone(), ProtocolOptions::default())?;
        echoes.push(tokio::spawn(echo::serve(listener)));
        agents.push(agent);
        bar.inc(1);
    }
    let mut report = DemoReport {
        nodes: agents.len(),
        ..DemoReport::default()
    };
    let Some(seed) = agents.first().cloned() else {
        return Ok(report);
    };
    let seeds = SeedNodes::new([(seed.node_id(), NodeAddress::from(seed.local_addr()))]);

    bar.set_message("syncing");
    let joins = Instant::now();
    let mut join_ms = Vec::with_capacity(agents.len());
    for agent in agents.iter().skip(1) {
        let join = Instant::now();
        if let Err(e) = agent
            .sync_node_graph(seeds.clone(), SyncOptions::default().blocking(true))
            .await
        {
            report.fail(format!("sync of {} failed: {e}", agent.node_id()));
        }
        join_ms.push(join.elapsed().as_secs_f64() * 1000.0);
        bar.inc(1);
    }
    report.joins_s = joins.elapsed().as_secs_f64();
    join_ms.sort_by(f64::total_cmp);
    report.join_p50_ms = percentile(&join_ms, 50.0);
    report.join_max_ms = join_ms.last().copied();

    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let n = agents.len();
    let other = |i: usize, rng: &mut ChaCha8Rng| {
        if n < 2 {
            return i;
        }
        let j = rng.random_range(0..n - 1);
        if j >= i { j + 1 } else { j }
    };

    if options.mdns_port.is_some() {
        bar.set_message("mDNS");
        for (i, agent) in agents.iter().enumerate() {
            let j = other(i, &mut rng);
            let Some(target) = agents.get(j).filter(|_| j != i) else {
                continue;
            };
            report.mdns_queries += 1;
            match agent.query_mdns(target.node_id()).await {
                Ok(found) if found.contains(&target.local_addr()) => report.mdns_ok += 1,
                Ok(found) => report.fail(format!(
                    "agent {i} looked agent {j} up by mDNS and heard {found:?}"
                )),
                Err(e) => report.fail(format!("agent {i} querying mDNS for agent {j}: {e}")),
            }
            bar.inc(1);
        }
    }

    bar.set_message("finding");
    let mut latencies = Vec::new();
    let mut cold_latencies = Vec::new();
    let mut warm_latencies = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        for _ in 0..options.finds_per_node {
            let j = other(i, &mut rng);
            let Some(target) = agents.get(j).map(Agent::node_id) else {
                continue;
            };
            let cold = !agent
                .connections()
                .await?
                .iter()
                .any(|(_, peer, _)| *peer == target);
            let t = Instant::now();
            report.finds += 1;
            match agent.find_node(target, FindOptions::default()).await {
                Ok(Some(_)) => {
                    report.finds_ok += 1;
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    latencies.push(ms);
                    if cold {
                        cold_latencies.push(ms);
                        // The same lookup again, now on a warm connection.
                        let t = Instant::now();
                        if let Ok(Some(_)) = agent.find_node(target, FindOptions::default()).await {
                            warm_latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                }
                Ok(None) => report.fail(format!("agent {i} did not find agent {j}")),
                Err(e) => report.fail(format!("agent {i} finding agent {j}: {e}")),
            }
            bar.inc(1);
        }
    }

    bar.set_message("pinging");
    for (i, agent) in agents.iter().enumerate() {
        let j = other(i, &mut rng);
        let Some(target) = agents.get(j).map(Agent::node_id) else {
            continue;
        };
        match agent.ping_node(target, PingOptions::default()).await {
            Ok(Some(_)) => report.pings_ok += 1,
            Ok(None) => report.fail(format!("agent {i} got no answer from agent {j}")),
            Err(e) => report.fail(format!("agent {i} pinging agent {j}: {e}")),
        }
        bar.inc(1);
    }

    bar.set_message("claiming");
    for (i, agent) in agents.iter().enumerate() {
        let j = (i + 1) % n;
        if j == i {
            continue;
        }
        let Some(target) = agents.get(j).cloned() else {
            continue;
        };
        let claimed = async {
            target.allow_claims_from(agent.node_id(), true).await?;
            agent
                .claim_node(target.node_id(), ClaimOptions::default())
                .await
        };
        match claimed.await {
            Ok(()) => report.claims_ok += 1,
            Err(e) => report.fail(format!("agent {i} claiming agent {j}: {e}")),
        }
        bar.inc(1);
    }

    bar.set_message("sending");
    let mut payload = vec![0; options.transfer_bytes];
    rng.fill_bytes(&mut payload);
    let mut transfer_time = Duration::ZERO;
    let senders = if options.transfer_bytes > 0 { n } else { 0 };
    for (i, agent) in agents.iter().enumerate().take(senders) {
        let j = other(i, &mut rng);
        let Some(target) = agents.get(j).map(Agent::node_id).filter(|_| j != i) else {
            continue;
        };
        report.transfers += 1;
        match echo::transfer(agent, target, &echo_protocol, &payload).await {
            Ok(elapsed) => {
                report.transfer_ok += 1;
                transfer_time += elapsed;
            }
            Err(e) => report.fail(format!("agent {i} sending to agent {j}'s echo: {e}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Their tasks hold the listeners: aborted, they deregister the echo.
    for task in echoes {
        task.abort();
    }
    for agent in &agents {
        let _ = agent.stop().await;
    }
    latencies.sort_by(f64::total_cmp);
    report.find_p50_ms = percentile(&latencies, 50.0);
    report.find_p99_ms = percentile(&latencies, 99.0);
    cold_latencies.sort_by(f64::total_cmp);
    warm_latencies.sort_by(f64::total_cmp);
    report.finds_cold = cold_latencies.len();
    report.find_cold_p50_ms = percentile(&cold_latencies, 50.0);
    report.find_warm_p50_ms = percentile(&warm_latencies, 50.0);
    report.transfer_mib_s = (report.transfer_ok > 0).then(|| {
        let mib = (report.transfer_ok * options.transfer_bytes) as f64 / f64::from(1 << 20);
        mib / transfer_time.as_secs_f64().max(f64::MIN_POSITIVE)
    });
    report.wall_s = started.elapsed().as_secs_f64();
    // Give sockets a moment to close before the directory goes.
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(root);
    Ok(report)
}

impl DemoReport {
    fn fail(&mut self, error: String) {
        tracing::warn!("{error}");
        self.failures += 1;
        if self.errors.len() < 20 {
            self.errors.push(error);
        }
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let rows = [
            ("nodes", self.nodes.to_string()),
            ("finds", self.finds.to_string()),
            ("finds_ok", self.finds_ok.to_string()),
            ("pings_ok", self.pings_ok.to_string()),
            ("claims_ok", self.claims_ok.to_string()),
            ("mdns_queries", self.mdns_queries.to_string()),
            ("mdns_ok", self.mdns_ok.to_string()),
            ("find_p50_ms", ms(self.find_p50_ms)),
            ("find_p99_ms", ms(self.find_p99_ms)),
            ("finds_cold", self.finds_cold.to_string()),
            ("find_cold_p50_ms", ms(self.find_cold_p50_ms)),
            ("find_warm_p50_ms", ms(self.find_warm_p50_ms)),
            ("transfers", self.transfers.to_string()),
            ("transfer_ok", self.transfer_ok.to_string()),
            (
                "transfer_mib_s",
                self.transfer_mib_s
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
            ),
            ("failures", self.failures.to_string()),
            ("joins_s", format!("{:.2}", self.joins_s)),
            ("join_p50_ms", ms(self.join_p50_ms)),
            ("join_max_ms", ms(self.join_max_ms)),
            ("wall_s", format!("{:.2}", self.wall_s)),
        ];
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<18} {v:>10}\n"));
        }
        out
    }
}
