//! [`InFlight`]: what the manager holds for operations under way, to check
//! that an ended (or cancelled) operation leaves nothing behind.

use super::NodeManager;

/// What the manager holds for operations under way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlight {
    /// Operations in flight, the caller's and internal ones.
    pub operations: usize,
    /// Uses of connections handed out (`acquire_connection`) and not released.
    pub leases: usize,
    /// Answers awaited (connection attempts, requests, mDNS queries, store
    /// batches, claim streams). A request or attempt outlives a cancelled
    /// operation until its answer or its own timeout, which is then stale.
    pub waits: usize,
}

impl NodeManager {
    /// What the manager holds for operations under way.
    pub fn in_flight(&self) -> InFlight {
        InFlight {
            operations: self.ops.len(),
            leases: self.conns.leases_held(),
            waits: self.waits.len(),
        }
    }
}
