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

use crate::address::Hostname;
use crate::contact::ContactMode;
use crate::id::NodeId;
use crate::manager::api::{AttemptId, ResolveId};

/// A connection attempt in flight.
#[derive(Clone, Debug)]
pub(crate) struct Attempt {
    pub(crate) node_id: NodeId,
    pub(crate) mode: ContactMode,
    pub(crate) timeout: Duration,
    /// A relayed attempt: through which relay, and what the relay said of
    /// the target.
    pub(crate) relayed: Option<RelayedVia>,
    /// When it was asked for: for the time-to-connect metric only.
    pub(crate) started: std::time::Instant,
}

/// How a relayed connection goes: through `relay`, to a target the relay
/// sees at `seen_at` (recorded as its contact once up, mode `Relay`), of
/// NAT class `class` if it told the relay (whether a punch may upgrade it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RelayedVia {
    pub(crate) relay: NodeId,
    pub(crate) seen_at: std::net::SocketAddr,
    pub(crate) class: Option<crate::nat::NatClass>,
}

/// A resolution an attempt waits on.
#[derive(Clone, Debug)]
pub(crate) struct Resolving {
    pub(crate) attempt: AttemptId,
    pub(crate) hostname: Hostname,
    pub(crate) port: u16,
}

/// The attempts in flight and the resolutions they wait on.
#[derive(Debug, Default)]
pub(crate) struct Dials {
    attempts: BTreeMap<AttemptId, Attempt>,
    /// A resolution's attempt and the port to dial once it is resolved
    /// (and the name, for the failure if it does not resolve).
    resolves: BTreeMap<ResolveId, Resolving>,
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

    /// An attempt waits for `resolve`, then dials its port.
    pub(crate) fn resolving(&mut self, resolve: ResolveId, resolving: Resolving) {
        self.resolves.insert(resolve, resolving);
    }

    /// The resolution arrived: what waited on it.
    pub(crate) fn resolved(&mut self, resolve: ResolveId) -> Option<Resolving> {
        self.resolves.remove(&resolve)
    }

    pub(crate) fn clear(&mut self) {
        self.attempts.clear();
        self.resolves.clear();
    }
}
