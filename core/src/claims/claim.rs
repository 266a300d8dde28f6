//! Claims: what a node asserts on its sigchain, signed by one or more nodes.

use std::fmt;

use rand::RngCore;
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

use super::identity::{KeyPair, Signature, verify};
use crate::id::NodeId;

/// The claim format this build writes.
pub const CLAIM_VERSION: u8 = 1;

/// The most signatures one signed claim may carry.
pub const MAX_SIGNATURES: usize = 4;

/// The largest encoded claim payload accepted.
pub const MAX_CLAIM_SIZE: usize = 4096;

/// A claim's id: 16 bytes, the first 6 the creation time in Unix
/// milliseconds (big-endian), so ids sort by time; the other 10 random, and
/// incremented instead when two claims are made in one millisecond, so ids of
/// one chain strictly increase.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimId(pub [u8; 16]);

impl ClaimId {
    /// The creation time, Unix milliseconds.
    pub fn unix_ms(&self) -> u64 {
        self.0
            .iter()
            .take(6)
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

impl fmt::Debug for ClaimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimId(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl fmt::Display for ClaimId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Makes strictly increasing [`ClaimId`]s.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClaimIdGen {
    last: Option<ClaimId>,
}

impl ClaimIdGen {
    pub(crate) fn new(last: Option<ClaimId>) -> Self {
        Self { last }
    }

    pub(crate) fn next<R: RngCore + ?Sized>(&mut self, unix_ms: u64, rng: &mut R) -> ClaimId {
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().take(6).enumerate() {
            *byte = (unix_ms >> (8 * (5 - i))) as u8;
        }
        rng.fill_bytes(id.get_mut(6..).unwrap_or_default());
        let mut id = ClaimId(id);
        if let Some(last) = self.last
            && id <= last
        {
            // Same millisecond (or the clock went back): last + 1.
            let mut bytes = last.0;
            for byte in bytes.iter_mut().rev() {
                let (sum, carry) = byte.overflowing_add(1);
                *byte = sum;
                if !carry {
                    break;
                }
            }
            id = ClaimId(bytes);
        }
        self.last = Some(id);
        id
    }
}

/// What a claim asserts. An enum so that new kinds can be added.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ClaimBody {
    /// `iss` and `sub` are the same gestalt. Valid only when signed by both.
    LinkNode {
        /// The issuer: the node whose chain holds the claim.
        iss: NodeId,
        /// The subject: the other node.
        sub: NodeId,
    },
}

/// A claim on a sigchain.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Claim {
    /// [`CLAIM_VERSION`].
    pub version: u8,
    /// Its id.
    pub id: ClaimId,
    /// Its position in the issuer's chain, from 0.
    pub seq: u64,
    /// The id of the claim before it in the chain.
    pub prev_claim_id: Option<ClaimId>,
    /// SHA-256 of the previous signed claim's encoding.
    pub prev_digest: Option<[u8; 32]>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not valid before, Unix seconds.
    pub nbf: u64,
    /// What it asserts.
    pub body: ClaimBody,
}

impl Claim {
    /// The node whose chain holds it.
    pub fn issuer(&self) -> NodeId {
        match self.body {
            ClaimBody::LinkNode { iss, .. } => iss,
        }
    }
}

/// A claim's exact bytes and the signatures over them.
///
/// The payload is kept as sent: signatures are made and checked over these
/// bytes, and decoding checks they are the one canonical encoding of the claim.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedClaim {
    /// The postcard encoding of the [`Claim`].
    pub payload: Vec<u8>,
    /// Who signed the payload.
    pub signatures: Vec<(NodeId, Signature)>,
}

