//! Node identity: [`NodeId`], XOR [`Distance`], [`BucketIndex`] and the text form.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE32HEX_NOPAD, DecodeKind};
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a [`NodeId`] in bytes (an Ed25519 public key).
pub const NODE_ID_LEN: usize = 32;

/// Length of the text form of a [`NodeId`]: the `v` prefix and 52 base32hex digits.
pub const NODE_ID_TEXT_LEN: usize = 1 + 52;

/// The multibase prefix of lowercase, unpadded base32hex.
const MULTIBASE_PREFIX: char = 'v';

/// The multibase prefix of uppercase, unpadded base32hex (`base32hexupper`):
/// the same key in capitals, accepted on input (a NodeId copied through
/// something that upper-cases it); output is always lowercase.
const MULTIBASE_PREFIX_UPPER: char = 'V';

/// Length of the base32hex digits of the text form.
const DIGITS_LEN: usize = NODE_ID_TEXT_LEN - 1;

/// The identity of a node: its 32-byte Ed25519 public key.
///
/// Spec: `NodeId`. Its text form ([`NodeIdEncoded`] in the spec) is multibase
/// base32hex, lowercase, unpadded, prefixed with `v`; `Display` and `FromStr`
/// convert between the two. `FromStr` also takes the multibase
/// `base32hexupper` form (`V` and uppercase digits) of the same key. Ordering is by bytes, so sorted collections of
/// `NodeId`s are deterministic.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId([u8; NODE_ID_LEN]);

/// The 32 bytes as four big-endian words: comparing those is comparing the
/// bytes, without a call to `memcmp` (ids and distances are compared in
/// every table lookup).
fn words(bytes: &[u8; NODE_ID_LEN]) -> [u64; 4] {
    let mut words = [0u64; 4];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *word = u64::from_be_bytes(b);
    }
    words
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        words(&self.0).cmp(&words(&other.0))
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Spec: `NodeIdEncoded`, the text form of a [`NodeId`].
pub type NodeIdEncoded = String;

impl NodeId {
    /// The NodeId made of these key bytes.
    pub const fn from_bytes(bytes: [u8; NODE_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }

    /// The NodeId in `bytes`, which must be exactly 32 bytes long.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, NodeIdParseError> {
        let array: [u8; NODE_ID_LEN] = bytes
            .try_into()
            .map_err(|_| NodeIdParseError::WrongByteLength { found: bytes.len() })?;
        Ok(Self(array))
    }

    /// A NodeId drawn from `rng` (tests, simulations).
    pub fn random<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; NODE_ID_LEN];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The XOR distance between two nodes.
    pub fn distance(&self, other: &NodeId) -> Distance {
        let mut d = [0u8; NODE_ID_LEN];
        for ((out, a), b) in d.iter_mut().zip(&self.0).zip(&other.0) {
            *out = a ^ b;
        }
        Distance(d)
    }

    /// The bucket `other` falls into in the routing table of `self`, or `None`
    /// when `other == self` (a node has no bucket for itself).
    pub fn bucket_index(&self, other: &NodeId) -> Option<BucketIndex> {
        self.distance(other).bucket_index()
    }

    /// A NodeId that falls into bucket `index` of `self`'s routing table, drawn
    /// from `rng`: the bits above `index` are `self`'s, bit `index` is flipped,
    /// the bits below are random. Used to pick a refresh target.
    pub fn random_in_bucket<R: RngCore + ?Sized>(&self, index: BucketIndex, rng: &mut R) -> NodeId {
        let mut random = [0u8; NODE_ID_LEN];
        rng.fill_bytes(&mut random);
        let bit = usize::from(index.get());
        let mut out = self.0;
        for (byte_pos, (byte, random)) in out.iter_mut().zip(random).enumerate() {
            // Bit numbers of this byte: its least significant bit is `low`.
            let low = (NODE_ID_LEN - 1 - byte_pos) * 8;
            if low + 8 <= bit {
                // Entirely below the flipped bit: random.
                *byte = random;
            } else if low <= bit {
                let shift = bit - low;
                let below_mask: u8 = ((1u16 << shift) - 1) as u8;
                *byte = (*byte & !below_mask & !(1 << shift))
                    | (!*byte & (1 << shift))
                    | (random & below_mask);
            }
        }
        NodeId(out)
    }

    /// [`Distance::bits_below`] of the id itself: for any two ids,
    /// `a.bits_below(i, c) ^ b.bits_below(i, c) == a.distance(&b).bits_below(i, c)`,
    /// so a node computes its own once and each contact's without a distance.
    pub fn bits_below(&self, index: BucketIndex, count: u8) -> u32 {
        bit_window(&self.0, index, count)
    }

    /// A NodeId in sub-range `sub` of bucket `index` of `self`'s table (see
    /// [`Distance::bits_below`]): [`NodeId::random_in_bucket`] with the
    /// `bits` bits below `index` set so that the distance's are `sub`'s.
    pub fn random_in_sub_range<R: RngCore + ?Sized>(
        &self,
        index: BucketIndex,
        bits: u8,
        sub: u32,
        rng: &mut R,
    ) -> NodeId {
        let mut out = self.random_in_bucket(index, rng);
        let bits = bits.min(index.get()).min(32);
        for j in 1..=bits {
            let position = usize::from(index.get() - j);
            let want = (sub >> (bits - j)) & 1 == 1;
            let mask = 1u8 << (position % 8);
            let own = self
                .0
                .get(NODE_ID_LEN - 1 - position / 8)
                .copied()
                .unwrap_or(0);
            if let Some(byte) = out.0.get_mut(NODE_ID_LEN - 1 - position / 8) {
                // Distance bit = own bit XOR out bit.
                let own_bit = own & mask != 0;
                if own_bit ^ want {
                    *byte |= mask;
                } else {
                    *byte &= !mask;
                }
            }
        }
        out
    }
}

