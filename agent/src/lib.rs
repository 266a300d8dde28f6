//! keynode's agent, without a runtime: [`Agent`] is the handle to a running
//! node and offers the spec's NodeManager methods as async functions (they
//! only await channels, so they run on any executor); [`Agent::open`]
//! prepares the node, its data directory, key, LMDB store (on its own
//! thread: heed's write transactions are not `Send`) and UDP sockets; and
//! [`AgentLoop`] is the part of the loop that does not touch a socket or a
//! timer.
//!
//! A driver (`keynode-tokio`, `keynode-smol`) wraps the sockets in its
//! runtime's types and runs the loop: a few dozen lines, so that both
//! drivers behave the same because they share everything else. The driver
//! decides nothing: it moves datagrams between the sockets and the node,
//! resolves hostnames, and sleeps until the node's next deadline.

#![warn(missing_docs)]

mod agent;
mod node_loop;
mod sockets;
mod store_thread;

pub use agent::{
    Agent, AgentConfig, AgentError, Connection, OP_TIMEOUT, Opened, load_or_create_key, now,
};
pub use keynode_core::net::Transmit;
pub use node_loop::{AgentLoop, Input, Inputs, StopReply, resolved};
