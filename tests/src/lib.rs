//! keynode's deterministic network simulator.
//!
//! keynode nodes run on a virtual network with a virtual clock; every random
//! choice (node ids, link latencies, packet loss, each node's own generator)
//! comes from one seed, so a run is reproducible: the same seed gives the
//! same events in the same order, and the same [`Sim::trace_hash`].
//!
//! - [`Sim`] is the engine: the clock, the queue of messages in flight, the
//!   hosts' wake-ups, the trace. It is generic over a [`Level`], what a host is.
//! - [`Network`] is the virtual network: per-link latency drawn from a
//!   distribution, loss, partitions, hosts going offline, and NAT models
//!   ([`NatType`]) deciding which dials get in.
//! - [`ManagerLevel`] runs real `NodeManager`s and plays their driver. Nodes
//!   join only through `sync_node_graph` from seed nodes; nothing fills a
//!   routing table by hand (except [`report`]'s `--ideal` comparison).
//! - [`DatagramLevel`] runs full nodes (`keynode_core::net::Node`, the
//!   manager on QUIC) exchanging real QUIC datagrams, handshakes and hole
//!   punches included, through the same [`Network`]; the same helpers
//!   (`add_node`, `join`, `find`) drive it.
//! - [`nat_report`] runs NAT traversal on the datagram level: every pair
//!   of NAT models, and a mixed population (`simulate --nat-matrix`,
//!   `--nat-mix`).
//! - [`report`] builds a network of N nodes and measures lookups: the
//!   `simulate` binary.
//!
//! Scenarios live in `tests/tests/`.

#![warn(missing_docs, unreachable_pub)]

pub mod alloc;
mod datagram;
mod hash;
mod lookup;
mod manager;
pub mod nat_report;
mod net;
mod outputs;
pub mod report;
mod sim;
mod trace;

pub use datagram::{DatagramLevel, DatagramSim, DatagramStats, Packet};
pub use lookup::{LookupOutcome, Lookups, known_at_start};
pub use manager::{DriverStats, ManagerLevel, ManagerSim, Msg, seed_entry};
pub use net::{Drop, HostId, Latency, NODE_PORT, NatType, NetConfig, Network, mix};
pub use outputs::HostOutputs;
pub use sim::{Ctx, Level, MAX_EVENTS_PER_INSTANT, START_UNIX_MS, Sim};
pub use trace::{Trace, digest_bytes};
