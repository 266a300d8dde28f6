//! The sigchain (an append-only chain of claims) and the gestalt graph.

use std::collections::{BTreeMap, BTreeSet};

use super::claim::{Claim, ClaimBody, ClaimError, ClaimId, ClaimIdGen, SignedClaim, VerifiedClaim};
use crate::id::NodeId;
use crate::store::StoreOp;

/// A node's own chain of claims, each linked to the one before by id and digest.
#[derive(Clone, Debug)]
pub(crate) struct Sigchain {
    owner: NodeId,
    claims: Vec<(Claim, SignedClaim)>,
    ids: ClaimIdGen,
}

/// A claim of a fetched chain that did not verify.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChainRejection {
    /// Its id, if it decoded.
    pub claim_id: Option<ClaimId>,
    /// Its seq, if it decoded.
    pub seq: Option<u64>,
    /// Why it was rejected.
    pub error: ClaimError,
}

impl Sigchain {
    pub(crate) fn new(owner: NodeId) -> Self {
        Self {
            owner,
            claims: Vec::new(),
            ids: ClaimIdGen::default(),
        }
    }

    /// The chain of persisted claims (in seq order); what does not verify is
    /// reported and left out, as for a fetched chain.
    pub(crate) fn restore(owner: NodeId, claims: Vec<SignedClaim>) -> (Self, Vec<ChainRejection>) {
        let (good, bad) = verify_chain(&owner, &claims, None);
        let mut chain = Self::new(owner);
        for (claim, signed) in good {
            chain.claims.push((claim, signed));
        }
        chain.ids = ClaimIdGen::new(chain.claims.last().map(|(c, _)| c.id));
        (chain, bad)
    }

    /// Makes `owner` the issuer of the claims appended from now on.
    pub(crate) fn set_owner(&mut self, owner: NodeId) {
        self.owner = owner;
    }

    /// A new claim for the head of the chain (not appended).
    pub(crate) fn next_claim<R: rand::RngCore + ?Sized>(
        &mut self,
        body: ClaimBody,
        unix_ms: u64,
        rng: &mut R,
    ) -> Claim {
        let last = self.claims.last();
        Claim {
            version: super::claim::CLAIM_VERSION,
            id: self.ids.next(unix_ms, rng),
            seq: last.map_or(0, |(c, _)| c.seq + 1),
            prev_claim_id: last.map(|(c, _)| c.id),
            prev_digest: last.map(|(_, s)| s.digest()),
            iat: unix_ms / 1000,
            nbf: unix_ms / 1000,
            body,
        }
    }

    /// Appends a verified claim that extends the head; returns the store op.
    pub(crate) fn append(&mut self, verified: VerifiedClaim) -> Result<StoreOp, ClaimError> {
        let (claim, signed) = verified.into_parts();
        let last = self.claims.last();
        let links = claim.seq == last.map_or(0, |(c, _)| c.seq + 1)
            && claim.prev_claim_id == last.map(|(c, _)| c.id)
            && claim.prev_digest == last.map(|(_, s)| s.digest());
        if !links {
            return Err(ClaimError::ChainAdvanced);
        }
        if claim.issuer() != self.owner {
            return Err(ClaimError::WrongIssuer {
                expected: self.owner,
                found: claim.issuer(),
            });
        }
        let op = StoreOp::PutClaim {
            seq: claim.seq,
            claim: signed.clone(),
        };
        self.claims.push((claim, signed));
        Ok(op)
    }

    /// The chain's link claim about `other`, if there is one.
    pub(crate) fn link_to(&self, other: &NodeId) -> Option<&(Claim, SignedClaim)> {
        self.claims
            .iter()
            .find(|(c, _)| matches!(c.body, ClaimBody::LinkNode { sub, .. } if sub == *other))
    }

