//! How the agent's half of an open pipe is framed: the peer's bytes in
//! chunks, each a 4-byte big-endian length and that many bytes, then a
//! chunk of length 0 and one [`Response`](super::Response) line, the pipe's
//! outcome. The client's half is raw bytes ended by shutting down its write
//! half; only this direction needs framing, because only the agent has
//! something to say after the data (whether the stream ended cleanly), and
//! a byte stream cannot tell "the end" from "the end, after an error".

/// The longest chunk, in bytes.
pub(super) const MAX_CHUNK: usize = 64 * 1024;

/// The length prefix of a chunk.
pub(super) const HEADER_LEN: usize = 4;

/// A chunk's header, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    /// This many bytes of data follow.
    Data(usize),
    /// The data is over; the outcome line follows.
    End,
}

/// A header that cannot be one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a pipe chunk of {0} bytes is longer than {MAX_CHUNK}")]
pub(super) struct ChunkTooLong(pub(super) u64);

impl Chunk {
    /// Reads a header.
    pub(super) fn parse(header: [u8; HEADER_LEN]) -> Result<Self, ChunkTooLong> {
        let len = u32::from_be_bytes(header);
        match usize::try_from(len) {
            Ok(0) => Ok(Self::End),
            Ok(len) if len <= MAX_CHUNK => Ok(Self::Data(len)),
            _ => Err(ChunkTooLong(len.into())),
        }
    }

    /// The header of `self`; data longer than [`MAX_CHUNK`] must be split.
    pub(super) fn header(self) -> [u8; HEADER_LEN] {
        let len = match self {
            Self::Data(len) => {
                debug_assert!(len > 0 && len <= MAX_CHUNK, "chunk of {len} bytes");
                len
            }
            Self::End => 0,
        };
        // At most MAX_CHUNK, which fits a u32.
        u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_overlong_ones_are_refused() {
        for chunk in [Chunk::End, Chunk::Data(1), Chunk::Data(MAX_CHUNK)] {
            assert_eq!(Chunk::parse(chunk.header()), Ok(chunk));
        }
        let long = u32::try_from(MAX_CHUNK + 1).unwrap();
        assert_eq!(
            Chunk::parse(long.to_be_bytes()),
            Err(ChunkTooLong(long.into()))
        );
    }
}
