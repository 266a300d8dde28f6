//! What the store holds of the graph, so that a failed batch is undone in
//! memory: the in-memory graph always equals the committed records plus the
//! batches still in flight (which may yet commit).
//!
//! The graph changes at once and emits its [`StoreOp`]s; a batch that fails
//! (a full disk) writes nothing, so the contacts it added, the evictions it
//! made and the pending nodes it moved must not stay in memory. The manager
//! keeps the graph records the store holds after every committed batch,
//! and the graph operations of each batch in flight. When a batch fails,
//! the graph is rebuilt from the committed records with the batches still
//! in flight applied over them, as the store will hold them once they land.

use std::collections::{BTreeMap, VecDeque};

use crate::graph::NodeGraphSpace;
use crate::id::NodeId;
use crate::manager::api::BatchId;
use crate::store::{ContactRecord, GraphSnapshot, PendingRecord, StoreOp};

/// Batches tracked at most; past it the oldest is taken as committed (a
/// driver that never reports batches must not grow this without bound).
const MAX_IN_FLIGHT: usize = 1 << 16;

#[derive(Clone, Debug, Default)]
struct SpaceRecords {
    owner: Option<NodeId>,
    contacts: BTreeMap<NodeId, ContactRecord>,
    pending: BTreeMap<NodeId, PendingRecord>,
}

/// The graph records of a store: both spaces and which is active.
#[derive(Clone, Debug, Default)]
struct GraphRecords {
    active: Option<NodeGraphSpace>,
    zero: SpaceRecords,
    one: SpaceRecords,
}

impl GraphRecords {
    fn from_snapshot(snapshot: Option<&GraphSnapshot>) -> Self {
        let mut records = Self::default();
        if let Some(s) = snapshot {
            records.active = Some(s.space);
            let space = records.space(s.space);
            space.owner = Some(s.own);
            space.contacts = s.contacts.iter().cloned().collect();
            space.pending = s.pending.iter().cloned().collect();
        }
        records
    }

    fn space(&mut self, space: NodeGraphSpace) -> &mut SpaceRecords {
        match space {
            NodeGraphSpace::Zero => &mut self.zero,
            NodeGraphSpace::One => &mut self.one,
        }
    }

    /// Applies one operation as the store does (deletes of absent records
    /// do nothing).
    fn apply(&mut self, op: &StoreOp) {
        match op {
            StoreOp::PutSpaceOwner { space, own } => self.space(*space).owner = Some(*own),
            StoreOp::SetActiveSpace(space) => self.active = Some(*space),
            StoreOp::PutContact {
                space,
                node_id,
                record,
            } => {
                self.space(*space).contacts.insert(*node_id, record.clone());
            }
            StoreOp::DeleteContact { space, node_id } => {
                self.space(*space).contacts.remove(node_id);
            }
            StoreOp::PutPending {
                space,
                node_id,
                record,
            } => {
                self.space(*space).pending.insert(*node_id, record.clone());
            }
            StoreOp::DeletePending { space, node_id } => {
                self.space(*space).pending.remove(node_id);
            }
            StoreOp::ClearSpace(space) => *self.space(*space) = SpaceRecords::default(),
            _ => {}
        }
    }

    /// The active space as the store would load it, if it has one.
    fn snapshot(mut self) -> Option<GraphSnapshot> {
        let active = self.active?;
        let space = std::mem::take(self.space(active));
        Some(GraphSnapshot {
            space: active,
            own: space.owner?,
            contacts: space.contacts.into_iter().collect(),
            pending: space.pending.into_iter().collect(),
        })
    }
}

/// Whether `op` writes the graph.
fn is_graph_op(op: &StoreOp) -> bool {
    matches!(
        op,
        StoreOp::PutSpaceOwner { .. }
            | StoreOp::SetActiveSpace(_)
            | StoreOp::PutContact { .. }
            | StoreOp::DeleteContact { .. }
            | StoreOp::PutPending { .. }
            | StoreOp::DeletePending { .. }
            | StoreOp::ClearSpace(_)
    )
}

/// The committed graph records and the graph operations in flight.
#[derive(Debug, Default)]
pub(crate) struct CommittedGraph {
    store: GraphRecords,
    in_flight: VecDeque<(BatchId, Vec<StoreOp>)>,
}

impl CommittedGraph {
    /// What a store loaded with `snapshot` holds.
    pub(crate) fn loaded(snapshot: Option<&GraphSnapshot>) -> Self {
        Self {
            store: GraphRecords::from_snapshot(snapshot),
            in_flight: VecDeque::new(),
        }
    }

    /// Batch `id` with `ops` was sent to the store.
    pub(crate) fn sent(&mut self, id: BatchId, ops: &[StoreOp]) {
        let graph_ops: Vec<StoreOp> = ops.iter().filter(|op| is_graph_op(op)).cloned().collect();
        if graph_ops.is_empty() {
            return;
        }
        if self.in_flight.len() >= MAX_IN_FLIGHT
            && let Some((_, oldest)) = self.in_flight.pop_front()
        {
            oldest.iter().for_each(|op| self.store.apply(op));
        }
        self.in_flight.push_back((id, graph_ops));
    }

    /// Batch `id` committed.
    pub(crate) fn committed(&mut self, id: BatchId) {
        if let Some(i) = self.in_flight.iter().position(|(b, _)| *b == id)
            && let Some((_, ops)) = self.in_flight.remove(i)
        {
            ops.iter().for_each(|op| self.store.apply(op));
        }
    }

    /// Batch `id` failed: the graph as the store will hold it once the
    /// batches still in flight land, or `None` if the failed batch did not
    /// write the graph (nothing to undo). The outer `Some(None)` means the
    /// store will hold no graph.
    pub(crate) fn failed(&mut self, id: BatchId) -> Option<Option<GraphSnapshot>> {
        let i = self.in_flight.iter().position(|(b, _)| *b == id)?;
        self.in_flight.remove(i);
        let mut records = self.store.clone();
        for (_, ops) in &self.in_flight {
            ops.iter().for_each(|op| records.apply(op));
        }
        Some(records.snapshot())
    }
}
