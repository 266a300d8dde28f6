//! [`NodeGraph`]: the in-memory Kademlia routing table.
//!
//! This file holds the table itself (its buckets of contacts and pending
//! nodes) and the changes made to it one node at a time; the other concepts
//! of the table live beside it: `space` (the two store spaces and the
//! rebuild into the other one on key renewal), `persist` (the store
//! operations, snapshot and restore), `closest` (the exact closest-nodes
//! query) and `diversity` (which pending nodes a bucket admits first to
//! spread over its range).
//!
//! # Who gets in
//!
//! A known contact is updated; a new node is added while its bucket has
//! room. A full bucket never gives up a contact here, except with `force`:
//! only garbage collection removes contacts, and only those that failed a
//! ping (the spec's rule). Every change also respects the IP-group limits
//! (`Config::ip_group_limits`, module `ip_group`): a contact whose address
//! would put more than `per_bucket` contacts of one /24 (or /48) in its
//! bucket, or more than `per_table` in the table, is refused with
//! [`SetContactError::IpGroupFull`]; so is a pending node whose network
//! already has `per_bucket` pending nodes in the bucket. `force` (the
//! user's own choice) skips both rules.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use crate::address::NodeAddress;
use crate::bucket::{Bucket, BucketEntry, PendingNode};
use crate::config::{Config, ConfigError};
use crate::contact::{NodeContact, NodeContactAddressData};
use crate::id::{BucketIndex, NodeId};
use crate::ip_group::{IpGroup, IpGroupLimits, distinct_groups};
use crate::store::StoreOp;

mod closest;
mod diversity;
mod persist;
mod space;

