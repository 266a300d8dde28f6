//! Bucket diversity: a full bucket gives up a contact of its most crowded
//! sub-range for a node of a sparse one, so a bucket cannot be filled with
//! nodes from one corner of its range (see `Config::bucket_diversity_bits`).

use crate::bucket::{Bucket, BucketEntry};
use crate::config::Config;
use crate::id::{BucketIndex, NodeId};

/// How many of `contacts` (of bucket `index` of `own`'s table) fall in each
/// of the bucket's `2^bits` sub-ranges (`bits` at most
/// `Config::MAX_DIVERSITY_BITS`; the rest of the array stays zero).
pub(crate) fn sub_range_counts(
    own: &NodeId,
    index: BucketIndex,
    contacts: &[BucketEntry],
    bits: u8,
) -> [u16; 1 << Config::MAX_DIVERSITY_BITS] {
    let own_bits = own.bits_below(index, bits);
    let mut counts = [0u16; 1 << Config::MAX_DIVERSITY_BITS];
    for entry in contacts {
        let sub = (own_bits ^ entry.node_id.bits_below(index, bits)) as usize;
        if let Some(c) = counts.get_mut(sub) {
            *c += 1;
        }
    }
    counts
}

/// Which contact of the full `bucket` (number `index` of `own`'s table) a
/// new node should replace to spread the bucket more evenly over its range,
/// if any: the least recently updated contact of the most crowded
/// sub-range, when the new node's sub-range holds at least two fewer
/// contacts (so the move strictly evens the spread and evictions end once
/// it is even). See `Config::bucket_diversity_bits`.
pub(super) fn diverse_eviction(
    own: &NodeId,
    index: BucketIndex,
    bucket: &Bucket,
    node_id: &NodeId,
    bits: u8,
) -> Option<usize> {
    let bits = bits.min(index.get()).min(Config::MAX_DIVERSITY_BITS);
    if bits == 0 {
        return None;
    }
    let own_bits = own.bits_below(index, bits);
    let sub_range = |id: &NodeId| (own_bits ^ id.bits_below(index, bits)) as usize;
    let counts = sub_range_counts(own, index, &bucket.contacts, bits);
    // The most crowded sub-range; ties go to the lowest number (deterministic).
    let (crowded, most) =
        counts.iter().enumerate().fold(
            (0, 0),
            |best, (i, &c)| if c > best.1 { (i, c) } else { best },
        );
    let mine = counts.get(sub_range(node_id)).copied().unwrap_or(0);
    if mine + 2 > most {
        return None;
    }
    // Contacts are kept oldest first: the first in the crowded sub-range.
    bucket
        .contacts
        .iter()
        .position(|e| sub_range(&e.node_id) == crowded)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addr, data, small_graph};
    use super::super::{Change, GraphUpdate, NodeGraph, NodeGraphSpace, SetContactError};
    use crate::config::Config;
    use crate::id::{BucketIndex, NodeId};
    use crate::store::StoreOp;

    /// A NodeId in sub-range `sub` (of 16) of bucket 255 of the zero id.
    fn far_in(sub: u8, n: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = 0x80 | (sub << 3);
        b[31] = n;
        NodeId::from_bytes(b)
    }

    #[test]
    fn a_full_bucket_makes_room_for_an_empty_sub_range() {
        let mut g = small_graph(4, 2);
        for n in 1..=4 {
            let _ = g.set(far_in(0, n), addr(1), data(1)).unwrap();
        }
        let _ = g.set(far_in(0, 2), addr(1), data(2)).unwrap(); // now the newest
        // Same crowded sub-range: the bucket stays as it is.
        assert!(matches!(
            g.set(far_in(0, 9), addr(1), data(3)),
            Err(SetContactError::BucketFull { .. })
        ));
        // An empty sub-range: the oldest of the crowded one makes room.
        let up = g.set(far_in(5, 1), addr(1), data(3)).unwrap();
        assert_eq!(
            up.change,
            Change::Replaced {
                evicted: far_in(0, 1)
            }
        );
        assert!(up.ops.contains(&StoreOp::DeleteContact {
            space: NodeGraphSpace::Zero,
            node_id: far_in(0, 1)
        }));
        assert_eq!(g.len(), 4);
        assert!(g.contains(&far_in(5, 1)) && g.contains(&far_in(0, 2)));
    }

    #[test]
    fn without_diversity_a_full_bucket_keeps_its_contacts() {
        let config = Config {
            k: 4,
            bucket_diversity_bits: 0,
            ..Config::default()
        };
        let mut g = NodeGraph::new(NodeId::from_bytes([0; 32]), &config).unwrap();
        for n in 1..=4 {
            let _ = g.set(far_in(0, n), addr(1), data(1)).unwrap();
        }
        assert!(matches!(
            g.set(far_in(5, 1), addr(1), data(3)),
            Err(SetContactError::BucketFull { .. })
        ));
    }

    #[test]
    fn diversity_evictions_end_once_the_bucket_is_even() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut g = small_graph(20, 0);
        let own = g.own_node_id();
        let bucket = BucketIndex::FARTHEST;
        let offer = |g: &mut NodeGraph, rng: &mut rand_chacha::ChaCha8Rng| {
            let id = own.random_in_bucket(bucket, rng);
            matches!(
                g.set(id, addr(1), data(1)),
                Ok(GraphUpdate {
                    change: Change::Replaced { .. },
                    ..
                })
            )
        };
        // Start clustered, as a refresh lookup leaves a bucket: all in one sub-range.
        for _ in 0..20 {
            let id = own.random_in_sub_range(bucket, 4, 3, &mut rng);
            let _ = g.set(id, addr(1), data(1)).unwrap();
        }
        let mut evictions = 0;
        for _ in 0..2000 {
            evictions += usize::from(offer(&mut g, &mut rng));
        }
        let mut counts = [0usize; 16];
        for e in g.bucket(bucket) {
            counts[own.distance(&e.node_id).bits_below(bucket, 4) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert_eq!(g.bucket(bucket).len(), 20);
        assert!(max - min <= 1, "uneven after 2000 offers: {counts:?}");
        // Each eviction strictly evens the spread, so there were few.
        assert!(evictions < 40, "{evictions} evictions");
        // Once even, no stream of new nodes flushes the bucket.
        let before: Vec<NodeId> = g.bucket(bucket).iter().map(|e| e.node_id).collect();
        let later = (0..1000).filter(|_| offer(&mut g, &mut rng)).count();
        assert_eq!(later, 0);
        let after: Vec<NodeId> = g.bucket(bucket).iter().map(|e| e.node_id).collect();
        assert_eq!(before, after);
    }
}
