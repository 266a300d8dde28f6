//! The node manager: the spec's NodeManager as a sans-IO state machine.
//!
//! # Driving it
//!
//! ```text
//! let mut node = NodeManager::new(config, own_node_id, now, seed)?;
//! node.handle(now, Event::SnapshotLoaded(store.load()?));
//! let start = node.start(now)?;
//! loop {
//!     while let Some(cmd) = node.poll() { /* Connect, SendRequest, Store, Output, ... */ }
//!     wait for: a socket/store/user event  -> node.handle(now, event) or a method call
//!           or: node.poll_timeout()        -> node.handle_timeout(now)
//! }
//! ```
//!
//! After every input (an event, a timeout, or a method call) drain `poll()`
//! until it returns `None` before waiting again. Time must not go backwards;
//! an early or repeated `handle_timeout` does nothing.
//!
//! Every spec method that takes time returns an [`OpId`] at once and ends in
//! exactly one [`Output::Done`] with that id: success, failure, `Timeout` or
//! `Cancelled`. An operation that changes persisted state is done only after
//! its [`StoreBatch`] is committed ([`Event::StoreCommitted`]).
//!
//! # Determinism
//!
//! The manager reads no clock and draws randomness only from the generator
//! seeded in [`NodeManager::new`]; all its tables are ordered maps. The same
//! seed and the same inputs give the same commands.

mod api;
mod call;
mod claims;
mod conns;
mod find;
mod maintenance;
mod serve;
mod set_node;
mod sync;
mod tasks;
mod timers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use api::{
    ApiError, AttemptId, BatchId, Command, ConnId, ConnectFailure, Event, LeaseId, NodeEvent,
    OpError, OpId, OpValue, Output, PeerRequestId, QueryId, RequestId, ResolveId, RpcFailure,
    SeedFailure, StoreBatch, StreamId,
};
pub use call::UserCall;
pub use find::{FindOptions, Strategies};
pub use timers::Timer;

use crate::address::{Host, NodeAddress};
use crate::claims::{ClaimId, GestaltGraph, Identity, KeyPair, Sigchain};
use crate::config::{Config, ConfigError};
use crate::conn_error::ConnectionErrorCode;
use crate::contact::{ContactMode, NodeAddressScopes, NodeContactAddressData};
use crate::graph::{NodeBucket, NodeGraph};
use crate::id::{BucketIndex, NodeId};
use crate::store::{StoreOp, TaskKey, TaskRecord};
use crate::time::Now;
use crate::wire::{Request, Response};
use conns::{Conn, ConnTable};
use serve::SignalLimiter;
use timers::Timers;

/// Counters of what the manager dropped or refused, for monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events about an attempt, request, query or batch no operation waits for.
    pub stale_events: u64,
    /// Inbound connections closed because `max_connections` was reached.
    pub connections_refused: u64,
    /// Signal requests refused by the rate limit.
    pub signals_rate_limited: u64,
    /// Node events dropped because `max_queued_events` was reached.
    pub events_dropped: u64,
    /// Store batches that failed.
    pub store_failures: u64,
    /// Requests answered.
    pub requests_served: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Connection attempts made.
    pub connects: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Created,
    Running,
    Stopped,
}

/// Who hears about an operation's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parent {
    /// The user: an [`Output::Done`].
    Caller,
    /// Another operation: an [`Input::Child`].
    Op(OpId),
    /// Nobody (background work).
    Internal,
}

