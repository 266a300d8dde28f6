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
//! The handle and everything else that does not depend on the runtime live
//! in `keynode-agent` (re-exported here), shared with `keynode-tokio`: an
//! agent behaves the same on either, and the two talk to each other.

#![warn(missing_docs)]

use std::net::SocketAddr;

pub use keynode_agent::{
    Agent, AgentConfig, AgentError, Connection, IncomingStream, Listener, OP_TIMEOUT, Protocol,
    ProtocolOptions, RecvStream, SendStream, StreamError, WithConnOptions, load_or_create_key, now,
};
use keynode_agent::{AgentLoop, Input, Inputs, Opened, Transmit, resolved};
use smol::net::UdpSocket;

/// Starts an agent: opens its data directory, key and store and binds
/// its sockets (on a blocking thread), runs its loop on smol's global
/// executor and starts the node manager. Returns once the manager has
/// started and its start batch is committed. Works from any executor.
pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
    let (agent, node_loop, inputs, socket, mdns) = smol::unblock(move || {
        let Opened {
            agent,
            node_loop,
            inputs,
            socket,
            mdns,
        } = Agent::open(config, sleep())?;
        let socket = wrap(socket)?;
        let mdns = mdns.map(wrap).transpose()?;
        Ok::<_, AgentError>((agent, node_loop, inputs, socket, mdns))
    })
    .await?;
    smol::spawn(run(node_loop, inputs, socket, mdns)).detach();
    agent.start_manager().await?;
    Ok(agent)
}

/// smol's sleep, for the agent's timeouts.
fn sleep() -> keynode_agent::Sleep {
    std::sync::Arc::new(|d| {
        Box::pin(async move {
            smol::Timer::after(d).await;
        })
    })
}

fn wrap(socket: std::net::UdpSocket) -> Result<UdpSocket, AgentError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    UdpSocket::try_from(socket).map_err(|source| AgentError::Socket { addr, source })
}

/// What woke the loop.
enum Wake {
    Datagram(std::io::Result<(usize, SocketAddr)>),
    Mdns(std::io::Result<(usize, SocketAddr)>),
    Input(Input),
    Timeout,
}

/// One input at a time, then drain the node completely.
async fn run(
    mut node_loop: AgentLoop,
    mut inputs: Inputs,
    socket: UdpSocket,
    mdns: Option<UdpSocket>,
) {
    let mut buf = vec![0u8; 65536];
    let mut mdns_buf = vec![0u8; 9000];
    loop {
        node_loop
            .drain(
                |t: Transmit, on_mdns: bool| {
                    let from = if on_mdns {
                        mdns.as_ref()
                    } else {
                        Some(&socket)
                    };
                    async move {
                        match from {
                            Some(s) => send(s, &t).await,
                            None => Ok(0),
                        }
                    }
                },
                |resolve, hostname, events| {
                    smol::spawn(async move {
                        let result = smol::net::resolve((hostname.as_str(), 0)).await;
                        let _ =
                            events.unbounded_send(resolved(resolve, result.map(Vec::into_iter)));
                    })
                    .detach();
                },
            )
            .await;
        if node_loop.stopping() {
            // Closing flushes LMDB: off the executor's threads.
            let reply = smol::unblock(move || node_loop.finish()).await;
            drop((socket, mdns, inputs));
            reply.send();
            return;
        }
        let deadline = node_loop.poll_timeout();
        // `race` picks at random among the ready ones, so that a flood of
        // datagrams cannot starve the handles' calls or the timers.
        let wake = smol::future::race(
            smol::future::race(
                async { Wake::Datagram(socket.recv_from(&mut buf).await) },
                async {
                    match &mdns {
                        Some(m) => Wake::Mdns(m.recv_from(&mut mdns_buf).await),
                        None => std::future::pending().await,
                    }
                },
            ),
            smol::future::race(async { Wake::Input(inputs.next().await) }, async {
                match deadline {
                    Some(at) => {
                        smol::Timer::at(at).await;
                    }
                    None => std::future::pending::<()>().await,
                }
                Wake::Timeout
            }),
        )
        .await;
        match wake {
            Wake::Datagram(Ok((n, from))) => {
                node_loop.handle_datagram(from, buf.get(..n).unwrap_or_default());
            }
            Wake::Mdns(Ok((n, from))) => {
                node_loop.handle_mdns_datagram(from, mdns_buf.get(..n).unwrap_or_default());
            }
            Wake::Datagram(Err(e)) | Wake::Mdns(Err(e)) => {
                tracing::trace!("receive failed: {e}");
            }
            Wake::Input(input) => node_loop.handle_input(input),
            Wake::Timeout => node_loop.handle_timeout(),
        }
    }
}

/// Sends `t`, at its TTL if it has one (a hole punch's first packet).
async fn send(socket: &UdpSocket, t: &Transmit) -> std::io::Result<usize> {
    let Some(ttl) = t.ttl else {
        return socket.send_to(&t.contents, t.destination).await;
    };
    // Nothing else is sent meanwhile: the loop awaits this send. IP_TTL
    // is IPv4's; where it cannot be set the packet goes at the default.
    let Ok(before) = socket.ttl() else {
        return socket.send_to(&t.contents, t.destination).await;
    };
    let set = socket.set_ttl(ttl).is_ok();
    let sent = socket.send_to(&t.contents, t.destination).await;
    if set {
        let _ = socket.set_ttl(before);
    }
    sent
}