/// Bits `index - 1` down to `index - count` of a big-endian 256-bit number
/// (fewer when `index < count`; `count` at most 8), as a number.
fn bit_window(bytes: &[u8; NODE_ID_LEN], index: BucketIndex, count: u8) -> u32 {
    let count = u32::from(count.min(index.get()).min(8));
    if count == 0 {
        return 0;
    }
    let top = usize::from(index.get()) - 1;
    // The byte holding bit `top`, and the one below it (or none), as 16 bits
    // whose lowest is bit number `base` (negative past bit 0).
    let high_pos = NODE_ID_LEN - 1 - top / 8;
    let high = u32::from(bytes.get(high_pos).copied().unwrap_or(0));
    let low = u32::from(bytes.get(high_pos + 1).copied().unwrap_or(0));
    let window = (high << 8) | low;
    let base = (top / 8) as i32 * 8 - 8;
    let lowest = top as i32 + 1 - count as i32;
    let shift = (lowest - base) as u32;
    (window >> shift) & ((1 << count) - 1)
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Encoded into a stack buffer: Display runs in every log line.
        let mut digits = [0u8; DIGITS_LEN];
        BASE32HEX_NOPAD.encode_mut(&self.0, &mut digits);
        digits.make_ascii_lowercase();
        let digits = std::str::from_utf8(&digits).map_err(|_| fmt::Error)?;
        write!(f, "{MULTIBASE_PREFIX}{digits}")
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a text or byte string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdParseError {
    /// The text is empty.
    #[error("NodeId is empty")]
    Empty,
    /// The text starts with neither multibase prefix `v` (base32hex) nor
    /// `V` (base32hexupper).
    #[error(
        "NodeId must start with the multibase prefix 'v' (base32hex) or 'V' (base32hexupper), found {found:?}"
    )]
    WrongPrefix {
        /// The first character of the text.
        found: char,
    },
    /// The text has the wrong number of characters.
    #[error("NodeId text must be {expected} characters long, found {found}")]
    WrongLength {
        /// [`NODE_ID_TEXT_LEN`].
        expected: usize,
        /// The length of the text in characters.
        found: usize,
    },
    /// A character outside the prefix's alphabet: lowercase base32hex
    /// (`0-9a-v`) after `v`, uppercase (`0-9A-V`) after `V`; one text does
    /// not mix cases.
    #[error("NodeId has an invalid character {character:?} at position {position}")]
    BadCharacter {
        /// Position in the text, counting the prefix as 0.
        position: usize,
        /// The offending character.
        character: char,
    },
    /// The last digit carries bits beyond the 256 of the key: not the canonical form.
    #[error("NodeId's last character {character:?} is not canonical (non-zero trailing bits)")]
    NonCanonical {
        /// The last character of the text.
        character: char,
    },
    /// Raw bytes of the wrong length.
    #[error("NodeId must be {NODE_ID_LEN} bytes, found {found}")]
    WrongByteLength {
        /// The number of bytes given.
        found: usize,
    },
}

