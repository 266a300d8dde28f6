//! A bucket refresh's lookup fills its bucket evenly: when the bucket holds
//! its share of the target's sub-range, the lookup turns to a random NodeId
//! in the emptiest sub-range.
//!
//! A refresh looks up a random NodeId in its bucket only to meet the nodes
//! on the way: they become its contacts. Heading for one target, they all
//! end up near it, in a few of the bucket's sub-ranges (see
//! `Config::bucket_diversity_bits`), and lookups through a bucket that
//! covers its range unevenly take more hops. Apart from the lookup because
//! it is the one rule that reads the routing table and draws randomness.

use rand::Rng;

use crate::graph::NodeGraph;
use crate::id::{BucketIndex, NodeId};

/// The fill of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fill {
    bucket: BucketIndex,
    /// The bucket's sub-ranges are `2^bits`.
    bits: u8,
    /// The contacts a sub-range holds when the bucket is evenly filled.
    share: u16,
}

/// What the fill asks of the lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Turn {
    /// Keep the target: its sub-range still lacks contacts.
    Stay,
    /// The bucket is evenly filled: nothing to turn to, ever again.
    Even,
    /// Turn to this target.
    To(NodeId),
}

impl Fill {
    /// The fill of `bucket` over `2^diversity_bits` sub-ranges (fewer in the
    /// closest buckets); none if the bucket has no sub-ranges.
    pub(crate) fn new(bucket: BucketIndex, diversity_bits: u8, k: usize) -> Option<Self> {
        let bits = diversity_bits
            .min(bucket.get())
            .min(crate::Config::MAX_DIVERSITY_BITS);
        if bits == 0 {
            return None;
        }
        let share = u16::try_from(k.div_ceil(1 << bits)).unwrap_or(u16::MAX);
        Some(Self {
            bucket,
            bits,
            share,
        })
    }

    /// Where a lookup heading for `target` should head now, given the
    /// bucket's contacts in `graph`; draws from `rng` only to turn.
    pub(super) fn turn<R: Rng + ?Sized>(
        &self,
        target: &NodeId,
        graph: &NodeGraph,
        rng: &mut R,
    ) -> Turn {
        let Self {
            bucket,
            bits,
            share,
        } = *self;
        let own = graph.own_node_id();
        let counts = crate::graph::sub_range_counts(&own, bucket, graph.bucket(bucket), bits);
        let current = own.distance(target).bits_below(bucket, bits) as usize;
        if counts.get(current).copied().unwrap_or(0) < share {
            return Turn::Stay;
        }
        let sub_ranges = counts.get(..1 << bits).unwrap_or(&[]);
        let fewest = sub_ranges.iter().copied().min().unwrap_or(0);
        if fewest >= share {
            return Turn::Even;
        }
        // Among the emptiest sub-ranges, a random one.
        let emptiest: Vec<usize> = (0..sub_ranges.len())
            .filter(|&i| sub_ranges.get(i) == Some(&fewest))
            .collect();
        let pick = emptiest
            .get(rng.random_range(0..emptiest.len()))
            .copied()
            .unwrap_or(0);
        Turn::To(own.random_in_sub_range(bucket, bits, pick as u32, rng))
    }
}
