//! `find_node` and its variants, `ping_node` and `query_mdns`: the manager's
//! side of a lookup. The lookup's rules live in [`super::lookup`]; this file
//! wires that machine to the node: it seeds the candidates from the graph
//! and the connections, turns each [`Next`] into a dial, a request, a hole
//! punch or an mDNS query, and each input of the operation into the
//! machine's `on_*` call.

use std::net::SocketAddr;
use std::time::Duration;

use super::conns::ConnTable;
use super::lookup::{Answer, Fill, Lookup, Next, Outcome, Params, Peers, addresses_of};
use super::{ConnId, Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, Step};
use crate::contact::ContactMode;
use crate::id::{BucketIndex, NodeId};
use crate::manager::api::{ApiError, Command, QueryId};
use crate::wire::{Request, Response};

pub use super::lookup::Strategies;

/// Per-call options of a lookup; `None` takes the [`crate::Config`] value.
///
/// Spec: the parameters of `NodeManager.findNode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FindOptions {
    /// Spec `connectionConnectTimeoutTime`: one connection attempt.
    pub connection_connect_timeout: Option<Duration>,
    /// Spec `connectionFindMDNSTimeoutTime`: how long mDNS collects answers.
    pub connection_find_mdns_timeout: Option<Duration>,
    /// Spec `concurrencyLimit`: attempts in flight (α).
    pub concurrency_limit: Option<usize>,
    /// Spec `limit`: nodes contacted at most.
    pub limit: Option<usize>,
    /// The whole lookup's deadline (the spec's `ctx` timer).
    pub timeout: Option<Duration>,
}

/// A lookup in progress: the machine of [`super::lookup`].
pub(crate) type FindNode = Lookup;

/// An mDNS query collecting answers until its deadline.
#[derive(Debug)]
pub(crate) struct QueryMdns {
    pub(crate) query: QueryId,
    node_id: NodeId,
    addresses: Vec<SocketAddr>,
}

/// The most addresses one mDNS query keeps.
const MAX_MDNS_ADDRESSES: usize = 16;

impl NodeManager {
    /// Spec: `NodeManager.findNode`.
    ///
    /// Finds `node_id` and connects to it, racing the direct, signal and mDNS
    /// strategies (the first success ends the others). Ends with
    /// `Found(Some((address, data)))`, or `Found(None)` if the node was not
    /// found: the k closest nodes seen all answered without it, `limit` nodes
    /// were contacted, or no candidate is left. `Timeout` if the deadline passes first.
    pub fn find_node(
        &mut self,
        now: crate::time::Now,
        node_id: NodeId,
        options: FindOptions,
    ) -> Result<OpId, ApiError> {
        self.find_with(now, node_id, options, Strategies::ALL)
    }

    /// Spec: `NodeManager.findNodeBySignal`.
    ///
    /// `find_node` with the signal strategy only: candidates are reached
    /// through nodes that are connected to them.
    pub fn find_node_by_signal(
        &mut self,
        now: crate::time::Now,
        node_id: NodeId,
        options: FindOptions,
    ) -> Result<OpId, ApiError> {
        self.find_with(now, node_id, options, Strategies::SIGNAL)
    }

    /// Spec: `NodeManager.findNodeByDirect`.
    ///
    /// `find_node` with the direct strategy only: candidates are dialled at
    /// the addresses other nodes' graphs give.
    pub fn find_node_by_direct(
        &mut self,
        now: crate::time::Now,
        node_id: NodeId,
        options: FindOptions,
    ) -> Result<OpId, ApiError> {
        self.find_with(now, node_id, options, Strategies::DIRECT)
    }

    /// Spec: `NodeManager.findNodeByMDNS`.
    ///
    /// `find_node` with mDNS only: query the local network, then connect to
    /// the addresses found (scope `local`).
    pub fn find_node_by_mdns(
        &mut self,
        now: crate::time::Now,
        node_id: NodeId,
        options: FindOptions,
    ) -> Result<OpId, ApiError> {
        self.find_with(now, node_id, options, Strategies::MDNS)
    }

    /// Spec: `NodeManager.pingNode`.
    ///
    /// Finds `node_id` (connecting to it) and ends with where it was reached,
    /// or `Found(None)`.
    pub fn ping_node(
        &mut self,
        now: crate::time::Now,
        node_id: NodeId,
        options: FindOptions,
    ) -> Result<OpId, ApiError> {
        self.find_with(now, node_id, options, Strategies::ALL)
    }

    /// Spec: `NodeManager.queryMDNS`.
    ///
    /// Asks the local network for `node_id` and ends, after `timeout`
    /// (default `nodes_connection_find_local_timeout`), with the addresses that
    /// answered (none if mDNS is off).
    pub fn query_mdns(
        &mut self,
        now: crate::time::Now,
        node_id: NodeId,
        timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let timeout = timeout.unwrap_or(self.config.nodes_connection_find_local_timeout);
        let query = self.new_query(node_id);
        let op = self.spawn(OpKind::QueryMdns(query), Parent::Caller, Some(timeout))?;
        self.run();
        Ok(op)
    }

