//! The node's QUIC connections, with what it takes to keep the work per
//! datagram flat as connections grow: the set of connections that may have
//! something to do ("dirty": a datagram or a timer reached them, or the node
//! touched them through [`ConnTable::get_mut`]) and a deadline table of
//! their QUIC timers. A drive moves only the dirty connections along, and
//! [`super::Node::handle_timeout`] only those whose deadline passed: no
//! input scans every connection.

use std::collections::btree_map::{Iter, Values};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::connection::QuicConn;
use super::timers::NetTimers;
use crate::manager::ConnId;

/// The connections, by id, with the dirty set and their deadlines.
#[derive(Default)]
pub(super) struct ConnTable {
    conns: BTreeMap<ConnId, QuicConn>,
    /// Connections to drive at the next drive.
    dirty: BTreeSet<ConnId>,
    /// Each connection's next QUIC deadline, as of its last drive.
    deadlines: NetTimers<ConnId>,
}

impl ConnTable {
    /// A connection, to read: it stays as it is.
    pub(super) fn get(&self, id: &ConnId) -> Option<&QuicConn> {
        self.conns.get(id)
    }

    /// A connection, to change: it is driven at the next drive (whatever
    /// the caller does may give it something to send or a new deadline).
    pub(super) fn get_mut(&mut self, id: &ConnId) -> Option<&mut QuicConn> {
        let c = self.conns.get_mut(id)?;
        self.dirty.insert(*id);
        Some(c)
    }

    /// A connection, for the drive itself: not marked dirty again.
    pub(super) fn get_for_drive(&mut self, id: &ConnId) -> Option<&mut QuicConn> {
        self.conns.get_mut(id)
    }

    /// A new connection, driven at the next drive.
    pub(super) fn insert(&mut self, id: ConnId, conn: QuicConn) {
        self.conns.insert(id, conn);
        self.dirty.insert(id);
    }

    /// Forgets a connection: it leaves every table.
    pub(super) fn remove(&mut self, id: &ConnId) -> Option<QuicConn> {
        self.dirty.remove(id);
        self.deadlines.cancel(*id);
        self.conns.remove(id)
    }

    pub(super) fn values(&self) -> Values<'_, ConnId, QuicConn> {
        self.conns.values()
    }

    pub(super) fn iter(&self) -> Iter<'_, ConnId, QuicConn> {
        self.conns.iter()
    }

    /// Whether any connection waits to be driven.
    pub(super) fn any_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The connections to drive now, in id order; the set is left empty.
    pub(super) fn take_dirty(&mut self) -> BTreeSet<ConnId> {
        std::mem::take(&mut self.dirty)
    }

    /// Marks a connection to be driven again (it stopped at its share of
    /// datagrams).
    pub(super) fn mark_dirty(&mut self, id: ConnId) {
        if self.conns.contains_key(&id) {
            self.dirty.insert(id);
        }
    }

    /// Records a connection's next QUIC deadline, after it was driven.
    pub(super) fn refresh_deadline(&mut self, id: ConnId) {
        match self.conns.get_mut(&id).and_then(|c| c.conn.poll_timeout()) {
            Some(at) => self.deadlines.set(id, at),
            None => self.deadlines.cancel(id),
        }
    }

    /// Refreshes the deadlines of connections changed since their drive
    /// (they stay dirty), so that [`ConnTable::next_deadline`] is exact.
    pub(super) fn refresh_dirty_deadlines(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for id in &dirty {
            self.refresh_deadline(*id);
        }
        self.dirty = dirty;
    }

    /// The earliest connection deadline.
    pub(super) fn next_deadline(&self) -> Option<(Instant, ConnId)> {
        self.deadlines.next()
    }

    /// A connection whose deadline is due at `now`: its deadline is taken
    /// off (the drive after its timeout sets the next) and it is marked
    /// dirty.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<ConnId> {
        let id = self.deadlines.pop_due(now)?;
        self.dirty.insert(id);
        Some(id)
    }

    /// The sizes of the tables: connections, dirty, deadlines.
    pub(super) fn sizes(&self) -> (usize, usize, usize) {
        (self.conns.len(), self.dirty.len(), self.deadlines.len())
    }
}