    /// Up to `limit` claims, from `from` (inclusive) or the start.
    pub(crate) fn page(&self, from: Option<ClaimId>, limit: usize) -> Vec<SignedClaim> {
        self.claims
            .iter()
            .filter(|(c, _)| from.is_none_or(|f| c.id >= f))
            .take(limit)
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub(crate) fn claims(&self) -> impl Iterator<Item = &(Claim, SignedClaim)> {
        self.claims.iter()
    }
}

/// Verifies a chain of `owner` (or a page of it, starting at `from`): each
/// claim decodes canonically, is issued and signed by `owner`, a link claim
/// also by its subject, and links to the one before by seq, id and digest.
/// The first claim that fails breaks the chain: it and everything after it
/// are rejected. Returns the verified claims in seq order and the rejections.
pub fn verify_chain(
    owner: &NodeId,
    claims: &[SignedClaim],
    from: Option<ClaimId>,
) -> (Vec<(Claim, SignedClaim)>, Vec<ChainRejection>) {
    let mut decoded: Vec<(Option<Claim>, &SignedClaim)> =
        claims.iter().map(|s| (s.decode().ok(), s)).collect();
    decoded.sort_by_key(|(c, _)| c.as_ref().map_or(u64::MAX, |c| c.seq));
    let mut good: Vec<(Claim, SignedClaim)> = Vec::new();
    let mut bad = Vec::new();
    let mut broken: Option<ClaimError> = None;
    for (claim, signed) in decoded {
        let result = match (&broken, &claim) {
            (Some(_), _) => Err(ClaimError::BrokenLink {
                seq: claim.as_ref().map_or(0, |c| c.seq),
                reason: "an earlier claim did not verify",
            }),
            _ => verify_one(owner, signed, good.last(), from),
        };
        match result {
            Ok(verified) => good.push(verified.into_parts()),
            Err(error) => {
                broken.get_or_insert(error.clone());
                bad.push(ChainRejection {
                    claim_id: claim.as_ref().map(|c| c.id),
                    seq: claim.as_ref().map(|c| c.seq),
                    error,
                });
            }
        }
    }
    (good, bad)
}

fn verify_one(
    owner: &NodeId,
    signed: &SignedClaim,
    previous: Option<&(Claim, SignedClaim)>,
    from: Option<ClaimId>,
) -> Result<VerifiedClaim, ClaimError> {
    let claim = signed.decode()?;
    let mut required = vec![*owner];
    let ClaimBody::LinkNode { iss, sub } = claim.body;
    if iss != *owner {
        return Err(ClaimError::WrongIssuer {
            expected: *owner,
            found: iss,
        });
    }
    required.push(sub);
    let verified = signed.verify(&required)?;
    let claim = verified.claim();
    let (seq_ok, id_ok, digest_ok) = match previous {
        Some((p, ps)) => (
            claim.seq == p.seq + 1,
            claim.prev_claim_id == Some(p.id),
            claim.prev_digest == Some(ps.digest()),
        ),
        // A page from the start must start at the genesis claim; a page from
        // a later claim links to claims not fetched.
        None if from.is_none() => (
            claim.seq == 0,
            claim.prev_claim_id.is_none(),
            claim.prev_digest.is_none(),
        ),
        None => (true, true, true),
    };
    let reason = if !seq_ok {
        Some("seq")
    } else if !id_ok {
        Some("previous claim id")
    } else if !digest_ok {
        Some("previous digest")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ClaimError::BrokenLink {
            seq: claim.seq,
            reason,
        }),
        None => Ok(verified),
    }
}

/// Links between nodes known to be one gestalt, recorded only from doubly
/// signed claims.
#[derive(Clone, Debug, Default)]
pub(crate) struct GestaltGraph {
    links: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl GestaltGraph {
    /// Records a link; returns the store op if it is new.
    pub(crate) fn link(&mut self, a: NodeId, b: NodeId) -> Option<StoreOp> {
        let new = self.links.entry(a).or_default().insert(b);
        self.links.entry(b).or_default().insert(a);
        new.then(|| StoreOp::PutGestaltLink {
            a: a.min(b),
            b: a.max(b),
        })
    }

    /// Every node linked to `node`, directly or through others (without `node`).
    pub(crate) fn gestalt(&self, node: &NodeId) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::new();
        let mut queue = vec![*node];
        while let Some(n) = queue.pop() {
            for m in self.links.get(&n).into_iter().flatten() {
                if *m != *node && seen.insert(*m) {
                    queue.push(*m);
                }
            }
        }
        seen
    }
}
