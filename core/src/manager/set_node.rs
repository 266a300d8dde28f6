//! `set_node` and the bucket upkeep around it: pending nodes, garbage
//! collection, and the pings it needs.

use std::collections::VecDeque;
use std::time::Duration;

use super::{AttemptId, Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, Step, Timer};
use crate::address::NodeAddress;
use crate::conn_error::ConnectionErrorCode;
use crate::contact::{ContactMode, NodeContactAddressData};
use crate::graph::{Change, SetContactError};
use crate::id::NodeId;
use crate::manager::api::{ApiError, Command, ConnId, NodeEvent};
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
    /// Dial even when a connection exists (to present a renewed key, or
    /// to check that an inbound peer listens where it connected from).
    fresh: bool,
}

impl PingAddress {
    /// A ping of `node_id` at `addresses`, in order, each dial bounded by
    /// `timeout`; an existing connection counts.
    pub(super) fn new(
        node_id: NodeId,
        addresses: VecDeque<NodeAddress>,
        timeout: Duration,
    ) -> Self {
        Self {
            node_id,
            addresses,
            attempt: None,
            timeout,
            fresh: false,
        }
    }
}

impl NodeManager {
    /// Spec: `NodeManager.setNode`.
    ///
    /// Adds or updates a node in the graph. The own NodeId is ignored. A known
    /// node is updated and becomes the newest of its bucket; a new one is
    /// added if its bucket has room. In a full bucket, `force` evicts the
    /// oldest contact without a ping; otherwise the node goes on the
    /// bucket's pending list and garbage collection is scheduled, or, with
    /// `block`, run now and waited for: a live contact only leaves after a
    /// failed ping. An address whose network (/24 or /48) already holds its
    /// share of the bucket or the table ends in [`OpError::IpGroupFull`]
    /// (`Config::ip_group_limits`; `force` skips it). Every add or update
    /// pushes the bucket's refresh back.
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
                            Err(SetContactError::IpGroupFull { group, .. }) => {
                                self.stats.ip_group_refused += 1;
                                return Step::Done(Err(OpError::IpGroupFull(group)));
                            }
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
                    Err(SetContactError::IpGroupFull { group, .. }) => {
                        self.stats.ip_group_refused += 1;
                        return Step::Done(Err(OpError::IpGroupFull(group)));
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

    /// Dials `peer` back at `address`, the address its inbound connection
    /// came from, unless that cannot make it a contact (its network is
    /// full) or too many dial-backs are in flight (`Config::max_dial_backs`
    /// in all, `IpGroupLimits::per_bucket` for one network). The outbound
    /// connection, once up, records the peer like any dialled node.
    pub(super) fn dial_back(&mut self, peer: NodeId, address: NodeAddress) {
        if self.dial_backs.contains_key(&peer) {
            return;
        }
        let data = NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: self.now.unix_secs(),
            scopes: crate::contact::NodeAddressScopes::GLOBAL,
        };
        if !self.graph.admits(&peer, &address, &data) {
            self.stats.ip_group_refused += 1;
            return;
        }
        let limits = &self.config.ip_group_limits;
        let group = limits.group_of(&address, Some(data.scopes));
        let same_group = group.map_or(0, |g| {
            self.dial_backs.values().filter(|x| **x == Some(g)).count()
        });
        if self.dial_backs.len() >= self.config.max_dial_backs
            || (group.is_some() && same_group >= limits.per_bucket)
        {
            self.stats.dial_backs_skipped += 1;
            return;
        }
        let ping = PingAddress {
            node_id: peer,
            addresses: VecDeque::from([address]),
            attempt: None,
            timeout: self.config.connection_connect_timeout,
            fresh: true,
        };
        if self
            .spawn(OpKind::DialBack(ping), Parent::Internal, None)
            .is_ok()
        {
            self.dial_backs.insert(peer, group);
        } else {
            self.stats.dial_backs_skipped += 1;
        }
    }

    /// A dial-back is a ping of the peer's address; once its connection is
    /// up (and the peer recorded, see `on_connection_up`) that connection
    /// is closed if the peer's own inbound one is still there and nothing
    /// uses the dial-back's: otherwise every inbound peer would cost two
    /// connections, and inbound peers could fill the outbound slots kept
    /// for this node's own dials (`NetConfig::reserved_outbound`).
    pub(super) fn step_dial_back(&mut self, id: OpId, op: PingAddress, input: Input) -> Step {
        let peer = op.node_id;
        let connected = match input {
            Input::Connected { conn, .. } => Some(conn),
            _ => None,
        };
        match self.step_ping_address(id, op, input) {
            Step::Continue(OpKind::PingAddress(op)) => Step::Continue(OpKind::DialBack(op)),
            other => {
                self.dial_backs.remove(&peer);
                if let Some(conn) = connected {
                    self.close_dial_back(conn);
                }
                other
            }
        }
    }

    fn close_dial_back(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(conn) else {
            return;
        };
        if c.leases > 0 || self.conns.count_to(&c.peer) < 2 {
            return;
        }
        self.conns.remove(conn);
        self.timers.cancel(Timer::ConnIdle(conn));
        self.commands.push_back(Command::CloseConnection {
            conn,
            code: ConnectionErrorCode::DialBackDone,
        });
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
