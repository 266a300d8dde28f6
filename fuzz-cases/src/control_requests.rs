//! The control socket's side of a client: its bytes framed into lines as
//! the server frames them, each line parsed as a request. Nothing may
//! panic; the framing must give exactly the input's lines (a line over the
//! limit reported as too long, never split or merged), and a request that
//! parses must print as one line that parses back to it (what the CLI
//! sends is what the agent reads).
//!
//! Input: `[capacity] [limit]` then the client's bytes; the read buffer is
//! `capacity + 1` bytes and the line limit `limit` bytes (255 meaning the
//! server's `MAX_REQUEST_SIZE`), so that small limits and lines crossing
//! buffer boundaries are both reached.

use keynode_tokio::control::{MAX_REQUEST_SIZE, Request, frame_requests};

/// The target.
pub fn run(input: &[u8]) {
    let [capacity, limit, bytes @ ..] = input else {
        return;
    };
    let capacity = usize::from(*capacity) + 1;
    let max = match limit {
        255 => MAX_REQUEST_SIZE,
        n => usize::from(*n),
    };
    let framed = frame_requests(bytes, capacity, max);
    // The lines the bytes hold: split at each newline; the last piece is a
    // line only if it is not empty (the stream ended without a newline).
    let mut expected: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    if expected.last().is_some_and(|last| last.is_empty()) {
        expected.pop();
    }
    assert_eq!(
        framed.len(),
        expected.len(),
        "framed into another number of lines"
    );
    for (got, want) in framed.iter().zip(&expected) {
        match got {
            None => assert!(want.len() > max, "a line of {} bytes refused", want.len()),
            Some((line, parsed)) => {
                assert_eq!(line.as_slice(), *want, "a line framed wrong");
                if let Ok(request) = parsed {
                    check_round_trip(request);
                }
            }
        }
    }
}

fn check_round_trip(request: &Request) {
    let text = serde_json::to_string(request).expect("a request prints as JSON");
    assert!(!text.contains('\n'), "{text:?} is more than a line");
    match text.parse::<Request>() {
        Ok(again) => assert_eq!(&again, request, "{text:?} parses to another request"),
        Err(e) => panic!("{request:?} prints as {text:?}, which does not parse: {e}"),
    }
}
