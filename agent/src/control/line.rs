//! The line reader both ends of the socket use: one line at a time, with
//! a bound on how much of it is held, so a peer cannot make either end
//! buffer without limit.

use std::io;

use futures::io::{AsyncBufRead, AsyncBufReadExt};

use super::dispatch::parse_line;
use super::protocol::{ControlError, Request};

/// What [`read_line`] read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line (without its newline) is in the buffer. At the end of the
    /// stream, the last bytes count as a line even without a newline.
    Complete,
    /// The line was longer than the limit; it was read and dropped.
    TooLong,
    /// The stream ended.
    End,
}

/// Reads one line into `buf`, holding at most `max` bytes of it.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume_unpin(used);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// A line as [`frame_requests`] read it, and what it parsed to.
#[doc(hidden)]
pub type FramedRequest = (Vec<u8>, Result<Request, ControlError>);

/// How the server reads `input` from a client: framed into lines by
/// [`read_line`] through a buffer of `capacity` bytes holding at most `max`
/// bytes of a line, each complete line parsed as a request. A line too long
/// is `None`. For the fuzz target `control_requests` and its replay test.
#[doc(hidden)]
pub fn frame_requests(input: &[u8], capacity: usize, max: usize) -> Vec<Option<FramedRequest>> {
    let mut reader = futures::io::BufReader::with_capacity(capacity.max(1), input);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    // Reading from a slice never waits, so no runtime is needed.
    futures::executor::block_on(async {
        loop {
            match read_line(&mut reader, &mut buf, max).await {
                Ok(Line::End) | Err(_) => break,
                Ok(Line::TooLong) => out.push(None),
                Ok(Line::Complete) => out.push(Some((buf.clone(), parse_line(&buf)))),
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use futures::io::BufReader;

    use super::*;

    #[test]
    fn lines_are_bounded_and_a_long_one_is_skipped() {
        let input: &[u8] = b"short\n0123456789abc\nnext\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            match futures::executor::block_on(read_line(&mut reader, &mut buf, 10)).unwrap() {
                Line::End => break,
                Line::TooLong => lines.push("<too long>".to_owned()),
                Line::Complete => lines.push(String::from_utf8(buf.clone()).unwrap()),
            }
        }
        assert_eq!(lines, ["short", "<too long>", "next", "last"]);
    }
}
