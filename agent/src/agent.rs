//! [`Agent`]: the handle to a running node and the spec's methods on it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use keynode_core::claims::{ClaimId, SignedClaim};
use keynode_core::net::{
    DatagramError, DriverEvent, NetConfig, Node, OpenError, Protocol, ProtocolOptions,
    RegisterError, StreamDir, StreamError, StreamTables,
};
use keynode_core::wire::{Request, Response};
use keynode_core::{
    ApiError, BucketIndex, Config, ConnId, FindOptions, LeaseId, NodeAddress, NodeBucket,
    NodeContactAddressData, NodeId, NodeManager, Now, OpError, OpValue, SeedNodes, UserCall,
};
use keynode_store::StoreOptions;

use crate::listener::Listener;
use crate::node_loop::{AgentLoop, Inputs};
use crate::readiness::{ListenerQueue, Readiness, ReadinessTables};
use crate::shared::Shared;
use crate::sockets::{mdns_socket, quic_socket};
use crate::store_thread::StoreThread;
use crate::stream::{RecvStream, SendStream};
use crate::udp::UdpIo;

/// How to run an agent.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Where the key and the database live.
    pub data_dir: PathBuf,
    /// The UDP address to bind (port 0: any).
    pub bind: SocketAddr,
    /// The node manager's configuration.
    pub config: Config,
    /// QUIC settings. [`AgentConfig::new`] exempts loopback sources from
    /// the per-IP and per-prefix connection bounds when the agent is bound
    /// to loopback (`NetConfig::exempt_loopback`): every peer of such an
    /// agent is on the one loopback IP.
    pub net: NetConfig,
    /// The LMDB map size.
    pub map_size: usize,
    /// The IPv4 interface mDNS runs on when `config.mdns` is set: its
    /// multicast group is joined there and announcements name this address.
    /// On Linux, `lo` carries multicast only with an explicit interface
    /// (127.0.0.1). Default 127.0.0.1.
    pub mdns_interface: std::net::Ipv4Addr,
    /// Datagrams held per connection and protocol until read; the oldest
    /// are dropped beyond it. Default 256.
    pub max_queued_datagrams: usize,
}

impl AgentConfig {
    /// An agent in `data_dir` bound to `bind`, with default settings.
    pub fn new(data_dir: impl Into<PathBuf>, bind: SocketAddr) -> Self {
        let mut net = NetConfig::default();
        net.exempt_loopback = bind.ip().is_loopback();
        Self {
            data_dir: data_dir.into(),
            bind,
            config: Config::default(),
            net,
            map_size: StoreOptions::default().map_size,
            mdns_interface: std::net::Ipv4Addr::LOCALHOST,
            max_queued_datagrams: 256,
        }
    }
}

/// What went wrong in an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The data directory or key file.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] keynode_store::StoreError),
    /// The node could not be built.
    #[error(transparent)]
    Net(#[from] keynode_core::net::NetError),
    /// The socket.
    #[error("socket {addr}: {source}")]
    Socket {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The manager refused the call.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The operation failed.
    #[error(transparent)]
    Op(#[from] OpError),
    /// The agent stopped.
    #[error("the agent has stopped")]
    Stopped,
    /// A stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A stream could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A datagram could not be sent.
    #[error(transparent)]
    Datagram(#[from] DatagramError),
    /// A protocol could not be listened on.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// Datagrams of a protocol nobody listens on are not kept.
    #[error("no listener for protocol {0}: its datagrams are dropped")]
    NotListening(Protocol),
    /// The operation's time ran out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// An answer of an unexpected kind (a bug).
    #[error("unexpected result: {0}")]
    Unexpected(String),
}

type ReadCall = Box<dyn FnOnce(&NodeManager) + Send>;
type NetReadCall = Box<dyn FnOnce(&Node) + Send>;

/// The runtime's sleep, given by the driver: `sleep(d)` is a future that
/// completes after `d` (the agent itself owns no timer).
pub type Sleep = Arc<dyn Fn(Duration) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// How [`Agent::with_conn_f`] and [`Agent::with_conn_g`] run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WithConnOptions {
    /// The time for finding and connecting to the node and running the
    /// function (the spec's `ctx` timeout); `None`: no limit.
    pub timeout: Option<Duration>,
}

impl WithConnOptions {
    /// With a time limit.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
        }
    }
}
pub(crate) type RenewReply = oneshot::Sender<Result<NodeId, AgentError>>;

