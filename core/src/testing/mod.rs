//! The simulated driver of the node manager, shared by every test that runs
//! `NodeManager`s without a network: the core's integration tests, the
//! simulator's manager level (`keynode-tests`) and the `manager_events` fuzz
//! target. Behind the `testing` feature; pure like the rest of the core (no
//! I/O, no clock: every harness takes its start time from the caller).
//!
//! What it models, in layers:
//! - [`drain`] and [`Driver`]: *the* loop that plays a manager's driver. It
//!   polls a manager's [`Command`](crate::Command)s and hands each to one
//!   hook of the `Driver` (connect, send a request or a response, close,
//!   streams, hole punch, mDNS, store batch, resolve, output). The hooks are
//!   what differs between users: the simulator's manager level routes dials
//!   through its NAT and loss models, the core's [`Net`] through scripted
//!   failures, the fuzz target records what was asked so that its input
//!   bytes choose the answers. Hooks without a facility behind them default
//!   to "not carried" (streams, mDNS, punches, names) or "committed at once"
//!   (store batches).
//! - [`Script`]: one manager driven by hand; the test answers the commands.
//! - [`Net`]: a message network of managers keyed by `NodeId` and address,
//!   deliveries ordered by (time, sequence number), connections as ConnIds
//!   known to both sides, requests matched to their responses, claim
//!   streams paired, store batches committed to a [`ModelStore`]. `step()`
//!   delivers the next thing (or runs the next timer); `drive_bounded(n)`
//!   and `run_until_done(.., n)` turn a livelock into a failure.
//!
//! The drain contract (what every driver relies on): commands are carried
//! out in the order `poll` yields them, each exactly once; a hook may feed
//! events back to the manager and what they cause is drained before
//! [`drain`] returns, so the manager's queue is empty afterwards and its
//! `poll_timeout` is current; a hook never drains re-entrantly; more than
//! [`Driver::MAX_COMMANDS`] commands in one drain panics (a livelock).
//!
//! A harness expectation that fails (an invalid config, a node that is not
//! there) is a failed test, so this module panics where the core proper
//! returns errors.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod driver;
mod network;
mod script;
mod store;

pub use driver::{Connect, Driver, Mdns, Outgoing, commit, drain, feed};
pub use network::{Net, Peer, ResponseTamper, StreamTamper};
pub use script::{Script, done};
pub use store::ModelStore;

/// A node generator's seed from a small number: `n` in the first 8 bytes.
pub fn seed(n: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}
