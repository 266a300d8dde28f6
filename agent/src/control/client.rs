//! The client end: a connection to a running agent's socket, used by the
//! `keynode nodes ...`, `keynode keys ...` and `keynode pipe ...` commands.
//! It tells "no agent" from "an agent that died" from a broken answer.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use futures::io::{AsyncWriteExt, BufReader};

use super::line::{Line, read_line};
use super::pipe_end::PipeEnd;
use super::protocol::{Request, Response};
use super::unix::UnixStream;
use super::{MAX_RESPONSE_SIZE, socket_path};
use crate::runtime::Runtime;

/// Why a [`Client`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket in the data directory.
    #[error("no agent running in {} (control.sock not found)", .0.display())]
    NotRunning(PathBuf),
    /// A socket nobody listens on: the agent died.
    #[error(
        "no agent running in {} (control.sock refuses connections; the agent is gone)",
        .0.display()
    )]
    Stale(PathBuf),
    /// The socket could not be used.
    #[error("control socket {}: {source}", .path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The agent closed the connection before answering.
    #[error("the agent in {} closed the connection without answering", .0.display())]
    Closed(PathBuf),
    /// The answer is not a response.
    #[error("the agent in {} sent an invalid response: {problem}", .dir.display())]
    Protocol {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong.
        problem: BadAnswer,
    },
}

/// What is wrong with an agent's answer on its control socket.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadAnswer {
    /// A line past the bound.
    #[error("a line longer than {max} bytes")]
    TooLong {
        /// [`MAX_RESPONSE_SIZE`].
        max: usize,
    },
    /// A line that is not a [`Response`] in JSON.
    #[error("not a response: {0}")]
    Json(#[source] serde_json::Error),
    /// A pipe's chunk header announcing more than a chunk may hold.
    #[error("a pipe chunk of {len} bytes is longer than {max}")]
    ChunkTooLong {
        /// The length announced.
        len: u64,
        /// The most a chunk holds.
        max: usize,
    },
    /// A reply of the wrong kind for what was asked.
    #[error("a reply of the wrong kind: {0:?}")]
    WrongReply(Box<super::protocol::Reply>),
}

/// A connection to the control socket of an agent, on the runtime `R`.
pub struct Client<R: Runtime> {
    dir: PathBuf,
    path: PathBuf,
    stream: BufReader<UnixStream<R>>,
    line: Vec<u8>,
}

impl<R: Runtime> fmt::Debug for Client<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("path", &self.path).finish()
    }
}

impl<R: Runtime> Client<R> {
    /// Connects to the agent running in `data_dir`.
    pub async fn connect(data_dir: &Path) -> Result<Self, ClientError> {
        let dir = data_dir.to_path_buf();
        let path = socket_path(data_dir);
        let stream = UnixStream::connect(path.clone())
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ClientError::NotRunning(dir.clone()),
                io::ErrorKind::ConnectionRefused => ClientError::Stale(dir.clone()),
                _ => ClientError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
        Ok(Self {
            dir,
            path,
            stream: BufReader::new(stream),
            line: Vec::new(),
        })
    }

    /// Sends `request` and waits for its response.
    pub async fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let path = self.path.clone();
        let io_err = |source| ClientError::Io {
            path: path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(request).map_err(|e| io_err(io::Error::other(e)))?;
        bytes.push(b'\n');
        let stream = self.stream.get_mut();
        let written = match stream.write_all(&bytes).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => self.read_response().await,
            // An agent with no slot for us answers `busy` at once and
            // closes, maybe before our request is written: its answer is
            // still ours to read, and says more than "broken pipe".
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                match self.read_response().await {
                    Ok(response) => Ok(response),
                    Err(_) => Err(io_err(e)),
                }
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// Waits for one more response: [`Request::PipeListen`] is answered
    /// twice (listening, then open).
    pub async fn read_response(&mut self) -> Result<Response, ClientError> {
        let io_err = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        match read_line(&mut self.stream, &mut self.line, MAX_RESPONSE_SIZE)
            .await
            .map_err(io_err)?
        {
            Line::End => Err(ClientError::Closed(self.dir.clone())),
            Line::TooLong => Err(ClientError::Protocol {
                dir: self.dir.clone(),
                problem: BadAnswer::TooLong {
                    max: MAX_RESPONSE_SIZE,
                },
            }),
            Line::Complete => {
                serde_json::from_slice(&self.line).map_err(|e| ClientError::Protocol {
                    dir: self.dir.clone(),
                    problem: BadAnswer::Json(e),
                })
            }
        }
    }
}

impl<R: Runtime> Client<R> {
    /// The connection as the client's end of a pipe, after the agent
    /// answered [`Reply::PipeOpen`](super::Reply::PipeOpen). Bytes the
    /// agent sent after that answer are kept.
    pub fn into_pipe(self) -> PipeEnd<R> {
        let buffered = self.stream.buffer().to_vec();
        PipeEnd::new(self.dir, buffered, self.stream.into_inner())
    }
}
