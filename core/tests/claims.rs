//! The claim exchange, consent, replay, tampering, chain verification.

mod common;

use std::time::Duration;

use common::{Net, addr};
use keynode_core::claims::{
    Claim, ClaimBody, ClaimError, ClaimId, KeyPair, SignedClaim, verify_chain,
};
use keynode_core::wire::{ClaimMessage, Response};
use keynode_core::{
    Config, ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId, OpError,
    OpValue,
};

const STEPS: u64 = 100_000;

fn key(n: u8) -> KeyPair {
    KeyPair::from_seed(&[n; 32]).unwrap()
}

fn config() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

/// Nodes A (key 1, address 1) and B (key 2, address 2); A knows B's address;
/// B allows claims from A when `allow`.
fn pair(allow: bool) -> (Net, NodeId, NodeId) {
    let mut net = Net::new(common::t0());
    let (a, b) = (key(1), key(2));
    let (ida, idb) = (a.node_id(), b.node_id());
    net.add_identity(a.into(), addr(1), config());
    net.add_identity(b.into(), addr(2), config());
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    };
    let op = net.call(ida, |n, now| {
        n.set_node(
            now,
            idb,
            NodeAddress::from(addr(2)),
            data,
            false,
            true,
            None,
        )
        .unwrap()
    });
    net.run_until_done(ida, op, STEPS).unwrap();
    if allow {
        let op = net.call(idb, |n, now| n.allow_claims_from(now, ida, true).unwrap());
        net.run_until_done(idb, op, STEPS).unwrap();
    }
    (net, ida, idb)
}

fn claim(net: &mut Net, from: NodeId, to: NodeId) -> Result<OpValue, OpError> {
    let op = net.call(from, |n, now| n.claim_node(now, to, None).unwrap());
    let result = net.run_until_done(from, op, STEPS);
    // Let the target finish its side.
    for _ in 0..200 {
        net.step();
    }
    result
}

fn stored_claims(net: &Net, node: NodeId) -> usize {
    net.peers[&node].store.claims.len()
}

fn link_claims(chain: &[SignedClaim]) -> Vec<Claim> {
    chain.iter().map(|s| s.decode().unwrap()).collect()
}

#[test]
fn a_cross_sign_links_both_chains_and_gestalts() {
    let (mut net, a, b) = pair(true);
    assert_eq!(claim(&mut net, a, b), Ok(OpValue::Unit));
    for (me, other) in [(a, b), (b, a)] {
        let chain = net.node(me).sigchain();
        assert_eq!(chain.len(), 1, "{me} holds one claim");
        let claims = link_claims(&chain);
        assert_eq!(
            claims[0].body,
            ClaimBody::LinkNode {
                iss: me,
                sub: other
            }
        );
        assert_eq!(claims[0].seq, 0);
        // Doubly signed, and both signatures verify.
        assert!(chain[0].verify(&[me, other]).is_ok());
        assert_eq!(net.node(me).gestalt(&me), vec![other]);
        // Persisted with the graph's batch discipline: claim and link.
        assert_eq!(stored_claims(&net, me), 1);
        assert_eq!(net.peers[&me].store.gestalt.len(), 1);
        assert_eq!(net.peers[&me].store.claims[&0], chain[0]);
    }
    // The exchange had exactly the four messages, in order.
    let names: Vec<&str> = net.claim_log.iter().map(|(_, m)| m.name()).collect();
    assert_eq!(
        names,
        [
            "Request",
            "Countersigned",
            "Reverse",
            "ReverseCountersigned"
        ]
    );
}

#[test]
fn an_unsolicited_claim_is_refused() {
    let (mut net, a, b) = pair(false);
    assert_eq!(
        claim(&mut net, a, b),
        Err(OpError::Claim(ClaimError::NotPermitted))
    );
    for node in [a, b] {
        assert!(net.node(node).sigchain().is_empty());
        assert_eq!(stored_claims(&net, node), 0);
        assert!(net.node(node).gestalt(&node).is_empty());
    }
}

#[test]
fn a_node_without_a_key_cannot_claim() {
    let mut net = Net::new(common::t0());
    net.add(common::id(1), addr(1), config());
    let op = net.call(common::id(1), |n, now| {
        n.claim_node(now, key(2).node_id(), None).unwrap()
    });
    assert_eq!(
        net.run_until_done(common::id(1), op, STEPS),
        Err(OpError::CannotSign)
    );
}

