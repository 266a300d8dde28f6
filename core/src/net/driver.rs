//! The driver-facing surface of a [`super::Node`]: what a driver can report
//! ([`DriverEvent`]) and what it must do ([`NetCommand`]). Both are closed:
//! the manager's own events about connections, requests and streams, and
//! its commands to open or use them, never cross this line; the net layer
//! makes and carries them out itself.

use std::net::{IpAddr, SocketAddr};

use crate::address::Hostname;
use crate::manager::{BatchId, LeaseId, NodeEvent, OpError, OpId, OpValue, ResolveId, StoreBatch};
use crate::store::{Snapshot, StoreErrorKind};

/// A UDP datagram to send, or several of one size to one destination.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub struct Transmit {
    /// Where.
    pub destination: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
    /// The IP TTL (hop limit) to send with; `None`: the socket's own.
    pub ttl: Option<u32>,
    /// `Some(n)`: `contents` is several datagrams, each `n` bytes but the
    /// last, which may be shorter (for segmentation offload, GSO). Only
    /// after [`super::Node::set_max_segments`] asked for more than one.
    pub segment_size: Option<usize>,
}

/// Something the driver of a [`super::Node`] observed, fed with
/// [`super::Node::handle`]. Datagrams are borrowed (the socket's buffer);
/// the other variants own their data, so `DriverEvent<'static>` can travel
/// through a channel (from a store thread or a resolver).
#[derive(Clone, PartialEq, Debug)]
pub enum DriverEvent<'a> {
    /// A datagram arrived on the node's (QUIC) socket.
    Datagram {
        /// Its source address.
        from: SocketAddr,
        /// Its payload.
        bytes: &'a [u8],
    },
    /// A datagram arrived on the mDNS socket.
    MdnsDatagram {
        /// Its source address.
        from: SocketAddr,
        /// Its payload.
        bytes: &'a [u8],
    },
    /// The persisted state, loaded before the manager's `start`.
    SnapshotLoaded(Snapshot),
    /// A [`NetCommand::Store`] batch was committed.
    StoreCommitted(BatchId),
    /// A [`NetCommand::Store`] batch failed; nothing of it was written.
    StoreFailed {
        /// The batch.
        batch: BatchId,
        /// Why (the kind; the driver logs the store's own error).
        error: StoreErrorKind,
    },
    /// A [`NetCommand::Resolve`] ended.
    Resolved {
        /// The resolution.
        resolve: ResolveId,
        /// The addresses, or why the resolver failed (`NotFound` for a
        /// name that does not exist).
        result: Result<Vec<IpAddr>, std::io::ErrorKind>,
    },
    /// A use of a connection (from `acquire_connection`) ended.
    ConnectionReleased {
        /// The lease.
        lease: LeaseId,
    },
}

/// What a [`super::Node`] asks its driver to do, or tells its caller;
/// drained with [`super::Node::poll`].
#[derive(Clone, PartialEq, Debug)]
#[must_use]
pub enum NetCommand {
    /// Send a datagram from the node's socket.
    Transmit(Transmit),
    /// Send a datagram from the mDNS socket (to a multicast group or a
    /// unicast querier).
    MdnsTransmit(Transmit),
    /// Apply these store operations in one write transaction; answer with
    /// [`DriverEvent::StoreCommitted`] or [`DriverEvent::StoreFailed`].
    Store(StoreBatch),
    /// Resolve a hostname without blocking; answer with
    /// [`DriverEvent::Resolved`].
    Resolve {
        /// The resolution.
        resolve: ResolveId,
        /// The name.
        hostname: Hostname,
    },
    /// An operation ended: exactly once per [`OpId`] the caller got.
    Done {
        /// The operation.
        op: OpId,
        /// Its result.
        result: Result<OpValue, OpError>,
    },
    /// Something the caller may want to know.
    Event(NodeEvent),
    /// Readiness of an application stream or datagram.
    App(super::app::AppEvent),
}
