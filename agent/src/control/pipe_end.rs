//! The client's end of an open pipe ([`Client::into_pipe`]): an input's
//! bytes go to the agent as they are, and its write half is shut down at
//! the input's end (the agent finishes the stream then); the peer's bytes
//! come back in [chunks](super::chunks) and go to an output, followed by
//! the agent's last line, which says whether the pipe ended cleanly.
//!
//! [`Client::into_pipe`]: super::Client::into_pipe

use std::io;
use std::path::PathBuf;

use futures::future::Either;
use futures::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    Chain, Cursor,
};

use super::MAX_RESPONSE_SIZE;
use super::chunks::{Chunk, HEADER_LEN, MAX_CHUNK};
use super::client::BadAnswer;
use super::line::{Line, read_line};
use super::protocol::{ControlError, Reply, Response};
use super::unix::UnixStream;
use crate::runtime::Runtime;

/// Why a pipe failed, as its client saw it.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    /// Reading the input failed.
    #[error("reading the input: {0}")]
    Input(io::Error),
    /// Writing the output failed (the pipe was dropped: the agent resets
    /// the stream).
    #[error("writing the output: {0}")]
    Output(io::Error),
    /// The control socket failed.
    #[error("control socket of the agent in {}: {source}", .dir.display())]
    Socket {
        /// The agent's data directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The agent closed the connection before the pipe's last line: it
    /// stopped or died.
    #[error("the agent in {} closed the pipe before its end", .0.display())]
    Closed(PathBuf),
    /// The agent's half is not framed as a pipe's.
    #[error("the agent in {} sent an invalid pipe: {problem}", .dir.display())]
    Protocol {
        /// The agent's data directory.
        dir: PathBuf,
        /// What is wrong.
        problem: BadAnswer,
    },
    /// The stream broke (the agent's account: refused, reset, stopped,
    /// connection lost).
    #[error("{0}")]
    Stream(ControlError),
}

/// What a pipe carried, by the agent's count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Carried {
    /// Bytes of the input sent to the peer.
    pub sent: u64,
    /// Bytes of the peer written to the output.
    pub received: u64,
}

/// The client's end of an open pipe, on the runtime `R`.
pub struct PipeEnd<R: Runtime> {
    dir: PathBuf,
    reader: BufReader<Chain<Cursor<Vec<u8>>, UnixStream<R>>>,
    writer: UnixStream<R>,
}

impl<R: Runtime> PipeEnd<R> {
    /// The end of `stream`, of which `buffered` was read already.
    pub(super) fn new(dir: PathBuf, buffered: Vec<u8>, stream: UnixStream<R>) -> Self {
        let writer = stream.clone();
        Self {
            dir,
            reader: BufReader::with_capacity(MAX_CHUNK, Cursor::new(buffered).chain(stream)),
            writer,
        }
    }

    /// Carries `input` to the peer and the peer's bytes to `output`, until
    /// the agent's last line: both directions ended, or the stream broke.
    /// The input need not reach its end if the pipe fails first.
    pub async fn run<I, O>(self, input: I, output: O) -> Result<Carried, PipeError>
    where
        I: AsyncRead + Unpin,
        O: AsyncWrite + Unpin,
    {
        let Self {
            dir,
            mut reader,
            writer,
        } = self;
        let up = std::pin::pin!(up(input, writer));
        let down = std::pin::pin!(down(&dir, &mut reader, output));
        match futures::future::select(down, up).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right((sent, down)) => {
                sent?;
                down.await
            }
        }
    }
}

/// The input to the agent, then the end of the client's half. A failed
/// write is not reported: the agent ended the pipe, and its last line says
/// why.
async fn up<I: AsyncRead + Unpin>(
    mut input: I,
    mut writer: impl AsyncWrite + Unpin,
) -> Result<(), PipeError> {
    let mut buf = vec![0; MAX_CHUNK];
    loop {
        let n = input.read(&mut buf).await.map_err(PipeError::Input)?;
        let Some(bytes) = buf.get(..n).filter(|b| !b.is_empty()) else {
            let _ = writer.close().await;
            return Ok(());
        };
        if writer.write_all(bytes).await.is_err() {
            return Ok(());
        }
    }
}

/// The peer's chunks to `output`, then the agent's last line.
async fn down<R, O>(
    dir: &std::path::Path,
    reader: &mut R,
    mut output: O,
) -> Result<Carried, PipeError>
where
    R: AsyncBufRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let socket = |source| PipeError::Socket {
        dir: dir.to_path_buf(),
        source,
    };
    let closed = || PipeError::Closed(dir.to_path_buf());
    let invalid = |problem: BadAnswer| PipeError::Protocol {
        dir: dir.to_path_buf(),
        problem,
    };
    loop {
        let mut header = [0; HEADER_LEN];
        match reader.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(closed()),
            Err(e) => return Err(socket(e)),
        }
        let mut left = match Chunk::parse(header).map_err(|e| {
            invalid(BadAnswer::ChunkTooLong {
                len: e.0,
                max: MAX_CHUNK,
            })
        })? {
            Chunk::End => break,
            Chunk::Data(len) => len,
        };
        while left > 0 {
            let available = reader.fill_buf().await.map_err(socket)?;
            let n = available.len().min(left);
            let Some(bytes) = available.get(..n).filter(|b| !b.is_empty()) else {
                return Err(closed());
            };
            output.write_all(bytes).await.map_err(PipeError::Output)?;
            reader.consume_unpin(n);
            left -= n;
        }
    }
    output.flush().await.map_err(PipeError::Output)?;
    let mut line = Vec::new();
    match read_line(reader, &mut line, MAX_RESPONSE_SIZE)
        .await
        .map_err(socket)?
    {
        Line::End => Err(closed()),
        Line::TooLong => Err(invalid(BadAnswer::TooLong {
            max: MAX_RESPONSE_SIZE,
        })),
        Line::Complete => {
            match serde_json::from_slice(&line).map_err(|e| invalid(BadAnswer::Json(e)))? {
                Response::Ok(Reply::PipeClosed { sent, received }) => {
                    Ok(Carried { sent, received })
                }
                Response::Ok(other) => Err(invalid(BadAnswer::WrongReply(Box::new(other)))),
                Response::Error(e) => Err(PipeError::Stream(e)),
            }
        }
    }
}