/// How a man in the middle changes a claim message.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    Body,
    Signature,
    Signer,
    Subject,
}

fn tamper(message: &mut ClaimMessage, how: Tamper, third: &KeyPair, sender: &KeyPair) {
    let signed = match message {
        ClaimMessage::Request(s)
        | ClaimMessage::Countersigned(s)
        | ClaimMessage::Reverse(s)
        | ClaimMessage::ReverseCountersigned(s) => s,
        ClaimMessage::Abort(_) => return,
    };
    match how {
        Tamper::Body => {
            // Another time in the claim, re-encoded, signatures kept.
            let mut claim = signed.decode().unwrap();
            claim.iat += 1;
            signed.payload = postcard::to_allocvec(&claim).unwrap();
        }
        Tamper::Signature => {
            if let Some((_, sig)) = signed.signatures.last_mut() {
                sig.0[0] ^= 1;
            }
        }
        Tamper::Signer => {
            // The last signature replaced by a valid one of a third node.
            signed.signatures.pop();
            signed.countersign(third);
        }
        Tamper::Subject => {
            // A valid claim, signed by its sender, about a third node.
            let mut claim = signed.decode().unwrap();
            let ClaimBody::LinkNode { iss, .. } = claim.body;
            claim.body = ClaimBody::LinkNode {
                iss,
                sub: third.node_id(),
            };
            *signed = SignedClaim::sign(&claim, sender).unwrap();
        }
    }
}

#[test]
fn tampering_with_any_message_is_rejected_and_stores_nothing() {
    let third = key(3);
    for message_index in 1..=4usize {
        for how in [
            Tamper::Body,
            Tamper::Signature,
            Tamper::Signer,
            Tamper::Subject,
        ] {
            let (mut net, a, b) = pair(true);
            let keys = [(a, key(1)), (b, key(2))];
            let mut seen = 0;
            let t = third.clone();
            net.tamper_stream = Some(Box::new(move |from, message| {
                if matches!(message, ClaimMessage::Abort(_)) {
                    return true;
                }
                seen += 1;
                if seen == message_index {
                    let sender = &keys.iter().find(|(id, _)| *id == from).unwrap().1;
                    tamper(message, how, &t, sender);
                }
                true
            }));
            let result = claim(&mut net, a, b);
            let case = format!("message {message_index}, {how:?}");
            // The target never stores a link it did not verify.
            assert!(net.node(b).sigchain().is_empty(), "{case}: target chain");
            assert_eq!(stored_claims(&net, b), 0, "{case}: target store");
            assert!(net.node(b).gestalt(&b).is_empty(), "{case}: target gestalt");
            if message_index < 4 {
                assert!(
                    matches!(result, Err(OpError::Claim(_))),
                    "{case}: requester fails, got {result:?}"
                );
                assert!(net.node(a).sigchain().is_empty(), "{case}: requester chain");
                assert_eq!(stored_claims(&net, a), 0, "{case}: requester store");
            } else {
                // Message 4 is past the requester's commit point: its link is
                // one-sided until a retry repairs it.
                assert_eq!(result, Ok(OpValue::Unit), "{case}");
                assert_eq!(net.node(a).sigchain().len(), 1, "{case}");
                net.tamper_stream = None;
                assert_eq!(claim(&mut net, a, b), Ok(OpValue::Unit), "{case}: retry");
                assert_eq!(net.node(a).sigchain().len(), 1, "{case}: no duplicate");
                assert_eq!(net.node(b).sigchain().len(), 1, "{case}: repaired");
                assert_eq!(net.node(b).gestalt(&b), vec![a]);
            }
        }
    }
}

#[test]
fn a_retry_after_success_never_duplicates_a_link() {
    let (mut net, a, b) = pair(true);
    assert_eq!(claim(&mut net, a, b), Ok(OpValue::Unit));
    assert_eq!(claim(&mut net, a, b), Ok(OpValue::Unit));
    assert_eq!(net.node(a).sigchain().len(), 1);
    assert_eq!(net.node(b).sigchain().len(), 1);
    assert_eq!(stored_claims(&net, a), 1);
    assert_eq!(stored_claims(&net, b), 1);
}

