//! Joining the network in the background: what the last background
//! `sync_node_graph` did, and its retries with backoff.
//!
//! A sync started with `blocking: false` (what an agent started with seed
//! nodes runs) ends without a caller to tell. When it fails, the manager
//! emits [`NodeEvent::SyncFailed`](super::NodeEvent::SyncFailed) and
//! schedules the sync task again after a delay that doubles from
//! `Config::sync_retry_initial_delay` up to `Config::sync_retry_max_delay`,
//! at most `Config::sync_retry_attempts` times; the task is persisted, so a
//! restarted agent keeps trying. [`JoinStatus`] says where it stands.

use std::time::Duration;

use super::{NodeEvent, NodeManager, OpError, OpId, OpValue};
use crate::address::NodeAddress;
use crate::config::Config;
use crate::id::NodeId;
use crate::store::{TaskKey, TaskPayload};

/// Whether the node has joined the network through its seed nodes, as
/// [`NodeManager::join_status`] reports it.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct JoinStatus {
    /// A sync reached a seed node (blocking or not).
    pub joined: bool,
    /// Background syncs that failed since the last one that succeeded.
    pub failed_attempts: u32,
    /// Why the last sync failed, if it did and none succeeded since.
    pub last_error: Option<OpError>,
    /// How long after the last failure the next attempt runs; `None` when
    /// none is scheduled (joined, never tried, or out of attempts).
    pub retry_in: Option<Duration>,
}

/// The manager's part: the status, and the background sync running now.
#[derive(Debug, Default)]
pub(super) struct JoinState {
    status: JoinStatus,
    /// The background sync in flight, to be scheduled again if it fails.
    background: Option<Background>,
}

/// A background sync in flight and what it was started with.
#[derive(Debug)]
struct Background {
    op: OpId,
    seeds: Vec<(NodeId, NodeAddress)>,
    connect_timeout_ms: u64,
}

/// The delay before retry number `attempt` (1 for the first retry): the
/// initial delay doubled for each earlier retry, at most the maximum.
pub(super) fn sync_retry_delay(config: &Config, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    config
        .sync_retry_initial_delay
        .saturating_mul(1u32 << doublings)
        .min(config.sync_retry_max_delay)
}

impl NodeManager {
    /// Whether this node has joined the network, and how its background
    /// syncs fared (see the module docs of `join`).
    pub fn join_status(&self) -> JoinStatus {
        self.join.status.clone()
    }

    /// Remembers the background sync `op`, started from the sync task.
    pub(super) fn sync_started_in_background(
        &mut self,
        op: OpId,
        seeds: Vec<(NodeId, NodeAddress)>,
        connect_timeout_ms: u64,
    ) {
        self.join.background = Some(Background {
            op,
            seeds,
            connect_timeout_ms,
        });
    }

    /// A sync ended: updates the status; a failed background sync is
    /// announced and retried.
    pub(super) fn sync_ended(&mut self, op: OpId, result: &Result<OpValue, OpError>) {
        let background = match &self.join.background {
            Some(b) if b.op == op => self.join.background.take(),
            _ => None,
        };
        match result {
            Ok(_) => {
                self.join.status = JoinStatus {
                    joined: true,
                    ..JoinStatus::default()
                };
            }
            // Cancelled by `stop` (a restart loads the persisted task) or
            // by its caller: nothing to retry.
            Err(OpError::Cancelled) => {}
            Err(error) => {
                self.join.status.last_error = Some(error.clone());
                let Some(Background {
                    seeds,
                    connect_timeout_ms,
                    ..
                }) = background
                else {
                    return;
                };
                self.join.status.failed_attempts =
                    self.join.status.failed_attempts.saturating_add(1);
                let attempt = self.join.status.failed_attempts;
                // A sync task scheduled meanwhile (a newer non-blocking
                // sync) is the next attempt: it is not replaced.
                let retry_in = (attempt <= self.config.sync_retry_attempts
                    && !self.tasks.contains_key(TaskKey::SyncNodeGraph))
                .then(|| sync_retry_delay(&self.config, attempt));
                self.join.status.retry_in = retry_in;
                if let Some(delay) = retry_in {
                    let payload = TaskPayload::Sync {
                        seeds,
                        connect_timeout_ms,
                    };
                    let ops = self.schedule_task(TaskKey::SyncNodeGraph, delay, payload);
                    self.store(ops, None);
                }
                self.emit_event(NodeEvent::SyncFailed {
                    error: error.clone(),
                    attempt,
                    retry_in,
                });
            }
        }
    }
}
