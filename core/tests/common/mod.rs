//! Helpers of the core's integration tests: small names for ids, addresses
//! and the start time, a quiet configuration, and small networks of nodes
//! that know each other. The harnesses themselves (`Script`, one manager
//! driven by hand; `Net`, managers on an in-memory network; `ModelStore`)
//! are the core's simulated driver, `keynode_core::testing`, shared with the
//! simulator and the fuzz target.

#![allow(dead_code, unused_imports, clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use keynode_core::{
    Command, Config, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId,
    Now, OpValue,
};

pub use keynode_core::testing::{ModelStore, Net, Script, seed};

/// The start time of every harness: the one clock read of a test.
pub fn t0() -> Now {
    Now::new(Instant::now(), 1_700_000_000_000)
}

pub fn id(n: u8) -> NodeId {
    NodeId::from_bytes([n; 32])
}

/// Host `n`'s address: a /24 of its own (`10.hi.lo.1`), as hosts of an
/// open network are (the routing table limits contacts per /24).
pub fn addr(n: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::from([10, (n >> 8) as u8, n as u8, 1]), 1314)
}

/// The connection attempts among `cmds`, in order.
pub fn connects(cmds: &[Command]) -> Vec<(keynode_core::AttemptId, NodeId, SocketAddr)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Connect {
                attempt,
                node_id,
                address,
                ..
            } => Some((*attempt, *node_id, *address)),
            _ => None,
        })
        .collect()
}

/// The most steps a test lets a network take to end an operation.
pub const STEPS: u64 = 100_000;

/// No background refresh or connection check: only the test's calls run.
pub fn quiet_config() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

/// A network of nodes 1..=n at addresses 1..=n, each with [`quiet_config`].
pub fn network(n: u8) -> Net {
    let mut net = Net::new(t0());
    for i in 1..=n {
        net.add(id(i), addr(i.into()), quiet_config());
    }
    net
}

/// `from` learns `to`'s address (no connection).
pub fn know(net: &mut Net, from: u8, to: u8) {
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    };
    let op = net.call(id(from), |n, now| {
        n.set_node(
            now,
            id(to),
            NodeAddress::from(addr(to.into())),
            data,
            false,
            true,
            None,
        )
        .unwrap()
    });
    assert_eq!(net.run_until_done(id(from), op, STEPS), Ok(OpValue::Unit));
}
