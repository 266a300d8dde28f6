//! [`NodeGraph`]: the in-memory Kademlia routing table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::address::NodeAddress;
use crate::bucket::{Bucket, BucketEntry, PendingNode};
use crate::config::{Config, ConfigError};
use crate::contact::{NodeContact, NodeContactAddressData};
use crate::id::{BucketIndex, Distance, NodeId};
use crate::store::{ContactRecord, GraphSnapshot, PendingRecord, StoreOp};

/// One of the two spaces of persisted node-graph records.
///
/// Spec: `NodeGraphSpace = '0' | '1'`. The active space holds the table; a
/// key renewal ([`NodeGraph::reset`]) rebuilds the table in the other space
/// and then switches, in one store batch.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub enum NodeGraphSpace {
    /// Space `0`.
    #[default]
    Zero,
    /// Space `1`.
    One,
}

impl NodeGraphSpace {
    /// The other space.
    pub const fn other(self) -> Self {
        match self {
            Self::Zero => Self::One,
            Self::One => Self::Zero,
        }
    }

    /// `0` or `1`, as the store keys it.
    pub const fn as_u8(self) -> u8 {
        match self {
            Self::Zero => 0,
            Self::One => 1,
        }
    }

    /// The space numbered `0` or `1`.
    pub const fn from_u8(n: u8) -> Option<Self> {
        match n {
            0 => Some(Self::Zero),
            1 => Some(Self::One),
            _ => None,
        }
    }
}

/// Spec: `NodeBucket`: a bucket's nodes and contacts, oldest update first.
pub type NodeBucket = Vec<(NodeId, NodeContact)>;

/// What a change did to the graph.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Change {
    /// A new contact was added.
    Inserted,
    /// A known contact was updated and became the newest of its bucket.
    Updated,
    /// The bucket was full: its oldest contact was evicted for the new one.
    Replaced {
        /// The evicted node.
        evicted: NodeId,
    },
    /// A contact, a pending entry, or both were removed.
    Removed {
        /// Whether a contact was removed.
        contact: bool,
        /// Whether a pending entry was removed.
        pending: bool,
    },
    /// A node was put on (or refreshed in) its bucket's pending list.
    PendingAdded {
        /// The oldest pending node, dropped because the list was full.
        dropped: Option<NodeId>,
    },
    /// Pending nodes were taken off a bucket's list.
    PendingTaken(Vec<PendingNode>),
    /// The table was rebuilt for a new own NodeId.
    Reset {
        /// Contacts kept.
        kept: usize,
        /// Contacts dropped because their new bucket overflowed.
        dropped: usize,
    },
    /// Nothing changed.
    Unchanged,
}

/// The result of a change: what happened and the store operations that persist it.
#[must_use = "the store operations must be applied for the change to persist"]
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GraphUpdate {
    /// What happened.
    pub change: Change,
    /// The operations to apply, in order, in one batch.
    pub ops: Vec<StoreOp>,
}

/// Why a contact was not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetContactError {
    /// A node is never in its own table.
    #[error("{node_id} is this node's own NodeId")]
    OwnNodeId {
        /// The own NodeId.
        node_id: NodeId,
    },
    /// The bucket already holds k contacts; nothing changed. The caller may
    /// put the node on the pending list, or force it in.
    #[error("bucket {bucket} is full; its oldest contact is {oldest}")]
    BucketFull {
        /// The bucket.
        bucket: BucketIndex,
        /// Its oldest contact, the one to ping.
        oldest: NodeId,
    },
    /// The node is already a contact, so it cannot be pending.
    #[error("{node_id} is already a contact")]
    AlreadyContact {
        /// The node.
        node_id: NodeId,
    },
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot holds the own NodeId as a contact or pending node.
    #[error("snapshot lists the own NodeId {0} as a contact")]
    OwnNodeId(NodeId),
    /// The same node twice.
    #[error("snapshot lists {0} twice")]
    Duplicate(NodeId),
    /// The configuration to restore with is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// The routing table: contacts in 256 buckets by XOR distance to the own
/// NodeId, at most k per bucket, each bucket with a bounded pending list.
///
/// Every method that changes the table returns a [`GraphUpdate`] with the
/// [`StoreOp`]s that persist the change; the graph never reads a clock or
/// draws randomness. Only non-empty buckets take memory.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeGraph {
    own: NodeId,
    space: NodeGraphSpace,
    k: usize,
    max_pending: usize,
    /// `Config::bucket_diversity_bits`.
    diversity_bits: u8,
    buckets: BTreeMap<BucketIndex, Bucket>,
    contacts: usize,
    /// The next value of the update counter that orders contacts and pending nodes.
    next_seq: u64,
    /// Pending nodes dropped because a pending list was full.
    pending_dropped: u64,
}

