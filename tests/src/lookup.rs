//! Measuring lookups from the outside: hops and requests.
//!
//! **Hops** are the length of the longest chain of sequential requests that
//! led to the target. A node the finder knew when the lookup started (a
//! contact among its k closest to the target, or a node it was connected
//! to) has depth 0. A `ClosestNodes` request to a node of depth d has depth
//! d + 1, and every node its answer names for the first time gets that
//! depth. The hops of a successful lookup are the depth of the target: 0 if
//! the finder knew it, 1 if a node it knew named it, and so on. The first
//! answer that names a node is the one the lookup acts on, so the chain is
//! the one that actually led there.
//!
//! **Requests** are the `ClosestNodes` requests the lookup sent.
//!
//! The simulator sees only commands, so requests are tied to a lookup by
//! (finder, target): two measured lookups of one target from one finder
//! must not overlap, and background lookups of that same target by that
//! finder would be counted too (they look up random or own NodeIds, so
//! they never coincide in practice).

use crate::hash::FxHashMap;

use keynode_core::wire::{Request, Response};
use keynode_core::{NodeId, NodeManager, OpError, OpId, OpValue, RequestId};

use crate::net::HostId;

/// What a measured lookup did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupOutcome {
    /// The NodeId looked up.
    pub target: NodeId,
    /// Whether it ended connected to the target.
    pub found: bool,
    /// The hops that led to the target (0 when not found).
    pub hops: u32,
    /// `ClosestNodes` requests sent.
    pub requests: u32,
    /// The longest chain of sequential requests that were answered (the
    /// greatest depth of an answered request), found or not.
    pub chain: u32,
    /// The nodes that answered, in the order they did.
    pub answered: Vec<NodeId>,
}

#[derive(Debug)]
struct Tracked {
    target: NodeId,
    depth: FxHashMap<NodeId, u32>,
    requests: u32,
    chain: u32,
    answered: Vec<NodeId>,
}

/// The lookups being measured.
#[derive(Debug, Default)]
pub struct Lookups {
    by_target: FxHashMap<(HostId, NodeId), OpId>,
    tracked: FxHashMap<(HostId, OpId), Tracked>,
    requests: FxHashMap<(HostId, RequestId), (OpId, NodeId, u32)>,
    outcomes: FxHashMap<(HostId, OpId), LookupOutcome>,
}

/// What the finder knows about `target` before it asks anyone: the
/// candidates a lookup starts from.
pub fn known_at_start(node: &NodeManager, target: &NodeId) -> Vec<NodeId> {
    let k = node.config().k;
    let mut known: Vec<NodeId> = node
        .graph()
        .closest(target, k)
        .into_iter()
        .map(|e| e.node_id)
        .collect();
    known.extend(node.connections().into_iter().map(|(_, peer, _)| peer));
    known
}

impl Lookups {
    /// Starts measuring lookup `op` of `finder` for `target`.
    pub fn start(&mut self, finder: HostId, op: OpId, target: NodeId, known: Vec<NodeId>) {
        let depth = known.into_iter().map(|id| (id, 0)).collect();
        self.by_target.insert((finder, target), op);
        self.tracked.insert(
            (finder, op),
            Tracked {
                target,
                depth,
                requests: 0,
                chain: 0,
                answered: Vec::new(),
            },
        );
    }

    /// `finder` sent `request` to `peer`.
    pub fn on_request(&mut self, finder: HostId, request: RequestId, peer: NodeId, body: &Request) {
        let Request::ClosestNodes { target } = body else {
            return;
        };
        let Some(op) = self.by_target.get(&(finder, *target)).copied() else {
            return;
        };
        let Some(t) = self.tracked.get_mut(&(finder, op)) else {
            return;
        };
        t.requests += 1;
        let depth = t.depth.get(&peer).copied().unwrap_or(0) + 1;
        self.requests.insert((finder, request), (op, peer, depth));
    }

    /// The answer to `request` reached `finder`.
    pub fn on_response(&mut self, finder: HostId, request: RequestId, response: &Response) {
        let Some((op, peer, depth)) = self.requests.remove(&(finder, request)) else {
            return;
        };
        let Some(t) = self.tracked.get_mut(&(finder, op)) else {
            return;
        };
        if let Response::ClosestNodes { active, contacts } = response {
            t.answered.push(peer);
            t.chain = t.chain.max(depth);
            let named = contacts.iter().map(|(id, _)| id).chain(active.iter());
            for id in named {
                t.depth.entry(*id).or_insert(depth);
            }
        }
    }

    /// `request` of `finder` failed.
    pub fn on_failure(&mut self, finder: HostId, request: RequestId) {
        self.requests.remove(&(finder, request));
    }

    /// Lookup `op` of `finder` ended; returns its outcome if it was measured.
    pub fn finish(
        &mut self,
        finder: HostId,
        op: OpId,
        result: &Result<OpValue, OpError>,
    ) -> Option<&LookupOutcome> {
        let t = self.tracked.remove(&(finder, op))?;
        self.by_target.remove(&(finder, t.target));
        let found = matches!(result, Ok(OpValue::Found(Some(_))));
        let hops = if found {
            t.depth.get(&t.target).copied().unwrap_or(0)
        } else {
            0
        };
        let outcome = LookupOutcome {
            target: t.target,
            found,
            hops,
            requests: t.requests,
            chain: t.chain,
            answered: t.answered,
        };
        self.outcomes.insert((finder, op), outcome);
        self.outcomes.get(&(finder, op))
    }

    /// Takes the outcome of a finished measured lookup.
    pub fn take_outcome(&mut self, finder: HostId, op: OpId) -> Option<LookupOutcome> {
        self.outcomes.remove(&(finder, op))
    }
}
