//! The agent's side of a pipe: a control connection handed over to an
//! application stream. After [`Request::PipeListen`] or
//! [`Request::PipeConnect`] and the answer that the stream is open
//! ([`Reply::PipeOpen`]), the client's bytes go to the peer as they are
//! (the client shuts down its write half to finish the stream), and the
//! peer's come back in [chunks](super::chunks), followed by the outcome:
//! [`Reply::PipeClosed`] once both directions ended cleanly, or the error
//! that broke the pipe. Then the agent closes the connection.
//!
//! Until the stream opens the client sends nothing, so the end of its
//! connection then means it went away: a listen or connect it gave up on
//! is dropped (the protocol is free again) instead of waiting for a peer.
//! Once the pipe is open, a client that dies looks like one whose input
//! ended (as a netcat's TCP connection does): the agent finishes the
//! stream, and resets it only when a write to the client fails.

use std::future::Future;
use std::io;

use futures::future::Either;

use futures::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use keynode_core::NodeId;

use super::chunks::{Chunk, HEADER_LEN, MAX_CHUNK};
use super::protocol::{ControlError, ErrorKind, Reply, Request, Response};
use super::server::write_response;
use super::unix::UnixStream;
use crate::runtime::Runtime;
use crate::{Agent, AgentError, Protocol, ProtocolOptions, RecvStream, SendStream, StreamError};

/// The application error code of a pipe's stream when its client failed
/// or went away mid-stream: the peer sees a reset, not a clean end of a
/// stream cut short.
pub const PIPE_ABORTED: u32 = 1;

/// The client's half of the connection, read.
pub(super) type Reader<R> = BufReader<UnixStream<R>>;

/// An open stream, about to be the pipe.
struct Opened {
    peer: NodeId,
    /// `None` for a unidirectional stream: nothing goes back to the peer.
    send: Option<SendStream>,
    recv: RecvStream,
}

/// Why a pipe did not open.
enum NotOpened {
    /// The client went away first.
    ClientGone,
    /// The request failed; the client is told why.
    Failed(ControlError),
}

impl From<ControlError> for NotOpened {
    fn from(e: ControlError) -> Self {
        Self::Failed(e)
    }
}

impl From<AgentError> for NotOpened {
    fn from(e: AgentError) -> Self {
        Self::Failed(e.into())
    }
}

/// What broke an open pipe.
enum Broken {
    /// The stream (reset, stopped, refused, connection lost).
    Stream(StreamError),
    /// The client's connection.
    Client(io::Error),
}

/// Serves a pipe request on its connection, to the pipe's end.
pub(super) async fn serve<R: Runtime>(
    agent: &Agent,
    request: Request,
    mut reader: Reader<R>,
    mut writer: UnixStream<R>,
) -> io::Result<()> {
    let opened = match request {
        Request::PipeListen { protocol } => {
            listen(agent, &protocol, &mut reader, &mut writer).await
        }
        Request::PipeConnect { node_id, protocol } => {
            connect(agent, node_id, &protocol, &mut reader).await
        }
        other => Err(NotOpened::Failed(ControlError::new(
            ErrorKind::Internal,
            format!("not a pipe request: {other:?}"),
        ))),
    };
    let mut opened = match opened {
        Ok(opened) => opened,
        Err(NotOpened::ClientGone) => return Ok(()),
        Err(NotOpened::Failed(e)) => return write_response(&mut writer, &Response::Error(e)).await,
    };
    let open = Response::Ok(Reply::PipeOpen { peer: opened.peer });
    write_response(&mut writer, &open).await?;
    tracing::debug!("pipe with {} open", opened.peer);

    let (mut sent, mut received) = (0, 0);
    let outcome = futures::try_join!(
        up(&mut reader, opened.send.as_mut(), &mut sent),
        down(&mut opened.recv, &mut writer, &mut received),
    );
    if outcome.is_err() {
        // Neither side may take what it got for the whole stream. Either
        // may be done already, which is no error here.
        if let Some(send) = opened.send.as_mut() {
            let _ = send.reset(PIPE_ABORTED);
        }
        let _ = opened.recv.stop(PIPE_ABORTED);
    }
    let last = match outcome {
        Ok(_) => Response::Ok(Reply::PipeClosed { sent, received }),
        Err(Broken::Stream(e)) => Response::Error(e.into()),
        Err(Broken::Client(e)) => {
            tracing::debug!("pipe with {}: the client is gone: {e}", opened.peer);
            return Ok(());
        }
    };
    tracing::debug!("pipe with {} closed: {last:?}", opened.peer);
    writer.write_all(&Chunk::End.header()).await?;
    write_response(&mut writer, &last).await
}