/// An input to one operation.
#[derive(Clone, Debug)]
enum Input {
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
        result: Result<(), String>,
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
enum Step {
    Continue(OpKind),
    Done(Result<OpValue, OpError>),
}

/// The state of one operation.
#[derive(Debug)]
enum OpKind {
    Find(Box<find::FindNode>),
    QueryMdns(find::QueryMdns),
    PingAddress(set_node::PingAddress),
    SetNode(set_node::SetNodeOp),
    Gc(Box<set_node::Gc>),
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

struct OpEntry {
    kind: OpKind,
    parent: Parent,
    /// Operations told of this one's end, beside its parent (for example
    /// blocking `set_node`s waiting on one garbage collection).
    watchers: Vec<OpId>,
}

/// A connection attempt in flight.
#[derive(Clone, Debug)]
struct Attempt {
    op: OpId,
    node_id: NodeId,
    mode: ContactMode,
    timeout: Duration,
}

/// The spec's NodeManager: routing table upkeep, lookups, connections and
/// background tasks, as a deterministic state machine.
///
/// Spec: `NodeManager`.
pub struct NodeManager {
    config: Config,
    graph: NodeGraph,
    rng: ChaCha8Rng,
    state: RunState,
    now: Now,
    next_id: u64,
    commands: VecDeque<Command>,
    inputs: VecDeque<(OpId, Input)>,
    timers: Timers,
    ops: BTreeMap<OpId, OpEntry>,
    children: BTreeMap<OpId, BTreeSet<OpId>>,
    conns: ConnTable,
    attempts: BTreeMap<AttemptId, Attempt>,
    resolves: BTreeMap<ResolveId, (AttemptId, u16)>,
    requests: BTreeMap<RequestId, OpId>,
    /// Signals relayed to their targets (fire and forget), whose answers
    /// are expected and dropped; at most `max_operations`, the oldest
    /// forgotten first.
    relayed_signals: BTreeSet<RequestId>,
    queries: BTreeMap<QueryId, OpId>,
    batches: BTreeMap<BatchId, OpId>,
    tasks: tasks::TaskTable,
    gc_running: BTreeMap<BucketIndex, OpId>,
    refresh_running: BTreeMap<BucketIndex, OpId>,
    refresh_waiters: BTreeMap<BucketIndex, Vec<OpId>>,
    check_running: Option<OpId>,
    signal_limiter: SignalLimiter,
    stats: Stats,
    key: Option<KeyPair>,
    sigchain: Sigchain,
    gestalt: GestaltGraph,
    claim_permissions: BTreeSet<NodeId>,
    /// Ids of claims signed recently, to refuse replays (bounded; oldest out).
    recent_claims: BTreeSet<ClaimId>,
    streams: BTreeMap<StreamId, OpId>,
    /// The claim exchange building on the chain's head, and those waiting.
    chain_owner: Option<OpId>,
    chain_queue: VecDeque<claims::ChainWaiter>,
    /// Whether the store holds this graph's space (owner and active space);
    /// a new store gets them written at start.
    graph_persisted: bool,
}

impl NodeManager {
    /// Spec: `NodeManager.constructor`.
    ///
    /// A stopped manager for `own` (its NodeId), with an empty graph; feed it
    /// [`Event::SnapshotLoaded`] and then call [`NodeManager::start`].
    /// `seed` seeds every random choice (refresh targets, jitter).
    pub fn new(
        config: Config,
        identity: impl Into<Identity>,
        now: Now,
        seed: [u8; 32],
    ) -> Result<Self, ConfigError> {
        let identity = identity.into();
        let own = identity.node_id();
        let graph = NodeGraph::new(own, &config)?;
        let signal_limiter = SignalLimiter::new(&config);
        Ok(Self {
            config,
            graph,
            rng: ChaCha8Rng::from_seed(seed),
            state: RunState::Created,
            now,
            next_id: 1,
            commands: VecDeque::new(),
            inputs: VecDeque::new(),
            timers: Timers::default(),
            ops: BTreeMap::new(),
            children: BTreeMap::new(),
            conns: ConnTable::default(),
            attempts: BTreeMap::new(),
            resolves: BTreeMap::new(),
            requests: BTreeMap::new(),
            relayed_signals: BTreeSet::new(),
            queries: BTreeMap::new(),
            batches: BTreeMap::new(),
            tasks: tasks::TaskTable::default(),
            gc_running: BTreeMap::new(),
            refresh_running: BTreeMap::new(),
            refresh_waiters: BTreeMap::new(),
            check_running: None,
            signal_limiter,
            stats: Stats::default(),
            key: identity.key().cloned(),
            sigchain: Sigchain::new(own),
            gestalt: GestaltGraph::default(),
            claim_permissions: BTreeSet::new(),
            recent_claims: BTreeSet::new(),
            streams: BTreeMap::new(),
            chain_owner: None,
            chain_queue: VecDeque::new(),
            graph_persisted: false,
        })
    }

