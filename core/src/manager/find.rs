//! `find_node`: the lookup, with its direct, signal and mDNS strategies.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;

use super::{
    AttemptId, Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, RequestId, Step,
};
use crate::address::NodeAddress;
use crate::contact::{
    ContactMode, NodeAddressScope, NodeAddressScopes, NodeContact, NodeContactAddressData,
};
use crate::id::{BucketIndex, Distance, NodeId};
use crate::manager::api::{ApiError, Command, QueryId};
use crate::wire::{Request, Response};

/// Which ways of reaching a node a lookup may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strategies {
    /// Connect straight to addresses learned from other nodes' graphs.
    pub direct: bool,
    /// Have a node connected to the target signal it to punch a hole.
    pub signal: bool,
    /// Ask the local network.
    pub mdns: bool,
}

impl Strategies {
    /// All three, racing: `find_node`.
    pub const ALL: Self = Self {
        direct: true,
        signal: true,
        mdns: true,
    };
    /// Direct only: `find_node_by_direct`.
    pub const DIRECT: Self = Self {
        direct: true,
        signal: false,
        mdns: false,
    };
    /// Signal only: `find_node_by_signal`.
    pub const SIGNAL: Self = Self {
        direct: false,
        signal: true,
        mdns: false,
    };
    /// mDNS only: `find_node_by_mdns`.
    pub const MDNS: Self = Self {
        direct: false,
        signal: false,
        mdns: true,
    };
}

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

/// Where a candidate stands in a lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CandidateState {
    Waiting,
    Dialing {
        attempt: AttemptId,
        address: usize,
        via_signal: bool,
    },
    Signalling {
        request: RequestId,
    },
    Querying {
        request: RequestId,
    },
    Answered,
    Failed,
}

