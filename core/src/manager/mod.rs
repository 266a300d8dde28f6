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
//! # Who becomes a contact
//!
//! A node is added to the graph only at an address it is known to accept
//! connections on: a connection this node dialled (its peer proved the
//! NodeId at the address dialled), or an inbound connection from an
//! address the peer already is a contact at. Any other inbound peer is
//! dialled back at the address it connected from (a fresh outbound
//! connection expecting its NodeId); only when that connection comes up is
//! the peer recorded, as any dialled node is. A client that does not
//! listen, or listens elsewhere than it sends from, never becomes a
//! contact, so it is never handed to other nodes in `ClosestNodes`
//! answers. Dial-backs are bounded (`Config::max_dial_backs`, and per
//! network as many as it may hold contacts in a bucket) and skipped for a
//! peer whose network could not get in anyway (`Config::ip_group_limits`).
//! The dial-back of a node that dialled us finds us a contact already at
//! the address it dialled from, so two nodes never dial each other back
//! in turn.
//!
//! A full bucket gives up a live contact for no one but `force`: only a
//! failed garbage-collection ping removes one (the spec's rule), and
//! bucket diversity only orders the pending nodes that fill the room.
//!
//! # Determinism
//!
//! The manager reads no clock and draws randomness only from the generator
//! seeded in [`NodeManager::new`]; all its tables are ordered maps. The same
//! seed and the same inputs give the same commands.
//!
//! # Layout
//!
//! - `api`: the I/O surface (events in, commands and outputs out, ids).
//! - `ops`: the operation table and machinery: spawn, step one input at a
//!   time, end (children cancelled, waits and jobs dropped, parent told).
//! - `waits`: what each operation waits for (an attempt, a request, a query,
//!   a batch, a stream), so an answer finds its operation and an ended
//!   operation leaves nothing behind; `running`: the jobs of which one runs
//!   at a time (GC or refresh of a bucket, the connection check, the chain
//!   writer); `timers`: the deadline table keyed by [`Timer`].
//! - `conns` (connections up), `dials` (attempts in flight), `lifecycle`
//!   (dialling, connection up/closed, idle time to live, leases, requests).
//! - One file per group of spec methods: `set_node` (setNode, pings),
//!   `find` (findNode, pingNode, mDNS, wiring `lookup`: the lookup as a pure
//!   machine), `gc` (garbageCollectBucket, its round a pure machine),
//!   `maintenance` (refresh, connection
//!   check, resetBuckets, acquireConnection), `sync`, `claims`, `serve`
//!   (answering peers, the signal relay), `tasks` (the persisted task table).

mod api;
mod call;
mod claims;
mod committed;
mod conns;
mod dials;
mod find;
mod gc;
mod in_flight;
mod join;
mod lifecycle;
mod lookup;
mod maintenance;
mod nat;
mod observations;
mod ops;
mod relays;
mod running;
mod serve;
mod set_node;
mod sync;
mod tasks;
mod timers;
mod waits;

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use api::{
    ApiError, AttemptId, BatchId, Command, ConnId, ConnectFailure, Event, LeaseId, NodeEvent,
    OpError, OpId, OpValue, Output, PeerRequestId, QueryId, RequestId, ResolveId, RpcFailure,
    SeedFailure, StoreBatch, StreamId,
};
pub use call::UserCall;
pub use find::{FindOptions, Strategies};
pub use in_flight::InFlight;
pub use join::JoinStatus;
pub use observations::Observation;
pub use timers::Timer;

use crate::claims::{Identity, Sigchain};
use crate::config::{Config, ConfigError};
use crate::conn_error::CloseReason;
use crate::graph::{NodeBucket, NodeGraph};
use crate::id::{BucketIndex, NodeId};
use crate::store::{StoreOp, TaskKey, TaskRecord};
use crate::time::Now;
use claims::ClaimState;
use conns::ConnTable;
use dials::Dials;
use ops::{Input, OpKind, OpTable, Parent, Step};
use running::Running;
use serve::SignalRelay;
use timers::Timers;
use waits::{Wait, Waits};