    // ----- getters -----

    /// This node's NodeId.
    pub fn node_id(&self) -> NodeId {
        self.graph.own_node_id()
    }

    /// The routing table.
    pub fn graph(&self) -> &NodeGraph {
        &self.graph
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters of dropped and refused things.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether `start` ran and `stop` did not.
    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// Operations in flight, user and internal.
    pub fn operations_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Connections up, with their peers, by id.
    pub fn connections(&self) -> Vec<(ConnId, NodeId, SocketAddr)> {
        self.conns
            .ids()
            .filter_map(|id| self.conns.get(id).map(|c| (id, c.peer, c.remote)))
            .collect()
    }

    /// The uses of a connection handed out and not released.
    pub fn connection_leases(&self, conn: ConnId) -> Option<u32> {
        self.conns.get(conn).map(|c| c.leases)
    }

    /// The scheduled tasks and when they are due (wall-clock ms).
    pub fn tasks(&self) -> impl Iterator<Item = (TaskKey, TaskRecord)> + '_ {
        self.tasks.iter()
    }

    /// When a timer is due, if it is set.
    pub fn timer(&self, timer: Timer) -> Option<std::time::Instant> {
        self.timers.get(timer)
    }

    /// Spec: `NodeManager.getBucket`.
    ///
    /// Bucket `index` of the graph.
    pub fn get_bucket(&self, index: BucketIndex) -> NodeBucket {
        self.graph.get_bucket(index)
    }

    // ----- the sans-IO surface -----

    /// The next command for the driver or output for the caller.
    #[must_use]
    pub fn poll(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When to call [`NodeManager::handle_timeout`] next, and why.
    pub fn poll_timeout(&self) -> Option<(std::time::Instant, Timer)> {
        if self.state != RunState::Running {
            return None;
        }
        self.timers.next()
    }

    /// Feeds one event.
    pub fn handle(&mut self, now: Now, event: Event) {
        self.advance_clock(now);
        if self.state == RunState::Stopped {
            return;
        }
        match event {
            Event::SnapshotLoaded(snapshot) => {
                // Refused after start: the graph in memory is the truth then.
                let _ignored = self.load_snapshot(snapshot);
            }
            Event::ConnectionUp {
                conn,
                peer,
                remote,
                attempt,
            } => self.on_connection_up(conn, peer, remote, attempt),
            Event::ConnectFailed { attempt, failure } => {
                self.on_connect_failed(attempt, failure);
            }
            Event::ConnectionClosed { conn } => self.on_connection_closed(conn),
            Event::ConnectionReleased { lease } => self.on_released(lease),
            Event::RequestReceived {
                conn,
                request,
                body,
            } => self.serve(conn, request, body),
            Event::ResponseReceived { request, result } => match self.requests.remove(&request) {
                Some(op) => self.input(op, Input::Response { request, result }),
                None if self.relayed_signals.remove(&request) => {}
                None => self.stats.stale_events += 1,
            },
            Event::StreamOpened {
                conn,
                stream,
                message,
            } => {
                if self.state == RunState::Running {
                    self.handle_claim_node(conn, stream, message);
                }
            }
            Event::StreamReceived { stream, message } => match self.streams.get(&stream) {
                Some(op) => self.input(*op, Input::Stream { message }),
                None => self.stats.stale_events += 1,
            },
            Event::StreamClosed { stream } => match self.streams.remove(&stream) {
                Some(op) => self.input(op, Input::StreamClosed),
                None => self.stats.stale_events += 1,
            },
            Event::MdnsAnswer { query, addresses } => match self.queries.get(&query) {
                Some(op) => self.input(*op, Input::Mdns { addresses }),
                None => self.stats.stale_events += 1,
            },
            Event::Resolved { resolve, result } => self.on_resolved(resolve, result),
            Event::StoreCommitted(batch) => self.on_batch(batch, Ok(())),
            Event::StoreFailed { batch, error } => {
                self.stats.store_failures += 1;
                self.emit_event(NodeEvent::StoreFailed {
                    batch,
                    error: error.clone(),
                });
                self.on_batch(batch, Err(error));
            }
            Event::KeyRenewed { node_id } => self.on_new_node_id(node_id),
        }
        self.run();
    }

    /// Runs what is due at `now`. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Now) {
        self.advance_clock(now);
        if self.state != RunState::Running {
            return;
        }
        while let Some(timer) = self.timers.pop_due(now.mono) {
            match timer {
                Timer::Task(key) => self.run_task(key),
                Timer::OpDeadline(op) => self.input(op, Input::Deadline),
                Timer::ConnIdle(conn) => self.on_idle(conn),
            }
            self.run();
        }
    }

