//! keynode on tokio: [`start`] runs an agent (UDP sockets, QUIC, LMDB on
//! its own thread, timers) on the current tokio runtime and returns its
//! [`Agent`] handle, which offers the spec's NodeManager methods as async
//! functions. The control socket and the `keynode` binary are built on it.
//!
//! The handle, the loop and everything else live in `keynode-agent`
//! (re-exported here), written once over its `Runtime` trait; this crate
//! is tokio's [`Runtime`](keynode_agent::Runtime): [`Tokio`].

#![warn(missing_docs)]

pub mod control;
pub mod demo;
mod runtime;

pub use keynode_agent::{
    Agent, AgentConfig, AgentError, ChainOptions, ClaimOptions, Connection, FindOptions, Found,
    IncomingStream, Listener, PingOptions, Protocol, ProtocolError, ProtocolOptions, RecvStream,
    SendStream, SetNodeOptions, SetupError, StreamError, SyncOptions, WithConnOptions,
    load_or_create_key,
};
pub use runtime::Tokio;

/// Starts an agent on the current tokio runtime (either flavour): opens
/// its data directory, key and store and binds its sockets (on a blocking
/// thread), runs its loop in a task and starts the node manager. Returns
/// once the manager has started and its start batch is committed.
pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
    keynode_agent::start::<Tokio>(config).await
}