use diversity::admission_order;
pub(crate) use diversity::sub_range_counts;
pub use persist::SnapshotError;
use persist::contact_op;
pub use space::NodeGraphSpace;

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
#[non_exhaustive]
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
    /// The address's network already holds its share of the bucket or the
    /// table (`Config::ip_group_limits`); nothing changed.
    #[error("network {group:?} already holds its share of bucket {bucket} or of the table")]
    IpGroupFull {
        /// The bucket.
        bucket: BucketIndex,
        /// The network of the address.
        group: IpGroup,
    },
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
    /// `Config::ip_group_limits`.
    ip_limits: IpGroupLimits,
    /// Contacts per network over the whole table (each contact once per
    /// network among its addresses); networks with none are absent.
    group_counts: BTreeMap<IpGroup, u32>,
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
            ip_limits: config.ip_group_limits,
            group_counts: BTreeMap::new(),
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

    /// The networks `contact` counts in.
    fn groups_of(&self, contact: &NodeContact) -> Vec<IpGroup> {
        distinct_groups(
            &self.ip_limits,
            contact.iter().map(|(a, d)| (a, Some(d.scopes))),
        )
    }

    fn count_groups(&mut self, groups: &[IpGroup], add: bool) {
        for g in groups {
            match self.group_counts.entry(*g) {
                Entry::Occupied(mut e) => {
                    if add {
                        *e.get_mut() += 1;
                    } else if *e.get() <= 1 {
                        e.remove();
                    } else {
                        *e.get_mut() -= 1;
                    }
                }
                Entry::Vacant(e) => {
                    if add {
                        e.insert(1);
                    }
                }
            }
        }
    }

    /// Counts every contact's networks again (after a restore or a reset).
    pub(super) fn recount_groups(&mut self) {
        let groups: Vec<Vec<IpGroup>> = self.iter().map(|e| self.groups_of(&e.contact)).collect();
        self.group_counts.clear();
        for g in groups {
            self.count_groups(&g, true);
        }
    }

    /// Contacts of network `group` in the table.
    pub fn group_count(&self, group: &IpGroup) -> usize {
        self.group_counts.get(group).map_or(0, |c| *c as usize)
    }

    /// Whether a contact other than `node_id` in bucket `index` counts in
    /// `group`, `per_bucket` times or more, or the table holds `per_table`.
    fn group_full(&self, index: BucketIndex, node_id: &NodeId, group: &IpGroup) -> bool {
        if self.group_count(group) >= self.ip_limits.per_table {
            return true;
        }
        let in_bucket = self
            .bucket(index)
            .iter()
            .filter(|e| e.node_id != *node_id && self.groups_of(&e.contact).contains(group))
            .count();
        in_bucket >= self.ip_limits.per_bucket
    }

    /// The network that refuses `address` for `node_id` (as a contact, or,
    /// with `pending`, as a pending node), if one does.
    fn refusing_group(
        &self,
        index: BucketIndex,
        node_id: &NodeId,
        address: &NodeAddress,
        data: &NodeContactAddressData,
        pending: bool,
    ) -> Option<IpGroup> {
        let group = self.ip_limits.group_of(address, Some(data.scopes))?;
        if let Some(entry) = self.entry(node_id)
            && self.groups_of(&entry.contact).contains(&group)
        {
            // Already counted there: an update does not add to the network.
            return None;
        }
        if self.group_full(index, node_id, &group) {
            return Some(group);
        }
        if pending {
            let pending_in_group = self
                .pending(index)
                .iter()
                .filter(|p| {
                    p.node_id != *node_id
                        && self.ip_limits.group_of(&p.address, Some(p.data.scopes)) == Some(group)
                })
                .count();
            if pending_in_group >= self.ip_limits.per_bucket {
                return Some(group);
            }
        }
        None
    }

    /// Whether [`NodeGraph::set`] of `node_id` at `address` would pass the
    /// IP-group limits (a full bucket aside).
    pub fn admits(
        &self,
        node_id: &NodeId,
        address: &NodeAddress,
        data: &NodeContactAddressData,
    ) -> bool {
        self.bucket_index(node_id).is_some_and(|index| {
            self.refusing_group(index, node_id, address, data, false)
                .is_none()
        })
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

    /// Records `address` with `data` for `node_id`: updates a known contact
    /// (merging the address) and makes it the newest of its bucket, or adds the
    /// node if its bucket has room. A node that was pending stops being pending.
    /// A full bucket, or an address whose network holds its share already
    /// (`Config::ip_group_limits`), is an error and changes nothing.
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

    /// As [`NodeGraph::set`], but a full bucket evicts its oldest contact
    /// and the IP-group limits do not apply: what `NodeManager::set_node`
    /// does with `force`.
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
        if !force && let Some(group) = self.refusing_group(index, &node_id, &address, &data, false)
        {
            return Err(SetContactError::IpGroupFull {
                bucket: index,
                group,
            });
        }
        let seq = self.next_seq;
        let k = self.k;
        let space = self.space;
        let old_groups = self
            .entry(&node_id)
            .map(|e| self.groups_of(&e.contact))
            .unwrap_or_default();
        let mut evicted_groups = Vec::new();
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
                    if !force {
                        return Err(SetContactError::BucketFull {
                            bucket: index,
                            oldest,
                        });
                    }
                    let evicted = bucket.contacts.remove(0);
                    evicted_groups = distinct_groups(
                        &self.ip_limits,
                        evicted.contact.iter().map(|(a, d)| (a, Some(d.scopes))),
                    );
                    let evicted = evicted.node_id;
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
        let new_groups = self.groups_of(&entry.contact);
        if let Some(bucket) = self.buckets.get_mut(&index) {
            bucket.reserve_contact(k);
            bucket.contacts.push(entry);
        }
        self.count_groups(&evicted_groups, false);
        self.count_groups(&old_groups, false);
        self.count_groups(&new_groups, true);
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
        let mut removed_groups = Vec::new();
        let contact = bucket.contact_position(node_id).map(|pos| {
            let entry = bucket.contacts.remove(pos);
            removed_groups = distinct_groups(
                &self.ip_limits,
                entry.contact.iter().map(|(a, d)| (a, Some(d.scopes))),
            );
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
        self.count_groups(&removed_groups, false);
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
    /// dropped and counted in [`NodeGraph::pending_dropped`]. A node whose
    /// network could not get in ([`SetContactError::IpGroupFull`]), or holds
    /// `per_bucket` pending entries of the bucket already, is refused: a
    /// stream of fresh NodeIds from one network cannot push others out.
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
        if let Some(group) = self.refusing_group(index, &node_id, &address, &data, true) {
            return Err(SetContactError::IpGroupFull {
                bucket: index,
                group,
            });
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

    /// Takes every pending node off bucket `index`'s list, in the order
    /// garbage collection should admit them ([`Change::PendingTaken`]): the
    /// least crowded sub-range of the bucket first (`Config::bucket_diversity_bits`),
    /// newest first among equals; garbage collection then adds those that fit.
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
        let taken = admission_order(
            &self.own,
            index,
            self.bucket(index),
            taken,
            self.diversity_bits,
        );
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contact::{ContactMode, NodeAddressScopes};
    use std::net::{IpAddr, Ipv4Addr};

    pub(super) fn addr(port: u16) -> NodeAddress {
        NodeAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    pub(super) fn data(t: u64) -> NodeContactAddressData {
        NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: t,
            scopes: NodeAddressScopes::GLOBAL,
        }
    }

    /// A NodeId in bucket 255 of the zero id, numbered `n`.
    pub(super) fn far(n: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = 0x80;
        b[31] = n;
        NodeId::from_bytes(b)
    }

    pub(super) fn small_graph(k: usize, pending: usize) -> NodeGraph {
        let config = Config {
            k,
            max_pending_per_bucket: pending,
            max_lookup_candidates: 100.max(k),
            ..Config::default()
        };
        NodeGraph::new(NodeId::from_bytes([0; 32]), &config).unwrap()
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
}
