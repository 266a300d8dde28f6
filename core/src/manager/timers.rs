//! The deadline queue: one deadline per [`Timer`], ordered by time then key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::id::BucketIndex;
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
    /// A relay reservation is due for renewal, or a refused relay may be
    /// asked again.
    Relays,
    /// The next round of relayed connections' upgrades.
    RelayUpgrade,
}

/// The deadlines. The 256 bucket refreshes, which exist all the time, sit
/// in an array indexed by bucket with their earliest one cached; the other
/// timers in two ordered maps. Their order is the one of `(Instant, Timer)`
/// either way: a refresh sorts before any other timer due at the same instant.
#[derive(Clone, Debug)]
pub(crate) struct Timers {
    by_key: BTreeMap<Timer, Instant>,
    by_time: BTreeSet<(Instant, Timer)>,
    refresh: Box<[Option<Instant>; BucketIndex::COUNT]>,
    /// The earliest refresh, ties to the smallest bucket.
    refresh_next: Option<(Instant, BucketIndex)>,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            by_key: BTreeMap::new(),
            by_time: BTreeSet::new(),
            refresh: Box::new([None; BucketIndex::COUNT]),
            refresh_next: None,
        }
    }
}

/// The bucket of a refresh timer.
fn refresh_bucket(timer: Timer) -> Option<BucketIndex> {
    match timer {
        Timer::Task(TaskKey::RefreshBucket(bucket)) => Some(bucket),
        _ => None,
    }
}

impl Timers {
    /// Sets (or moves) the deadline of `timer`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(bucket) = refresh_bucket(timer) {
            // 256 slots for a u8 index: always there.
            let Some(slot) = self.refresh.get_mut(usize::from(bucket.get())) else {
                return;
            };
            let old = slot.replace(at);
            match self.refresh_next {
                Some(next) if (at, bucket) < next => self.refresh_next = Some((at, bucket)),
                None => self.refresh_next = Some((at, bucket)),
                // The earliest one moved later: another may be earliest now.
                Some((_, b)) if b == bucket && old.is_some_and(|o| o < at) => {
                    self.find_refresh_next();
                }
                Some(_) => {}
            }
            return;
        }
        if let Some(old) = self.by_key.insert(timer, at) {
            self.by_time.remove(&(old, timer));
        }
        self.by_time.insert((at, timer));
    }

    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(bucket) = refresh_bucket(timer) {
            let slot = self.refresh.get_mut(usize::from(bucket.get()));
            if slot.and_then(Option::take).is_some()
                && self.refresh_next.is_some_and(|(_, b)| b == bucket)
            {
                self.find_refresh_next();
            }
            return;
        }
        if let Some(old) = self.by_key.remove(&timer) {
            self.by_time.remove(&(old, timer));
        }
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        match refresh_bucket(timer) {
            Some(bucket) => self
                .refresh
                .get(usize::from(bucket.get()))
                .copied()
                .flatten(),
            None => self.by_key.get(&timer).copied(),
        }
    }

    pub(crate) fn next(&self) -> Option<(Instant, Timer)> {
        let refresh = self
            .refresh_next
            .map(|(at, bucket)| (at, Timer::Task(TaskKey::RefreshBucket(bucket))));
        let other = self.by_time.first().copied();
        match (refresh, other) {
            (Some(r), Some(o)) => Some(r.min(o)),
            (r, o) => r.or(o),
        }
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let (at, timer) = self.next()?;
        if at > now {
            return None;
        }
        self.cancel(timer);
        Some(timer)
    }

    pub(crate) fn clear(&mut self) {
        self.by_key.clear();
        self.by_time.clear();
        self.refresh.fill(None);
        self.refresh_next = None;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len() + self.refresh.iter().filter(|r| r.is_some()).count()
    }

    fn find_refresh_next(&mut self) {
        self.refresh_next = self
            .refresh
            .iter()
            .zip(BucketIndex::all())
            .filter_map(|(at, bucket)| at.map(|at| (at, bucket)))
            .min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    /// The array of refreshes and the maps give the order a single
    /// `BTreeSet<(Instant, Timer)>` would.
    #[test]
    fn refreshes_and_other_timers_interleave_like_one_ordered_set() {
        use rand::{Rng, SeedableRng};
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut timers = Timers::default();
        let mut model: BTreeMap<Timer, Instant> = BTreeMap::new();
        for _ in 0..20_000 {
            let timer = match rng.random_range(0..4) {
                0 | 1 => Timer::Task(TaskKey::RefreshBucket(BucketIndex::new(
                    rng.random_range(0..8),
                ))),
                2 => Timer::OpDeadline(OpId(rng.random_range(0..8))),
                _ => Timer::Task(TaskKey::CheckConnections),
            };
            let at = t0 + Duration::from_secs(rng.random_range(0..20));
            match rng.random_range(0..5) {
                0 => {
                    timers.cancel(timer);
                    model.remove(&timer);
                }
                1 => {
                    let now = t0 + Duration::from_secs(rng.random_range(0..20));
                    let expected = model
                        .iter()
                        .map(|(t, at)| (*at, *t))
                        .min()
                        .filter(|(at, _)| *at <= now)
                        .map(|(_, t)| t);
                    if let Some(t) = expected {
                        model.remove(&t);
                    }
                    assert_eq!(timers.pop_due(now), expected);
                }
                _ => {
                    timers.set(timer, at);
                    model.insert(timer, at);
                }
            }
            let expected = model.iter().map(|(t, at)| (*at, *t)).min();
            assert_eq!(timers.next(), expected);
            assert_eq!(timers.get(timer), model.get(&timer).copied());
            assert_eq!(timers.len(), model.len());
        }
    }
}
