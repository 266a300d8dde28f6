//! `set_node` and the bucket upkeep around it: pending nodes, garbage
//! collection, and the pings it needs.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::running::Job;
use super::{AttemptId, Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, Step, Timer};
use crate::address::NodeAddress;
use crate::contact::{ContactMode, NodeContactAddressData};
use crate::graph::{Change, SetContactError};
use crate::id::{BucketIndex, NodeId};
use crate::manager::api::{ApiError, NodeEvent};
use crate::store::{StoreOp, TaskKey, TaskPayload, TaskRecord};
use crate::time::Now;

/// A `set_node` waiting for its batch and, when blocking, for garbage collection.
#[derive(Debug)]
pub(crate) struct SetNodeOp {
    node_id: NodeId,
    address: NodeAddress,
    data: NodeContactAddressData,
    block: bool,
    force: bool,
    connect_timeout: Duration,
    batch_pending: bool,
    gc_pending: bool,
}

/// Waits for a store batch and/or another operation's end.
#[derive(Debug)]
pub(crate) struct Wait {
    /// A batch with this operation as waiter is in flight.
    pub(crate) batch: bool,
    /// This operation watches another.
    pub(crate) child: bool,
}

/// Pings a node at its addresses, one after the other, directly.
#[derive(Debug)]
pub(crate) struct PingAddress {
    node_id: NodeId,
    addresses: VecDeque<NodeAddress>,
    attempt: Option<AttemptId>,
    timeout: Duration,
    /// Dial even when a connection exists (to present a renewed key).
    fresh: bool,
}

/// Garbage collection of one bucket.
#[derive(Debug)]
pub(crate) struct Gc {
    pub(crate) bucket: BucketIndex,
    connect_timeout: Duration,
    /// Contacts still to ping, oldest first, with their update counter when
    /// the collection started.
    to_ping: VecDeque<(NodeId, u64)>,
    in_flight: BTreeMap<OpId, (NodeId, u64)>,
    dead: Vec<(NodeId, u64)>,
    committing: bool,
}

impl NodeManager {
    /// Spec: `NodeManager.setNode`.
    ///
    /// Adds or updates a node in the graph. The own NodeId is ignored. A known
    /// node is updated and becomes the newest of its bucket; a new one is
    /// added if its bucket has room. In a full bucket, `force` evicts the
    /// oldest contact without a ping; a node whose part of the bucket's range
    /// is short of contacts replaces the oldest contact of the most crowded
    /// part (`Config::bucket_diversity_bits`); otherwise the node goes on the bucket's
    /// pending list and garbage collection is scheduled, or, with `block`, run
    /// now and waited for. Every add or update pushes the bucket's refresh back.
    /// `connect_timeout` bounds each garbage-collection ping.
    #[allow(clippy::too_many_arguments)]
    pub fn set_node(
        &mut self,
        now: Now,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
        block: bool,
        force: bool,
        connect_timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let op = self.set_node_inner(
            node_id,
            address,
            data,
            block,
            force,
            connect_timeout,
            Parent::Caller,
        )?;
        self.run();
        Ok(op)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn set_node_inner(
        &mut self,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
        block: bool,
        force: bool,
        connect_timeout: Option<Duration>,
        parent: Parent,
    ) -> Result<OpId, ApiError> {
        let op = SetNodeOp {
            node_id,
            address,
            data,
            block,
            force,
            connect_timeout: connect_timeout.unwrap_or(self.config.connection_connect_timeout),
            batch_pending: false,
            gc_pending: false,
        };
        self.spawn(OpKind::SetNode(op), parent, None)
    }

    pub(super) fn step_set_node(&mut self, id: OpId, mut op: SetNodeOp, input: Input) -> Step {
        match input {
            Input::Start => {
                let Some(bucket) = self.graph.bucket_index(&op.node_id) else {
                    // Spec: the own NodeId is skipped.
                    return Step::Done(Ok(OpValue::Unit));
                };
                let mut ops = Vec::new();
                let set = if op.force {
                    self.graph
                        .force_set(op.node_id, op.address.clone(), op.data)
                } else {
                    self.graph.set(op.node_id, op.address.clone(), op.data)
                };
                match set {
                    Ok(update) => {
                        if let Change::Replaced { evicted } = update.change {
                            self.emit_event(NodeEvent::ContactRemoved { node_id: evicted });
                        }
                        self.emit_event(NodeEvent::ContactSet {
                            node_id: op.node_id,
                            bucket,
                        });
                        ops.extend(update.ops);
                        ops.extend(self.push_refresh_back(bucket));
                    }
                    Err(SetContactError::BucketFull { .. }) => {
                        match self
                            .graph
                            .add_pending(op.node_id, op.address.clone(), op.data)
                        {
                            Ok(update) => ops.extend(update.ops),
                            Err(_) => return Step::Done(Ok(OpValue::Unit)),
                        }
                        if op.block {
                            match self.gc_for(bucket, op.connect_timeout) {
                                Some(gc) => op.gc_pending = self.add_watcher(gc, id),
                                None => op.gc_pending = false,
                            }
                        } else {
                            ops.extend(self.setup_gc_task(bucket));
                        }
                    }
                    Err(
                        SetContactError::OwnNodeId { .. } | SetContactError::AlreadyContact { .. },
                    ) => {
                        return Step::Done(Ok(OpValue::Unit));
                    }
                }
                // The batch always reports back, even when empty.
                self.store(ops, Some(id));
                op.batch_pending = true;
            }
            Input::Committed { result } => {
                op.batch_pending = false;
                if let Err(e) = result {
                    return Step::Done(Err(OpError::Store(e)));
                }
            }
            Input::Child { result, .. } => {
                op.gc_pending = false;
                if let Err(e) = result {
                    return Step::Done(Err(e));
                }
            }
            Input::Deadline => return Step::Done(Err(OpError::Timeout)),
            _ => {}
        }
        if op.batch_pending || op.gc_pending {
            Step::Continue(OpKind::SetNode(op))
        } else {
            Step::Done(Ok(OpValue::Unit))
        }
    }

    /// Spec: `NodeManager.unsetNode`.
    ///
    /// Removes a node from the graph (contact and pending entry).
    pub fn unset_node(&mut self, now: Now, node_id: NodeId) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let update = self.graph.unset(&node_id);
        if matches!(update.change, Change::Removed { contact: true, .. }) {
            self.emit_event(NodeEvent::ContactRemoved { node_id });
        }
        let op = self.spawn(OpKind::StoreWait(OpValue::Unit), Parent::Caller, None)?;
        self.store(update.ops, Some(op));
        self.run();
        Ok(op)
    }

