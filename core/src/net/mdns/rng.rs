//! The generator behind `mdns-proto`'s response jitter and transaction ids,
//! seeded from the NodeId so the service stays deterministic.

use std::convert::Infallible;

use crate::NodeId;

/// SplitMix64 (Steele, Lea, Flood 2014): the generator behind `mdns-proto`'s
/// response jitter and transaction ids. Nothing there needs secrecy, only
/// spread; seeding it from the NodeId keeps the service deterministic and
/// gives different nodes different jitter. `mdns-proto` takes a
/// `rand_core` 0.10 generator, which the core's `rand` 0.9 ones are not.
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn from_node_id(node_id: &NodeId) -> Self {
        let seed = node_id
            .as_bytes()
            .iter()
            .fold(0u64, |seed, byte| seed.rotate_left(8) ^ u64::from(*byte));
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl rand_core_010::TryRng for SplitMix64 {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            for (byte, random) in chunk.iter_mut().zip(self.next().to_le_bytes()) {
                *byte = random;
            }
        }
        Ok(())
    }
}
