//! TLS 1.3 for QUIC: a self-signed Ed25519 certificate per node, and mutual
//! authentication where the peer's NodeId is the key in its certificate.
//!
//! No certificate authority is involved: a certificate only carries a key.
//! The handshake's signature proves the peer holds that key, and the key is
//! the NodeId, so checking "key == NodeId we dialled" authenticates the peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::signature::{ED25519, UnparsedPublicKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::time_provider::TimeProvider;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::id::NodeId;

/// The ALPN protocol of keynode connections.
pub const ALPN: &[u8] = b"keynode/1";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE {
/// OID 1.3.101.112 }, BIT STRING (0 unused bits) }, then the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of a PKCS#8 v1 Ed25519 private key, then the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate could not be made.
    #[error("cannot make the node certificate: {0}")]
    Certificate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The QUIC layer refused the TLS configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// The node's certificate and private key.
#[derive(Debug)]
pub struct NodeCertificate {
    /// The self-signed certificate (DER).
    pub certificate: CertificateDer<'static>,
    key: Vec<u8>,
}

impl NodeCertificate {
    /// A self-signed certificate for the Ed25519 key of `seed`.
    pub fn new(seed: &[u8; 32]) -> Result<Self, TlsError> {
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(seed);
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice())
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let params = rcgen::CertificateParams::new(vec!["keynode".to_owned()])
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        let certificate = params
            .self_signed(&key)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Self {
            certificate: certificate.der().clone(),
            key: pkcs8,
        })
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// The NodeId in a certificate: its Ed25519 public key.
pub fn node_id_of(certificate: &[u8]) -> Option<NodeId> {
    let at = certificate
        .windows(ED25519_SPKI_PREFIX.len())
        .position(|w| w == ED25519_SPKI_PREFIX)?;
    let start = at + ED25519_SPKI_PREFIX.len();
    NodeId::try_from_slice(certificate.get(start..start + 32)?).ok()
}

/// The wall-clock time of the last event the node saw, as rustls's clock:
/// TLS reads no system clock either.
#[derive(Debug, Default, Clone)]
pub(crate) struct EventClock(pub(crate) Arc<AtomicU64>);

impl EventClock {
    pub(crate) fn set(&self, unix_ms: u64) {
        self.0.store(unix_ms, Ordering::Relaxed);
    }
}

impl TimeProvider for EventClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_millis(
            self.0.load(Ordering::Relaxed),
        )))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    let key = node_id_of(cert).ok_or(rustls::Error::InvalidCertificate(
        rustls::CertificateError::BadEncoding,
    ))?;
    UnparsedPublicKey::new(&ED25519, key.as_bytes())
        .verify(message, dss.signature())
        .map(|()| HandshakeSignatureValid::assertion())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))
}

/// Checks that the server's certificate key is the NodeId dialled; records
/// the key it found, so that a mismatch can be reported with it.
#[derive(Debug)]
pub(crate) struct ExpectNodeId {
    expected: NodeId,
    pub(crate) found: Mutex<Option<NodeId>>,
}

impl ServerCertVerifier for ExpectNodeId {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = node_id_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if let Ok(mut slot) = self.found.lock() {
            *slot = Some(found);
        }
        if found == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Accepts any client with an Ed25519 certificate: who it is (its NodeId)
/// is read from the certificate once the handshake is done.
#[derive(Debug)]
struct AnyNodeClient;

impl ClientCertVerifier for AnyNodeClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        node_id_of(end_entity)
            .map(|_| ClientCertVerified::assertion())
            .ok_or(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ))
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The rustls server configuration of a node.
pub(crate) fn server_config(
    cert: &NodeCertificate,
    clock: &EventClock,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config =
        rustls::ServerConfig::builder_with_details(provider(), Arc::new(clock.clone()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyNodeClient))
            .with_single_cert(vec![cert.certificate.clone()], cert.private_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The rustls client configuration to reach `expected`, and its verifier.
pub(crate) fn client_config(
    cert: &NodeCertificate,
    expected: NodeId,
    clock: &EventClock,
) -> Result<(rustls::ClientConfig, Arc<ExpectNodeId>), TlsError> {
    let verifier = Arc::new(ExpectNodeId {
        expected,
        found: Mutex::new(None),
    });
    let mut config =
        rustls::ClientConfig::builder_with_details(provider(), Arc::new(clock.clone()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(vec![cert.certificate.clone()], cert.private_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok((config, verifier))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::KeyPair;

    #[test]
    fn the_certificate_carries_the_node_id() {
        let seed = [5u8; 32];
        let cert = NodeCertificate::new(&seed).unwrap();
        let key = KeyPair::from_seed(&seed).unwrap();
        assert_eq!(node_id_of(&cert.certificate), Some(key.node_id()));
        let clock = EventClock::default();
        assert!(server_config(&cert, &clock).is_ok());
        assert!(client_config(&cert, key.node_id(), &clock).is_ok());
    }
}
