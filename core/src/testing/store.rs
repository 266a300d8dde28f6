//! A model of the store: the state a real store would hold after applying
//! the batches a manager asked for, and the [`Snapshot`] it would load from
//! it on the next start. Tests compare it with the manager's own view.

use std::collections::{BTreeMap, BTreeSet};

use crate::claims::SignedClaim;
use crate::{
    ContactRecord, GraphSnapshot, NodeGraphSpace, NodeId, PendingRecord, Snapshot, StoreOp,
    TaskKey, TaskRecord,
};

/// Everything a store would hold, from the batches applied.
#[derive(Default, Debug, Clone)]
pub struct ModelStore {
    /// The active graph space.
    pub active: Option<NodeGraphSpace>,
    /// Each space's own NodeId.
    pub owners: BTreeMap<NodeGraphSpace, NodeId>,
    /// The contacts, by space.
    pub contacts: BTreeMap<(NodeGraphSpace, NodeId), ContactRecord>,
    /// The pending entries, by space.
    pub pending: BTreeMap<(NodeGraphSpace, NodeId), PendingRecord>,
    /// The persisted tasks.
    pub tasks: BTreeMap<TaskKey, TaskRecord>,
    /// The sigchain, by seq.
    pub claims: BTreeMap<u64, SignedClaim>,
    /// The gestalt links.
    pub gestalt: BTreeSet<(NodeId, NodeId)>,
    /// The nodes allowed to ask for claims.
    pub permissions: BTreeSet<NodeId>,
    /// How many batches were applied.
    pub batches: usize,
}

impl ModelStore {
    /// Applies one batch, in order.
    pub fn apply(&mut self, ops: &[StoreOp]) {
        self.batches += 1;
        for op in ops {
            match op.clone() {
                StoreOp::PutSpaceOwner { space, own } => {
                    self.owners.insert(space, own);
                }
                StoreOp::SetActiveSpace(space) => self.active = Some(space),
                StoreOp::PutContact {
                    space,
                    node_id,
                    record,
                } => {
                    self.contacts.insert((space, node_id), record);
                }
                StoreOp::DeleteContact { space, node_id } => {
                    self.contacts.remove(&(space, node_id));
                }
                StoreOp::PutPending {
                    space,
                    node_id,
                    record,
                } => {
                    self.pending.insert((space, node_id), record);
                }
                StoreOp::DeletePending { space, node_id } => {
                    self.pending.remove(&(space, node_id));
                }
                StoreOp::ClearSpace(space) => {
                    self.owners.remove(&space);
                    self.contacts.retain(|(s, _), _| *s != space);
                    self.pending.retain(|(s, _), _| *s != space);
                }
                StoreOp::PutTask { key, record } => {
                    self.tasks.insert(key, record);
                }
                StoreOp::DeleteTask(key) => {
                    self.tasks.remove(&key);
                }
                StoreOp::PutClaim { seq, claim } => {
                    self.claims.insert(seq, claim);
                }
                StoreOp::PutGestaltLink { a, b } => {
                    self.gestalt.insert((a, b));
                }
                StoreOp::PutClaimPermission(node) => {
                    self.permissions.insert(node);
                }
                StoreOp::DeleteClaimPermission(node) => {
                    self.permissions.remove(&node);
                }
            }
        }
    }

    /// What the store would load on the next start.
    pub fn snapshot(&self) -> Snapshot {
        let graph = self.active.map(|space| GraphSnapshot {
            space,
            own: self.owners[&space],
            contacts: self
                .contacts
                .iter()
                .filter(|((s, _), _)| *s == space)
                .map(|((_, id), r)| (*id, r.clone()))
                .collect(),
            pending: self
                .pending
                .iter()
                .filter(|((s, _), _)| *s == space)
                .map(|((_, id), r)| (*id, r.clone()))
                .collect(),
        });
        Snapshot {
            graph,
            tasks: self.tasks.clone().into_iter().collect(),
            claims: self.claims.values().cloned().collect(),
            gestalt_links: self.gestalt.iter().copied().collect(),
            claim_permissions: self.permissions.iter().copied().collect(),
        }
    }
}
