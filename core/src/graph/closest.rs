//! The closest-nodes query: the `limit` contacts nearest a target by XOR
//! distance, exact, taking whole buckets in the order of their distance to
//! the target so that only the contacts in hand are sorted.

use super::NodeGraph;
use crate::bucket::{Bucket, BucketEntry};
use crate::id::{BucketIndex, Distance, NodeId};

impl NodeGraph {
    /// The `limit` contacts closest to `target` by XOR distance, closest
    /// first; exact. `target` itself is included if it is a contact.
    ///
    /// Spec: `NodeGraph.getClosestNodes`. Buckets cover disjoint ranges of
    /// distance to `target`, and those ranges are totally ordered (see
    /// `bucket_rank`), so whole buckets are taken in rank order until
    /// `limit` contacts are in hand, and only those are sorted.
    pub fn closest(&self, target: &NodeId, limit: usize) -> Vec<&BucketEntry> {
        self.closest_where(target, limit, |_| true)
    }

    /// As [`NodeGraph::closest`], among the contacts for which `keep` holds.
    pub fn closest_where(
        &self,
        target: &NodeId,
        limit: usize,
        mut keep: impl FnMut(&BucketEntry) -> bool,
    ) -> Vec<&BucketEntry> {
        if limit == 0 {
            return Vec::new();
        }
        let to_target = self.own.distance(target);
        let mut order: Vec<(u16, &Bucket)> = self
            .buckets
            .iter()
            .filter(|(_, b)| !b.contacts.is_empty())
            .map(|(i, b)| (bucket_rank(&to_target, *i), b))
            .collect();
        order.sort_unstable_by_key(|(rank, _)| *rank);
        // Whole buckets in rank order until they hold `limit` contacts; then
        // the closest of those that pass `keep`. `keep` looks into each
        // contact's addresses (a pointer away), so it runs on the closest
        // first and only as far as needed; if too few pass, the next buckets
        // are taken in.
        let mut found: Vec<(Distance, &BucketEntry)> = Vec::new();
        let mut kept: Vec<&BucketEntry> = Vec::with_capacity(limit);
        let mut buckets = order.into_iter().map(|(_, b)| b).peekable();
        while kept.len() < limit && buckets.peek().is_some() {
            found.clear();
            for bucket in buckets.by_ref() {
                found.extend(
                    bucket
                        .contacts
                        .iter()
                        .map(|e| (e.node_id.distance(target), e)),
                );
                if found.len() >= limit - kept.len() {
                    break;
                }
            }
            // Sort only the closest `need` (a bucket may hold up to
            // `Config::MAX_K`); the rest only if too few of those pass.
            let need = (limit - kept.len()).min(found.len());
            if found.len() > need && need > 0 {
                found.select_nth_unstable_by_key(need - 1, |(d, _)| *d);
            }
            let (head, tail) = found.split_at_mut(need);
            head.sort_unstable_by_key(|(d, _)| *d);
            for (_, entry) in head.iter() {
                if keep(entry) {
                    kept.push(entry);
                }
            }
            if kept.len() < limit && !tail.is_empty() {
                tail.sort_unstable_by_key(|(d, _)| *d);
                for (_, entry) in tail.iter() {
                    if kept.len() == limit {
                        break;
                    }
                    if keep(entry) {
                        kept.push(entry);
                    }
                }
            }
        }
        kept
    }
}

/// The position of bucket `index` in the order of distance to a target, where
/// `to_target` is the distance from the own NodeId to the target.
///
/// A contact `n` in bucket `i` is at `(n ^ own) ^ to_target` from the target.
/// With `b` the highest bit of `to_target`: bucket `b` holds everything below
/// `2^b`; a bucket `i < b` lies in `[2^b, 2^(b+1))`, below `to_target` when bit
/// `i` of `to_target` is set (closer for larger `i`) and above it otherwise
/// (closer for smaller `i`); a bucket `i > b` lies in `[2^i, 2^(i+1))`. When the
/// target is the own NodeId, bucket `i` is simply `[2^i, 2^(i+1))`.
fn bucket_rank(to_target: &Distance, index: BucketIndex) -> u16 {
    let i = u16::from(index.get());
    let Some(b) = to_target.bucket_index() else {
        return i;
    };
    let b = u16::from(b.get());
    if i == b {
        0
    } else if i < b && to_target.bit(index) {
        b - i
    } else if i < b {
        b + 1 + i
    } else {
        i + b + 1
    }
}
