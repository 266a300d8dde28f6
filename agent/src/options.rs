//! Per-call options of the agent's operations. Each has an optional
//! `timeout`, the spec's `ctx`: when it runs out the call ends with
//! [`AgentError::Timeout`](crate::AgentError::Timeout) and the operation
//! is cancelled in the node, as when its future is dropped. What is left
//! `None` takes the node's [`Config`](keynode_core::Config) value, so
//! `Default` is the configured behaviour.

use std::time::Duration;

use keynode_core::claims::ClaimId;

/// The `with_timeout` builder, the same on every options struct: one
/// definition, so that the time limit means one thing everywhere. Each
/// struct's copy gets its own doc example (and so its own doctest).
macro_rules! with_timeout {
    ($($options:ident),+ $(,)?) => {$(
        impl $options {
            /// With the time limit `timeout`.
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("use keynode_agent::", stringify!($options), ";")]
            ///
            #[doc = concat!("let options = ", stringify!($options), "::default().with_timeout(Duration::from_secs(5));")]
            /// assert_eq!(options.timeout, Some(Duration::from_secs(5)));
            #[doc = concat!("assert_eq!(", stringify!($options), "::default().timeout, None);")]
            /// ```
            pub fn with_timeout(mut self, timeout: Duration) -> Self {
                self.timeout = Some(timeout);
                self
            }
        }
    )+};
}

with_timeout!(
    FindOptions,
    SetNodeOptions,
    SyncOptions,
    PingOptions,
    ClaimOptions,
    ChainOptions,
);

/// Options of `find_node` and `find_node_by_mdns`.
///
/// Fields without a builder are set directly (the struct is
/// `#[non_exhaustive]`, so it starts from `default()`):
///
/// ```
/// use keynode_agent::FindOptions;
///
/// let mut options = FindOptions::default();
/// options.concurrency_limit = Some(5);
/// assert_eq!(options.limit, None); // the config's
/// ```
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
    ///
    /// ```
    /// use keynode_agent::SetNodeOptions;
    ///
    /// let options = SetNodeOptions::default().block(true);
    /// assert!(options.block && !options.force);
    /// ```
    pub fn block(mut self, block: bool) -> Self {
        self.block = block;
        self
    }

    /// With `force` set.
    ///
    /// ```
    /// use keynode_agent::SetNodeOptions;
    ///
    /// let options = SetNodeOptions::default().force(true);
    /// assert!(options.force && !options.block);
    /// ```
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
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
    ///
    /// ```
    /// use std::time::Duration;
    /// use keynode_agent::SyncOptions;
    ///
    /// let options = SyncOptions::default()
    ///     .blocking(true)
    ///     .with_timeout(Duration::from_secs(30));
    /// assert!(options.blocking);
    /// assert_eq!(options.connect_timeout, None); // the config's
    /// ```
    pub fn blocking(mut self, blocking: bool) -> Self {
        self.blocking = blocking;
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

/// Options of `claim_node`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimOptions {
    /// The claim's time; `None`: the config's `claim_timeout`.
    pub timeout: Option<Duration>,
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
    ///
    /// ```
    /// use keynode_agent::ChainOptions;
    /// use keynode_core::claims::ClaimId;
    ///
    /// let last_seen = ClaimId([7; 16]);
    /// let options = ChainOptions::default().from(last_seen);
    /// assert_eq!(options.from, Some(last_seen));
    /// assert_eq!(options.limit, None); // the config's `max_chain_page`
    /// ```
    pub fn from(mut self, from: ClaimId) -> Self {
        self.from = Some(from);
        self
    }
}