#[test]
fn a_replayed_or_stale_first_message_is_rejected() {
    let (mut net, a, b) = pair(true);
    // A complete exchange; its first message is then replayed on a new stream.
    assert_eq!(claim(&mut net, a, b), Ok(OpValue::Unit));
    let replay = net
        .claim_log
        .iter()
        .find(|(from, m)| *from == a && matches!(m, ClaimMessage::Request(_)))
        .map(|(_, m)| m.clone())
        .expect("message 1 was sent");
    connect(&mut net, a, b);
    let before = net.claim_log.len();
    assert!(net.inject_stream_open(a, b, replay.clone()));
    for _ in 0..200 {
        net.step();
    }
    let answer = &net.claim_log[before + 1..];
    assert!(
        matches!(answer.first(), Some((from, ClaimMessage::Abort(_))) if *from == b),
        "B aborts a replayed first message: {answer:?}"
    );
    assert_eq!(net.node(b).sigchain().len(), 1, "nothing more stored");

    // A stale claim (issued an hour ago) is refused too.
    let (mut net, a, b) = pair(true);
    connect(&mut net, a, b);
    let stale = Claim {
        version: keynode_core::claims::CLAIM_VERSION,
        id: ClaimId([9; 16]),
        seq: 0,
        prev_claim_id: None,
        prev_digest: None,
        iat: net.now.unix_secs() - 3600,
        nbf: net.now.unix_secs() - 3600,
        body: ClaimBody::LinkNode { iss: a, sub: b },
    };
    let message = ClaimMessage::Request(SignedClaim::sign(&stale, &key(1)).unwrap());
    let before = net.claim_log.len();
    assert!(net.inject_stream_open(a, b, message));
    for _ in 0..200 {
        net.step();
    }
    assert!(matches!(
        net.claim_log.get(before + 1),
        Some((_, ClaimMessage::Abort(_)))
    ));
    assert!(net.node(b).sigchain().is_empty());
    assert_eq!(stored_claims(&net, b), 0);
}

/// Connects `a` to `b` (node 2 at address 2).
fn connect(net: &mut Net, a: NodeId, b: NodeId) {
    let op = net.call(a, |n, now| {
        n.ping_node_address(now, b, NodeAddress::from(addr(2)), None)
            .unwrap()
    });
    assert_eq!(
        net.run_until_done(a, op, STEPS),
        Ok(OpValue::Reachable(true))
    );
}

/// A chain of `owner` linking it to `partners`, built by hand.
fn chain(owner: &KeyPair, partners: &[KeyPair]) -> Vec<SignedClaim> {
    let mut out: Vec<SignedClaim> = Vec::new();
    let mut prev: Option<(ClaimId, [u8; 32])> = None;
    for (i, partner) in partners.iter().enumerate() {
        let mut id = [0u8; 16];
        id[5] = i as u8 + 1;
        let claim = Claim {
            version: keynode_core::claims::CLAIM_VERSION,
            id: ClaimId(id),
            seq: i as u64,
            prev_claim_id: prev.map(|p| p.0),
            prev_digest: prev.map(|p| p.1),
            iat: 100,
            nbf: 100,
            body: ClaimBody::LinkNode {
                iss: owner.node_id(),
                sub: partner.node_id(),
            },
        };
        let mut signed = SignedClaim::sign(&claim, owner).unwrap();
        signed.countersign(partner);
        prev = Some((claim.id, signed.digest()));
        out.push(signed);
    }
    out
}

#[test]
fn chain_verification_reports_forged_and_broken_claims() {
    let owner = key(10);
    let partners: Vec<KeyPair> = (11..=14).map(key).collect();
    let good = chain(&owner, &partners);
    let (ok, bad) = verify_chain(&owner.node_id(), &good, None);
    assert_eq!(ok.len(), 4);
    assert!(bad.is_empty());

    // A forged signature on claim 1: claims 1.. are not returned.
    let mut forged = good.clone();
    forged[1].signatures[1].1.0[3] ^= 0x40;
    let (ok, bad) = verify_chain(&owner.node_id(), &forged, None);
    assert_eq!(ok.len(), 1);
    assert_eq!(bad.len(), 3);
    assert!(matches!(bad[0].error, ClaimError::BadSignature(_)));
    assert_eq!(bad[0].seq, Some(1));

    // A broken link: claim 2 re-signed with a wrong previous digest.
    let mut broken = good.clone();
    let mut c2 = broken[2].decode().unwrap();
    c2.prev_digest = Some([0; 32]);
    broken[2] = SignedClaim::sign(&c2, &owner).unwrap();
    broken[2].countersign(&partners[2]);
    let (ok, bad) = verify_chain(&owner.node_id(), &broken, None);
    assert_eq!(ok.len(), 2);
    assert!(matches!(
        bad[0].error,
        ClaimError::BrokenLink {
            seq: 2,
            reason: "previous digest"
        }
    ));

    // A claim issued by someone else in the chain.
    let mut foreign = good.clone();
    foreign[0] = chain(&partners[0], std::slice::from_ref(&owner))[0].clone();
    let (ok, bad) = verify_chain(&owner.node_id(), &foreign, None);
    assert!(ok.is_empty());
    assert!(matches!(bad[0].error, ClaimError::WrongIssuer { .. }));
}

