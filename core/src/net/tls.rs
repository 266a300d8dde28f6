//! TLS 1.3 for QUIC: a self-signed Ed25519 certificate per node, and mutual
//! authentication where the peer's NodeId is the key in its certificate.
//!
//! No certificate authority is involved: a certificate only carries a key.
//! The handshake's signature proves the peer holds that key, and the key is
//! the NodeId, so checking "key == NodeId we dialled" authenticates the peer.
//!
//! The key is read from where X.509 puts it: the certificate is parsed as a
//! whole, its SubjectPublicKeyInfo must name Ed25519 (OID 1.3.101.112) with a
//! 32-byte key, and the certificate must be self-signed by that key. Bytes that
//! merely look like an Ed25519 key elsewhere (an extension, the subject) are
//! never taken for the NodeId.

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

/// The DER prefix of a PKCS#8 v1 Ed25519 private key, then the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why this node's TLS could not be set up (a local fault: nothing a peer
/// sent causes it).
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen could not make the node's self-signed certificate.
    #[error("cannot make the node certificate: {0}")]
    Certificate(rcgen::Error),
    /// rustls refused the node's client or server configuration.
    #[error("rustls refused the node's TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// quinn refused the TLS configuration: it has no TLS 1.3 cipher suite
    /// that QUIC can protect its initial packets with (quinn's
    /// `NoInitialCipherSuite`, which carries nothing more).
    #[error("QUIC refused the TLS configuration: no initial cipher suite")]
    NoInitialCipherSuite,
}

impl From<quinn_proto::crypto::rustls::NoInitialCipherSuite> for TlsError {
    fn from(_: quinn_proto::crypto::rustls::NoInitialCipherSuite) -> Self {
        Self::NoInitialCipherSuite
    }
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
        let key = rcgen::KeyPair::try_from(pkcs8.as_slice()).map_err(TlsError::Certificate)?;
        let params = rcgen::CertificateParams::new(vec!["keynode".to_owned()])
            .map_err(TlsError::Certificate)?;
        let certificate = params.self_signed(&key).map_err(TlsError::Certificate)?;
        Ok(Self {
            certificate: certificate.der().clone(),
            key: pkcs8,
        })
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// Why a certificate carries no NodeId.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateKeyError {
    /// The bytes are not one DER X.509 certificate.
    #[error("the certificate is not a well-formed X.509 certificate")]
    Malformed,
    /// The certificate's subject key is not an Ed25519 key.
    #[error("the certificate's subject key is not Ed25519")]
    NotEd25519,
    /// The Ed25519 subject key is not 32 bytes.
    #[error("the certificate's Ed25519 key is not 32 bytes")]
    BadKeyLength,
    /// The certificate is not signed with Ed25519 by its own subject key.
    #[error("the certificate is not self-signed by its Ed25519 key")]
    NotSelfSigned,
}

