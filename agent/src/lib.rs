//! keynode's agent, without a runtime: [`Agent`] is the handle to a running
//! node and offers the spec's NodeManager methods as async functions (they
//! only await channels, so they run on any executor); [`Agent::open`]
//! prepares the node, its data directory, key, LMDB store (on its own
//! thread: heed's write transactions are not `Send`) and UDP sockets; and
//! [`AgentLoop`] is the part of the loop that does not touch a socket or a
//! timer.
//!
//! [`start`] runs the whole agent on any [`Runtime`]: the loop (moving
//! datagrams between the sockets and the node, resolving hostnames,
//! sleeping until the node's next deadline) and the [`control`] socket's
//! server are written once, here. A driver (`keynode-tokio`,
//! `keynode-smol`) is only its runtime's [`Runtime`] implementation, so
//! both behave the same because they share everything else.

#![warn(missing_docs)]

mod agent;
mod call;
pub mod control;
mod deadline;
mod error;
mod events;
mod joining;
mod listener;
mod metrics;
mod node_loop;
mod open;
mod options;
mod pending;
mod readiness;
mod receiver;
mod relay_status;
mod reply;
mod run;
mod runtime;
mod shared;
mod sockets;
mod store_thread;
mod stream;
mod udp;

pub(crate) use agent::now;
pub use agent::{
    Agent, AgentConfig, Connection, InFlight, Opened, Sleep, WithConnOptions, create_data_dir,
    load_or_create_key,
};
pub use error::{AgentError, SetupError};
pub use events::{AgentEvent, DropCounts, Events, EventsLagged};
pub use joining::AgentStatus;
pub use keynode_core::net::Transmit;
pub use keynode_core::net::{
    DatagramError, OpenError, Protocol, ProtocolError, ProtocolOptions, Refusal, RegisterError,
    StreamError, StreamHandle, StreamTables,
};
pub use listener::{IncomingStream, Listener};
pub use metrics::{METRICS_CONTENT_TYPE, METRICS_PREFIX, MetricsSnapshot};
pub use node_loop::{AgentLoop, Input, Inputs, RECEIVE_BATCH, StopReply, resolved};
pub use options::{
    ChainOptions, ClaimOptions, FindOptions, PingOptions, SetNodeOptions, SyncOptions,
};
pub use readiness::ReadinessTables;
pub use relay_status::RelayStatus;
pub use reply::{Found, ResultKind};
pub use run::start;
pub use runtime::{Elapsed, Fd, Interest, Runtime, poll_io, sleep, timeout};
pub use stream::{ReadToEndError, RecvStream, SendStream, io_error};
pub use udp::{RecvBuffers, UdpIo};
