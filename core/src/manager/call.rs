//! [`UserCall`]: the manager's user-facing methods as one closed enum, so
//! that a layer above the manager (the net layer's `Node`, the agent's loop)
//! can pass a caller's request through without handing out
//! `&mut NodeManager`. [`NodeManager::call`] dispatches each variant to the
//! method of the same name, with the same arguments.

use std::time::Duration;

use super::{ApiError, ConnId, FindOptions, NodeManager, OpId};
use crate::address::NodeAddress;
use crate::claims::ClaimId;
use crate::contact::NodeContactAddressData;
use crate::id::{BucketIndex, NodeId};
use crate::seed::SeedNodes;
use crate::time::Now;
use crate::wire::Request;

/// A call of one of the manager's user-facing methods; each variant holds
/// that method's arguments (after `now`), and its doc names the method.
#[derive(Clone, PartialEq, Debug)]
pub enum UserCall {
    /// [`NodeManager::start`].
    Start,
    /// [`NodeManager::stop`]; ends at once (no [`OpId`]).
    Stop,
    /// [`NodeManager::cancel`]; ends at once (no [`OpId`]).
    Cancel {
        /// The operation to cancel.
        op: OpId,
    },
    /// [`NodeManager::find_node`].
    FindNode {
        /// The node looked for.
        node_id: NodeId,
        /// The lookup's options.
        options: FindOptions,
    },
    /// [`NodeManager::find_node_by_signal`].
    FindNodeBySignal {
        /// The node looked for.
        node_id: NodeId,
        /// The lookup's options.
        options: FindOptions,
    },
    /// [`NodeManager::find_node_by_direct`].
    FindNodeByDirect {
        /// The node looked for.
        node_id: NodeId,
        /// The lookup's options.
        options: FindOptions,
    },
    /// [`NodeManager::find_node_by_mdns`].
    FindNodeByMdns {
        /// The node looked for.
        node_id: NodeId,
        /// The lookup's options.
        options: FindOptions,
    },
    /// [`NodeManager::ping_node`].
    PingNode {
        /// The node.
        node_id: NodeId,
        /// The lookup's options.
        options: FindOptions,
    },
    /// [`NodeManager::ping_node_address`].
    PingNodeAddress {
        /// The node.
        node_id: NodeId,
        /// Where to ping it.
        address: NodeAddress,
        /// One connection attempt; `None`: the config's.
        connect_timeout: Option<Duration>,
    },
    /// [`NodeManager::query_mdns`].
    QueryMdns {
        /// The node looked for.
        node_id: NodeId,
        /// How long to collect answers; `None`: the config's.
        timeout: Option<Duration>,
    },
    /// [`NodeManager::set_node`].
    SetNode {
        /// The node.
        node_id: NodeId,
        /// Its address.
        address: NodeAddress,
        /// The address's data.
        data: NodeContactAddressData,
        /// Wait for a full bucket's garbage collection.
        block: bool,
        /// Set it even if its bucket is full.
        force: bool,
        /// One connection attempt; `None`: the config's.
        connect_timeout: Option<Duration>,
    },
    /// [`NodeManager::unset_node`].
    UnsetNode {
        /// The node.
        node_id: NodeId,
    },
    /// [`NodeManager::add_pending_node`].
    AddPendingNode {
        /// The node.
        node_id: NodeId,
        /// Its address.
        address: NodeAddress,
        /// The address's data.
        data: NodeContactAddressData,
        /// Wait for the bucket's garbage collection.
        block: bool,
        /// One connection attempt; `None`: the config's.
        connect_timeout: Option<Duration>,
    },
    /// [`NodeManager::garbage_collect_bucket`].
    GarbageCollectBucket {
        /// The bucket.
        bucket: BucketIndex,
        /// One connection attempt; `None`: the config's.
        connect_timeout: Option<Duration>,
    },
    /// [`NodeManager::refresh_bucket`].
    RefreshBucket {
        /// The bucket.
        bucket: BucketIndex,
        /// One connection attempt; `None`: the config's.
        connect_timeout: Option<Duration>,
    },
    /// [`NodeManager::update_refresh_bucket_delay`].
    UpdateRefreshBucketDelay {
        /// The bucket.
        bucket: BucketIndex,
        /// The delay; `None`: the config's.
        delay: Option<Duration>,
        /// End once the new time is committed, not when the refresh ran.
        lazy: bool,
    },
    /// [`NodeManager::reset_buckets`].
    ResetBuckets {
        /// The new NodeId.
        node_id: NodeId,
    },
    /// [`NodeManager::claim_node`].
    ClaimNode {
        /// The node to claim.
        node_id: NodeId,
        /// The claim's deadline; `None`: the config's.
        timeout: Option<Duration>,
    },
    /// [`NodeManager::allow_claims_from`].
    AllowClaimsFrom {
        /// The node.
        node_id: NodeId,
        /// Allowed or not.
        allowed: bool,
    },
    /// [`NodeManager::request_chain_data`].
    RequestChainData {
        /// The node whose chain is asked for.
        node_id: NodeId,
        /// From this claim on; `None`: from the start.
        from: Option<ClaimId>,
        /// Claims at most; `None`: the config's.
        limit: Option<u32>,
    },
    /// [`NodeManager::sync_node_graph`].
    SyncNodeGraph {
        /// The seed nodes.
        seeds: SeedNodes,
        /// One connection attempt; `None`: the config's.
        connect_timeout: Option<Duration>,
        /// Wait for the sync instead of scheduling it.
        blocking: bool,
    },
    /// [`NodeManager::acquire_connection`].
    AcquireConnection {
        /// The node.
        node_id: NodeId,
        /// The deadline; `None`: none.
        timeout: Option<Duration>,
    },
    /// [`NodeManager::request`].
    Request {
        /// The connection.
        conn: ConnId,
        /// The request.
        body: Request,
    },
}

