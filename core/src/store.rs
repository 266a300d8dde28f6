//! What the core asks the store to persist ([`StoreOp`]) and what the store
//! gives back on start ([`GraphSnapshot`]).
//!
//! The core never touches a database: every change of state comes out as a
//! list of `StoreOp`s, which a driver applies in one write transaction, so a
//! crash never leaves half a change.

use serde::{Deserialize, Serialize};

use crate::address::NodeAddress;
use crate::contact::{NodeContact, NodeContactAddressData};
use crate::graph::NodeGraphSpace;
use crate::id::NodeId;

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
