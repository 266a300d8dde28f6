//! The lookup as a machine: `find_node`'s candidates, α, `limit`, the
//! Kademlia termination rule and the race of the direct, signal and mDNS
//! strategies, knowing nothing of the manager.
//!
//! It is told what happened ([`Lookup::on_connected`], [`Lookup::on_failed`],
//! [`Lookup::on_answer`], [`Lookup::on_mdns`], [`Lookup::on_deadline`]) and
//! says what to do next ([`Lookup::next`] returns a [`Next`]); the manager
//! (`find.rs`) turns a [`Next`] into a dial or a request and reports the id it
//! got back ([`Lookup::dialing`], [`Lookup::requested`],
//! [`Lookup::querying`]). Kept apart so that the rules can be read and tested
//! without connections, ids or timers of a whole node (the shape of
//! rust-libp2p's `kad/src/query/peers/closest.rs`).
//!
//! It reads the node's connections through [`Peers`] and, for a bucket
//! refresh's lookup, the routing table; randomness comes in from the caller.

mod candidates;
mod fill;
mod mdns;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use rand::Rng;

use crate::address::NodeAddress;
use crate::contact::{
    ContactMode, NodeAddressScope, NodeAddressScopes, NodeContact, NodeContactAddressData,
};
use crate::graph::NodeGraph;
use crate::id::NodeId;
use crate::ip_group::IpGroupLimits;
use crate::manager::api::{AttemptId, ConnId, OpId, RequestId};
use crate::manager::dials::RelayedVia;
use crate::time::Now;
pub(crate) use candidates::addresses_of;
use candidates::{Candidate, Candidates, PeerState, Wait, addresses_where};
pub(crate) use fill::Fill;
use fill::Turn;
use mdns::MdnsRace;

/// Which ways of reaching a node a lookup may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strategies {
    /// Connect straight to addresses learned from other nodes' graphs.
    pub direct: bool,
    /// Have a node connected to the target signal it to punch a hole.
    pub signal: bool,
    /// Ask the local network.
    pub mdns: bool,
    /// Go through a relay (a node connected to the target that relays)
    /// where neither a direct dial nor a punch gets through.
    pub relay: bool,
}

impl Strategies {
    /// All three, racing: `find_node`.
    pub const ALL: Self = Self {
        direct: true,
        signal: true,
        mdns: true,
        relay: true,
    };
    /// Direct only: `find_node_by_direct`.
    pub const DIRECT: Self = Self {
        direct: true,
        signal: false,
        mdns: false,
        relay: false,
    };
    /// Signal only: `find_node_by_signal`.
    pub const SIGNAL: Self = Self {
        direct: false,
        signal: true,
        mdns: false,
        relay: false,
    };
    /// mDNS only: `find_node_by_mdns`.
    pub const MDNS: Self = Self {
        direct: false,
        signal: false,
        mdns: true,
        relay: false,
    };
}

/// What a lookup reads of the node's connections.
pub(crate) trait Peers {
    /// The node's primary connection: its id, the remote address and how it
    /// was made.
    fn primary(&self, node: &NodeId) -> Option<(ConnId, SocketAddr, ContactMode)>;
    /// Whether some connection to the node is up.
    fn is_connected(&self, node: &NodeId) -> bool;
}

