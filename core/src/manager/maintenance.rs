//! Keeping the graph healthy: bucket refresh, the connection check, key
//! renewal, scheduled tasks, and `acquire_connection`.

use std::time::Duration;

use rand::Rng;

use super::find::{FindOptions, Strategies};
use super::running::Job;
use super::set_node::Wait;
use super::{Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, Step, Timer};
use crate::id::{BucketIndex, NodeId};
use crate::manager::api::{ApiError, NodeEvent};
use crate::store::{StoreOp, TaskKey, TaskPayload};
use crate::time::Now;

/// `acquire_connection`: an existing connection, or a lookup first.
#[derive(Debug)]
pub(crate) struct Acquire {
    node_id: NodeId,
}

/// A refresh of one bucket: a lookup of a random NodeId in it.
#[derive(Debug)]
pub(crate) struct Refresh {
    pub(crate) bucket: BucketIndex,
    connect_timeout: Option<Duration>,
    committing: bool,
}

/// The periodic connection check: refresh the farthest bucket and look up
/// the own NodeId.
#[derive(Debug)]
pub(crate) struct CheckConnections {
    remaining: usize,
}

impl NodeManager {
    /// Spec: `NodeManager.acquireConnection`.
    ///
    /// A use of a connection to `node_id`: the node's primary connection if
    /// there is one, otherwise after `find_node` reaches it. Ends with
    /// `Connection { lease, conn, peer }`; the use lasts until
    /// [`super::Event::ConnectionReleased`] for that lease. While a connection
    /// has uses it does not idle out.
    pub fn acquire_connection(
        &mut self,
        now: Now,
        node_id: NodeId,
        timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        if node_id == self.graph.own_node_id() {
            return Err(ApiError::OwnNodeId(node_id));
        }
        let op = self.spawn(
            OpKind::Acquire(Acquire { node_id }),
            Parent::Caller,
            timeout,
        )?;
        self.run();
        Ok(op)
    }

    pub(super) fn step_acquire(&mut self, id: OpId, op: Acquire, input: Input) -> Step {
        match input {
            Input::Start => {
                if let Some(done) = self.lease_primary(&op.node_id) {
                    return done;
                }
                let options = FindOptions::default();
                if self
                    .spawn_find(op.node_id, options, Strategies::ALL, Parent::Op(id))
                    .is_err()
                {
                    return Step::Done(Err(OpError::NodeNotFound(op.node_id)));
                }
            }
            Input::Child { result, .. } => {
                return match result {
                    Ok(OpValue::Found(Some(_))) => self
                        .lease_primary(&op.node_id)
                        .unwrap_or(Step::Done(Err(OpError::NodeNotFound(op.node_id)))),
                    Ok(_) => Step::Done(Err(OpError::NodeNotFound(op.node_id))),
                    Err(e) => Step::Done(Err(e)),
                };
            }
            Input::Deadline => return Step::Done(Err(OpError::Timeout)),
            _ => {}
        }
        Step::Continue(OpKind::Acquire(op))
    }

    /// Sends `body` on connection `conn` (one the caller holds a lease on,
    /// from `acquire_connection`) and ends with the peer's response. What the
    /// drivers' `with_conn_f` / `with_conn_g` closures use to talk to the peer.
    pub fn request(
        &mut self,
        now: Now,
        conn: crate::manager::ConnId,
        body: crate::wire::Request,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let op = self.spawn(
            OpKind::UserRequest(Some((conn, body))),
            Parent::Caller,
            None,
        )?;
        self.run();
        Ok(op)
    }

    pub(super) fn step_user_request(
        &mut self,
        id: OpId,
        op: Option<(crate::manager::ConnId, crate::wire::Request)>,
        input: Input,
    ) -> Step {
        match (op, input) {
            (Some((conn, body)), Input::Start) => {
                if self.conns.get(conn).is_none() {
                    return Step::Done(Err(OpError::Refused(
                        crate::wire::RefusalReason::NotConnected,
                    )));
                }
                self.send_request(id, conn, body);
                Step::Continue(OpKind::UserRequest(None))
            }
            (_, Input::Response { result, .. }) => Step::Done(match result {
                Ok(response) => Ok(OpValue::Response(response)),
                Err(super::RpcFailure::Timeout) => Err(OpError::Timeout),
                Err(super::RpcFailure::InvalidResponse(error)) => {
                    Err(OpError::InvalidResponse(error))
                }
                Err(_) => Err(OpError::Refused(crate::wire::RefusalReason::NotConnected)),
            }),
            (_, Input::Deadline) => Step::Done(Err(OpError::Timeout)),
            (op, _) => Step::Continue(OpKind::UserRequest(op)),
        }
    }

    fn lease_primary(&mut self, node_id: &NodeId) -> Option<Step> {
        let (conn, _) = self.conns.primary(node_id)?;
        let (lease, peer) = self.lease(conn)?;
        Some(Step::Done(Ok(OpValue::Connection { lease, conn, peer })))
    }

