//! Each target's seed corpus, made from real values: real node
//! certificates, real request lines, a real store, real mDNS traffic
//! between two services. The fuzzer starts from these and mutates them.

use std::net::SocketAddr;
use std::time::Duration;

use keynode_core::claims::KeyPair;
use keynode_core::net::NodeCertificate;
use keynode_core::{
    Config, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeGraph, NodeId,
    SeedNodes, StoreOp, TaskKey, TaskPayload, TaskRecord,
};
use keynode_store::{Store, StoreOptions};
use keynode_tokio::control::Request;

use crate::{mdns_packets, store_records};

/// The seed inputs of `target`, named.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let seeds = match target {
        "certificate" => certificate(),
        "control_requests" => control_requests(),
        "mdns_packets" => mdns_packets(),
        "store_records" => store_records(),
        "text_parse" => text_parse(),
        _ => Vec::new(),
    };
    seeds
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| (format!("seed-{i:02}"), bytes))
        .collect()
}

fn key(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32]).expect("a valid seed")
}

fn id(n: u8) -> NodeId {
    key(n).node_id()
}

fn certificate() -> Vec<Vec<u8>> {
    (1..=3u8)
        .map(|n| {
            NodeCertificate::new(&[n; 32])
                .expect("a certificate")
                .certificate
                .to_vec()
        })
        .collect()
}

fn text_parse() -> Vec<Vec<u8>> {
    let seeds = SeedNodes::new([
        (id(2), "127.0.0.1:1314".parse().expect("an address")),
        (id(3), "node.example:1314".parse().expect("an address")),
        (id(4), "[::1]:4433".parse().expect("an address")),
    ]);
    [
        id(1).to_string(),
        "127.0.0.1:1314".to_owned(),
        "[fe80::1]:64023".to_owned(),
        "node.example:1314".to_owned(),
        "node.example".to_owned(),
        "xn--bcher-kva.example".to_owned(),
        seeds.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn requests() -> Vec<Request> {
    let id = id(2);
    vec![
        Request::Status,
        Request::SetNode {
            node_id: id,
            address: "127.0.0.1:1314".parse().expect("an address"),
            force: true,
            block: false,
        },
        Request::FindNode { node_id: id },
        Request::PingNode { node_id: id },
        Request::GetAll,
        Request::Connections,
        Request::ClaimNode { node_id: id },
        Request::AllowClaims {
            node_id: id,
            allowed: false,
        },
        Request::Chain { node_id: Some(id) },
        Request::RenewKey,
        Request::PipeListen {
            protocol: "demo/pipe/1".to_owned(),
        },
        Request::PipeConnect {
            node_id: id,
            protocol: "demo/pipe/1".to_owned(),
        },
    ]
}

fn control_requests() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for request in requests() {
        lines.extend(serde_json::to_vec(&request).expect("JSON"));
        lines.push(b'\n');
    }
    let mut all_at_limit = vec![255, 255];
    all_at_limit.extend_from_slice(&lines);
    let mut small_buffer = vec![3, 120];
    small_buffer.extend_from_slice(&lines);
    let mut one = vec![15, 255];
    one.extend_from_slice(br#"{"op":"set_node","node_id":"v0000000000000000000000000000000000000000000000000000","address":"node.example:1314"}"#);
    vec![
        all_at_limit,
        small_buffer,
        one,
        b"\x00\x00nonsense\n\n{}".to_vec(),
    ]
}

fn store_records() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = Store::open(dir.path(), &StoreOptions::default()).expect("a store");
    let own = key(store_records::OWN_SECRET[0]).node_id();
    let mut graph = NodeGraph::new(own, &Config::default()).expect("a graph");
    let mut ops = graph.persist_all();
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1_700_000_000,
        scopes: NodeAddressScopes::GLOBAL,
    };
    for n in 2..6u8 {
        let address: NodeAddress = format!("10.0.0.{n}:1314").parse().expect("an address");
        ops.extend(graph.set(id(n), address, data).expect("room").ops);
    }
    let pending: NodeAddress = "node.example:1314".parse().expect("an address");
    if let Ok(update) = graph.add_pending(id(7), pending, data) {
        ops.extend(update.ops);
    }
    ops.push(StoreOp::PutTask {
        key: TaskKey::CheckConnections,
        record: TaskRecord {
            due_unix_ms: 1_700_000_000_000,
            payload: TaskPayload::None,
        },
    });
    ops.push(StoreOp::PutTask {
        key: TaskKey::SyncNodeGraph,
        record: TaskRecord {
            due_unix_ms: 1_700_000_000_000,
            payload: TaskPayload::Sync {
                seeds: vec![(id(2), "10.0.0.2:1314".parse().expect("an address"))],
                connect_timeout_ms: 2000,
            },
        },
    });
    ops.push(StoreOp::PutGestaltLink { a: id(2), b: id(3) });
    ops.push(StoreOp::PutClaimPermission(id(4)));
    store.apply(&ops).expect("applied");
    let records = store.raw_records().expect("records");
    store.close();
    vec![
        store_records::unparse(0, &records),
        store_records::unparse(1, &records),
    ]
}

