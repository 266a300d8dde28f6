//! Control of a running agent over a Unix socket.
//!
//! `keynode agent start` listens on `control.sock` in its data directory
//! (mode 0600: only the owner may connect). The protocol is one JSON
//! [`Request`] per line, answered by one JSON [`Response`] per line, in
//! order; a connection may carry any number of requests. A line longer than
//! [`MAX_REQUEST_SIZE`] bytes, a line that is not a request, or a request
//! that fails gets an error response; the connection stays usable.
//!
//! ```text
//! > {"op":"set_node","node_id":"v...","address":"127.0.0.1:1314"}
//! < {"ok":{"reply":"done"}}
//! > {"op":"find_node","node_id":"v..."}
//! < {"ok":{"reply":"found","node_id":"v...","address":{"address":"127.0.0.1:1314",...}}}
//! > nonsense
//! < {"error":{"kind":"bad_request","message":"expected value at line 1 column 1"}}
//! ```
//!
//! A pipe request ([`Request::PipeListen`], [`Request::PipeConnect`]) is
//! the last on its connection: once the agent answers that the stream is
//! open, the connection carries the stream's bytes (`pipe` says how) and
//! [`Client::into_pipe`] gives the client's [`PipeEnd`].
//!
//! The server side is [`ControlServer`]; [`Client`] is the other end, used
//! by the `keynode nodes ...`, `keynode keys ...` and `keynode pipe ...`
//! commands.
//!
//! The module holds one concept a file: `protocol` (the request and
//! response types, their JSON form), `dispatch` (a request carried out on
//! an [`Agent`](crate::Agent)), `server` (the socket and its accept loop),
//! `line` (the bounded line reader both ends use), `client`, `pipe` (the
//! agent's side of a pipe), `chunks` (how the agent frames the peer's
//! bytes) and `pipe_end` (the client's side).

use std::path::{Path, PathBuf};

mod chunks;
mod client;
mod dispatch;
mod line;
mod pipe;
mod pipe_end;
mod protocol;
mod server;

pub use client::{Client, ClientError};
pub use dispatch::{handle, handle_line};
#[doc(hidden)]
pub use line::{FramedRequest, frame_requests};
pub use pipe::PIPE_ABORTED;
pub use pipe_end::{Carried, PipeEnd, PipeError};
pub use protocol::{
    AddressInfo, BucketInfo, ClaimBodyInfo, ClaimInfo, ConnectionInfo, ContactInfo, ControlError,
    ErrorKind, Reply, Request, Response,
};
pub use server::{BindError, ControlServer, ControlSocket};

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest request line accepted, in bytes (without the newline).
pub const MAX_REQUEST_SIZE: usize = 64 * 1024;

/// The longest response line a [`Client`] accepts, in bytes.
pub const MAX_RESPONSE_SIZE: usize = 64 * 1024 * 1024;

/// Connections served at once; more are answered with [`ErrorKind::Busy`]
/// and closed.
pub const MAX_CLIENTS: usize = 64;

/// The control socket of the agent in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}
