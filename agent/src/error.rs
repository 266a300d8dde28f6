//! [`AgentError`]: what went wrong in an agent, grouped by what failed
//! (in the rustls model: the kind of fault, then the typed error of the
//! layer that failed, never a string for something a caller may match).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keynode_core::net::{DatagramError, OpenError, Protocol, RegisterError, StreamError};
use keynode_core::{ApiError, OpError};

/// What went wrong in an agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The agent could not be set up, or its key kept: its data directory,
    /// key file, store, socket or node.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The node manager refused the call (not running, a table full, an
    /// argument it does not take).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The operation ran and failed (`Cancelled` when the agent stopped).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The call's own time (its options' `timeout`, the spec's `ctx`) ran
    /// out; the operation was cancelled in the node, as on a drop.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The agent's call queue is full
    /// ([`AgentConfig::max_queued_calls`](crate::AgentConfig) calls queued
    /// or running): try again once some have ended.
    #[error("the agent is busy: {limit} calls are queued or running")]
    Busy {
        /// The bound that was reached.
        limit: usize,
    },
    /// The agent stopped.
    #[error("the agent has stopped")]
    Stopped,
    /// The node ended an operation with a result of another kind than its
    /// call's: a bug of keynode's, reported to the caller rather than
    /// panicking the agent's loop.
    #[error("a {expected:?} call got another kind of result (a bug)")]
    WrongResult {
        /// What the call expected.
        expected: crate::reply::ResultKind,
    },
    /// A stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A stream could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A datagram could not be sent.
    #[error(transparent)]
    Datagram(#[from] DatagramError),
    /// A protocol could not be listened on.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// Datagrams of a protocol nobody listens on are not kept.
    #[error("no listener for protocol {0}: its datagrams are dropped")]
    NotListening(Protocol),
}

/// Setting up an agent (or keeping its key) failed: what, and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The data directory or a file in it (the key, the lock).
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] keynode_store::StoreError),
    /// The node could not be built, or its key not renewed.
    #[error(transparent)]
    Node(#[from] keynode_core::net::NetError),
    /// A socket could not be bound or set up.
    #[error("socket {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl From<keynode_store::StoreError> for AgentError {
    fn from(e: keynode_store::StoreError) -> Self {
        Self::Setup(SetupError::Store(e))
    }
}

impl From<keynode_core::net::NetError> for AgentError {
    fn from(e: keynode_core::net::NetError) -> Self {
        Self::Setup(SetupError::Node(e))
    }
}

impl AgentError {
    /// A failure of the data directory at `path`.
    pub(crate) fn data_dir(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Setup(SetupError::DataDir {
            path: path.into(),
            source,
        })
    }

    /// A failure of the socket at `addr` (for a driver wrapping its sockets).
    pub fn socket(addr: SocketAddr, source: std::io::Error) -> Self {
        Self::Setup(SetupError::Socket { addr, source })
    }
}