/// What is wrong with a claim or a claim exchange.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The payload does not decode.
    #[error("claim does not decode: {0}")]
    Malformed(postcard::Error),
    /// Bytes after the claim in its payload.
    #[error("claim payload has {0} trailing bytes")]
    TrailingBytes(usize),
    /// The claim could not be encoded (a bug: claims are plain data).
    #[error("cannot encode the claim: {0}")]
    Encode(postcard::Error),
    /// The payload is not the canonical encoding of its claim.
    #[error("claim is not in canonical encoding")]
    NotCanonical,
    /// Larger than [`MAX_CLAIM_SIZE`] or with more than [`MAX_SIGNATURES`].
    #[error("claim exceeds its size or signature bounds")]
    TooLarge,
    /// A claim version this build does not read.
    #[error("claim version {0} is not supported")]
    UnsupportedVersion(u8),
    /// A signature does not verify.
    #[error("signature of {0} does not verify")]
    BadSignature(NodeId),
    /// A required signature is absent.
    #[error("claim is not signed by {0}")]
    MissingSignature(NodeId),
    /// One node signed twice.
    #[error("{0} signed the claim twice")]
    DuplicateSigner(NodeId),
    /// The issuer is not the node expected.
    #[error("claim issued by {found}, expected {expected}")]
    WrongIssuer {
        /// Expected.
        expected: NodeId,
        /// Found.
        found: NodeId,
    },
    /// The subject is not the node expected.
    #[error("claim about {found}, expected {expected}")]
    WrongSubject {
        /// Expected.
        expected: NodeId,
        /// Found.
        found: NodeId,
    },
    /// Issued too long ago or too far in the future.
    #[error("claim issued at {iat} is stale or from the future (now {now})")]
    Stale {
        /// Its issue time.
        iat: u64,
        /// Now.
        now: u64,
    },
    /// A claim id seen before in a recent exchange.
    #[error("claim {0} was replayed")]
    Replayed(ClaimId),
    /// A message of the exchange came out of order, or changed what it must repeat.
    #[error("unexpected claim message: expected {expected}, got {got}")]
    OutOfOrder {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
    /// The chain does not link: wrong seq, previous id or previous digest.
    #[error("claim {seq} does not link to the one before: {reason}")]
    BrokenLink {
        /// Its seq.
        seq: u64,
        /// What does not match.
        reason: &'static str,
    },
    /// The target refused: the requester lacks the `claim` permission.
    #[error("the target does not allow claims from this node")]
    NotPermitted,
    /// The other side aborted the exchange.
    #[error("the other side aborted the exchange: {0:?}")]
    Aborted(AbortReason),
    /// The exchange's stream closed before it was over.
    #[error("the stream closed before the exchange was over")]
    StreamClosed,
    /// The chain moved on while the exchange ran (another claim was
    /// appended); retry.
    #[error("the sigchain changed during the exchange; retry")]
    ChainAdvanced,
}

/// Why a side aborted a claim exchange, as sent on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum AbortReason {
    /// The requester lacks the `claim` permission.
    NotPermitted,
    /// A claim did not verify (signature, encoding, issuer or subject).
    Invalid,
    /// A claim was stale or replayed.
    Stale,
    /// A message came out of order.
    OutOfOrder,
    /// The sending side cannot sign or store now.
    Unavailable,
}

impl ClaimError {
    /// What to tell the other side when this error aborts an exchange.
    pub fn abort_reason(&self) -> AbortReason {
        match self {
            ClaimError::NotPermitted => AbortReason::NotPermitted,
            ClaimError::Stale { .. } | ClaimError::Replayed(_) => AbortReason::Stale,
            ClaimError::OutOfOrder { .. } => AbortReason::OutOfOrder,
            ClaimError::ChainAdvanced | ClaimError::StreamClosed => AbortReason::Unavailable,
            ClaimError::Aborted(reason) => *reason,
            _ => AbortReason::Invalid,
        }
    }
}

/// A claim whose signatures were checked: only verification makes one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedClaim {
    claim: Claim,
    signed: SignedClaim,
}

impl VerifiedClaim {
    /// The claim.
    pub fn claim(&self) -> &Claim {
        &self.claim
    }

    /// The signed claim, as received.
    pub fn signed(&self) -> &SignedClaim {
        &self.signed
    }

    /// Both parts.
    pub fn into_parts(self) -> (Claim, SignedClaim) {
        (self.claim, self.signed)
    }
}

impl SignedClaim {
    /// Encodes `claim` and signs it with `key`.
    pub fn sign(claim: &Claim, key: &KeyPair) -> Result<Self, ClaimError> {
        let payload = postcard::to_allocvec(claim).map_err(ClaimError::Encode)?;
        if payload.len() > MAX_CLAIM_SIZE {
            return Err(ClaimError::TooLarge);
        }
        let signature = key.sign(&payload);
        Ok(Self {
            payload,
            signatures: vec![(key.node_id(), signature)],
        })
    }

    /// Adds `key`'s signature (again if it signed already: replaced).
    pub fn countersign(&mut self, key: &KeyPair) {
        let signature = key.sign(&self.payload);
        self.signatures.retain(|(id, _)| *id != key.node_id());
        self.signatures.push((key.node_id(), signature));
    }

    /// Whether `node` signed (without checking the signature).
    pub fn signed_by(&self, node: &NodeId) -> bool {
        self.signatures.iter().any(|(id, _)| id == node)
    }

    /// The claim in the payload: decoded whole, canonical, of a known version.
    pub fn decode(&self) -> Result<Claim, ClaimError> {
        if self.payload.len() > MAX_CLAIM_SIZE {
            return Err(ClaimError::TooLarge);
        }
        let (claim, rest): (Claim, _) =
            postcard::take_from_bytes(&self.payload).map_err(ClaimError::Malformed)?;
        if !rest.is_empty() {
            return Err(ClaimError::TrailingBytes(rest.len()));
        }
        if claim.version != CLAIM_VERSION {
            return Err(ClaimError::UnsupportedVersion(claim.version));
        }
        let again = postcard::to_allocvec(&claim).map_err(ClaimError::Encode)?;
        if again != self.payload {
            return Err(ClaimError::NotCanonical);
        }
        Ok(claim)
    }