    /// Spec: `NodeManager.addPendingNode`.
    ///
    /// Puts a node on its bucket's pending list, then runs garbage collection
    /// now and waits for it (`block`), or schedules it.
    pub fn add_pending_node(
        &mut self,
        now: Now,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
        block: bool,
        connect_timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let bucket = self
            .graph
            .bucket_index(&node_id)
            .ok_or(ApiError::OwnNodeId(node_id))?;
        let connect_timeout = connect_timeout.unwrap_or(self.config.connection_connect_timeout);
        let mut ops = match self.graph.add_pending(node_id, address, data) {
            Ok(update) => update.ops,
            // Already a contact: nothing to wait for.
            Err(_) => Vec::new(),
        };
        let gc = if block {
            self.gc_for(bucket, connect_timeout)
        } else {
            ops.extend(self.setup_gc_task(bucket));
            None
        };
        let op = self.spawn(
            OpKind::Wait(Wait {
                batch: true,
                child: gc.is_some(),
            }),
            Parent::Caller,
            None,
        )?;
        if let Some(gc) = gc {
            self.add_watcher(gc, op);
        }
        self.store(ops, Some(op));
        self.run();
        Ok(op)
    }

    /// Spec: `NodeManager.setupGCTask`.
    ///
    /// Schedules garbage collection of `bucket` now, unless it is already
    /// scheduled or running: at most one per bucket.
    pub(super) fn setup_gc_task(&mut self, bucket: BucketIndex) -> Vec<StoreOp> {
        let key = TaskKey::GarbageCollect(bucket);
        if self.running.is_running(Job::Gc(bucket)) || self.timers.get(Timer::Task(key)).is_some() {
            return Vec::new();
        }
        self.schedule_task(key, Duration::ZERO, TaskPayload::None)
    }

    /// Spec: `NodeManager.garbageCollectBucket`.
    ///
    /// Pings the contacts of `bucket`, oldest first, `gc_concurrency` at a
    /// time; removes those that do not answer; fills the room made with
    /// pending nodes, newest first; drops the other pending nodes. Ends when
    /// the result is committed. If a collection of the bucket is running, it
    /// waits for that one instead of starting a second.
    pub fn garbage_collect_bucket(
        &mut self,
        now: Now,
        bucket: BucketIndex,
        connect_timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let timeout = connect_timeout.unwrap_or(self.config.connection_connect_timeout);
        let op = match self.running.get(Job::Gc(bucket)) {
            Some(running) => {
                let wait = Wait {
                    batch: false,
                    child: true,
                };
                let op = self.spawn(OpKind::Wait(wait), Parent::Caller, None)?;
                self.add_watcher(running, op);
                op
            }
            None => {
                let op = self.spawn(
                    OpKind::Gc(Box::new(new_gc(bucket, timeout))),
                    Parent::Caller,
                    None,
                )?;
                self.running.start(Job::Gc(bucket), op);
                op
            }
        };
        self.run();
        Ok(op)
    }

