//! Joining made visible, with real agents on loopback: an agent whose seed
//! node is down logs the seed's error, reports that it has not joined, and
//! joins by itself once the seed comes up.
//!
//! Its own test binary: it installs the process's global log subscriber.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keynode_agent::AgentStatus;
use keynode_core::{NodeAddress, OpError, SeedNodes};
use keynode_tokio::{Agent, AgentConfig};

/// How long a condition is waited for before the test fails.
const WAIT: Duration = Duration::from_secs(60);

/// What the agents log at warning level, kept for the test to read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> Logs {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Polls `agent`'s status until `done` holds (at most [`WAIT`]).
async fn status_until(agent: &Agent, done: impl Fn(&AgentStatus) -> bool) -> AgentStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = agent.status().await.expect("status");
        if done(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {status:?} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts an agent on `bind`, retrying while the port is still held by a
/// stopped agent's socket (at most [`WAIT`]).
async fn start_on(config: impl Fn() -> AgentConfig) -> Agent {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match keynode_tokio::start(config()).await {
            Ok(agent) => return agent,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::info!("retrying start: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("agent does not start: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_seed_is_down_logs_it_says_not_joined_and_joins_once_it_is_up() {
    let logs = Logs::install();
    let dir = tempfile::tempdir().expect("tempdir");
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();

    // The seed: started once for its key and port, then stopped.
    let seed_dir = dir.path().join("seed");
    let seed = start_on(|| AgentConfig::new(&seed_dir, loopback)).await;
    let (seed_id, seed_addr) = (seed.node_id(), seed.local_addr());
    seed.stop().await.expect("seed stops");
    drop(seed);

    // The joiner: short timeouts and retries, so the test takes seconds.
    let joiner_config = || {
        let mut config = AgentConfig::new(dir.path().join("a"), loopback);
        config.config.connection_connect_timeout = Duration::from_millis(300);
        config.config.sync_retry_initial_delay = Duration::from_millis(100);
        config.config.sync_retry_max_delay = Duration::from_millis(400);
        config.config.sync_retry_attempts = 10_000;
        config
    };
    let a = start_on(joiner_config).await;
    let seeds = SeedNodes::new([(seed_id, NodeAddress::from(seed_addr))]);
    a.sync_node_graph(seeds, keynode_tokio::SyncOptions::default())
        .await
        .expect("sync scheduled");

    // Not joined, and it says why; retrying.
    let status = status_until(&a, |s| s.join.failed_attempts >= 2).await;
    assert!(!status.join.joined, "{status:?}");
    assert_eq!(status.contacts, 0);
    match &status.join.last_error {
        Some(OpError::SeedsUnreachable(failures)) => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].node_id, seed_id);
        }
        other => panic!("expected SeedsUnreachable, got {other:?}"),
    }
    assert!(status.join.retry_in.is_some(), "{status:?}");
    // The log names the seed and its error, and that it tries again.
    let text = logs.text();
    let seed_line = text
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&seed_id.to_string()))
        .unwrap_or_else(|| panic!("no warning names the seed {seed_id}:\n{text}"));
    assert!(
        seed_line.contains("unreachable") && seed_line.contains(&seed_addr.to_string()),
        "{seed_line}"
    );
    assert!(text.contains("not joined the network"), "{text}");

    // The seed comes up late, where it was: the agent joins by itself.
    let seed = start_on(|| AgentConfig::new(&seed_dir, seed_addr)).await;
    assert_eq!(seed.node_id(), seed_id);
    let status = status_until(&a, |s| s.join.joined).await;
    assert_eq!(status.join.failed_attempts, 0);
    assert_eq!(status.join.last_error, None);
    assert!(status.contacts >= 1, "{status:?}");
    assert!(
        a.get_all()
            .await
            .expect("get_all")
            .iter()
            .any(|(_, bucket)| bucket.iter().any(|(id, _)| *id == seed_id)),
        "the seed is a contact"
    );
    a.stop().await.expect("a stops");
    seed.stop().await.expect("seed stops");
}