/// Counters of what the manager dropped or refused, for monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events about an attempt, request, query or batch no operation waits for.
    pub stale_events: u64,
    /// Inbound connections closed because `max_connections` was reached.
    pub connections_refused: u64,
    /// Signal requests refused by a rate limit (per node, per address or in total).
    pub signals_rate_limited: u64,
    /// `SignalFinal`s refused without punching: from a node we did not dial
    /// (anyone can connect in with a fresh key and name any address), or
    /// naming an address no relay could have observed.
    pub signals_unvouched: u64,
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
    /// Peers' claim exchanges refused because too many were waiting for
    /// the chain (`max_chain_waiters`, `max_chain_waiters_per_peer`).
    pub claims_refused_busy: u64,
    /// Contacts and pending nodes refused because their network (/24 or
    /// /48) held its share of the bucket or the table.
    pub ip_group_refused: u64,
    /// Inbound peers not dialled back: `max_dial_backs` were in flight, or
    /// as many for their network as it may hold contacts in a bucket.
    pub dial_backs_skipped: u64,
    /// Snapshots refused: one that does not restore (then `start` fails
    /// with [`ApiError::BadSnapshot`]), or one that arrived after `start`.
    pub snapshots_refused: u64,
    /// Claims of a loaded snapshot left out of the sigchain because they no
    /// longer verify (the rest of the chain is kept).
    pub snapshot_claims_skipped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Created,
    Running,
    Stopped,
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
    /// One counter for every id the manager makes (operations, attempts,
    /// requests, batches, ...): ids are never reused.
    next_id: u64,
    commands: VecDeque<Command>,
    inputs: VecDeque<(OpId, Input)>,
    timers: Timers,
    ops: OpTable,
    conns: ConnTable,
    dials: Dials,
    waits: Waits,
    running: Running,
    tasks: tasks::TaskTable,
    relay: SignalRelay,
    stats: Stats,
    claims: ClaimState,
    /// Whether the store holds this graph's space (owner and active space);
    /// a new store gets them written at start.
    graph_persisted: bool,
    /// Inbound peers being dialled back, with the network of the address.
    dial_backs: std::collections::BTreeMap<NodeId, Option<crate::ip_group::IpGroup>>,
    /// What the store holds of the graph, to undo a failed batch.
    committed: committed::CommittedGraph,
    /// Why the loaded snapshot did not restore: `start` refuses with it,
    /// rather than run on (and persist over the store) an empty graph.
    snapshot_error: Option<crate::graph::SnapshotError>,
    /// Counted, never read for a decision.
    metrics: crate::metrics::Metrics,
    /// What happened, for a watcher; never read for a decision.
    observations: observations::Observations,
    /// Whether the node joined, and the background sync's retries.
    join: join::JoinState,
    /// The addresses peers observe this node's socket at, and its NAT class.
    observed: crate::nat::ObservedAddresses,
    /// This node's reservations with relays.
    reservations: relays::Reservations,
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
        let relay = SignalRelay::new(&config);
        let observed = crate::nat::ObservedAddresses::new(config.max_observed_addresses);
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
            ops: OpTable::default(),
            conns: ConnTable::default(),
            dials: Dials::default(),
            waits: Waits::default(),
            running: Running::default(),
            tasks: tasks::TaskTable::default(),
            relay,
            stats: Stats::default(),
            claims: ClaimState::new(own, identity.key().cloned()),
            graph_persisted: false,
            dial_backs: std::collections::BTreeMap::new(),
            committed: committed::CommittedGraph::default(),
            reservations: relays::Reservations::default(),
            snapshot_error: None,
            metrics: crate::metrics::Metrics::default(),
            observations: observations::Observations::default(),
            join: join::JoinState::default(),
            observed,
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

    /// Connections, lookups, requests and punches counted so far.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The metrics, for the net layer's counts (stream bytes).
    pub(crate) fn metrics_mut(&mut self) -> &mut crate::metrics::Metrics {
        &mut self.metrics
    }

    /// The oldest [`Observation`] not yet taken. Draining them is
    /// optional: undrained, they stop being queued at
    /// `max_queued_events` (and are counted as dropped).
    pub fn poll_observation(&mut self) -> Option<Observation> {
        self.observations.pop()
    }

    /// Queues an observation for a watcher (bounded, counted when full).
    fn observe(&mut self, o: Observation) {
        if !self.observations.push(o, self.config.max_queued_events) {
            self.metrics.observations_dropped += 1;
        }
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

    /// How each connection up was made (direct, punched, relayed), in
    /// connection order, as [`NodeManager::connections`] lists them.
    pub fn connection_modes(&self) -> Vec<(ConnId, crate::contact::ContactMode)> {
        self.conns
            .ids()
            .filter_map(|id| self.conns.get(id).map(|c| (id, c.mode)))
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
            Event::SnapshotLoaded(snapshot) => match self.load_snapshot(snapshot) {
                Ok(()) => self.snapshot_error = None,
                Err(error) => {
                    self.stats.snapshots_refused += 1;
                    // After start the graph in memory is the truth and the
                    // snapshot is only counted; before, `start` reports it.
                    if let ApiError::BadSnapshot(error) = error {
                        self.snapshot_error = Some(error);
                    }
                }
            },
            Event::ConnectionUp {
                conn,
                peer,
                remote,
                attempt,
            } => {
                self.on_connection_up(conn, peer, remote, attempt);
                // A peer this node dialled may be a relay to reserve at.
                if self.conns.get(conn).is_some_and(|c| c.dialled) {
                    self.check_relays();
                }
            }
            Event::ConnectFailed { attempt, failure } => {
                self.on_connect_failed(attempt, failure);
            }
            Event::AddressObserved { conn, observed } => self.on_address_observed(conn, observed),
            Event::ConnectionClosed { conn } => {
                self.on_connection_closed(conn);
                self.relays_conn_closed(conn);
            }
            Event::ConnectionReleased { lease } => self.on_released(lease),
            Event::RequestReceived {
                conn,
                request,
                body,
            } => self.serve(conn, request, body),
            Event::ResponseReceived { request, result } => {
                match self.waits.take(Wait::Request(request)) {
                    Some(op) => self.input(op, Input::Response { request, result }),
                    None if self.relay.take_answer(request) => {}
                    None if self.take_reservation_answer(request, &result) => {}
                    None => self.stats.stale_events += 1,
                }
            }
            Event::StreamOpened {
                conn,
                stream,
                message,
            } => {
                if self.state == RunState::Running {
                    self.handle_claim_node(conn, stream, message);
                }
            }
            Event::StreamReceived { stream, message } => {
                match self.waits.get(Wait::Stream(stream)) {
                    Some(op) => self.input(op, Input::Stream { message }),
                    None => self.stats.stale_events += 1,
                }
            }
            Event::StreamClosed { stream } => {
                self.claim_stream_closed(stream);
                self.input_wait(Wait::Stream(stream), Input::StreamClosed);
            }
            Event::MdnsAnswer { query, addresses } => match self.waits.get(Wait::Query(query)) {
                Some(op) => self.input(op, Input::Mdns { addresses }),
                None => self.stats.stale_events += 1,
            },
            Event::Resolved { resolve, result } => self.on_resolved(resolve, result),
            Event::StoreCommitted(batch) => {
                self.committed.committed(batch);
                self.on_batch(batch, Ok(()));
            }
            Event::StoreFailed { batch, error } => {
                self.stats.store_failures += 1;
                if let Some(store_holds) = self.committed.failed(batch) {
                    self.roll_back_graph(store_holds);
                }
                self.emit_event(NodeEvent::StoreFailed { batch, error });
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
                Timer::Relays => self.check_relays(),
                Timer::RelayUpgrade => self.check_upgrades(),
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
        self.claims.key = identity.key().cloned();
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
        self.observe(Observation::KeyRenewed { node_id });
        if self
            .claims
            .key
            .as_ref()
            .is_some_and(|k| k.node_id() != node_id)
        {
            // The key no longer matches the NodeId: it cannot sign for it.
            self.claims.key = None;
        }
        let update = self.graph.reset(node_id);
        self.claims.sigchain.set_owner(node_id);
        self.emit_event(NodeEvent::BucketsReset { node_id });
        self.store(update.ops, None);
    }

    // ----- start and stop -----

    fn load_snapshot(&mut self, snapshot: crate::store::Snapshot) -> Result<(), ApiError> {
        if self.state != RunState::Created {
            return Err(ApiError::SnapshotAfterStart);
        }
        self.committed = committed::CommittedGraph::loaded(snapshot.graph.as_ref());
        if let Some(graph) = snapshot.graph {
            self.graph_persisted = true;
            let own = self.graph.own_node_id();
            let (restored, trim) =
                NodeGraph::restore(graph, &self.config).map_err(ApiError::BadSnapshot)?;
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
        let (chain, rejected) = Sigchain::restore(self.graph.own_node_id(), snapshot.claims);
        self.stats.snapshot_claims_skipped += rejected.len() as u64;
        self.claims.sigchain = chain;
        for (a, b) in snapshot.gestalt_links {
            let _new = self.claims.gestalt.link(a, b);
        }
        self.claims.claim_permissions = snapshot.claim_permissions.into_iter().collect();
        Ok(())
    }

    /// Spec: `NodeManager.start`.
    ///
    /// Starts the manager: resumes persisted tasks, creates the missing
    /// refresh tasks, schedules the connection check, starts announcing on
    /// mDNS. From now on every new outbound connection, and every inbound
    /// one whose address the peer is known at, is recorded with
    /// `set_node(peer, address, { mode, now, [global] }, block = true)`;
    /// other inbound peers are dialled back first (see the module docs).
    /// Ends when the tasks it wrote are committed. Refused with
    /// [`ApiError::BadSnapshot`] if the loaded snapshot did not restore.
    pub fn start(&mut self, now: Now) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        match self.state {
            RunState::Running => return Err(ApiError::AlreadyRunning),
            RunState::Stopped => return Err(ApiError::NotRunning),
            RunState::Created => {}
        }
        if let Some(error) = &self.snapshot_error {
            return Err(ApiError::BadSnapshot(error.clone()));
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
        self.end_all_ops();
        if self.config.mdns.is_some() {
            self.commands.push_back(Command::MdnsStop);
        }
        let conns: Vec<ConnId> = self.conns.ids().collect();
        for conn in conns {
            self.commands.push_back(Command::CloseConnection {
                conn,
                code: CloseReason::Stopping.code(),
            });
        }
        self.conns.clear();
        self.dials.clear();
        self.relay.clear_relayed();
        self.claims.chain_queue.clear();
        self.dial_backs.clear();
        self.timers.clear();
        self.state = RunState::Stopped;
        self.push_output(Output::Event(NodeEvent::Stopped));
        Ok(())
    }

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
            self.waits.register(Wait::Batch(id), op);
        }
        self.committed.sent(id, &ops);
        self.commands
            .push_back(Command::Store(StoreBatch { id, ops }));
        Some(id)
    }

    /// A batch that wrote the graph failed: the graph becomes what the
    /// store will hold, `store_holds` (see `committed`). Contacts that leave
    /// with it are announced as removed.
    fn roll_back_graph(&mut self, store_holds: Option<crate::store::GraphSnapshot>) {
        let own = self.graph.own_node_id();
        let rebuilt = match store_holds {
            // Same config as the graph in memory: nothing to trim.
            Some(s) => NodeGraph::restore(s, &self.config).map(|(g, _trim)| g).ok(),
            None => NodeGraph::new(own, &self.config).ok(),
        };
        let Some(mut graph) = rebuilt else {
            return;
        };
        if graph.own_node_id() != own {
            // A key renewal's batch failed: rebuilt for the current key in
            // memory only, as the next start does with what the store holds.
            let _in_memory_only = graph.reset(own);
        }
        let gone: Vec<NodeId> = self
            .graph
            .iter()
            .filter(|e| !graph.contains(&e.node_id))
            .map(|e| e.node_id)
            .collect();
        self.graph = graph;
        for node_id in gone {
            self.emit_event(NodeEvent::ContactRemoved { node_id });
            self.observe(Observation::ContactRemoved { node_id });
        }
    }

    fn on_batch(&mut self, batch: BatchId, result: Result<(), crate::store::StoreErrorKind>) {
        // A batch nobody waits for is no news; one whose operation ended
        // is stale.
        if let Some(op) = self.waits.take(Wait::Batch(batch)) {
            self.input(op, Input::Committed { result });
        }
    }
}

#[cfg(test)]
mod tests;
