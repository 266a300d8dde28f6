//! One bucket of the routing table: at most k contacts ordered by last update,
//! and a bounded list of pending nodes waiting for room.

use crate::address::NodeAddress;
use crate::contact::{NodeContact, NodeContactAddressData};
use crate::id::NodeId;

/// A contact in a bucket.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BucketEntry {
    /// The node.
    pub node_id: NodeId,
    /// Its addresses.
    pub contact: NodeContact,
    /// The graph's update counter at its last update (larger is newer).
    pub updated: u64,
}

/// A node waiting for room in a full bucket.
///
/// Spec: the entries of the pending list that `addPendingNode` fills and
/// `garbageCollectBucket` drains.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PendingNode {
    /// The node.
    pub node_id: NodeId,
    /// The address it was offered with.
    pub address: NodeAddress,
    /// That address's data.
    pub data: NodeContactAddressData,
    /// The graph's update counter when it was offered (larger is newer).
    pub seq: u64,
}

/// A bucket's contacts and pending nodes.
///
/// Its invariants (contacts at most k, unique NodeIds across the graph, a node
/// never both contact and pending) are kept by [`crate::NodeGraph`], the only
/// way in; the bucket keeps both lists sorted oldest first.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub(crate) struct Bucket {
    pub(crate) contacts: Vec<BucketEntry>,
    pub(crate) pending: Vec<PendingNode>,
}

impl Bucket {
    pub(crate) fn is_empty(&self) -> bool {
        self.contacts.is_empty() && self.pending.is_empty()
    }

    pub(crate) fn contact_position(&self, node_id: &NodeId) -> Option<usize> {
        self.contacts.iter().position(|e| e.node_id == *node_id)
    }

    pub(crate) fn pending_position(&self, node_id: &NodeId) -> Option<usize> {
        self.pending.iter().position(|p| p.node_id == *node_id)
    }

    /// Inserts keeping the list sorted by `updated`. New entries always carry
    /// the largest counter, so this is a push except while restoring.
    pub(crate) fn insert_contact(&mut self, entry: BucketEntry) {
        let at = self
            .contacts
            .partition_point(|e| e.updated <= entry.updated);
        self.contacts.insert(at, entry);
    }

    /// Makes room for one more contact, growing the list towards `k` and
    /// never beyond it, so a full bucket holds exactly k (a doubling vector
    /// would hold 32 slots for 20 contacts).
    pub(crate) fn reserve_contact(&mut self, k: usize) {
        let len = self.contacts.len();
        if len == self.contacts.capacity() {
            let want = (len * 2).max(4).min(k.max(len + 1));
            self.contacts.reserve_exact(want - len);
        }
    }

    pub(crate) fn insert_pending(&mut self, node: PendingNode) {
        let at = self.pending.partition_point(|p| p.seq <= node.seq);
        self.pending.insert(at, node);
    }
}
