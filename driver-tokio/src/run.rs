//! The agent's loop on tokio.

use std::sync::Arc;

use keynode_agent::{
    Agent, AgentConfig, AgentError, AgentLoop, Inputs, Opened, Transmit, UdpIo, resolved,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Starts an agent on the current tokio runtime (either flavour): opens
/// its data directory, key and store and binds its sockets (on a blocking
/// thread), runs its loop in a task and starts the node manager. Returns
/// once the manager has started and its start batch is committed.
pub async fn start(config: AgentConfig) -> Result<Agent, AgentError> {
    let (agent, node_loop, inputs, socket, mdns) = tokio::task::spawn_blocking(move || {
        let Opened {
            agent,
            node_loop,
            inputs,
            socket,
            udp,
            mdns,
        } = Agent::open(config, sleep())?;
        let socket = Quic {
            socket: Arc::new(wrap(socket)?),
            udp,
        };
        let mdns = mdns.map(wrap).transpose()?;
        Ok::<_, AgentError>((agent, node_loop, inputs, socket, mdns))
    })
    .await
    // The opening task panicked (a bug): its panic goes on here.
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    tokio::spawn(run(node_loop, inputs, socket, mdns));
    agent.start_manager().await?;
    Ok(agent)
}

/// tokio's sleep, for the agent's timeouts.
fn sleep() -> keynode_agent::Sleep {
    std::sync::Arc::new(|d| Box::pin(tokio::time::sleep(d)))
}

fn wrap(socket: std::net::UdpSocket) -> Result<UdpSocket, AgentError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    UdpSocket::from_std(socket).map_err(|source| AgentError::socket(addr, source))
}

/// The QUIC socket and its batched I/O.
struct Quic {
    socket: Arc<UdpSocket>,
    udp: Arc<UdpIo>,
}

/// The receiving task, aborted when the loop ends however it ends (it
/// holds the socket).
struct Receiving(tokio::task::JoinHandle<()>);

impl Drop for Receiving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Receive buffers in flight between the receiving task and the loop:
/// while the loop decodes one, the task fills the next.
const RECV_BUFFERS: usize = 4;

/// Receives on the QUIC socket into the buffers the loop gives back
/// (`empty`) and hands each filled one to the loop (`full`), as quinn's
/// endpoint task feeds its connections: the receive system calls run on
/// the other core while the loop decodes and answers. On two free cores
/// this carried one stream from 798-849 to 862-932 MiB/s (BENCHMARKS.md).
/// At most [`RECV_BUFFERS`] are filled ahead: beyond them datagrams wait
/// in the socket, and the loop is never handed more than it gives back.
async fn receiver(
    quic: Quic,
    mut empty: tokio::sync::mpsc::Receiver<keynode_agent::RecvBuffers>,
    full: tokio::sync::mpsc::Sender<keynode_agent::RecvBuffers>,
) {
    while let Some(mut buffers) = empty.recv().await {
        loop {
            match quic
                .socket
                .async_io(Interest::READABLE, || {
                    quic.udp.recv(&*quic.socket, &mut buffers)
                })
                .await
            {
                Ok(_) => break,
                // An error the socket reported (an ICMP error): the next
                // receive goes on, after a pause, so that an error that
                // lasts cannot spin a core.
                Err(e) => {
                    tracing::trace!("receive failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
        }
        if full.send(buffers).await.is_err() {
            return;
        }
    }
}

/// One input at a time (a socket's input: a filled receive buffer, and
/// every other one already filled), then drain the node completely.
async fn run(mut node_loop: AgentLoop, mut inputs: Inputs, quic: Quic, mdns: Option<UdpSocket>) {
    // Every datagram comes through the receiving task.
    let (full_tx, mut full) = tokio::sync::mpsc::channel(RECV_BUFFERS);
    let (empty, empty_rx) = tokio::sync::mpsc::channel(RECV_BUFFERS);
    for _ in 0..RECV_BUFFERS {
        let _ = empty.try_send(quic.udp.recv_buffers());
    }
    let mut receiving = Receiving(tokio::spawn(receiver(
        Quic {
            socket: quic.socket.clone(),
            udp: quic.udp.clone(),
        },
        empty_rx,
        full_tx,
    )));
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
                    tokio::spawn(async move {
                        let result = tokio::net::lookup_host((hostname.as_str(), 0)).await;
                        let _ = events.unbounded_send(resolved(resolve, result));
                    });
                },
            )
            .await;
        if node_loop.stopping() {
            let reply = match tokio::task::spawn_blocking(move || node_loop.finish()).await {
                Ok(reply) => reply,
                // The store thread panicked while closing: the stop's caller
                // learns `Stopped` from its dropped channel.
                Err(e) => {
                    tracing::error!("closing the agent failed: {e}");
                    return;
                }
            };
            // The receiving task holds the socket: it ends before the stop
            // is answered, so that the port is free by then.
            receiving.0.abort();
            let _ = (&mut receiving.0).await;
            drop((quic, mdns, inputs));
            reply.send();
            return;
        }
        let deadline = node_loop.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(buffers) = full.recv() => {
                node_loop.handle_received(&buffers);
                let _ = empty.try_send(buffers);
            }
            Some((n, from)) = recv_mdns(&mdns, &mut mdns_buf) => {
                node_loop.handle_mdns_datagram(from, mdns_buf.get(..n).unwrap_or_default());
            }
            input = inputs.next() => node_loop.handle_input(input),
            () = sleep => node_loop.handle_timeout(),
        }
        // Whatever woke the loop, datagrams already received go in with
        // it, so that one drain answers both; up to RECEIVE_BATCH buffers,
        // so that under a flood calls and timers still get their turn.
        let mut taken = 0;
        while taken < keynode_agent::RECEIVE_BATCH {
            let Ok(buffers) = full.try_recv() else {
                break;
            };
            taken += buffers.len().max(1);
            node_loop.handle_received(&buffers);
            let _ = empty.try_send(buffers);
        }
    }
}

/// A datagram from the mDNS socket, or never if there is none.
async fn recv_mdns(
    socket: &Option<UdpSocket>,
    buf: &mut [u8],
) -> Option<(usize, std::net::SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await.ok(),
        None => std::future::pending().await,
    }
}

/// Sends `t` on the QUIC socket, at its TTL if it has one (a hole punch's
/// first packet).
async fn send(quic: &Quic, t: &Transmit) -> std::io::Result<usize> {
    let send = || async {
        quic.socket
            .async_io(Interest::WRITABLE, || quic.udp.send(&quic.socket, t))
            .await
            .map(|()| t.contents.len())
    };
    let Some(ttl) = t.ttl else {
        return send().await;
    };
    // Nothing else is sent meanwhile: the loop awaits this send. IP_TTL
    // is IPv4's; where it cannot be set the packet goes at the default.
    let Ok(before) = quic.socket.ttl() else {
        return send().await;
    };
    let set = quic.socket.set_ttl(ttl).is_ok();
    let sent = send().await;
    if set {
        let _ = quic.socket.set_ttl(before);
    }
    sent
}
