//! Bucket diversity: when garbage collection makes room in a full bucket,
//! pending nodes of its sparse sub-ranges get in first, so a bucket spreads
//! over its range as contacts come and go (see `Config::bucket_diversity_bits`).
//! A live contact is never given up for diversity.

use crate::bucket::{BucketEntry, PendingNode};
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

/// The order in which garbage collection admits `pending` (the nodes taken
/// off the list of bucket `index` of `own`'s table, whose contacts are
/// `contacts`): each next one from the sub-range that then holds the fewest
/// contacts (counting those admitted before it), the newest among equals.
/// With `bits` zero, simply newest first.
///
/// Only room made by contacts that failed their ping is filled this way:
/// diversity picks among newcomers, never against a live contact.
pub(super) fn admission_order(
    own: &NodeId,
    index: BucketIndex,
    contacts: &[BucketEntry],
    mut pending: Vec<PendingNode>,
    bits: u8,
) -> Vec<PendingNode> {
    // Newest first: the order among equals, and the whole order without bits.
    pending.sort_by_key(|p| std::cmp::Reverse(p.seq));
    let bits = bits.min(index.get()).min(Config::MAX_DIVERSITY_BITS);
    if bits == 0 || pending.len() < 2 {
        return pending;
    }
    let own_bits = own.bits_below(index, bits);
    let sub_range = |id: &NodeId| (own_bits ^ id.bits_below(index, bits)) as usize;
    let mut counts = sub_range_counts(own, index, contacts, bits);
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        // The first (newest) of the least crowded: at most
        // `max_pending_per_bucket` squared steps.
        let Some(at) = (0..pending.len()).min_by_key(|&i| {
            pending
                .get(i)
                .and_then(|p| counts.get(sub_range(&p.node_id)))
                .copied()
                .unwrap_or(u16::MAX)
        }) else {
            break;
        };
        let node = pending.remove(at);
        if let Some(c) = counts.get_mut(sub_range(&node.node_id)) {
            *c = c.saturating_add(1);
        }
        ordered.push(node);
    }
    ordered
}

#[cfg(test)]
mod tests {
    use super::super::tests::{addr, data, small_graph};
    use super::super::{Change, NodeGraph, SetContactError};
    use crate::config::Config;
    use crate::id::{BucketIndex, NodeId};

    /// A NodeId in sub-range `sub` (of 16) of bucket 255 of the zero id.
    fn far_in(sub: u8, n: u8) -> NodeId {
        let mut b = [0u8; 32];
        b[0] = 0x80 | (sub << 3);
        b[31] = n;
        NodeId::from_bytes(b)
    }

    #[test]
    fn a_full_bucket_keeps_its_contacts_whatever_the_sub_range() {
        let mut g = small_graph(4, 2);
        for n in 1..=4 {
            let _ = g.set(far_in(0, n), addr(1), data(1)).unwrap();
        }
        // An empty sub-range does not make a live contact leave.
        assert!(matches!(
            g.set(far_in(5, 1), addr(1), data(3)),
            Err(SetContactError::BucketFull { .. })
        ));
        assert_eq!(g.len(), 4);
        assert!((1..=4).all(|n| g.contains(&far_in(0, n))));
    }

    #[test]
    fn room_goes_to_the_least_crowded_sub_range_first() {
        let mut g = small_graph(4, 4);
        let bucket = BucketIndex::FARTHEST;
        for n in 1..=3 {
            let _ = g.set(far_in(0, n), addr(1), data(1)).unwrap();
        }
        let _ = g.set(far_in(1, 1), addr(1), data(1)).unwrap();
        // Oldest to newest: crowded sub-range 0, then 1, then empty 7, then 0.
        for id in [far_in(0, 9), far_in(1, 9), far_in(7, 9), far_in(0, 8)] {
            let _ = g.add_pending(id, addr(1), data(2)).unwrap();
        }
        let up = g.take_pending(bucket);
        let Change::PendingTaken(order) = up.change else {
            panic!("expected PendingTaken");
        };
        let order: Vec<NodeId> = order.into_iter().map(|p| p.node_id).collect();
        assert_eq!(
            order,
            vec![far_in(7, 9), far_in(1, 9), far_in(0, 8), far_in(0, 9)]
        );
        // Without diversity: newest first.
        let config = Config {
            k: 4,
            bucket_diversity_bits: 0,
            ..Config::default()
        };
        let mut g = NodeGraph::new(NodeId::from_bytes([0; 32]), &config).unwrap();
        for n in 1..=4 {
            let _ = g.set(far_in(0, n), addr(1), data(1)).unwrap();
        }
        for id in [far_in(7, 9), far_in(0, 9)] {
            let _ = g.add_pending(id, addr(1), data(2)).unwrap();
        }
        let Change::PendingTaken(order) = g.take_pending(bucket).change else {
            panic!("expected PendingTaken");
        };
        assert_eq!(order[0].node_id, far_in(0, 9));
    }
}