    /// Spec: `NodeManager.refreshBucket`.
    ///
    /// Refreshes bucket `bucket`: looks up a random NodeId in its range, which
    /// fills the graph with nodes found on the way, then schedules the next
    /// refresh of the bucket. Unlike the original, the lookup turns to the
    /// emptiest part of the bucket's range once the bucket holds its share of
    /// the current target's part (`Config::bucket_diversity_bits`), so the
    /// contacts it brings spread over the range instead of clustering.
    pub fn refresh_bucket(
        &mut self,
        now: Now,
        bucket: BucketIndex,
        connect_timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let op = self.spawn_refresh(bucket, connect_timeout, Parent::Caller)?;
        self.run();
        Ok(op)
    }

    fn spawn_refresh(
        &mut self,
        bucket: BucketIndex,
        connect_timeout: Option<Duration>,
        parent: Parent,
    ) -> Result<OpId, ApiError> {
        let refresh = Refresh {
            bucket,
            connect_timeout,
            committing: false,
        };
        let op = self.spawn(OpKind::Refresh(refresh), parent, None)?;
        self.running.start(Job::Refresh(bucket), op);
        // Whoever waits for "the next refresh of this bucket" waits for this one.
        for waiter in self.running.take_refresh_waiters(bucket) {
            self.add_watcher(op, waiter);
        }
        Ok(op)
    }

    pub(super) fn step_refresh(&mut self, id: OpId, mut op: Refresh, input: Input) -> Step {
        match input {
            Input::Start => {
                self.timers
                    .cancel(Timer::Task(TaskKey::RefreshBucket(op.bucket)));
                let own = self.graph.own_node_id();
                let target = own.random_in_bucket(op.bucket, &mut self.rng);
                let options = FindOptions {
                    connection_connect_timeout: op.connect_timeout,
                    ..FindOptions::default()
                };
                let strategies = Strategies {
                    mdns: false,
                    ..Strategies::ALL
                };
                if self
                    .spawn_lookup(target, options, strategies, Parent::Op(id), Some(op.bucket))
                    .is_err()
                {
                    return Step::Done(Err(OpError::Cancelled));
                }
            }
            Input::Child { .. } if !op.committing => {
                // Found or not, the bucket was refreshed; schedule the next.
                self.running.release(Job::Refresh(op.bucket), id);
                let ops = if self.running.awaits_refresh(op.bucket) {
                    // Someone waits for a refresh that this one preempted
                    // (it was due while this ran): run it now.
                    let key = TaskKey::RefreshBucket(op.bucket);
                    self.schedule_task(key, Duration::ZERO, TaskPayload::None)
                } else {
                    self.reschedule_refresh(op.bucket)
                };
                op.committing = true;
                self.store(ops, Some(id));
            }
            Input::Committed { result } => {
                return Step::Done(result.map(|()| OpValue::Unit).map_err(OpError::Store));
            }
            _ => {}
        }
        Step::Continue(OpKind::Refresh(op))
    }

    /// The next refresh of `bucket`, a jittered `refresh_bucket_delay` from now.
    fn reschedule_refresh(&mut self, bucket: BucketIndex) -> Vec<StoreOp> {
        let key = TaskKey::RefreshBucket(bucket);
        if self.config.refresh_bucket_delay.is_zero() {
            return self.unschedule_task(key);
        }
        let delay = self.jittered(self.config.refresh_bucket_delay);
        self.schedule_task(key, delay, TaskPayload::None)
    }

    /// Pushes the refresh of `bucket` back by a full delay: the bucket was
    /// just touched. Nothing while its refresh runs (it reschedules itself),
    /// nor when someone waits for it (an eager update, a blocking sync): it
    /// stays when it was due, or a bucket touched more often than the delay
    /// would keep its waiter forever (the simulator found a join that never
    /// ended).
    pub(super) fn push_refresh_back(&mut self, bucket: BucketIndex) -> Vec<StoreOp> {
        if self.running.is_running(Job::Refresh(bucket)) || self.running.awaits_refresh(bucket) {
            return Vec::new();
        }
        self.reschedule_refresh(bucket)
    }

    /// `delay ± delay × jitter / 2`, drawn from the node's generator.
    pub(crate) fn jittered(&mut self, delay: Duration) -> Duration {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let spread = (ms as f64 * self.config.refresh_bucket_delay_jitter / 2.0) as u64;
        let low = ms.saturating_sub(spread);
        let high = ms.saturating_add(spread);
        Duration::from_millis(self.rng.random_range(low..=high))
    }

