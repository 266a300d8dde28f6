//! The cost of one datagram as the node holds more connections (issue 15,
//! defect 2): a node holding 10, 1,000 and 10,000 connections (inbound
//! handshakes from a raw quinn-proto client, the admission limits raised to
//! let them all in) handles a datagram for one of them, and is drained.
//! With each datagram routed to its connection and the connections'
//! deadlines in a timer table, the cost stays flat; before, every drive
//! moved every connection.
//!
//! The datagram is one of the held connections' Initials again (a
//! duplicate: decrypted, found a duplicate, acknowledged), so that every
//! iteration does the same work.

#![allow(clippy::disallowed_methods)] // a benchmark reads the clock

#[path = "../tests/initials/mod.rs"]
mod initials;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keynode_core::net::{DriverEvent, NetConfig, Node};
use keynode_core::{Config, Now, UserCall};

fn node_holding(held: usize) -> (Node, Now, SocketAddr, Vec<u8>) {
    let now = Now::new(Instant::now(), 1_700_000_000_000);
    let mut config = Config::default();
    config.max_connections = 1 << 20;
    let mut net = NetConfig::default();
    net.max_handshakes = 1 << 20;
    net.max_handshakes_per_ip = 1 << 20;
    net.retry_above_handshakes = 1 << 20;
    net.handshake_timeout = Duration::from_secs(3600);
    let mut node = Node::new(config, net, &[1; 32], now, [1; 32]).expect("node");
    node.call(now, UserCall::Start).expect("start");
    while node.poll().is_some() {}
    let server = SocketAddr::from(([192, 0, 2, 1], 4000));
    let mut initials = initials::Initials::new();
    let mut last = (server, Vec::new());
    for i in 0..held {
        let bytes = initials.next(now.mono, server);
        let from = SocketAddr::from(([198, 51, (i >> 16) as u8, (i >> 8) as u8], i as u16 | 1));
        node.handle(
            now,
            DriverEvent::Datagram {
                from,
                bytes: &bytes,
            },
        );
        while node.poll().is_some() {}
        last = (from, bytes);
    }
    assert_eq!(node.admission_stats().handshaking, held);
    (node, now, last.0, last.1)
}

fn datagrams(c: &mut Criterion) {
    let mut group = c.benchmark_group("datagram");
    group.sample_size(20);
    for held in [10, 1_000, 10_000] {
        let (mut node, now, from, bytes) = node_holding(held);
        group.bench_function(format!("{held} connections"), |b| {
            b.iter(|| {
                node.handle(
                    now,
                    DriverEvent::Datagram {
                        from,
                        bytes: &bytes,
                    },
                );
                while node.poll().is_some() {}
            })
        });
        let stats = node.admission_stats();
        eprintln!(
            "{held} connections held: {} in the table, {} deadlines",
            stats.connections, stats.deadlines
        );
    }
    group.finish();
}

criterion_group!(benches, datagrams);
criterion_main!(benches);
