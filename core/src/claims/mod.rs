//! Identity, claims, the sigchain and the gestalt graph.
//!
//! Signing is pure computation (Ed25519 with `ring`), so it lives in the core.

mod claim;
mod identity;
mod sigchain;

pub use claim::{
    AbortReason, CLAIM_VERSION, Claim, ClaimBody, ClaimError, ClaimId, MAX_CLAIM_SIZE,
    MAX_SIGNATURES, SignedClaim, VerifiedClaim, check_link,
};
pub use identity::{Identity, InvalidSeed, KeyPair, SIGNATURE_LEN, Signature, verify};
pub use sigchain::{ChainRejection, verify_chain};
pub(crate) use sigchain::{GestaltGraph, Sigchain};
