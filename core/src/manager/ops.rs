//! Operations: the table of those in flight, the inputs they are fed, and
//! how one ends (its children cancelled, its waits and jobs dropped, its
//! parent, watchers or caller told).
//!
//! Each spec method that takes time is an operation: an [`OpKind`] whose
//! variant holds its state, stepped by one input at a time
//! ([`NodeManager::run`]), ending in exactly one result.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use super::waits::Wait;
use super::{
    ApiError, AttemptId, ConnId, ConnectFailure, NodeManager, OpError, OpId, OpValue, Output,
    RequestId, RpcFailure, Timer, claims, find, gc, maintenance, set_node, sync,
};
use crate::config::Config;
use crate::manager::Command;
use crate::wire::{Request, Response};

/// Who hears about an operation's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Parent {
    /// The user: an [`Output::Done`].
    Caller,
    /// Another operation: an [`Input::Child`].
    Op(OpId),
    /// Nobody (background work).
    Internal,
}

/// An input to one operation.
#[derive(Clone, Debug)]
pub(super) enum Input {
    Start,
    Connected {
        attempt: AttemptId,
        conn: ConnId,
        remote: SocketAddr,
    },
    ConnectFailed {
        attempt: AttemptId,
        failure: ConnectFailure,
    },
    Response {
        request: RequestId,
        result: Result<Response, RpcFailure>,
    },
    Mdns {
        addresses: Vec<SocketAddr>,
    },
    Child {
        child: OpId,
        result: Result<OpValue, OpError>,
    },
    Committed {
        result: Result<(), crate::store::StoreErrorKind>,
    },
    Stream {
        message: crate::wire::ClaimMessage,
    },
    StreamClosed,
    /// The sigchain is free for this claim exchange.
    ChainFree,
    Deadline,
}

/// What an operation does after an input.
pub(super) enum Step {
    Continue(OpKind),
    Done(Result<OpValue, OpError>),
}

/// The state of one operation.
#[derive(Debug)]
pub(super) enum OpKind {
    Find(Box<find::FindNode>),
    QueryMdns(find::QueryMdns),
    PingAddress(set_node::PingAddress),
    /// A ping of an inbound peer at the address it connected from: its
    /// outbound connection, once up, makes the peer a contact.
    DialBack(set_node::PingAddress),
    SetNode(set_node::SetNodeOp),
    Gc(Box<gc::GcRound>),
    /// Waits for one store batch, then ends with the value.
    StoreWait(OpValue),
    Wait(set_node::Wait),
    Acquire(maintenance::Acquire),
    Refresh(maintenance::Refresh),
    CheckConnections(maintenance::CheckConnections),
    Sync(Box<sync::SyncOp>),
    ClaimNode(Box<claims::ClaimNodeOp>),
    HandleClaim(claims::HandleClaimOp),
    ChainData(claims::ChainDataOp),
    /// A caller's request on a connection; `None` once sent.
    UserRequest(Option<(ConnId, Request)>),
}

pub(super) struct OpEntry {
    /// `None` while the operation is being stepped: it is then out of the
    /// table for every purpose (see [`OpTable`]).
    kind: Option<OpKind>,
    parent: Parent,
    /// Operations told of this one's end, beside its parent (for example
    /// blocking `set_node`s waiting on one garbage collection).
    watchers: Vec<OpId>,
}

/// The operations in flight and their children. An operation being
/// stepped is out of the table until its step returns: its entry stays
/// where it is (no remove and insert per input, which moved whole entries
/// about a B-tree node), but with its state taken, and every query here
/// treats it as absent, as a removed entry would be.
#[derive(Default)]
pub(super) struct OpTable {
    entries: BTreeMap<OpId, OpEntry>,
    children: BTreeMap<OpId, BTreeSet<OpId>>,
    /// Entries whose state is taken (being stepped).
    stepping: usize,
}

impl OpTable {
    pub(super) fn len(&self) -> usize {
        self.entries.len() - self.stepping
    }

    pub(super) fn contains(&self, op: OpId) -> bool {
        self.entries.get(&op).is_some_and(|e| e.kind.is_some())
    }

    /// Takes the state of `op` out to step it.
    fn take_kind(&mut self, op: OpId) -> Option<OpKind> {
        let kind = self.entries.get_mut(&op)?.kind.take()?;
        self.stepping += 1;
        Some(kind)
    }

    /// Puts the state of a stepped `op` back.
    fn put_kind(&mut self, op: OpId, kind: OpKind) {
        if let Some(entry) = self.entries.get_mut(&op)
            && entry.kind.is_none()
        {
            entry.kind = Some(kind);
            self.stepping -= 1;
        }
    }

