//! `sync_node_graph`: joining the network from seed nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::find::{FindOptions, Strategies};
use super::{AttemptId, Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, Step};
use crate::address::NodeAddress;
use crate::contact::ContactMode;
use crate::id::{BucketIndex, NodeId};
use crate::manager::api::{ApiError, SeedFailure};
use crate::seed::SeedNodes;
use crate::store::{TaskKey, TaskPayload};
use crate::time::Now;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Seeds,
    Find,
    Refresh { remaining: usize },
}

/// A sync in progress.
#[derive(Debug)]
pub(crate) struct SyncOp {
    seeds: Vec<(NodeId, NodeAddress)>,
    next: usize,
    in_flight: BTreeMap<AttemptId, usize>,
    failures: Vec<SeedFailure>,
    reached: usize,
    connect_timeout: Duration,
    blocking: bool,
    phase: Phase,
}

impl NodeManager {
    /// Spec: `NodeManager.syncNodeGraph`.
    ///
    /// Joins the network: connects to the seed nodes (the closest
    /// `sync_concurrency` at a time), fails listing each seed's failure if
    /// none answers, then looks up the own NodeId and refreshes every bucket
    /// farther than the closest neighbour's. `blocking` waits for those
    /// refreshes; otherwise one sync task is scheduled and the operation ends
    /// once it is persisted.
    pub fn sync_node_graph(
        &mut self,
        now: Now,
        seed_nodes: &SeedNodes,
        connect_timeout: Option<Duration>,
        blocking: bool,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let seeds: Vec<(NodeId, NodeAddress)> = seed_nodes.iter().cloned().collect();
        let timeout = connect_timeout.unwrap_or(self.config.connection_connect_timeout);
        let op = if blocking || seeds.is_empty() {
            self.spawn_sync(seeds, timeout, true, Parent::Caller)?
        } else {
            let payload = TaskPayload::Sync {
                seeds,
                connect_timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            };
            let ops = self.schedule_task(TaskKey::SyncNodeGraph, Duration::ZERO, payload);
            let op = self.spawn(OpKind::StoreWait(OpValue::Unit), Parent::Caller, None)?;
            self.store(ops, Some(op));
            op
        };
        self.run();
        Ok(op)
    }

    pub(super) fn spawn_sync(
        &mut self,
        mut seeds: Vec<(NodeId, NodeAddress)>,
        connect_timeout: Duration,
        blocking: bool,
        parent: Parent,
    ) -> Result<OpId, ApiError> {
        let own = self.graph.own_node_id();
        seeds.retain(|(id, _)| *id != own);
        seeds.sort_by_key(|(id, _)| id.distance(&own));
        let op = SyncOp {
            seeds,
            next: 0,
            in_flight: BTreeMap::new(),
            failures: Vec::new(),
            reached: 0,
            connect_timeout,
            blocking,
            phase: Phase::Seeds,
        };
        self.spawn(OpKind::Sync(Box::new(op)), parent, None)
    }

    pub(super) fn step_sync(&mut self, id: OpId, op: Box<SyncOp>, input: Input) -> Step {
        let step = self.step_sync_phases(id, op, input);
        if let Step::Done(result) = &step {
            self.sync_ended(id, result);
        }
        step
    }

    fn step_sync_phases(&mut self, id: OpId, mut op: Box<SyncOp>, input: Input) -> Step {
        match input {
            Input::Start if op.seeds.is_empty() => return Step::Done(Err(OpError::NoSeedNodes)),
            Input::Connected { attempt, .. } if op.in_flight.remove(&attempt).is_some() => {
                op.reached += 1;
            }
            Input::ConnectFailed { attempt, failure } => {
                if let Some(i) = op.in_flight.remove(&attempt)
                    && let Some((node_id, address)) = op.seeds.get(i)
                {
                    op.failures.push(SeedFailure {
                        node_id: *node_id,
                        address: address.clone(),
                        reason: failure,
                    });
                }
            }
            Input::Child { .. } => match op.phase {
                Phase::Find => return self.sync_refresh(id, op),
                Phase::Refresh { remaining } => {
                    let remaining = remaining.saturating_sub(1);
                    if remaining == 0 {
                        return Step::Done(Ok(OpValue::Unit));
                    }
                    op.phase = Phase::Refresh { remaining };
                }
                Phase::Seeds => {}
            },
            Input::Deadline => return Step::Done(Err(OpError::Timeout)),
            _ => {}
        }
        if op.phase != Phase::Seeds {
            return Step::Continue(OpKind::Sync(op));
        }
        while op.in_flight.len() < self.config.sync_concurrency {
            let Some((node_id, address)) = op.seeds.get(op.next).cloned() else {
                break;
            };
            let index = op.next;
            op.next += 1;
            if self.conns.is_connected(&node_id) {
                op.reached += 1;
                continue;
            }
            let attempt = self.dial(
                id,
                node_id,
                &address,
                ContactMode::Direct,
                op.connect_timeout,
            );
            op.in_flight.insert(attempt, index);
        }
        if !op.in_flight.is_empty() {
            return Step::Continue(OpKind::Sync(op));
        }
        if op.reached == 0 {
            return Step::Done(Err(OpError::SeedsUnreachable(std::mem::take(
                &mut op.failures,
            ))));
        }
        let own = self.graph.own_node_id();
        let strategies = Strategies {
            mdns: false,
            ..Strategies::ALL
        };
        let options = FindOptions {
            connection_connect_timeout: Some(op.connect_timeout),
            ..FindOptions::default()
        };
        if self
            .spawn_find(own, options, strategies, Parent::Op(id))
            .is_err()
        {
            return Step::Done(Err(OpError::Cancelled));
        }
        op.phase = Phase::Find;
        Step::Continue(OpKind::Sync(op))
    }

    /// Refreshes every bucket farther than the closest neighbour's, now.
    fn sync_refresh(&mut self, id: OpId, mut op: Box<SyncOp>) -> Step {
        let own = self.graph.own_node_id();
        let closest = self
            .graph
            .closest(&own, 1)
            .first()
            .and_then(|e| own.bucket_index(&e.node_id));
        let first = match closest {
            Some(b) if b == BucketIndex::FARTHEST => return Step::Done(Ok(OpValue::Unit)),
            Some(b) => b.get() + 1,
            None => return Step::Done(Ok(OpValue::Unit)),
        };
        let mut remaining = 0;
        for bucket in (first..=u8::MAX).map(BucketIndex::new) {
            let lazy = !op.blocking;
            if self
                .update_refresh_inner(bucket, Some(Duration::ZERO), lazy, Parent::Op(id))
                .is_ok()
            {
                remaining += 1;
            }
        }
        if remaining == 0 {
            return Step::Done(Ok(OpValue::Unit));
        }
        op.phase = Phase::Refresh { remaining };
        Step::Continue(OpKind::Sync(op))
    }
}
