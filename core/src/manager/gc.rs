//! Garbage collection of a bucket (the spec's garbageCollectBucket): ping
//! its contacts, oldest first and a few at a time; remove those that do not
//! answer; fill the room with pending nodes, those of the bucket's least
//! crowded sub-ranges first, newest first among equals.
//!
//! [`GcRound`] is the round itself as a machine that knows nothing of the
//! manager: it is told the contacts to ping and each ping's outcome, and
//! says what to do next ([`GcNext`]). The manager's glue below turns a
//! `Ping` into a `ping_node_address` child and `Apply` into graph updates.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use super::running::Job;
use super::set_node::{PingAddress, Wait};
use super::{Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, Step, Timer};
use crate::graph::{Change, SetContactError};
use crate::id::{BucketIndex, NodeId};
use crate::manager::api::{ApiError, NodeEvent};
use crate::manager::observations::Observation;
use crate::store::{StoreOp, TaskKey, TaskPayload};
use crate::time::Now;

/// A contact as the round saw it: its NodeId and its update counter when
/// the round started (a contact updated since, it connected again, stays).
pub(crate) type Seen = (NodeId, u64);

/// What a collection does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum GcNext {
    /// Ping this contact (then report [`GcRound::pinging`]).
    Ping(Seen),
    /// Wait for pings in flight.
    Wait,
    /// Every ping is done: remove these (unless updated since), then commit.
    /// Given once.
    Apply(Vec<Seen>),
}

/// One garbage collection of one bucket.
#[derive(Debug)]
pub(crate) struct GcRound {
    bucket: BucketIndex,
    connect_timeout: Duration,
    phase: GcPhase,
}

#[derive(Debug)]
enum GcPhase {
    Pinging {
        /// Contacts still to ping, oldest first.
        to_ping: VecDeque<Seen>,
        in_flight: BTreeMap<OpId, Seen>,
        dead: Vec<Seen>,
    },
    /// The result is applied and being committed.
    Committing,
}

impl GcRound {
    pub(crate) fn new(bucket: BucketIndex, connect_timeout: Duration) -> Self {
        Self {
            bucket,
            connect_timeout,
            phase: GcPhase::Pinging {
                to_ping: VecDeque::new(),
                in_flight: BTreeMap::new(),
                dead: Vec::new(),
            },
        }
    }

    pub(crate) fn bucket(&self) -> BucketIndex {
        self.bucket
    }

    /// How long each ping may take to connect.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The contacts to ping, oldest first.
    pub(crate) fn begin(&mut self, contacts: impl IntoIterator<Item = Seen>) {
        if let GcPhase::Pinging { to_ping, .. } = &mut self.phase {
            *to_ping = contacts.into_iter().collect();
        }
    }

    /// The ping of `contact` runs as `ping`.
    pub(crate) fn pinging(&mut self, ping: OpId, contact: Seen) {
        if let GcPhase::Pinging { in_flight, .. } = &mut self.phase {
            in_flight.insert(ping, contact);
        }
    }

    /// The ping `ping` ended; `reachable` if the contact answered. Anything
    /// else (not one of this round's pings) is ignored.
    pub(crate) fn on_ping(&mut self, ping: OpId, reachable: bool) {
        if let GcPhase::Pinging {
            in_flight, dead, ..
        } = &mut self.phase
            && let Some(contact) = in_flight.remove(&ping)
            && !reachable
        {
            dead.push(contact);
        }
    }

    /// What to do next, with at most `concurrency` pings at a time. A
    /// `Ping` is taken off the list whether or not it starts: a contact that
    /// cannot be pinged now is kept, never condemned.
    pub(crate) fn next(&mut self, concurrency: usize) -> GcNext {
        let GcPhase::Pinging {
            to_ping,
            in_flight,
            dead,
        } = &mut self.phase
        else {
            return GcNext::Wait;
        };
        if in_flight.len() < concurrency
            && let Some(contact) = to_ping.pop_front()
        {
            return GcNext::Ping(contact);
        }
        if !in_flight.is_empty() || !to_ping.is_empty() {
            return GcNext::Wait;
        }
        let dead = std::mem::take(dead);
        self.phase = GcPhase::Committing;
        GcNext::Apply(dead)
    }
}