    /// Spec: `NodeManager.setupRefreshBucketTasks`.
    ///
    /// Makes sure every bucket has exactly one refresh task, keeping the due
    /// times of tasks that already exist (persisted ones resume), and removes
    /// them all when refreshing is disabled.
    pub(super) fn setup_refresh_bucket_tasks(&mut self) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for bucket in BucketIndex::all() {
            let key = TaskKey::RefreshBucket(bucket);
            if self.config.refresh_bucket_delay.is_zero() {
                ops.extend(self.unschedule_task(key));
            } else if !self.tasks.contains_key(key) {
                ops.extend(self.reschedule_refresh(bucket));
            }
        }
        ops
    }

    /// Spec: `NodeManager.updateRefreshBucketDelay`.
    ///
    /// Moves the refresh of `bucket` to `delay` from now (jittered; the
    /// configured delay if `None`). There is one refresh task per bucket, so
    /// this moves it rather than adding one. With `lazy` the operation ends
    /// once the new time is committed; otherwise it ends when that refresh has run.
    pub fn update_refresh_bucket_delay(
        &mut self,
        now: Now,
        bucket: BucketIndex,
        delay: Option<Duration>,
        lazy: bool,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let op = self.update_refresh_inner(bucket, delay, lazy, Parent::Caller)?;
        self.run();
        Ok(op)
    }

    pub(super) fn update_refresh_inner(
        &mut self,
        bucket: BucketIndex,
        delay: Option<Duration>,
        lazy: bool,
        parent: Parent,
    ) -> Result<OpId, ApiError> {
        let delay = match delay {
            Some(d) => self.jittered(d),
            None => self.jittered(self.config.refresh_bucket_delay),
        };
        let wait = Wait {
            batch: true,
            child: !lazy,
        };
        let op = self.spawn(OpKind::Wait(wait), parent, None)?;
        let ops = self.schedule_task(TaskKey::RefreshBucket(bucket), delay, TaskPayload::None);
        if !lazy {
            self.running.await_refresh(bucket, op);
        }
        self.store(ops, Some(op));
        Ok(op)
    }

    /// Schedules the connection check `retry_connections_delay` from now;
    /// `again` moves an existing one, otherwise an existing one is kept.
    pub(super) fn schedule_check_connections(&mut self, again: bool) -> Vec<StoreOp> {
        let key = TaskKey::CheckConnections;
        if self.config.retry_connections_delay.is_zero() {
            return self.unschedule_task(key);
        }
        if !again && self.tasks.contains_key(key) {
            return Vec::new();
        }
        self.schedule_task(key, self.config.retry_connections_delay, TaskPayload::None)
    }

    pub(super) fn step_check_connections(
        &mut self,
        id: OpId,
        mut op: CheckConnections,
        input: Input,
    ) -> Step {
        match input {
            Input::Start => {
                let own = self.graph.own_node_id();
                let far = own.random_in_bucket(BucketIndex::FARTHEST, &mut self.rng);
                let strategies = Strategies {
                    mdns: false,
                    ..Strategies::ALL
                };
                for target in [far, own] {
                    if self
                        .spawn_find(target, FindOptions::default(), strategies, Parent::Op(id))
                        .is_ok()
                    {
                        op.remaining += 1;
                    }
                }
            }
            Input::Child { .. } => op.remaining = op.remaining.saturating_sub(1),
            _ => {}
        }
        if op.remaining == 0 {
            Step::Done(Ok(OpValue::Unit))
        } else {
            Step::Continue(OpKind::CheckConnections(op))
        }
    }

    /// Runs a due task.
    pub(super) fn run_task(&mut self, key: TaskKey) {
        match key {
            TaskKey::RefreshBucket(bucket) => {
                // A refresh already running reschedules itself when it ends.
                if !self.running.is_running(Job::Refresh(bucket)) {
                    let _op = self.spawn_refresh(bucket, None, Parent::Internal);
                }
            }
            TaskKey::GarbageCollect(bucket) => {
                let ops = self.unschedule_task(key);
                self.store(ops, None);
                let timeout = self.config.connection_connect_timeout;
                let _op = self.gc_for(bucket, timeout);
            }
            TaskKey::CheckConnections => {
                let ops = self.schedule_check_connections(true);
                self.store(ops, None);
                if !self.running.is_running(Job::CheckConnections)
                    && let Ok(op) = self.spawn(
                        OpKind::CheckConnections(CheckConnections { remaining: 0 }),
                        Parent::Internal,
                        None,
                    )
                {
                    self.running.start(Job::CheckConnections, op);
                }
            }
            TaskKey::SyncNodeGraph => {
                let record = self.tasks.get(key);
                let ops = self.unschedule_task(key);
                self.store(ops, None);
                if let Some(TaskPayload::Sync {
                    seeds,
                    connect_timeout_ms,
                }) = record.map(|r| r.payload)
                {
                    let timeout = Duration::from_millis(connect_timeout_ms);
                    if let Ok(op) = self.spawn_sync(seeds.clone(), timeout, false, Parent::Internal)
                    {
                        self.sync_started_in_background(op, seeds, connect_timeout_ms);
                    }
                }
            }
        }
    }

    /// Spec: `NodeManager.resetBuckets`.
    ///
    /// Rebuilds the graph for a new NodeId after key renewal: every contact
    /// moves to its bucket under the new id; where a bucket overflows, the
    /// most recently connected contacts stay.
    pub fn reset_buckets(&mut self, now: Now, new_node_id: NodeId) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let update = self.graph.reset(new_node_id);
        self.emit_event(NodeEvent::BucketsReset {
            node_id: new_node_id,
        });
        let op = self.spawn(OpKind::StoreWait(OpValue::Unit), Parent::Caller, None)?;
        self.store(update.ops, Some(op));
        self.run();
        Ok(op)
    }
}
