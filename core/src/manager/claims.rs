//! The claim exchange (`claim_node` and `handle_claim_node`), the claim
//! permission, and `request_chain_data`.
//!
//! # Commit points
//!
//! - The requester appends its doubly signed claim (and records the gestalt
//!   link) only after it has sent message 4.
//! - The target appends its own doubly signed claim on receiving a valid
//!   message 4.
//!
//! A failure before those points stores nothing on either side. A failure
//! after the requester's commit (message 4 lost) leaves a one-sided link; a
//! retry repairs it: each side reuses the link claim it already holds instead
//! of making a new one, so a retry never duplicates a link.
//!
//! # The chain's turn
//!
//! One exchange at a time builds on the chain (its head is in the claims
//! signed); the others wait in a queue bounded in all
//! (`Config::max_chain_waiters`) and per peer
//! (`Config::max_chain_waiters_per_peer`). A peer's exchange is checked
//! before it may wait (the `claim` permission, a first message that is a
//! request), so a peer without the permission cannot fill the queue; a
//! waiting exchange whose stream closes leaves the queue; the target holds
//! the chain while it waits for the last message for
//! `Config::claim_reply_timeout` at most, and lets it go as soon as the
//! stream or its connection fails.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use super::find::{FindOptions, Strategies};
use super::running::Job;
use super::waits::Wait;
use super::{Input, NodeManager, OpError, OpId, OpKind, OpValue, Parent, Step};
use crate::claims::{
    ClaimBody, ClaimError, ClaimId, GestaltGraph, KeyPair, Sigchain, SignedClaim, VerifiedClaim,
    check_link, verify_chain,
};
use crate::id::NodeId;
use crate::manager::api::{ApiError, Command, ConnId, RequestId, StreamId};
use crate::store::StoreOp;
use crate::time::Now;
use crate::wire::{ClaimMessage, Request, Response};

/// What the node knows and holds for claims: its signing key, its sigchain,
/// the gestalt links, who may claim it, and the exchanges waiting to build
/// on the chain (the one building on it is [`Job::ChainWriter`]).
pub(crate) struct ClaimState {
    /// `None` when the node's key cannot sign for its NodeId.
    pub(crate) key: Option<KeyPair>,
    pub(crate) sigchain: Sigchain,
    pub(crate) gestalt: GestaltGraph,
    pub(crate) claim_permissions: BTreeSet<NodeId>,
    /// Ids of claims signed recently, to refuse replays (bounded; oldest out).
    pub(crate) recent_claims: BTreeSet<ClaimId>,
    pub(crate) chain_queue: VecDeque<ChainWaiter>,
}

impl ClaimState {
    pub(crate) fn new(own: NodeId, key: Option<KeyPair>) -> Self {
        Self {
            key,
            sigchain: Sigchain::new(own),
            gestalt: GestaltGraph::default(),
            claim_permissions: BTreeSet::new(),
            recent_claims: BTreeSet::new(),
            chain_queue: VecDeque::new(),
        }
    }
}

/// The requester's side of a claim exchange: one state per expected message.
#[derive(Debug)]
pub(crate) enum ClaimNodeOp {
    /// Looking for the target.
    Finding { target: NodeId },
    /// Message 1 sent; waiting for message 2.
    ExpectCountersigned {
        target: NodeId,
        stream: StreamId,
        mine: SignedClaim,
        reused: bool,
    },
    /// Message 2 verified; waiting for message 3.
    ExpectReverse {
        target: NodeId,
        stream: StreamId,
        doubly: VerifiedClaim,
        reused: bool,
    },
    /// Message 4 sent and the claim appended; waiting for the commit.
    Committing,
}

/// The target's side of a claim exchange.
#[derive(Debug)]
pub(crate) enum HandleClaimOp {
    /// Messages 2 and 3 sent; waiting for message 4.
    ExpectReverseCountersigned {
        requester: NodeId,
        stream: StreamId,
        mine: SignedClaim,
        reused: bool,
    },
    /// Message 4 verified and the claim appended; waiting for the commit.
    Committing,
}

/// `request_chain_data` in progress.
#[derive(Debug)]
pub(crate) struct ChainDataOp {
    target: NodeId,
    from: Option<ClaimId>,
    limit: u32,
    request: Option<RequestId>,
}