impl FromStr for NodeId {
    type Err = NodeIdParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut chars = text.chars();
        let first = chars.next().ok_or(NodeIdParseError::Empty)?;
        let upper = match first {
            MULTIBASE_PREFIX => false,
            MULTIBASE_PREFIX_UPPER => true,
            found => return Err(NodeIdParseError::WrongPrefix { found }),
        };
        let found = text.chars().count();
        if found != NODE_ID_TEXT_LEN {
            return Err(NodeIdParseError::WrongLength {
                expected: NODE_ID_TEXT_LEN,
                found,
            });
        }
        // All characters are checked here so that errors name the character,
        // and so that a multi-byte character never reaches the byte decoder.
        for (position, character) in text.char_indices().skip(1) {
            let in_alphabet = if upper {
                matches!(character, '0'..='9' | 'A'..='V')
            } else {
                matches!(character, '0'..='9' | 'a'..='v')
            };
            if !in_alphabet {
                return Err(NodeIdParseError::BadCharacter {
                    position,
                    character,
                });
            }
        }
        // Only ASCII is left, so bytes are characters. The standard base32hex
        // table is uppercase; it checks that the trailing bits are zero, so
        // every NodeId has one text form.
        let mut digits = [0u8; DIGITS_LEN];
        for (digit, byte) in digits.iter_mut().zip(text.bytes().skip(1)) {
            *digit = byte.to_ascii_uppercase();
        }
        let mut bytes = [0u8; NODE_ID_LEN];
        match BASE32HEX_NOPAD.decode_mut(&digits, &mut bytes) {
            Ok(NODE_ID_LEN) => Ok(NodeId(bytes)),
            Ok(_) => Err(NodeIdParseError::WrongLength {
                expected: NODE_ID_TEXT_LEN,
                found,
            }),
            Err(partial) => {
                let position = partial.error.position + 1;
                let character = text.chars().nth(position).unwrap_or('?');
                Err(match partial.error.kind {
                    DecodeKind::Trailing => NodeIdParseError::NonCanonical { character },
                    _ => NodeIdParseError::BadCharacter {
                        position,
                        character,
                    },
                })
            }
        }
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; NODE_ID_LEN]>::deserialize(deserializer).map(NodeId)
        }
    }
}

/// The XOR distance between two [`NodeId`]s, ordered as a 256-bit big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Distance([u8; NODE_ID_LEN]);

impl Ord for Distance {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        words(&self.0).cmp(&words(&other.0))
    }
}

impl PartialOrd for Distance {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Distance {
    /// The distance as big-endian bytes.
    pub const fn as_bytes(&self) -> &[u8; NODE_ID_LEN] {
        &self.0
    }

    /// The position of the highest set bit (0 = closest, 255 = farthest), or
    /// `None` for the zero distance.
    pub fn bucket_index(&self) -> Option<BucketIndex> {
        let (byte_pos, byte) = self.0.iter().enumerate().find(|(_, b)| **b != 0)?;
        let bit = (NODE_ID_LEN - 1 - byte_pos) * 8 + (7 - byte.leading_zeros() as usize);
        // `bit` is at most 255 by construction.
        Some(BucketIndex(bit as u8))
    }

    /// The `count` bits just below bit `index` (fewer when `index` is
    /// smaller than `count`), as a number: which of the `2^count` equal
    /// sub-ranges of bucket `index` the distance falls in. `count` above 8
    /// is taken as 8.
    pub fn bits_below(&self, index: BucketIndex, count: u8) -> u32 {
        bit_window(&self.0, index, count)
    }

