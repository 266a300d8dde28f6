//! The trace hash: every event the simulation processes is folded into one
//! 64-bit value, so two runs can be compared by a number.

use crate::net::mix;

/// A running hash of the event trace.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    hash: u64,
    events: u64,
}

impl Trace {
    /// Folds one event, given as words, into the hash.
    pub fn add(&mut self, words: &[u64]) {
        let mut h = self.hash;
        for w in words {
            h = mix(h ^ *w);
        }
        self.hash = h;
        self.events += 1;
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The number of events folded in.
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// A digest of bytes (FNV-1a), for ids and small payloads.
pub fn digest_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
