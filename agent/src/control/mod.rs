//! Control of a running agent over a Unix socket.
//!
//! `keynode agent start` listens on `control.sock` in its data directory
//! (mode 0600: only the owner may connect; the directory, when created, is
//! 0700). Connections are bounded in number and each request must arrive
//! within a timeout ([`ControlLimits`]), so silent clients cannot lock the
//! others out. The protocol is one JSON
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
//! bytes), `pipe_end` (the client's side) and `unix` (the listener and
//! connections, over a [`Runtime`](crate::Runtime)'s readiness).
//!
//! Both ends run on any [`Runtime`](crate::Runtime): [`ControlSocket`],
//! [`Client`] and [`PipeEnd`] name theirs as a type parameter (the drivers
//! name them for their runtime).

use std::path::{Path, PathBuf};

mod chunks;
mod client;
mod dispatch;
mod line;
mod pipe;
mod pipe_end;
mod protocol;
mod server;
mod unix;

pub use client::{BadAnswer, Client, ClientError};
pub use dispatch::{handle, handle_line};
#[doc(hidden)]
pub use line::{FramedRequest, frame_requests};
pub use pipe::PIPE_ABORTED;
pub use pipe_end::{Carried, PipeEnd, PipeError};
pub use protocol::{
    AddressInfo, BucketInfo, ClaimBodyInfo, ClaimInfo, ConnectionInfo, ContactInfo, ControlError,
    ErrorKind, RelayDrops, RelayInfo, RelayRefusals, Reply, Request, Response,
};
pub use server::{BindError, ControlServer, ControlSocket};

pub use crate::create_data_dir;

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest request line accepted, in bytes (without the newline).
pub const MAX_REQUEST_SIZE: usize = 64 * 1024;

/// The longest response line a [`Client`] accepts, in bytes.
pub const MAX_RESPONSE_SIZE: usize = 64 * 1024 * 1024;

/// Connections served at once by default; more are answered with
/// [`ErrorKind::Busy`] and closed.
pub const MAX_CLIENTS: usize = 64;

/// How long a client has, by default, to send each complete request line.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The bounds of a control socket's server, so that clients that connect
/// and say nothing cannot hold every slot.
///
/// A connection holds one of [`max_clients`](Self::max_clients) slots from
/// accept to close. While it waits for a request (the first, or the next
/// after an answer), the whole line must arrive within
/// [`request_timeout`](Self::request_timeout); otherwise it gets an
/// [`ErrorKind::Timeout`] answer and is closed, freeing its slot. A request
/// being carried out, and a pipe once open, are not timed here. A client
/// refused for want of a slot gets one [`ErrorKind::Busy`] answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlLimits {
    /// Connections served at once. Default [`MAX_CLIENTS`].
    pub max_clients: usize,
    /// Time to send each request line. Default [`REQUEST_TIMEOUT`].
    pub request_timeout: std::time::Duration,
}

impl Default for ControlLimits {
    fn default() -> Self {
        Self {
            max_clients: MAX_CLIENTS,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// The control socket of the agent in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}