impl NodeManager {
    /// Spec: `NodeManager.claimNode`.
    ///
    /// Links this node and `target` into one gestalt: a 4-message exchange
    /// on one stream in which each side signs the other's link claim (see the
    /// module docs for the messages and commit points). Ends when the
    /// requester's claim is committed; fails, storing nothing, on a bad
    /// signature, a wrong issuer or subject, a stale or replayed claim, an
    /// out-of-order message, a refusal (the target must allow claims from
    /// this node) or the deadline (`claim_timeout` if `None`).
    pub fn claim_node(
        &mut self,
        now: Now,
        target: NodeId,
        timeout: Option<Duration>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        if target == self.graph.own_node_id() {
            return Err(ApiError::OwnNodeId(target));
        }
        let timeout = timeout.unwrap_or(self.config.claim_timeout);
        let op = self.spawn(
            OpKind::ClaimNode(Box::new(ClaimNodeOp::Finding { target })),
            Parent::Caller,
            Some(timeout),
        )?;
        self.run();
        Ok(op)
    }

    /// Allows (or stops allowing) `node_id` to claim this node: the `claim`
    /// permission, persisted. Without it, a claim exchange from that node is
    /// refused.
    pub fn allow_claims_from(
        &mut self,
        now: Now,
        node_id: NodeId,
        allowed: bool,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let op = if allowed {
            self.claims.claim_permissions.insert(node_id);
            StoreOp::PutClaimPermission(node_id)
        } else {
            self.claims.claim_permissions.remove(&node_id);
            StoreOp::DeleteClaimPermission(node_id)
        };
        let id = self.spawn(OpKind::StoreWait(OpValue::Unit), Parent::Caller, None)?;
        self.store(vec![op], Some(id));
        self.run();
        Ok(id)
    }

