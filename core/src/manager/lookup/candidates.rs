//! A lookup's candidates: the nodes met so far, ordered by distance to the
//! target, each with where it stands, and which candidate each attempt or
//! request in flight belongs to.
//!
//! Kept apart from the lookup's rules because it is the bookkeeping those
//! rules read: merging what answers say about a node, forgetting the
//! farthest untried nodes past the bound, and turning to another target
//! without losing what was learned.
//!
//! The IP-group limit holds here as in the routing table: at most
//! `IpGroupLimits::per_bucket` candidates list an address in one network
//! (/24 or /48; loopback exempt by default). An address of a network that
//! holds its share is not taken, and a new node offered with addresses
//! that are all refused (and no node to signal it) is not taken at all:
//! one host answering with many fresh NodeIds at its own address cannot
//! fill a lookup.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::address::NodeAddress;
use crate::contact::{NodeContact, NodeContactAddressData};
use crate::id::{Distance, NodeId};
use crate::ip_group::{IpGroup, IpGroupLimits, distinct_groups};
use crate::manager::api::{AttemptId, RequestId};

/// What a candidate waits for: an attempt or a request, by its own id type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    Attempt(AttemptId),
    Request(RequestId),
}

/// Where a candidate stands, with the data of that state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PeerState {
    /// Not contacted yet.
    Waiting,
    /// Being connected to: at its address number `address`, or, after a
    /// signal, at the address the signaller gave.
    Dialing {
        attempt: AttemptId,
        address: usize,
        via_signal: bool,
        /// Through a relay: the candidate's address as the relay sees it.
        via_relay: Option<SocketAddr>,
    },
    /// A node connected to it was asked to signal it.
    Signalling { request: RequestId },
    /// A node connected to it (`relay`) was asked to relay to it.
    Relaying { request: RequestId, relay: NodeId },
    /// Connected and asked for its closest nodes.
    Querying { request: RequestId },
    /// It gave its closest nodes.
    Answered,
    /// Unreachable: every way was tried.
    Failed,
}

impl PeerState {
    /// The attempt or request this state waits for.
    fn waits_for(&self) -> Option<Wait> {
        match self {
            Self::Dialing { attempt, .. } => Some(Wait::Attempt(*attempt)),
            Self::Signalling { request }
            | Self::Querying { request }
            | Self::Relaying { request, .. } => Some(Wait::Request(*request)),
            Self::Waiting | Self::Answered | Self::Failed => None,
        }
    }
}

/// A node the lookup may contact.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub(super) node_id: NodeId,
    /// Where to dial it, best first; at most [`NodeContact::MAX_ADDRESSES`].
    pub(super) addresses: Vec<NodeAddress>,
    /// Nodes that said they are connected to it: they can signal it.
    pub(super) signallers: Vec<NodeId>,
    pub(super) state: PeerState,
    /// A signal was tried: not again after a direct dial fails.
    pub(super) signalled: bool,
    /// A direct dial was tried: not again after a signalled one fails.
    pub(super) dialled: bool,
    /// How many of `signallers` were asked to relay to it.
    pub(super) relays_asked: usize,
    /// A relay that opened a pair to it, and its address as that relay
    /// sees it: the next relayed dial's.
    pub(super) relay_ready: Option<crate::manager::dials::RelayedVia>,
}

/// The most nodes remembered as able to signal one candidate. More than
/// the few a punch needs: a target behind a NAT no punch crosses is
/// reached only through a signaller that relays (a public one, connected
/// to it directly), and the first to answer are often behind NATs too.
const MAX_SIGNALLERS: usize = 8;

/// The candidates of one lookup, closest to its target first.
#[derive(Debug)]
pub(super) struct Candidates {
    target: NodeId,
    by_distance: BTreeMap<Distance, Candidate>,
    /// Which candidate each attempt or request in flight belongs to, so an
    /// answer finds its candidate without a scan of the list.
    waiting_on: Vec<(Wait, NodeId)>,
    /// Candidates remembered at most.
    max: usize,
    limits: IpGroupLimits,
    /// Candidates per network (each once per network among its addresses).
    group_counts: BTreeMap<IpGroup, u16>,
}

impl Candidates {
    pub(super) fn new(target: NodeId, max: usize, limits: IpGroupLimits) -> Self {
        Self {
            target,
            by_distance: BTreeMap::new(),
            waiting_on: Vec::new(),
            max,
            limits,
            group_counts: BTreeMap::new(),
        }
    }

    fn groups_of(&self, addresses: &[NodeAddress]) -> Vec<IpGroup> {
        distinct_groups(&self.limits, addresses.iter().map(|a| (a, None)))
    }

    fn count(&mut self, groups: &[IpGroup], add: bool) {
        for g in groups {
            let c = self.group_counts.entry(*g).or_insert(0);
            *c = if add {
                c.saturating_add(1)
            } else {
                c.saturating_sub(1)
            };
            if *c == 0 {
                self.group_counts.remove(g);
            }
        }
    }

