//! [`Calls`]: what the handles send the loop, and the bound on it. Each
//! operation takes a slot of the queue while its future lives (queued or
//! running in the node); beyond `max_queued_calls` a call is refused with
//! [`AgentError::Busy`]. Cancels, releases and the stop take no slot: each
//! frees something that exists, so they are bounded by what is held.
//!
//! An operation's future carries a [`CancelOnDrop`]: dropped before its
//! result came (or its time ran out), it tells the loop, which cancels the
//! operation in the node.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::channel::{mpsc, oneshot};
use keynode_core::{LeaseId, NodeId, UserCall};

use crate::error::AgentError;
use crate::reply::Reply;

/// An agent's own id of one operation call, known before the node gives
/// it an `OpId`: a cancel names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CallId(u64);

pub(crate) type RenewReply = oneshot::Sender<Result<NodeId, AgentError>>;

/// What a handle asks of the loop.
pub(crate) enum Call {
    /// Start an operation; its result goes to `reply`.
    Op {
        id: CallId,
        call: UserCall,
        reply: Reply,
    },
    /// The caller of `CallId` went away: cancel its operation.
    Cancel(CallId),
    /// A use of a connection was dropped.
    Release(LeaseId),
    /// Renew the key.
    Renew(Box<[u8; 32]>, RenewReply),
    /// Stop the node.
    Stop(oneshot::Sender<()>),
}

/// The handles' side of the call channel.
#[derive(Clone)]
pub(crate) struct Calls {
    tx: mpsc::UnboundedSender<Call>,
    queued: Arc<AtomicUsize>,
    limit: usize,
    next_id: Arc<AtomicU64>,
}

impl Calls {
    /// A call channel of at most `limit` operations at once.
    pub(crate) fn new(limit: usize) -> (Self, mpsc::UnboundedReceiver<Call>) {
        let (tx, rx) = mpsc::unbounded();
        let calls = Self {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            limit,
            next_id: Arc::new(AtomicU64::new(1)),
        };
        (calls, rx)
    }

    /// A slot for one call, held until it ends; `Busy` when all are taken.
    pub(crate) fn slot(&self) -> Result<Slot, AgentError> {
        let taken = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Slot(self.queued.clone())),
            Err(_) => Err(AgentError::Busy { limit: self.limit }),
        }
    }

    /// A fresh id for an operation call.
    pub(crate) fn next_id(&self) -> CallId {
        CallId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends `call` to the loop; `Stopped` if it has ended.
    pub(crate) fn send(&self, call: Call) -> Result<(), AgentError> {
        self.tx
            .unbounded_send(call)
            .map_err(|_| AgentError::Stopped)
    }
}

/// One taken slot of the call queue, given back on drop.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Cancels the operation `id` in the node when dropped armed: its caller
/// dropped the future, or the call's time ran out.
pub(crate) struct CancelOnDrop<'a> {
    calls: &'a Calls,
    id: Option<CallId>,
}

impl<'a> CancelOnDrop<'a> {
    pub(crate) fn new(calls: &'a Calls, id: CallId) -> Self {
        Self {
            calls,
            id: Some(id),
        }
    }

    /// The operation ended: nothing to cancel.
    pub(crate) fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // A stopped loop has cancelled everything already.
            let _ = self.calls.send(Call::Cancel(id));
        }
    }
}