    /// Removes a stepped `op` (its step ended it).
    fn remove_stepped(&mut self, op: OpId) -> Option<OpEntry> {
        let entry = self.entries.remove(&op)?;
        if entry.kind.is_none() {
            self.stepping -= 1;
        }
        Some(entry)
    }

    /// Removes `op` unless it is being stepped.
    fn remove(&mut self, op: OpId) -> Option<OpEntry> {
        if !self.contains(op) {
            return None;
        }
        self.entries.remove(&op)
    }

    fn clear(&mut self) -> Vec<(OpId, Parent)> {
        let ended = self
            .entries
            .iter()
            .filter(|(_, e)| e.kind.is_some())
            .map(|(id, e)| (*id, e.parent))
            .collect();
        self.entries.clear();
        self.children.clear();
        self.stepping = 0;
        ended
    }
}

impl NodeManager {
    /// Creates an operation; it starts when the input queue reaches it.
    pub(super) fn spawn(
        &mut self,
        kind: OpKind,
        parent: Parent,
        deadline: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        if self.ops.len() >= self.config.max_operations {
            return Err(ApiError::TooManyOperations {
                limit: self.config.max_operations,
            });
        }
        let id = OpId(self.fresh_id());
        self.ops.entries.insert(
            id,
            OpEntry {
                kind: Some(kind),
                parent,
                watchers: Vec::new(),
            },
        );
        if let Parent::Op(p) = parent {
            self.ops.children.entry(p).or_default().insert(id);
        }
        if let Some(after) = deadline {
            self.timers.set(
                Timer::OpDeadline(id),
                self.now.mono + after.min(Config::MAX_DELAY),
            );
        }
        self.inputs.push_back((id, Input::Start));
        Ok(id)
    }

    pub(super) fn input(&mut self, op: OpId, input: Input) {
        self.inputs.push_back((op, input));
    }

    /// Feeds `input` to whoever waits for `wait`; an answer nobody waits
    /// for, or whose operation ended, is counted stale.
    pub(super) fn input_wait(&mut self, wait: Wait, input: Input) {
        match self.waits.take(wait) {
            Some(op) => self.input(op, input),
            None => self.stats.stale_events += 1,
        }
    }

    /// Processes queued inputs until none is left.
    pub(super) fn run(&mut self) {
        while let Some((id, input)) = self.inputs.pop_front() {
            let Some(kind) = self.ops.take_kind(id) else {
                self.stats.stale_events += 1;
                continue;
            };
            match self.step(id, kind, input) {
                Step::Continue(kind) => self.ops.put_kind(id, kind),
                Step::Done(result) => {
                    if let Some(entry) = self.ops.remove_stepped(id) {
                        self.finish(id, entry.parent, entry.watchers, result);
                    }
                }
            }
        }
    }

    fn step(&mut self, id: OpId, kind: OpKind, input: Input) -> Step {
        match kind {
            OpKind::Find(op) => self.step_find(id, op, input),
            OpKind::QueryMdns(op) => self.step_query_mdns(id, op, input),
            OpKind::PingAddress(op) => self.step_ping_address(id, op, input),
            OpKind::DialBack(op) => self.step_dial_back(id, op, input),
            OpKind::SetNode(op) => self.step_set_node(id, op, input),
            OpKind::Gc(op) => self.step_gc(id, op, input),
            OpKind::StoreWait(value) => match input {
                Input::Committed { result } => {
                    Step::Done(result.map(|()| value).map_err(OpError::Store))
                }
                Input::Deadline => Step::Done(Err(OpError::Timeout)),
                _ => Step::Continue(OpKind::StoreWait(value)),
            },
            OpKind::Wait(op) => self.step_wait(op, input),
            OpKind::Acquire(op) => self.step_acquire(id, op, input),
            OpKind::Refresh(op) => self.step_refresh(id, op, input),
            OpKind::CheckConnections(op) => self.step_check_connections(id, op, input),
            OpKind::Sync(op) => {
                let step = self.step_sync(id, op, input);
                if let Step::Done(result) = &step {
                    self.observe(match result {
                        Ok(_) => crate::manager::Observation::SyncFinished,
                        Err(error) => crate::manager::Observation::SyncFailed {
                            error: error.clone(),
                        },
                    });
                }
                step
            }
            OpKind::ClaimNode(op) => self.step_claim_node(id, op, input),
            OpKind::HandleClaim(op) => self.step_handle_claim(id, op, input),
            OpKind::ChainData(op) => self.step_chain_data(id, op, input),
            OpKind::UserRequest(op) => self.step_user_request(id, op, input),
        }
    }