/// The fixed numbers of one lookup.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Params {
    /// Which ways of reaching a node it may use.
    pub(crate) strategies: Strategies,
    /// Whether the node has mDNS at all (the mDNS strategy needs it).
    pub(crate) mdns_available: bool,
    /// One connection attempt's timeout (and a hole punch's).
    pub(crate) connect_timeout: Duration,
    /// How long mDNS collects answers.
    pub(crate) mdns_timeout: Duration,
    /// α: candidates in flight at most (at least one).
    pub(crate) concurrency: usize,
    /// Candidates contacted at most.
    pub(crate) limit: usize,
    /// k: how many closest answered candidates end the lookup, and how
    /// many nodes of each answer are taken.
    pub(crate) k: usize,
    /// Candidates remembered at most.
    pub(crate) max_candidates: usize,
    /// How many candidates one network may give the lookup.
    pub(crate) ip_groups: IpGroupLimits,
    /// This node's mapping varies by destination (`NatClass::Symmetric`):
    /// it asks a relay first for every candidate (the target is always
    /// asked for first), and punches only towards one whose relay does not
    /// say its NAT is one punching cannot cross.
    pub(crate) own_symmetric: bool,
    /// An upgrade: the target is connected through a relay, and the lookup
    /// looks for another way (a relayed connection does not count as
    /// reaching it).
    pub(crate) upgrade: bool,
}

/// What an event asked for, carried out by the next [`Lookup::next`]
/// before any new candidate is started.
#[derive(Clone, Copy, Debug)]
enum FollowUp {
    /// Connected to a candidate that is not the target: ask it.
    Ask { node_id: NodeId, conn: ConnId },
    /// A dial failed: the next address or a signal.
    Retry {
        node_id: NodeId,
        next_address: usize,
    },
    /// A signal was delivered: punch, then dial where the signaller said.
    Punch {
        node_id: NodeId,
        address: SocketAddr,
    },
    /// The punch went out: dial.
    DialSignalled {
        node_id: NodeId,
        address: SocketAddr,
    },
    /// The signaller could not signal: dial the address we have.
    DialAfterSignal { node_id: NodeId },
    /// A way failed or a relay answered: through a relay now (a pair
    /// open, or the next relay to ask), else the next direct address.
    Relay {
        node_id: NodeId,
        next_address: usize,
    },
    /// A relay opened a pair, but the target's NAT may be punched: signal
    /// first (the relayed dial after, if the punch fails).
    SignalAfterRelay { node_id: NodeId },
}

/// What a candidate's action becomes once its id is known.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Dial {
        address: usize,
        via_signal: bool,
        via_relay: Option<SocketAddr>,
    },
    Signal,
    Relay {
        relay: NodeId,
    },
    Ask,
}

/// Why the lookup is over, before it is handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Over {
    /// The target was reached at `remote`; `local`: by mDNS.
    Reached {
        remote: SocketAddr,
        mode: ContactMode,
        local: bool,
    },
    Timeout,
}

/// How a lookup ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Connected to the target, at this address.
    Found(NodeAddress, NodeContactAddressData),
    /// Not found: the k closest candidates answered without it, `limit`
    /// were contacted, or no candidate is left.
    NotFound,
    /// The deadline passed.
    Timeout,
}

/// What the lookup wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Connect to `node_id` at `address`; report the attempt with [`Lookup::dialing`].
    Dial {
        node_id: NodeId,
        address: NodeAddress,
        mode: ContactMode,
        timeout: Duration,
    },
    /// Ask the node on `conn` to signal `target`; report the request with
    /// [`Lookup::requested`].
    Signal { conn: ConnId, target: NodeId },
    /// Ask the node on `conn` for its closest nodes to `target`; report the
    /// request with [`Lookup::requested`].
    Ask { conn: ConnId, target: NodeId },
    /// Ask the node on `conn` to relay to `target`; report the request
    /// with [`Lookup::requested`].
    RelayOpen { conn: ConnId, target: NodeId },
    /// Connect to `node_id` through the relay on `via`, as `relayed`
    /// says. Report the attempt with [`Lookup::dialing`].
    DialRelayed {
        node_id: NodeId,
        via: ConnId,
        relayed: RelayedVia,
        timeout: Duration,
    },
    /// Punch a hole towards `address` (nothing to report; a [`Next::Dial`] follows).
    Punch {
        address: SocketAddr,
        timeout: Duration,
    },
    /// Ask the local network for `node_id` for `timeout`; report the query
    /// with [`Lookup::querying`].
    QueryMdns { node_id: NodeId, timeout: Duration },
    /// Nothing to do until the next event.
    Wait,
    /// The lookup is over.
    Done(Outcome),
}