    /// Whether bit `index` of the distance is set.
    pub fn bit(&self, index: BucketIndex) -> bool {
        let bit = usize::from(index.get());
        // `bit / 8` is at most 31, so the byte always exists.
        self.0
            .get(NODE_ID_LEN - 1 - bit / 8)
            .is_some_and(|byte| byte & (1 << (bit % 8)) != 0)
    }
}

/// The index of a bucket of the routing table: 0 (closest) to 255 (farthest).
///
/// Spec: `NodeBucketIndex`. A `u8` underneath, so an index out of range
/// cannot be made; [`BucketIndex::try_from`] checks numbers that come from outside.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct BucketIndex(u8);

/// Spec: `NodeBucketIndex`.
pub type NodeBucketIndex = BucketIndex;

impl BucketIndex {
    /// The closest bucket.
    pub const CLOSEST: BucketIndex = BucketIndex(0);
    /// The farthest bucket.
    pub const FARTHEST: BucketIndex = BucketIndex(255);
    /// The number of buckets.
    pub const COUNT: usize = 256;

    /// The bucket with this index.
    pub const fn new(index: u8) -> Self {
        Self(index)
    }

    /// The index as a number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// Every bucket, closest first.
    pub fn all() -> impl DoubleEndedIterator<Item = BucketIndex> + Clone {
        (0..=u8::MAX).map(BucketIndex)
    }
}

impl fmt::Display for BucketIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A bucket number outside 0..=255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bucket index {0} is out of range (0..=255)")]
pub struct BucketIndexOutOfRange(pub u64);

impl TryFrom<u64> for BucketIndex {
    type Error = BucketIndexOutOfRange;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        u8::try_from(value)
            .map(BucketIndex)
            .map_err(|_| BucketIndexOutOfRange(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn text_form_of_zero_and_ones() {
        let zero = NodeId::from_bytes([0; 32]);
        assert_eq!(zero.to_string(), format!("v{}", "0".repeat(52)));
        let ones = NodeId::from_bytes([0xff; 32]);
        // 256 bits of ones: 51 full digits of 'v' then 1 bit left in the last
        // digit's top bit, i.e. binary 10000 = 16 = 'g'.
        assert_eq!(ones.to_string(), format!("v{}g", "v".repeat(51)));
        assert_eq!(ones.to_string().parse::<NodeId>(), Ok(ones));
    }

    #[test]
    fn upper_case_text_is_the_same_node() {
        // Multibase 'V' is base32hexupper: the same key in capitals.
        for bytes in [[0u8; 32], [7; 32], [0xff; 32]] {
            let id = NodeId::from_bytes(bytes);
            let upper = id.to_string().to_uppercase();
            assert!(upper.starts_with('V'));
            assert_eq!(upper.parse::<NodeId>(), Ok(id));
            // Printed back in the canonical, lowercase form.
            assert_eq!(
                upper.parse::<NodeId>().map(|id| id.to_string()),
                Ok(id.to_string())
            );
        }
        // Non-canonical trailing bits are refused in capitals too.
        assert_eq!(
            format!("V{}1", "0".repeat(51)).parse::<NodeId>(),
            Err(NodeIdParseError::NonCanonical { character: '1' })
        );
    }

    #[test]
    fn parse_errors_are_specific() {
        let good = NodeId::from_bytes([7; 32]).to_string();
        assert_eq!("".parse::<NodeId>(), Err(NodeIdParseError::Empty));
        assert_eq!(
            format!("z{}", &good[1..]).parse::<NodeId>(),
            Err(NodeIdParseError::WrongPrefix { found: 'z' })
        );
        assert_eq!(
            good[..40].parse::<NodeId>(),
            Err(NodeIdParseError::WrongLength {
                expected: 53,
                found: 40
            })
        );
        // Uppercase digits after the lowercase prefix, and lowercase after
        // the uppercase one: mixed cases are not multibase.
        let upper_digits = format!("v{}", good[1..].to_uppercase());
        assert!(matches!(
            upper_digits.parse::<NodeId>(),
            Err(NodeIdParseError::BadCharacter { position: _, .. })
        ));
        let lower_digits = format!("V{}", &good[1..]);
        assert!(matches!(
            lower_digits.parse::<NodeId>(),
            Err(NodeIdParseError::BadCharacter { position: _, .. })
        ));
        let mut bad = good.clone();
        bad.replace_range(10..11, "w");
        assert_eq!(
            bad.parse::<NodeId>(),
            Err(NodeIdParseError::BadCharacter {
                position: 10,
                character: 'w'
            })
        );
        let mut multibyte = good.clone();
        multibyte.replace_range(5..6, "é");
        assert!(matches!(
            multibyte.parse::<NodeId>(),
            Err(NodeIdParseError::WrongLength { .. } | NodeIdParseError::BadCharacter { .. })
        ));
        // Non-zero trailing bits: the last digit of [0;32] is '0'; '1' sets a
        // bit beyond the 256th.
        let trailing = format!("v{}1", "0".repeat(51));
        assert_eq!(
            trailing.parse::<NodeId>(),
            Err(NodeIdParseError::NonCanonical { character: '1' })
        );
    }

    #[test]
    fn bucket_index_is_highest_differing_bit() {
        let own = NodeId::from_bytes([0; 32]);
        let mut b = [0u8; 32];
        b[31] = 1;
        assert_eq!(
            own.bucket_index(&NodeId::from_bytes(b)),
            Some(BucketIndex(0))
        );
        b[31] = 0b1000_0001;
        assert_eq!(
            own.bucket_index(&NodeId::from_bytes(b)),
            Some(BucketIndex(7))
        );
        b[0] = 0x80;
        assert_eq!(
            own.bucket_index(&NodeId::from_bytes(b)),
            Some(BucketIndex(255))
        );
        assert_eq!(own.bucket_index(&own), None);
    }

    #[test]
    fn bits_below_matches_bit_by_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let a = NodeId::random(&mut rng);
            let b = NodeId::random(&mut rng);
            let d = a.distance(&b);
            for index in BucketIndex::all() {
                for count in 0..=8u8 {
                    let n = count.min(index.get());
                    let mut expected = 0u32;
                    for i in 1..=n {
                        expected =
                            (expected << 1) | u32::from(d.bit(BucketIndex::new(index.get() - i)));
                    }
                    assert_eq!(d.bits_below(index, count), expected, "{index} {count}");
                    assert_eq!(
                        a.bits_below(index, count) ^ b.bits_below(index, count),
                        expected
                    );
                }
            }
        }
    }