    /// The running collection of `bucket`, or a new internal one.
    pub(super) fn gc_for(&mut self, bucket: BucketIndex, timeout: Duration) -> Option<OpId> {
        if let Some(running) = self.running.get(Job::Gc(bucket)) {
            return Some(running);
        }
        let op = self
            .spawn(
                OpKind::Gc(Box::new(new_gc(bucket, timeout))),
                Parent::Internal,
                None,
            )
            .ok()?;
        self.running.start(Job::Gc(bucket), op);
        Some(op)
    }

    pub(super) fn step_gc(&mut self, id: OpId, mut gc: Box<Gc>, input: Input) -> Step {
        match input {
            Input::Start => {
                // This collection is the one a scheduled task would have run.
                let ops = self.unschedule_task(TaskKey::GarbageCollect(gc.bucket));
                self.store(ops, None);
                // Contacts connected within `gc_contact_fresh` are alive.
                let fresh = self.config.gc_contact_fresh.as_secs();
                let stale_before = self.now.unix_secs().saturating_sub(fresh);
                gc.to_ping = self
                    .graph
                    .bucket(gc.bucket)
                    .iter()
                    .filter(|e| fresh == 0 || e.contact.last_connected() < stale_before)
                    .map(|e| (e.node_id, e.updated))
                    .collect();
            }
            Input::Child { child, result } => {
                if let Some(node) = gc.in_flight.remove(&child)
                    && !matches!(result, Ok(OpValue::Reachable(true)))
                {
                    gc.dead.push(node);
                }
            }
            Input::Committed { result } => {
                return Step::Done(result.map(|()| OpValue::Unit).map_err(OpError::Store));
            }
            _ => {}
        }
        if gc.committing {
            return Step::Continue(OpKind::Gc(gc));
        }
        while gc.in_flight.len() < self.config.gc_concurrency {
            let Some((node_id, updated)) = gc.to_ping.pop_front() else {
                break;
            };
            let addresses = self
                .graph
                .get(&node_id)
                .map(|c| {
                    let mut list: Vec<_> = c.iter().collect();
                    list.sort_by_key(|(_, d)| std::cmp::Reverse(d.connected_time));
                    list.into_iter().map(|(a, _)| a.clone()).collect()
                })
                .unwrap_or_default();
            let ping = PingAddress {
                node_id,
                addresses,
                attempt: None,
                timeout: gc.connect_timeout,
                fresh: false,
            };
            // A contact that cannot be pinged now (too many operations) is
            // kept: only a failed ping condemns it.
            if let Ok(child) = self.spawn(OpKind::PingAddress(ping), Parent::Op(id), None) {
                gc.in_flight.insert(child, (node_id, updated));
            }
        }
        if !gc.in_flight.is_empty() || !gc.to_ping.is_empty() {
            return Step::Continue(OpKind::Gc(gc));
        }
        let ops = self.gc_apply(&gc);
        gc.committing = true;
        // Nodes offered from now on wait for the next collection, not this one.
        self.running.release(Job::Gc(gc.bucket), id);
        self.store(ops, Some(id));
        Step::Continue(OpKind::Gc(gc))
    }

