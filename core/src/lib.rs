//! keynode's core: the pure, deterministic state machine of a Polykey-style
//! node layer.
//!
//! The core performs no I/O, reads no clock and draws no entropy of its own:
//! time and randomness come in from the caller, persistence goes out as
//! [`StoreOp`]s that a driver applies atomically. The same inputs always give
//! the same outputs, which is what makes simulation and fuzzing possible.
//!
//! This crate holds the spec's types and the routing table:
//! - identity: [`NodeId`] (text form `v` + base32hex), [`Distance`], [`BucketIndex`];
//! - addresses and contacts: [`NodeAddress`], [`NodeContact`], [`NodeContactAddressData`];
//! - the routing table: [`NodeGraph`] with its two [`NodeGraphSpace`]s;
//! - bootstrap: [`SeedNodes`]; close codes: [`ConnectionErrorCode`];
//! - persistence: [`StoreOp`], [`GraphSnapshot`]; bounds: [`Config`];
//! - the node manager: [`NodeManager`], the spec's NodeManager as a sans-IO
//!   state machine ([`Event`] in, [`Command`] out), and its [`wire`] messages.

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
mod manager;
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
pub use conn_error::{ConnectionErrorCode, ConnectionErrorReason};
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
pub use manager::{
    ApiError, AttemptId, BatchId, Command, ConnId, ConnectFailure, Event, FindOptions, LeaseId,
    NodeEvent, NodeManager, OpError, OpId, OpValue, Output, PeerRequestId, QueryId, RequestId,
    ResolveId, RpcFailure, SeedFailure, Stats, StoreBatch, Strategies, StreamId, Timer, UserCall,
};
pub use seed::{SeedNodes, SeedNodesParseError};
pub use store::{
    ContactRecord, GraphSnapshot, PendingRecord, Snapshot, StoreOp, TaskKey, TaskPayload,
    TaskRecord,
};
pub use time::Now;
