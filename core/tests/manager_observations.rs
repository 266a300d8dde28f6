mod common;

// The core's driver loop takes the manager's observations as the agent's
// loop does: a node driven by `testing::drain` (the simulator, the test
// networks, the fuzz target) holds none after a drain. Before, none of them
// took observations, so each simulated node kept up to
// `Config::max_queued_events` of them (the simulator's live heap per node
// went from 64.5 KB to 194.5 KB with the obs16 merge).

use common::{Script, addr, id, t0};
use keynode_core::{
    Config, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, Observation,
};

#[test]
fn a_drain_hands_every_observation_to_the_driver_and_leaves_none_queued() {
    let mut s = Script::started(t0(), Config::default(), id(0));
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    };
    for n in 1..=3u8 {
        let now = s.now;
        s.node
            .set_node(
                now,
                id(n),
                NodeAddress::from(addr(n.into())),
                data,
                false,
                true,
                None,
            )
            .expect("set_node");
        s.drain();
    }
    assert!(s.node.poll_observation().is_none(), "nothing left queued");
    let added: Vec<_> = s
        .observations
        .iter()
        .filter_map(|o| match o {
            Observation::ContactAdded { node_id, .. } => Some(*node_id),
            _ => None,
        })
        .collect();
    assert_eq!(added, vec![id(1), id(2), id(3)]);
}
