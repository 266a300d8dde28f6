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
mod deadline;
mod joining;
mod listener;
mod node_loop;
mod open;
mod readiness;
mod shared;
mod sockets;
mod store_thread;
mod stream;
mod udp;

pub use agent::{
    Agent, AgentConfig, AgentError, Connection, OP_TIMEOUT, Opened, Sleep, WithConnOptions,
    create_data_dir, load_or_create_key, now,
};
pub use joining::AgentStatus;
pub use keynode_core::net::Transmit;
pub use keynode_core::net::{
    DatagramError, OpenError, Protocol, ProtocolError, ProtocolOptions, Refusal, RegisterError,
    StreamError, StreamHandle, StreamTables,
};
pub use listener::{IncomingStream, Listener};
pub use node_loop::{AgentLoop, Input, Inputs, RECEIVE_BATCH, StopReply, resolved};
pub use readiness::ReadinessTables;
pub use stream::{ReadToEndError, RecvStream, SendStream, io_error};
pub use udp::{RecvBuffers, UdpIo};