#[test]
fn request_chain_data_returns_only_what_verifies() {
    let (mut net, a, b) = pair(true);
    assert_eq!(claim(&mut net, a, b), Ok(OpValue::Unit));
    let op = net.call(a, |n, now| {
        n.request_chain_data(now, b, None, None).unwrap()
    });
    match net.run_until_done(a, op, STEPS) {
        Ok(OpValue::Chain { claims, rejected }) => {
            assert_eq!(claims, net.node(b).sigchain());
            assert!(rejected.is_empty());
        }
        other => panic!("expected a chain, got {other:?}"),
    }
    // A forged signature in the answer is reported and left out.
    net.tamper_response = Some(Box::new(|_, response| {
        if let Response::ChainData { claims } = response {
            for claim in claims.iter_mut() {
                claim.signatures[0].1.0[0] ^= 1;
            }
        }
    }));
    let op = net.call(a, |n, now| {
        n.request_chain_data(now, b, None, None).unwrap()
    });
    match net.run_until_done(a, op, STEPS) {
        Ok(OpValue::Chain { claims, rejected }) => {
            assert!(claims.is_empty());
            assert_eq!(rejected.len(), 1);
            assert!(matches!(rejected[0].error, ClaimError::BadSignature(_)));
        }
        other => panic!("expected a chain, got {other:?}"),
    }
}

#[test]
fn the_sigchain_survives_a_restart_byte_for_byte() {
    let (mut net, a, b) = pair(true);
    assert_eq!(claim(&mut net, a, b), Ok(OpValue::Unit));
    let before = net.node(b).sigchain();
    let snapshot = net.peers[&b].store.snapshot();
    let mut restarted =
        keynode_core::NodeManager::new(config(), key(2), net.now, common::seed(9)).unwrap();
    restarted.handle(net.now, keynode_core::Event::SnapshotLoaded(snapshot));
    restarted.start(net.now).unwrap();
    assert_eq!(restarted.sigchain(), before);
    assert_eq!(restarted.gestalt(&b), vec![a]);
    // The permission was persisted with it.
    assert!(net.peers[&b].store.permissions.contains(&a));
}

#[test]
fn a_lost_message_times_out_on_both_sides_and_stores_nothing() {
    let (mut net, a, b) = pair(true);
    // Message 3 (the target's own claim) never arrives.
    net.tamper_stream = Some(Box::new(|_, m| !matches!(m, ClaimMessage::Reverse(_))));
    assert_eq!(claim(&mut net, a, b), Err(OpError::Timeout));
    for _ in 0..2000 {
        net.step();
    }
    for node in [a, b] {
        assert!(net.node(node).sigchain().is_empty());
        assert_eq!(stored_claims(&net, node), 0);
        assert!(net.node(node).gestalt(&node).is_empty());
    }
    // The target's side ended too: nothing of the exchange is left running.
    assert_eq!(net.node(b).operations_in_flight(), 0);
}

#[test]
fn an_out_of_order_first_message_is_aborted() {
    let (mut net, a, b) = pair(true);
    connect(&mut net, a, b);
    let claim = Claim {
        version: keynode_core::claims::CLAIM_VERSION,
        id: ClaimId([7; 16]),
        seq: 0,
        prev_claim_id: None,
        prev_digest: None,
        iat: net.now.unix_secs(),
        nbf: net.now.unix_secs(),
        body: ClaimBody::LinkNode { iss: b, sub: a },
    };
    let message = ClaimMessage::ReverseCountersigned(SignedClaim::sign(&claim, &key(1)).unwrap());
    let before = net.claim_log.len();
    assert!(net.inject_stream_open(a, b, message));
    for _ in 0..200 {
        net.step();
    }
    assert!(matches!(
        net.claim_log.get(before + 1),
        Some((
            _,
            ClaimMessage::Abort(keynode_core::claims::AbortReason::OutOfOrder)
        ))
    ));
    assert!(net.node(b).sigchain().is_empty());
}

