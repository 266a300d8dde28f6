//! [`KeynodePair`]: two keynode agents on loopback, the client holding a
//! connection to the server, which listens on the sink and echo protocols.

use std::net::SocketAddr;

use bytes::Bytes;
use keynode_core::{ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData};
use keynode_tokio::{Agent, AgentConfig, Connection, IncomingStream, Listener, Protocol};
use keynode_tokio::{ProtocolOptions, SetNodeOptions};
use tokio::task::JoinHandle;

use crate::BenchResult;
use crate::pair::{ECHO_LIMIT, Pair, SINK_READ, count_answer, read_count, write_lengths};

/// Two agents and the client's use of its connection to the server.
pub(crate) struct KeynodePair {
    client: Agent,
    server: Agent,
    conn: Connection,
    sink: Protocol,
    echo: Protocol,
    listeners: Vec<JoinHandle<()>>,
    /// The agents' data directories, removed on drop.
    _dir: tempfile::TempDir,
}

impl KeynodePair {
    /// Starts both agents (default configuration: NetConfig's transport
    /// limits) and connects the client to the server.
    pub(crate) async fn start() -> BenchResult<Self> {
        let dir = tempfile::tempdir()?;
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let client = keynode_tokio::start(AgentConfig::new(dir.path().join("c"), loopback)).await?;
        let server = keynode_tokio::start(AgentConfig::new(dir.path().join("s"), loopback)).await?;
        let sink = Protocol::try_from("bench/sink/1")?;
        let echo = Protocol::try_from("bench/echo/1")?;
        let options = ProtocolOptions::default;
        let listeners = vec![
            tokio::spawn(serve(server.accept(sink.clone(), options())?, serve_sink)),
            tokio::spawn(serve(server.accept(echo.clone(), options())?, serve_echo)),
        ];
        let data = NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: 1,
            scopes: NodeAddressScopes::GLOBAL,
        };
        let at = NodeAddress::from(server.local_addr());
        client
            .set_node(
                server.node_id(),
                at,
                data,
                SetNodeOptions::default().force(true),
            )
            .await?;
        let conn = client.acquire_connection(server.node_id()).await?;
        Ok(Self {
            client,
            server,
            conn,
            sink,
            echo,
            listeners,
            _dir: dir,
        })
    }
}

impl Pair for KeynodePair {
    fn sink(
        &self,
        total: u64,
        chunk: Bytes,
    ) -> impl Future<Output = BenchResult<u64>> + Send + 'static {
        let conn = self.conn.clone();
        let protocol = self.sink.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi(&protocol).await?;
            for n in write_lengths(total, chunk.len()) {
                send.write_all(&chunk[..n]).await?;
            }
            send.finish()?;
            read_count(&recv.read_to_end(8).await?)
        }
    }

    fn echo(&self, request: Bytes) -> impl Future<Output = BenchResult<Vec<u8>>> + Send + 'static {
        let conn = self.conn.clone();
        let protocol = self.echo.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi(&protocol).await?;
            send.write_all(&request).await?;
            send.finish()?;
            Ok(recv.read_to_end(ECHO_LIMIT).await?)
        }
    }

    async fn close(self) -> BenchResult<()> {
        for listener in &self.listeners {
            listener.abort();
        }
        drop(self.conn);
        self.client.stop().await?;
        self.server.stop().await?;
        Ok(())
    }
}

/// Accepts `listener`'s streams, each served by `handle` in its own task.
async fn serve<F>(mut listener: Listener, handle: fn(IncomingStream) -> F)
where
    F: Future<Output = BenchResult<()>> + Send + 'static,
{
    loop {
        let stream = handle(listener.accept().await);
        tokio::spawn(async move {
            if let Err(e) = stream.await {
                eprintln!("keynode server stream: {e}");
            }
        });
    }
}

async fn serve_sink(mut stream: IncomingStream) -> BenchResult<()> {
    let mut send = stream
        .send
        .take()
        .ok_or("a sink stream without a send side")?;
    let mut count = 0u64;
    while let Some(chunk) = stream.recv.read_chunk(SINK_READ).await? {
        count += chunk.len() as u64;
    }
    send.write_all(&count_answer(count)).await?;
    send.finish()?;
    Ok(())
}

async fn serve_echo(mut stream: IncomingStream) -> BenchResult<()> {
    let mut send = stream
        .send
        .take()
        .ok_or("an echo stream without a send side")?;
    let request = stream.recv.read_to_end(ECHO_LIMIT).await?;
    send.write_all(&request).await?;
    send.finish()?;
    Ok(())
}
