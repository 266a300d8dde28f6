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
use std::sync::Arc;

pub use keynode_agent::{
    Agent, AgentConfig, AgentError, ChainOptions, ClaimOptions, Connection, FindOptions, Found,
    IncomingStream, Listener, PingOptions, Protocol, ProtocolOptions, RecvStream, SendStream,
    SetNodeOptions, SetupError, StreamError, SyncOptions, WithConnOptions, load_or_create_key,
};
use keynode_agent::{AgentLoop, Input, Inputs, Opened, Transmit, UdpIo, resolved};
use smol::Async;

/// The agent's sockets: smol's readiness over the std socket, so that the
/// loop can also read it directly (non-blocking) when a datagram is in.
type UdpSocket = Async<std::net::UdpSocket>;

/// Starts an agent: opens its data directory, key and store and binds
/// its sockets (on a blocking thread), runs its loop on smol's global
/// executor and starts the node manager. Returns once the manager has
/// started and its start batch is committed. Works from any executor.
pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
    let (agent, node_loop, inputs, quic, mdns) = smol::unblock(move || {
        let Opened {
            agent,
            node_loop,
            inputs,
            socket,
            udp,
            mdns,
        } = Agent::open(config, sleep())?;
        let quic = Quic {
            socket: wrap(socket)?,
            udp,
        };
        let mdns = mdns.map(wrap).transpose()?;
        Ok::<_, AgentError>((agent, node_loop, inputs, quic, mdns))
    })
    .await?;
    smol::spawn(run(node_loop, inputs, quic, mdns)).detach();
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
    Async::new(socket).map_err(|source| AgentError::socket(addr, source))
}

/// The QUIC socket and its batched I/O.
struct Quic {
    socket: UdpSocket,
    udp: Arc<UdpIo>,
}

/// What woke the loop.
enum Wake {
    /// The QUIC socket has datagrams waiting (or failed to wait).
    Datagrams(std::io::Result<usize>),
    Mdns(std::io::Result<(usize, SocketAddr)>),
    Input(Input),
    Timeout,
}

/// One input at a time (a socket's input: every datagram waiting, up to
/// [`keynode_agent::RECEIVE_BATCH`]), then drain the node completely.
async fn run(mut node_loop: AgentLoop, mut inputs: Inputs, quic: Quic, mdns: Option<UdpSocket>) {
    let mut buffers = quic.udp.recv_buffers();
    let mut mdns_buf = vec![0u8; 9000];
    loop {
        node_loop
            .drain(
                |t: Transmit, on_mdns: bool| {
                    let (quic, mdns) = (&quic, mdns.as_ref());
                    async move {
                        match (on_mdns, mdns) {
                            (false, _) => send(quic, &t).await,
                            (true, Some(m)) => m.send_to(&t.contents, t.destination).await,
                            (true, None) => Ok(0),
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
            drop((quic, mdns, inputs));
            reply.send();
            return;
        }
        let deadline = node_loop.poll_timeout();
        // `race` picks at random among the ready ones, so that a flood of
        // datagrams cannot starve the handles' calls or the timers.
        let wake = smol::future::race(
            smol::future::race(
                async {
                    let udp = &quic.udp;
                    let buffers = &mut buffers;
                    Wake::Datagrams(quic.socket.read_with(|s| udp.recv(s, buffers)).await)
                },
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
            Wake::Datagrams(Ok(mut received)) => {
                node_loop.handle_received(&buffers);
                // Everything else already waiting goes in before the
                // drain, so the node answers a burst at once. The socket
                // is non-blocking: a receive with nothing there fails at once.
                while received < keynode_agent::RECEIVE_BATCH {
                    let Ok(n) = quic.udp.recv(quic.socket.get_ref(), &mut buffers) else {
                        break;
                    };
                    received += n;
                    node_loop.handle_received(&buffers);
                }
            }
            Wake::Mdns(Ok((n, from))) => {
                node_loop.handle_mdns_datagram(from, mdns_buf.get(..n).unwrap_or_default());
            }
            Wake::Datagrams(Err(e)) | Wake::Mdns(Err(e)) => {
                tracing::trace!("receive failed: {e}");
            }
            Wake::Input(input) => node_loop.handle_input(input),
            Wake::Timeout => node_loop.handle_timeout(),
        }
    }
}

/// Sends `t` on the QUIC socket, at its TTL if it has one (a hole punch's
/// first packet).
async fn send(quic: &Quic, t: &Transmit) -> std::io::Result<usize> {
    let send = || async {
        quic.socket
            .write_with(|s| quic.udp.send(s, t))
            .await
            .map(|()| t.contents.len())
    };
    let Some(ttl) = t.ttl else {
        return send().await;
    };
    // Nothing else is sent meanwhile: the loop awaits this send. IP_TTL
    // is IPv4's; where it cannot be set the packet goes at the default.
    let socket = quic.socket.get_ref();
    let Ok(before) = socket.ttl() else {
        return send().await;
    };
    let set = socket.set_ttl(ttl).is_ok();
    let sent = send().await;
    if set {
        let _ = socket.set_ttl(before);
    }
    sent
}