impl NodeGraph {
    /// An empty table for `own` in space `0`, or an error if `config` is
    /// invalid. [`NodeGraph::persist_all`] gives the operations that write it.
    pub fn new(own: NodeId, config: &Config) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            own,
            space: NodeGraphSpace::Zero,
            k: config.k,
            max_pending: config.max_pending_per_bucket,
            diversity_bits: config.bucket_diversity_bits,
            buckets: BTreeMap::new(),
            contacts: 0,
            next_seq: 0,
            pending_dropped: 0,
        })
    }

    /// The own NodeId the buckets are computed for.
    pub fn own_node_id(&self) -> NodeId {
        self.own
    }

    /// The active space.
    pub fn space(&self) -> NodeGraphSpace {
        self.space
    }

    /// k: the most contacts a bucket holds.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The number of contacts.
    pub fn len(&self) -> usize {
        self.contacts
    }

    /// Whether the table has no contact.
    pub fn is_empty(&self) -> bool {
        self.contacts == 0
    }

    /// How many pending nodes were dropped because a pending list was full.
    pub fn pending_dropped(&self) -> u64 {
        self.pending_dropped
    }

    /// The bucket `node_id` belongs in (`None` for the own NodeId).
    pub fn bucket_index(&self, node_id: &NodeId) -> Option<BucketIndex> {
        self.own.bucket_index(node_id)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn entry(&self, node_id: &NodeId) -> Option<&BucketEntry> {
        let bucket = self.buckets.get(&self.bucket_index(node_id)?)?;
        bucket.contacts.iter().find(|e| e.node_id == *node_id)
    }

    /// The contact of `node_id`.
    ///
    /// Spec: `NodeGraph.getNodeContact`.
    pub fn get(&self, node_id: &NodeId) -> Option<&NodeContact> {
        self.entry(node_id).map(|e| &e.contact)
    }

    /// Whether `node_id` is a contact.
    pub fn contains(&self, node_id: &NodeId) -> bool {
        self.entry(node_id).is_some()
    }

    /// The pending entry of `node_id`, if it waits for room.
    pub fn get_pending(&self, node_id: &NodeId) -> Option<&PendingNode> {
        let bucket = self.buckets.get(&self.bucket_index(node_id)?)?;
        bucket.pending.iter().find(|p| p.node_id == *node_id)
    }

    fn contact_op(&self, entry: &BucketEntry) -> StoreOp {
        contact_op(self.space, entry)
    }

    fn pending_op(&self, node: &PendingNode) -> StoreOp {
        StoreOp::PutPending {
            space: self.space,
            node_id: node.node_id,
            record: PendingRecord {
                address: node.address.clone(),
                data: node.data,
                seq: node.seq,
            },
        }
    }

    /// Records `address` with `data` for `node_id`: updates a known contact
    /// (merging the address) and makes it the newest of its bucket, or adds the
    /// node if its bucket has room. A node that was pending stops being pending.
    /// A full bucket is an error and changes nothing.
    ///
    /// Spec: `NodeGraph.setNodeContactAddressData`, the table part of `NodeManager.setNode`.
    pub fn set(
        &mut self,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
    ) -> Result<GraphUpdate, SetContactError> {
        self.set_inner(node_id, address, data, false)
    }

    /// As [`NodeGraph::set`], but a full bucket evicts its oldest contact:
    /// what `NodeManager::set_node` does with `force`.
    pub fn force_set(
        &mut self,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
    ) -> Result<GraphUpdate, SetContactError> {
        self.set_inner(node_id, address, data, true)
    }

    fn set_inner(
        &mut self,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
        force: bool,
    ) -> Result<GraphUpdate, SetContactError> {
        let index = self
            .bucket_index(&node_id)
            .ok_or(SetContactError::OwnNodeId { node_id })?;
        let seq = self.next_seq;
        let k = self.k;
        let space = self.space;
        let bucket = self.buckets.entry(index).or_default();
        let mut ops = Vec::new();
        let (change, entry) = if let Some(pos) = bucket.contact_position(&node_id) {
            let mut entry = bucket.contacts.remove(pos);
            let _evicted_address = entry.contact.insert(address, data);
            entry.updated = seq;
            (Change::Updated, entry)
        } else {
            let oldest = bucket.contacts.first().map(|e| e.node_id);
            let change = match oldest {
                Some(oldest) if bucket.contacts.len() >= k => {
                    let position = if force {
                        Some(0)
                    } else {
                        diverse_eviction(&self.own, index, bucket, &node_id, self.diversity_bits)
                    };
                    let Some(position) = position else {
                        return Err(SetContactError::BucketFull {
                            bucket: index,
                            oldest,
                        });
                    };
                    let evicted = bucket.contacts.remove(position).node_id;
                    ops.push(StoreOp::DeleteContact {
                        space,
                        node_id: evicted,
                    });
                    self.contacts -= 1;
                    Change::Replaced { evicted }
                }
                _ => Change::Inserted,
            };
            if let Some(pos) = bucket.pending_position(&node_id) {
                bucket.pending.remove(pos);
                ops.push(StoreOp::DeletePending { space, node_id });
            }
            self.contacts += 1;
            let entry = BucketEntry {
                node_id,
                contact: NodeContact::new(address, data),
                updated: seq,
            };
            (change, entry)
        };
        ops.push(contact_op(space, &entry));
        bucket.reserve_contact(k);
        bucket.contacts.push(entry);
        self.next_seq += 1;
        Ok(GraphUpdate { change, ops })
    }

    /// Removes `node_id` as a contact and as a pending node.
    ///
    /// Spec: `NodeGraph.unsetNodeContact`, the table part of `NodeManager.unsetNode`.
    pub fn unset(&mut self, node_id: &NodeId) -> GraphUpdate {
        let unchanged = GraphUpdate {
            change: Change::Unchanged,
            ops: Vec::new(),
        };
        let Some(index) = self.bucket_index(node_id) else {
            return unchanged;
        };
        let Some(bucket) = self.buckets.get_mut(&index) else {
            return unchanged;
        };
        let mut ops = Vec::new();
        let contact = bucket.contact_position(node_id).map(|pos| {
            bucket.contacts.remove(pos);
            ops.push(StoreOp::DeleteContact {
                space: self.space,
                node_id: *node_id,
            });
        });
        let pending = bucket.pending_position(node_id).map(|pos| {
            bucket.pending.remove(pos);
            ops.push(StoreOp::DeletePending {
                space: self.space,
                node_id: *node_id,
            });
        });
        if bucket.is_empty() {
            self.buckets.remove(&index);
        }
        if contact.is_some() {
            self.contacts -= 1;
        }
        if ops.is_empty() {
            return unchanged;
        }
        GraphUpdate {
            change: Change::Removed {
                contact: contact.is_some(),
                pending: pending.is_some(),
            },
            ops,
        }
    }

    /// Puts `node_id` on its bucket's pending list, or refreshes its entry
    /// there (newest data wins). When the list is full, its oldest entry is
    /// dropped and counted in [`NodeGraph::pending_dropped`].
    ///
    /// Spec: the table part of `NodeManager.addPendingNode`.
    pub fn add_pending(
        &mut self,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
    ) -> Result<GraphUpdate, SetContactError> {
        let index = self
            .bucket_index(&node_id)
            .ok_or(SetContactError::OwnNodeId { node_id })?;
        if self.contains(&node_id) {
            return Err(SetContactError::AlreadyContact { node_id });
        }
        if self.max_pending == 0 {
            self.pending_dropped += 1;
            return Ok(GraphUpdate {
                change: Change::PendingAdded {
                    dropped: Some(node_id),
                },
                ops: Vec::new(),
            });
        }
        let seq = self.take_seq();
        let space = self.space;
        let max_pending = self.max_pending;
        let bucket = self.buckets.entry(index).or_default();
        if let Some(pos) = bucket.pending_position(&node_id) {
            bucket.pending.remove(pos);
        }
        let mut ops = Vec::with_capacity(2);
        let mut dropped = None;
        if bucket.pending.len() >= max_pending {
            let oldest = bucket.pending.remove(0).node_id;
            ops.push(StoreOp::DeletePending {
                space,
                node_id: oldest,
            });
            dropped = Some(oldest);
        }
        let node = PendingNode {
            node_id,
            address,
            data,
            seq,
        };
        bucket.pending.push(node.clone());
        if dropped.is_some() {
            self.pending_dropped += 1;
        }
        ops.push(self.pending_op(&node));
        Ok(GraphUpdate {
            change: Change::PendingAdded { dropped },
            ops,
        })
    }

    /// The pending nodes of bucket `index`, oldest first.
    pub fn pending(&self, index: BucketIndex) -> &[PendingNode] {
        self.buckets
            .get(&index)
            .map_or(&[], |b| b.pending.as_slice())
    }

    /// Takes every pending node off bucket `index`'s list (oldest first in
    /// [`Change::PendingTaken`]); garbage collection then adds those that fit.
    pub fn take_pending(&mut self, index: BucketIndex) -> GraphUpdate {
        let space = self.space;
        let Some(bucket) = self.buckets.get_mut(&index) else {
            return GraphUpdate {
                change: Change::PendingTaken(Vec::new()),
                ops: Vec::new(),
            };
        };
        let taken = std::mem::take(&mut bucket.pending);
        if bucket.is_empty() {
            self.buckets.remove(&index);
        }
        let ops = taken
            .iter()
            .map(|p| StoreOp::DeletePending {
                space,
                node_id: p.node_id,
            })
            .collect();
        GraphUpdate {
            change: Change::PendingTaken(taken),
            ops,
        }
    }

    /// The contacts of bucket `index`, oldest update first.
    pub fn bucket(&self, index: BucketIndex) -> &[BucketEntry] {
        self.buckets
            .get(&index)
            .map_or(&[], |b| b.contacts.as_slice())
    }

    /// Bucket `index` in the spec's shape.
    ///
    /// Spec: `NodeGraph.getBucket`.
    pub fn get_bucket(&self, index: BucketIndex) -> NodeBucket {
        self.bucket(index)
            .iter()
            .map(|e| (e.node_id, e.contact.clone()))
            .collect()
    }

    /// The contact of bucket `index` updated longest ago: the one garbage
    /// collection pings first.
    ///
    /// Spec: `NodeGraph.getOldestNode`.
    pub fn oldest(&self, index: BucketIndex) -> Option<&BucketEntry> {
        self.bucket(index).first()
    }

    /// The number of contacts in bucket `index`.
    pub fn bucket_len(&self, index: BucketIndex) -> usize {
        self.bucket(index).len()
    }

    /// The number of contacts of every non-empty bucket, closest bucket first.
    pub fn bucket_sizes(&self) -> impl Iterator<Item = (BucketIndex, usize)> + '_ {
        self.buckets
            .iter()
            .filter(|(_, b)| !b.contacts.is_empty())
            .map(|(i, b)| (*i, b.contacts.len()))
    }

    /// Every contact, by bucket (closest first) and then oldest update first.
    pub fn iter(&self) -> impl Iterator<Item = &BucketEntry> + '_ {
        self.buckets.values().flat_map(|b| b.contacts.iter())
    }

    /// Every pending node, by bucket and then oldest first.
    pub fn iter_pending(&self) -> impl Iterator<Item = &PendingNode> + '_ {
        self.buckets.values().flat_map(|b| b.pending.iter())
    }

    /// The `limit` contacts closest to `target` by XOR distance, closest
    /// first; exact. `target` itself is included if it is a contact.
    ///
    /// Spec: `NodeGraph.getClosestNodes`. Buckets cover disjoint ranges of
    /// distance to `target`, and those ranges are totally ordered (see
    /// [`bucket_rank`]), so whole buckets are taken in rank order until
    /// `limit` contacts are in hand, and only those are sorted.
    pub fn closest(&self, target: &NodeId, limit: usize) -> Vec<&BucketEntry> {
        self.closest_where(target, limit, |_| true)
    }

    /// As [`NodeGraph::closest`], among the contacts for which `keep` holds.
    pub fn closest_where(
        &self,
        target: &NodeId,
        limit: usize,
        mut keep: impl FnMut(&BucketEntry) -> bool,
    ) -> Vec<&BucketEntry> {
        if limit == 0 {
            return Vec::new();
        }
        let to_target = self.own.distance(target);
        let mut order: Vec<(u16, &Bucket)> = self
            .buckets
            .iter()
            .filter(|(_, b)| !b.contacts.is_empty())
            .map(|(i, b)| (bucket_rank(&to_target, *i), b))
            .collect();
        order.sort_unstable_by_key(|(rank, _)| *rank);
        // Whole buckets in rank order until they hold `limit` contacts; then
        // the closest of those that pass `keep`. `keep` looks into each
        // contact's addresses (a pointer away), so it runs on the closest
        // first and only as far as needed; if too few pass, the next buckets
        // are taken in.
        let mut found: Vec<(Distance, &BucketEntry)> = Vec::new();
        let mut kept: Vec<&BucketEntry> = Vec::with_capacity(limit);
        let mut buckets = order.into_iter().map(|(_, b)| b).peekable();
        while kept.len() < limit && buckets.peek().is_some() {
            found.clear();
            for bucket in buckets.by_ref() {
                found.extend(
                    bucket
                        .contacts
                        .iter()
                        .map(|e| (e.node_id.distance(target), e)),
                );
                if found.len() >= limit - kept.len() {
                    break;
                }
            }
            // Sort only the closest `need` (a bucket may hold up to
            // `Config::MAX_K`); the rest only if too few of those pass.
            let need = (limit - kept.len()).min(found.len());
            if found.len() > need && need > 0 {
                found.select_nth_unstable_by_key(need - 1, |(d, _)| *d);
            }
            let (head, tail) = found.split_at_mut(need);
            head.sort_unstable_by_key(|(d, _)| *d);
            for (_, entry) in head.iter() {
                if keep(entry) {
                    kept.push(entry);
                }
            }
            if kept.len() < limit && !tail.is_empty() {
                tail.sort_unstable_by_key(|(d, _)| *d);
                for (_, entry) in tail.iter() {
                    if kept.len() == limit {
                        break;
                    }
                    if keep(entry) {
                        kept.push(entry);
                    }
                }
            }
        }
        kept
    }

    /// Rebuilds the table for a new own NodeId (after key renewal), in the
    /// other space, and switches to it. Where a new bucket would overflow, the
    /// most recently connected contacts are kept (the original drops them
    /// arbitrarily). Pending nodes move to their new buckets' lists, newest
    /// first, as far as those have room.
    ///
    /// Spec: the table part of `NodeManager.resetBuckets`.
    pub fn reset(&mut self, new_own: NodeId) -> GraphUpdate {
        let old_space = self.space;
        let new_space = old_space.other();
        let mut entries: Vec<BucketEntry> = Vec::with_capacity(self.contacts);
        let mut pending: Vec<PendingNode> = Vec::new();
        for bucket in std::mem::take(&mut self.buckets).into_values() {
            entries.extend(bucket.contacts);
            pending.extend(bucket.pending);
        }
        // Most recently connected first; among equals, most recently updated.
        entries.sort_by(|a, b| {
            (b.contact.last_connected(), b.updated).cmp(&(a.contact.last_connected(), a.updated))
        });
        pending.sort_by_key(|p| std::cmp::Reverse(p.seq));

        self.own = new_own;
        self.space = new_space;
        self.contacts = 0;
        let mut dropped = 0;
        for entry in entries {
            let Some(index) = self.bucket_index(&entry.node_id) else {
                dropped += 1;
                continue;
            };
            let bucket = self.buckets.entry(index).or_default();
            if bucket.contacts.len() < self.k {
                bucket.insert_contact(entry);
                self.contacts += 1;
            } else {
                dropped += 1;
            }
        }
        for node in pending {
            let Some(index) = self.bucket_index(&node.node_id) else {
                continue;
            };
            let bucket = self.buckets.entry(index).or_default();
            if bucket.pending.len() < self.max_pending {
                bucket.insert_pending(node);
            }
        }
        self.buckets.retain(|_, b| !b.is_empty());

        let mut ops = vec![
            StoreOp::ClearSpace(new_space),
            StoreOp::PutSpaceOwner {
                space: new_space,
                own: new_own,
            },
        ];
        ops.extend(self.record_ops());
        ops.push(StoreOp::SetActiveSpace(new_space));
        ops.push(StoreOp::ClearSpace(old_space));
        GraphUpdate {
            change: Change::Reset {
                kept: self.contacts,
                dropped,
            },
            ops,
        }
    }

    fn record_ops(&self) -> impl Iterator<Item = StoreOp> + '_ {
        self.iter()
            .map(|e| self.contact_op(e))
            .chain(self.iter_pending().map(|p| self.pending_op(p)))
    }

    /// The operations that write the whole table into its space, replacing
    /// what was there, and make that space active (for a new store).
    pub fn persist_all(&self) -> Vec<StoreOp> {
        let mut ops = vec![
            StoreOp::ClearSpace(self.space),
            StoreOp::PutSpaceOwner {
                space: self.space,
                own: self.own,
            },
        ];
        ops.extend(self.record_ops());
        ops.push(StoreOp::SetActiveSpace(self.space));
        ops
    }

    /// The table as the store holds it.
    pub fn snapshot(&self) -> GraphSnapshot {
        GraphSnapshot {
            space: self.space,
            own: self.own,
            contacts: self
                .iter()
                .map(|e| {
                    let record = ContactRecord {
                        contact: e.contact.clone(),
                        updated: e.updated,
                    };
                    (e.node_id, record)
                })
                .collect(),
            pending: self
                .iter_pending()
                .map(|p| {
                    let record = PendingRecord {
                        address: p.address.clone(),
                        data: p.data,
                        seq: p.seq,
                    };
                    (p.node_id, record)
                })
                .collect(),
        }
    }

    /// The table a snapshot describes. When `config` is smaller than the one
    /// the snapshot was written with, the oldest contacts and pending nodes
    /// beyond the new bounds are dropped, and the returned operations delete
    /// them from the store.
    pub fn restore(
        snapshot: GraphSnapshot,
        config: &Config,
    ) -> Result<(Self, Vec<StoreOp>), SnapshotError> {
        let mut graph = NodeGraph::new(snapshot.own, config)?;
        graph.space = snapshot.space;
        let mut seen = std::collections::BTreeSet::new();
        let mut max_seq = None;
        for (node_id, record) in snapshot.contacts {
            let index = graph
                .bucket_index(&node_id)
                .ok_or(SnapshotError::OwnNodeId(node_id))?;
            if !seen.insert(node_id) {
                return Err(SnapshotError::Duplicate(node_id));
            }
            max_seq = max_seq.max(Some(record.updated));
            graph
                .buckets
                .entry(index)
                .or_default()
                .insert_contact(BucketEntry {
                    node_id,
                    contact: record.contact,
                    updated: record.updated,
                });
        }
        for (node_id, record) in snapshot.pending {
            let index = graph
                .bucket_index(&node_id)
                .ok_or(SnapshotError::OwnNodeId(node_id))?;
            if !seen.insert(node_id) {
                return Err(SnapshotError::Duplicate(node_id));
            }
            max_seq = max_seq.max(Some(record.seq));
            graph
                .buckets
                .entry(index)
                .or_default()
                .insert_pending(PendingNode {
                    node_id,
                    address: record.address,
                    data: record.data,
                    seq: record.seq,
                });
        }
        graph.next_seq = max_seq.map_or(0, |s| s + 1);
        let mut ops = Vec::new();
        let (k, max_pending, space) = (graph.k, graph.max_pending, graph.space);
        for bucket in graph.buckets.values_mut() {
            let excess = bucket.contacts.len().saturating_sub(k);
            for e in bucket.contacts.drain(..excess) {
                ops.push(StoreOp::DeleteContact {
                    space,
                    node_id: e.node_id,
                });
            }
            let excess = bucket.pending.len().saturating_sub(max_pending);
            for p in bucket.pending.drain(..excess) {
                ops.push(StoreOp::DeletePending {
                    space,
                    node_id: p.node_id,
                });
            }
        }
        graph.buckets.retain(|_, b| !b.is_empty());
        graph.contacts = graph.buckets.values().map(|b| b.contacts.len()).sum();
        Ok((graph, ops))
    }
}

