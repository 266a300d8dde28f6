mod common;

// Each typed failure of issue 16 is produced where it should be: a snapshot
// that does not restore stops `start` (it used to be ignored, and the node
// ran on an empty graph), and a seed whose hostname does not resolve is
// reported with the name and the resolver's kind of failure.

use std::io::ErrorKind;

use common::{Script, addr, t0};
use keynode_core::{
    ApiError, Command, Config, ConnectFailure, ContactMode, ContactRecord, Event, GraphSnapshot,
    Host, Hostname, NodeAddress, NodeAddressScopes, NodeContact, NodeContactAddressData,
    NodeGraphSpace, NodeId, OpError, SeedNodes, Snapshot, SnapshotError,
};

fn far(n: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = 0x80;
    b[31] = n;
    NodeId::from_bytes(b)
}

fn record(n: u8) -> ContactRecord {
    ContactRecord {
        contact: NodeContact::new(
            NodeAddress::from(addr(n.into())),
            NodeContactAddressData {
                mode: ContactMode::Direct,
                connected_time: 1,
                scopes: NodeAddressScopes::GLOBAL,
            },
        ),
        updated: u64::from(n),
    }
}

fn snapshot(contacts: Vec<(NodeId, ContactRecord)>) -> Snapshot {
    Snapshot {
        graph: Some(GraphSnapshot {
            space: NodeGraphSpace::Zero,
            own: NodeId::from_bytes([0; 32]),
            contacts,
            pending: Vec::new(),
        }),
        ..Snapshot::default()
    }
}

#[test]
fn a_snapshot_that_does_not_restore_stops_start() {
    let mut s = Script::new(t0(), Config::default(), NodeId::from_bytes([0; 32]));
    // The same contact twice: a damaged store.
    s.handle(Event::SnapshotLoaded(snapshot(vec![
        (far(1), record(1)),
        (far(1), record(2)),
    ])));
    assert_eq!(s.node.stats().snapshots_refused, 1);
    let error = s.node.start(s.now).unwrap_err();
    assert_eq!(
        error,
        ApiError::BadSnapshot(SnapshotError::Duplicate(far(1)))
    );
    assert!(error.to_string().contains(&far(1).to_string()), "{error}");
    // Nothing was written over the store.
    assert!(s.log.iter().all(|c| !matches!(c, Command::Store(_))));
}

#[test]
fn a_good_snapshot_after_a_bad_one_lets_start_run() {
    let mut s = Script::new(t0(), Config::default(), NodeId::from_bytes([0; 32]));
    s.handle(Event::SnapshotLoaded(snapshot(vec![
        (far(1), record(1)),
        (far(1), record(2)),
    ])));
    s.handle(Event::SnapshotLoaded(snapshot(vec![(far(1), record(1))])));
    assert!(s.node.start(s.now).is_ok());
    assert!(s.node.graph().contains(&far(1)));
}

/// Syncs from one seed at `host`, answers its resolution with `result`,
/// and returns how the sync ended.
fn sync_via_hostname(result: Result<Vec<std::net::IpAddr>, ErrorKind>) -> OpError {
    let mut s = Script::started(t0(), Config::default(), NodeId::from_bytes([0; 32]));
    let host: Hostname = "seed.invalid".parse().unwrap();
    let seeds = SeedNodes::new([(far(1), NodeAddress::new(Host::Name(host), 1314))]);
    let op = s.node.sync_node_graph(s.now, &seeds, None, true).unwrap();
    let resolve = s
        .drain()
        .into_iter()
        .find_map(|c| match c {
            Command::Resolve { resolve, hostname } => {
                assert_eq!(hostname.as_str(), "seed.invalid");
                Some(resolve)
            }
            _ => None,
        })
        .expect("the seed's hostname is resolved first");
    s.handle(Event::Resolved { resolve, result });
    match s.done(op) {
        Some(Err(error)) => error,
        other => panic!("the sync should fail, got {other:?}"),
    }
}

#[test]
fn a_seed_whose_hostname_does_not_resolve_is_named_with_the_kind() {
    let error = sync_via_hostname(Err(ErrorKind::NotFound));
    let OpError::SeedsUnreachable(failures) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].node_id, far(1));
    assert_eq!(
        failures[0].reason,
        ConnectFailure::Resolve {
            hostname: "seed.invalid".parse().unwrap(),
            kind: ErrorKind::NotFound,
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("seed.invalid did not resolve"),
        "{message}"
    );
}

#[test]
fn a_hostname_with_no_address_is_its_own_failure() {
    let error = sync_via_hostname(Ok(Vec::new()));
    let OpError::SeedsUnreachable(failures) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(
        failures[0].reason,
        ConnectFailure::NoAddresses {
            hostname: "seed.invalid".parse().unwrap(),
        }
    );
}