#[test]
fn chain_data_is_paged() {
    // Nodes 1, 3 and 4 each claim node 2: its chain has three claims.
    let mut net = Net::new(common::t0());
    for n in [1u8, 2, 3, 4] {
        net.add_identity(key(n).into(), addr(n.into()), config());
    }
    let b = key(2).node_id();
    for n in [1u8, 3, 4] {
        let from = key(n).node_id();
        let op = net.call(b, |m, now| m.allow_claims_from(now, from, true).unwrap());
        net.run_until_done(b, op, STEPS).unwrap();
        let data = NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: 1,
            scopes: NodeAddressScopes::GLOBAL,
        };
        let op = net.call(from, |m, now| {
            m.set_node(now, b, NodeAddress::from(addr(2)), data, false, true, None)
                .unwrap()
        });
        net.run_until_done(from, op, STEPS).unwrap();
        assert_eq!(claim(&mut net, from, b), Ok(OpValue::Unit));
    }
    let full = net.node(b).sigchain();
    assert_eq!(full.len(), 3);
    let a = key(1).node_id();
    let page = |net: &mut Net, from: Option<ClaimId>, limit: u32| {
        let op = net.call(a, |m, now| {
            m.request_chain_data(now, b, from, Some(limit)).unwrap()
        });
        match net.run_until_done(a, op, STEPS) {
            Ok(OpValue::Chain { claims, rejected }) => {
                assert!(rejected.is_empty(), "{rejected:?}");
                claims
            }
            other => panic!("expected a chain, got {other:?}"),
        }
    };
    assert_eq!(page(&mut net, None, 2), full[..2].to_vec());
    let third = full[2].decode().unwrap().id;
    // A page that starts later links to claims not fetched: still verified.
    assert_eq!(page(&mut net, Some(third), 10), full[2..].to_vec());
}

#[test]
fn concurrent_exchanges_on_one_chain_take_turns() {
    // A claims B while B claims C: B's chain gets both claims, linked.
    let mut net = Net::new(common::t0());
    for n in [1u8, 2, 3] {
        net.add_identity(key(n).into(), addr(n.into()), config());
    }
    let (a, b, c) = (key(1).node_id(), key(2).node_id(), key(3).node_id());
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    };
    for (from, to, at) in [(a, b, 2u16), (b, c, 3)] {
        let op = net.call(from, |m, now| {
            m.set_node(
                now,
                to,
                NodeAddress::from(addr(at)),
                data,
                false,
                true,
                None,
            )
            .unwrap()
        });
        net.run_until_done(from, op, STEPS).unwrap();
    }
    for (target, from) in [(b, a), (c, b)] {
        let op = net.call(target, |m, now| {
            m.allow_claims_from(now, from, true).unwrap()
        });
        net.run_until_done(target, op, STEPS).unwrap();
    }
    let first = net.call(a, |m, now| m.claim_node(now, b, None).unwrap());
    let second = net.call(b, |m, now| m.claim_node(now, c, None).unwrap());
    assert_eq!(net.run_until_done(a, first, STEPS), Ok(OpValue::Unit));
    assert_eq!(net.run_until_done(b, second, STEPS), Ok(OpValue::Unit));
    for _ in 0..500 {
        net.step();
    }
    let chain = net.node(b).sigchain();
    assert_eq!(chain.len(), 2);
    let (ok, bad) = verify_chain(&b, &chain, None);
    assert_eq!((ok.len(), bad.len()), (2, 0), "{bad:?}");
    let mut gestalt = net.node(b).gestalt(&b);
    gestalt.sort();
    let mut expected = vec![a, c];
    expected.sort();
    assert_eq!(gestalt, expected);
}

