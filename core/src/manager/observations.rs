//! [`Observation`]s: what happened in the node, for whoever watches it
//! (the agent's event stream). They are kept apart from the manager's
//! commands and outputs: nothing waits for them and nothing the manager
//! decides depends on them, so a node whose observations no one drains
//! behaves exactly as one whose are drained. The queue is bounded by
//! `Config::max_queued_events`; past it an observation is dropped and
//! counted (`Metrics::observations_dropped`).

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::contact::ContactMode;
use crate::id::{BucketIndex, NodeId};
use crate::manager::OpError;
use crate::metrics::Direction;
use crate::nat::NatClass;

/// Something that happened in the node.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum Observation {
    /// A new contact is in the graph.
    ContactAdded {
        /// The node.
        node_id: NodeId,
        /// Its bucket.
        bucket: BucketIndex,
    },
    /// A known contact was updated (it became the newest of its bucket).
    ContactUpdated {
        /// The node.
        node_id: NodeId,
        /// Its bucket.
        bucket: BucketIndex,
    },
    /// A contact left the graph to make room for another (its bucket was
    /// full and it was the oldest, or it did not answer the bucket's check).
    ContactEvicted {
        /// The node.
        node_id: NodeId,
    },
    /// A contact left the graph (`unset_node`, or a key renewal's rebuild).
    ContactRemoved {
        /// The node.
        node_id: NodeId,
    },
    /// A node went on its bucket's pending list: the bucket was full.
    ContactPending {
        /// The node.
        node_id: NodeId,
        /// Its bucket.
        bucket: BucketIndex,
    },
    /// A connection came up and was kept.
    ConnectionUp {
        /// The peer.
        node_id: NodeId,
        /// Its address as this node sees it.
        remote: SocketAddr,
        /// Direct, hole-punched (signal) or relayed.
        mode: ContactMode,
        /// Who dialled.
        direction: Direction,
    },
    /// A kept connection closed.
    ConnectionDown {
        /// The peer.
        node_id: NodeId,
        /// Its address as this node saw it.
        remote: SocketAddr,
        /// Direct, hole-punched (signal) or relayed.
        mode: ContactMode,
        /// Who dialled.
        direction: Direction,
    },
    /// This node and `node_id` are linked by a claim (committed here).
    ClaimLinked {
        /// The other node.
        node_id: NodeId,
    },
    /// The key was renewed: this is the node's new NodeId.
    KeyRenewed {
        /// The new NodeId.
        node_id: NodeId,
    },
    /// The node's NAT class changed, as its peers' observations of its
    /// address were re-evaluated (see `keynode_core::nat`).
    NatClassChanged {
        /// The class before.
        previous: NatClass,
        /// The class now.
        class: NatClass,
        /// The address most observers see this node at, if any.
        observed: Option<SocketAddr>,
    },
    /// A relay granted this node a reservation (renewals are not told).
    RelayReserved {
        /// The relay.
        relay: NodeId,
        /// Seconds it lasts unless renewed.
        lifetime_secs: u32,
    },
    /// A reservation ended: given up (`lost` false: this node no longer
    /// needs one) or lost (the relay refused its renewal, or the
    /// connection closed).
    RelayReservationEnded {
        /// The relay.
        relay: NodeId,
        /// Whether it ended without this node giving it up.
        lost: bool,
    },
    /// A `sync_node_graph` ended well.
    SyncFinished,
    /// A `sync_node_graph` failed.
    SyncFailed {
        /// Why it failed; `OpError::SeedsUnreachable` names each seed
        /// and its error.
        error: OpError,
    },
}

/// The queue of observations not yet drained.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    queue: VecDeque<Observation>,
}

impl Observations {
    /// Queues `o`; false (and nothing queued) if `bound` are waiting.
    pub(crate) fn push(&mut self, o: Observation, bound: usize) -> bool {
        if self.queue.len() >= bound {
            return false;
        }
        self.queue.push_back(o);
        true
    }

    pub(crate) fn pop(&mut self) -> Option<Observation> {
        self.queue.pop_front()
    }
}
