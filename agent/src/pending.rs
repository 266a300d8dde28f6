//! [`Pending`]: the operations of the handles running in the node, by
//! the node's `OpId` and by the agent's `CallId` (a cancel names the
//! latter: the handle sent it before the node gave the operation an id).

use std::collections::BTreeMap;

use keynode_core::{LeaseId, OpError, OpId, OpValue};

use crate::call::CallId;
use crate::error::AgentError;
use crate::reply::Reply;

/// The reply of an ended operation, taken out of [`Pending`].
pub(crate) struct Done(Reply);

impl Done {
    /// Sends the result to its caller. A use of a connection its caller
    /// is no longer there to take is returned, to be released.
    #[must_use]
    pub(crate) fn send(self, result: Result<OpValue, OpError>) -> Option<LeaseId> {
        self.0.send(result.map_err(AgentError::Op))
    }
}

/// The handles' operations in flight.
#[derive(Default)]
pub(crate) struct Pending {
    by_op: BTreeMap<OpId, (CallId, Reply)>,
    by_call: BTreeMap<CallId, OpId>,
}

impl Pending {
    /// Call `id` runs as `op`; its result goes to `reply`.
    pub(crate) fn started(&mut self, id: CallId, op: OpId, reply: Reply) {
        self.by_call.insert(id, op);
        self.by_op.insert(op, (id, reply));
    }

    /// `op` ended: where its result goes, if a handle's caller waits.
    pub(crate) fn take(&mut self, op: OpId) -> Option<Done> {
        let (id, reply) = self.by_op.remove(&op)?;
        self.by_call.remove(&id);
        Some(Done(reply))
    }

    /// The operation of call `id`, to cancel, if it still runs.
    pub(crate) fn cancel(&mut self, id: CallId) -> Option<OpId> {
        self.by_call.get(&id).copied()
    }

    /// How many operations wait for their result.
    pub(crate) fn len(&self) -> usize {
        self.by_op.len()
    }

    /// The agent stopped: every caller still waiting hears `Stopped`.
    pub(crate) fn fail_all(&mut self) {
        self.by_call.clear();
        for (_, (_, reply)) in std::mem::take(&mut self.by_op) {
            reply.fail(AgentError::Stopped);
        }
    }
}
