//! Same seed and same events give the same commands; another seed gives others.

mod common;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use common::{Net, addr, id};
use keynode_core::{Command, Config, FindOptions, NodeAddress, SeedNodes};

struct Run {
    hash: u64,
    steps: u64,
    commands: usize,
    connects_to_offline: usize,
}

fn run(seed_base: u64) -> Run {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::from_secs(30);
    config.retry_connections_delay = Duration::from_secs(20);
    config.connection_connect_timeout = Duration::from_secs(2);
    config.rpc_timeout = Duration::from_secs(2);

    let mut net = Net::new(common::t0());
    net.seed_base = seed_base;
    net.keep_trace = true;
    for i in 1..=12u8 {
        net.add(id(i), addr(i.into()), config.clone());
    }
    let seeds = SeedNodes::new([(id(1), NodeAddress::from(addr(1)))]);
    for i in 2..=12u8 {
        let blocking = i % 2 == 0;
        net.call(id(i), |n, now| {
            n.sync_node_graph(now, &seeds, None, blocking).unwrap()
        });
    }
    for step in 0..6000u64 {
        match step {
            // Nodes go away and come back: connection attempts and requests time out.
            500 => net.set_offline(id(5), true),
            900 => net.set_offline(id(9), true),
            2500 => net.set_offline(id(5), false),
            _ => {}
        }
        if step % 400 == 0 {
            let from = id((step / 400 % 11) as u8 + 2);
            let target = if step % 800 == 0 { id(99) } else { id(5) };
            if !net.offline.contains(&from) {
                net.call(from, |n, now| {
                    n.find_node(now, target, FindOptions::default()).unwrap()
                });
            }
        }
        net.step();
    }
    let mut hasher = DefaultHasher::new();
    let mut connects_to_offline = 0;
    for (node, command) in &net.trace {
        node.hash(&mut hasher);
        format!("{command:?}").hash(&mut hasher);
    }
    for (_, command) in &net.trace {
        if let Command::Connect { address, .. } = command
            && (*address == addr(5) || *address == addr(9))
        {
            connects_to_offline += 1;
        }
    }
    Run {
        hash: hasher.finish(),
        steps: net.steps,
        commands: net.trace.len(),
        connects_to_offline,
    }
}

#[test]
fn same_seed_same_commands_other_seed_other_commands() {
    let a = run(1);
    let b = run(1);
    assert!(a.steps >= 1000, "{} events fed", a.steps);
    assert!(a.commands >= 1000, "{} commands emitted", a.commands);
    assert!(
        a.connects_to_offline > 0,
        "the run includes connections to offline nodes"
    );
    assert_eq!(a.hash, b.hash, "same seed, same events: same commands");
    let c = run(2);
    assert_ne!(a.hash, c.hash, "another seed gives other commands");
}