    /// Checks every signature and that `required` all signed; decodes the claim.
    pub fn verify(&self, required: &[NodeId]) -> Result<VerifiedClaim, ClaimError> {
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(ClaimError::TooLarge);
        }
        let claim = self.decode()?;
        for (i, (signer, signature)) in self.signatures.iter().enumerate() {
            if self.signatures.iter().take(i).any(|(s, _)| s == signer) {
                return Err(ClaimError::DuplicateSigner(*signer));
            }
            if !verify(signer, &self.payload, signature) {
                return Err(ClaimError::BadSignature(*signer));
            }
        }
        if let Some(missing) = required.iter().find(|r| !self.signed_by(r)) {
            return Err(ClaimError::MissingSignature(*missing));
        }
        Ok(VerifiedClaim {
            claim,
            signed: self.clone(),
        })
    }

    /// SHA-256 of this signed claim's encoding: what the next claim's
    /// `prev_digest` names.
    pub fn digest(&self) -> [u8; 32] {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        let mut out = [0u8; 32];
        for (o, b) in out.iter_mut().zip(digest(&SHA256, &bytes).as_ref()) {
            *o = *b;
        }
        out
    }
}

/// Checks that a verified claim is a node link from `iss` to `sub`, signed by both.
pub fn check_link(verified: &VerifiedClaim, iss: NodeId, sub: NodeId) -> Result<(), ClaimError> {
    let ClaimBody::LinkNode {
        iss: found_iss,
        sub: found_sub,
    } = verified.claim.body;
    if found_iss != iss {
        return Err(ClaimError::WrongIssuer {
            expected: iss,
            found: found_iss,
        });
    }
    if found_sub != sub {
        return Err(ClaimError::WrongSubject {
            expected: sub,
            found: found_sub,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn claim_ids_sort_by_time_and_are_unique_within_a_millisecond() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut ids = ClaimIdGen::default();
        let a = ids.next(1000, &mut rng);
        let b = ids.next(1000, &mut rng);
        let c = ids.next(999, &mut rng);
        let d = ids.next(2000, &mut rng);
        assert!(a < b && b < c && c < d);
        assert_eq!(a.unix_ms(), 1000);
        assert_eq!(d.unix_ms(), 2000);
    }

    fn claim(iss: NodeId, sub: NodeId) -> Claim {
        Claim {
            version: CLAIM_VERSION,
            id: ClaimId([1; 16]),
            seq: 0,
            prev_claim_id: None,
            prev_digest: None,
            iat: 10,
            nbf: 10,
            body: ClaimBody::LinkNode { iss, sub },
        }
    }

    #[test]
    fn signatures_cover_the_exact_bytes() {
        let a = KeyPair::from_seed(&[1; 32]).unwrap();
        let b = KeyPair::from_seed(&[2; 32]).unwrap();
        let mut signed = SignedClaim::sign(&claim(a.node_id(), b.node_id()), &a).unwrap();
        assert!(signed.verify(&[a.node_id()]).is_ok());
        assert_eq!(
            signed.verify(&[a.node_id(), b.node_id()]),
            Err(ClaimError::MissingSignature(b.node_id()))
        );
        signed.countersign(&b);
        let verified = signed.verify(&[a.node_id(), b.node_id()]).unwrap();
        assert!(check_link(&verified, a.node_id(), b.node_id()).is_ok());
        assert!(matches!(
            check_link(&verified, b.node_id(), a.node_id()),
            Err(ClaimError::WrongIssuer { .. })
        ));
        // A changed byte breaks both signatures.
        let mut tampered = signed.clone();
        if let Some(last) = tampered.payload.last_mut() {
            *last ^= 1;
        }
        assert!(tampered.verify(&[]).is_err());
        // A non-canonical encoding of the same claim is refused even if signed.
        let mut padded = signed.clone();
        padded.payload.push(0);
        padded.signatures = vec![(a.node_id(), a.sign(&padded.payload))];
        assert!(matches!(
            padded.verify(&[]),
            Err(ClaimError::TrailingBytes(1))
        ));
        // A non-minimal varint (seq 0 written as 0x80 0x00) decodes to the
        // same claim but is not its canonical encoding: refused.
        let claim = signed.decode().unwrap();
        let canonical = postcard::to_allocvec(&claim).unwrap();
        let seq_at = 1 + 16; // version byte, then the 16-byte id
        assert_eq!(canonical[seq_at], 0);
        let mut long = canonical[..seq_at].to_vec();
        long.extend_from_slice(&[0x80, 0x00]);
        long.extend_from_slice(&canonical[seq_at + 1..]);
        let forged = SignedClaim {
            signatures: vec![(a.node_id(), a.sign(&long))],
            payload: long,
        };
        assert_eq!(forged.verify(&[]), Err(ClaimError::NotCanonical));
    }
}
