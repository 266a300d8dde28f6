//! A node's identity: its Ed25519 key pair, and signature checks.

use std::fmt;
use std::sync::Arc;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// The length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for b in self.0.iter().take(6) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{SIGNATURE_LEN} bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                <[u8; SIGNATURE_LEN]>::try_from(v)
                    .map(Signature)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        deserializer.deserialize_bytes(Visit)
    }
}

/// A node's key pair: its NodeId is the public key.
///
/// Made from a 32-byte secret seed; the driver draws the seed from the OS and
/// keeps it safe. Signing is deterministic (Ed25519), so the core stays pure.
#[derive(Clone)]
pub struct KeyPair {
    pair: Arc<Ed25519KeyPair>,
    node_id: NodeId,
}

/// Why a seed is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Ed25519 seed")]
pub struct InvalidSeed;

impl KeyPair {
    /// The key pair of a 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, InvalidSeed> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| InvalidSeed)?;
        let node_id =
            NodeId::try_from_slice(pair.public_key().as_ref()).map_err(|_| InvalidSeed)?;
        Ok(Self {
            pair: Arc::new(pair),
            node_id,
        })
    }

    /// The NodeId: the public key.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        let mut out = [0u8; SIGNATURE_LEN];
        let sig = self.pair.sign(message);
        for (o, b) in out.iter_mut().zip(sig.as_ref()) {
            *o = *b;
        }
        Signature(out)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.node_id)
    }
}

/// Whether `signature` is `signer`'s over exactly `message`.
pub fn verify(signer: &NodeId, message: &[u8], signature: &Signature) -> bool {
    UnparsedPublicKey::new(&ED25519, signer.as_bytes())
        .verify(message, &signature.0)
        .is_ok()
}

/// Who a node manager is: its NodeId, and the key that signs for it if it has one.
///
/// A manager without a key (simulations of routing alone) refuses the
/// operations that sign, with `OpError::CannotSign`.
#[derive(Clone, Debug)]
pub struct Identity {
    node_id: NodeId,
    key: Option<KeyPair>,
}

impl Identity {
    /// The NodeId.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The signing key, if any.
    pub fn key(&self) -> Option<&KeyPair> {
        self.key.as_ref()
    }
}

impl From<KeyPair> for Identity {
    fn from(key: KeyPair) -> Self {
        Self {
            node_id: key.node_id(),
            key: Some(key),
        }
    }
}

impl From<NodeId> for Identity {
    /// An identity that cannot sign.
    fn from(node_id: NodeId) -> Self {
        Self { node_id, key: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = KeyPair::from_seed(&[7; 32]).unwrap();
        let other = KeyPair::from_seed(&[8; 32]).unwrap();
        let sig = key.sign(b"hello");
        assert!(verify(&key.node_id(), b"hello", &sig));
        assert!(!verify(&key.node_id(), b"hellO", &sig));
        assert!(!verify(&other.node_id(), b"hello", &sig));
        // Deterministic: the same key signs the same message the same way.
        assert_eq!(key.sign(b"hello"), sig);
        let bytes = postcard::to_allocvec(&sig).unwrap();
        assert_eq!(postcard::from_bytes::<Signature>(&bytes).unwrap(), sig);
    }
}
