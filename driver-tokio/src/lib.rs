//! keynode on tokio: [`start`] runs an agent (UDP sockets, QUIC, LMDB on
//! its own thread, timers) on the current tokio runtime and returns its
//! [`Agent`] handle, which offers the spec's NodeManager methods as async
//! functions. The control socket and the `keynode` binary are built on it.
//!
//! The handle and everything else that does not depend on the runtime live
//! in `keynode-agent` (re-exported here); this crate runs the loop.

#![warn(missing_docs)]

pub mod control;
pub mod demo;
mod run;
pub mod start_options;

pub use keynode_agent::{
    Agent, AgentConfig, AgentError, Connection, IncomingStream, Listener, OP_TIMEOUT, Protocol,
    ProtocolError, ProtocolOptions, RecvStream, SendStream, StreamError, WithConnOptions,
    load_or_create_key, now,
};
pub use run::start;
