//! The node manager's I/O surface: what goes in ([`Event`]), what comes out
//! ([`Command`], [`Output`]), and the ids that tie them together.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::address::{Hostname, NodeAddress};
use crate::claims::{ChainRejection, ClaimError, SignedClaim};
use crate::conn_error::{CloseReason, ConnectionErrorCode};
use crate::contact::{ContactMode, NodeContactAddressData};
use crate::graph::SnapshotError;
use crate::id::{BucketIndex, NodeId};
use crate::store::{Snapshot, StoreErrorKind, StoreOp};
use crate::wire::{ClaimMessage, DecodeError, Request, Response};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}#{}", stringify!($name), self.0)
            }
        }
    };
}

id_type!(
    /// An operation of the manager (a spec method call, or internal work).
    /// Counted up from 1; never reused.
    OpId
);
id_type!(
    /// A connection, numbered by the driver (the net layer) in the order
    /// they are made; the smallest of a node's connections is its primary one.
    ConnId
);
id_type!(
    /// One connection attempt the core asked for ([`Command::Connect`]).
    AttemptId
);
id_type!(
    /// A request the core sent ([`Command::SendRequest`]).
    RequestId
);
id_type!(
    /// A request a peer sent, numbered by the driver; echoed in [`Command::SendResponse`].
    PeerRequestId
);
id_type!(
    /// A batch of store operations ([`Command::Store`]).
    BatchId
);
id_type!(
    /// An mDNS query ([`Command::MdnsQuery`]).
    QueryId
);
id_type!(
    /// A hostname resolution ([`Command::Resolve`]).
    ResolveId
);
id_type!(
    /// One use of a connection handed out by `acquire_connection`; ended by
    /// [`Event::ConnectionReleased`].
    LeaseId
);

/// A bidirectional stream carrying a multi-message exchange (the claim
/// exchange). `Local` streams are opened by this node and numbered by the
/// core; `Remote` ones are opened by the peer and numbered by the driver.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum StreamId {
    /// Opened by this node ([`Command::OpenStream`]).
    Local(u64),
    /// Opened by the peer ([`Event::StreamOpened`]).
    Remote(u64),
}

/// Why a connection attempt failed: reported by the driver, or decided by
/// the manager when the connection came up.
///
/// Grouped by fault: the peer's identity, name resolution, this node's own
/// refusal, and the transport (quinn's and rustls's typed errors, wrapped).
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// No answer within the timeout.
    #[error("connection attempt timed out")]
    Timeout,
    /// The peer's certificate is not the NodeId that was dialled.
    #[error("peer presented NodeId {found}, not the one dialled")]
    WrongNodeId {
        /// The NodeId it presented.
        found: NodeId,
    },
    /// The handshake finished without a peer certificate to check.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    /// The hostname did not resolve.
    #[error("hostname {hostname} did not resolve: {kind}")]
    Resolve {
        /// The name.
        hostname: Hostname,
        /// Why the resolver failed (`NotFound` for an unknown name).
        kind: std::io::ErrorKind,
    },
    /// The hostname resolved to no address.
    #[error("hostname {hostname} resolved to no address")]
    NoAddresses {
        /// The name.
        hostname: Hostname,
    },
    /// The connection came up and this node closed it (the connection
    /// limit, or the peer is this node itself).
    #[error("this node closed the connection it dialled: {0}")]
    Declined(CloseReason),
    /// quinn refused to start the attempt (a bad address, no endpoint
    /// capacity, ...).
    #[error("cannot start the QUIC connection: {0}")]
    Connect(quinn_proto::ConnectError),
    /// A relayed attempt had no path: its relay's connection is gone, or
    /// the node holds `RelayConfig::max_paths` relayed paths already.
    #[error("no relayed path: the relay's connection is gone or the paths are all taken")]
    NoRelayPath,
    /// The QUIC connection was lost before it was up: refused, reset,
    /// closed by the peer, or its TLS handshake failed.
    #[error("QUIC connection failed: {0}")]
    Transport(quinn_proto::ConnectionError),
    /// This node's TLS configuration for the attempt could not be made.
    #[error("cannot configure TLS for the attempt: {0}")]
    Tls(crate::net::TlsError),
}

