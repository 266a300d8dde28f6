//! What the manager waits for, and which operation waits for it: a
//! correlation table in the shape of snownet's in-flight STUN requests.
//!
//! Every command whose answer comes back as an event (a connection attempt,
//! a request, an mDNS query, a store batch, a claim stream) registers a
//! [`Wait`] for the operation that sent it. The answer takes the wait and
//! goes to that operation; an answer nobody waits for is stale.
//!
//! Two kinds of wait end differently when their operation ends first:
//! - an attempt, a request and a batch always get their answer (the driver
//!   reports every attempt's end, every request times out, every batch
//!   commits or fails), so such a wait stays until then and its answer,
//!   addressed to an operation no longer there, is counted stale. That
//!   costs nothing on the hot path, where the answer arrives while its
//!   operation waits;
//! - an mDNS query and a claim stream may never end by themselves, so they
//!   are indexed by operation too and go when it ends (the query is then
//!   ended with the driver).
//!
//! Either way nothing outlives an operation by more than the answer's own
//! bound, and [`Waits::clear`] drops everything when the manager stops.

use std::collections::{BTreeMap, BTreeSet};

use crate::manager::api::{AttemptId, BatchId, OpId, QueryId, RequestId, StreamId};

/// One thing an operation waits for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Wait {
    /// A connection attempt ([`crate::manager::Command::Connect`]), up or failed.
    Attempt(AttemptId),
    /// A request's response ([`crate::manager::Command::SendRequest`]).
    Request(RequestId),
    /// An mDNS query's answers; it ends with the operation.
    Query(QueryId),
    /// A store batch committed or failed.
    Batch(BatchId),
    /// The messages of a claim exchange's stream, and its close.
    Stream(StreamId),
}

impl Wait {
    /// The smallest wait, to start a range of an operation's.
    const MIN: Wait = Wait::Attempt(AttemptId(0));

    /// Whether the wait goes when its operation ends (no answer is bound
    /// to come), rather than at its answer.
    fn ends_with_op(self) -> bool {
        match self {
            Wait::Query(_) | Wait::Stream(_) => true,
            Wait::Attempt(_) | Wait::Request(_) | Wait::Batch(_) => false,
        }
    }
}

/// The waits in flight, by what is awaited and, for those that end with
/// their operation, by the operation waiting.
#[derive(Debug, Default)]
pub(crate) struct Waits {
    waiting: BTreeMap<Wait, OpId>,
    /// The waits that end with their operation ([`Wait::ends_with_op`]),
    /// ordered by operation then wait: an ending operation's are one range.
    by_op: BTreeSet<(OpId, Wait)>,
}

impl Waits {
    /// `op` waits for `wait`.
    pub(crate) fn register(&mut self, wait: Wait, op: OpId) {
        if let Some(previous) = self.waiting.insert(wait, op) {
            // Ids are never reused, so this does not happen; keep the
            // index right if it does.
            self.unindex(previous, wait);
        }
        if wait.ends_with_op() {
            self.by_op.insert((op, wait));
        }
    }

    /// The operation waiting for `wait`, which stays registered (a stream
    /// carries several messages).
    pub(crate) fn get(&self, wait: Wait) -> Option<OpId> {
        self.waiting.get(&wait).copied()
    }

    /// Takes `wait` out: it arrived. The operation that waited for it, if any.
    pub(crate) fn take(&mut self, wait: Wait) -> Option<OpId> {
        let op = self.waiting.remove(&wait)?;
        self.unindex(op, wait);
        Some(op)
    }

    /// Drops the waits of `op` that end with it ([`Wait::ends_with_op`])
    /// and returns them in order.
    pub(crate) fn end_op(&mut self, op: OpId) -> Vec<Wait> {
        let mut waits = Vec::new();
        while let Some(&(o, wait)) = self.by_op.range((op, Wait::MIN)..).next() {
            if o != op {
                break;
            }
            self.by_op.remove(&(o, wait));
            self.waiting.remove(&wait);
            waits.push(wait);
        }
        waits
    }

    /// Drops everything (the manager stopped) and returns the mDNS queries
    /// that were open, in id order.
    pub(crate) fn clear(&mut self) -> Vec<QueryId> {
        let queries = self
            .waiting
            .keys()
            .filter_map(|w| match w {
                Wait::Query(q) => Some(*q),
                _ => None,
            })
            .collect();
        self.waiting.clear();
        self.by_op.clear();
        queries
    }

    /// Waits in flight, for monitoring and tests.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    fn unindex(&mut self, op: OpId, wait: Wait) {
        if wait.ends_with_op() {
            self.by_op.remove(&(op, wait));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_goes_to_its_op_once() {
        let mut waits = Waits::default();
        waits.register(Wait::Request(RequestId(5)), OpId(1));
        waits.register(Wait::Attempt(AttemptId(6)), OpId(1));
        assert_eq!(waits.take(Wait::Request(RequestId(5))), Some(OpId(1)));
        assert_eq!(waits.take(Wait::Request(RequestId(5))), None);
        assert_eq!(waits.len(), 1);
    }

    #[test]
    fn an_ended_op_leaves_no_open_ended_wait_behind() {
        let mut waits = Waits::default();
        waits.register(Wait::Query(QueryId(3)), OpId(1));
        waits.register(Wait::Stream(StreamId::Local(4)), OpId(1));
        waits.register(Wait::Stream(StreamId::Local(5)), OpId(1));
        waits.register(Wait::Request(RequestId(8)), OpId(1));
        waits.register(Wait::Batch(BatchId(7)), OpId(2));
        waits.register(Wait::Query(QueryId(9)), OpId(2));
        let _ = waits.take(Wait::Stream(StreamId::Local(4)));
        assert_eq!(
            waits.end_op(OpId(1)),
            vec![Wait::Query(QueryId(3)), Wait::Stream(StreamId::Local(5))]
        );
        assert_eq!(waits.get(Wait::Query(QueryId(3))), None);
        assert_eq!(waits.end_op(OpId(1)), vec![]);
        // The request's answer is bound to come; it finds the ended op.
        assert_eq!(waits.take(Wait::Request(RequestId(8))), Some(OpId(1)));
        assert_eq!(waits.get(Wait::Batch(BatchId(7))), Some(OpId(2)));
        assert_eq!(waits.end_op(OpId(2)), vec![Wait::Query(QueryId(9))]);
        assert!(waits.by_op.is_empty());
    }

    #[test]
    fn clear_lists_the_open_queries_in_order() {
        let mut waits = Waits::default();
        waits.register(Wait::Query(QueryId(9)), OpId(2));
        waits.register(Wait::Request(RequestId(1)), OpId(2));
        waits.register(Wait::Query(QueryId(4)), OpId(3));
        assert_eq!(waits.clear(), vec![QueryId(4), QueryId(9)]);
        assert_eq!(waits.len(), 0);
        assert!(waits.by_op.is_empty());
    }
}
