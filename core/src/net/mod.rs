//! The net layer: the manager's connections, requests and streams as QUIC
//! (quinn-proto, TLS 1.3 by rustls with mutual Ed25519 authentication),
//! hole-punching packets, and mDNS — all sans-IO, as datagrams in and out.
//!
//! One file per concept:
//! - `node.rs`: [`Node`], the composition: the manager, the quinn-proto
//!   endpoint, the connections, punches and mDNS; it carries out the
//!   manager's commands (every one, by name) and drives everything until
//!   nothing moves;
//! - `driver.rs`: the closed surface a driver sees: [`DriverEvent`] in
//!   (datagrams on the QUIC and mDNS sockets, store commits and failures,
//!   the snapshot, resolutions, released leases) and [`NetCommand`] out
//!   (datagrams to send, store batches, resolutions, results and events for
//!   the caller). The manager's own events about connections, requests and
//!   streams, and its commands to use them, stay inside;
//! - `admission.rs`: which inbound attempts get a handshake, a Retry or a
//!   refusal, decided on their first Initial, and the count of every
//!   connection by source; `eviction.rs`: room for the node's own dials;
//! - `conn_table.rs`: the connections, the set of those to drive and their
//!   QUIC deadlines, so that the work per datagram does not grow with them;
//! - `connection.rs`: one QUIC connection's state (dialing, accepting, up,
//!   closing, each with its own data) and how it moves along;
//! - `streams.rs`: length-prefixed framing of [`crate::wire`] messages and
//!   routing of each stream by its role (its header not yet read, our
//!   request, a peer's request, a claim exchange, an application's stream,
//!   the observed address each side tells the other, alone on a
//!   unidirectional stream, when a connection comes up: see
//!   [`crate::nat`] for why then and what is believed);
//! - `protocol.rs`: [`Protocol`] names and the header that opens every
//!   stream and datagram with one; `registry.rs`: the protocols a node
//!   serves and their caps on inbound streams;
//! - `app.rs`: application streams and datagrams (quinn-proto's stream API
//!   without I/O, readiness as [`AppEvent`]s, each stream a use of its
//!   connection);
//! - `punch.rs`: hole punching (opening, holding, punching);
//! - `relay.rs`: relaying (how a relayed path meets quinn-proto, the
//!   frames, pairs, reservations and their limits); `relayed.rs`: the node
//!   as a relay and as a relay's client;
//! - `timers.rs`: the net layer's deadline table ([`NetTimer`]) and the label
//!   of the node's next deadline ([`NodeTimer`]);
//! - `tls.rs`: certificates and verifiers (a NodeId is the certificate's
//!   Ed25519 key); `mdns`: the mDNS service (RFC 6762 announcements and
//!   queries for NodeIds).
//!
//! # Drain contract
//!
//! Every input is one call: [`Node::handle`] (what the driver observed),
//! [`Node::handle_timeout`] (time passed), [`Node::call`] (the caller's
//! request, as a [`crate::UserCall`]) or [`Node::renew_key`]. After each,
//! the driver drains [`Node::poll`] until it returns `None`, carrying out
//! every [`NetCommand`] (answers such as [`DriverEvent::StoreCommitted`]
//! come back later as inputs of their own), then asks
//! [`Node::poll_timeout`] when to call [`Node::handle_timeout`] next.
//! Time must not go backwards; an early `handle_timeout` does nothing.

mod admission;
mod app;
mod conn_table;
mod connection;
mod driver;
mod eviction;
pub mod mdns;
mod node;
mod protocol;
mod punch;
mod registry;
mod relay;
mod relayed;
mod streams;
mod timers;
mod tls;

pub use admission::AdmissionStats;
pub use app::{
    AppEvent, AppStats, DatagramError, OpenError, Refusal, StreamDir, StreamError, StreamHandle,
    StreamTables,
};
pub use driver::{DriverEvent, NetCommand, Transmit};
pub use node::{NetConfig, NetError, Node};
pub use protocol::{MAX_PROTOCOL_LEN, Protocol, ProtocolError, RESERVED_PREFIX};
pub use registry::{ProtocolOptions, RegisterError};
pub use relay::{RELAY_HEADER_LEN, RelayConfig, RelayServe, RelayStats, is_relayed};
pub use timers::{NetTimer, NodeTimer};
pub use tls::{ALPN, CertificateKeyError, NodeCertificate, TlsError, node_id_of};