/// Nodes 1 (A), 2 (B, the target), 3 (C) and 4 (D): A and C may claim B, D
/// may not; each is connected to B. A's exchange with B starts and A dies
/// after its first message (nothing more of A's arrives): B holds its chain
/// for A. Returns the net and the four NodeIds.
fn target_held_by_a_dead_requester() -> (Net, [NodeId; 4]) {
    let mut net = Net::new(common::t0());
    for n in [1u8, 2, 3, 4] {
        net.add_identity(key(n).into(), addr(n.into()), config());
    }
    let ids = [1u8, 2, 3, 4].map(|n| key(n).node_id());
    let [a, b, c, d] = ids;
    for from in [a, c] {
        let op = net.call(b, |m, now| m.allow_claims_from(now, from, true).unwrap());
        net.run_until_done(b, op, STEPS).unwrap();
    }
    for from in [a, c, d] {
        connect(&mut net, from, b);
    }
    net.tamper_stream = Some(Box::new(move |from, m| {
        from != a || matches!(m, ClaimMessage::Request(_))
    }));
    let _ = net.call(a, |m, now| m.claim_node(now, b, None).unwrap());
    for _ in 0..STEPS {
        if net
            .claim_log
            .iter()
            .any(|(from, m)| *from == b && matches!(m, ClaimMessage::Reverse(_)))
        {
            return (net, ids);
        }
        assert!(net.step(), "the network went idle");
    }
    panic!("B never answered A");
}

/// A first message of `from` to `to`, well signed.
fn first_message(net: &Net, from: u8, to: NodeId) -> ClaimMessage {
    let key = key(from);
    let claim = Claim {
        version: keynode_core::claims::CLAIM_VERSION,
        id: ClaimId([from; 16]),
        seq: 0,
        prev_claim_id: None,
        prev_digest: None,
        iat: net.now.unix_secs(),
        nbf: net.now.unix_secs(),
        body: ClaimBody::LinkNode {
            iss: key.node_id(),
            sub: to,
        },
    };
    ClaimMessage::Request(SignedClaim::sign(&claim, &key).unwrap())
}

/// The aborts B sent, by reason.
fn aborts_of(net: &Net, b: NodeId) -> Vec<keynode_core::claims::AbortReason> {
    net.claim_log
        .iter()
        .filter(|(from, _)| *from == b)
        .filter_map(|(_, m)| match m {
            ClaimMessage::Abort(reason) => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Defect 12 of issue 15: a requester that dies mid-exchange holds the
/// target's chain for `claim_reply_timeout` (5 s), not the whole
/// `claim_timeout` (15 s): another node's claim, with 10 s to go through,
/// waits its turn and succeeds.
#[test]
fn a_requester_dead_mid_exchange_does_not_stall_the_next_claim() {
    let (mut net, [_, b, c, _]) = target_held_by_a_dead_requester();
    let op = net.call(c, |m, now| {
        m.claim_node(now, b, Some(Duration::from_secs(10))).unwrap()
    });
    assert_eq!(net.run_until_done(c, op, STEPS), Ok(OpValue::Unit));
    for _ in 0..200 {
        net.step();
    }
    assert_eq!(net.node(b).gestalt(&b), vec![c]);
}

/// Defect 12 of issue 15: while B's chain is held, a peer without the
/// permission is refused at once (before, it joined the queue and waited
/// for the chain), and one peer's exchanges wait two at most: the rest are
/// refused at once as unavailable.
#[test]
fn the_chain_queue_takes_only_permitted_peers_and_a_few_of_each() {
    let (mut net, [_, b, c, d]) = target_held_by_a_dead_requester();
    let before = aborts_of(&net, b).len();
    let logged = net.claim_log.len();
    let message = first_message(&net, 4, b);
    assert!(net.inject_stream_open(d, b, message));
    for _ in 0..4 {
        let message = first_message(&net, 3, b);
        assert!(net.inject_stream_open(c, b, message));
    }
    // Until the refusals are out, or B serves a waiting exchange (its
    // chain is free again).
    let served = |net: &Net| {
        net.claim_log[logged..]
            .iter()
            .any(|(from, m)| *from == b && matches!(m, ClaimMessage::Countersigned(_)))
    };
    for _ in 0..STEPS {
        if served(&net) || aborts_of(&net, b).len() >= before + 3 || !net.step() {
            break;
        }
    }
    assert!(!served(&net), "B's chain was still held");
    use keynode_core::claims::AbortReason;
    let aborts = aborts_of(&net, b).split_off(before);
    assert_eq!(
        aborts,
        [
            AbortReason::NotPermitted,
            AbortReason::Unavailable,
            AbortReason::Unavailable
        ]
    );
    assert_eq!(net.node(b).stats().claims_refused_busy, 2);
}