/// The NodeId in a certificate: the Ed25519 key of its SubjectPublicKeyInfo,
/// provided the certificate is self-signed by that key.
pub fn node_id_of(certificate: &[u8]) -> Result<NodeId, CertificateKeyError> {
    use x509_parser::oid_registry::OID_SIG_ED25519;
    use x509_parser::prelude::{FromDer, X509Certificate};

    let (rest, parsed) =
        X509Certificate::from_der(certificate).map_err(|_| CertificateKeyError::Malformed)?;
    if !rest.is_empty() {
        return Err(CertificateKeyError::Malformed);
    }
    let spki = parsed.public_key();
    // RFC 8410: the algorithm is the bare OID, without parameters.
    if spki.algorithm.algorithm != OID_SIG_ED25519 || spki.algorithm.parameters.is_some() {
        return Err(CertificateKeyError::NotEd25519);
    }
    let key = &spki.subject_public_key;
    if key.unused_bits != 0 {
        return Err(CertificateKeyError::BadKeyLength);
    }
    let node_id =
        NodeId::try_from_slice(&key.data).map_err(|_| CertificateKeyError::BadKeyLength)?;
    // The outer and the signed algorithm identifiers must agree (RFC 5280
    // 4.1.1.2), and both must be Ed25519 for the key to have signed it.
    if parsed.signature_algorithm.algorithm != OID_SIG_ED25519
        || parsed.tbs_certificate.signature.algorithm != OID_SIG_ED25519
        || parsed.signature_value.unused_bits != 0
    {
        return Err(CertificateKeyError::NotSelfSigned);
    }
    UnparsedPublicKey::new(&ED25519, node_id.as_bytes())
        .verify(
            parsed.tbs_certificate.as_ref(),
            &parsed.signature_value.data,
        )
        .map_err(|_| CertificateKeyError::NotSelfSigned)?;
    Ok(node_id)
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
    let key = node_id_of(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
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
        let found = node_id_of(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
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
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))
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
        assert_eq!(node_id_of(&cert.certificate), Ok(key.node_id()));
        let clock = EventClock::default();
        assert!(server_config(&cert, &clock).is_ok());
        assert!(client_config(&cert, key.node_id(), &clock).is_ok());
    }

    /// The DER of an Ed25519 SubjectPublicKeyInfo, as an attacker would
    /// paste it anywhere in a certificate.
    fn ed25519_spki(key: &NodeId) -> Vec<u8> {
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(key.as_bytes());
        spki
    }

    fn ed25519_key_pair(seed: &[u8; 32]) -> rcgen::KeyPair {
        let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
        pkcs8.extend_from_slice(seed);
        rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap()
    }

    #[test]
    fn an_ed25519_key_hidden_in_an_ecdsa_certificate_is_not_a_node_id() {
        let hidden = KeyPair::from_seed(&[7u8; 32]).unwrap().node_id();
        let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["keynode".to_owned()]).unwrap();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 99999, 1],
                ed25519_spki(&hidden),
            ));
        let cert = params.self_signed(&ecdsa).unwrap();
        let der = cert.der();
        // The bytes are there for a pattern search to find...
        let spki = ed25519_spki(&hidden);
        assert!(der.windows(spki.len()).any(|w| w == spki.as_slice()));
        // ...but the certificate's key is ECDSA, so it names no node.
        assert_eq!(node_id_of(der), Err(CertificateKeyError::NotEd25519));
        assert!(
            AnyNodeClient
                .verify_client_cert(der, &[], UnixTime::now())
                .is_err()
        );
        let expect = ExpectNodeId {
            expected: hidden,
            found: Mutex::new(None),
        };
        let name = ServerName::try_from("keynode").unwrap();
        assert!(
            expect
                .verify_server_cert(der, &[], &name, &[], UnixTime::now())
                .is_err()
        );
        assert_eq!(*expect.found.lock().unwrap(), None);
    }

    #[test]
    fn an_ed25519_certificate_signed_by_another_key_is_not_a_node_id() {
        let subject = ed25519_key_pair(&[8u8; 32]);
        let signer = ed25519_key_pair(&[9u8; 32]);
        let params = rcgen::CertificateParams::new(vec!["keynode".to_owned()]).unwrap();
        let issuer = rcgen::Issuer::new(params.clone(), signer);
        let cert = params.signed_by(&subject, &issuer).unwrap();
        assert_eq!(
            node_id_of(cert.der()),
            Err(CertificateKeyError::NotSelfSigned)
        );
    }

    #[test]
    fn bytes_that_are_not_a_certificate_name_no_node() {
        let key = KeyPair::from_seed(&[3u8; 32]).unwrap().node_id();
        assert_eq!(
            node_id_of(&ed25519_spki(&key)),
            Err(CertificateKeyError::Malformed)
        );
        let mut trailing = NodeCertificate::new(&[3u8; 32])
            .unwrap()
            .certificate
            .to_vec();
        assert_eq!(node_id_of(&trailing), Ok(key));
        trailing.push(0);
        assert_eq!(node_id_of(&trailing), Err(CertificateKeyError::Malformed));
    }
}