pub(crate) enum Call {
    Op(UserCall, oneshot::Sender<Result<OpValue, AgentError>>),
    Read(ReadCall),
    NetRead(NetReadCall),
    Release(LeaseId),
    Renew(Box<[u8; 32]>, RenewReply),
    Stop(oneshot::Sender<()>),
}

/// A running keynode node: UDP socket, QUIC, LMDB, timers. Cheap to clone;
/// every clone talks to the same node.
#[derive(Clone)]
pub struct Agent {
    calls: mpsc::UnboundedSender<Call>,
    shared: Shared,
    sleep: Sleep,
    node_id: Arc<std::sync::Mutex<NodeId>>,
    local_addr: SocketAddr,
    data_dir: Arc<PathBuf>,
}

/// An agent opened by [`Agent::open`], for a driver to run.
pub struct Opened {
    /// The handle; clone it freely.
    pub agent: Agent,
    /// The node and its store: the driver feeds it and carries out what it asks.
    pub node_loop: AgentLoop,
    /// What the handles and the store thread send to the loop.
    pub inputs: Inputs,
    /// The QUIC socket, bound and non-blocking, for the driver to wrap.
    pub socket: std::net::UdpSocket,
    /// How to send and receive on it (batched, with offload where the
    /// kernel has it): the driver's only way to use the socket.
    pub udp: Arc<UdpIo>,
    /// The mDNS socket when mDNS is on, bound, joined and non-blocking.
    pub mdns: Option<std::net::UdpSocket>,
}

/// The wall-clock and monotonic time now.
pub fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Now::new(Instant::now(), unix_ms)
}

/// The node's secret key: 32 bytes in `data_dir/node.key` (mode 0600),
/// made from OS randomness on first start.
pub fn load_or_create_key(data_dir: &Path) -> Result<[u8; 32], AgentError> {
    let path = data_dir.join("node.key");
    let err = |source| AgentError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "node.key must hold 32 bytes",
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_bytes().map_err(err)?;
            write_key(data_dir, &key)?;
            Ok(key)
        }
        Err(e) => Err(err(e)),
    }
}

/// Creates the data directory `dir` if it is missing: mode 0700, since it
/// holds the node's secret key and its control socket. Its missing parents
/// are created with the usual mode (the umask's); a directory that exists
/// already is left as it is.
pub fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(dir) {
        // Made by someone else meanwhile: theirs to have set up.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        other => other,
    }
}

/// Takes the data directory's lock file (created mode 0600), so that no two agents (in this
/// process or another) use one directory: LMDB itself allows that across
/// processes. Held until the agent's loop ends.
fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, AgentError> {
    let path = data_dir.join("agent.lock");
    let err = |source| AgentError::DataDir {
        path: path.clone(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "another agent is using this data directory",
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
    }
}

/// Writes the key file (mode 0600) through a temporary file and a rename,
/// so that a crash leaves the old key or the new one, never half of one.
pub(crate) fn write_key(data_dir: &Path, key: &[u8; 32]) -> Result<(), AgentError> {
    let path = data_dir.join("node.key");
    let tmp = data_dir.join("node.key.tmp");
    let err = |source| AgentError::DataDir {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(key).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(())
}

fn random_bytes() -> Result<[u8; 32], std::io::Error> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| std::io::Error::other("no OS randomness"))?;
    Ok(bytes)
}