/// Why a request got no response (reported by the driver).
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcFailure {
    /// No response within the timeout.
    #[error("request timed out")]
    Timeout,
    /// The connection closed first.
    #[error("connection closed before the response")]
    ConnectionClosed,
    /// The response did not decode (the stream is reset).
    #[error("invalid response: {0}")]
    InvalidResponse(DecodeError),
}

/// Something that happened, fed to the manager with `handle(now, event)`.
///
/// User commands are the manager's methods (`find_node`, `set_node`, ...),
/// which return their [`OpId`] at once.
#[derive(Clone, PartialEq, Debug)]
pub enum Event {
    /// The persisted state, loaded by the driver before `start`.
    SnapshotLoaded(Snapshot),
    /// A connection is up and its peer proved `peer` (the key of its
    /// certificate). `attempt` is the core's attempt for an outbound
    /// connection, `None` for an inbound one.
    ConnectionUp {
        /// The connection.
        conn: ConnId,
        /// The authenticated peer.
        peer: NodeId,
        /// Its address as this node sees it.
        remote: SocketAddr,
        /// The attempt that made it, if outbound.
        attempt: Option<AttemptId>,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// The attempt.
        attempt: AttemptId,
        /// Why.
        failure: ConnectFailure,
    },
    /// The peer of an up connection told the address it sees this node at
    /// (`Frame::Observed`). Believed for that connection only: it counts
    /// towards the NAT class (keyed by the connection's remote IP) until
    /// the connection closes.
    AddressObserved {
        /// The connection it came on.
        conn: ConnId,
        /// This node's address as the peer sees it.
        observed: SocketAddr,
    },
    /// A connection closed (either side, or idle).
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
    },
    /// A use of a connection ended (the drivers' `with_conn_*` finished or was dropped).
    ConnectionReleased {
        /// The lease.
        lease: LeaseId,
    },
    /// A peer's request arrived on a connection.
    RequestReceived {
        /// The connection.
        conn: ConnId,
        /// The driver's number for it.
        request: PeerRequestId,
        /// The decoded request.
        body: Request,
    },
    /// The response to one of the core's requests, or why there is none.
    ResponseReceived {
        /// The request.
        request: RequestId,
        /// The decoded response.
        result: Result<Response, RpcFailure>,
    },
    /// A peer opened a stream with its first message (a claim exchange).
    StreamOpened {
        /// The connection.
        conn: ConnId,
        /// The stream (`StreamId::Remote`).
        stream: StreamId,
        /// The first message.
        message: ClaimMessage,
    },
    /// A message arrived on a stream.
    StreamReceived {
        /// The stream.
        stream: StreamId,
        /// The message.
        message: ClaimMessage,
    },
    /// A stream ended (finished, reset, or its connection closed).
    StreamClosed {
        /// The stream.
        stream: StreamId,
    },
    /// mDNS found addresses of a node.
    MdnsAnswer {
        /// The query.
        query: QueryId,
        /// Where the node answered from.
        addresses: Vec<SocketAddr>,
    },
    /// A hostname was resolved (or not).
    Resolved {
        /// The resolution.
        resolve: ResolveId,
        /// The addresses, or why the resolver failed.
        result: Result<Vec<IpAddr>, std::io::ErrorKind>,
    },
    /// A store batch was committed.
    StoreCommitted(BatchId),
    /// A store batch failed; nothing of it was written.
    StoreFailed {
        /// The batch.
        batch: BatchId,
        /// Why.
        error: StoreErrorKind,
    },
    /// The node's key was renewed: it now has this NodeId.
    KeyRenewed {
        /// The new NodeId.
        node_id: NodeId,
    },
}

