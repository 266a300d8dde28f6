//! keynode on tokio: [`Agent`] runs a node (UDP socket, QUIC, LMDB on its
//! own thread, timers) and offers the spec's NodeManager methods as async
//! functions. The `keynode` binary is built on it.
//!
//! The driver decides nothing: it moves datagrams between the socket and
//! the core, applies store batches and reports their commits, resolves
//! hostnames, and sleeps until the core's next deadline.

#![warn(missing_docs)]

mod agent;
pub mod control;
pub mod demo;
mod store_thread;

pub use agent::{Agent, AgentConfig, AgentError, Connection, OP_TIMEOUT, load_or_create_key, now};