impl NodeManager {
    /// Carries out a [`UserCall`] at `now`: the operation it started, or
    /// `None` for a call that ends at once ([`UserCall::Stop`],
    /// [`UserCall::Cancel`]).
    pub fn call(&mut self, now: Now, call: UserCall) -> Result<Option<OpId>, ApiError> {
        let op = match call {
            UserCall::Start => self.start(now),
            UserCall::Stop => return self.stop(now).map(|()| None),
            UserCall::Cancel { op } => return self.cancel(now, op).map(|()| None),
            UserCall::FindNode { node_id, options } => self.find_node(now, node_id, options),
            UserCall::FindNodeBySignal { node_id, options } => {
                self.find_node_by_signal(now, node_id, options)
            }
            UserCall::FindNodeByDirect { node_id, options } => {
                self.find_node_by_direct(now, node_id, options)
            }
            UserCall::FindNodeByMdns { node_id, options } => {
                self.find_node_by_mdns(now, node_id, options)
            }
            UserCall::PingNode { node_id, options } => self.ping_node(now, node_id, options),
            UserCall::PingNodeAddress {
                node_id,
                address,
                connect_timeout,
            } => self.ping_node_address(now, node_id, address, connect_timeout),
            UserCall::QueryMdns { node_id, timeout } => self.query_mdns(now, node_id, timeout),
            UserCall::SetNode {
                node_id,
                address,
                data,
                block,
                force,
                connect_timeout,
            } => self.set_node(now, node_id, address, data, block, force, connect_timeout),
            UserCall::UnsetNode { node_id } => self.unset_node(now, node_id),
            UserCall::AddPendingNode {
                node_id,
                address,
                data,
                block,
                connect_timeout,
            } => self.add_pending_node(now, node_id, address, data, block, connect_timeout),
            UserCall::GarbageCollectBucket {
                bucket,
                connect_timeout,
            } => self.garbage_collect_bucket(now, bucket, connect_timeout),
            UserCall::RefreshBucket {
                bucket,
                connect_timeout,
            } => self.refresh_bucket(now, bucket, connect_timeout),
            UserCall::UpdateRefreshBucketDelay {
                bucket,
                delay,
                lazy,
            } => self.update_refresh_bucket_delay(now, bucket, delay, lazy),
            UserCall::ResetBuckets { node_id } => self.reset_buckets(now, node_id),
            UserCall::ClaimNode { node_id, timeout } => self.claim_node(now, node_id, timeout),
            UserCall::AllowClaimsFrom { node_id, allowed } => {
                self.allow_claims_from(now, node_id, allowed)
            }
            UserCall::RequestChainData {
                node_id,
                from,
                limit,
            } => self.request_chain_data(now, node_id, from, limit),
            UserCall::SyncNodeGraph {
                seeds,
                connect_timeout,
                blocking,
            } => self.sync_node_graph(now, &seeds, connect_timeout, blocking),
            UserCall::AcquireConnection { node_id, timeout } => {
                self.acquire_connection(now, node_id, timeout)
            }
            UserCall::Request { conn, body } => self.request(now, conn, body),
        };
        op.map(Some)
    }
}
