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
//! The server side is [`ControlServer`]; [`Client`] is the other end, used
//! by the `keynode nodes ...` and `keynode keys ...` commands.
//!
//! The module holds one concept a file: `protocol` (the request and
//! response types, their JSON form), `dispatch` (a request carried out on
//! an [`Agent`](crate::Agent)), `server` (the socket and its accept loop),
//! `line` (the bounded line reader both ends use) and `client`.

use std::path::{Path, PathBuf};

mod client;
mod dispatch;
mod line;
mod protocol;
mod server;

pub use client::{Client, ClientError};
pub use dispatch::{handle, handle_line};
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