/// What the manager asks its driver to do, or tells its caller; drained with `poll()`.
#[derive(Clone, PartialEq, Debug)]
#[must_use]
pub enum Command {
    /// Open a QUIC connection to `address` and check that the peer is `node_id`.
    /// Answer with [`Event::ConnectionUp`] or [`Event::ConnectFailed`].
    Connect {
        /// The attempt.
        attempt: AttemptId,
        /// The node expected.
        node_id: NodeId,
        /// Where.
        address: SocketAddr,
        /// How the address was learned (direct, or after a signal).
        mode: ContactMode,
        /// Give up after this long.
        timeout: Duration,
    },
    /// Open a QUIC connection to `node_id` through the relay on connection
    /// `via` (at a mapped address of the net layer's; see `net`'s relay
    /// docs). Answered as [`Command::Connect`] is.
    ConnectRelayed {
        /// The attempt.
        attempt: AttemptId,
        /// The node expected.
        node_id: NodeId,
        /// The connection to the relay.
        via: ConnId,
        /// Give up after this long.
        timeout: Duration,
    },
    /// Send a request on a connection. Answer with [`Event::ResponseReceived`].
    SendRequest {
        /// The connection.
        conn: ConnId,
        /// The request's id.
        request: RequestId,
        /// The request.
        body: Request,
        /// Give up after this long.
        timeout: Duration,
    },
    /// Answer a peer's request.
    SendResponse {
        /// The connection.
        conn: ConnId,
        /// The peer's request.
        request: PeerRequestId,
        /// The response.
        body: Response,
    },
    /// Open a bidirectional stream on a connection and send its first message.
    OpenStream {
        /// The connection.
        conn: ConnId,
        /// The stream (`StreamId::Local`).
        stream: StreamId,
        /// The first message.
        message: ClaimMessage,
    },
    /// Send a message on a stream; `finish` ends the sending side.
    StreamSend {
        /// The stream.
        stream: StreamId,
        /// The message.
        message: ClaimMessage,
        /// Whether this is the last message.
        finish: bool,
    },
    /// Close a connection with an application close code.
    CloseConnection {
        /// The connection.
        conn: ConnId,
        /// Why.
        code: ConnectionErrorCode,
    },
    /// Send hole-punching packets from the node's socket to `address`, until
    /// a connection from it is up or `timeout` passes.
    HolePunch {
        /// Where.
        address: SocketAddr,
        /// For how long.
        timeout: Duration,
    },
    /// Start announcing this node on mDNS.
    MdnsAnnounce {
        /// This node.
        node_id: NodeId,
        /// Multicast groups.
        groups: Vec<IpAddr>,
        /// mDNS port.
        port: u16,
    },
    /// Stop announcing and querying on mDNS.
    MdnsStop,
    /// Ask the local network for `node_id`; answer with [`Event::MdnsAnswer`]s.
    MdnsQuery {
        /// The query.
        query: QueryId,
        /// The node looked for.
        node_id: NodeId,
    },
    /// The query is over; clean it up.
    MdnsQueryEnd {
        /// The query.
        query: QueryId,
    },
    /// Resolve a hostname; answer with [`Event::Resolved`].
    Resolve {
        /// The resolution.
        resolve: ResolveId,
        /// The name.
        hostname: Hostname,
    },
    /// Apply these store operations in one write transaction; answer with
    /// [`Event::StoreCommitted`] or [`Event::StoreFailed`].
    Store(StoreBatch),
    /// A result or event for the caller.
    Output(Output),
}

/// Store operations to apply atomically.
#[derive(Clone, PartialEq, Eq, Debug)]
#[must_use]
pub struct StoreBatch {
    /// Its id, echoed in [`Event::StoreCommitted`].
    pub id: BatchId,
    /// The operations, in order.
    pub ops: Vec<StoreOp>,
}

/// What the caller learns.
#[derive(Clone, PartialEq, Debug)]
pub enum Output {
    /// An operation ended: exactly once per [`OpId`] the caller got.
    Done {
        /// The operation.
        op: OpId,
        /// Its result.
        result: Result<OpValue, OpError>,
    },
    /// Something the caller may want to know.
    Event(NodeEvent),
}

/// The value of a finished operation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum OpValue {
    /// Done, nothing to return.
    Unit,
    /// `find_node` / `ping_node`: where the node was reached, or `None`.
    Found(Option<(NodeAddress, NodeContactAddressData)>),
    /// `ping_node_address`: whether the node answered at that address.
    Reachable(bool),
    /// `query_mdns`: the addresses found.
    Addresses(Vec<SocketAddr>),
    /// `request_chain_data`: the claims that verified, in seq order, and the
    /// ones that did not.
    Chain {
        /// Verified claims.
        claims: Vec<SignedClaim>,
        /// Claims that failed verification, with why.
        rejected: Vec<ChainRejection>,
    },
    /// `request`: the peer's response.
    Response(Response),
    /// `acquire_connection`: a use of a connection, to end with
    /// [`Event::ConnectionReleased`].
    Connection {
        /// The use.
        lease: LeaseId,
        /// The connection.
        conn: ConnId,
        /// The peer.
        peer: NodeId,
    },
}