/// One record of the `mdns_packets` input: a datagram from `FROM[from]`
/// after `step²` ms.
fn mdns_record(out: &mut Vec<u8>, kind: u8, from: usize, step: u8, bytes: &[u8]) {
    let from = u8::try_from(from).expect("a small index");
    out.push(kind | (from << 2));
    out.push(step);
    let len = u16::try_from(bytes.len()).expect("a datagram");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn mdns_packets() -> Vec<Vec<u8>> {
    use mdns_packets::{FROM, OWN_ADDRESS, OWN_SECRET, PEER_SECRET, node_id, service, start};
    let now = start();
    let peer_address: SocketAddr = "10.0.0.2:1314".parse().expect("an address");
    // The peer announces itself and answers a query for itself.
    let mut peer = service(&PEER_SECRET, vec![peer_address]);
    peer.announce(now).expect("announcing");
    let mut announcements = Vec::new();
    while let Some(t) = peer.poll_transmit() {
        announcements.push(t.bytes);
    }
    // Our query for the peer, as the peer receives it, and its answer.
    let mut own = service(&OWN_SECRET, vec![OWN_ADDRESS]);
    own.query(now, keynode_core::QueryId(1), node_id(&PEER_SECRET))
        .expect("a query");
    let mut questions = Vec::new();
    while let Some(t) = own.poll_transmit() {
        questions.push(t.bytes);
    }
    let mut answers = Vec::new();
    for question in &questions {
        peer.handle_datagram(now, FROM[0], question);
    }
    let later = now + Duration::from_secs(1);
    peer.handle_timeout(later);
    while let Some(t) = peer.poll_transmit() {
        answers.push(t.bytes);
    }
    // The seeds reach the answer path: the answers find the peer.
    for answer in &answers {
        own.handle_datagram(later, FROM[0], answer);
    }
    let found = own.poll_answer().expect("the peer's answer is found");
    assert_eq!(found.1, vec![peer_address]);
    // A question for us, from another node querying.
    let mut asker = service(&PEER_SECRET, vec![peer_address]);
    asker
        .query(now, keynode_core::QueryId(1), node_id(&OWN_SECRET))
        .expect("a query");
    let mut asked = Vec::new();
    while let Some(t) = asker.poll_transmit() {
        asked.push(t.bytes);
    }
    let mut seeds = Vec::new();
    for (setup, packets) in [
        (3u8, &announcements),
        (2, &answers),
        (1, &asked),
        (7, &questions),
    ] {
        let mut input = vec![setup];
        for (i, packet) in packets.iter().enumerate() {
            mdns_record(&mut input, 0, i % 2, 10, packet);
        }
        mdns_record(&mut input, 3, 0, 40, &[]);
        seeds.push(input);
    }
    seeds
}