    fn advance_clock(&mut self, now: Now) {
        debug_assert!(now.mono >= self.now.mono, "time went backwards");
        if now.mono >= self.now.mono {
            self.now = now;
        }
    }

    /// Takes a renewed key: the NodeId changes, the graph is rebuilt for it
    /// (`reset_buckets`), and new claims are signed with the new key.
    /// Connections made with the old key keep working until they close.
    ///
    /// The sigchain keeps its claims; those issued under the old NodeId no
    /// longer verify as this node's (chains do not yet record key renewals).
    pub fn renew_identity(&mut self, now: Now, identity: impl Into<Identity>) {
        self.advance_clock(now);
        let identity = identity.into();
        self.key = identity.key().cloned();
        self.on_new_node_id(identity.node_id());
        if self.state == RunState::Running {
            self.announce_new_key();
        }
        self.run();
    }

    fn on_new_node_id(&mut self, node_id: NodeId) {
        if node_id == self.graph.own_node_id() {
            return;
        }
        if self.key.as_ref().is_some_and(|k| k.node_id() != node_id) {
            // The key no longer matches the NodeId: it cannot sign for it.
            self.key = None;
        }
        let update = self.graph.reset(node_id);
        self.sigchain.set_owner(node_id);
        self.emit_event(NodeEvent::BucketsReset { node_id });
        self.store(update.ops, None);
    }

    // ----- start and stop -----

    fn load_snapshot(&mut self, snapshot: crate::store::Snapshot) -> Result<(), ApiError> {
        if self.state != RunState::Created {
            return Err(ApiError::SnapshotAfterStart);
        }
        if let Some(graph) = snapshot.graph {
            self.graph_persisted = true;
            let own = self.graph.own_node_id();
            let (restored, trim) = NodeGraph::restore(graph, &self.config)
                .map_err(|e| ApiError::BadSnapshot(e.to_string()))?;
            self.graph = restored;
            if !trim.is_empty() {
                let _batch = self.store(trim, None);
            }
            // The key changed while the node was down: rebuild for the new one.
            if self.graph.own_node_id() != own {
                let update = self.graph.reset(own);
                let _batch = self.store(update.ops, None);
            }
        }
        self.tasks = snapshot.tasks.into_iter().collect();
        // Claims that no longer verify are left out of the chain in memory.
        let (chain, _rejected) = Sigchain::restore(self.graph.own_node_id(), snapshot.claims);
        self.sigchain = chain;
        for (a, b) in snapshot.gestalt_links {
            let _new = self.gestalt.link(a, b);
        }
        self.claim_permissions = snapshot.claim_permissions.into_iter().collect();
        Ok(())
    }

