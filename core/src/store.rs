//! What the core asks the store to persist ([`StoreOp`]) and what the store
//! gives back on start ([`GraphSnapshot`]).
//!
//! The core never touches a database: every change of state comes out as a
//! list of `StoreOp`s, which a driver applies in one write transaction, so a
//! crash never leaves half a change.

use serde::{Deserialize, Serialize};

use crate::address::NodeAddress;
use crate::claims::SignedClaim;
use crate::contact::{NodeContact, NodeContactAddressData};
use crate::graph::NodeGraphSpace;
use crate::id::{BucketIndex, NodeId};

/// What kind of failure the store met, as the manager learns it
/// ([`crate::Event::StoreFailed`]) and an operation reports it
/// ([`crate::OpError::Store`]).
///
/// A kind, not the store's own error: the core does not know the database
/// (keynode-store maps LMDB's errors to these), and the kind is `Clone` so
/// that it travels in events. The store's full error, with its path and
/// source, is logged where it happens.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The database reached its configured size (LMDB's map size).
    #[error("the store is full (its map size is reached)")]
    MapFull,
    /// An operating-system I/O error.
    #[error("I/O error in the store: {0}")]
    Io(std::io::ErrorKind),
    /// The database or one of its records is damaged.
    #[error("the store is corrupted")]
    Corrupted,
    /// A record could not be encoded (a bug: records are plain data).
    #[error("a record could not be encoded for the store")]
    Encode,
    /// The store was written by a keynode with another layout.
    #[error("the store was written by an incompatible keynode")]
    Incompatible,
    /// The store is closed or its thread has ended.
    #[error("the store is closed")]
    Closed,
    /// Another database error (a bad key, a reader table full, ...).
    #[error("the database refused the write")]
    Database,
}

/// One change to persisted state. A list of them is applied atomically.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum StoreOp {
    /// Records which NodeId the buckets of `space` are computed for.
    PutSpaceOwner {
        /// The space.
        space: NodeGraphSpace,
        /// The own NodeId of that space.
        own: NodeId,
    },
    /// Makes `space` the one loaded on the next start.
    SetActiveSpace(NodeGraphSpace),
    /// Writes (inserts or replaces) a contact.
    PutContact {
        /// The space.
        space: NodeGraphSpace,
        /// The contact's node.
        node_id: NodeId,
        /// The contact and its position in its bucket.
        record: ContactRecord,
    },
    /// Deletes a contact (nothing if absent).
    DeleteContact {
        /// The space.
        space: NodeGraphSpace,
        /// The contact's node.
        node_id: NodeId,
    },
    /// Writes (inserts or replaces) a pending node.
    PutPending {
        /// The space.
        space: NodeGraphSpace,
        /// The pending node.
        node_id: NodeId,
        /// Its address and position in the pending list.
        record: PendingRecord,
    },
    /// Deletes a pending node (nothing if absent).
    DeletePending {
        /// The space.
        space: NodeGraphSpace,
        /// The pending node.
        node_id: NodeId,
    },
    /// Deletes every record of `space`: owner, contacts, pending nodes.
    ClearSpace(NodeGraphSpace),
    /// Writes (inserts or replaces) a scheduled task.
    PutTask {
        /// Which task; there is at most one of each.
        key: TaskKey,
        /// When it is due and what it carries.
        record: TaskRecord,
    },
    /// Deletes a scheduled task (nothing if absent).
    DeleteTask(TaskKey),
    /// Appends a claim to the own sigchain. The payload is stored byte for byte.
    PutClaim {
        /// Its position in the chain.
        seq: u64,
        /// The signed claim.
        claim: SignedClaim,
    },
    /// Records a link of the gestalt graph (`a < b`).
    PutGestaltLink {
        /// One node.
        a: NodeId,
        /// The other.
        b: NodeId,
    },
    /// Allows `node_id` to claim this node (the `claim` permission).
    PutClaimPermission(NodeId),
    /// Withdraws that permission.
    DeleteClaimPermission(NodeId),
}

/// A persisted task of the node manager. There is at most one task per key,
/// so a bucket never has two refresh tasks.
///
/// Spec: the task kinds `NodeManager.start` registers with the TaskManager.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum TaskKey {
    /// Refresh a bucket (a lookup of a random NodeId in it).
    RefreshBucket(BucketIndex),
    /// Garbage-collect a bucket (ping its contacts, admit pending nodes).
    GarbageCollect(BucketIndex),
    /// The periodic connection check.
    CheckConnections,
    /// A non-blocking `sync_node_graph`.
    SyncNodeGraph,
}

impl TaskKey {
    /// A stable two-byte key for the store: kind, then bucket.
    pub fn to_bytes(self) -> [u8; 2] {
        match self {
            TaskKey::RefreshBucket(i) => [0, i.get()],
            TaskKey::GarbageCollect(i) => [1, i.get()],
            TaskKey::CheckConnections => [2, 0],
            TaskKey::SyncNodeGraph => [3, 0],
        }
    }

    /// The key of [`TaskKey::to_bytes`].
    pub fn from_bytes(bytes: [u8; 2]) -> Option<Self> {
        match bytes {
            [0, i] => Some(TaskKey::RefreshBucket(BucketIndex::new(i))),
            [1, i] => Some(TaskKey::GarbageCollect(BucketIndex::new(i))),
            [2, 0] => Some(TaskKey::CheckConnections),
            [3, 0] => Some(TaskKey::SyncNodeGraph),
            _ => None,
        }
    }
}

/// When a persisted task is due, and its parameters.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Due time, wall-clock milliseconds since the Unix epoch (monotonic
    /// instants do not survive a restart).
    pub due_unix_ms: u64,
    /// What the task needs to run.
    pub payload: TaskPayload,
}

/// The parameters of a task.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TaskPayload {
    /// The task needs nothing beyond its key.
    None,
    /// The seed nodes and per-connection timeout of a scheduled sync.
    Sync {
        /// Seed NodeIds and addresses.
        seeds: Vec<(NodeId, NodeAddress)>,
        /// Connect timeout, milliseconds.
        connect_timeout_ms: u64,
    },
}

/// Everything persisted, as loaded on start.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Snapshot {
    /// The node graph, if one was ever written.
    pub graph: Option<GraphSnapshot>,
    /// Scheduled tasks.
    pub tasks: Vec<(TaskKey, TaskRecord)>,
    /// The own sigchain, in seq order.
    pub claims: Vec<SignedClaim>,
    /// Gestalt links.
    pub gestalt_links: Vec<(NodeId, NodeId)>,
    /// Nodes allowed to claim this one.
    pub claim_permissions: Vec<NodeId>,
}

/// A persisted contact: the contact and when it was last updated.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ContactRecord {
    /// Addresses and their data.
    pub contact: NodeContact,
    /// The graph's update counter at its last update: a bucket lists its
    /// contacts by this, oldest first.
    pub updated: u64,
}

/// A persisted pending node: one address, as `setNode` offered it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The address offered.
    pub address: NodeAddress,
    /// Its data.
    pub data: NodeContactAddressData,
    /// The graph's update counter when it was offered: newest wins.
    pub seq: u64,
}

/// The persisted node graph of the active space, as loaded on start.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GraphSnapshot {
    /// The active space.
    pub space: NodeGraphSpace,
    /// The NodeId its buckets are computed for.
    pub own: NodeId,
    /// Every contact, in any order.
    pub contacts: Vec<(NodeId, ContactRecord)>,
    /// Every pending node, in any order.
    pub pending: Vec<(NodeId, PendingRecord)>,
}
