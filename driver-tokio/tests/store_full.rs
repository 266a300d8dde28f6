//! A full disk, for real: an agent on an LMDB with a tiny map, filled
//! through its public API until batches fail with MapFull. The graph in
//! memory must equal what committed (issue 15, defect 13): a failed
//! `set_node` leaves no contact behind, a failed eviction is undone, and a
//! restart finds the same graph.

use std::net::SocketAddr;

use keynode_core::{
    BucketIndex, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId,
    OpError, StoreErrorKind,
};
use keynode_tokio::{Agent, AgentConfig, SetNodeOptions};

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A NodeId in bucket `bucket` (8 or more) of `own`'s table, numbered `n`.
fn in_bucket(own: NodeId, bucket: u8, n: u8) -> NodeId {
    let bit = usize::from(bucket);
    let mut b = *own.as_bytes();
    b[31 - bit / 8] ^= 1 << (bit % 8);
    b[31] ^= n;
    NodeId::from_bytes(b)
}

fn data() -> NodeContactAddressData {
    NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    }
}

fn contains(graph: &[(BucketIndex, keynode_core::NodeBucket)], node: &NodeId) -> bool {
    graph
        .iter()
        .any(|(_, bucket)| bucket.iter().any(|(n, _)| n == node))
}

async fn try_set(
    agent: &Agent,
    node: NodeId,
    port: u16,
    force: bool,
) -> Result<(), keynode_tokio::AgentError> {
    agent
        .set_node(
            node,
            NodeAddress::from(loopback(port)),
            data(),
            SetNodeOptions::default().force(force),
        )
        .await
}

async fn set(agent: &Agent, node: NodeId, port: u16, force: bool) -> bool {
    try_set(agent, node, port, force).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_leaves_memory_equal_to_what_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AgentConfig::new(dir.path().join("a"), loopback(0));
    config.map_size = 256 * 1024;
    let agent = keynode_tokio::start(config.clone()).await.unwrap();
    let own = agent.node_id();

    // Bucket 255 full (k = 20), then other buckets until the map is full.
    for n in 0..20u8 {
        assert!(set(&agent, in_bucket(own, 255, n), 1000 + u16::from(n), false).await);
    }
    let mut refused = None;
    'fill: for n in 0..20u8 {
        for bucket in 8..255u8 {
            let node = in_bucket(own, bucket, n);
            let port = 2000 + u16::from(bucket) * 20 + u16::from(n);
            if let Err(error) = try_set(&agent, node, port, false).await {
                // The store's failure reaches the caller as its kind.
                assert!(
                    matches!(
                        error,
                        keynode_tokio::AgentError::Op(OpError::Store(StoreErrorKind::MapFull))
                    ),
                    "{error}"
                );
                refused = Some(node);
                break 'fill;
            }
        }
    }
    let refused = refused.expect("a 256 KiB map fills up with contacts");
    let graph = agent.get_all().await.unwrap();
    assert!(
        !contains(&graph, &refused),
        "a set_node whose batch failed left its contact in memory"
    );

    // A forced set in the full bucket evicts its oldest contact in the same
    // batch: whether the batch lands or not, memory follows the store.
    let oldest = graph
        .iter()
        .find(|(b, _)| *b == BucketIndex::FARTHEST)
        .and_then(|(_, bucket)| bucket.first().map(|(n, _)| *n))
        .expect("bucket 255 is full");
    let newcomer = in_bucket(own, 255, 200);
    let landed = set(&agent, newcomer, 999, true).await;
    let graph = agent.get_all().await.unwrap();
    assert_eq!(contains(&graph, &newcomer), landed);
    assert_eq!(
        contains(&graph, &oldest),
        !landed,
        "eviction follows the batch"
    );

    agent.stop().await.unwrap();
    let again = keynode_tokio::start(config).await.unwrap();
    assert_eq!(
        again.get_all().await.unwrap(),
        graph,
        "a restart finds the graph the agent had in memory"
    );
    again.stop().await.unwrap();
}