/// An answer to one of the lookup's requests.
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// The signaller signalled the target, which punches towards us from
    /// `target_address`.
    Signalled(SocketAddr),
    /// A candidate's closest nodes: those it is connected to (`active`) and
    /// its graph's contacts.
    Closest {
        active: Vec<NodeId>,
        contacts: Vec<(NodeId, NodeContact)>,
    },
    /// A relay opened a pair to the target, seen at `target_address`, whose
    /// NAT class is `target_class` if it told the relay.
    RelayOpened {
        target_address: SocketAddr,
        target_class: Option<crate::nat::NatClass>,
    },
    /// An error, a timeout, or an answer of the wrong kind.
    Failed,
}

/// A lookup in progress.
#[derive(Debug)]
pub(crate) struct Lookup {
    params: Params,
    candidates: Candidates,
    in_flight: usize,
    contacted: usize,
    mdns: MdnsRace,
    fill: Option<Fill>,
    follow_up: Option<FollowUp>,
    /// The candidate whose [`Next`] was handed out, its id not reported yet.
    starting: Option<(NodeId, Pending)>,
    over: Option<Over>,
    /// When it started, for the lookup-duration metric only.
    pub(crate) started: Option<std::time::Instant>,
}

impl Lookup {
    /// A lookup of `target`; with `fill`, a bucket refresh's lookup that
    /// spreads its contacts over the bucket's sub-ranges.
    pub(crate) fn new(target: NodeId, params: Params, fill: Option<Fill>) -> Self {
        Self {
            params: Params {
                concurrency: params.concurrency.max(1),
                ..params
            },
            candidates: Candidates::new(target, params.max_candidates, params.ip_groups),
            in_flight: 0,
            contacted: 0,
            mdns: MdnsRace::new(params.strategies.mdns && params.mdns_available),
            fill,
            follow_up: None,
            starting: None,
            over: None,
            started: None,
        }
    }

    /// Whether it is a relayed connection's upgrade (see [`Params::upgrade`]).
    pub(crate) fn is_upgrade(&self) -> bool {
        self.params.upgrade
    }

    /// How many nodes it has contacted (asked, or dialled for).
    pub(crate) fn contacted(&self) -> usize {
        self.contacted
    }

    /// The NodeId looked for now (a bucket refresh's lookup turns to other targets).
    pub(crate) fn target(&self) -> NodeId {
        self.candidates.target()
    }

    /// The lookup starts. If the target is connected already it is over
    /// (`next` says so); otherwise it wants its first candidates
    /// ([`Lookup::offer`]) and returns `true`.
    pub(crate) fn on_start(&mut self, peers: &impl Peers) -> bool {
        match self.reached(peers, &self.candidates.target()) {
            Some((_, remote, mode)) => {
                self.over = Some(Over::Reached {
                    remote,
                    mode,
                    local: false,
                });
                false
            }
            None => true,
        }
    }

    /// The deadline passed: the lookup is over.
    pub(crate) fn on_deadline(&mut self) {
        self.over = Some(Over::Timeout);
    }

    /// Attempt `attempt` connected, as `conn`, to `remote`.
    pub(crate) fn on_connected(&mut self, attempt: AttemptId, conn: ConnId, remote: SocketAddr) {
        if self.mdns.dials(attempt) {
            self.over = Some(Over::Reached {
                remote,
                mode: ContactMode::Direct,
                local: true,
            });
            return;
        }
        let Some(node_id) = self.candidates.take_waiting(Wait::Attempt(attempt)) else {
            return;
        };
        let Some(candidate) = self.candidates.get(&node_id) else {
            return;
        };
        let PeerState::Dialing {
            via_signal,
            via_relay,
            ..
        } = candidate.state
        else {
            return;
        };
        if node_id == self.candidates.target() {
            let (mode, remote) = match via_relay {
                // Reported where the relay sees it: the mapped address
                // means nothing outside this node.
                Some(seen_at) => (ContactMode::Relay, seen_at),
                None if via_signal => (ContactMode::Signal, remote),
                None => (ContactMode::Direct, remote),
            };
            self.over = Some(Over::Reached {
                remote,
                mode,
                local: false,
            });
            return;
        }
        self.follow_up = Some(FollowUp::Ask { node_id, conn });
    }