    /// Cancels an operation of the caller's: it ends with `Cancelled`.
    pub fn cancel(&mut self, now: crate::time::Now, op: OpId) -> Result<(), ApiError> {
        self.advance_clock(now);
        let Some(entry) = self.ops.remove(op) else {
            return Err(ApiError::UnknownOperation(op));
        };
        self.finish(op, entry.parent, entry.watchers, Err(OpError::Cancelled));
        self.run();
        Ok(())
    }

    /// Ends every operation (the manager stops): the caller's with
    /// `Cancelled`, in id order; nothing else hears of them.
    pub(super) fn end_all_ops(&mut self) {
        for (id, parent) in self.ops.clear() {
            if parent == Parent::Caller {
                self.push_output(Output::Done {
                    op: id,
                    result: Err(OpError::Cancelled),
                });
            }
        }
        self.inputs.clear();
        for query in self.waits.clear() {
            self.commands.push_back(Command::MdnsQueryEnd { query });
        }
        self.running.clear();
    }

    /// Ends an operation (already out of the table): cancels its children,
    /// tells its watchers and its parent or caller.
    fn finish(
        &mut self,
        id: OpId,
        parent: Parent,
        watchers: Vec<OpId>,
        result: Result<OpValue, OpError>,
    ) {
        self.timers.cancel(Timer::OpDeadline(id));
        self.cancel_children(id);
        self.forget_op(id);
        for watcher in watchers {
            self.input(
                watcher,
                Input::Child {
                    child: id,
                    result: result.clone(),
                },
            );
        }
        match parent {
            Parent::Caller => self.push_output(Output::Done { op: id, result }),
            Parent::Op(parent) => {
                if let Some(set) = self.ops.children.get_mut(&parent) {
                    set.remove(&id);
                }
                self.input(parent, Input::Child { child: id, result });
            }
            Parent::Internal => {}
        }
    }

    fn cancel_children(&mut self, id: OpId) {
        let Some(children) = self.ops.children.remove(&id) else {
            return;
        };
        for child in children {
            if let Some(entry) = self.ops.remove(child) {
                self.timers.cancel(Timer::OpDeadline(child));
                self.forget_op(child);
                self.cancel_children(child);
                for watcher in entry.watchers {
                    self.input(
                        watcher,
                        Input::Child {
                            child,
                            result: Err(OpError::Cancelled),
                        },
                    );
                }
            }
        }
    }

    /// Releases what an ending operation held outside itself: the chain,
    /// its jobs, its open-ended waits (an mDNS query is ended, a claim
    /// stream forgotten; see `waits` for the others). Looked up by id,
    /// so it works whatever state the operation ended in.
    fn forget_op(&mut self, id: OpId) {
        self.release_chain(id);
        self.running.end_op(id);
        // In wait order: the queries come out by id.
        for wait in self.waits.end_op(id) {
            if let Wait::Query(query) = wait {
                self.commands.push_back(Command::MdnsQueryEnd { query });
            }
        }
    }

    /// `watcher` hears of `op`'s end; false if `op` is not in flight.
    pub(super) fn add_watcher(&mut self, op: OpId, watcher: OpId) -> bool {
        match self.ops.entries.get_mut(&op) {
            Some(entry) if entry.kind.is_some() => {
                entry.watchers.push(watcher);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(ops: &[u64]) -> OpTable {
        let mut table = OpTable::default();
        for op in ops {
            table.entries.insert(
                OpId(*op),
                OpEntry {
                    kind: Some(OpKind::StoreWait(OpValue::Unit)),
                    parent: Parent::Internal,
                    watchers: Vec::new(),
                },
            );
        }
        table
    }

    #[test]
    fn an_op_being_stepped_is_absent_until_put_back() {
        let mut table = table_with(&[1, 2]);
        let kind = table.take_kind(OpId(1)).expect("in the table");
        assert_eq!(table.len(), 1, "max_operations sees it gone");
        assert!(!table.contains(OpId(1)));
        assert!(table.take_kind(OpId(1)).is_none(), "not stepped twice");
        assert!(table.remove(OpId(1)).is_none(), "not cancelled mid-step");
        table.put_kind(OpId(1), kind);
        assert_eq!(table.len(), 2);
        assert!(table.contains(OpId(1)));
    }

    #[test]
    fn an_op_ended_by_its_step_leaves_the_count_right() {
        let mut table = table_with(&[1]);
        let _kind = table.take_kind(OpId(1)).expect("in the table");
        assert!(table.remove_stepped(OpId(1)).is_some());
        assert_eq!(table.len(), 0);
        assert_eq!(table.stepping, 0);
    }

    #[test]
    fn stop_lists_only_the_ops_in_the_table() {
        let mut table = table_with(&[1, 2]);
        let _kind = table.take_kind(OpId(1)).expect("in the table");
        assert_eq!(table.clear(), vec![(OpId(2), Parent::Internal)]);
        assert_eq!(table.len(), 0);
    }
}
