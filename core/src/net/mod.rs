//! The net layer: the manager's connections, requests and streams as QUIC
//! (quinn-proto, TLS 1.3 by rustls with mutual Ed25519 authentication),
//! hole-punching packets, and mDNS — all sans-IO, as datagrams in and out.

pub mod mdns;
mod node;
mod tls;

pub use node::{NetCommand, NetConfig, NetError, Node, Transmit};
pub use tls::{ALPN, NodeCertificate, TlsError, node_id_of};
