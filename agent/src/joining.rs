//! Joining made visible: the warnings a failed background sync logs, and
//! [`AgentStatus`], what `keynode agent status` reports.

use keynode_core::nat::{NatClass, ObservedAddress};
use keynode_core::{JoinStatus, NodeEvent, OpError};

/// Whether the agent has joined the network, and what it holds: what
/// [`Agent::status`](crate::Agent::status) returns.
///
/// ```no_run
/// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
/// let status = agent.status().await?;
/// if let Some(delay) = status.join.retry_in {
///     println!("{} syncs failed; next in {delay:?}", status.join.failed_attempts);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AgentStatus {
    /// Whether a sync reached a seed node, and how the background syncs
    /// (started with `--seed-nodes`) fared: failed attempts, the last
    /// error, the delay before the next attempt.
    pub join: JoinStatus,
    /// Contacts in the node graph.
    pub contacts: usize,
    /// Connections up.
    pub connections: usize,
    /// The addresses peers see this agent's socket at (one observation per
    /// peer IP, each held while its connection is up), most observers
    /// first.
    pub observed_addresses: Vec<ObservedAddress>,
    /// The NAT class those observations give (see `keynode_core::nat`).
    pub nat_class: NatClass,
    /// Whether the agent relays for others, the reservations it holds
    /// with relays, and its relay's counters.
    pub relay: crate::RelayStatus,
}

/// Logs a node event: a failed background sync as warnings, one naming
/// each seed and its error, then one saying whether and when it is tried
/// again; anything else at debug level.
pub(crate) fn log_event(event: &NodeEvent) {
    let NodeEvent::SyncFailed {
        error,
        attempt,
        retry_in,
    } = event
    else {
        tracing::debug!(?event, "node event");
        return;
    };
    match error {
        OpError::SeedsUnreachable(failures) => {
            for failure in failures {
                tracing::warn!(
                    seed = %failure.node_id,
                    address = %failure.address,
                    error = %failure.reason,
                    attempt,
                    "seed node {}@{} unreachable: {}",
                    failure.node_id,
                    failure.address,
                    failure.reason
                );
            }
        }
        other => {
            tracing::warn!(error = %other, attempt, "sync with the seed nodes failed: {other}")
        }
    }
    match retry_in {
        Some(delay) => tracing::warn!(
            attempt,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "not joined the network (attempt {attempt}); trying the seed nodes again in {delay:?}"
        ),
        None => tracing::warn!(
            attempt,
            "not joined the network after {attempt} attempts; giving up until the next sync"
        ),
    }
}
