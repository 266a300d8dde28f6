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

/// `promtool check metrics` on `text`: run when promtool is installed;
/// when it is not, the check is skipped unless `KEYNODE_PROMTOOL=require`.
fn promtool_check(text: &str) {
    use std::io::Write;
    let required = std::env::var("KEYNODE_PROMTOOL").is_ok_and(|v| v == "require");
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if !required => {
            eprintln!("promtool not run ({e}): set KEYNODE_PROMTOOL=require to fail instead");
            return;
        }
        Err(e) => panic!("KEYNODE_PROMTOOL=require but promtool did not start: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `line_start` (a name with its labels) in `text`.
fn sample(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
        .parse()
        .unwrap()
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
