//! keynode on smol: [`start`] runs an agent (UDP sockets, QUIC, LMDB on its
//! own thread, timers) on smol's global executor and returns its [`Agent`]
//! handle, which offers the spec's NodeManager methods as async functions.
//!
//! ```no_run
//! # fn main() -> Result<(), keynode_smol::AgentError> {
//! smol::block_on(async {
//!     let dir = std::env::temp_dir().join("keynode-smol-example");
//!     let agent = keynode_smol::start(keynode_smol::AgentConfig::new(
//!         dir,
//!         "127.0.0.1:0".parse().expect("an address"),
//!     ))
//!     .await?;
//!     println!("{} listening on {}", agent.node_id(), agent.local_addr());
//!     agent.stop().await
//! })
//! # }
//! ```
//!
//! Every agent's loop is a task on smol's global executor, which runs on
//! one thread unless the `SMOL_THREADS` environment variable asks for more
//! (set it before the first agent starts to spread many agents over
//! cores). The loops never block it: LMDB is opened, written and closed on
//! other threads.
//!
//! The handle, the loop and everything else live in `keynode-agent`
//! (re-exported here), written once over its `Runtime` trait and shared
//! with `keynode-tokio`: an agent behaves the same on either, and the two
//! talk to each other. This crate is smol's
//! [`Runtime`](keynode_agent::Runtime): [`Smol`].

#![warn(missing_docs)]

mod runtime;

pub use keynode_agent::{
    Agent, AgentConfig, AgentError, ChainOptions, ClaimOptions, Connection, FindOptions, Found,
    IncomingStream, Listener, PingOptions, Protocol, ProtocolOptions, RecvStream, SendStream,
    SetNodeOptions, SetupError, StreamError, SyncOptions, WithConnOptions, load_or_create_key,
};
pub use runtime::Smol;

/// Starts an agent: opens its data directory, key and store and binds
/// its sockets (on a blocking thread), runs its loop on smol's global
/// executor and starts the node manager. Returns once the manager has
/// started and its start batch is committed. Works from any executor.
pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
    keynode_agent::start::<Smol>(config).await
}
