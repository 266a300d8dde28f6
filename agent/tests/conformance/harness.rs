//! The suite's harness: agents on a [`Runtime`], the connection between
//! two, protocols, payloads, servers that run beside their clients in one
//! task, and bounded waits.

use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{Either, select};
use futures::stream::FuturesUnordered;
use keynode_agent::{
    Agent, AgentConfig, Connection, IncomingStream, Listener, Protocol, ReadToEndError,
    ReadinessTables, RecvStream, SendStream, SetNodeOptions, StreamError, StreamTables,
};
use keynode_core::{ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData, NodeId};

use super::Runtime;

/// Runs `test` on `R`, failing it if it has not ended within `limit`.
pub fn run<R: Runtime>(limit: Duration, test: impl Future<Output = ()>) {
    R::block_on(async {
        match select(pin!(test), R::sleep(limit)).await {
            Either::Left(((), _)) => {}
            Either::Right(((), _)) => panic!("the test did not end within {limit:?}"),
        }
    });
}

/// An agent on loopback in `dir/name`, its configuration adjusted by `tweak`.
pub async fn start<R: Runtime>(
    dir: &Path,
    name: &str,
    tweak: impl FnOnce(&mut AgentConfig),
) -> Agent {
    let mut config = AgentConfig::new(dir.join(name), ([127, 0, 0, 1], 0).into());
    tweak(&mut config);
    R::start(config)
        .await
        .unwrap_or_else(|e| panic!("agent {name} starts: {e}"))
}

/// A connection from `from` to `to`, after telling `from` where `to` is.
pub async fn connect(from: &Agent, to: &Agent) -> Connection {
    let data = NodeContactAddressData {
        mode: ContactMode::Direct,
        connected_time: 1,
        scopes: NodeAddressScopes::GLOBAL,
    };
    from.set_node(
        to.node_id(),
        NodeAddress::from(to.local_addr()),
        data,
        SetNodeOptions::default().force(true),
    )
    .await
    .expect("set_node");
    from.acquire_connection(to.node_id())
        .await
        .expect("a connection to the other agent")
}

/// Stops every agent.
pub async fn stop_all(agents: &[&Agent]) {
    for agent in agents {
        agent.stop().await.expect("the agent stops");
    }
}

/// A protocol by its name.
pub fn protocol(name: &'static str) -> Protocol {
    Protocol::try_from(name).expect("a valid protocol name")
}

/// `len` bytes that differ for every `seed` (xorshift64*).
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `f`'s output, or `None` if it has not ended within `bound`.
pub async fn within<R: Runtime, T>(bound: Duration, f: impl Future<Output = T>) -> Option<T> {
    match select(pin!(f), R::sleep(bound)).await {
        Either::Left((t, _)) => Some(t),
        Either::Right(((), _)) => None,
    }
}

/// Runs `client` while `server` serves; `client`'s result.
pub async fn while_serving<T>(
    server: impl Future<Output = ()>,
    client: impl Future<Output = T>,
) -> T {
    match select(pin!(client), pin!(server)).await {
        Either::Left((t, _)) => t,
        Either::Right(((), _)) => panic!("a server ended"),
    }
}

/// Serves every stream of `listener` with `handle`, all at once; never ends.
pub async fn serve<F, Fut>(mut listener: Listener, mut handle: F)
where
    F: FnMut(IncomingStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut running = FuturesUnordered::new();
    std::future::poll_fn(|cx| {
        while let Poll::Ready(incoming) = listener.poll_accept(cx) {
            running.push(handle(incoming));
        }
        while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {}
        Poll::<()>::Pending
    })
    .await
}

/// The echo protocol, written as a user would with futures-io: copy the
/// receiving side into the sending side, then close it.
pub async fn echo(mut incoming: IncomingStream) {
    let Some(mut send) = incoming.send.take() else {
        return;
    };
    if futures::io::copy(&mut incoming.recv, &mut send)
        .await
        .is_ok()
    {
        let _ = futures::io::AsyncWriteExt::close(&mut send).await;
    } else {
        let _ = send.reset(1);
    }
}

/// Sends `payload` on a new stream of `protocol` (writing and reading at
/// once, so both directions' flow control works) and returns the echo.
pub async fn echo_of(conn: &Connection, protocol: &Protocol, payload: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi(protocol).await.expect("the stream opens");
    let write = async {
        send.write_all(payload)
            .await
            .expect("the payload is written");
        send.finish().expect("the stream finishes");
    };
    let read = async {
        recv.read_to_end(payload.len() + 1)
            .await
            .expect("the echo is read")
    };
    let ((), echoed) = futures::join!(write, read);
    echoed
}

/// Polls `check` every 20 ms until it holds (the test's limit bounds it).
pub async fn eventually<R: Runtime, F: Future<Output = bool>>(mut check: impl FnMut() -> F) {
    while !check().await {
        R::sleep(Duration::from_millis(20)).await;
    }
}

/// The first error of writing `data`, finishing and reading to the end:
/// how the opener of a refused stream learns of it.
pub async fn first_error(send: &mut SendStream, recv: &mut RecvStream, data: &[u8]) -> StreamError {
    if let Err(e) = send.write_all(data).await {
        return e;
    }
    if let Err(e) = send.finish() {
        return e;
    }
    match recv.read_to_end(1 << 20).await {
        Err(ReadToEndError::Stream(e)) => e,
        other => panic!("the stream was expected to fail, got {other:?}"),
    }
}

/// Uses of connections `agent` handed out and has not got back.
pub async fn leases(agent: &Agent) -> u32 {
    u32::try_from(agent.in_flight().leases).unwrap_or(u32::MAX)
}

/// Whether `agent` has a connection up to `peer`.
pub async fn connected_to(agent: &Agent, peer: NodeId) -> bool {
    agent
        .connections()
        .await
        .expect("the agent runs")
        .iter()
        .any(|(_, p, _)| *p == peer)
}

/// Tables with no stream in them, with `listeners` protocols listened on.
pub fn empty(listeners: usize) -> (StreamTables, ReadinessTables) {
    (
        StreamTables::default(),
        ReadinessTables {
            listeners,
            ..ReadinessTables::default()
        },
    )
}