fn contact_op(space: NodeGraphSpace, entry: &BucketEntry) -> StoreOp {
    StoreOp::PutContact {
        space,
        node_id: entry.node_id,
        record: ContactRecord {
            contact: entry.contact.clone(),
            updated: entry.updated,
        },
    }
}

/// The position of bucket `index` in the order of distance to a target, where
/// `to_target` is the distance from the own NodeId to the target.
///
/// A contact `n` in bucket `i` is at `(n ^ own) ^ to_target` from the target.
/// With `b` the highest bit of `to_target`: bucket `b` holds everything below
/// `2^b`; a bucket `i < b` lies in `[2^b, 2^(b+1))`, below `to_target` when bit
/// `i` of `to_target` is set (closer for larger `i`) and above it otherwise
/// (closer for smaller `i`); a bucket `i > b` lies in `[2^i, 2^(i+1))`. When the
/// target is the own NodeId, bucket `i` is simply `[2^i, 2^(i+1))`.
fn bucket_rank(to_target: &Distance, index: BucketIndex) -> u16 {
    let i = u16::from(index.get());
    let Some(b) = to_target.bucket_index() else {
        return i;
    };
    let b = u16::from(b.get());
    if i == b {
        0
    } else if i < b && to_target.bit(index) {
        b - i
    } else if i < b {
        b + 1 + i
    } else {
        i + b + 1
    }
}