    /// The own sigchain, in seq order.
    pub fn sigchain(&self) -> Vec<SignedClaim> {
        self.claims
            .sigchain
            .claims()
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// The nodes in one gestalt with `node_id` (linked by doubly signed
    /// claims, directly or through others).
    pub fn gestalt(&self, node_id: &NodeId) -> Vec<NodeId> {
        self.claims.gestalt.gestalt(node_id).into_iter().collect()
    }

    /// Spec: `NodeManager.requestChainData`.
    ///
    /// Fetches `target`'s claims (from `from` on, at most `limit`, bounded by
    /// `max_chain_page`), verifies every signature and chain link, and ends
    /// with the claims that verified and a report of those that did not.
    pub fn request_chain_data(
        &mut self,
        now: Now,
        target: NodeId,
        from: Option<ClaimId>,
        limit: Option<u32>,
    ) -> Result<OpId, ApiError> {
        self.advance_clock(now);
        self.check_running()?;
        let max = u32::try_from(self.config.max_chain_page).unwrap_or(u32::MAX);
        let op = ChainDataOp {
            target,
            from,
            limit: limit.unwrap_or(max).min(max),
            request: None,
        };
        let id = self.spawn(
            OpKind::ChainData(op),
            Parent::Caller,
            Some(self.config.rpc_timeout + self.config.find_node_timeout),
        )?;
        self.run();
        Ok(id)
    }

    pub(super) fn step_chain_data(&mut self, id: OpId, mut op: ChainDataOp, input: Input) -> Step {
        match input {
            Input::Start | Input::Child { .. } => {
                if let Some((conn, _)) = self.conns.primary(&op.target) {
                    let body = Request::ChainData {
                        from: op.from,
                        limit: op.limit,
                    };
                    op.request = Some(self.send_request(id, conn, body));
                } else if matches!(input, Input::Start) {
                    let find = self.spawn_find(
                        op.target,
                        FindOptions::default(),
                        Strategies::ALL,
                        Parent::Op(id),
                    );
                    if find.is_err() {
                        return Step::Done(Err(OpError::NodeNotFound(op.target)));
                    }
                } else {
                    return Step::Done(Err(OpError::NodeNotFound(op.target)));
                }
            }
            Input::Response { result, .. } => {
                return Step::Done(match result {
                    Ok(Response::ChainData { claims }) => {
                        let (good, bad) = verify_chain(&op.target, &claims, op.from);
                        Ok(OpValue::Chain {
                            claims: good.into_iter().map(|(_, s)| s).collect(),
                            rejected: bad,
                        })
                    }
                    Ok(Response::Refused(reason)) => Err(OpError::Refused(reason)),
                    Ok(_) => Err(OpError::Claim(ClaimError::OutOfOrder {
                        expected: "ChainData",
                        got: "another response",
                    })),
                    Err(_) => Err(OpError::Timeout),
                });
            }
            Input::Deadline => return Step::Done(Err(OpError::Timeout)),
            _ => {}
        }
        Step::Continue(OpKind::ChainData(op))
    }

    /// The claims a peer asked for.
    pub(super) fn serve_chain_data(&self, from: Option<ClaimId>, limit: u32) -> Response {
        let limit = (limit as usize).min(self.config.max_chain_page);
        Response::ChainData {
            claims: self.claims.sigchain.page(from, limit),
        }
    }

    /// Whether a claim made by someone else is recent enough to sign.
    fn check_fresh(&self, verified: &VerifiedClaim) -> Result<(), ClaimError> {
        let now = self.now.unix_secs();
        let iat = verified.claim().iat;
        if iat.abs_diff(now) > self.config.claim_max_skew.as_secs() {
            return Err(ClaimError::Stale { iat, now });
        }
        Ok(())
    }

    /// Remembers a claim id; `Err` if it was seen already.
    fn check_replay(&mut self, id: ClaimId) -> Result<(), ClaimError> {
        if self.claims.recent_claims.contains(&id) {
            return Err(ClaimError::Replayed(id));
        }
        if self.claims.recent_claims.len() >= self.config.max_recent_claims {
            // Oldest first: ids sort by time.
            self.claims.recent_claims.pop_first();
        }
        self.claims.recent_claims.insert(id);
        Ok(())
    }

    /// The link claim to `other` this node holds, or a new one signed by it.
    fn own_link_claim(&mut self, other: NodeId) -> Result<(SignedClaim, bool), ClaimError> {
        if let Some((_, signed)) = self.claims.sigchain.link_to(&other) {
            return Ok((signed.clone(), true));
        }
        let key = self
            .claims
            .key
            .clone()
            .ok_or(ClaimError::Aborted(crate::claims::AbortReason::Unavailable))?;
        let body = ClaimBody::LinkNode {
            iss: key.node_id(),
            sub: other,
        };
        let claim = self
            .claims
            .sigchain
            .next_claim(body, self.now.unix_ms, &mut self.rng);
        Ok((SignedClaim::sign(&claim, &key)?, false))
    }

    fn abort_stream(&mut self, stream: StreamId, error: &ClaimError) {
        self.commands.push_back(Command::StreamSend {
            stream,
            message: ClaimMessage::Abort(error.abort_reason()),
            finish: true,
        });
    }

    /// Appends a doubly signed link claim (unless one is held already) and
    /// records the gestalt link; the store ops, or why not.
    fn commit_link(
        &mut self,
        other: NodeId,
        verified: VerifiedClaim,
        reused: bool,
    ) -> Result<Vec<StoreOp>, ClaimError> {
        let mut ops = Vec::new();
        if !reused {
            ops.push(self.claims.sigchain.append(verified)?);
        }
        let own = self.graph.own_node_id();
        ops.extend(self.claims.gestalt.link(own, other));
        self.observe(crate::manager::Observation::ClaimLinked { node_id: other });
        Ok(ops)
    }

    pub(super) fn step_claim_node(&mut self, id: OpId, op: Box<ClaimNodeOp>, input: Input) -> Step {
        let fail = |e: ClaimError| Step::Done(Err(OpError::Claim(e)));
        match (*op, input) {
            (_, Input::Deadline) => Step::Done(Err(OpError::Timeout)),
            (ClaimNodeOp::Committing, Input::Committed { result }) => {
                Step::Done(result.map(|()| OpValue::Unit).map_err(OpError::Store))
            }
            (ClaimNodeOp::Finding { target }, Input::Start) => {
                if self.claims.key.is_none() {
                    return Step::Done(Err(OpError::CannotSign));
                }
                if let Some((conn, _)) = self.conns.primary(&target) {
                    return self.claim_open(id, target, conn);
                }
                let options = FindOptions::default();
                match self.spawn_find(target, options, Strategies::ALL, Parent::Op(id)) {
                    Ok(_) => {
                        Step::Continue(OpKind::ClaimNode(Box::new(ClaimNodeOp::Finding { target })))
                    }
                    Err(_) => Step::Done(Err(OpError::NodeNotFound(target))),
                }
            }
            (ClaimNodeOp::Finding { target }, Input::ChainFree) => {
                match self.conns.primary(&target) {
                    Some((conn, _)) => self.claim_open(id, target, conn),
                    None => Step::Done(Err(OpError::NodeNotFound(target))),
                }
            }
            (ClaimNodeOp::Finding { target }, Input::Child { .. }) => {
                match self.conns.primary(&target) {
                    Some((conn, _)) => self.claim_open(id, target, conn),
                    None => Step::Done(Err(OpError::NodeNotFound(target))),
                }
            }
            (
                ClaimNodeOp::ExpectCountersigned {
                    target,
                    stream,
                    mine,
                    reused,
                },
                Input::Stream { message, .. },
            ) => {
                let own = self.graph.own_node_id();
                let result = match message {
                    ClaimMessage::Countersigned(c) if c.payload == mine.payload => c
                        .verify(&[own, target])
                        .and_then(|v| check_link(&v, own, target).map(|()| v)),
                    ClaimMessage::Abort(reason) => return fail(aborted(reason)),
                    other => Err(ClaimError::OutOfOrder {
                        expected: "Countersigned (of the claim sent)",
                        got: other.name(),
                    }),
                };
                match result {
                    Ok(doubly) => {
                        Step::Continue(OpKind::ClaimNode(Box::new(ClaimNodeOp::ExpectReverse {
                            target,
                            stream,
                            doubly,
                            reused,
                        })))
                    }
                    Err(e) => {
                        self.abort_stream(stream, &e);
                        fail(e)
                    }
                }
            }
            (
                ClaimNodeOp::ExpectReverse {
                    target,
                    stream,
                    doubly,
                    reused,
                },
                Input::Stream { message, .. },
            ) => {
                let own = self.graph.own_node_id();
                let checked = match message {
                    ClaimMessage::Reverse(r) => self.check_reverse(&r, target, own).map(|()| r),
                    ClaimMessage::Abort(reason) => return fail(aborted(reason)),
                    other => Err(ClaimError::OutOfOrder {
                        expected: "Reverse",
                        got: other.name(),
                    }),
                };
                let mut reverse = match checked {
                    Ok(r) => r,
                    Err(e) => {
                        self.abort_stream(stream, &e);
                        return fail(e);
                    }
                };
                let Some(key) = self.claims.key.clone() else {
                    return Step::Done(Err(OpError::CannotSign));
                };
                reverse.countersign(&key);
                self.commands.push_back(Command::StreamSend {
                    stream,
                    message: ClaimMessage::ReverseCountersigned(reverse),
                    finish: true,
                });
                let _ = self.waits.take(Wait::Stream(stream));
                // Commit point: message 4 is sent.
                match self.commit_link(target, doubly, reused) {
                    Ok(ops) => {
                        self.store(ops, Some(id));
                        Step::Continue(OpKind::ClaimNode(Box::new(ClaimNodeOp::Committing)))
                    }
                    Err(e) => fail(e),
                }
            }
            (_, Input::StreamClosed) => fail(ClaimError::StreamClosed),
            (state, _) => Step::Continue(OpKind::ClaimNode(Box::new(state))),
        }
    }

    /// Message 3: the target's claim about this node, signed by the target,
    /// fresh unless it is a link both signed before (a retry).
    fn check_reverse(
        &mut self,
        r: &SignedClaim,
        target: NodeId,
        own: NodeId,
    ) -> Result<(), ClaimError> {
        let verified = r.verify(&[target])?;
        check_link(&verified, target, own)?;
        let completed = r.signed_by(&own) && r.verify(&[target, own]).is_ok();
        if !completed {
            self.check_fresh(&verified)?;
            self.check_replay(verified.claim().id)?;
        }
        Ok(())
    }

    fn claim_open(&mut self, id: OpId, target: NodeId, conn: ConnId) -> Step {
        // One exchange at a time builds on the chain's head: another one's
        // claim appended meanwhile would break this one's link.
        match self.running.get(Job::ChainWriter) {
            Some(owner) if owner != id => {
                if self.claims.chain_queue.len() >= self.config.max_chain_waiters {
                    return Step::Done(Err(OpError::Claim(ClaimError::ChainAdvanced)));
                }
                self.claims
                    .chain_queue
                    .push_back(ChainWaiter::Requester(id));
                return Step::Continue(OpKind::ClaimNode(Box::new(ClaimNodeOp::Finding {
                    target,
                })));
            }
            Some(_) => {}
            None => self.running.start(Job::ChainWriter, id),
        }
        let (mine, reused) = match self.own_link_claim(target) {
            Ok(x) => x,
            Err(e) => return Step::Done(Err(OpError::Claim(e))),
        };
        let stream = StreamId::Local(self.fresh_id());
        self.waits.register(Wait::Stream(stream), id);
        self.commands.push_back(Command::OpenStream {
            conn,
            stream,
            message: ClaimMessage::Request(mine.clone()),
        });
        self.arm_idle(conn);
        Step::Continue(OpKind::ClaimNode(Box::new(
            ClaimNodeOp::ExpectCountersigned {
                target,
                stream,
                mine,
                reused,
            },
        )))
    }

    /// Spec: `NodeManager.handleClaimNode`.
    ///
    /// Answers a claim exchange a peer opened on `conn` with its first
    /// message: checks the requester holds the `claim` permission and that
    /// its claim is valid, fresh and not replayed; countersigns it (message
    /// 2), sends this node's own claim (message 3), then waits for message 4.
    pub(super) fn handle_claim_node(
        &mut self,
        conn: ConnId,
        stream: StreamId,
        message: ClaimMessage,
    ) {
        let Some(requester) = self.conns.get(conn).map(|c| c.peer) else {
            self.abort_stream(stream, &ClaimError::StreamClosed);
            return;
        };
        // Checked before it may wait: a peer that may not claim this node
        // gets its refusal at once, and takes no place in the queue.
        if let Err(e) = self.check_claim_request(requester, &message) {
            self.abort_stream(stream, &e);
            return;
        }
        if self.running.is_running(Job::ChainWriter) {
            // Another exchange builds on the chain: this one waits its turn.
            let from_peer = self
                .claims
                .chain_queue
                .iter()
                .filter(
                    |w| matches!(w, ChainWaiter::Handler { requester: r, .. } if *r == requester),
                )
                .count();
            if self.claims.chain_queue.len() >= self.config.max_chain_waiters
                || from_peer >= self.config.max_chain_waiters_per_peer
            {
                self.stats.claims_refused_busy += 1;
                self.abort_stream(stream, &ClaimError::ChainAdvanced);
            } else {
                self.claims.chain_queue.push_back(ChainWaiter::Handler {
                    conn,
                    requester,
                    stream,
                    message,
                });
            }
            return;
        }
        match self.begin_handle_claim(requester, message) {
            Ok((countersigned, mine, reused)) => {
                self.commands.push_back(Command::StreamSend {
                    stream,
                    message: ClaimMessage::Countersigned(countersigned),
                    finish: false,
                });
                self.commands.push_back(Command::StreamSend {
                    stream,
                    message: ClaimMessage::Reverse(mine.clone()),
                    finish: false,
                });
                let op = HandleClaimOp::ExpectReverseCountersigned {
                    requester,
                    stream,
                    mine,
                    reused,
                };
                // Messages 2 and 3 are out: a live requester answers at once.
                let timeout = self.config.claim_reply_timeout;
                match self.spawn(OpKind::HandleClaim(op), Parent::Internal, Some(timeout)) {
                    Ok(id) => {
                        self.waits.register(Wait::Stream(stream), id);
                        self.running.start(Job::ChainWriter, id);
                    }
                    Err(_) => self.abort_stream(stream, &ClaimError::ChainAdvanced),
                }
            }
            Err(e) => self.abort_stream(stream, &e),
        }
    }

    /// What a peer's exchange must be to wait for the chain: a request,
    /// from a peer with the `claim` permission.
    fn check_claim_request(
        &self,
        requester: NodeId,
        message: &ClaimMessage,
    ) -> Result<(), ClaimError> {
        if !matches!(message, ClaimMessage::Request(_)) {
            return Err(ClaimError::OutOfOrder {
                expected: "Request",
                got: message.name(),
            });
        }
        if !self.claims.claim_permissions.contains(&requester) {
            return Err(ClaimError::NotPermitted);
        }
        Ok(())
    }

    fn begin_handle_claim(
        &mut self,
        requester: NodeId,
        message: ClaimMessage,
    ) -> Result<(SignedClaim, SignedClaim, bool), ClaimError> {
        let own = self.graph.own_node_id();
        // Checked again: the permission may have gone while it waited.
        self.check_claim_request(requester, &message)?;
        let ClaimMessage::Request(mut claim) = message else {
            return Err(ClaimError::OutOfOrder {
                expected: "Request",
                got: message.name(),
            });
        };
        let Some(key) = self.claims.key.clone() else {
            return Err(ClaimError::Aborted(crate::claims::AbortReason::Unavailable));
        };
        let verified = claim.verify(&[requester])?;
        check_link(&verified, requester, own)?;
        let completed = claim.signed_by(&own) && claim.verify(&[requester, own]).is_ok();
        if !completed {
            self.check_fresh(&verified)?;
            self.check_replay(verified.claim().id)?;
        }
        claim.countersign(&key);
        let (mine, reused) = self.own_link_claim(requester)?;
        Ok((claim, mine, reused))
    }

    pub(super) fn step_handle_claim(&mut self, id: OpId, op: HandleClaimOp, input: Input) -> Step {
        match (op, input) {
            (_, Input::Deadline) => Step::Done(Err(OpError::Timeout)),
            (HandleClaimOp::Committing, Input::Committed { result }) => {
                Step::Done(result.map(|()| OpValue::Unit).map_err(OpError::Store))
            }
            (
                HandleClaimOp::ExpectReverseCountersigned {
                    requester,
                    stream,
                    mine,
                    reused,
                },
                Input::Stream { message, .. },
            ) => {
                let own = self.graph.own_node_id();
                let verified = match message {
                    ClaimMessage::ReverseCountersigned(r) if r.payload == mine.payload => {
                        r.verify(&[own, requester])
                    }
                    ClaimMessage::Abort(reason) => {
                        return Step::Done(Err(OpError::Claim(aborted(reason))));
                    }
                    other => Err(ClaimError::OutOfOrder {
                        expected: "ReverseCountersigned (of the claim sent)",
                        got: other.name(),
                    }),
                };
                let _ = self.waits.take(Wait::Stream(stream));
                // Commit point: a valid message 4.
                match verified.and_then(|v| self.commit_link(requester, v, reused)) {
                    Ok(ops) => {
                        self.store(ops, Some(id));
                        Step::Continue(OpKind::HandleClaim(HandleClaimOp::Committing))
                    }
                    Err(e) => {
                        self.abort_stream(stream, &e);
                        Step::Done(Err(OpError::Claim(e)))
                    }
                }
            }
            (_, Input::StreamClosed) => Step::Done(Err(OpError::Claim(ClaimError::StreamClosed))),
            (state, _) => Step::Continue(OpKind::HandleClaim(state)),
        }
    }
}

/// An exchange waiting for the chain.
#[derive(Debug)]
pub(crate) enum ChainWaiter {
    /// A `claim_node` of this node.
    Requester(OpId),
    /// A peer's exchange, not yet answered.
    Handler {
        conn: ConnId,
        requester: NodeId,
        stream: StreamId,
        message: ClaimMessage,
    },
}

impl NodeManager {
    /// The chain's exchange `id` ended: the next waiting one goes on.
    pub(super) fn release_chain(&mut self, id: OpId) {
        if self.running.get(Job::ChainWriter) != Some(id) {
            return;
        }
        self.running.release(Job::ChainWriter, id);
        while let Some(waiter) = self.claims.chain_queue.pop_front() {
            match waiter {
                ChainWaiter::Requester(op) if self.ops.contains(op) => {
                    self.running.start(Job::ChainWriter, op);
                    self.input(op, Input::ChainFree);
                    return;
                }
                ChainWaiter::Requester(_) => {}
                ChainWaiter::Handler {
                    conn,
                    stream,
                    message,
                    ..
                } => {
                    self.handle_claim_node(conn, stream, message);
                    if self.running.is_running(Job::ChainWriter) {
                        return;
                    }
                }
            }
        }
    }
}

impl NodeManager {
    /// A claim stream closed: a peer's exchange still waiting for the chain
    /// on it leaves the queue (nothing could be answered on it).
    pub(super) fn claim_stream_closed(&mut self, stream: StreamId) {
        self.claims
            .chain_queue
            .retain(|w| !matches!(w, ChainWaiter::Handler { stream: s, .. } if *s == stream));
    }
}

fn aborted(reason: crate::claims::AbortReason) -> ClaimError {
    match reason {
        crate::claims::AbortReason::NotPermitted => ClaimError::NotPermitted,
        other => ClaimError::Aborted(other),
    }
}
