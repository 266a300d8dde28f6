//! [`Pair`]: a client and a server connected over loopback, on which the
//! stream benchmarks open streams. keynode's agents and plain quinn
//! implement it alike, so that each benchmark runs the same code on both.
//!
//! The server answers two kinds of stream:
//! - sink: it reads the stream to its end, discarding the bytes, then
//!   answers with how many it read ([`count_answer`]) and finishes;
//! - echo: it reads the stream to its end (at most [`ECHO_LIMIT`] bytes),
//!   writes the same bytes back and finishes.

use bytes::Bytes;

use crate::BenchResult;

/// The most bytes an echo stream may carry.
pub(crate) const ECHO_LIMIT: usize = 64 * 1024;

/// The most bytes a sink takes from its stream per read. Both transports
/// hand out one received frame's bytes per read at most, so this only
/// needs to be larger than a frame.
pub(crate) const SINK_READ: usize = 1 << 20;

/// A connected client and server.
pub(crate) trait Pair {
    /// Opens a stream to the sink and writes `total` bytes to it, `chunk`
    /// (or what is left) per write; returns how many bytes the sink
    /// counted, once it has read them all.
    fn sink(
        &self,
        total: u64,
        chunk: Bytes,
    ) -> impl Future<Output = BenchResult<u64>> + Send + 'static;

    /// Opens a stream to the echo, writes `request` and finishes; returns
    /// what came back.
    fn echo(&self, request: Bytes) -> impl Future<Output = BenchResult<Vec<u8>>> + Send + 'static;

    /// Closes the connection and stops both ends.
    fn close(self) -> impl Future<Output = BenchResult<()>>;
}

/// The length of each write of `total` bytes in writes of at most `chunk`.
pub(crate) fn write_lengths(total: u64, chunk: usize) -> impl Iterator<Item = usize> {
    let chunk = chunk.max(1) as u64;
    let full = total / chunk;
    let rest = total % chunk;
    std::iter::repeat_n(chunk as usize, full as usize).chain((rest > 0).then_some(rest as usize))
}

/// A sink's answer: the count of bytes it read.
pub(crate) fn count_answer(count: u64) -> [u8; 8] {
    count.to_le_bytes()
}

/// The count in a sink's answer.
pub(crate) fn read_count(answer: &[u8]) -> BenchResult<u64> {
    let bytes: [u8; 8] = answer
        .try_into()
        .map_err(|_| format!("a sink's answer of {} bytes, not 8", answer.len()))?;
    Ok(u64::from_le_bytes(bytes))
}