impl Agent {
    /// Opens an agent without running it: creates (or opens) its data
    /// directory, takes its lock, loads its key and store (on the store's
    /// thread), binds its sockets and builds the node. Blocks while LMDB
    /// opens. A driver then runs [`Opened::node_loop`] on its runtime and
    /// awaits [`Agent::start_manager`]; `keynode_tokio::start` and
    /// `keynode_smol::start` do both.
    pub fn open(config: AgentConfig, sleep: Sleep) -> Result<Opened, AgentError> {
        create_data_dir(&config.data_dir).map_err(|source| AgentError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let lock = lock_data_dir(&config.data_dir)?;
        let secret = load_or_create_key(&config.data_dir)?;
        let socket = quic_socket(config.bind).map_err(|source| AgentError::Socket {
            addr: config.bind,
            source,
        })?;
        let local_addr = socket.local_addr().map_err(|source| AgentError::Socket {
            addr: config.bind,
            source,
        })?;
        let (events_tx, events_rx) = mpsc::unbounded();
        let store_path = config.data_dir.join("db");
        let options = StoreOptions::with_map_size(config.map_size);
        let (store, snapshot) = StoreThread::open(store_path, options, events_tx.clone())?;
        let start = now();
        let mdns_config = config.config.mdns.clone();
        let udp = Arc::new(UdpIo::new(&socket).map_err(|source| AgentError::Socket {
            addr: local_addr,
            source,
        })?);
        let mut net = config.net;
        net.mtu_discovery &= !udp.may_fragment();
        let mut node = Node::new(
            config.config,
            net,
            &secret,
            start,
            random_bytes().map_err(|source| AgentError::DataDir {
                path: config.data_dir.clone(),
                source,
            })?,
        )?;
        let node_id = node.node_id();
        node.set_max_segments(udp.max_segments());
        node.handle(start, DriverEvent::SnapshotLoaded(snapshot));
        let mdns = match &mdns_config {
            Some(m) => {
                let announced_ip = match local_addr.ip() {
                    ip if ip.is_unspecified() => std::net::IpAddr::V4(config.mdns_interface),
                    ip => ip,
                };
                node.set_announced_addresses(vec![SocketAddr::new(
                    announced_ip,
                    local_addr.port(),
                )]);
                Some(mdns_socket(m, config.mdns_interface).map_err(|source| {
                    AgentError::Socket {
                        addr: SocketAddr::new(config.mdns_interface.into(), m.port),
                        source,
                    }
                })?)
            }
            None => None,
        };
        let (calls_tx, calls_rx) = mpsc::unbounded();
        let shared = Shared::new(node, Readiness::new(config.max_queued_datagrams));
        let agent = Agent {
            calls: calls_tx,
            shared: shared.clone(),
            sleep,
            node_id: Arc::new(std::sync::Mutex::new(node_id)),
            local_addr,
            data_dir: Arc::new(config.data_dir.clone()),
        };
        Ok(Opened {
            agent,
            node_loop: AgentLoop::new(
                shared.clone(),
                store,
                lock,
                config.data_dir.clone(),
                events_tx,
                udp.clone(),
            ),
            inputs: Inputs::new(events_rx, calls_rx, shared),
            socket,
            udp,
            mdns,
        })
    }

    /// Starts the node manager (spec `start`): returns once it has started
    /// and its start batch is committed. Needs [`Opened::node_loop`] running.
    pub async fn start_manager(&self) -> Result<(), AgentError> {
        self.op(UserCall::Start).await.map(drop)
    }

    /// The node's NodeId (the current one, after a key renewal).
    pub fn node_id(&self) -> NodeId {
        match self.node_id.lock() {
            Ok(id) => *id,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Makes a new key (kept in the data directory, replacing the old one),
    /// moves every contact to its bucket under the new NodeId, and returns
    /// it. Working connections stay up until they close.
    pub async fn renew_key(&self) -> Result<NodeId, AgentError> {
        let secret = random_bytes().map_err(|source| AgentError::DataDir {
            path: self.data_dir.to_path_buf(),
            source,
        })?;
        let (tx, rx) = oneshot::channel();
        self.calls
            .unbounded_send(Call::Renew(Box::new(secret), tx))
            .map_err(|_| AgentError::Stopped)?;
        // The key file is written (and synced) on the store's thread, not
        // on the caller's: the handle never blocks an executor.
        let node_id = rx.await.map_err(|_| AgentError::Stopped)??;
        if let Ok(mut id) = self.node_id.lock() {
            *id = node_id;
        }
        Ok(node_id)
    }

    /// The socket address the agent listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    async fn op(&self, call: UserCall) -> Result<OpValue, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .unbounded_send(Call::Op(call, tx))
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)?
    }

    /// Reads the manager's state.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&NodeManager) -> T + Send + 'static,
    ) -> Result<T, AgentError> {
        let (tx, rx) = oneshot::channel();
        let call: ReadCall = Box::new(move |m| {
            let _ = tx.send(f(m));
        });
        self.calls
            .unbounded_send(Call::Read(call))
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)
    }

    /// Reads the net layer's state (connections, mDNS counters).
    pub async fn net_read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Result<T, AgentError> {
        let (tx, rx) = oneshot::channel();
        let call: NetReadCall = Box::new(move |n| {
            let _ = tx.send(f(n));
        });
        self.calls
            .unbounded_send(Call::NetRead(call))
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)
    }

    /// Spec `findNode`: where `node_id` was reached, or `None`.
    pub async fn find_node(
        &self,
        node_id: NodeId,
    ) -> Result<Option<(NodeAddress, NodeContactAddressData)>, AgentError> {
        found(
            self.op(UserCall::FindNode {
                node_id,
                options: FindOptions::default(),
            })
            .await?,
        )
    }

    /// Spec `findNodeByMDNS`: `node_id` found on the local network.
    pub async fn find_node_by_mdns(
        &self,
        node_id: NodeId,
    ) -> Result<Option<(NodeAddress, NodeContactAddressData)>, AgentError> {
        found(
            self.op(UserCall::FindNodeByMdns {
                node_id,
                options: FindOptions::default(),
            })
            .await?,
        )
    }

    /// Spec `queryMDNS`: the addresses at which `node_id` answered on the local network.
    pub async fn query_mdns(&self, node_id: NodeId) -> Result<Vec<SocketAddr>, AgentError> {
        match self
            .op(UserCall::QueryMdns {
                node_id,
                timeout: None,
            })
            .await?
        {
            OpValue::Addresses(a) => Ok(a),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Spec `pingNode`.
    pub async fn ping_node(
        &self,
        node_id: NodeId,
    ) -> Result<Option<(NodeAddress, NodeContactAddressData)>, AgentError> {
        found(
            self.op(UserCall::PingNode {
                node_id,
                options: FindOptions::default(),
            })
            .await?,
        )
    }

    /// Spec `pingNodeAddress`.
    pub async fn ping_node_address(
        &self,
        node_id: NodeId,
        address: NodeAddress,
    ) -> Result<bool, AgentError> {
        match self
            .op(UserCall::PingNodeAddress {
                node_id,
                address,
                connect_timeout: None,
            })
            .await?
        {
            OpValue::Reachable(r) => Ok(r),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Spec `setNode`.
    pub async fn set_node(
        &self,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
        block: bool,
        force: bool,
    ) -> Result<(), AgentError> {
        self.op(UserCall::SetNode {
            node_id,
            address,
            data,
            block,
            force,
            connect_timeout: None,
        })
        .await
        .map(drop)
    }

    /// Spec `unsetNode`.
    pub async fn unset_node(&self, node_id: NodeId) -> Result<(), AgentError> {
        self.op(UserCall::UnsetNode { node_id }).await.map(drop)
    }

    /// Spec `getBucket`.
    pub async fn get_bucket(&self, bucket: BucketIndex) -> Result<NodeBucket, AgentError> {
        self.read(move |m| m.get_bucket(bucket)).await
    }

    /// Every contact of the graph, by bucket.
    pub async fn get_all(&self) -> Result<Vec<(BucketIndex, NodeBucket)>, AgentError> {
        self.read(|m| {
            let graph = m.graph();
            graph
                .bucket_sizes()
                .map(|(b, _)| (b, graph.get_bucket(b)))
                .collect()
        })
        .await
    }

    /// The connections up: id, peer, address.
    pub async fn connections(&self) -> Result<Vec<(ConnId, NodeId, SocketAddr)>, AgentError> {
        self.read(|m| m.connections()).await
    }

    /// Whether the agent has joined the network through its seed nodes,
    /// how its background syncs fared, and how many contacts and
    /// connections it holds.
    pub async fn status(&self) -> Result<crate::AgentStatus, AgentError> {
        self.read(|m| crate::AgentStatus {
            join: m.join_status(),
            contacts: m.graph().len(),
            connections: m.connections().len(),
        })
        .await
    }

    /// Spec `claimNode`.
    pub async fn claim_node(&self, node_id: NodeId) -> Result<(), AgentError> {
        self.op(UserCall::ClaimNode {
            node_id,
            timeout: None,
        })
        .await
        .map(drop)
    }

    /// Allows `node_id` to claim this node.
    pub async fn allow_claims_from(
        &self,
        node_id: NodeId,
        allowed: bool,
    ) -> Result<(), AgentError> {
        self.op(UserCall::AllowClaimsFrom { node_id, allowed })
            .await
            .map(drop)
    }

    /// Spec `requestChainData`: the claims that verified.
    pub async fn request_chain_data(
        &self,
        node_id: NodeId,
        from: Option<ClaimId>,
    ) -> Result<Vec<SignedClaim>, AgentError> {
        match self
            .op(UserCall::RequestChainData {
                node_id,
                from,
                limit: None,
            })
            .await?
        {
            OpValue::Chain { claims, .. } => Ok(claims),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The own sigchain.
    pub async fn sigchain(&self) -> Result<Vec<SignedClaim>, AgentError> {
        self.read(|m| m.sigchain()).await
    }

    /// Spec `syncNodeGraph`.
    pub async fn sync_node_graph(
        &self,
        seeds: SeedNodes,
        blocking: bool,
    ) -> Result<(), AgentError> {
        self.op(UserCall::SyncNodeGraph {
            seeds,
            connect_timeout: None,
            blocking,
        })
        .await
        .map(drop)
    }

    /// Spec `acquireConnection`: a use of a connection to `node_id`,
    /// released when the returned value (and every clone) is dropped.
    pub async fn acquire_connection(&self, node_id: NodeId) -> Result<Connection, AgentError> {
        match self
            .op(UserCall::AcquireConnection {
                node_id,
                timeout: None,
            })
            .await?
        {
            OpValue::Connection { lease, conn, peer } => Ok(Connection(Arc::new(Lease {
                agent: self.clone(),
                lease,
                conn,
                peer,
            }))),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Spec `withConnF`: runs `f` on a pooled connection to `node_id`, on
    /// which it opens streams of its protocols; the connection is released
    /// when `f` ends, fails, is dropped, or its time runs out.
    pub async fn with_conn_f<T, F, Fut>(
        &self,
        node_id: NodeId,
        options: WithConnOptions,
        f: F,
    ) -> Result<T, AgentError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, AgentError>>,
    {
        let run = async {
            let conn = self.acquire_connection(node_id).await?;
            f(conn).await
        };
        match options.timeout {
            None => run.await,
            Some(limit) => {
                let run = std::pin::pin!(run);
                match futures::future::select(run, (self.sleep)(limit)).await {
                    futures::future::Either::Left((result, _)) => result,
                    futures::future::Either::Right(((), _)) => Err(AgentError::Timeout(limit)),
                }
            }
        }
    }

    /// Spec `withConnG`: the items `g` produces from streams on a pooled
    /// connection to `node_id`. The connection is released when the stream
    /// ends or is dropped; when its time runs out the stream yields
    /// `Err(Timeout)` and ends.
    pub async fn with_conn_g<T, G, S>(
        &self,
        node_id: NodeId,
        options: WithConnOptions,
        g: G,
    ) -> Result<impl futures::Stream<Item = Result<T, AgentError>> + use<T, G, S>, AgentError>
    where
        G: FnOnce(Connection) -> S,
        S: futures::Stream<Item = T>,
    {
        let deadline = options.timeout.map(|limit| (limit, (self.sleep)(limit)));
        let conn = match &deadline {
            None => self.acquire_connection(node_id).await?,
            Some((limit, _)) => {
                let acquire = std::pin::pin!(self.acquire_connection(node_id));
                match futures::future::select(acquire, (self.sleep)(*limit)).await {
                    futures::future::Either::Left((conn, _)) => conn?,
                    futures::future::Either::Right(((), _)) => {
                        return Err(AgentError::Timeout(*limit));
                    }
                }
            }
        };
        Ok(crate::deadline::Deadline::new(Box::pin(g(conn)), deadline))
    }

    /// Listens on `protocol`: its inbound streams (and datagrams) are
    /// accepted while the returned [`Listener`] lives; dropping it stops.
    pub fn accept(
        &self,
        protocol: Protocol,
        options: ProtocolOptions,
    ) -> Result<Listener, AgentError> {
        let mut state = self.shared.lock();
        state.node.register_protocol(protocol.clone(), options)?;
        state
            .ready
            .listeners
            .insert(protocol.clone(), ListenerQueue::default());
        Ok(Listener::new(self.shared.clone(), protocol))
    }

    /// The node's admission counters and connection-table sizes (see
    /// [`keynode_core::net::AdmissionStats`]).
    pub fn admission_stats(&self) -> keynode_core::net::AdmissionStats {
        self.shared.lock().node.admission_stats()
    }

    /// The sizes of the stream tables (the node's and the agent's), to
    /// check that streams leave them when they end.
    pub fn stream_tables(&self) -> (StreamTables, ReadinessTables) {
        let state = self.shared.lock();
        (state.node.stream_tables(), state.ready.tables())
    }

    /// Stops the node: operations end, the store is flushed and closed.
    pub async fn stop(&self) -> Result<(), AgentError> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .unbounded_send(Call::Stop(tx))
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)
    }
}

/// A use of a connection (from `acquire_connection`), on which streams and
/// datagrams of any protocol are opened. Cheap to clone; the use is
/// released when the last clone is dropped. Its streams hold uses of their
/// own: the connection stays up while any is open.
#[derive(Clone)]
pub struct Connection(Arc<Lease>);

struct Lease {
    agent: Agent,
    lease: LeaseId,
    conn: ConnId,
    peer: NodeId,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = self.agent.calls.unbounded_send(Call::Release(self.lease));
    }
}

impl Connection {
    /// The peer.
    pub fn peer(&self) -> NodeId {
        self.0.peer
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.0.conn
    }

    /// Sends a keynode request on this connection and waits for the response.
    pub async fn request(&self, body: Request) -> Result<Response, AgentError> {
        let conn = self.0.conn;
        match self.0.agent.op(UserCall::Request { conn, body }).await? {
            OpValue::Response(r) => Ok(r),
            other => Err(AgentError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Opens a bidirectional stream of `protocol`, waiting while the peer's
    /// limit of open streams is reached. Cancel-safe.
    pub async fn open_bi(
        &self,
        protocol: &Protocol,
    ) -> Result<(SendStream, RecvStream), AgentError> {
        let stream = self.open(protocol, StreamDir::Bi).await?;
        let shared = &self.0.agent.shared;
        Ok((
            SendStream::new(shared.clone(), stream, self.0.peer),
            RecvStream::new(shared.clone(), stream, self.0.peer),
        ))
    }

    /// Opens a unidirectional stream of `protocol`, waiting while the
    /// peer's limit of open streams is reached. Cancel-safe.
    pub async fn open_uni(&self, protocol: &Protocol) -> Result<SendStream, AgentError> {
        let stream = self.open(protocol, StreamDir::Uni).await?;
        Ok(SendStream::new(
            self.0.agent.shared.clone(),
            stream,
            self.0.peer,
        ))
    }

    async fn open(
        &self,
        protocol: &Protocol,
        dir: StreamDir,
    ) -> Result<keynode_core::net::StreamHandle, AgentError> {
        let open = crate::open::Open::new(&self.0.agent.shared, self.0.conn, protocol, dir);
        Ok(open.await?)
    }

    /// Sends an unreliable datagram of `protocol`.
    pub fn send_datagram(&self, protocol: &Protocol, payload: &[u8]) -> Result<(), AgentError> {
        let mut state = self.0.agent.shared.lock();
        state
            .node
            .send_datagram(crate::now(), self.0.conn, protocol, payload)?;
        state.wake_loop();
        Ok(())
    }

    /// The largest datagram payload of `protocol` the connection takes now
    /// (`None`: the peer takes no datagrams).
    pub fn max_datagram_size(&self, protocol: &Protocol) -> Option<usize> {
        self.0
            .agent
            .shared
            .lock()
            .node
            .max_datagram_size(self.0.conn, protocol)
    }

    /// The next datagram of `protocol` from this connection's peer. Only
    /// datagrams of a protocol this agent listens on ([`Agent::accept`])
    /// are kept. Cancel-safe.
    pub async fn read_datagram(&self, protocol: &Protocol) -> Result<Bytes, AgentError> {
        let shared = &self.0.agent.shared;
        let conn = self.0.conn;
        let guard = crate::open::ForgetDatagramReader {
            shared,
            conn,
            protocol,
        };
        let result = std::future::poll_fn(|cx| {
            let mut state = shared.lock();
            if !state.node.is_registered(protocol) {
                return std::task::Poll::Ready(Err(AgentError::NotListening(protocol.clone())));
            }
            if state.node.connection_peer(conn).is_none() {
                return std::task::Poll::Ready(Err(StreamError::ConnectionLost(conn).into()));
            }
            match state.ready.take_datagram(conn, protocol, cx.waker()) {
                Some(bytes) => std::task::Poll::Ready(Ok(bytes)),
                None => std::task::Poll::Pending,
            }
        })
        .await;
        drop(guard);
        result
    }
}

fn found(value: OpValue) -> Result<Option<(NodeAddress, NodeContactAddressData)>, AgentError> {
    match value {
        OpValue::Found(f) => Ok(f),
        other => Err(AgentError::Unexpected(format!("{other:?}"))),
    }
}

/// How long a demo or test waits for one operation at most.
pub const OP_TIMEOUT: Duration = Duration::from_secs(60);