    /// Spec: `NodeManager.start`.
    ///
    /// Starts the manager: resumes persisted tasks, creates the missing
    /// refresh tasks, schedules the connection check, starts announcing on
    /// mDNS. From now on every new connection, inbound included, is recorded
    /// with `set_node(peer, address, { direct, now, [global] }, block = true)`.
    /// Ends when the tasks it wrote are committed.
    pub fn start(&mut self, now: Now) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        match self.state {
            RunState::Running => return Err(ApiError::AlreadyRunning),
            RunState::Stopped => return Err(ApiError::NotRunning),
            RunState::Created => {}
        }
        self.state = RunState::Running;
        // Persisted tasks resume at their due time (now if it passed).
        let resumed: Vec<(TaskKey, u64)> =
            self.tasks.iter().map(|(k, r)| (k, r.due_unix_ms)).collect();
        for (key, due) in resumed {
            let at = self.now.mono_of_unix(due);
            self.timers.set(Timer::Task(key), at);
        }
        let mut ops = Vec::new();
        if !self.graph_persisted {
            // A new store: write the graph's space so that it loads next time.
            ops.extend(self.graph.persist_all());
            self.graph_persisted = true;
        }
        ops.extend(self.setup_refresh_bucket_tasks());
        ops.extend(self.schedule_check_connections(false));
        if let Some(mdns) = &self.config.mdns {
            self.commands.push_back(Command::MdnsAnnounce {
                node_id: self.graph.own_node_id(),
                groups: mdns.groups.clone(),
                port: mdns.port,
            });
        }
        let op = self.spawn(OpKind::StoreWait(OpValue::Unit), Parent::Caller, None)?;
        self.store(ops, Some(op));
        self.run();
        Ok(op)
    }

    /// Spec: `NodeManager.stop`.
    ///
    /// Stops the manager: ends every operation with `Cancelled`, stops mDNS,
    /// closes connections. Scheduled tasks stay in the store and resume at
    /// the next start (of a new manager on the same store). Nothing is
    /// emitted after the `Stopped` event.
    pub fn stop(&mut self, now: Now) -> Result<(), ApiError> {
        self.advance_clock(now);
        if self.state != RunState::Running {
            return Err(ApiError::NotRunning);
        }
        let ops: Vec<(OpId, Parent)> = self.ops.iter().map(|(id, e)| (*id, e.parent)).collect();
        for (id, parent) in ops {
            self.ops.remove(&id);
            if parent == Parent::Caller {
                self.push_output(Output::Done {
                    op: id,
                    result: Err(OpError::Cancelled),
                });
            }
        }
        for query in std::mem::take(&mut self.queries).into_keys() {
            self.commands.push_back(Command::MdnsQueryEnd { query });
        }
        if self.config.mdns.is_some() {
            self.commands.push_back(Command::MdnsStop);
        }
        let conns: Vec<ConnId> = self.conns.ids().collect();
        for conn in conns {
            self.commands.push_back(Command::CloseConnection {
                conn,
                code: ConnectionErrorCode::NodeStopping,
            });
        }
        self.conns.clear();
        self.inputs.clear();
        self.children.clear();
        self.attempts.clear();
        self.resolves.clear();
        self.requests.clear();
        self.relayed_signals.clear();
        self.batches.clear();
        self.streams.clear();
        self.chain_owner = None;
        self.chain_queue.clear();
        self.timers.clear();
        self.gc_running.clear();
        self.refresh_running.clear();
        self.refresh_waiters.clear();
        self.check_running = None;
        self.state = RunState::Stopped;
        self.push_output(Output::Event(NodeEvent::Stopped));
        Ok(())
    }

    /// Cancels an operation of the caller's: it ends with `Cancelled`.
    pub fn cancel(&mut self, now: Now, op: OpId) -> Result<(), ApiError> {
        self.advance_clock(now);
        let Some(entry) = self.ops.remove(&op) else {
            return Err(ApiError::UnknownOperation(op));
        };
        self.finish(op, entry.parent, entry.watchers, Err(OpError::Cancelled));
        self.run();
        Ok(())
    }

    // ----- the operation machinery -----

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn check_running(&self) -> Result<(), ApiError> {
        if self.state == RunState::Running {
            Ok(())
        } else {
            Err(ApiError::NotRunning)
        }
    }

