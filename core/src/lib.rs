//! keynode's core: the pure, deterministic state machine of a Polykey-style
//! node layer.
//!
//! The core performs no I/O, reads no clock and draws no entropy of its own:
//! time and randomness come in from the caller, persistence goes out as
//! [`StoreOp`]s that a driver applies atomically. The same inputs always give
//! the same outputs, which is what makes simulation and fuzzing possible.
//!
//! # Layers
//!
//! From the bottom up, each usable alone:
//! - **Types and the routing table**: identity ([`NodeId`], text form `v` +
//!   base32hex, [`Distance`], [`BucketIndex`]); addresses and contacts
//!   ([`NodeAddress`], [`NodeContact`], [`NodeContactAddressData`]); the
//!   routing table [`NodeGraph`] with its two [`NodeGraphSpace`]s (module
//!   `graph/`: the table, spaces, persistence, closest, diversity);
//!   bootstrap ([`SeedNodes`]); close codes ([`ConnectionErrorCode`]);
//!   persistence records ([`StoreOp`], [`Snapshot`]); bounds ([`Config`]);
//!   [`wire`] messages; [`claims`] (signed claims, sigchain, gestalt links).
//! - **The manager** ([`NodeManager`], module `manager/`): the spec's
//!   NodeManager, speaking in NodeIds and connection events, never in QUIC
//!   bytes. [`Event`] in, [`Command`] out, user calls as methods or one
//!   [`UserCall`]; operations are ids ending in one [`Output::Done`]. Inside,
//!   an operation table, a correlation table of what each operation waits
//!   for, a set of single-instance jobs, a deadline table keyed by [`Timer`],
//!   and the long operations whose rules are pure machines of their own (the
//!   lookup, a GC round) wired to dials and requests.
//! - **The net layer** ([`net::Node`], module `net/`): the manager over
//!   QUIC (quinn-proto, rustls), hole punching and mDNS. A driver sees only
//!   [`net::DriverEvent`] in and [`net::NetCommand`] out, plus
//!   [`net::Node::call`]; the manager's connection events and commands stay
//!   inside. One file per concept: the composition, the driver surface,
//!   connection state, stream framing and routing, punching, timers, TLS,
//!   mDNS.
//! - **`testing`** (feature `testing`): the one simulated driver of
//!   managers (a message network, a scripted single manager, a model store)
//!   used by the core's tests, the simulator's manager level and the fuzz
//!   target.
//!
//! # Driving
//!
//! After every input (an event, a timeout, a call) drain `poll()` until it
//! returns `None`, then wait for the next input or for `poll_timeout()`.
//! Time must not go backwards; an early `handle_timeout` does nothing.

#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod address;
mod bucket;
pub mod claims;
mod config;
mod conn_error;
mod contact;
mod graph;
mod id;
mod ip_group;
mod manager;
pub mod metrics;
pub mod nat;
pub mod net;
mod seed;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
pub mod wire;

pub use address::{
    Host, Hostname, HostnameError, MAX_HOSTNAME_LEN, NodeAddress, NodeAddressParseError,
};
pub use bucket::{BucketEntry, PendingNode};
pub use config::{Config, ConfigError, MdnsConfig};
pub use conn_error::{CloseReason, ConnectionErrorCode, ConnectionErrorReason};
pub use contact::{
    ContactMode, NodeAddressScope, NodeAddressScopes, NodeContact, NodeContactAddressData,
    NodeContactError, UnixSeconds,
};
pub use graph::{
    Change, GraphUpdate, NodeBucket, NodeGraph, NodeGraphSpace, SetContactError, SnapshotError,
};
pub use id::{
    BucketIndex, BucketIndexOutOfRange, Distance, NODE_ID_LEN, NODE_ID_TEXT_LEN, NodeBucketIndex,
    NodeId, NodeIdEncoded, NodeIdParseError,
};
pub use ip_group::{IpGroup, IpGroupLimits};
pub use manager::InFlight;
pub use manager::{
    ApiError, AttemptId, BatchId, Command, ConnId, ConnectFailure, Event, FindOptions, JoinStatus,
    LeaseId, NodeEvent, NodeManager, Observation, OpError, OpId, OpValue, Output, PeerRequestId,
    QueryId, RequestId, ResolveId, RpcFailure, SeedFailure, Stats, StoreBatch, Strategies,
    StreamId, Timer, UserCall,
};
pub use seed::{SeedNodes, SeedNodesParseError};
pub use store::{
    ContactRecord, GraphSnapshot, PendingRecord, Snapshot, StoreErrorKind, StoreOp, TaskKey,
    TaskPayload, TaskRecord,
};
pub use time::{Now, TimeSource};
