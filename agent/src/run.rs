//! [`start`] and the agent's loop, once for every [`Runtime`]: one input
//! at a time (with every datagram already received), then drain the node
//! completely; sleep until its next deadline.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::StreamExt;
use futures::channel::mpsc;

use crate::agent::{Agent, AgentConfig, Opened, Sleep};
use crate::error::AgentError;
use crate::node_loop::{AgentLoop, Inputs, RECEIVE_BATCH, resolved};
use crate::receiver::{Quic, RECV_BUFFERS, Receiving};
use crate::runtime::{Interest, Runtime, io, poll_io, sleep};
use crate::udp::RecvBuffers;
use keynode_core::net::Transmit;

/// Starts an agent on the runtime `R`: opens its data directory, key and
/// store and binds its sockets (on a blocking thread), runs its loop in a
/// task and starts the node manager. Returns once the manager has started
/// and its start batch is committed. Call it from within `R`.
pub async fn start<R: Runtime>(config: AgentConfig) -> Result<Agent, AgentError> {
    let (agent, node_loop, inputs, quic, mdns) = R::spawn_blocking(move || {
        let sleep: Sleep = Arc::new(|d| Box::pin(sleep::<R>(d)));
        let Opened {
            agent,
            node_loop,
            inputs,
            socket,
            udp,
            mdns,
        } = Agent::open(config, sleep)?;
        let quic = Quic::<R> {
            socket: Arc::new(register::<R>(socket)?),
            udp,
        };
        let mdns = mdns.map(register::<R>).transpose()?;
        Ok::<_, AgentError>((agent, node_loop, inputs, quic, mdns))
    })
    .await?;
    R::spawn(run(node_loop, inputs, quic, mdns));
    agent.start_manager().await?;
    Ok(agent)
}

fn register<R: Runtime>(
    socket: std::net::UdpSocket,
) -> Result<R::Io<std::net::UdpSocket>, AgentError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    R::register(socket).map_err(|source| AgentError::socket(addr, source))
}

/// What woke the loop.
enum Wake {
    Received(RecvBuffers),
    Mdns(usize, SocketAddr),
    Input(crate::node_loop::Input),
    Timeout,
}