    /// Creates an operation; it starts when the input queue reaches it.
    fn spawn(
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
        self.ops.insert(
            id,
            OpEntry {
                kind,
                parent,
                watchers: Vec::new(),
            },
        );
        if let Parent::Op(p) = parent {
            self.children.entry(p).or_default().insert(id);
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

    fn input(&mut self, op: OpId, input: Input) {
        self.inputs.push_back((op, input));
    }

    /// Processes queued inputs until none is left.
    fn run(&mut self) {
        while let Some((id, input)) = self.inputs.pop_front() {
            let Some(entry) = self.ops.remove(&id) else {
                self.stats.stale_events += 1;
                continue;
            };
            let OpEntry {
                kind,
                parent,
                watchers,
            } = entry;
            let step = self.step(id, kind, input);
            match step {
                Step::Continue(kind) => {
                    self.ops.insert(
                        id,
                        OpEntry {
                            kind,
                            parent,
                            watchers,
                        },
                    );
                }
                Step::Done(result) => self.finish(id, parent, watchers, result),
            }
        }
    }

    fn step(&mut self, id: OpId, kind: OpKind, input: Input) -> Step {
        match kind {
            OpKind::Find(op) => self.step_find(id, op, input),
            OpKind::QueryMdns(op) => self.step_query_mdns(id, op, input),
            OpKind::PingAddress(op) => self.step_ping_address(id, op, input),
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
            OpKind::Sync(op) => self.step_sync(id, op, input),
            OpKind::ClaimNode(op) => self.step_claim_node(id, op, input),
            OpKind::HandleClaim(op) => self.step_handle_claim(id, op, input),
            OpKind::ChainData(op) => self.step_chain_data(id, op, input),
            OpKind::UserRequest(op) => self.step_user_request(id, op, input),
        }
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
                if let Some(set) = self.children.get_mut(&parent) {
                    set.remove(&id);
                }
                self.input(parent, Input::Child { child: id, result });
            }
            Parent::Internal => {}
        }
    }