    /// Attempt `attempt` failed.
    pub(crate) fn on_failed(&mut self, attempt: AttemptId) {
        if self.mdns.on_failed(attempt) {
            return;
        }
        let Some(node_id) = self.candidates.take_waiting(Wait::Attempt(attempt)) else {
            return;
        };
        let Some(candidate) = self.candidates.get(&node_id) else {
            return;
        };
        let PeerState::Dialing {
            address,
            via_signal,
            via_relay,
            ..
        } = candidate.state
        else {
            return;
        };
        self.follow_up = Some(if via_signal || via_relay.is_some() {
            // A punch or a relay failed: a relay (another one), then the
            // first address we have.
            FollowUp::Relay {
                node_id,
                next_address: 0,
            }
        } else {
            FollowUp::Retry {
                node_id,
                next_address: address + 1,
            }
        });
    }

    /// Request `request` was answered (or failed). `own` is this node's
    /// NodeId now: never a candidate.
    pub(crate) fn on_answer(&mut self, request: RequestId, answer: Answer, own: NodeId) {
        let Some(node_id) = self.candidates.take_waiting(Wait::Request(request)) else {
            return;
        };
        let Some(candidate) = self.candidates.get(&node_id) else {
            return;
        };
        if let PeerState::Relaying { request: r, relay } = candidate.state
            && r == request
        {
            return self.on_relay_answer(node_id, relay, answer);
        }
        let signalling = match candidate.state {
            PeerState::Signalling { request: r } if r == request => true,
            PeerState::Querying { request: r } if r == request => false,
            _ => return,
        };
        match (signalling, answer) {
            (true, Answer::Signalled(address)) => {
                // Punch from our side while the target punches from its side.
                self.follow_up = Some(FollowUp::Punch { node_id, address });
            }
            (false, Answer::Closest { active, contacts }) => {
                self.queue_data_from_request(own, node_id, active, contacts);
                self.in_flight = self.in_flight.saturating_sub(1);
                self.candidates.set_state(&node_id, PeerState::Answered);
            }
            (true, _) => self.follow_up = Some(FollowUp::DialAfterSignal { node_id }),
            (false, _) => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.candidates.set_state(&node_id, PeerState::Failed);
            }
        }
    }

    /// A relay's answer about a pair to candidate `node_id`.
    fn on_relay_answer(&mut self, node_id: NodeId, relay: NodeId, answer: Answer) {
        let Answer::RelayOpened {
            target_address,
            target_class,
        } = answer
        else {
            // Refused or failed: the next relay, or the rest.
            self.follow_up = Some(FollowUp::Relay {
                node_id,
                next_address: 0,
            });
            return;
        };
        use crate::nat::NatClass;
        // A target whose NAT maps each destination to a new port is never
        // punched: what we punch towards is its mapping for the relay. From
        // a symmetric node, a cone target is not either: its NAT (Linux's,
        // most home routers') lets in only the port it sent to, and ours
        // sends from a new one. The classes of the two sides pick the way
        // (hyperdht does the same); where one is unknown, the punch is tried.
        let punchable = match target_class {
            Some(NatClass::Symmetric) => false,
            Some(NatClass::Cone) => !self.params.own_symmetric,
            _ => true,
        };
        let signalled = self.candidates.get(&node_id).is_some_and(|c| c.signalled);
        if let Some(c) = self.candidates.get_mut(&node_id) {
            c.relay_ready = Some(RelayedVia {
                relay,
                seen_at: target_address,
                class: target_class,
            });
        }
        self.follow_up = Some(
            if punchable && !signalled && self.params.strategies.signal {
                FollowUp::SignalAfterRelay { node_id }
            } else {
                FollowUp::Relay {
                    node_id,
                    next_address: 0,
                }
            },
        );
    }

    /// The mDNS query `query` ended with `addresses` (none if it failed).
    pub(crate) fn on_mdns(&mut self, query: OpId, addresses: Vec<SocketAddr>) {
        self.mdns.on_answers(query, addresses);
    }

    /// The attempt for the last [`Next::Dial`].
    pub(crate) fn dialing(&mut self, attempt: AttemptId) {
        match self.starting.take() {
            Some((
                node_id,
                Pending::Dial {
                    address,
                    via_signal,
                    via_relay,
                },
            )) => self.candidates.set_state(
                &node_id,
                PeerState::Dialing {
                    attempt,
                    address,
                    via_signal,
                    via_relay,
                },
            ),
            None if self.mdns.dialing(attempt) => {}
            other => debug_assert!(false, "an attempt reported for {other:?}"),
        }
    }

    /// The request for the last [`Next::Signal`] or [`Next::Ask`].
    pub(crate) fn requested(&mut self, request: RequestId) {
        match self.starting.take() {
            Some((node_id, Pending::Signal)) => {
                self.candidates
                    .set_state(&node_id, PeerState::Signalling { request });
            }
            Some((node_id, Pending::Ask)) => {
                self.candidates
                    .set_state(&node_id, PeerState::Querying { request });
            }
            Some((node_id, Pending::Relay { relay })) => {
                self.candidates
                    .set_state(&node_id, PeerState::Relaying { request, relay });
            }
            other => debug_assert!(false, "a request reported for {other:?}"),
        }
    }

    /// The query for the last [`Next::QueryMdns`]; `None` if it could not
    /// start (the lookup goes on without mDNS).
    pub(crate) fn querying(&mut self, query: Option<OpId>) {
        let asked = self.mdns.querying(query);
        debug_assert!(asked, "a query reported, none asked");
    }

    /// What to do next. Call it after every event until it says
    /// [`Next::Wait`] or [`Next::Done`], reporting each dial's, request's and
    /// query's id before the next call. `graph` and `rng` serve a bucket
    /// refresh's retargeting.
    pub(crate) fn next<R: Rng + ?Sized>(
        &mut self,
        now: Now,
        peers: &impl Peers,
        graph: &NodeGraph,
        rng: &mut R,
    ) -> Next {
        debug_assert!(self.starting.is_none(), "an id was not reported");
        if let Some(over) = self.over {
            return Next::Done(match over {
                Over::Reached {
                    remote,
                    mode,
                    local,
                } => found(now, remote, mode, local),
                Over::Timeout => Outcome::Timeout,
            });
        }
        if let Some(next) = self.mdns.next(
            self.candidates.target(),
            self.params.connect_timeout,
            self.params.mdns_timeout,
        ) {
            return next;
        }
        if let Some(next) = self.next_follow_up(peers) {
            return next;
        }
        while self.in_flight < self.params.concurrency && self.contacted < self.params.limit {
            self.retarget_fill(graph, rng);
            let Some(node_id) = self
                .candidates
                .iter()
                .find(|c| c.state == PeerState::Waiting && self.reachable(c, peers))
                .map(|c| c.node_id)
            else {
                break;
            };
            self.contacted += 1;
            self.in_flight += 1;
            if let Some(next) = self.start_candidate(now, node_id, peers) {
                return next;
            }
            // No attempt started after all: it is not in flight.
            self.candidates.set_state(&node_id, PeerState::Failed);
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        if self.finished(peers) {
            Next::Done(Outcome::NotFound)
        } else {
            Next::Wait
        }
    }

    /// Carries out what the last event asked for.
    fn next_follow_up(&mut self, peers: &impl Peers) -> Option<Next> {
        let (node_id, started) = match self.follow_up.take()? {
            FollowUp::Ask { node_id, conn } => {
                self.starting = Some((node_id, Pending::Ask));
                return Some(Next::Ask {
                    conn,
                    target: self.candidates.target(),
                });
            }
            FollowUp::Punch { node_id, address } => {
                self.follow_up = Some(FollowUp::DialSignalled { node_id, address });
                return Some(Next::Punch {
                    address,
                    timeout: self.params.connect_timeout,
                });
            }
            FollowUp::DialSignalled { node_id, address } => {
                self.starting = Some((
                    node_id,
                    Pending::Dial {
                        address: 0,
                        via_signal: true,
                        via_relay: None,
                    },
                ));
                return Some(Next::Dial {
                    node_id,
                    address: NodeAddress::from(address),
                    mode: ContactMode::Signal,
                    timeout: self.params.connect_timeout,
                });
            }
            FollowUp::Retry {
                node_id,
                next_address,
            } => (node_id, self.retry(node_id, next_address, peers)),
            FollowUp::DialAfterSignal { node_id } => (
                node_id,
                self.dial_direct(&node_id, 0)
                    .or_else(|| self.start_relay(&node_id, peers)),
            ),
            FollowUp::Relay {
                node_id,
                next_address,
            } => (
                node_id,
                self.start_relay(&node_id, peers)
                    .or_else(|| self.retry(node_id, next_address, peers)),
            ),
            FollowUp::SignalAfterRelay { node_id } => (
                node_id,
                self.start_signal(&node_id, peers)
                    .or_else(|| self.start_relay(&node_id, peers)),
            ),
        };
        if started.is_none() {
            self.candidates.set_state(&node_id, PeerState::Failed);
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        started
    }

    /// After a failed dial: the next address and a signal if none was
    /// tried, the signal first unless that address is on this host (see
    /// [`Lookup::start_candidate`]).
    fn retry(&mut self, node_id: NodeId, next_address: usize, peers: &impl Peers) -> Option<Next> {
        let on_this_host = self
            .candidates
            .get(&node_id)?
            .addresses
            .get(next_address)
            .is_some_and(NodeAddress::is_loopback);
        if on_this_host {
            self.dial_direct(&node_id, next_address)
                .or_else(|| self.start_signal(&node_id, peers))
        } else {
            self.start_signal(&node_id, peers)
                .or_else(|| self.dial_direct(&node_id, next_address))
        }
        .or_else(|| self.start_relay(&node_id, peers))
    }

    /// The first contact of a new candidate; `None` if no way to it works.
    /// A connection that reaches `node`: its primary one, unless this is an
    /// upgrade and that one is relayed.
    fn reached(
        &self,
        peers: &impl Peers,
        node: &NodeId,
    ) -> Option<(ConnId, SocketAddr, ContactMode)> {
        peers
            .primary(node)
            .filter(|(_, _, mode)| !(self.params.upgrade && *mode == ContactMode::Relay))
    }

    fn start_candidate(&mut self, now: Now, node_id: NodeId, peers: &impl Peers) -> Option<Next> {
        if let Some((conn, remote, mode)) = self.reached(peers, &node_id) {
            if node_id == self.candidates.target() {
                return Some(Next::Done(found(now, remote, mode, false)));
            }
            self.starting = Some((node_id, Pending::Ask));
            return Some(Next::Ask {
                conn,
                target: self.candidates.target(),
            });
        }
        let on_this_host = self
            .candidates
            .get(&node_id)?
            .addresses
            .first()
            .is_some_and(NodeAddress::is_loopback);
        if on_this_host && let Some(dialling) = self.dial_direct(&node_id, 0) {
            // On this host: no NAT in between.
            return Some(dialling);
        }
        // A node that can signal the candidate is asked first, before any
        // datagram goes to the candidate's address: behind a NAT that
        // tracks connections (Linux's does), the first datagram to arrive
        // from outside, before the candidate has sent anything our way, is
        // kept as a flow of its own for 30 s, and the candidate's punch back
        // then leaves from another port. Signalled, both sides open their
        // NATs at once. It costs a round trip to the signaller and the
        // punch's head start (`NetConfig::punch_delay`) where no NAT was in
        // the way; a lookup cannot tell.
        // A relay first, for the target's NAT class (a reserved node told
        // its relay): the punch is tried only where it can work (see
        // `on_relay_answer`), and otherwise the pair is open already. For
        // a symmetric node, also for a candidate known only as some node's
        // connection (no address of its own in any graph: most likely
        // behind a NAT), since its punch leaves from a port no candidate
        // sees; a candidate with an address is dialled as it is, and
        // relayed only if that fails (a pair at a relay is a bounded
        // share of it: `RelayConfig::max_pairs_per_node`).
        let addressless = self
            .candidates
            .get(&node_id)
            .is_some_and(|c| c.addresses.is_empty());
        if (node_id == self.candidates.target() || (self.params.own_symmetric && addressless))
            && let Some(relaying) = self.start_relay(&node_id, peers)
        {
            return Some(relaying);
        }
        self.start_signal(&node_id, peers)
            .or_else(|| self.dial_direct(&node_id, 0))
    }

    /// Through a relay: a dial through the relay that opened a pair to
    /// candidate `node_id`, or a request to the next of its signallers
    /// to open one.
    fn start_relay(&mut self, node_id: &NodeId, peers: &impl Peers) -> Option<Next> {
        if !self.params.strategies.relay {
            return None;
        }
        let timeout = self.params.connect_timeout;
        let candidate = self.candidates.get_mut(node_id)?;
        if candidate
            .addresses
            .first()
            .is_some_and(NodeAddress::is_loopback)
        {
            // On this host: no NAT in between for a relay to get round.
            return None;
        }
        let target = candidate.node_id;
        if let Some(relayed) = candidate.relay_ready.take()
            && let Some((via, _, _)) = peers.primary(&relayed.relay)
        {
            self.starting = Some((
                target,
                Pending::Dial {
                    address: 0,
                    via_signal: false,
                    via_relay: Some(relayed.seen_at),
                },
            ));
            return Some(Next::DialRelayed {
                node_id: target,
                via,
                relayed,
                timeout,
            });
        }
        while let Some(relay) = candidate.signallers.get(candidate.relays_asked).copied() {
            candidate.relays_asked += 1;
            if let Some((conn, _, mode)) = peers.primary(&relay)
                && mode != ContactMode::Relay
            {
                self.starting = Some((target, Pending::Relay { relay }));
                return Some(Next::RelayOpen { conn, target });
            }
        }
        None
    }

    /// Asks a connected signaller of candidate `node_id` to signal it.
    fn start_signal(&mut self, node_id: &NodeId, peers: &impl Peers) -> Option<Next> {
        if !self.params.strategies.signal {
            return None;
        }
        let candidate = self.candidates.get_mut(node_id)?;
        if candidate.signalled {
            return None;
        }
        let (conn, _, _) = candidate.signallers.iter().find_map(|s| peers.primary(s))?;
        candidate.signalled = true;
        let target = candidate.node_id;
        self.starting = Some((target, Pending::Signal));
        Some(Next::Signal { conn, target })
    }

    /// Dials candidate `node_id` at its address number `address`,
    /// if the direct strategy is on and it has one. The first address is
    /// dialled once: not again after a signal.
    fn dial_direct(&mut self, node_id: &NodeId, address: usize) -> Option<Next> {
        if !self.params.strategies.direct {
            return None;
        }
        let candidate = self.candidates.get_mut(node_id)?;
        if address == 0 && candidate.dialled {
            return None;
        }
        let at = candidate.addresses.get(address)?.clone();
        candidate.dialled = true;
        let node_id = candidate.node_id;
        self.starting = Some((
            node_id,
            Pending::Dial {
                address,
                via_signal: false,
                via_relay: None,
            },
        ));
        Some(Next::Dial {
            node_id,
            address: at,
            mode: ContactMode::Direct,
            timeout: self.params.connect_timeout,
        })
    }

    /// Spec: `NodeManager.queueDataFromRequest`.
    ///
    /// Merges a contacted node's answer into the lookup's candidates: its
    /// graph's contacts (global addresses only) to dial directly, and the
    /// nodes it is connected to, which it can signal.
    fn queue_data_from_request(
        &mut self,
        own: NodeId,
        responder: NodeId,
        active: Vec<NodeId>,
        contacts: Vec<(NodeId, NodeContact)>,
    ) {
        let k = self.params.k;
        for (node_id, contact) in contacts.into_iter().take(k) {
            let global = addresses_where(&contact, |d| d.scopes.contains(NodeAddressScope::Global));
            self.candidates.offer(own, node_id, global, None);
        }
        for node_id in active.into_iter().take(k) {
            self.candidates
                .offer(own, node_id, Vec::new(), Some(responder));
        }
    }

    /// Adds a candidate (never `own`, this node) or merges what is new about
    /// it: addresses to dial, a node that can signal it.
    #[inline]
    pub(crate) fn offer(
        &mut self,
        own: NodeId,
        node_id: NodeId,
        addresses: Vec<NodeAddress>,
        signaller: Option<NodeId>,
    ) {
        self.candidates.offer(own, node_id, addresses, signaller);
    }

    /// A bucket refresh's lookup turns to another target once the bucket
    /// holds its share of the current one's sub-range (see [`Fill`]).
    fn retarget_fill<R: Rng + ?Sized>(&mut self, graph: &NodeGraph, rng: &mut R) {
        let Some(fill) = self.fill else {
            return;
        };
        match fill.turn(&self.candidates.target(), graph, rng) {
            Turn::Stay => {}
            Turn::Even => self.fill = None,
            Turn::To(target) => self.candidates.retarget(target),
        }
    }

    fn reachable(&self, c: &Candidate, peers: &impl Peers) -> bool {
        let strategies = self.params.strategies;
        // The check without a table lookup first.
        (strategies.direct && !c.addresses.is_empty())
            || peers.is_connected(&c.node_id)
            || (strategies.signal && c.signallers.iter().any(|s| peers.is_connected(s)))
    }

    /// The Kademlia rule (the k closest live candidates have all answered),
    /// or nothing left to try.
    fn finished(&self, peers: &impl Peers) -> bool {
        if self.mdns.busy() {
            return false;
        }
        let mut live = self
            .candidates
            .iter()
            .filter(|c| match c.state {
                PeerState::Failed => false,
                PeerState::Waiting => self.reachable(c, peers),
                _ => true,
            })
            .take(self.params.k)
            .peekable();
        let kademlia = live.peek().is_some() && live.all(|c| c.state == PeerState::Answered);
        let exhausted = self.in_flight == 0
            && (self.contacted >= self.params.limit
                || !self
                    .candidates
                    .iter()
                    .any(|c| c.state == PeerState::Waiting && self.reachable(c, peers)));
        kademlia || exhausted
    }
}

/// The result for a node reached at `remote` (`local`: by mDNS).
fn found(now: Now, remote: SocketAddr, mode: ContactMode, local: bool) -> Outcome {
    Outcome::Found(
        NodeAddress::from(remote),
        NodeContactAddressData {
            mode,
            connected_time: now.unix_secs(),
            scopes: if local {
                NodeAddressScopes::LOCAL
            } else {
                NodeAddressScopes::GLOBAL
            },
        },
    )
}