impl NodeManager {
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
    /// pending nodes, least crowded sub-range first and newest first among
    /// equals (`Config::bucket_diversity_bits`); drops the other pending nodes. Ends when
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
                    OpKind::Gc(Box::new(GcRound::new(bucket, timeout))),
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
                OpKind::Gc(Box::new(GcRound::new(bucket, timeout))),
                Parent::Internal,
                None,
            )
            .ok()?;
        self.running.start(Job::Gc(bucket), op);
        Some(op)
    }

    pub(super) fn step_gc(&mut self, id: OpId, mut gc: Box<GcRound>, input: Input) -> Step {
        match input {
            Input::Start => {
                // This collection is the one a scheduled task would have run.
                let ops = self.unschedule_task(TaskKey::GarbageCollect(gc.bucket()));
                self.store(ops, None);
                // Contacts connected within `gc_contact_fresh` are alive.
                let fresh = self.config.gc_contact_fresh.as_secs();
                let stale_before = self.now.unix_secs().saturating_sub(fresh);
                gc.begin(
                    self.graph
                        .bucket(gc.bucket())
                        .iter()
                        .filter(|e| fresh == 0 || e.contact.last_connected() < stale_before)
                        .map(|e| (e.node_id, e.updated)),
                );
            }
            Input::Child { child, result } => {
                gc.on_ping(child, matches!(result, Ok(OpValue::Reachable(true))));
            }
            Input::Committed { result } => {
                return Step::Done(result.map(|()| OpValue::Unit).map_err(OpError::Store));
            }
            _ => {}
        }
        loop {
            match gc.next(self.config.gc_concurrency) {
                GcNext::Ping(contact) => {
                    let node_id = contact.0;
                    let addresses = self
                        .graph
                        .get(&node_id)
                        .map(|c| {
                            let mut list: Vec<_> = c.iter().collect();
                            list.sort_by_key(|(_, d)| std::cmp::Reverse(d.connected_time));
                            list.into_iter().map(|(a, _)| a.clone()).collect()
                        })
                        .unwrap_or_default();
                    let ping = PingAddress::new(node_id, addresses, gc.connect_timeout());
                    // A contact that cannot be pinged now (too many
                    // operations) is kept: only a failed ping condemns it.
                    if let Ok(child) = self.spawn(OpKind::PingAddress(ping), Parent::Op(id), None) {
                        gc.pinging(child, contact);
                    }
                }
                GcNext::Wait => return Step::Continue(OpKind::Gc(gc)),
                GcNext::Apply(dead) => {
                    let ops = self.gc_apply(gc.bucket(), &dead);
                    // Nodes offered from now on wait for the next collection.
                    self.running.release(Job::Gc(gc.bucket()), id);
                    self.store(ops, Some(id));
                    return Step::Continue(OpKind::Gc(gc));
                }
            }
        }
    }

    /// Removes the dead, admits pending nodes newest first, drops the rest.
    fn gc_apply(&mut self, bucket: BucketIndex, dead: &[(NodeId, u64)]) -> Vec<StoreOp> {
        let mut ops = Vec::new();
        for (node_id, updated) in dead {
            // A contact updated since the ping (it connected again) stays.
            let unchanged = self
                .graph
                .bucket(bucket)
                .iter()
                .any(|e| e.node_id == *node_id && e.updated == *updated);
            if unchanged {
                ops.extend(self.graph.unset(node_id).ops);
                self.emit_event(NodeEvent::ContactRemoved { node_id: *node_id });
                self.observe(Observation::ContactEvicted { node_id: *node_id });
            }
        }
        let taken = self.graph.take_pending(bucket);
        ops.extend(taken.ops);
        let mut admitted = false;
        if let Change::PendingTaken(pending) = taken.change {
            // In the graph's admission order: sparse sub-ranges first.
            for node in pending {
                match self.graph.set(node.node_id, node.address, node.data) {
                    Ok(update) => {
                        ops.extend(update.ops);
                        self.emit_event(NodeEvent::ContactSet {
                            node_id: node.node_id,
                            bucket,
                        });
                        self.observe(Observation::ContactAdded {
                            node_id: node.node_id,
                            bucket,
                        });
                        admitted = true;
                    }
                    // Its network filled up meanwhile: the next may fit.
                    Err(SetContactError::IpGroupFull { .. }) => {}
                    Err(_) => break,
                }
            }
        }
        if admitted {
            ops.extend(self.push_refresh_back(bucket));
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(b: u8) -> Seen {
        (NodeId::from_bytes([b; 32]), u64::from(b))
    }

    fn round(contacts: &[u8]) -> GcRound {
        let mut gc = GcRound::new(BucketIndex::new(7), Duration::from_secs(1));
        gc.begin(contacts.iter().map(|b| seen(*b)));
        gc
    }

    #[test]
    fn pings_oldest_first_at_most_concurrency_at_a_time() {
        let mut gc = round(&[1, 2, 3]);
        assert_eq!(gc.next(2), GcNext::Ping(seen(1)));
        gc.pinging(OpId(10), seen(1));
        assert_eq!(gc.next(2), GcNext::Ping(seen(2)));
        gc.pinging(OpId(11), seen(2));
        assert_eq!(gc.next(2), GcNext::Wait);
        gc.on_ping(OpId(10), true);
        assert_eq!(gc.next(2), GcNext::Ping(seen(3)));
    }

    #[test]
    fn only_failed_pings_condemn_and_apply_comes_once() {
        let mut gc = round(&[1, 2, 3]);
        for (op, b) in [(10, 1), (11, 2), (12, 3)] {
            assert_eq!(gc.next(3), GcNext::Ping(seen(b)));
            gc.pinging(OpId(op), seen(b));
        }
        gc.on_ping(OpId(11), false);
        gc.on_ping(OpId(99), false); // not one of its pings
        gc.on_ping(OpId(10), true);
        assert_eq!(gc.next(3), GcNext::Wait);
        gc.on_ping(OpId(12), false);
        assert_eq!(gc.next(3), GcNext::Apply(vec![seen(2), seen(3)]));
        assert_eq!(gc.next(3), GcNext::Wait);
        gc.on_ping(OpId(12), false);
        assert_eq!(gc.next(3), GcNext::Wait);
    }

    #[test]
    fn a_ping_that_could_not_start_keeps_its_contact() {
        let mut gc = round(&[1, 2]);
        // Neither ping starts (the manager was at its operation limit).
        assert_eq!(gc.next(1), GcNext::Ping(seen(1)));
        assert_eq!(gc.next(1), GcNext::Ping(seen(2)));
        assert_eq!(gc.next(1), GcNext::Apply(vec![]));
    }

    #[test]
    fn an_empty_bucket_applies_at_once() {
        assert_eq!(round(&[]).next(3), GcNext::Apply(vec![]));
    }
}
