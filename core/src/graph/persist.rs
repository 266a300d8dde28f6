//! The node graph and the store: the [`StoreOp`]s that write a contact,
//! a pending node or the whole table, the [`GraphSnapshot`] the store
//! holds, and the table rebuilt from one (shrunk to a smaller
//! configuration, with the deletions that follow).

use super::{NodeGraph, NodeGraphSpace};
use crate::bucket::{BucketEntry, PendingNode};
use crate::config::{Config, ConfigError};
use crate::id::NodeId;
use crate::store::{ContactRecord, GraphSnapshot, PendingRecord, StoreOp};

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
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

impl NodeGraph {
    pub(super) fn contact_op(&self, entry: &BucketEntry) -> StoreOp {
        contact_op(self.space, entry)
    }

    pub(super) fn pending_op(&self, node: &PendingNode) -> StoreOp {
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

    pub(super) fn record_ops(&self) -> impl Iterator<Item = StoreOp> + '_ {
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
        graph.recount_groups();
        Ok((graph, ops))
    }
}

pub(super) fn contact_op(space: NodeGraphSpace, entry: &BucketEntry) -> StoreOp {
    StoreOp::PutContact {
        space,
        node_id: entry.node_id,
        record: ContactRecord {
            contact: entry.contact.clone(),
            updated: entry.updated,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addr, data, far, small_graph};
    use super::*;
    use crate::id::BucketIndex;

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