/// How many of `contacts` (of bucket `index` of `own`'s table) fall in each
/// of the bucket's `2^bits` sub-ranges (`bits` at most
/// `Config::MAX_DIVERSITY_BITS`; the rest of the array stays zero).
pub(crate) fn sub_range_counts(
    own: &NodeId,
    index: BucketIndex,
    contacts: &[BucketEntry],
    bits: u8,
) -> [u16; 1 << Config::MAX_DIVERSITY_BITS] {
    let own_bits = own.bits_below(index, bits);
    let mut counts = [0u16; 1 << Config::MAX_DIVERSITY_BITS];
    for entry in contacts {
        let sub = (own_bits ^ entry.node_id.bits_below(index, bits)) as usize;
        if let Some(c) = counts.get_mut(sub) {
            *c += 1;
        }
    }
    counts
}

/// Which contact of the full `bucket` (number `index` of `own`'s table) a
/// new node should replace to spread the bucket more evenly over its range,
/// if any: the least recently updated contact of the most crowded
/// sub-range, when the new node's sub-range holds at least two fewer
/// contacts (so the move strictly evens the spread and evictions end once
/// it is even). See `Config::bucket_diversity_bits`.
fn diverse_eviction(
    own: &NodeId,
    index: BucketIndex,
    bucket: &Bucket,
    node_id: &NodeId,
    bits: u8,
) -> Option<usize> {
    let bits = bits.min(index.get()).min(Config::MAX_DIVERSITY_BITS);
    if bits == 0 {
        return None;
    }
    let own_bits = own.bits_below(index, bits);
    let sub_range = |id: &NodeId| (own_bits ^ id.bits_below(index, bits)) as usize;
    let counts = sub_range_counts(own, index, &bucket.contacts, bits);
    // The most crowded sub-range; ties go to the lowest number (deterministic).
    let (crowded, most) =
        counts.iter().enumerate().fold(
            (0, 0),
            |best, (i, &c)| if c > best.1 { (i, c) } else { best },
        );
    let mine = counts.get(sub_range(node_id)).copied().unwrap_or(0);
    if mine + 2 > most {
        return None;
    }
    // Contacts are kept oldest first: the first in the crowded sub-range.
    bucket
        .contacts
        .iter()
        .position(|e| sub_range(&e.node_id) == crowded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{ContactMode, NodeAddressScopes};
    use std::net::{IpAddr, Ipv4Addr};

    fn addr(port: u16) -> NodeAddress {
        NodeAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    fn data(t: u64) -> NodeContactAddressData {
        NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: t,
            scopes: NodeAddressScopes::GLOBAL,
        }
    }

    /// A NodeId in bucket 255 of the zero id, numbered `n`.
    fn far(n: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = 0x80;
        b[31] = n;
        NodeId::from_bytes(b)
    }

    fn small_graph(k: usize, pending: usize) -> NodeGraph {
        let config = Config {
            k,
            max_pending_per_bucket: pending,
            max_lookup_candidates: 100.max(k),
            ..Config::default()
        };
        NodeGraph::new(NodeId::from_bytes([0; 32]), &config).unwrap()
    }

    /// A NodeId in sub-range `sub` (of 16) of bucket 255 of the zero id.
    fn far_in(sub: u8, n: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = 0x80 | (sub << 3);
        b[31] = n;
        NodeId::from_bytes(b)
    }

    #[test]
    fn a_full_bucket_makes_room_for_an_empty_sub_range() {
        let mut g = small_graph(4, 2);
        for n in 1..=4 {
            let _ = g.set(far_in(0, n), addr(1), data(1)).unwrap();
        }
        let _ = g.set(far_in(0, 2), addr(1), data(2)).unwrap(); // now the newest
        // Same crowded sub-range: the bucket stays as it is.
        assert!(matches!(
            g.set(far_in(0, 9), addr(1), data(3)),
            Err(SetContactError::BucketFull { .. })
        ));
        // An empty sub-range: the oldest of the crowded one makes room.
        let up = g.set(far_in(5, 1), addr(1), data(3)).unwrap();
        assert_eq!(
            up.change,
            Change::Replaced {
                evicted: far_in(0, 1)
            }
        );
        assert!(up.ops.contains(&StoreOp::DeleteContact {
            space: NodeGraphSpace::Zero,
            node_id: far_in(0, 1)
        }));
        assert_eq!(g.len(), 4);
        assert!(g.contains(&far_in(5, 1)) && g.contains(&far_in(0, 2)));
    }

    #[test]
    fn without_diversity_a_full_bucket_keeps_its_contacts() {
        let config = Config {
            k: 4,
            bucket_diversity_bits: 0,
            ..Config::default()
        };
        let mut g = NodeGraph::new(NodeId::from_bytes([0; 32]), &config).unwrap();
        for n in 1..=4 {
            let _ = g.set(far_in(0, n), addr(1), data(1)).unwrap();
        }
        assert!(matches!(
            g.set(far_in(5, 1), addr(1), data(3)),
            Err(SetContactError::BucketFull { .. })
        ));
    }

    #[test]
    fn diversity_evictions_end_once_the_bucket_is_even() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut g = small_graph(20, 0);
        let own = g.own_node_id();
        let bucket = BucketIndex::FARTHEST;
        let offer = |g: &mut NodeGraph, rng: &mut rand_chacha::ChaCha8Rng| {
            let id = own.random_in_bucket(bucket, rng);
            matches!(
                g.set(id, addr(1), data(1)),
                Ok(GraphUpdate {
                    change: Change::Replaced { .. },
                    ..
                })
            )
        };
        // Start clustered, as a refresh lookup leaves a bucket: all in one sub-range.
        for _ in 0..20 {
            let id = own.random_in_sub_range(bucket, 4, 3, &mut rng);
            let _ = g.set(id, addr(1), data(1)).unwrap();
        }
        let mut evictions = 0;
        for _ in 0..2000 {
            evictions += usize::from(offer(&mut g, &mut rng));
        }
        let mut counts = [0usize; 16];
        for e in g.bucket(bucket) {
            counts[own.distance(&e.node_id).bits_below(bucket, 4) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert_eq!(g.bucket(bucket).len(), 20);
        assert!(max - min <= 1, "uneven after 2000 offers: {counts:?}");
        // Each eviction strictly evens the spread, so there were few.
        assert!(evictions < 40, "{evictions} evictions");
        // Once even, no stream of new nodes flushes the bucket.
        let before: Vec<NodeId> = g.bucket(bucket).iter().map(|e| e.node_id).collect();
        let later = (0..1000).filter(|_| offer(&mut g, &mut rng)).count();
        assert_eq!(later, 0);
        let after: Vec<NodeId> = g.bucket(bucket).iter().map(|e| e.node_id).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn set_get_unset() {
        let mut g = small_graph(3, 2);
        let up = g.set(far(1), addr(1), data(10)).unwrap();
        assert_eq!(up.change, Change::Inserted);
        assert_eq!(up.ops.len(), 1);
        assert_eq!(g.get(&far(1)).unwrap().get(&addr(1)), Some(&data(10)));
        assert_eq!(g.len(), 1);
        let up = g.unset(&far(1));
        assert_eq!(
            up.change,
            Change::Removed {
                contact: true,
                pending: false
            }
        );
        assert!(g.get(&far(1)).is_none());
        assert!(g.is_empty());
        assert_eq!(g.unset(&far(1)).change, Change::Unchanged);
    }

    #[test]
    fn own_node_id_is_refused() {
        let mut g = small_graph(3, 2);
        let own = g.own_node_id();
        assert!(matches!(
            g.set(own, addr(1), data(1)),
            Err(SetContactError::OwnNodeId { .. })
        ));
    }

    #[test]
    fn update_bumps_to_newest_and_full_bucket_names_oldest() {
        let mut g = small_graph(3, 2);
        for n in 1..=3 {
            let _ = g.set(far(n), addr(n.into()), data(n.into())).unwrap();
        }
        let order: Vec<_> = g
            .bucket(BucketIndex::FARTHEST)
            .iter()
            .map(|e| e.node_id)
            .collect();
        assert_eq!(order, vec![far(1), far(2), far(3)]);
        let up = g.set(far(1), addr(9), data(9)).unwrap();
        assert_eq!(up.change, Change::Updated);
        assert_eq!(g.get(&far(1)).unwrap().len(), 2);
        assert_eq!(g.oldest(BucketIndex::FARTHEST).unwrap().node_id, far(2));
        assert_eq!(
            g.set(far(4), addr(4), data(4)),
            Err(SetContactError::BucketFull {
                bucket: BucketIndex::FARTHEST,
                oldest: far(2)
            })
        );
        assert_eq!(g.bucket_len(BucketIndex::FARTHEST), 3);
        let up = g.force_set(far(4), addr(4), data(4)).unwrap();
        assert_eq!(up.change, Change::Replaced { evicted: far(2) });
        assert!(!g.contains(&far(2)));
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn pending_list_is_bounded_and_newest_wins() {
        let mut g = small_graph(1, 2);
        let _ = g.set(far(1), addr(1), data(1)).unwrap();
        assert!(matches!(
            g.add_pending(far(1), addr(1), data(1)),
            Err(SetContactError::AlreadyContact { .. })
        ));
        let _ = g.add_pending(far(2), addr(2), data(2)).unwrap();
        let _ = g.add_pending(far(3), addr(3), data(3)).unwrap();
        // Re-offering far(2) makes it the newest, so far(3) is dropped next.
        let _ = g.add_pending(far(2), addr(22), data(22)).unwrap();
        let up = g.add_pending(far(4), addr(4), data(4)).unwrap();
        assert_eq!(
            up.change,
            Change::PendingAdded {
                dropped: Some(far(3))
            }
        );
        assert_eq!(g.pending_dropped(), 1);
        let pending: Vec<_> = g
            .pending(BucketIndex::FARTHEST)
            .iter()
            .map(|p| p.node_id)
            .collect();
        assert_eq!(pending, vec![far(2), far(4)]);
        assert_eq!(g.get_pending(&far(2)).unwrap().address, addr(22));
        // A pending node that gets in leaves the pending list.
        let _ = g.unset(&far(1));
        let up = g.set(far(2), addr(22), data(22)).unwrap();
        assert!(up.ops.contains(&StoreOp::DeletePending {
            space: NodeGraphSpace::Zero,
            node_id: far(2)
        }));
        assert!(g.get_pending(&far(2)).is_none());
        let up = g.take_pending(BucketIndex::FARTHEST);
        let Change::PendingTaken(taken) = up.change else {
            panic!("expected PendingTaken");
        };
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].node_id, far(4));
        assert!(g.pending(BucketIndex::FARTHEST).is_empty());
    }

    #[test]
    fn reset_switches_space_and_rebuckets() {
        let mut g = small_graph(20, 2);
        for n in 1..=5 {
            let _ = g.set(far(n), addr(n.into()), data(n.into())).unwrap();
        }
        let new_own = far(1);
        let up = g.reset(new_own);
        assert_eq!(
            up.change,
            Change::Reset {
                kept: 4,
                dropped: 1
            }
        );
        assert_eq!(g.space(), NodeGraphSpace::One);
        assert_eq!(g.own_node_id(), new_own);
        assert!(!g.contains(&new_own));
        assert_eq!(
            up.ops.first(),
            Some(&StoreOp::ClearSpace(NodeGraphSpace::One))
        );
        assert_eq!(
            up.ops.last(),
            Some(&StoreOp::ClearSpace(NodeGraphSpace::Zero))
        );
        for n in 2..=5 {
            let index = new_own.bucket_index(&far(n)).unwrap();
            assert!(g.bucket(index).iter().any(|e| e.node_id == far(n)));
        }
    }

    #[test]
    fn restore_round_trips_and_shrinks_to_config() {
        let mut g = small_graph(4, 2);
        for n in 1..=4 {
            let _ = g.set(far(n), addr(n.into()), data(n.into())).unwrap();
        }
        let _ = g.add_pending(far(9), addr(9), data(9)).unwrap();
        let (back, ops) = NodeGraph::restore(
            g.snapshot(),
            &Config {
                k: 4,
                max_pending_per_bucket: 2,
                ..Config::default()
            },
        )
        .unwrap();
        assert_eq!(back, g);
        assert!(ops.is_empty());
        let (small, ops) = NodeGraph::restore(
            g.snapshot(),
            &Config {
                k: 2,
                max_pending_per_bucket: 2,
                ..Config::default()
            },
        )
        .unwrap();
        assert_eq!(small.len(), 2);
        assert_eq!(ops.len(), 2);
        let kept: Vec<_> = small
            .bucket(BucketIndex::FARTHEST)
            .iter()
            .map(|e| e.node_id)
            .collect();
        assert_eq!(kept, vec![far(3), far(4)]);
    }
}
