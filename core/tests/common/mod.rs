//! Helpers of the core's integration tests: small names for ids, addresses
//! and the start time. The harnesses themselves (`Script`, one manager
//! driven by hand; `Net`, managers on an in-memory network; `ModelStore`)
//! are the core's simulated driver, `keynode_core::testing`, shared with the
//! simulator and the fuzz target.

#![allow(dead_code, unused_imports, clippy::disallowed_methods)]

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use keynode_core::{Command, NodeId, Now};

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
