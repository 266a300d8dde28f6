//! An attacker's QUIC Initials: a quinn-proto client endpoint that starts a
//! fresh connection per Initial and never goes on (it does not answer a
//! Retry or the server's flight), the cheapest handshake flood there is.
//! Shared by the hostile-peer tests, the datagram bench and the agents'
//! flood test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{ClientConfig, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig};

/// Accepts any server certificate: an attacker checks nothing.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Makes Initials towards one server.
pub struct Initials {
    endpoint: Endpoint,
    config: ClientConfig,
    /// Handshakes started (each one Initial).
    pub made: usize,
    handles: Vec<ConnectionHandle>,
}

impl Initials {
    pub fn new() -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth();
        tls.alpn_protocols = vec![keynode_core::net::ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).expect("QUIC TLS config");
        Self {
            endpoint: Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None),
            config: ClientConfig::new(Arc::new(quic)),
            made: 0,
            handles: Vec::new(),
        }
    }

    /// The first datagram of a fresh handshake to `server`: one Initial,
    /// padded to 1,200 bytes. The connection is then forgotten, so that the
    /// generator holds nothing per Initial.
    pub fn next(&mut self, now: Instant, server: SocketAddr) -> Vec<u8> {
        let (handle, mut conn) = self
            .endpoint
            .connect(now, self.config.clone(), server, "keynode")
            .expect("connect");
        let mut buf = Vec::new();
        let t = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
        buf.truncate(t.size);
        self.made += 1;
        // The endpoint keeps an entry per connection until it is told the
        // connection is gone: drain it now.
        drop(conn);
        self.handles.push(handle);
        if self.handles.len() >= 1024 {
            self.forget();
        }
        buf
    }

    fn forget(&mut self) {
        for handle in self.handles.drain(..) {
            self.endpoint
                .handle_event(handle, quinn_proto::EndpointEvent::drained());
        }
    }

    /// What the server answered, if the endpoint recognises it (unused by
    /// a flood: answers are dropped).
    pub fn answer(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) -> bool {
        let mut buf = Vec::new();
        matches!(
            self.endpoint
                .handle(now, from, None, None, BytesMut::from(bytes), &mut buf),
            Some(DatagramEvent::ConnectionEvent(..))
        )
    }
}