/// One seed node that could not be reached.
#[derive(Clone, PartialEq, Debug)]
pub struct SeedFailure {
    /// The seed.
    pub node_id: NodeId,
    /// Its address.
    pub address: NodeAddress,
    /// Why it could not be reached.
    pub reason: ConnectFailure,
}

/// Why an operation failed.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// Cancelled by the caller or by `stop`.
    #[error("operation cancelled")]
    Cancelled,
    /// Its deadline passed.
    #[error("operation timed out")]
    Timeout,
    /// The node could not be found.
    #[error("node {0} could not be found")]
    NodeNotFound(NodeId),
    /// `sync_node_graph` was given no seed nodes.
    #[error("no seed nodes given")]
    NoSeedNodes,
    /// No seed node answered.
    #[error("no seed node could be reached: {}", list_failures(.0))]
    SeedsUnreachable(Vec<SeedFailure>),
    /// The store failed to persist the change; nothing of it was written.
    #[error("the store failed to persist the change: {0}")]
    Store(StoreErrorKind),
    /// A claim exchange or chain check failed.
    #[error("claim failed: {0}")]
    Claim(ClaimError),
    /// The manager has no signing key.
    #[error("this node manager has no signing key")]
    CannotSign,
    /// `request`: the peer's response did not decode (what was wrong with
    /// it is the [`DecodeError`]).
    #[error("the peer's response is invalid: {0}")]
    InvalidResponse(DecodeError),
    /// A request was refused by the peer.
    #[error("the peer refused the request: {0:?}")]
    Refused(crate::wire::RefusalReason),
    /// `set_node`: the address's network already holds its share of the
    /// bucket or the table (`Config::ip_group_limits`); nothing changed.
    #[error("network {0:?} already holds its share of the routing table")]
    IpGroupFull(crate::ip_group::IpGroup),
}

fn list_failures(failures: &[SeedFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{}@{}: {}", f.node_id, f.address, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a user command was refused before it started.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The manager is not started (or is stopped).
    #[error("node manager is not running")]
    NotRunning,
    /// `start` on a running manager.
    #[error("node manager is already running")]
    AlreadyRunning,
    /// The snapshot arrived after `start`.
    #[error("the snapshot must be loaded before start")]
    SnapshotAfterStart,
    /// The operation concerns this node's own NodeId.
    #[error("{0} is this node's own NodeId")]
    OwnNodeId(NodeId),
    /// Too many operations in flight (`Config::max_operations`).
    #[error("too many operations in flight (limit {limit})")]
    TooManyOperations {
        /// The limit.
        limit: usize,
    },
    /// No such operation.
    #[error("no operation {0}")]
    UnknownOperation(OpId),
    /// The loaded snapshot does not restore; the manager refuses to start
    /// rather than overwrite the store with an empty graph.
    #[error("the loaded snapshot does not restore: {0}")]
    BadSnapshot(SnapshotError),
}

/// Things the caller may want to know; none needs an answer.
#[derive(Clone, PartialEq, Debug)]
pub enum NodeEvent {
    /// A contact was added to or updated in the graph.
    ContactSet {
        /// The node.
        node_id: NodeId,
        /// Its bucket.
        bucket: BucketIndex,
    },
    /// A contact was removed (garbage collection, `unset_node`, eviction).
    ContactRemoved {
        /// The node.
        node_id: NodeId,
    },
    /// A store batch failed; memory is ahead of disk until the next write of
    /// the same records.
    StoreFailed {
        /// The batch.
        batch: BatchId,
        /// Why.
        error: StoreErrorKind,
    },
    /// The NodeId changed after a key renewal and the graph was rebuilt.
    BucketsReset {
        /// The new NodeId.
        node_id: NodeId,
    },
    /// A background `sync_node_graph` (started with `blocking: false`)
    /// failed: the node has not joined. With `retry_in`, the sync task runs
    /// again after that delay (`Config::sync_retry_*`).
    SyncFailed {
        /// Why: for unreachable seeds, each seed and its failure.
        error: OpError,
        /// Failed background syncs in a row, this one included.
        attempt: u32,
        /// When the next attempt runs; `None` once the attempts are spent.
        retry_in: Option<Duration>,
    },
    /// The manager stopped; nothing follows.
    Stopped,
}