impl CandidateState {
    /// The attempt or request this state waits for (their ids share one counter).
    fn waits_for(&self) -> Option<u64> {
        match self {
            Self::Dialing { attempt, .. } => Some(attempt.0),
            Self::Signalling { request } | Self::Querying { request } => Some(request.0),
            Self::Waiting | Self::Answered | Self::Failed => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Candidate {
    node_id: NodeId,
    addresses: Vec<NodeAddress>,
    signallers: Vec<NodeId>,
    state: CandidateState,
    /// A signal was tried: not again after a direct dial fails.
    signalled: bool,
    /// A direct dial was tried: not again after a signalled one fails.
    dialled: bool,
}

/// The most nodes remembered as able to signal one candidate.
const MAX_SIGNALLERS: usize = 3;

#[derive(Clone, Debug)]
enum MdnsPhase {
    Off,
    Querying(OpId),
    Dialing {
        remaining: VecDeque<SocketAddr>,
        attempt: AttemptId,
    },
    Done,
}

/// A lookup in progress.
#[derive(Debug)]
pub(crate) struct FindNode {
    target: NodeId,
    strategies: Strategies,
    connect_timeout: Duration,
    mdns_timeout: Duration,
    concurrency: usize,
    limit: usize,
    candidates: BTreeMap<Distance, Candidate>,
    /// Which candidate each attempt or request in flight belongs to, so an
    /// answer finds its candidate without a scan of the list.
    waiting_on: Vec<(u64, NodeId)>,
    in_flight: usize,
    contacted: usize,
    mdns: MdnsPhase,
    /// A bucket refresh's lookup: fill this bucket evenly (see
    /// [`NodeManager::retarget_fill`]).
    fill: Option<BucketIndex>,
}

impl FindNode {
    /// Sets the state of the candidate at `distance`, noting the attempt or
    /// request it now waits for.
    fn set_state(&mut self, distance: &Distance, state: CandidateState) {
        if let Some(c) = self.candidates.get_mut(distance) {
            if let Some(key) = state.waits_for() {
                self.waiting_on.push((key, c.node_id));
            }
            c.state = state;
        }
    }

    /// The distance of the candidate waiting for attempt or request `key`,
    /// forgetting the wait.
    fn take_waiting(&mut self, key: u64) -> Option<Distance> {
        let i = self.waiting_on.iter().position(|(k, _)| *k == key)?;
        let (_, node_id) = self.waiting_on.swap_remove(i);
        Some(self.target.distance(&node_id))
    }
}

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
        let find = FindNode {
            target,
            strategies,
            connect_timeout: options
                .connection_connect_timeout
                .unwrap_or(self.config.connection_connect_timeout),
            mdns_timeout: options
                .connection_find_mdns_timeout
                .unwrap_or(self.config.nodes_connection_find_local_timeout),
            concurrency: options
                .concurrency_limit
                .unwrap_or(self.config.concurrency_limit)
                .max(1),
            limit: options.limit.unwrap_or(self.config.find_node_limit),
            candidates: BTreeMap::new(),
            waiting_on: Vec::new(),
            in_flight: 0,
            contacted: 0,
            mdns: MdnsPhase::Off,
            fill,
        };
        let timeout = options.timeout.unwrap_or(self.config.find_node_timeout);
        self.spawn(OpKind::Find(Box::new(find)), parent, Some(timeout))
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
                if let Some(found) = self.found_connected(&op.target) {
                    return Step::Done(Ok(found));
                }
                self.seed_candidates(&mut op);
                if op.strategies.mdns && self.config.mdns.is_some() {
                    let query = self.new_query(op.target);
                    let child = self.spawn(
                        OpKind::QueryMdns(query),
                        Parent::Op(id),
                        Some(op.mdns_timeout),
                    );
                    // Without room for the query, the lookup goes on without mDNS.
                    op.mdns = child.map_or(MdnsPhase::Done, MdnsPhase::Querying);
                }
            }
            Input::Connected {
                attempt,
                conn,
                remote,
            } => {
                if matches!(&op.mdns, MdnsPhase::Dialing { attempt: a, .. } if *a == attempt) {
                    return Step::Done(Ok(self.found(remote, ContactMode::Direct, true)));
                }
                if let Some(done) = self.find_connected(id, &mut op, attempt, conn, remote) {
                    return done;
                }
            }
            Input::ConnectFailed { attempt, .. } => {
                if let MdnsPhase::Dialing {
                    remaining,
                    attempt: a,
                } = &mut op.mdns
                    && *a == attempt
                {
                    op.mdns = match remaining.pop_front() {
                        Some(next) => MdnsPhase::Dialing {
                            attempt: self.dial(
                                id,
                                op.target,
                                &NodeAddress::from(next),
                                ContactMode::Direct,
                                op.connect_timeout,
                            ),
                            remaining: std::mem::take(remaining),
                        },
                        None => MdnsPhase::Done,
                    };
                } else {
                    self.find_connect_failed(id, &mut op, attempt);
                }
            }
            Input::Response { request, result } => {
                if let Some(done) = self.find_response(id, &mut op, request, result) {
                    return done;
                }
            }
            Input::Child { child, result } => {
                if matches!(op.mdns, MdnsPhase::Querying(q) if q == child) {
                    let mut addresses: VecDeque<SocketAddr> = match result {
                        Ok(OpValue::Addresses(a)) => a.into(),
                        _ => VecDeque::new(),
                    };
                    op.mdns = match addresses.pop_front() {
                        Some(first) => MdnsPhase::Dialing {
                            attempt: self.dial(
                                id,
                                op.target,
                                &NodeAddress::from(first),
                                ContactMode::Direct,
                                op.connect_timeout,
                            ),
                            remaining: addresses,
                        },
                        None => MdnsPhase::Done,
                    };
                }
            }
            Input::Deadline => return Step::Done(Err(OpError::Timeout)),
            Input::Mdns { .. }
            | Input::Committed { .. }
            | Input::Stream { .. }
            | Input::StreamClosed
            | Input::ChainFree => {}
        }
        match self.find_advance(id, &mut op) {
            Some(done) => done,
            None => Step::Continue(OpKind::Find(op)),
        }
    }

    /// The result for a node reached at `remote`.
    fn found(&self, remote: SocketAddr, mode: ContactMode, local: bool) -> OpValue {
        OpValue::Found(Some((
            NodeAddress::from(remote),
            NodeContactAddressData {
                mode,
                connected_time: self.now.unix_secs(),
                scopes: if local {
                    NodeAddressScopes::LOCAL
                } else {
                    NodeAddressScopes::GLOBAL
                },
            },
        )))
    }

    fn found_connected(&self, target: &NodeId) -> Option<OpValue> {
        let (_, conn) = self.conns.primary(target)?;
        Some(self.found(conn.remote, conn.mode, false))
    }

    fn seed_candidates(&mut self, op: &mut FindNode) {
        let k = self.config.k;
        let own = self.graph.own_node_id();
        let from_graph: Vec<(NodeId, Vec<NodeAddress>)> = self
            .graph
            .closest(&op.target, k)
            .into_iter()
            .map(|e| (e.node_id, addresses_of(&e.contact)))
            .collect();
        for (node_id, addresses) in from_graph {
            add_candidate(
                op,
                own,
                node_id,
                addresses,
                None,
                self.config.max_lookup_candidates,
            );
        }
        for peer in self.conns.closest_peers(&op.target, k) {
            add_candidate(
                op,
                own,
                peer,
                Vec::new(),
                None,
                self.config.max_lookup_candidates,
            );
        }
    }

    fn find_connected(
        &mut self,
        id: OpId,
        op: &mut FindNode,
        attempt: AttemptId,
        conn: super::ConnId,
        remote: SocketAddr,
    ) -> Option<Step> {
        let target = op.target;
        let distance = op.take_waiting(attempt.0)?;
        let candidate = op.candidates.get(&distance)?;
        let CandidateState::Dialing { via_signal, .. } = candidate.state else {
            return None;
        };
        if candidate.node_id == target {
            let mode = if via_signal {
                ContactMode::Signal
            } else {
                ContactMode::Direct
            };
            return Some(Step::Done(Ok(self.found(remote, mode, false))));
        }
        let request = self.send_request(id, conn, Request::ClosestNodes { target });
        op.set_state(&distance, CandidateState::Querying { request });
        None
    }

    fn find_connect_failed(&mut self, id: OpId, op: &mut FindNode, attempt: AttemptId) {
        let Some(distance) = op.take_waiting(attempt.0) else {
            return;
        };
        let Some(candidate) = op.candidates.get(&distance) else {
            return;
        };
        let CandidateState::Dialing {
            address,
            via_signal,
            ..
        } = candidate.state
        else {
            return;
        };
        // The next address (the first after a signalled dial) and a signal
        // if none was tried: the signal first unless that address is on
        // this host (see `find_advance`); then give up.
        let next_address = if via_signal { 0 } else { address + 1 };
        let on_this_host = candidate
            .addresses
            .get(next_address)
            .is_some_and(NodeAddress::is_loopback);
        let next = if on_this_host {
            match self.dial_direct(id, op, distance, next_address) {
                Some(state) => Some(state),
                None => self.start_signal(id, op, distance),
            }
        } else {
            match self.start_signal(id, op, distance) {
                Some(state) => Some(state),
                None => self.dial_direct(id, op, distance, next_address),
            }
        };
        match next {
            Some(state) => op.set_state(&distance, state),
            None => {
                op.set_state(&distance, CandidateState::Failed);
                op.in_flight = op.in_flight.saturating_sub(1);
            }
        }
    }

    /// Asks a connected signaller of the candidate at `distance` to signal it.
    fn start_signal(
        &mut self,
        id: OpId,
        op: &mut FindNode,
        distance: Distance,
    ) -> Option<CandidateState> {
        if !op.strategies.signal {
            return None;
        }
        let candidate = op.candidates.get_mut(&distance)?;
        if candidate.signalled {
            return None;
        }
        let (conn, _) = candidate
            .signallers
            .iter()
            .find_map(|s| self.conns.primary(s))?;
        candidate.signalled = true;
        let target = candidate.node_id;
        let request = self.send_request(id, conn, Request::Signal { target });
        Some(CandidateState::Signalling { request })
    }

    /// Dials the candidate at `distance` at its address number `address`,
    /// if the direct strategy is on and it has one. The first address is
    /// dialled once: not again after a signal.
    fn dial_direct(
        &mut self,
        id: OpId,
        op: &mut FindNode,
        distance: Distance,
        address: usize,
    ) -> Option<CandidateState> {
        if !op.strategies.direct {
            return None;
        }
        let candidate = op.candidates.get_mut(&distance)?;
        if address == 0 && candidate.dialled {
            return None;
        }
        let at = candidate.addresses.get(address)?.clone();
        candidate.dialled = true;
        let node_id = candidate.node_id;
        let attempt = self.dial(id, node_id, &at, ContactMode::Direct, op.connect_timeout);
        Some(CandidateState::Dialing {
            attempt,
            address,
            via_signal: false,
        })
    }

    fn find_response(
        &mut self,
        id: OpId,
        op: &mut FindNode,
        request: RequestId,
        result: Result<Response, super::RpcFailure>,
    ) -> Option<Step> {
        let distance = op.take_waiting(request.0)?;
        let candidate = op.candidates.get(&distance)?;
        let signalling = match candidate.state {
            CandidateState::Signalling { request: r } if r == request => true,
            CandidateState::Querying { request: r } if r == request => false,
            _ => return None,
        };
        let node_id = candidate.node_id;
        let next = match (signalling, result) {
            (true, Ok(Response::Signal { target_address })) => {
                // Punch from our side while the target punches from its side.
                self.commands.push_back(Command::HolePunch {
                    address: target_address,
                    timeout: op.connect_timeout,
                });
                let attempt = self.dial(
                    id,
                    node_id,
                    &NodeAddress::from(target_address),
                    ContactMode::Signal,
                    op.connect_timeout,
                );
                CandidateState::Dialing {
                    attempt,
                    address: 0,
                    via_signal: true,
                }
            }
            (false, Ok(Response::ClosestNodes { active, contacts })) => {
                self.queue_data_from_request(op, node_id, active, contacts);
                op.in_flight = op.in_flight.saturating_sub(1);
                CandidateState::Answered
            }
            // The signaller could not signal: dial the address we have.
            (true, _) => match self.dial_direct(id, op, distance, 0) {
                Some(state) => state,
                None => {
                    op.in_flight = op.in_flight.saturating_sub(1);
                    CandidateState::Failed
                }
            },
            _ => {
                op.in_flight = op.in_flight.saturating_sub(1);
                CandidateState::Failed
            }
        };
        op.set_state(&distance, next);
        None
    }

    /// Spec: `NodeManager.queueDataFromRequest`.
    ///
    /// Merges a contacted node's answer into the lookup's candidates: its
    /// graph's contacts (global addresses only) to dial directly, and the
    /// nodes it is connected to, which it can signal.
    fn queue_data_from_request(
        &mut self,
        op: &mut FindNode,
        responder: NodeId,
        active: Vec<NodeId>,
        contacts: Vec<(NodeId, NodeContact)>,
    ) {
        let own = self.graph.own_node_id();
        let max = self.config.max_lookup_candidates;
        let k = self.config.k;
        for (node_id, contact) in contacts.into_iter().take(k) {
            let global = addresses_where(&contact, |d| d.scopes.contains(NodeAddressScope::Global));
            add_candidate(op, own, node_id, global, None, max);
        }
        for node_id in active.into_iter().take(k) {
            add_candidate(op, own, node_id, Vec::new(), Some(responder), max);
        }
    }

    /// Starts attempts while there is room, then checks whether the lookup is over.
    fn find_advance(&mut self, id: OpId, op: &mut FindNode) -> Option<Step> {
        while op.in_flight < op.concurrency && op.contacted < op.limit {
            self.retarget_fill(op);
            let Some(distance) = op
                .candidates
                .iter()
                .find(|(_, c)| c.state == CandidateState::Waiting && self.reachable(op, c))
                .map(|(d, _)| *d)
            else {
                break;
            };
            op.contacted += 1;
            op.in_flight += 1;
            let Some(candidate) = op.candidates.get(&distance) else {
                break;
            };
            let node_id = candidate.node_id;
            let state = if let Some((conn, c)) = self.conns.primary(&node_id) {
                if node_id == op.target {
                    return Some(Step::Done(Ok(self.found(c.remote, c.mode, false))));
                }
                let request =
                    self.send_request(id, conn, Request::ClosestNodes { target: op.target });
                Some(CandidateState::Querying { request })
            } else if candidate
                .addresses
                .first()
                .is_some_and(NodeAddress::is_loopback)
                && let Some(dialling) = self.dial_direct(id, op, distance, 0)
            {
                // On this host: no NAT in between.
                Some(dialling)
            } else if let Some(signalling) = self.start_signal(id, op, distance) {
                // A node that can signal the candidate is asked first, before
                // any datagram goes to the candidate's address: behind a NAT
                // that tracks connections (Linux's does), the first datagram
                // to arrive from outside, before the candidate has sent
                // anything our way, is kept as a flow of its own for 30 s,
                // and the candidate's punch back then leaves from another
                // port. Signalled, both sides open their NATs at once. It
                // costs a round trip to the signaller and the punch's head
                // start (`NetConfig::punch_delay`) where no NAT was in the
                // way; a lookup cannot tell.
                Some(signalling)
            } else {
                self.dial_direct(id, op, distance, 0)
            };
            match state {
                Some(state) => op.set_state(&distance, state),
                // No attempt started after all: it is not in flight.
                None => {
                    op.set_state(&distance, CandidateState::Failed);
                    op.in_flight = op.in_flight.saturating_sub(1);
                }
            }
        }
        self.find_finished(op)
            .then_some(Step::Done(Ok(OpValue::Found(None))))
    }

    /// A refresh looks up a random NodeId in its bucket only to meet the
    /// nodes on the way: they become its contacts. Heading for one target,
    /// they all end up near it, in a few of the bucket's sub-ranges (see
    /// `Config::bucket_diversity_bits`), and lookups through a bucket that
    /// covers its range unevenly take more hops. So once the bucket holds
    /// its share of the target's sub-range, the lookup turns to a random
    /// NodeId in the emptiest sub-range, keeping what it learned.
    fn retarget_fill(&mut self, op: &mut FindNode) {
        let Some(bucket) = op.fill else {
            return;
        };
        let bits = self
            .config
            .bucket_diversity_bits
            .min(bucket.get())
            .min(crate::Config::MAX_DIVERSITY_BITS);
        if bits == 0 {
            return;
        }
        let own = self.graph.own_node_id();
        let share = u16::try_from(self.config.k.div_ceil(1 << bits)).unwrap_or(u16::MAX);
        let counts = crate::graph::sub_range_counts(&own, bucket, self.graph.bucket(bucket), bits);
        let current = own.distance(&op.target).bits_below(bucket, bits) as usize;
        if counts.get(current).copied().unwrap_or(0) < share {
            return;
        }
        let sub_ranges = counts.get(..1 << bits).unwrap_or(&[]);
        let fewest = sub_ranges.iter().copied().min().unwrap_or(0);
        if fewest >= share {
            // Evenly filled: nothing to turn to.
            op.fill = None;
            return;
        }
        // Among the emptiest sub-ranges, a random one.
        let emptiest: Vec<usize> = (0..sub_ranges.len())
            .filter(|&i| sub_ranges.get(i) == Some(&fewest))
            .collect();
        let pick = emptiest
            .get(self.rng.random_range(0..emptiest.len()))
            .copied()
            .unwrap_or(0);
        op.target = own.random_in_sub_range(bucket, bits, pick as u32, &mut self.rng);
        let target = op.target;
        op.candidates = std::mem::take(&mut op.candidates)
            .into_values()
            .map(|c| (target.distance(&c.node_id), c))
            .collect();
    }

    fn reachable(&self, op: &FindNode, c: &Candidate) -> bool {
        // The check without a table lookup first.
        (op.strategies.direct && !c.addresses.is_empty())
            || self.conns.is_connected(&c.node_id)
            || (op.strategies.signal && c.signallers.iter().any(|s| self.conns.is_connected(s)))
    }

    /// The Kademlia rule (the k closest live candidates have all answered),
    /// or nothing left to try.
    fn find_finished(&self, op: &FindNode) -> bool {
        let mdns_busy = matches!(op.mdns, MdnsPhase::Querying(_) | MdnsPhase::Dialing { .. });
        if mdns_busy {
            return false;
        }
        let mut live = op
            .candidates
            .values()
            .filter(|c| match c.state {
                CandidateState::Failed => false,
                CandidateState::Waiting => self.reachable(op, c),
                _ => true,
            })
            .take(self.config.k)
            .peekable();
        let kademlia = live.peek().is_some() && live.all(|c| c.state == CandidateState::Answered);
        let exhausted = op.in_flight == 0
            && (op.contacted >= op.limit
                || !op
                    .candidates
                    .values()
                    .any(|c| c.state == CandidateState::Waiting && self.reachable(op, c)));
        kademlia || exhausted
    }
}

