#![allow(clippy::disallowed_methods)] // a test reads the clock

//! An agent under a handshake flood (issue 15): one address sends QUIC
//! Initials (a fresh connection each, never answered to) over real UDP on
//! loopback at 10,000 a second. The agent's memory stays bounded, its
//! handshakes in progress stay within its limits, and other agents
//! handshake with it and ping it throughout. The per-IP limits are on (no
//! loopback exemption): every agent here is at 127.0.0.1, the attacker too.

#[path = "../../core/tests/initials/mod.rs"]
mod initials;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keynode_core::NodeAddress;
use keynode_tokio::{Agent, AgentConfig, PingOptions};

/// The resident set of this process, in bytes (/proc/self/statm).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

async fn start(dir: &std::path::Path, name: &str) -> Agent {
    let mut config = AgentConfig::new(dir.join(name), ([127, 0, 0, 1], 0).into());
    // The limits as they are for any other address.
    config.net.exempt_loopback = false;
    keynode_tokio::start(config).await.expect("agent starts")
}

/// Sends `rate` Initials a second for `secs` from one socket to `to`, from
/// a pool of distinct Initials made beforehand (each a fresh connection:
/// the server keeps nothing of one it answered with a Retry, so one sent
/// again is new to it). Returns the count sent.
fn flood(to: SocketAddr, rate: usize, secs: u64, running: Arc<AtomicBool>) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    let mut initials = initials::Initials::new();
    let pool: Vec<Vec<u8>> = (0..4_000)
        .map(|_| initials.next(Instant::now(), to))
        .collect();
    running.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut sent = 0;
    while Instant::now() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as usize;
        while sent < due {
            let _ = socket.send_to(&pool[sent % pool.len()], to);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    running.store(false, Ordering::SeqCst);
    sent
}

/// The figures of one run.
struct Run {
    sent: usize,
    rss_idle: usize,
    rss_peak: usize,
    fresh_handshakes: usize,
    pings: usize,
}

async fn under_flood(rate: usize, secs: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let victim = start(dir.path(), "victim").await;
    let friend = start(dir.path(), "friend").await;
    let at = NodeAddress::from(victim.local_addr());
    assert!(
        friend
            .ping_node_address(victim.node_id(), at.clone(), PingOptions::default())
            .await
            .unwrap()
    );
    let rss_idle = rss();
    let running = Arc::new(AtomicBool::new(false));
    let to = victim.local_addr();
    let flag = running.clone();
    let attacker = std::thread::spawn(move || flood(to, rate, secs, flag));
    while !running.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let limits = keynode_core::net::NetConfig::default();
    let mut rss_peak = rss_idle;
    let mut fresh_handshakes = 0;
    let pings = AtomicUsize::new(0);
    let mut round = 0;
    while running.load(Ordering::SeqCst) {
        // A fresh agent: a new handshake during the flood, and a ping.
        let newcomer = start(dir.path(), &format!("n{round}")).await;
        round += 1;
        assert!(
            newcomer
                .ping_node_address(victim.node_id(), at.clone(), PingOptions::default())
                .await
                .unwrap(),
            "a new agent handshakes and pings during the flood"
        );
        fresh_handshakes += 1;
        assert!(
            friend
                .ping_node_address(victim.node_id(), at.clone(), PingOptions::default())
                .await
                .unwrap()
        );
        pings.fetch_add(2, Ordering::SeqCst);
        newcomer.stop().await.unwrap();
        let stats = victim.admission_stats();
        assert!(stats.handshaking <= limits.max_handshakes, "{stats:?}");
        assert!(
            stats.handshaking_unvalidated <= limits.max_handshakes_per_ip,
            "{stats:?}"
        );
        assert!(stats.connections <= limits.max_handshakes + 16, "{stats:?}");
        rss_peak = rss_peak.max(rss());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = attacker.join().expect("attacker");
    let stats = victim.admission_stats();
    assert!(stats.retries_sent > 0, "{stats:?}");
    victim.stop().await.unwrap();
    friend.stop().await.unwrap();
    Run {
        sent,
        rss_idle,
        rss_peak,
        fresh_handshakes,
        pings: pings.load(Ordering::SeqCst),
    }
}

fn report(run: &Run) {
    eprintln!(
        "{} Initials sent; RSS idle {:.1} MB, peak {:.1} MB (+{:.1} MB); \
         {} fresh handshakes and {} pings answered during the flood",
        run.sent,
        run.rss_idle as f64 / 1e6,
        run.rss_peak as f64 / 1e6,
        run.rss_peak.saturating_sub(run.rss_idle) as f64 / 1e6,
        run.fresh_handshakes,
        run.pings,
    );
}

/// 2 s at 10,000 Initials a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_under_a_handshake_flood_serves_others_in_bounded_memory() {
    let run = under_flood(10_000, 2).await;
    report(&run);
    assert!(run.fresh_handshakes >= 1);
    assert!(run.rss_peak - run.rss_idle < 64 << 20);
}

/// The figure: 10 s at 10,000 Initials a second
/// (`cargo test --release -p keynode-tokio --test flood -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn ten_seconds_of_handshake_flood() {
    let run = under_flood(10_000, 10).await;
    report(&run);
    assert!(run.fresh_handshakes >= 5);
    assert!(run.rss_peak - run.rss_idle < 64 << 20);
}