    fn new_query(&mut self, node_id: NodeId) -> QueryMdns {
        QueryMdns {
            query: QueryId(self.fresh_id()),
            node_id,
            addresses: Vec::new(),
        }
    }

    fn find_with(
        &mut self,
        now: crate::time::Now,
        node_id: NodeId,
        options: FindOptions,
        strategies: Strategies,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let op = self.spawn_find(node_id, options, strategies, Parent::Caller)?;
        self.run();
        Ok(op)
    }

    pub(super) fn spawn_find(
        &mut self,
        target: NodeId,
        options: FindOptions,
        strategies: Strategies,
        parent: Parent,
    ) -> Result<OpId, ApiError> {
        self.spawn_lookup(target, options, strategies, parent, None)
    }

    /// A lookup; with `fill`, a bucket refresh's lookup that spreads its
    /// contacts over the bucket's sub-ranges.
    pub(super) fn spawn_lookup(
        &mut self,
        target: NodeId,
        options: FindOptions,
        strategies: Strategies,
        parent: Parent,
        fill: Option<BucketIndex>,
    ) -> Result<OpId, ApiError> {
        let config = &self.config;
        let params = Params {
            strategies,
            mdns_available: config.mdns.is_some(),
            connect_timeout: options
                .connection_connect_timeout
                .unwrap_or(config.connection_connect_timeout),
            mdns_timeout: options
                .connection_find_mdns_timeout
                .unwrap_or(config.nodes_connection_find_local_timeout),
            concurrency: options
                .concurrency_limit
                .unwrap_or(config.concurrency_limit),
            limit: options.limit.unwrap_or(config.find_node_limit),
            k: config.k,
            max_candidates: config.max_lookup_candidates,
            own_symmetric: self.nat_class() == crate::nat::NatClass::Symmetric,
            upgrade: false,
            ip_groups: config.ip_group_limits,
        };
        let fill =
            fill.and_then(|bucket| Fill::new(bucket, config.bucket_diversity_bits, config.k));
        let find = Lookup::new(target, params, fill);
        let timeout = options.timeout.unwrap_or(self.config.find_node_timeout);
        self.spawn(OpKind::Find(Box::new(find)), parent, Some(timeout))
    }

    /// A lookup that tries to reach `peer`, connected through `relayed`,
    /// by a punch signalled through that relay: the upgrade of a relayed
    /// connection (see `relays.rs`).
    pub(super) fn spawn_upgrade(
        &mut self,
        peer: NodeId,
        relayed: &super::dials::RelayedVia,
    ) -> Result<OpId, ApiError> {
        let config = &self.config;
        let params = Params {
            strategies: Strategies::SIGNAL,
            mdns_available: false,
            connect_timeout: config.connection_connect_timeout,
            mdns_timeout: config.nodes_connection_find_local_timeout,
            concurrency: 1,
            limit: 1,
            k: config.k,
            max_candidates: 1,
            own_symmetric: false,
            upgrade: true,
            ip_groups: config.ip_group_limits,
        };
        let mut find = Lookup::new(peer, params, None);
        find.offer(
            self.graph.own_node_id(),
            peer,
            Vec::new(),
            Some(relayed.relay),
        );
        let timeout = 2 * config.connection_connect_timeout;
        self.spawn(
            OpKind::Find(Box::new(find)),
            Parent::Internal,
            Some(timeout),
        )
    }

    pub(super) fn step_query_mdns(&mut self, id: OpId, mut op: QueryMdns, input: Input) -> Step {
        match input {
            Input::Start => {
                if self.config.mdns.is_none() {
                    return Step::Done(Ok(OpValue::Addresses(Vec::new())));
                }
                self.waits.register(super::waits::Wait::Query(op.query), id);
                self.commands.push_back(Command::MdnsQuery {
                    query: op.query,
                    node_id: op.node_id,
                });
            }
            Input::Mdns { addresses } => {
                for address in addresses {
                    if op.addresses.len() < MAX_MDNS_ADDRESSES && !op.addresses.contains(&address) {
                        op.addresses.push(address);
                    }
                }
            }
            Input::Deadline => return Step::Done(Ok(OpValue::Addresses(op.addresses))),
            _ => {}
        }
        Step::Continue(OpKind::QueryMdns(op))
    }

