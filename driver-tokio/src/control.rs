//! Control of a running agent over a Unix socket: keynode-agent's
//! [`control`](keynode_agent::control) module, its runtime named tokio.

pub use keynode_agent::control::*;

use crate::Tokio;

/// The control socket, served on tokio.
pub type ControlSocket = keynode_agent::control::ControlSocket<Tokio>;

/// A client of the control socket, on tokio.
pub type Client = keynode_agent::control::Client<Tokio>;

/// The client's end of a pipe, on tokio.
pub type PipeEnd = keynode_agent::control::PipeEnd<Tokio>;
