//! The deadline queue: one deadline per [`Timer`], ordered by time then key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::manager::api::{ConnId, OpId};
use crate::store::TaskKey;

/// Why the manager wants to wake up. One deadline per value, so a task of a
/// kind exists at most once per bucket by construction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Timer {
    /// A scheduled task is due.
    Task(TaskKey),
    /// An operation's deadline.
    OpDeadline(OpId),
    /// A connection's idle time to live ran out.
    ConnIdle(ConnId),
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    by_key: BTreeMap<Timer, Instant>,
    by_time: BTreeSet<(Instant, Timer)>,
}

impl Timers {
    /// Sets (or moves) the deadline of `timer`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(old) = self.by_key.insert(timer, at) {
            self.by_time.remove(&(old, timer));
        }
        self.by_time.insert((at, timer));
    }

    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(old) = self.by_key.remove(&timer) {
            self.by_time.remove(&(old, timer));
        }
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.by_key.get(&timer).copied()
    }

    pub(crate) fn next(&self) -> Option<(Instant, Timer)> {
        self.by_time.first().copied()
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (at, timer) = *self.by_time.first()?;
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, timer));
        self.by_key.remove(&timer);
        Some(timer)
    }

    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.by_time.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BucketIndex;
    use std::time::Duration;

    #[test]
    fn one_deadline_per_timer_earliest_first() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let refresh = Timer::Task(TaskKey::RefreshBucket(BucketIndex::new(3)));
        timers.set(refresh, t0 + Duration::from_secs(10));
        timers.set(refresh, t0 + Duration::from_secs(5));
        timers.set(Timer::OpDeadline(OpId(1)), t0 + Duration::from_secs(7));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some((t0 + Duration::from_secs(5), refresh)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(4)), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(8)), Some(refresh));
        assert_eq!(
            timers.pop_due(t0 + Duration::from_secs(8)),
            Some(Timer::OpDeadline(OpId(1)))
        );
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(8)), None);
    }
}
