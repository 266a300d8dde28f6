//! The two spaces of persisted node-graph records, and the rebuild of the
//! table into the other space when the own NodeId changes (key renewal):
//! the new table is written beside the old one and the switch is one
//! store batch, so a crash leaves one whole table.

use serde::{Deserialize, Serialize};

use super::{Change, GraphUpdate, NodeGraph};
use crate::bucket::{BucketEntry, PendingNode};
use crate::id::NodeId;
use crate::ip_group::distinct_groups;
use crate::store::StoreOp;

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

impl NodeGraph {
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
            let limits = &self.ip_limits;
            let groups_of = |e: &BucketEntry| {
                distinct_groups(limits, e.contact.iter().map(|(a, d)| (a, Some(d.scopes))))
            };
            let bucket = self.buckets.entry(index).or_default();
            // The new bucket keeps the IP-group limit too.
            let groups = groups_of(&entry);
            let group_full = groups.iter().any(|g| {
                bucket
                    .contacts
                    .iter()
                    .filter(|e| groups_of(e).contains(g))
                    .count()
                    >= limits.per_bucket
            });
            if bucket.contacts.len() < self.k && !group_full {
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
        self.recount_groups();

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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addr, data, far, small_graph};
    use super::*;

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
}