/// The loop: every datagram comes through the receiving task; each wake
/// is handled, with the datagrams received meanwhile, before one drain.
async fn run<R: Runtime>(
    mut node_loop: AgentLoop,
    mut inputs: Inputs,
    quic: Quic<R>,
    mdns: Option<R::Io<std::net::UdpSocket>>,
) {
    let (full_tx, mut full) = mpsc::channel(RECV_BUFFERS);
    let (mut empty, empty_rx) = mpsc::channel(RECV_BUFFERS);
    for _ in 0..RECV_BUFFERS {
        let _ = empty.try_send(quic.udp.recv_buffers());
    }
    let receiving = Receiving::spawn(quic.clone(), empty_rx, full_tx);
    let mut mdns_buf = vec![0u8; 9000];
    let mut timer = R::timer(Instant::now());
    // Which source is looked at first, in turn, so that none starves the
    // others (as tokio's `select!` starts at random).
    let mut turn = 0usize;
    loop {
        node_loop
            .drain(
                |t: Transmit, on_mdns: bool| {
                    let (quic, mdns) = (&quic, mdns.as_ref());
                    async move {
                        match (on_mdns, mdns) {
                            (false, _) => send(quic, &t).await,
                            (true, Some(m)) => {
                                io::<R, _, _>(m, Interest::Writable, |s| {
                                    s.send_to(&t.contents, t.destination)
                                })
                                .await
                            }
                            (true, None) => Ok(0),
                        }
                    }
                },
                |resolve, hostname, events| {
                    R::spawn(async move {
                        let result =
                            R::spawn_blocking(move || (hostname.as_str(), 0).to_socket_addrs())
                                .await;
                        let _ = events.unbounded_send(resolved(resolve, result));
                    });
                },
            )
            .await;
        if node_loop.stopping() {
            let closing = std::panic::AssertUnwindSafe(move || node_loop.finish());
            let reply = match R::spawn_blocking(move || std::panic::catch_unwind(closing)).await {
                Ok(reply) => reply,
                // The store thread panicked while closing: the stop's caller
                // learns `Stopped` from its dropped channel.
                Err(_) => {
                    tracing::error!("closing the agent failed: the store panicked");
                    return;
                }
            };
            // The receiving task holds the socket: it ends before the stop
            // is answered, so that the port is free by then.
            receiving.stop().await;
            drop((quic, mdns, inputs));
            reply.send();
            return;
        }
        let deadline = node_loop.poll_timeout();
        if let Some(at) = deadline {
            R::reset(&mut timer, at);
        }
        turn = turn.wrapping_add(1);
        let wake = {
            let mut input = std::pin::pin!(inputs.next());
            // An mDNS receive that failed is not tried again in this wait.
            let mut mdns_failed = false;
            std::future::poll_fn(|cx| {
                for source in 0..4 {
                    let ready = match (turn + source) % 4 {
                        0 => match full.poll_next_unpin(cx) {
                            Poll::Ready(Some(buffers)) => Some(Wake::Received(buffers)),
                            _ => None,
                        },
                        1 => match mdns.as_ref().filter(|_| !mdns_failed) {
                            Some(m) => match poll_io::<R, _, _>(m, cx, Interest::Readable, |s| {
                                s.recv_from(&mut mdns_buf)
                            }) {
                                Poll::Ready(Ok((n, from))) => Some(Wake::Mdns(n, from)),
                                Poll::Ready(Err(e)) => {
                                    tracing::trace!("mDNS receive failed: {e}");
                                    mdns_failed = true;
                                    None
                                }
                                Poll::Pending => None,
                            },
                            None => None,
                        },
                        2 => match input.as_mut().poll(cx) {
                            Poll::Ready(input) => Some(Wake::Input(input)),
                            Poll::Pending => None,
                        },
                        _ => match deadline {
                            Some(_) => R::poll_timer(&mut timer, cx)
                                .is_ready()
                                .then_some(Wake::Timeout),
                            None => None,
                        },
                    };
                    if let Some(wake) = ready {
                        return Poll::Ready(wake);
                    }
                }
                Poll::Pending
            })
            .await
        };
        match wake {
            Wake::Received(buffers) => {
                node_loop.handle_received(&buffers);
                let _ = empty.try_send(buffers);
            }
            Wake::Mdns(n, from) => {
                node_loop.handle_mdns_datagram(from, mdns_buf.get(..n).unwrap_or_default());
            }
            Wake::Input(input) => node_loop.handle_input(input),
            Wake::Timeout => node_loop.handle_timeout(),
        }
        // Whatever woke the loop, datagrams already received go in with
        // it, so that one drain answers both; up to RECEIVE_BATCH buffers,
        // so that under a flood calls and timers still get their turn.
        let mut taken = 0;
        while taken < RECEIVE_BATCH {
            let Ok(buffers) = full.try_recv() else {
                break;
            };
            taken += buffers.len().max(1);
            node_loop.handle_received(&buffers);
            let _ = empty.try_send(buffers);
        }
    }
}

/// Sends `t` on the QUIC socket, at its TTL if it has one (a hole punch's
/// first packet).
async fn send<R: Runtime>(quic: &Quic<R>, t: &Transmit) -> std::io::Result<usize> {
    let send = || async {
        io::<R, _, _>(&quic.socket, Interest::Writable, |s| quic.udp.send(s, t))
            .await
            .map(|()| t.contents.len())
    };
    let Some(ttl) = t.ttl else {
        return send().await;
    };
    // Nothing else is sent meanwhile: the loop awaits this send. IP_TTL
    // is IPv4's; where it cannot be set the packet goes at the default.
    let socket = R::get_ref(&*quic.socket);
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