    pub(super) fn step_find(&mut self, id: OpId, mut op: Box<FindNode>, input: Input) -> Step {
        match input {
            Input::Start => {
                op.started = Some(self.now.mono);
                if op.on_start(&self.conns) && !op.is_upgrade() {
                    self.seed_candidates(&mut op);
                }
            }
            Input::Connected {
                attempt,
                conn,
                remote,
            } => op.on_connected(attempt, conn, remote),
            Input::ConnectFailed { attempt, .. } => op.on_failed(attempt),
            Input::Response { request, result } => {
                let answer = match result {
                    Ok(Response::Signal { target_address }) => Answer::Signalled(target_address),
                    Ok(Response::ClosestNodes { active, contacts }) => {
                        Answer::Closest { active, contacts }
                    }
                    Ok(Response::RelayOpened {
                        target_address,
                        target_class,
                    }) => Answer::RelayOpened {
                        target_address,
                        target_class,
                    },
                    _ => Answer::Failed,
                };
                op.on_answer(request, answer, self.graph.own_node_id());
            }
            Input::Child { child, result } => {
                let addresses = match result {
                    Ok(OpValue::Addresses(a)) => a,
                    _ => Vec::new(),
                };
                op.on_mdns(child, addresses);
            }
            Input::Deadline => op.on_deadline(),
            Input::Mdns { .. }
            | Input::Committed { .. }
            | Input::Stream { .. }
            | Input::StreamClosed
            | Input::ChainFree => {}
        }
        match self.drive_find(id, &mut op) {
            Some(done) => Step::Done(done),
            None => Step::Continue(OpKind::Find(op)),
        }
    }

    /// Carries out what the lookup asks for until it waits or is over.
    fn drive_find(&mut self, id: OpId, op: &mut FindNode) -> Option<Result<OpValue, OpError>> {
        loop {
            match op.next(self.now, &self.conns, &self.graph, &mut self.rng) {
                Next::Dial {
                    node_id,
                    address,
                    mode,
                    timeout,
                } => {
                    let attempt = self.dial(id, node_id, &address, mode, timeout);
                    op.dialing(attempt);
                }
                Next::Signal { conn, target } => {
                    let request = self.send_request(id, conn, Request::Signal { target });
                    op.requested(request);
                }
                Next::Ask { conn, target } => {
                    let request = self.send_request(id, conn, Request::ClosestNodes { target });
                    op.requested(request);
                }
                Next::RelayOpen { conn, target } => {
                    let request = self.send_request(id, conn, Request::RelayOpen { target });
                    op.requested(request);
                }
                Next::DialRelayed {
                    node_id,
                    via,
                    relayed,
                    timeout,
                } => {
                    let attempt = self.dial_relayed(id, node_id, via, relayed, timeout);
                    op.dialing(attempt);
                }
                Next::Punch { address, timeout } => {
                    self.metrics.punches_tried += 1;
                    self.commands
                        .push_back(Command::HolePunch { address, timeout });
                }
                Next::QueryMdns { node_id, timeout } => {
                    let query = self.new_query(node_id);
                    let child = self.spawn(OpKind::QueryMdns(query), Parent::Op(id), Some(timeout));
                    // Without room for the query, the lookup goes on without mDNS.
                    op.querying(child.ok());
                }
                Next::Wait => return None,
                Next::Done(outcome) => {
                    self.count_lookup(op, &outcome);
                    return Some(match outcome {
                        Outcome::Found(address, data) => Ok(OpValue::Found(Some((address, data)))),
                        Outcome::NotFound => Ok(OpValue::Found(None)),
                        Outcome::Timeout => Err(OpError::Timeout),
                    });
                }
            }
        }
    }

    /// Counts a lookup's end: its outcome, the nodes it contacted, its time.
    fn count_lookup(&mut self, op: &FindNode, outcome: &Outcome) {
        use crate::metrics::LookupOutcome;
        let label = match outcome {
            Outcome::Found(..) => LookupOutcome::Found,
            Outcome::NotFound => LookupOutcome::NotFound,
            Outcome::Timeout => LookupOutcome::Timeout,
        };
        self.metrics.lookups.inc(label);
        self.metrics.lookup_hops.observe(op.contacted() as f64);
        if let Some(started) = op.started {
            let elapsed = self.now.mono.saturating_duration_since(started);
            self.metrics.lookup_duration.observe_duration(elapsed);
        }
    }

    /// The lookup's first candidates: the graph's k closest nodes to the
    /// target, then the k closest connected nodes.
    fn seed_candidates(&self, op: &mut FindNode) {
        let k = self.config.k;
        let own = self.graph.own_node_id();
        let target = op.target();
        for entry in self.graph.closest(&target, k) {
            op.offer(own, entry.node_id, addresses_of(&entry.contact), None);
        }
        for peer in self.conns.closest_peers(&target, k) {
            op.offer(own, peer, Vec::new(), None);
        }
    }
}

/// A lookup sees the connection table through [`Peers`] only.
impl Peers for ConnTable {
    fn primary(&self, node: &NodeId) -> Option<(ConnId, SocketAddr, ContactMode)> {
        ConnTable::primary(self, node).map(|(id, c)| (id, c.shown_remote(), c.mode))
    }

    fn is_connected(&self, node: &NodeId) -> bool {
        ConnTable::is_connected(self, node)
    }
}
