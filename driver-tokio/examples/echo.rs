//! A first keynode program on tokio: two agents on loopback find each
//! other and talk an application protocol of their own, an echo.
//!
//! Run it with `cargo run -p keynode-tokio --example echo`.
//!
//! Each agent is a node: a key (its NodeId), a UDP socket speaking QUIC
//! and a database, all in its data directory. `alice` listens on the
//! protocol `example/echo/1`; `bob` joins the network through `alice`
//! (she is his seed node), then finds her by her NodeId, opens a stream
//! of the protocol to her and reads back what he sent.

use keynode_core::{NodeAddress, SeedNodes};
use keynode_tokio::{AgentConfig, FindOptions, Protocol, ProtocolOptions, SyncOptions};

/// The largest echo `bob` reads back.
const MAX_ECHO: usize = 64 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Two data directories, removed at the end. A real node keeps its
    // directory: its key, and so its NodeId, lives there.
    let dirs = tempfile::tempdir()?;
    let loopback = "127.0.0.1:0".parse()?;
    let alice = keynode_tokio::start(AgentConfig::new(dirs.path().join("alice"), loopback)).await?;
    let bob = keynode_tokio::start(AgentConfig::new(dirs.path().join("bob"), loopback)).await?;
    println!("alice is {} on {}", alice.node_id(), alice.local_addr());
    println!("bob   is {} on {}", bob.node_id(), bob.local_addr());

    // Alice serves the echo: every stream of the protocol opened to her
    // arrives on her listener, for as long as it lives.
    let protocol = Protocol::try_from("example/echo/1")?;
    let mut listener = alice.accept(protocol.clone(), ProtocolOptions::default())?;
    tokio::spawn(async move {
        loop {
            let mut incoming = listener.accept().await;
            tokio::spawn(async move {
                // A bidirectional stream has a half for each way.
                let Some(mut send) = incoming.send.take() else {
                    return;
                };
                // Echo each chunk as it arrives, then end our half.
                while let Ok(Some(chunk)) = incoming.recv.read_chunk(MAX_ECHO).await {
                    if send.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = send.finish();
            });
        }
    });

    // Bob joins through alice, his seed (the spec's syncNodeGraph): he
    // connects to her and asks her for the nodes closest to him.
    let seed = SeedNodes::new([(alice.node_id(), NodeAddress::from(alice.local_addr()))]);
    bob.sync_node_graph(seed, SyncOptions::default().blocking(true))
        .await?;

    // Now bob knows alice by her NodeId alone: he finds her (findNode) and
    // takes a connection to her (one per pair of nodes, shared by every
    // use; released when the last `Connection` is dropped).
    let Some((address, _)) = bob
        .find_node(alice.node_id(), FindOptions::default())
        .await?
    else {
        return Err("bob could not find alice".into());
    };
    println!("bob found alice at {address}");
    let connection = bob.acquire_connection(alice.node_id()).await?;

    // One stream of the echo protocol: write, finish (end of our half),
    // and read to the end of hers.
    let (mut send, mut recv) = connection.open_bi(&protocol).await?;
    send.write_all(b"hello, alice").await?;
    send.finish()?;
    let echo = recv.read_to_end(MAX_ECHO).await?;
    println!("alice echoed {:?}", String::from_utf8_lossy(&echo));
    assert_eq!(echo, b"hello, alice");

    // Stopping flushes and closes each agent's database.
    drop(connection);
    bob.stop().await?;
    alice.stop().await?;
    Ok(())
}
