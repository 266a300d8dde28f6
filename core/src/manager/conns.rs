//! The connection table: which connections are up, to whom, and how many
//! uses each has.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::contact::ContactMode;
use crate::id::NodeId;
use crate::manager::api::{ConnId, LeaseId};

/// A connection that is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Conn {
    pub(crate) peer: NodeId,
    pub(crate) remote: SocketAddr,
    pub(crate) mode: ContactMode,
    pub(crate) leases: u32,
    /// We dialled it (an outbound connection): only such a peer may ask us
    /// to punch (see `serve`), since anyone can connect in with a fresh key.
    pub(crate) dialled: bool,
    /// Over a relay this node dialled through: which, and the peer's
    /// address as the relay sees it (`remote` is a mapped address,
    /// meaningless outside).
    pub(crate) relayed: Option<crate::manager::dials::RelayedVia>,
}

impl Conn {
    /// The peer's address to report: where the relay sees it for a
    /// relayed connection this node dialled, else the remote address.
    pub(crate) fn shown_remote(&self) -> SocketAddr {
        self.relayed.map_or(self.remote, |r| r.seen_at)
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ConnTable {
    conns: BTreeMap<ConnId, Conn>,
    by_peer: BTreeMap<NodeId, BTreeSet<ConnId>>,
    leases: BTreeMap<LeaseId, ConnId>,
}

impl ConnTable {
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Uses of connections handed out and not released.
    pub(crate) fn leases_held(&self) -> usize {
        self.leases.len()
    }

    pub(crate) fn get(&self, conn: ConnId) -> Option<&Conn> {
        self.conns.get(&conn)
    }

    pub(crate) fn insert(&mut self, id: ConnId, conn: Conn) {
        self.by_peer.entry(conn.peer).or_default().insert(id);
        self.conns.insert(id, conn);
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if let Some(set) = self.by_peer.get_mut(&conn.peer) {
            set.remove(&id);
            if set.is_empty() {
                self.by_peer.remove(&conn.peer);
            }
        }
        Some(conn)
    }

    /// How many connections to `peer` are up.
    pub(crate) fn count_to(&self, peer: &NodeId) -> usize {
        self.by_peer.get(peer).map_or(0, BTreeSet::len)
    }

    /// The node's primary connection: the one with the smallest id that
    /// is not relayed, else the relayed one with the smallest id (a direct
    /// path, once there is one, takes over from a relay: new uses go
    /// there, and the relayed connection idles out when its uses end).
    pub(crate) fn primary(&self, peer: &NodeId) -> Option<(ConnId, &Conn)> {
        let set = self.by_peer.get(peer)?;
        let mut first = None;
        for id in set {
            let c = self.conns.get(id)?;
            if c.mode != ContactMode::Relay {
                return Some((*id, c));
            }
            first = first.or(Some((*id, c)));
        }
        first
    }

    pub(crate) fn is_primary(&self, id: ConnId) -> bool {
        self.conns
            .get(&id)
            .and_then(|c| self.primary(&c.peer))
            .is_some_and(|(p, _)| p == id)
    }

    /// The relayed connections to `peer`.
    pub(crate) fn relayed_to(&self, peer: &NodeId) -> Vec<ConnId> {
        self.by_peer.get(peer).map_or_else(Vec::new, |set| {
            set.iter()
                .filter(|id| {
                    self.conns
                        .get(id)
                        .is_some_and(|c| c.mode == ContactMode::Relay)
                })
                .copied()
                .collect()
        })
    }

    /// Connections this node dialled through a relay, up to `limit`, in id order.
    pub(crate) fn relayed_outbound(&self, limit: usize) -> Vec<(ConnId, &Conn)> {
        self.conns
            .iter()
            .filter(|(_, c)| c.mode == ContactMode::Relay && c.dialled)
            .take(limit)
            .map(|(id, c)| (*id, c))
            .collect()
    }

    pub(crate) fn is_connected(&self, peer: &NodeId) -> bool {
        self.by_peer.contains_key(peer)
    }

    /// Whether a connection this node dialled to `peer` is up.
    pub(crate) fn has_outbound(&self, peer: &NodeId) -> bool {
        self.by_peer.get(peer).is_some_and(|set| {
            set.iter()
                .any(|id| self.conns.get(id).is_some_and(|c| c.dialled))
        })
    }

    /// A connection to `peer` on a path of its own (not through a relay):
    /// the smallest id of those.
    pub(crate) fn unrelayed(&self, peer: &NodeId) -> Option<(ConnId, &Conn)> {
        self.by_peer.get(peer)?.iter().find_map(|id| {
            self.conns
                .get(id)
                .filter(|c| !crate::net::is_relayed(&c.remote))
                .map(|c| (*id, c))
        })
    }

    /// Connected nodes, closest to `target` first, at most `limit`.
    pub(crate) fn closest_peers(&self, target: &NodeId, limit: usize) -> Vec<NodeId> {
        self.closest_peers_where(target, limit, |_| true)
    }

    /// Nodes connected on a path of their own (not only through a relay),
    /// closest to `target` first, at most `limit`.
    pub(crate) fn closest_unrelayed_peers(&self, target: &NodeId, limit: usize) -> Vec<NodeId> {
        self.closest_peers_where(target, limit, |peer| self.unrelayed(peer).is_some())
    }

    fn closest_peers_where(
        &self,
        target: &NodeId,
        limit: usize,
        keep: impl Fn(&NodeId) -> bool,
    ) -> Vec<NodeId> {
        if limit == 0 {
            return Vec::new();
        }
        // One pass keeping the `limit` closest in order: no list of every
        // peer (a node mid-join has hundreds of connections).
        let mut closest: Vec<(crate::id::Distance, NodeId)> =
            Vec::with_capacity(limit.min(self.by_peer.len()));
        for peer in self.by_peer.keys() {
            let distance = peer.distance(target);
            if closest.len() >= limit {
                if closest.last().is_some_and(|(d, _)| distance >= *d) {
                    continue;
                }
                if !keep(peer) {
                    continue;
                }
                closest.pop();
            } else if !keep(peer) {
                continue;
            }
            let at = closest.partition_point(|(d, _)| *d < distance);
            closest.insert(at, (distance, *peer));
        }
        closest.into_iter().map(|(_, p)| p).collect()
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.keys().copied()
    }

    /// Records a use of `conn`; returns its new number of uses.
    pub(crate) fn lease(&mut self, conn: ConnId, lease: LeaseId) -> Option<u32> {
        let c = self.conns.get_mut(&conn)?;
        c.leases += 1;
        self.leases.insert(lease, conn);
        Some(c.leases)
    }

    /// Ends a use; returns the connection and its remaining uses, if it is still up.
    pub(crate) fn release(&mut self, lease: LeaseId) -> Option<(ConnId, u32)> {
        let conn = self.leases.remove(&lease)?;
        let c = self.conns.get_mut(&conn)?;
        c.leases = c.leases.saturating_sub(1);
        Some((conn, c.leases))
    }

    pub(crate) fn clear(&mut self) {
        self.conns.clear();
        self.by_peer.clear();
        self.leases.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(peer: u8) -> Conn {
        Conn {
            peer: NodeId::from_bytes([peer; 32]),
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
            mode: ContactMode::Direct,
            leases: 0,
            dialled: false,
            relayed: None,
        }
    }

    #[test]
    fn closest_peers_are_the_limit_closest_in_order() {
        let mut table = ConnTable::default();
        for b in 0..40u8 {
            let mut c = conn(0);
            c.peer = NodeId::from_bytes([b.wrapping_mul(37); 32]);
            table.insert(ConnId(u64::from(b)), c);
        }
        let target = NodeId::from_bytes([90; 32]);
        let mut all: Vec<NodeId> = table.by_peer.keys().copied().collect();
        all.sort_by_key(|p| p.distance(&target));
        for limit in [0, 1, 5, 39, 40, 41] {
            let want: Vec<NodeId> = all.iter().take(limit).copied().collect();
            assert_eq!(table.closest_peers(&target, limit), want, "limit {limit}");
        }
    }

    #[test]
    fn primary_is_the_smallest_id_and_leases_count() {
        let mut table = ConnTable::default();
        table.insert(ConnId(5), conn(1));
        table.insert(ConnId(3), conn(1));
        table.insert(ConnId(4), conn(2));
        let peer = NodeId::from_bytes([1; 32]);
        assert_eq!(table.primary(&peer).map(|(id, _)| id), Some(ConnId(3)));
        assert!(table.is_primary(ConnId(3)) && !table.is_primary(ConnId(5)));
        assert_eq!(table.lease(ConnId(3), LeaseId(1)), Some(1));
        assert_eq!(table.lease(ConnId(3), LeaseId(2)), Some(2));
        assert_eq!(table.release(LeaseId(1)), Some((ConnId(3), 1)));
        assert_eq!(table.release(LeaseId(1)), None);
        table.remove(ConnId(3));
        assert_eq!(table.primary(&peer).map(|(id, _)| id), Some(ConnId(5)));
        table.remove(ConnId(5));
        assert!(!table.is_connected(&peer));
        assert_eq!(table.len(), 1);
    }
}