    fn cancel_children(&mut self, id: OpId) {
        let Some(children) = self.children.remove(&id) else {
            return;
        };
        for child in children {
            if let Some(entry) = self.ops.remove(&child) {
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

    /// Releases what an ending operation held outside itself. Looked up by
    /// id, so it works whatever state the operation ended in.
    fn forget_op(&mut self, id: OpId) {
        self.release_chain(id);
        self.gc_running.retain(|_, op| *op != id);
        self.streams.retain(|_, op| *op != id);
        self.refresh_running.retain(|_, op| *op != id);
        if self.check_running == Some(id) {
            self.check_running = None;
        }
        let ended: Vec<QueryId> = self
            .queries
            .iter()
            .filter(|(_, op)| **op == id)
            .map(|(q, _)| *q)
            .collect();
        for query in ended {
            self.queries.remove(&query);
            self.commands.push_back(Command::MdnsQueryEnd { query });
        }
    }

    fn add_watcher(&mut self, op: OpId, watcher: OpId) -> bool {
        match self.ops.get_mut(&op) {
            Some(entry) => {
                entry.watchers.push(watcher);
                true
            }
            None => false,
        }
    }

    // ----- outputs -----

    fn push_output(&mut self, output: Output) {
        self.commands.push_back(Command::Output(output));
    }

    /// Node events are informational: past the queue bound they are dropped
    /// and counted, never operation results or driver commands.
    fn emit_event(&mut self, event: NodeEvent) {
        if self.commands.len() >= self.config.max_queued_events {
            self.stats.events_dropped += 1;
            return;
        }
        self.push_output(Output::Event(event));
    }

    /// Emits a store batch; `waiter` gets [`Input::Committed`] when it lands.
    /// An empty batch with a waiter completes at once.
    fn store(&mut self, ops: Vec<StoreOp>, waiter: Option<OpId>) -> Option<BatchId> {
        if ops.is_empty() {
            if let Some(op) = waiter {
                self.input(op, Input::Committed { result: Ok(()) });
            }
            return None;
        }
        let id = BatchId(self.fresh_id());
        if let Some(op) = waiter {
            self.batches.insert(id, op);
        }
        self.commands
            .push_back(Command::Store(StoreBatch { id, ops }));
        Some(id)
    }

    fn on_batch(&mut self, batch: BatchId, result: Result<(), String>) {
        if let Some(op) = self.batches.remove(&batch) {
            self.input(op, Input::Committed { result });
        }
    }

    // ----- connections -----

    /// Asks the driver to connect to `address` (resolving a hostname first).
    fn dial(
        &mut self,
        op: OpId,
        node_id: NodeId,
        address: &NodeAddress,
        mode: ContactMode,
        timeout: Duration,
    ) -> AttemptId {
        let attempt = AttemptId(self.fresh_id());
        self.attempts.insert(
            attempt,
            Attempt {
                op,
                node_id,
                mode,
                timeout,
            },
        );
        match &address.host {
            Host::Ip(ip) => self.connect(attempt, SocketAddr::new(*ip, address.port)),
            Host::Name(hostname) => {
                let resolve = ResolveId(self.fresh_id());
                self.resolves.insert(resolve, (attempt, address.port));
                self.commands.push_back(Command::Resolve {
                    resolve,
                    hostname: hostname.clone(),
                });
            }
        }
        attempt
    }

    fn connect(&mut self, attempt: AttemptId, address: SocketAddr) {
        let Some(a) = self.attempts.get(&attempt) else {
            return;
        };
        self.stats.connects += 1;
        self.commands.push_back(Command::Connect {
            attempt,
            node_id: a.node_id,
            address,
            mode: a.mode,
            timeout: a.timeout,
        });
    }

    fn on_resolved(&mut self, resolve: ResolveId, result: Result<Vec<std::net::IpAddr>, String>) {
        let Some((attempt, port)) = self.resolves.remove(&resolve) else {
            self.stats.stale_events += 1;
            return;
        };
        // The first address is tried; the resolver orders them by preference.
        match result.map(|ips| ips.first().copied()) {
            Ok(Some(ip)) => self.connect(attempt, SocketAddr::new(ip, port)),
            Ok(None) => {
                self.on_connect_failed(attempt, ConnectFailure::Resolve("no addresses".to_owned()))
            }
            Err(e) => self.on_connect_failed(attempt, ConnectFailure::Resolve(e)),
        }
    }

    fn on_connect_failed(&mut self, attempt: AttemptId, failure: ConnectFailure) {
        match self.attempts.remove(&attempt) {
            Some(a) => self.input(a.op, Input::ConnectFailed { attempt, failure }),
            None => self.stats.stale_events += 1,
        }
    }

    fn on_connection_up(
        &mut self,
        conn: ConnId,
        peer: NodeId,
        remote: SocketAddr,
        attempt: Option<AttemptId>,
    ) {
        if self.state != RunState::Running {
            return;
        }
        let attempt = attempt.and_then(|a| self.attempts.remove(&a).map(|x| (a, x)));
        if let Some((id, a)) = &attempt {
            // The driver checks the certificate; this guards against a driver bug.
            if a.node_id != peer {
                self.commands.push_back(Command::CloseConnection {
                    conn,
                    code: ConnectionErrorCode::PeerIdMismatch,
                });
                self.input(
                    a.op,
                    Input::ConnectFailed {
                        attempt: *id,
                        failure: ConnectFailure::WrongNodeId { found: peer },
                    },
                );
                return;
            }
        }
        if peer == self.graph.own_node_id() || self.conns.len() >= self.config.max_connections {
            self.stats.connections_refused += 1;
            let code = if peer == self.graph.own_node_id() {
                ConnectionErrorCode::PeerIdMismatch
            } else {
                ConnectionErrorCode::LimitExceeded
            };
            self.commands
                .push_back(Command::CloseConnection { conn, code });
            if let Some((id, a)) = attempt {
                self.input(
                    a.op,
                    Input::ConnectFailed {
                        attempt: id,
                        failure: ConnectFailure::Transport(code.reason().to_owned()),
                    },
                );
            }
            return;
        }
        let mode = attempt
            .as_ref()
            .map_or(ContactMode::Direct, |(_, a)| a.mode);
        self.conns.insert(
            conn,
            Conn {
                peer,
                remote,
                mode,
                leases: 0,
            },
        );
        self.arm_idle(conn);
        // Spec: every new connection leads to set_node(.., block = true).
        let data = NodeContactAddressData {
            mode,
            connected_time: self.now.unix_secs(),
            scopes: NodeAddressScopes::GLOBAL,
        };
        let _op = self.set_node_inner(
            peer,
            NodeAddress::from(remote),
            data,
            true,
            false,
            None,
            Parent::Internal,
        );
        if let Some((id, a)) = attempt {
            self.input(
                a.op,
                Input::Connected {
                    attempt: id,
                    conn,
                    remote,
                },
            );
        }
    }

    fn on_connection_closed(&mut self, conn: ConnId) {
        if let Some(closed) = self.conns.remove(conn) {
            self.timers.cancel(Timer::ConnIdle(conn));
            // Another connection to the node may now be its primary one, with
            // the primary's longer time to live.
            if let Some((primary, _)) = self.conns.primary(&closed.peer) {
                self.arm_idle(primary);
            }
            self.forget_signal_source(&closed.peer);
        }
    }

    /// A node with no connection left to us sends us no signal requests:
    /// its bucket goes once it has refilled (see `SignalLimiter`).
    fn forget_signal_source(&mut self, peer: &NodeId) {
        if self.conns.primary(peer).is_none() {
            self.signal_limiter.forget_if_full(peer, self.now.mono);
        }
    }

    /// The idle time to live of a connection: longer for a node's primary
    /// connection, the more so the closer its bucket.
    fn idle_ttl(&self, conn: ConnId) -> Duration {
        let base = self.config.connection_idle_ttl;
        let Some(c) = self.conns.get(conn) else {
            return base;
        };
        if !self.conns.is_primary(conn) {
            return base;
        }
        let bucket = self
            .graph
            .bucket_index(&c.peer)
            .map_or(255.0, |b| f64::from(b.get()));
        base + self
            .config
            .connection_primary_ttl_bonus
            .mul_f64(1.0 - bucket / 255.0)
    }

    fn arm_idle(&mut self, conn: ConnId) {
        if self.conns.get(conn).is_some_and(|c| c.leases == 0) {
            let at = self.now.mono + self.idle_ttl(conn);
            self.timers.set(Timer::ConnIdle(conn), at);
        }
    }

    fn on_idle(&mut self, conn: ConnId) {
        if self.conns.get(conn).is_some_and(|c| c.leases == 0) {
            if let Some(closed) = self.conns.remove(conn) {
                self.forget_signal_source(&closed.peer);
            }
            self.commands.push_back(Command::CloseConnection {
                conn,
                code: ConnectionErrorCode::IdleTimeout,
            });
        }
    }

    fn on_released(&mut self, lease: LeaseId) {
        match self.conns.release(lease) {
            Some((conn, 0)) => self.arm_idle(conn),
            Some(_) => {}
            None => self.stats.stale_events += 1,
        }
    }

    /// Hands out a use of `conn`.
    fn lease(&mut self, conn: ConnId) -> Option<(LeaseId, NodeId)> {
        let lease = LeaseId(self.fresh_id());
        self.conns.lease(conn, lease)?;
        self.timers.cancel(Timer::ConnIdle(conn));
        self.conns.get(conn).map(|c| (lease, c.peer))
    }

    fn send_request(&mut self, op: OpId, conn: ConnId, body: Request) -> RequestId {
        let request = RequestId(self.fresh_id());
        self.requests.insert(request, op);
        self.stats.requests_sent += 1;
        self.commands.push_back(Command::SendRequest {
            conn,
            request,
            body,
            timeout: self.config.rpc_timeout,
        });
        // A use keeps the connection from idling out under the request.
        self.arm_idle(conn);
        request
    }
}

#[cfg(test)]
mod tests;