    /// Removes the dead, admits pending nodes newest first, drops the rest.
    fn gc_apply(&mut self, gc: &Gc) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for (node_id, updated) in &gc.dead {
            // A contact updated since the ping (it connected again) stays.
            let unchanged = self
                .graph
                .bucket(gc.bucket)
                .iter()
                .any(|e| e.node_id == *node_id && e.updated == *updated);
            if unchanged {
                ops.extend(self.graph.unset(node_id).ops);
                self.emit_event(NodeEvent::ContactRemoved { node_id: *node_id });
            }
        }
        let taken = self.graph.take_pending(gc.bucket);
        ops.extend(taken.ops);
        let mut admitted = false;
        if let Change::PendingTaken(pending) = taken.change {
            for node in pending.into_iter().rev() {
                match self.graph.set(node.node_id, node.address, node.data) {
                    Ok(update) => {
                        ops.extend(update.ops);
                        self.emit_event(NodeEvent::ContactSet {
                            node_id: node.node_id,
                            bucket: gc.bucket,
                        });
                        admitted = true;
                    }
                    Err(_) => break,
                }
            }
        }
        if admitted {
            ops.extend(self.push_refresh_back(gc.bucket));
        }
        ops
    }

    /// Spec: `NodeManager.pingNodeAddress`.
    ///
    /// Ends `true` if `node_id` answers at `address` (an existing connection
    /// counts): a direct connection whose peer proves the NodeId. Never signals.
    pub fn ping_node_address(
        &mut self,
        now: Now,
        node_id: NodeId,
        address: NodeAddress,
        connect_timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        if node_id == self.graph.own_node_id() {
            return Err(ApiError::OwnNodeId(node_id));
        }
        let ping = PingAddress {
            node_id,
            addresses: VecDeque::from([address]),
            attempt: None,
            timeout: connect_timeout.unwrap_or(self.config.connection_connect_timeout),
            fresh: false,
        };
        let op = self.spawn(OpKind::PingAddress(ping), Parent::Caller, None)?;
        self.run();
        Ok(op)
    }

    pub(super) fn step_wait(&mut self, mut op: Wait, input: Input) -> Step {
        match input {
            Input::Committed { result: Err(e) } => return Step::Done(Err(OpError::Store(e))),
            Input::Committed { result: Ok(()) } => op.batch = false,
            Input::Child { result: Err(e), .. } => return Step::Done(Err(e)),
            Input::Child { .. } => op.child = false,
            Input::Deadline => return Step::Done(Err(OpError::Timeout)),
            _ => {}
        }
        if op.batch || op.child {
            Step::Continue(OpKind::Wait(op))
        } else {
            Step::Done(Ok(OpValue::Unit))
        }
    }

    /// Dials every connected node again, so that each learns this node's
    /// renewed key (its certificate names the new NodeId).
    pub(super) fn announce_new_key(&mut self) {
        let mut peers: Vec<(NodeId, NodeAddress)> = self
            .connections()
            .into_iter()
            .map(|(_, peer, remote)| (peer, NodeAddress::from(remote)))
            .collect();
        peers.dedup_by_key(|(peer, _)| *peer);
        for (node_id, address) in peers {
            let ping = PingAddress {
                node_id,
                addresses: VecDeque::from([address]),
                attempt: None,
                timeout: self.config.connection_connect_timeout,
                fresh: true,
            };
            let _ = self.spawn(OpKind::PingAddress(ping), Parent::Internal, None);
        }
    }

    pub(super) fn step_ping_address(
        &mut self,
        id: OpId,
        mut op: PingAddress,
        input: Input,
    ) -> Step {
        match input {
            Input::Start | Input::ConnectFailed { .. } => {
                if matches!(input, Input::Start)
                    && !op.fresh
                    && self.conns.is_connected(&op.node_id)
                {
                    return Step::Done(Ok(OpValue::Reachable(true)));
                }
                match op.addresses.pop_front() {
                    Some(address) => {
                        op.attempt = Some(self.dial(
                            id,
                            op.node_id,
                            &address,
                            ContactMode::Direct,
                            op.timeout,
                        ));
                    }
                    None => return Step::Done(Ok(OpValue::Reachable(false))),
                }
            }
            Input::Connected { .. } => return Step::Done(Ok(OpValue::Reachable(true))),
            Input::Deadline => return Step::Done(Ok(OpValue::Reachable(false))),
            _ => {}
        }
        Step::Continue(OpKind::PingAddress(op))
    }

    /// Schedules (or moves) task `key` to run after `delay`, and returns the
    /// operations that persist it.
    pub(super) fn schedule_task(
        &mut self,
        key: TaskKey,
        delay: Duration,
        payload: TaskPayload,
    ) -> Vec<StoreOp> {
        let delay = delay.min(crate::config::Config::MAX_DELAY);
        self.timers.set(Timer::Task(key), self.now.mono + delay);
        let record = TaskRecord {
            due_unix_ms: self.now.unix_after(delay),
            payload,
        };
        self.tasks.insert(key, record.clone());
        vec![StoreOp::PutTask { key, record }]
    }

    /// Forgets task `key`; returns the operation that deletes it.
    pub(super) fn unschedule_task(&mut self, key: TaskKey) -> Vec<StoreOp> {
        self.timers.cancel(Timer::Task(key));
        match self.tasks.remove(key) {
            Some(_) => vec![StoreOp::DeleteTask(key)],
            None => Vec::new(),
        }
    }
}

fn new_gc(bucket: BucketIndex, connect_timeout: Duration) -> Gc {
    Gc {
        bucket,
        connect_timeout,
        to_ping: VecDeque::new(),
        in_flight: BTreeMap::new(),
        dead: Vec::new(),
        committing: false,
    }
}