    /// The NodeId the candidates are ordered by.
    pub(super) fn target(&self) -> NodeId {
        self.target
    }

    /// The candidates, closest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Candidate> {
        self.by_distance.values()
    }

    pub(super) fn get(&self, node_id: &NodeId) -> Option<&Candidate> {
        self.by_distance.get(&self.target.distance(node_id))
    }

    pub(super) fn get_mut(&mut self, node_id: &NodeId) -> Option<&mut Candidate> {
        self.by_distance.get_mut(&self.target.distance(node_id))
    }

    /// Sets the state of candidate `node_id`, noting the attempt or request
    /// it now waits for.
    pub(super) fn set_state(&mut self, node_id: &NodeId, state: PeerState) {
        if let Some(c) = self.by_distance.get_mut(&self.target.distance(node_id)) {
            if let Some(wait) = state.waits_for() {
                self.waiting_on.push((wait, c.node_id));
            }
            c.state = state;
        }
    }

    /// The candidate waiting for `wait`, forgetting the wait.
    pub(super) fn take_waiting(&mut self, wait: Wait) -> Option<NodeId> {
        let i = self.waiting_on.iter().position(|(w, _)| *w == wait)?;
        let (_, node_id) = self.waiting_on.swap_remove(i);
        Some(node_id)
    }

    /// Orders the candidates by their distance to `target` from now on.
    pub(super) fn retarget(&mut self, target: NodeId) {
        self.target = target;
        self.by_distance = std::mem::take(&mut self.by_distance)
            .into_values()
            .map(|c| (target.distance(&c.node_id), c))
            .collect();
    }

    /// Adds a candidate (never `own`, this node) or merges what is new about
    /// it: addresses to dial, a node that can signal it. Forgets the
    /// farthest untried candidates beyond the most remembered.
    pub(super) fn offer(
        &mut self,
        own: NodeId,
        node_id: NodeId,
        addresses: Vec<NodeAddress>,
        signaller: Option<NodeId>,
    ) {
        if node_id == own {
            return;
        }
        let distance = self.target.distance(&node_id);
        // A full list only takes nodes closer than its farthest: skip the
        // insert-then-forget of the rest (most of a late answer).
        if self.by_distance.len() >= self.max
            && self
                .by_distance
                .last_key_value()
                .is_some_and(|(farthest, _)| distance > *farthest)
        {
            return;
        }
        // The IP-group limit: keep the addresses of networks this node is
        // counted in already, or that have room.
        let had = self
            .by_distance
            .get(&distance)
            .map(|c| self.groups_of(&c.addresses));
        let offered = !addresses.is_empty();
        let mut taken_groups: Vec<IpGroup> = Vec::new();
        let addresses: Vec<NodeAddress> = addresses
            .into_iter()
            .filter(|a| match self.limits.group_of(a, None) {
                None => true,
                Some(g) => {
                    if had.as_ref().is_some_and(|h| h.contains(&g)) || taken_groups.contains(&g) {
                        return true;
                    }
                    let room = self
                        .group_counts
                        .get(&g)
                        .is_none_or(|c| usize::from(*c) < self.limits.per_bucket);
                    if room {
                        taken_groups.push(g);
                    }
                    room
                }
            })
            .collect();
        if had.is_none() && offered && addresses.is_empty() && signaller.is_none() {
            return;
        }
        let had = had.unwrap_or_default();
        let candidate = self
            .by_distance
            .entry(distance)
            .or_insert_with(|| Candidate {
                node_id,
                addresses: Vec::new(),
                signallers: Vec::new(),
                state: PeerState::Waiting,
                signalled: false,
                dialled: false,
                relays_asked: 0,
                relay_ready: None,
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
            // The target, every way to it failed so far, is tried again
            // through the node that says it is connected to it now.
            if node_id == self.target && candidate.state == PeerState::Failed {
                candidate.state = PeerState::Waiting;
            }
        }
        let now_in = distinct_groups(&self.limits, candidate.addresses.iter().map(|a| (a, None)));
        let new_groups: Vec<IpGroup> = now_in.into_iter().filter(|g| !had.contains(g)).collect();
        self.count(&new_groups, true);
        while self.by_distance.len() > self.max {
            let farthest = self
                .by_distance
                .iter()
                .rev()
                .find(|(_, c)| matches!(c.state, PeerState::Waiting | PeerState::Failed))
                .map(|(d, _)| *d);
            match farthest {
                Some(d) => {
                    if let Some(gone) = self.by_distance.remove(&d) {
                        let groups = self.groups_of(&gone.addresses);
                        self.count(&groups, false);
                    }
                }
                None => break,
            }
        }
    }
}

/// The addresses of a contact, most recently connected first.
pub(crate) fn addresses_of(contact: &NodeContact) -> Vec<NodeAddress> {
    addresses_where(contact, |_| true)
}

/// The addresses of a contact whose data passes `keep`, most recently
/// connected first (ties in the contact's order).
pub(super) fn addresses_where(
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
