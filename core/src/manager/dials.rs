//! Connections being made: each attempt the manager asked the driver for,
//! with what the connection will be once up (to whom, in which mode), and
//! the hostname resolutions attempts wait on.
//!
//! An attempt outlives the operation that made it: the driver still
//! reports its end, and a connection that comes up is recorded (with the
//! attempt's mode) whoever asked for it. Which operation waits for the
//! attempt is a [`super::waits::Wait`], dropped when that operation ends.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::contact::ContactMode;
use crate::id::NodeId;
use crate::manager::api::{AttemptId, ResolveId};

/// A connection attempt in flight.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub(crate) node_id: NodeId,
    pub(crate) mode: ContactMode,
    pub(crate) timeout: Duration,
    /// When it was asked for: for the time-to-connect metric only.
    pub(crate) started: std::time::Instant,
}

/// The attempts in flight and the resolutions they wait on.
#[derive(Debug, Default)]
pub(crate) struct Dials {
    attempts: BTreeMap<AttemptId, Attempt>,
    /// A resolution's attempt and the port to dial once it is resolved.
    resolves: BTreeMap<ResolveId, (AttemptId, u16)>,
}

impl Dials {
    pub(crate) fn insert(&mut self, id: AttemptId, attempt: Attempt) {
        self.attempts.insert(id, attempt);
    }

    pub(crate) fn get(&self, id: AttemptId) -> Option<&Attempt> {
        self.attempts.get(&id)
    }

    /// The attempt ended (up or failed).
    pub(crate) fn remove(&mut self, id: AttemptId) -> Option<Attempt> {
        self.attempts.remove(&id)
    }

    /// `attempt` waits for `resolve`, then dials `port`.
    pub(crate) fn resolving(&mut self, resolve: ResolveId, attempt: AttemptId, port: u16) {
        self.resolves.insert(resolve, (attempt, port));
    }

    /// The resolution arrived: its attempt and port.
    pub(crate) fn resolved(&mut self, resolve: ResolveId) -> Option<(AttemptId, u16)> {
        self.resolves.remove(&resolve)
    }

    pub(crate) fn clear(&mut self) {
        self.attempts.clear();
        self.resolves.clear();
    }
}
