//! The net layer's deadlines: one table keyed by a closed reason enum
//! ([`NetTimer`]), in the manner of quinn-proto's `TimerTable`, and the
//! label [`NodeTimer`] that [`super::Node::poll_timeout`] puts on the
//! node's next deadline (the manager's own timers stay in the manager's
//! table, so the manager is usable alone).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use super::app::StreamHandle;
use crate::manager::{ConnId, RequestId, Timer};

/// Why the net layer wants to wake up. One deadline per value.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum NetTimer {
    /// An outbound connection's handshake must be done by then.
    ConnectDeadline(ConnId),
    /// A request's response must have come by then.
    Request(RequestId),
    /// The next step of the hole punch to this address.
    Punch(SocketAddr),
    /// A stream's header, or the keynode frame it began, must be complete
    /// by then.
    Frame(StreamHandle),
}

/// What the node's next deadline is for.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum NodeTimer {
    /// One of the manager's timers.
    Manager(Timer),
    /// One of the net layer's own.
    Net(NetTimer),
    /// A QUIC connection's (loss detection, idle, keep-alive, ...).
    Connection(ConnId),
    /// mDNS: an announcement, a jittered response or a query's resend.
    Mdns,
}

/// A deadline table: at most one deadline per timer `T`, visited in
/// (deadline, timer) order. The net layer's own ([`NetTimer`]) and the
/// connections' (QUIC's loss detection, idle and keep-alive deadlines, by
/// [`ConnId`]) are two such tables: setting, moving and popping are
/// O(log n), so nothing scans every connection to find what is due.
#[derive(Debug)]
pub(super) struct NetTimers<T = NetTimer> {
    by_deadline: BTreeSet<(Instant, T)>,
    at: BTreeMap<T, Instant>,
}

impl<T> Default for NetTimers<T> {
    fn default() -> Self {
        Self {
            by_deadline: BTreeSet::new(),
            at: BTreeMap::new(),
        }
    }
}

impl<T: Ord + Copy> NetTimers<T> {
    /// Sets (or moves) `timer` to `at`.
    pub(super) fn set(&mut self, timer: T, at: Instant) {
        if self.at.get(&timer) == Some(&at) {
            return;
        }
        if let Some(old) = self.at.insert(timer, at) {
            self.by_deadline.remove(&(old, timer));
        }
        self.by_deadline.insert((at, timer));
    }

    /// Stops `timer`, if set.
    pub(super) fn cancel(&mut self, timer: T) {
        if let Some(old) = self.at.remove(&timer) {
            self.by_deadline.remove(&(old, timer));
        }
    }

    /// Whether `timer` is set.
    pub(super) fn is_set(&self, timer: T) -> bool {
        self.at.contains_key(&timer)
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<(Instant, T)> {
        self.by_deadline.first().copied()
    }

    /// Stops and returns the earliest timer due at `now`, if any.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let &(at, timer) = self.by_deadline.first()?;
        if at > now {
            return None;
        }
        self.by_deadline.remove(&(at, timer));
        self.at.remove(&timer);
        Some(timer)
    }

    /// Timers set.
    pub(super) fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_deadline_per_timer_and_in_order() {
        #[allow(clippy::disallowed_methods)] // a test's arbitrary origin
        let t0 = Instant::now();
        let mut timers = NetTimers::default();
        timers.set(NetTimer::Request(RequestId(2)), t0 + Duration::from_secs(2));
        timers.set(NetTimer::Request(RequestId(1)), t0 + Duration::from_secs(3));
        timers.set(NetTimer::Request(RequestId(1)), t0 + Duration::from_secs(1));
        assert_eq!(
            timers.next(),
            Some((t0 + Duration::from_secs(1), NetTimer::Request(RequestId(1))))
        );
        assert_eq!(timers.pop_due(t0), None);
        timers.cancel(NetTimer::Request(RequestId(1)));
        let late = t0 + Duration::from_secs(5);
        assert_eq!(timers.pop_due(late), Some(NetTimer::Request(RequestId(2))));
        assert_eq!(timers.pop_due(late), None);
        assert_eq!(timers.next(), None);
    }
}