/// The addresses of a contact, most recently connected first.
fn addresses_of(contact: &NodeContact) -> Vec<NodeAddress> {
    addresses_where(contact, |_| true)
}

/// The addresses of a contact whose data passes `keep`, most recently
/// connected first (ties in the contact's order).
fn addresses_where(
    contact: &NodeContact,
    keep: impl Fn(&NodeContactAddressData) -> bool,
) -> Vec<NodeAddress> {
    let mut addresses: Vec<NodeAddress> = contact
        .iter()
        .filter(|(_, d)| keep(d))
        .map(|(a, _)| a.clone())
        .collect();
    if addresses.len() > 1 {
        // At most five: looking each time up again costs less than a second list.
        let connected = |a: &NodeAddress| contact.get(a).map_or(0, |d| d.connected_time);
        addresses.sort_by_key(|a| std::cmp::Reverse(connected(a)));
    }
    addresses
}

/// Whether `addresses` fit a candidate as they are: at most
/// [`NodeContact::MAX_ADDRESSES`], none twice.
fn all_distinct_and_few(addresses: &[NodeAddress]) -> bool {
    addresses.len() <= NodeContact::MAX_ADDRESSES
        && addresses
            .iter()
            .enumerate()
            .all(|(i, a)| !addresses.iter().skip(i + 1).any(|b| b == a))
}

