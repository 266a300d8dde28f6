//! The demo's application protocol, an echo: a client opens a
//! bidirectional stream of [`ECHO`], writes its payload and finishes; the
//! server writes every byte back as it arrives, then finishes. The client
//! writes and reads at once, so both directions' flow control is at work
//! (a client that wrote everything before reading would stall once the
//! windows fill), and compares the SHA-256 of what came back with its
//! payload's.

use std::time::{Duration, Instant};

use keynode_core::NodeId;
use ring::digest::{Context, SHA256, digest};

use crate::{Agent, AgentError, IncomingStream, Listener, Protocol, ProtocolError, StreamError};

/// The protocol's name.
pub const ECHO: &str = "demo/echo/1";

/// The largest chunk read at once.
const CHUNK: usize = 64 * 1024;

/// The stream error code of an echo that could not read its stream.
const ECHO_FAILED: u32 = 1;

/// The echo protocol.
pub fn protocol() -> Result<Protocol, ProtocolError> {
    Protocol::try_from(ECHO)
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// No connection or stream.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The stream broke.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The echo differs from the payload.
    #[error("{sent} bytes sent, {echoed} echoed, {}", if *.same_digest { "same SHA-256" } else { "SHA-256 differs" })]
    Mismatch {
        /// Bytes sent.
        sent: usize,
        /// Bytes echoed (reading stops past `sent`).
        echoed: usize,
        /// Whether the digests match.
        same_digest: bool,
    },
}

/// Echoes every stream of `listener`, each in a task of its own (as many
/// at once as the listener's protocol options take), until dropped.
pub async fn serve(mut listener: Listener) {
    loop {
        let incoming = listener.accept().await;
        tokio::spawn(echo(incoming));
    }
}

async fn echo(mut incoming: IncomingStream) {
    let Some(mut send) = incoming.send.take() else {
        return;
    };
    loop {
        match incoming.recv.read_chunk(CHUNK).await {
            Ok(Some(chunk)) => {
                if send.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            Ok(None) => break,
            Err(_) => {
                let _ = send.reset(ECHO_FAILED);
                return;
            }
        }
    }
    let _ = send.finish();
}

/// Sends `payload` to `target`'s echo and checks what comes back; the time
/// from opening the stream to the echo's end.
pub async fn transfer(
    agent: &Agent,
    target: NodeId,
    protocol: &Protocol,
    payload: &[u8],
) -> Result<Duration, TransferError> {
    let conn = agent.acquire_connection(target).await?;
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi(protocol).await?;
    let write = async {
        send.write_all(payload).await?;
        send.finish()
    };
    let read = async {
        let mut echoed = 0;
        let mut hash = Context::new(&SHA256);
        while let Some(chunk) = recv.read_chunk(CHUNK).await? {
            echoed += chunk.len();
            if echoed > payload.len() {
                // More than was sent: wrong already, and not to be held.
                let _ = recv.stop(ECHO_FAILED);
                break;
            }
            hash.update(&chunk);
        }
        Ok::<_, StreamError>((echoed, hash.finish()))
    };
    let (written, read) = futures::join!(write, read);
    let (echoed, echo_digest) = read?;
    written?;
    let same_digest = echo_digest.as_ref() == digest(&SHA256, payload).as_ref();
    if echoed != payload.len() || !same_digest {
        return Err(TransferError::Mismatch {
            sent: payload.len(),
            echoed,
            same_digest,
        });
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_echo_protocol_name_is_valid() {
        assert!(super::protocol().is_ok(), "the demo expects it to be");
    }
}