    #[test]
    fn random_in_sub_range_lands_in_that_sub_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..20 {
            let own = NodeId::random(&mut rng);
            for index in BucketIndex::all() {
                for sub in 0..16 {
                    let id = own.random_in_sub_range(index, 4, sub, &mut rng);
                    assert_eq!(own.bucket_index(&id), Some(index));
                    let bits = 4.min(index.get());
                    let expect = sub & ((1 << bits) - 1);
                    assert_eq!(
                        own.distance(&id).bits_below(index, 4),
                        expect,
                        "{index} {sub}"
                    );
                }
            }
        }
    }

    #[test]
    fn random_in_bucket_lands_in_that_bucket() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20 {
            let own = NodeId::random(&mut rng);
            for index in BucketIndex::all() {
                let id = own.random_in_bucket(index, &mut rng);
                assert_eq!(
                    own.bucket_index(&id),
                    Some(index),
                    "own {own} bucket {index}"
                );
            }
        }
    }

    #[test]
    fn order_is_the_order_of_the_bytes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for _ in 0..2000 {
            let (a, b) = (NodeId::random(&mut rng), NodeId::random(&mut rng));
            // Equal prefixes of random lengths exercise every word.
            let mut c = *b.as_bytes();
            let keep = usize::from(c[0] % 32);
            c[..keep].copy_from_slice(&a.as_bytes()[..keep]);
            let c = NodeId::from_bytes(c);
            for (x, y) in [(a, b), (a, c), (c, a), (a, a)] {
                assert_eq!(x.cmp(&y), x.as_bytes().cmp(y.as_bytes()));
                let (dx, dy) = (x.distance(&b), y.distance(&b));
                assert_eq!(dx.cmp(&dy), dx.as_bytes().cmp(dy.as_bytes()));
            }
        }
    }

    #[test]
    fn serde_binary_and_text() {
        let id = NodeId::from_bytes([42; 32]);
        let bytes = postcard::to_allocvec(&id).unwrap();
        assert_eq!(bytes.len(), 32);
        assert_eq!(postcard::from_bytes::<NodeId>(&bytes).unwrap(), id);
    }

    #[test]
    fn bucket_index_from_number() {
        assert_eq!(BucketIndex::try_from(255u64), Ok(BucketIndex(255)));
        assert_eq!(
            BucketIndex::try_from(256u64),
            Err(BucketIndexOutOfRange(256))
        );
    }
}