/// Listens on `name` and waits for the first stream: a second one is
/// refused while the first is open, and any later one once it is taken
/// (the listener is dropped then).
async fn listen<R: Runtime>(
    agent: &Agent,
    name: &str,
    reader: &mut Reader<R>,
    writer: &mut UnixStream<R>,
) -> Result<Opened, NotOpened> {
    let protocol = parse(name)?;
    let mut listener = agent.accept(protocol, ProtocolOptions::with_max_inbound_streams(1))?;
    let listening = Response::Ok(Reply::PipeListening {
        node_id: agent.node_id(),
        protocol: name.to_owned(),
    });
    write_response(writer, &listening)
        .await
        .map_err(|_| NotOpened::ClientGone)?;
    let incoming = unless_gone(reader, listener.accept())
        .await
        .ok_or(NotOpened::ClientGone)?;
    drop(listener);
    Ok(Opened {
        peer: incoming.peer,
        send: incoming.send,
        recv: incoming.recv,
    })
}

/// Opens a bidirectional stream of `name` to `node_id`, connecting first
/// if needed (through the network: directly, or by signal and hole punch).
async fn connect<R: Runtime>(
    agent: &Agent,
    node_id: NodeId,
    name: &str,
    reader: &mut Reader<R>,
) -> Result<Opened, NotOpened> {
    let protocol = parse(name)?;
    let open = async {
        let conn = agent.acquire_connection(node_id).await?;
        // The streams hold uses of the connection: the lease may go.
        conn.open_bi(&protocol).await
    };
    let (send, recv) = unless_gone(reader, open)
        .await
        .ok_or(NotOpened::ClientGone)??;
    Ok(Opened {
        peer: node_id,
        send: Some(send),
        recv,
    })
}

fn parse(name: &str) -> Result<Protocol, ControlError> {
    Protocol::new(name.as_bytes().to_vec())
        .map_err(|e| ControlError::new(ErrorKind::BadRequest, format!("protocol {name:?}: {e}")))
}

/// Runs `work` unless the client goes away first (`None`). A client that
/// sends bytes early is no longer watched: they wait for the pipe.
async fn unless_gone<R: Runtime, T>(
    reader: &mut Reader<R>,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    {
        let filled = std::pin::pin!(reader.fill_buf());
        match futures::future::select(&mut work, filled).await {
            Either::Left((done, _)) => return Some(done),
            Either::Right((filled, _)) => {
                if !matches!(filled, Ok(bytes) if !bytes.is_empty()) {
                    return None;
                }
            }
        }
    }
    Some(work.await)
}

/// The client's bytes to the stream, which is finished at their end.
async fn up<R: Runtime>(
    reader: &mut Reader<R>,
    send: Option<&mut SendStream>,
    sent: &mut u64,
) -> Result<(), Broken> {
    let Some(send) = send else {
        return Ok(());
    };
    loop {
        let bytes = reader.fill_buf().await.map_err(Broken::Client)?;
        if bytes.is_empty() {
            return send.finish().map_err(Broken::Stream);
        }
        let n = send.write(bytes).await.map_err(Broken::Stream)?;
        reader.consume_unpin(n);
        *sent += n as u64;
    }
}

/// The stream's bytes to the client, in chunks.
async fn down<R: Runtime>(
    recv: &mut RecvStream,
    writer: &mut UnixStream<R>,
    received: &mut u64,
) -> Result<(), Broken> {
    let mut frame = Vec::with_capacity(HEADER_LEN + MAX_CHUNK);
    while let Some(chunk) = recv.read_chunk(MAX_CHUNK).await.map_err(Broken::Stream)? {
        if chunk.is_empty() {
            // A header of length 0 would end the data.
            continue;
        }
        frame.clear();
        frame.extend_from_slice(&Chunk::Data(chunk.len()).header());
        frame.extend_from_slice(&chunk);
        writer.write_all(&frame).await.map_err(Broken::Client)?;
        *received += chunk.len() as u64;
    }
    Ok(())
}
