//! The server end: binding `control.sock` safely (owner only, never two
//! agents on one socket), the accept loop with its bound on connections,
//! and the request/response loop of one connection, which a pipe request
//! hands over to the pipe.

use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::future::{AbortHandle, Abortable};
use futures::io::{AsyncWrite, AsyncWriteExt, BufReader};

use super::dispatch::{handle, parse_line};
use super::line::{Line, read_line};
use super::protocol::{ControlError, ErrorKind, Response};
use super::unix::{UnixListener, UnixStream};
use super::{ControlLimits, MAX_REQUEST_SIZE, SOCKET_NAME, pipe, socket_path};
use crate::runtime::{Runtime, sleep, timeout};
use crate::{Agent, create_data_dir};

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another agent answers on the socket.
    #[error("an agent is already running in {0} (its control.sock answers)")]
    AlreadyRunning(PathBuf),
    /// The socket could not be made.
    #[error("control socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The control socket of an agent: bound, not yet serving; served on the
/// runtime `R`.
pub struct ControlSocket<R> {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    runtime: PhantomData<fn() -> R>,
}

impl<R: Runtime> ControlSocket<R> {
    /// Binds `control.sock` in `data_dir` (created if missing, mode 0700),
    /// mode 0600.
    ///
    /// Fails if an agent already answers there; a socket left by an agent
    /// that died is replaced. The socket is bound under a temporary name,
    /// restricted to the owner, then renamed into place, so `control.sock`
    /// never exists with wider permissions.
    pub fn bind(data_dir: &Path) -> Result<Self, BindError> {
        let path = socket_path(data_dir);
        let io_err = |source| BindError::Io {
            path: path.clone(),
            source,
        };
        create_data_dir(data_dir).map_err(io_err)?;
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => return Err(BindError::AlreadyRunning(data_dir.to_path_buf())),
            // Nothing there, or a socket nobody listens on: ours to take.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(io_err(e)),
        }
        let tmp = data_dir.join(format!("{SOCKET_NAME}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| listener.set_nonblocking(true));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        Ok(Self {
            listener,
            path,
            runtime: PhantomData,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests for `agent` until [`ControlServer::shutdown`], with
    /// the default [`ControlLimits`]. Must be called within the runtime.
    pub fn serve(self, agent: Agent) -> Result<ControlServer, BindError> {
        self.serve_with(agent, ControlLimits::default())
    }

    /// Serves requests for `agent` within `limits` until
    /// [`ControlServer::shutdown`]. Must be called within the runtime.
    pub fn serve_with(
        self,
        agent: Agent,
        limits: ControlLimits,
    ) -> Result<ControlServer, BindError> {
        let ControlSocket { listener, path, .. } = self;
        let listener = match UnixListener::<R>::new(listener) {
            Ok(listener) => listener,
            Err(source) => {
                let _ = std::fs::remove_file(&path);
                return Err(BindError::Io { path, source });
            }
        };
        let (task, registration) = AbortHandle::new_pair();
        R::spawn(async move {
            let _ = Abortable::new(accept_loop(listener, agent, limits), registration).await;
        });
        Ok(ControlServer {
            path,
            task: Some(task),
        })
    }

    /// Removes the socket without serving.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A control socket being served.
pub struct ControlServer {
    path: PathBuf,
    task: Option<AbortHandle>,
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting connections and removes the socket file. Requests
    /// already running go on until the agent stops.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.close();
    }
}

/// A connection's hold on one of [`ControlLimits::max_clients`], given
/// back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// One of the `max` slots `taken` counts, if one is free.
    fn take(taken: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(taken.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_loop<R: Runtime>(listener: UnixListener<R>, agent: Agent, limits: ControlLimits) {
    let taken = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!("control socket: accept failed: {e}");
                sleep::<R>(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        match Slot::take(&taken, limits.max_clients) {
            Some(slot) => {
                let agent = agent.clone();
                R::spawn(async move {
                    if let Err(e) =
                        serve_connection::<R>(stream, &agent, limits.request_timeout).await
                    {
                        tracing::debug!("control connection ended: {e}");
                    }
                    drop(slot);
                });
            }
            None => {
                let max_clients = limits.max_clients;
                R::spawn(async move {
                    let mut stream = stream;
                    let busy = Response::Error(ControlError::new(
                        ErrorKind::Busy,
                        format!(
                            "the agent is busy: {max_clients} control connections are open; try again"
                        ),
                    ));
                    // The answer is written at once, before the client's
                    // request is read: a client reads it even when its own
                    // write fails because we closed (see `Client::call`).
                    // Bounded, so a client that never reads holds nothing.
                    let _ =
                        timeout::<R, _>(limits.request_timeout, write_response(&mut stream, &busy))
                            .await;
                    let _ = stream.close().await;
                });
            }
        }
    }
}

/// The read buffer of a connection: as large as a pipe's chunks, so that
/// a pipe sends the client's bytes to the stream in pieces that size.
const READ_BUFFER: usize = super::chunks::MAX_CHUNK;

async fn serve_connection<R: Runtime>(
    stream: UnixStream<R>,
    agent: &Agent,
    request_timeout: std::time::Duration,
) -> io::Result<()> {
    let mut write = stream.clone();
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let mut line = Vec::new();
    loop {
        // The whole line must come in time, so that neither silence nor a
        // trickle of bytes holds the connection's slot.
        let read = timeout::<R, _>(
            request_timeout,
            read_line(&mut reader, &mut line, MAX_REQUEST_SIZE),
        )
        .await;
        let Ok(read) = read else {
            let late = Response::Error(ControlError::new(
                ErrorKind::Timeout,
                format!(
                    "no complete request within {} ms; closing",
                    request_timeout.as_millis()
                ),
            ));
            let _ = timeout::<R, _>(request_timeout, write_response(&mut write, &late)).await;
            return Ok(());
        };
        let response = match read? {
            Line::End => return Ok(()),
            Line::TooLong => Response::Error(ControlError::new(
                ErrorKind::TooLarge,
                format!("request longer than {MAX_REQUEST_SIZE} bytes"),
            )),
            Line::Complete => match parse_line(&line) {
                // Bytes after the request line stay in `reader`: the pipe's.
                Ok(request) if request.is_pipe() => {
                    return pipe::serve::<R>(agent, request, reader, write).await;
                }
                Ok(request) => handle(agent, request).await,
                Err(e) => Response::Error(e),
            },
        };
        write_response(&mut write, &response).await?;
    }
}

pub(super) async fn write_response<W: AsyncWrite + Unpin>(
    write: &mut W,
    response: &Response,
) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.flush().await
}
