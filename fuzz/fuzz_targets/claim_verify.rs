//! Arbitrary bytes as postcard-encoded `SignedClaim`s (up to 8, one after
//! the other): `decode`, `verify` and `digest` must not panic, nor may
//! `verify_chain` over them.
//!
//! Random bytes almost never carry a valid Ed25519 signature, so the first
//! byte can also ask for the claims to be made valid enough to reach the
//! chain checks (bit 0): issuer, subject and signers mapped onto four fixed
//! keys, and the payload signed by the issuer, the subject (unless bit 2)
//! and the signers the input names (each once, unless bit 3); with bit 1,
//! each claim is also linked to the one before (seq, previous id, previous
//! digest). The fuzzer then breaks chains by its choice of claims.

#![no_main]

use std::sync::LazyLock;

use keynode_core::NodeId;
use keynode_core::claims::{Claim, ClaimBody, KeyPair, SignedClaim, verify_chain};
use libfuzzer_sys::fuzz_target;

const MAX_CLAIMS: usize = 8;

static KEYS: LazyLock<Vec<KeyPair>> = LazyLock::new(|| {
    (1..=4u8)
        .map(|n| KeyPair::from_seed(&[n; 32]).expect("a valid seed"))
        .collect()
});

fn key_for(id: &NodeId) -> &'static KeyPair {
    let keys = &*KEYS;
    &keys[usize::from(id.as_bytes()[0]) % keys.len()]
}

/// Makes `signed` valid as `mode` asks (see the module docs), after `previous`.
fn make_valid(
    signed: &SignedClaim,
    previous: Option<&(Option<Claim>, SignedClaim)>,
    mode: u8,
) -> (Option<Claim>, SignedClaim) {
    let mut signers: Vec<&KeyPair> = Vec::new();
    let claim = signed.decode().ok().map(|mut claim| {
        let ClaimBody::LinkNode { iss, sub } = claim.body;
        let (iss, sub) = (key_for(&iss), key_for(&sub));
        claim.body = ClaimBody::LinkNode {
            iss: iss.node_id(),
            sub: sub.node_id(),
        };
        signers.push(iss);
        if mode & 4 == 0 {
            signers.push(sub);
        }
        if mode & 2 != 0 {
            let before = previous.and_then(|(c, s)| c.as_ref().map(|c| (c, s)));
            claim.seq = before.map_or(0, |(c, _)| c.seq.wrapping_add(1));
            claim.prev_claim_id = before.map(|(c, _)| c.id);
            claim.prev_digest = before.map(|(_, s)| s.digest());
        }
        claim
    });
    let payload = claim
        .as_ref()
        .and_then(|c| postcard::to_allocvec(c).ok())
        .unwrap_or_else(|| signed.payload.clone());
    for (id, _) in &signed.signatures {
        signers.push(key_for(id));
    }
    let mut out = SignedClaim {
        payload,
        signatures: Vec::new(),
    };
    for key in signers {
        if mode & 8 == 0 && out.signed_by(&key.node_id()) {
            continue;
        }
        out.signatures.push((key.node_id(), key.sign(&out.payload)));
    }
    (claim, out)
}

fn check(claims: &[SignedClaim]) {
    for signed in claims {
        let decoded = signed.decode();
        let verified = signed.verify(&[]);
        let _ = signed.digest();
        if let Ok(verified) = &verified {
            assert_eq!(
                decoded.as_ref().ok(),
                Some(verified.claim()),
                "verify accepted a claim that decode rejects"
            );
        }
        if let Ok(claim) = &decoded {
            let issuer = claim.issuer();
            let _ = signed.verify(&[issuer]);
        }
    }
    let owners = [
        KEYS[0].node_id(),
        claims
            .first()
            .and_then(|c| c.decode().ok())
            .map_or(KEYS[1].node_id(), |c| c.issuer()),
    ];
    let from = claims.first().and_then(|c| c.decode().ok()).map(|c| c.id);
    for owner in &owners {
        for from in [None, from] {
            let (good, bad) = verify_chain(owner, claims, from);
            assert_eq!(
                good.len() + bad.len(),
                claims.len(),
                "verify_chain lost or duplicated a claim"
            );
            for (claim, signed) in &good {
                assert_eq!(claim.issuer(), *owner, "verify_chain kept another's claim");
                assert!(
                    signed.verify(&[*owner]).is_ok(),
                    "verify_chain kept a claim that does not verify"
                );
            }
            for pair in good.windows(2) {
                assert_eq!(
                    pair[0].0.seq.checked_add(1),
                    Some(pair[1].0.seq),
                    "verify_chain kept claims out of order"
                );
            }
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, mut rest)) = bytes.split_first() else {
        return;
    };
    let mut claims = Vec::new();
    while claims.len() < MAX_CLAIMS {
        match postcard::take_from_bytes::<SignedClaim>(rest) {
            Ok((claim, tail)) => {
                claims.push(claim);
                rest = tail;
            }
            Err(_) => break,
        }
    }
    if mode & 1 == 1 {
        let mut valid: Vec<(Option<Claim>, SignedClaim)> = Vec::with_capacity(claims.len());
        for signed in &claims {
            let made = make_valid(signed, valid.last(), mode);
            valid.push(made);
        }
        claims = valid.into_iter().map(|(_, s)| s).collect();
    }
    check(&claims);
});