/// Adds a candidate or merges what is new about it; forgets the farthest
/// untried candidates beyond `max`.
fn add_candidate(
    op: &mut FindNode,
    own: NodeId,
    node_id: NodeId,
    addresses: Vec<NodeAddress>,
    signaller: Option<NodeId>,
    max: usize,
) {
    if node_id == own {
        return;
    }
    let distance = op.target.distance(&node_id);
    // A full list only takes nodes closer than its farthest: skip the
    // insert-then-forget of the rest (most of a late answer).
    if op.candidates.len() >= max
        && op
            .candidates
            .last_key_value()
            .is_some_and(|(farthest, _)| distance > *farthest)
    {
        return;
    }
    let candidate = op.candidates.entry(distance).or_insert_with(|| Candidate {
        node_id,
        addresses: Vec::new(),
        signallers: Vec::new(),
        state: CandidateState::Waiting,
        signalled: false,
        dialled: false,
    });
    if candidate.addresses.is_empty() && all_distinct_and_few(&addresses) {
        // What the merge below would build, without building it again.
        candidate.addresses = addresses;
    } else {
        for address in addresses {
            if candidate.addresses.len() < NodeContact::MAX_ADDRESSES
                && !candidate.addresses.contains(&address)
            {
                candidate.addresses.push(address);
            }
        }
    }
    if let Some(s) = signaller
        && s != node_id
        && candidate.signallers.len() < MAX_SIGNALLERS
        && !candidate.signallers.contains(&s)
    {
        candidate.signallers.push(s);
    }
    while op.candidates.len() > max {
        let farthest = op
            .candidates
            .iter()
            .rev()
            .find(|(_, c)| matches!(c.state, CandidateState::Waiting | CandidateState::Failed))
            .map(|(d, _)| *d);
        match farthest {
            Some(d) => {
                op.candidates.remove(&d);
            }
            None => break,
        }
    }
}
