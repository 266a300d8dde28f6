//! What the hosts' operations ended with, and the node events they emitted,
//! collected the same way by both simulation levels.

use std::collections::BTreeMap;

use keynode_core::{NodeEvent, OpError, OpId, OpValue};

use crate::net::HostId;

/// The results of the hosts' operations, kept until taken, and their node
/// events, kept only when asked for.
#[derive(Debug, Default)]
pub struct HostOutputs {
    results: BTreeMap<(HostId, OpId), Result<OpValue, OpError>>,
    events: Vec<(HostId, NodeEvent)>,
    /// Whether to keep node events.
    pub keep_events: bool,
}

impl HostOutputs {
    /// Records that `op` of `host` ended.
    pub(crate) fn done(&mut self, host: HostId, op: OpId, result: Result<OpValue, OpError>) {
        self.results.insert((host, op), result);
    }

    /// Records a node event of `host`, if events are kept.
    pub(crate) fn event(&mut self, host: HostId, event: NodeEvent) {
        if self.keep_events {
            self.events.push((host, event));
        }
    }

    /// The result of an operation, once done.
    pub fn result(&self, host: HostId, op: OpId) -> Option<&Result<OpValue, OpError>> {
        self.results.get(&(host, op))
    }

    /// Takes the result of an operation, once done.
    pub fn take_result(&mut self, host: HostId, op: OpId) -> Option<Result<OpValue, OpError>> {
        self.results.remove(&(host, op))
    }

    /// Results not taken yet, of every host.
    pub fn untaken_results(
        &self,
    ) -> impl Iterator<Item = (&(HostId, OpId), &Result<OpValue, OpError>)> {
        self.results.iter()
    }

    /// Forgets every result of `host` not taken yet.
    pub fn take_results_of(&mut self, host: HostId) {
        let keys: Vec<(HostId, OpId)> = self
            .results
            .range((host, OpId(0))..=(host, OpId(u64::MAX)))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.results.remove(&key);
        }
    }

    /// The node events kept so far (with `keep_events`).
    pub fn events(&self) -> &[(HostId, NodeEvent)] {
        &self.events
    }
}
