//! [`QuinnPair`]: the baseline, two plain quinn endpoints on loopback with
//! what keynode's agents have: the same quinn-proto, rustls with ring's
//! provider, TLS 1.3 with Ed25519 certificates, the transport limits of
//! keynode's `NetConfig` defaults and 4 MiB socket buffers.
//!
//! What differs is what quinn is: its own driver task per connection,
//! quinn-udp's batched I/O (GSO and GRO where the kernel has them, unless
//! [`Offload::Off`]), no stream protocol header (a one-byte tag says sink
//! or echo) and no client certificate (the handshake is not timed).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use keynode_core::net::NetConfig;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Endpoint, EndpointConfig, TokioRuntime, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::task::JoinHandle;

use crate::BenchResult;
use crate::pair::{ECHO_LIMIT, Pair, SINK_READ, count_answer, read_count, write_lengths};

/// The first byte of a sink stream.
const SINK: u8 = 0;
/// The first byte of an echo stream.
const ECHO: u8 = 1;

/// Whether quinn may send several datagrams in one system call (GSO).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offload {
    /// quinn's default.
    On,
    /// One datagram per send, as keynode's driver sends.
    Off,
}

/// Two endpoints and the client's connection to the server.
pub(crate) struct QuinnPair {
    client: Endpoint,
    server: Endpoint,
    conn: quinn::Connection,
    acceptor: JoinHandle<()>,
}

impl QuinnPair {
    /// Starts both endpoints and connects the client to the server.
    pub(crate) async fn start(offload: Offload) -> BenchResult<Self> {
        let transport = Arc::new(transport(&NetConfig::default(), offload));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])?.self_signed(&key)?;
        let cert_der = CertificateDer::from(cert.der().to_vec());
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)?;
        let mut server_config =
            quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
        server_config.transport_config(transport.clone());

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der)?;
        let client_tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client_config =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
        client_config.transport_config(transport);

        let runtime = Arc::new(TokioRuntime);
        let server = Endpoint::new(
            EndpointConfig::default(),
            Some(server_config),
            socket()?,
            runtime.clone(),
        )?;
        let client = Endpoint::new(EndpointConfig::default(), None, socket()?, runtime)?;
        let acceptor = tokio::spawn(accept(server.clone()));
        let conn = client
            .connect_with(client_config, server.local_addr()?, "localhost")?
            .await?;
        Ok(Self {
            client,
            server,
            conn,
            acceptor,
        })
    }
}

/// quinn's transport set as `transport()` in keynode's `core/src/net/node.rs`
/// sets it from `net`.
fn transport(net: &NetConfig, offload: Offload) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_idle_timeout(quinn::IdleTimeout::try_from(net.max_idle_timeout).ok());
    t.keep_alive_interval(Some(net.keep_alive));
    t.max_concurrent_bidi_streams(VarInt::from_u32(net.max_concurrent_streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(net.max_concurrent_uni_streams));
    t.stream_receive_window(VarInt::from_u32(net.stream_receive_window));
    t.receive_window(VarInt::from_u32(net.receive_window));
    t.send_window(net.send_window);
    t.datagram_receive_buffer_size(Some(net.datagram_receive_buffer).filter(|&n| n > 0));
    t.datagram_send_buffer_size(net.datagram_send_buffer);
    t.enable_segmentation_offload(offload == Offload::On);
    t
}

/// A loopback UDP socket with the buffers keynode's QUIC socket asks for.
fn socket() -> BenchResult<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

impl Pair for QuinnPair {
    fn sink(
        &self,
        total: u64,
        chunk: Bytes,
    ) -> impl Future<Output = BenchResult<u64>> + Send + 'static {
        let conn = self.conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            send.write_all(&[SINK]).await?;
            for n in write_lengths(total, chunk.len()) {
                send.write_all(&chunk[..n]).await?;
            }
            send.finish()?;
            read_count(&recv.read_to_end(8).await?)
        }
    }

    fn echo(&self, request: Bytes) -> impl Future<Output = BenchResult<Vec<u8>>> + Send + 'static {
        let conn = self.conn.clone();
        async move {
            let (mut send, mut recv) = conn.open_bi().await?;
            let mut tagged = Vec::with_capacity(1 + request.len());
            tagged.push(ECHO);
            tagged.extend_from_slice(&request);
            send.write_all(&tagged).await?;
            send.finish()?;
            Ok(recv.read_to_end(ECHO_LIMIT).await?)
        }
    }

    async fn close(self) -> BenchResult<()> {
        self.conn.close(VarInt::from_u32(0), b"done");
        self.client.wait_idle().await;
        self.acceptor.abort();
        self.server.close(VarInt::from_u32(0), b"done");
        Ok(())
    }
}

/// Accepts connections, and on each its streams, each in its own task.
async fn accept(server: Endpoint) {
    while let Some(incoming) = server.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(async move {
                    if let Err(e) = serve(send, recv).await {
                        eprintln!("quinn server stream: {e}");
                    }
                });
            }
        });
    }
}

async fn serve(mut send: quinn::SendStream, mut recv: quinn::RecvStream) -> BenchResult<()> {
    let mut tag = [0u8; 1];
    recv.read_exact(&mut tag).await?;
    match tag[0] {
        SINK => {
            let mut count = 0u64;
            while let Some(chunk) = recv.read_chunk(SINK_READ, true).await? {
                count += chunk.bytes.len() as u64;
            }
            send.write_all(&count_answer(count)).await?;
        }
        ECHO => {
            let request = recv.read_to_end(ECHO_LIMIT).await?;
            send.write_all(&request).await?;
        }
        other => return Err(format!("unknown stream tag {other}").into()),
    }
    send.finish()?;
    Ok(())
}
