//! Work of which at most one runs at a time: the garbage collection of a
//! bucket, the refresh of a bucket, the connection check, and the claim
//! exchange that writes on the sigchain. One set keyed by a closed enum,
//! with the reverse index from an operation to what it holds, so an ending
//! operation lets go of its jobs without a scan.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::BucketIndex;
use crate::manager::api::OpId;

/// A job of which at most one runs.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Job {
    /// `garbage_collect_bucket` of a bucket.
    Gc(BucketIndex),
    /// `refresh_bucket` of a bucket.
    Refresh(BucketIndex),
    /// The periodic connection check.
    CheckConnections,
    /// The claim exchange building on the sigchain's head.
    ChainWriter,
}

impl Job {
    /// The smallest job, to start a range of an operation's.
    const MIN: Job = Job::Gc(BucketIndex::new(0));
}

/// The jobs running, and who waits for the next refresh of a bucket.
#[derive(Debug, Default)]
pub(crate) struct Running {
    jobs: BTreeMap<Job, OpId>,
    /// What each operation holds (one job in practice).
    by_op: BTreeSet<(OpId, Job)>,
    /// Operations waiting for "the next refresh of this bucket" (an eager
    /// `update_refresh_bucket`, a blocking sync); they watch that refresh
    /// once it starts. They stay until it starts, ended or not: a waiter
    /// also holds the bucket's refresh where it was due
    /// ([`Running::awaits_refresh`]).
    refresh_waiters: BTreeMap<BucketIndex, Vec<OpId>>,
}

impl Running {
    /// The operation running `job`.
    pub(crate) fn get(&self, job: Job) -> Option<OpId> {
        self.jobs.get(&job).copied()
    }

    pub(crate) fn is_running(&self, job: Job) -> bool {
        self.jobs.contains_key(&job)
    }

    /// `op` runs `job` (which nobody runs).
    pub(crate) fn start(&mut self, job: Job, op: OpId) {
        if let Some(previous) = self.jobs.insert(job, op) {
            self.unindex(previous, job);
        }
        self.by_op.insert((op, job));
    }

    /// `op` lets go of `job`, if it runs it (it goes on with other work:
    /// committing its result).
    pub(crate) fn release(&mut self, job: Job, op: OpId) {
        if self.jobs.get(&job) == Some(&op) {
            self.jobs.remove(&job);
            self.unindex(op, job);
        }
    }

    /// `op` ended: the jobs it held are free.
    pub(crate) fn end_op(&mut self, op: OpId) {
        while let Some(&(o, job)) = self.by_op.range((op, Job::MIN)..).next() {
            if o != op {
                break;
            }
            self.by_op.remove(&(o, job));
            self.jobs.remove(&job);
        }
    }

    /// `op` waits for the next refresh of `bucket`.
    pub(crate) fn await_refresh(&mut self, bucket: BucketIndex, op: OpId) {
        self.refresh_waiters.entry(bucket).or_default().push(op);
    }

    /// Whether someone waits for the next refresh of `bucket`.
    pub(crate) fn awaits_refresh(&self, bucket: BucketIndex) -> bool {
        self.refresh_waiters.contains_key(&bucket)
    }

    /// The operations waiting for the next refresh of `bucket` (it starts).
    pub(crate) fn take_refresh_waiters(&mut self, bucket: BucketIndex) -> Vec<OpId> {
        self.refresh_waiters.remove(&bucket).unwrap_or_default()
    }

    pub(crate) fn clear(&mut self) {
        self.jobs.clear();
        self.by_op.clear();
        self.refresh_waiters.clear();
    }

    fn unindex(&mut self, op: OpId, job: Job) {
        self.by_op.remove(&(op, job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(b: u8) -> BucketIndex {
        BucketIndex::new(b)
    }

    #[test]
    fn a_job_runs_once_and_ends_with_its_op() {
        let mut running = Running::default();
        running.start(Job::Gc(bucket(3)), OpId(1));
        running.start(Job::ChainWriter, OpId(2));
        assert_eq!(running.get(Job::Gc(bucket(3))), Some(OpId(1)));
        assert!(!running.is_running(Job::Gc(bucket(4))));
        running.end_op(OpId(1));
        assert!(!running.is_running(Job::Gc(bucket(3))));
        assert_eq!(running.get(Job::ChainWriter), Some(OpId(2)));
    }

    #[test]
    fn a_released_job_is_free_while_its_op_goes_on() {
        let mut running = Running::default();
        running.start(Job::Refresh(bucket(9)), OpId(5));
        running.release(Job::Refresh(bucket(9)), OpId(4));
        assert!(running.is_running(Job::Refresh(bucket(9))), "not its job");
        running.release(Job::Refresh(bucket(9)), OpId(5));
        running.start(Job::Refresh(bucket(9)), OpId(6));
        // The first op's end does not free the second's job.
        running.end_op(OpId(5));
        assert_eq!(running.get(Job::Refresh(bucket(9))), Some(OpId(6)));
        assert_eq!(running.by_op.len(), 1);
    }

    #[test]
    fn refresh_waiters_are_taken_once() {
        let mut running = Running::default();
        running.await_refresh(bucket(1), OpId(7));
        running.await_refresh(bucket(1), OpId(8));
        assert!(running.awaits_refresh(bucket(1)));
        assert_eq!(
            running.take_refresh_waiters(bucket(1)),
            vec![OpId(7), OpId(8)]
        );
        assert!(!running.awaits_refresh(bucket(1)));
    }
}
