//! Per-call options of the agent's operations. Each has an optional
//! `timeout`, the spec's `ctx`: when it runs out the call ends with
//! [`AgentError::Timeout`](crate::AgentError::Timeout) and the operation
//! is cancelled in the node, as when its future is dropped. What is left
//! `None` takes the node's [`Config`](keynode_core::Config) value, so
//! `Default` is the configured behaviour.

use std::time::Duration;

use keynode_core::claims::ClaimId;

/// Options of `find_node` and `find_node_by_mdns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FindOptions {
    /// The whole lookup's time; `None`: the config's `find_node_timeout`.
    pub timeout: Option<Duration>,
    /// One connection attempt; `None`: the config's.
    pub connect_timeout: Option<Duration>,
    /// Attempts in flight (α); `None`: the config's.
    pub concurrency_limit: Option<usize>,
    /// Nodes contacted at most; `None`: the config's.
    pub limit: Option<usize>,
}

impl FindOptions {
    /// With the time limit `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The node's options of the lookup.
    pub(crate) fn lookup(self) -> keynode_core::FindOptions {
        keynode_core::FindOptions {
            connection_connect_timeout: self.connect_timeout,
            concurrency_limit: self.concurrency_limit,
            limit: self.limit,
            timeout: self.timeout,
            ..keynode_core::FindOptions::default()
        }
    }
}

/// Options of `set_node`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetNodeOptions {
    /// Wait for a full bucket's garbage collection instead of leaving the
    /// node pending.
    pub block: bool,
    /// Set it even if its bucket is full (the oldest contact goes).
    pub force: bool,
    /// The call's time; `None`: no limit of its own.
    pub timeout: Option<Duration>,
}

impl SetNodeOptions {
    /// With `block` set.
    pub fn block(mut self, block: bool) -> Self {
        self.block = block;
        self
    }

    /// With `force` set.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// With the time limit `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Options of `sync_node_graph`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Wait for the whole sync (the refreshes it starts too) instead of
    /// returning once the seeds were contacted.
    pub blocking: bool,
    /// The call's time; `None`: no limit of its own.
    pub timeout: Option<Duration>,
    /// One connection attempt to a seed; `None`: the config's.
    pub connect_timeout: Option<Duration>,
}

impl SyncOptions {
    /// With `blocking` set.
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.blocking = blocking;
        self
    }

    /// With the time limit `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Options of `ping_node` and `ping_node_address`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PingOptions {
    /// The call's time; `None`: the config's timeouts only.
    pub timeout: Option<Duration>,
}

impl PingOptions {
    /// With the time limit `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Options of `claim_node`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimOptions {
    /// The claim's time; `None`: the config's `claim_timeout`.
    pub timeout: Option<Duration>,
}

impl ClaimOptions {
    /// With the time limit `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Options of `request_chain_data`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainOptions {
    /// From this claim on; `None`: from the start.
    pub from: Option<ClaimId>,
    /// Claims at most; `None`: the config's `max_chain_page`.
    pub limit: Option<u32>,
    /// The call's time; `None`: no limit of its own.
    pub timeout: Option<Duration>,
}

impl ChainOptions {
    /// From claim `from` on.
    pub fn from(mut self, from: ClaimId) -> Self {
        self.from = Some(from);
        self
    }

    /// With the time limit `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}
