//! The relay made visible: [`RelayStatus`], the part of
//! [`AgentStatus`](crate::AgentStatus) that says whether this agent relays
//! for others, the reservations it holds with relays, and what its relay
//! counted.

use keynode_core::NodeId;
use keynode_core::net::{Node, RelayServe, RelayStats};

/// This agent as a relay and as a relay's client.
///
/// ```no_run
/// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
/// let relay = agent.status().await?.relay;
/// if relay.relaying {
///     println!("relaying {} pairs", relay.stats.pairs);
/// }
/// for relay in &relay.reservations {
///     println!("reachable through {relay}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RelayStatus {
    /// When the agent relays (`NetConfig::relay.serve`, `--relay`).
    pub serve: RelayServe,
    /// Whether it relays now: always, never, or (when public) whether its
    /// NAT class is public.
    pub relaying: bool,
    /// The relays this agent holds a reservation with (a node behind a
    /// NAT keeps `Config::relay_reservations` of them), by NodeId.
    pub reservations: Vec<NodeId>,
    /// What its relay counted: pairs open, reservations held for others,
    /// frames and bytes forwarded, drops and refusals by reason.
    pub stats: RelayStats,
}

impl RelayStatus {
    /// The status of `node` now.
    pub(crate) fn of(node: &Node) -> Self {
        Self {
            serve: node.relay_serve(),
            relaying: node.relaying(),
            reservations: node.manager_ref().relay_reservations(),
            stats: node.relay_stats(),
        }
    }
}

impl RelayStatus {
    /// The relay's frames dropped, by reason (the
    /// `relay_dropped_total{reason}` family): no pair from the source to
    /// the destination, over the pair's or reservation's byte rate, larger
    /// than `RelayConfig::max_frame`, and frames from a relay this agent
    /// did not expect (not a connected node, no room for another path).
    pub fn drops(&self) -> [(&'static str, u64); 4] {
        let s = &self.stats;
        [
            ("no_pair", s.dropped_no_pair),
            ("over_rate", s.dropped_over_rate),
            ("too_large", s.dropped_too_large),
            ("unexpected", s.dropped_unexpected),
        ]
    }

    /// Pair and reservation requests refused, by reason (the
    /// `relay_refused_total{reason}` family): the agent does not relay
    /// now, the relay's totals are reached, or the requester's (or its
    /// IP's) share is.
    pub fn refusals(&self) -> [(&'static str, u64); 3] {
        let s = &self.stats;
        [
            ("not_relaying", s.refused_not_relaying),
            ("full", s.refused_full),
            ("per_peer", s.refused_per_peer),
        ]
    }
}
