//! [`Agent`]: the handle to a running node and the spec's methods on it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::channel::{mpsc, oneshot};
use keynode_core::claims::SignedClaim;
use keynode_core::net::{
    DriverEvent, NetConfig, Node, Protocol, ProtocolOptions, StreamDir, StreamError, StreamTables,
};
use keynode_core::wire::{Request, Response};
use keynode_core::{
    BucketIndex, Config, ConnId, LeaseId, NodeAddress, NodeBucket, NodeContactAddressData, NodeId,
    NodeManager, Now, OpError, SeedNodes, UserCall,
};
use keynode_store::StoreOptions;

use crate::call::{Call, Calls, CancelOnDrop};
use crate::error::AgentError;
use crate::listener::Listener;
use crate::node_loop::{AgentLoop, Inputs};
use crate::options::{
    ChainOptions, ClaimOptions, FindOptions, PingOptions, SetNodeOptions, SyncOptions,
};
use crate::readiness::{ListenerQueue, Readiness, ReadinessTables};
use crate::reply::{Found, Leased, Reply, Tx};
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
    /// Calls of the handles queued for the loop or running in the node at
    /// once; one more is refused with [`AgentError::Busy`]. Default 1024.
    pub max_queued_calls: usize,
    /// Events [`Agent::events`] holds for a subscriber that has not read
    /// them; a subscriber further behind is told how many it missed.
    /// Default 1024.
    pub max_buffered_events: usize,
    /// Store batches one LMDB write transaction commits together (group
    /// commit): what queued while the previous commit ran, up to this
    /// many. 1 commits each batch alone. Default 256.
    pub max_store_group: usize,
}

impl AgentConfig {
    /// An agent in `data_dir` bound to `bind`, with default settings.
    ///
    /// ```
    /// use keynode_agent::AgentConfig;
    ///
    /// let mut config = AgentConfig::new("/var/lib/keynode", "127.0.0.1:0".parse()?);
    /// assert!(config.net.exempt_loopback); // every peer on loopback shares one IP
    /// config.max_queued_calls = 64;
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
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
            max_queued_calls: 1024,
            max_buffered_events: 1024,
            max_store_group: 256,
        }
    }
}

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
    ///
    /// ```
    /// use std::time::Duration;
    /// use keynode_agent::WithConnOptions;
    ///
    /// let options = WithConnOptions::timeout(Duration::from_secs(10));
    /// assert_eq!(options.timeout, Some(Duration::from_secs(10)));
    /// assert_eq!(WithConnOptions::default().timeout, None); // no limit
    /// ```
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
        }
    }
}
/// A running keynode node: UDP socket, QUIC, LMDB, timers. Cheap to clone;
/// every clone talks to the same node.
#[derive(Clone)]
pub struct Agent {
    calls: Calls,
    pub(crate) shared: Shared,
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
pub(crate) fn now() -> Now {
    let unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    Now::new(Instant::now(), unix_ms)
}

/// The node's secret key: 32 bytes in `data_dir/node.key` (mode 0600),
/// made from OS randomness on first start.
///
/// ```
/// use keynode_agent::{create_data_dir, load_or_create_key};
///
/// let dir = std::env::temp_dir().join(format!("keynode-doc-key-{}", std::process::id()));
/// create_data_dir(&dir)?;
/// let key = load_or_create_key(&dir)?; // made on first use
/// assert_eq!(load_or_create_key(&dir)?, key); // then kept
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_or_create_key(data_dir: &Path) -> Result<[u8; 32], AgentError> {
    let path = data_dir.join("node.key");
    let err = |source| AgentError::data_dir(&path, source);
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
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// use keynode_agent::create_data_dir;
///
/// let base = std::env::temp_dir().join(format!("keynode-doc-dir-{}", std::process::id()));
/// let dir = base.join("node");
/// create_data_dir(&dir)?;
/// assert_eq!(std::fs::metadata(&dir)?.permissions().mode() & 0o777, 0o700);
/// create_data_dir(&dir)?; // there already: left as it is
/// # std::fs::remove_dir_all(&base)?;
/// # Ok::<(), std::io::Error>(())
/// ```
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
    let err = |source| AgentError::data_dir(&path, source);
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
    let err = |source| AgentError::data_dir(&path, source);
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
    ///
    /// ```no_run
    /// # fn f<R: keynode_agent::Runtime>() -> Result<(), keynode_agent::AgentError> {
    /// use std::sync::Arc;
    /// use keynode_agent::{Agent, AgentConfig, Opened, Sleep};
    ///
    /// let config = AgentConfig::new("/var/lib/keynode", ([0, 0, 0, 0], 1314).into());
    /// // The agent owns no timer: its runtime `R` lends one.
    /// let sleep: Sleep = Arc::new(|d| Box::pin(keynode_agent::sleep::<R>(d)));
    /// let Opened { agent, node_loop, socket, .. } = Agent::open(config, sleep)?;
    /// // ... register `socket` with R, run `node_loop` on it, `agent.start_manager()`.
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(config: AgentConfig, sleep: Sleep) -> Result<Opened, AgentError> {
        create_data_dir(&config.data_dir)
            .map_err(|source| AgentError::data_dir(&config.data_dir, source))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let secret = load_or_create_key(&config.data_dir)?;
        let socket =
            quic_socket(config.bind).map_err(|source| AgentError::socket(config.bind, source))?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| AgentError::socket(config.bind, source))?;
        let (events_tx, events_rx) = mpsc::unbounded();
        let store_path = config.data_dir.join("db");
        let options = StoreOptions::with_map_size(config.map_size);
        let (store, snapshot) = StoreThread::open(
            store_path,
            options,
            config.max_store_group.max(1),
            events_tx.clone(),
        )?;
        let start = now();
        let mdns_config = config.config.mdns.clone();
        let udp =
            Arc::new(UdpIo::new(&socket).map_err(|source| AgentError::socket(local_addr, source))?);
        let mut net = config.net;
        net.mtu_discovery &= !udp.may_fragment();
        let mut node = Node::new(
            config.config,
            net,
            &secret,
            start,
            random_bytes().map_err(|source| AgentError::data_dir(&config.data_dir, source))?,
        )?;
        let node_id = node.node_id();
        node.set_max_segments(udp.max_segments());
        node.set_local_addresses(keynode_core::nat::LocalAddresses::new(
            local_addr,
            crate::sockets::route_addresses(local_addr),
        ));
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
                    AgentError::socket(
                        SocketAddr::new(config.mdns_interface.into(), m.port),
                        source,
                    )
                })?)
            }
            None => None,
        };
        let (calls, calls_rx) = Calls::new(config.max_queued_calls);
        let shared = Shared::new(
            node,
            Readiness::new(config.max_queued_datagrams),
            crate::events::EventHub::new(config.max_buffered_events),
        );
        let agent = Agent {
            calls,
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
    ///
    /// ```no_run
    /// # async fn f(opened: keynode_agent::Opened) -> Result<(), keynode_agent::AgentError> {
    /// let keynode_agent::Opened { agent, node_loop, .. } = opened;
    /// // ... the driver runs `node_loop` on its runtime, then:
    /// agent.start_manager().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_manager(&self) -> Result<(), AgentError> {
        self.op(UserCall::Start, Reply::Unit, None).await
    }

    /// The node's NodeId (the current one, after a key renewal).
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// println!("I am {}", agent.node_id());
    /// # }
    /// ```
    pub fn node_id(&self) -> NodeId {
        match self.node_id.lock() {
            Ok(id) => *id,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Makes a new key (kept in the data directory, replacing the old one),
    /// moves every contact to its bucket under the new NodeId, and returns
    /// it. Working connections stay up until they close.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// let old = agent.node_id();
    /// let new = agent.renew_key().await?;
    /// assert_ne!(old, new);
    /// assert_eq!(agent.node_id(), new);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn renew_key(&self) -> Result<NodeId, AgentError> {
        let secret = random_bytes()
            .map_err(|source| AgentError::data_dir(self.data_dir.as_path(), source))?;
        let _slot = self.calls.slot()?;
        let (tx, rx) = oneshot::channel();
        self.calls.send(Call::Renew(Box::new(secret), tx))?;
        // The key file is written (and synced) on the store's thread, not
        // on the caller's: the handle never blocks an executor.
        let node_id = rx.await.map_err(|_| AgentError::Stopped)??;
        if let Ok(mut id) = self.node_id.lock() {
            *id = node_id;
        }
        Ok(node_id)
    }

    /// The socket address the agent listens on.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// // What another node puts in its seed-node list to join through this one.
    /// let address = keynode_core::NodeAddress::from(agent.local_addr());
    /// println!("{}@{address}", agent.node_id());
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The data directory.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// let key_file = agent.data_dir().join("node.key");
    /// # }
    /// ```
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs one operation: takes a slot of the call queue, sends the call
    /// with a reply channel of its type, and waits for its result or its
    /// `timeout`. Dropped (or timed out) first, it cancels the operation
    /// in the node.
    async fn op<T>(
        &self,
        call: UserCall,
        reply: fn(Tx<T>) -> Reply,
        timeout: Option<Duration>,
    ) -> Result<T, AgentError> {
        let slot = self.calls.slot()?;
        let id = self.calls.next_id();
        let (tx, rx) = oneshot::channel();
        self.calls.send(Call::Op {
            id,
            call,
            reply: reply(tx),
        })?;
        let cancel = CancelOnDrop::new(&self.calls, id);
        let result = match timeout {
            None => rx.await,
            Some(limit) => {
                match futures::future::select(rx, (self.sleep)(limit)).await {
                    futures::future::Either::Left((result, _)) => result,
                    // `cancel` drops armed: the node cancels the operation.
                    futures::future::Either::Right(((), _)) => {
                        return Err(AgentError::Timeout(limit));
                    }
                }
            }
        };
        cancel.disarm();
        drop(slot);
        match (result.map_err(|_| AgentError::Stopped)?, timeout) {
            // The node's deadline of the same call (a lookup's, a claim's).
            (Err(AgentError::Op(OpError::Timeout)), Some(limit)) => Err(AgentError::Timeout(limit)),
            (result, _) => result,
        }
    }

    /// Reads the manager's state under the node's lock; `Stopped` once
    /// the agent was stopped.
    fn manager<T>(&self, f: impl FnOnce(&NodeManager) -> T) -> Result<T, AgentError> {
        let state = self.shared.lock();
        if state.stopped {
            return Err(AgentError::Stopped);
        }
        Ok(f(state.node.manager_ref()))
    }

    /// The tasks the node has scheduled (bucket refreshes, the connection
    /// check), in key order: they are kept across restarts.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// use keynode_core::TaskKey;
    /// let tasks = agent.scheduled_tasks();
    /// let refreshes = tasks.iter().filter(|t| matches!(t, TaskKey::RefreshBucket(_)));
    /// println!("{} bucket refreshes scheduled", refreshes.count());
    /// # }
    /// ```
    pub fn scheduled_tasks(&self) -> Vec<keynode_core::TaskKey> {
        let state = self.shared.lock();
        state
            .node
            .manager_ref()
            .tasks()
            .map(|(key, _)| key)
            .collect()
    }

    /// mDNS's counters, when mDNS is on.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// if let Some(mdns) = agent.mdns_stats() {
    ///     println!("{} mDNS datagrams received", mdns.datagrams_received);
    /// }
    /// # }
    /// ```
    pub fn mdns_stats(&self) -> Option<keynode_core::net::mdns::MdnsStats> {
        self.shared.lock().node.mdns_stats()
    }

    /// The application streams' counters (streams opened, refused, ...).
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// let stats = agent.app_stats();
    /// println!("{} streams of unknown protocols refused", stats.refused_unknown_protocol);
    /// # }
    /// ```
    pub fn app_stats(&self) -> keynode_core::net::AppStats {
        self.shared.lock().node.app_stats()
    }

    /// Spec `findNode`: where `node_id` was reached, or `None`.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// use std::time::Duration;
    /// use keynode_agent::{AgentError, FindOptions};
    ///
    /// let options = FindOptions::default().with_timeout(Duration::from_secs(10));
    /// match agent.find_node(node_id, options).await {
    ///     Ok(Some((address, _))) => println!("{node_id} is at {address}"),
    ///     Ok(None) => println!("{node_id} was not found"),
    ///     Err(AgentError::Timeout(after)) => println!("gave up after {after:?}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn find_node(
        &self,
        node_id: NodeId,
        options: FindOptions,
    ) -> Result<Found, AgentError> {
        let call = UserCall::FindNode {
            node_id,
            options: options.lookup(),
        };
        self.op(call, Reply::Found, options.timeout).await
    }

    /// Spec `findNodeByMDNS`: `node_id` found on the local network.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId, cancel: futures::channel::oneshot::Receiver<()>) -> Result<(), keynode_agent::AgentError> {
    /// use futures::future::{Either, select};
    /// use keynode_agent::FindOptions;
    ///
    /// let lookup = Box::pin(agent.find_node_by_mdns(node_id, FindOptions::default()));
    /// match select(lookup, cancel).await {
    ///     Either::Left((found, _)) => println!("{:?}", found?),
    ///     // The lookup's future is dropped here: that cancels it in the node.
    ///     Either::Right((_, lookup)) => drop(lookup),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn find_node_by_mdns(
        &self,
        node_id: NodeId,
        options: FindOptions,
    ) -> Result<Found, AgentError> {
        let call = UserCall::FindNodeByMdns {
            node_id,
            options: options.lookup(),
        };
        self.op(call, Reply::Found, options.timeout).await
    }

    /// Spec `queryMDNS`: the addresses at which `node_id` answered on the
    /// local network within the config's mDNS time.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// for address in agent.query_mdns(node_id).await? {
    ///     println!("{node_id} answered from {address}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn query_mdns(&self, node_id: NodeId) -> Result<Vec<SocketAddr>, AgentError> {
        let call = UserCall::QueryMdns {
            node_id,
            timeout: None,
        };
        self.op(call, Reply::Addresses, None).await
    }

    /// Spec `pingNode`: finds `node_id` and checks that it answers.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// use std::time::Duration;
    /// use keynode_agent::PingOptions;
    ///
    /// let options = PingOptions::default().with_timeout(Duration::from_secs(5));
    /// if let Some((address, _)) = agent.ping_node(node_id, options).await? {
    ///     println!("{node_id} answers at {address}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping_node(
        &self,
        node_id: NodeId,
        options: PingOptions,
    ) -> Result<Found, AgentError> {
        let call = UserCall::PingNode {
            node_id,
            options: keynode_core::FindOptions {
                timeout: options.timeout,
                ..keynode_core::FindOptions::default()
            },
        };
        self.op(call, Reply::Found, options.timeout).await
    }

    /// Spec `pingNodeAddress`: whether `node_id` answers at `address`.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_agent::PingOptions;
    /// use keynode_core::NodeAddress;
    ///
    /// let address = NodeAddress::from(std::net::SocketAddr::from(([192, 0, 2, 7], 1314)));
    /// let up = agent.ping_node_address(node_id, address, PingOptions::default()).await?;
    /// println!("{node_id} is {}", if up { "up" } else { "down" });
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping_node_address(
        &self,
        node_id: NodeId,
        address: NodeAddress,
        options: PingOptions,
    ) -> Result<bool, AgentError> {
        let call = UserCall::PingNodeAddress {
            node_id,
            address,
            connect_timeout: None,
        };
        self.op(call, Reply::Reachable, options.timeout).await
    }

    /// Spec `setNode`: adds or updates `node_id` in the graph.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_agent::SetNodeOptions;
    /// use keynode_core::{ContactMode, NodeAddress, NodeAddressScopes, NodeContactAddressData};
    ///
    /// let address = NodeAddress::from(std::net::SocketAddr::from(([192, 0, 2, 7], 1314)));
    /// let data = NodeContactAddressData {
    ///     mode: ContactMode::Direct,
    ///     connected_time: 1_700_000_000,
    ///     scopes: NodeAddressScopes::GLOBAL,
    /// };
    /// agent.set_node(node_id, address, data, SetNodeOptions::default().force(true)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_node(
        &self,
        node_id: NodeId,
        address: NodeAddress,
        data: NodeContactAddressData,
        options: SetNodeOptions,
    ) -> Result<(), AgentError> {
        let call = UserCall::SetNode {
            node_id,
            address,
            data,
            block: options.block,
            force: options.force,
            connect_timeout: None,
        };
        self.op(call, Reply::Unit, options.timeout).await
    }

    /// Spec `unsetNode`: removes `node_id` from the graph.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// agent.unset_node(node_id).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unset_node(&self, node_id: NodeId) -> Result<(), AgentError> {
        self.op(UserCall::UnsetNode { node_id }, Reply::Unit, None)
            .await
    }

    /// Spec `getBucket`.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_core::BucketIndex;
    ///
    /// for (node_id, contact) in agent.get_bucket(BucketIndex::FARTHEST).await? {
    ///     println!("{node_id}: {contact:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_bucket(&self, bucket: BucketIndex) -> Result<NodeBucket, AgentError> {
        self.manager(|m| m.get_bucket(bucket))
    }

    /// Every contact of the graph, by bucket.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// for (bucket, nodes) in agent.get_all().await? {
    ///     println!("bucket {}: {} nodes", bucket.get(), nodes.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_all(&self) -> Result<Vec<(BucketIndex, NodeBucket)>, AgentError> {
        self.manager(|m| {
            let graph = m.graph();
            graph
                .bucket_sizes()
                .map(|(b, _)| (b, graph.get_bucket(b)))
                .collect()
        })
    }

    /// The connections up: id, peer, address.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// for (conn, peer, address) in agent.connections().await? {
    ///     println!("{conn:?}: {peer} at {address}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connections(&self) -> Result<Vec<(ConnId, NodeId, SocketAddr)>, AgentError> {
        self.manager(|m| m.connections())
    }

    /// How each connection up was made: direct, hole-punched (`Signal`) or
    /// through a relay (whose remote address is a mapped one, `100::/64`).
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// for (conn, mode) in agent.connection_modes().await? {
    ///     println!("{conn:?}: {mode:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connection_modes(
        &self,
    ) -> Result<Vec<(ConnId, keynode_core::ContactMode)>, AgentError> {
        self.manager(|m| m.connection_modes())
    }

    /// Whether the agent has joined the network through its seed nodes,
    /// how its background syncs fared, how many contacts and connections
    /// it holds, its NAT class, and whether it relays (with its relay's
    /// counters and the reservations it holds).
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// let status = agent.status().await?;
    /// if !status.join.joined {
    ///     eprintln!("not joined: {:?}", status.join.last_error);
    /// }
    /// println!("{} contacts, {} connections", status.contacts, status.connections);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn status(&self) -> Result<crate::AgentStatus, AgentError> {
        let state = self.shared.lock();
        if state.stopped {
            return Err(AgentError::Stopped);
        }
        let m = state.node.manager_ref();
        Ok(crate::AgentStatus {
            join: m.join_status(),
            contacts: m.graph().len(),
            connections: m.connections().len(),
            observed_addresses: m.observed_addresses(),
            nat_class: m.nat_class(),
            relay: crate::RelayStatus::of(&state.node),
        })
    }

    /// Spec `claimNode`: links `node_id` and this node on both sigchains.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// use std::time::Duration;
    /// use keynode_agent::ClaimOptions;
    ///
    /// // `node_id` called `allow_claims_from(<this node's id>, true)` first.
    /// let options = ClaimOptions::default().with_timeout(Duration::from_secs(30));
    /// agent.claim_node(node_id, options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn claim_node(
        &self,
        node_id: NodeId,
        options: ClaimOptions,
    ) -> Result<(), AgentError> {
        let call = UserCall::ClaimNode {
            node_id,
            timeout: options.timeout,
        };
        self.op(call, Reply::Unit, options.timeout).await
    }

    /// Allows `node_id` to claim this node.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// agent.allow_claims_from(node_id, true).await?; // `node_id` may claim this node now
    /// # Ok(())
    /// # }
    /// ```
    pub async fn allow_claims_from(
        &self,
        node_id: NodeId,
        allowed: bool,
    ) -> Result<(), AgentError> {
        self.op(
            UserCall::AllowClaimsFrom { node_id, allowed },
            Reply::Unit,
            None,
        )
        .await
    }

    /// Spec `requestChainData`: the claims of `node_id`'s sigchain that
    /// verified.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_agent::ChainOptions;
    ///
    /// let claims = agent.request_chain_data(node_id, ChainOptions::default()).await?;
    /// println!("{node_id} has {} verified claims", claims.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request_chain_data(
        &self,
        node_id: NodeId,
        options: ChainOptions,
    ) -> Result<Vec<SignedClaim>, AgentError> {
        let call = UserCall::RequestChainData {
            node_id,
            from: options.from,
            limit: options.limit,
        };
        self.op(call, Reply::Chain, options.timeout).await
    }

    /// The own sigchain.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// let claims = agent.sigchain().await?;
    /// println!("{} claims on this node's sigchain", claims.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sigchain(&self) -> Result<Vec<SignedClaim>, AgentError> {
        self.manager(|m| m.sigchain())
    }

    /// Spec `syncNodeGraph`: joins the network through `seeds`.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), Box<dyn std::error::Error>> {
    /// use keynode_agent::SyncOptions;
    /// use keynode_core::SeedNodes;
    ///
    /// // `nodeid@host:port;nodeid@host:port`
    /// let seeds: SeedNodes = std::env::var("KEYNODE_SEED_NODES")?.parse()?;
    /// agent.sync_node_graph(seeds, SyncOptions::default().blocking(true)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sync_node_graph(
        &self,
        seeds: SeedNodes,
        options: SyncOptions,
    ) -> Result<(), AgentError> {
        let call = UserCall::SyncNodeGraph {
            seeds,
            connect_timeout: options.connect_timeout,
            blocking: options.blocking,
        };
        self.op(call, Reply::Unit, options.timeout).await
    }

    /// Spec `acquireConnection`: a use of a connection to `node_id`,
    /// released when the returned value (and every clone) is dropped.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId) -> Result<(), keynode_agent::AgentError> {
    /// let conn = agent.acquire_connection(node_id).await?;
    /// assert_eq!(conn.peer(), node_id);
    /// drop(conn); // the use is released
    /// # Ok(())
    /// # }
    /// ```
    pub async fn acquire_connection(&self, node_id: NodeId) -> Result<Connection, AgentError> {
        let call = UserCall::AcquireConnection {
            node_id,
            timeout: None,
        };
        let Leased { lease, conn, peer } = self.op(call, Reply::Connection, None).await?;
        Ok(Connection(Arc::new(Lease {
            agent: self.clone(),
            lease,
            conn,
            peer,
        })))
    }

    /// Spec `withConnF`: runs `f` on a pooled connection to `node_id`, on
    /// which it opens streams of its protocols; the connection is released
    /// when `f` ends, fails, is dropped, or its time runs out.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId, protocol: keynode_agent::Protocol) -> Result<(), keynode_agent::AgentError> {
    /// use std::time::Duration;
    /// use keynode_agent::{AgentError, WithConnOptions};
    ///
    /// let options = WithConnOptions::timeout(Duration::from_secs(10));
    /// let reply = agent
    ///     .with_conn_f(node_id, options, |conn| async move {
    ///         let (mut send, mut recv) = conn.open_bi(&protocol).await?;
    ///         send.write_all(b"ping").await?;
    ///         send.finish()?;
    ///         Ok::<_, AgentError>(recv.read_chunk(1024).await?)
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, node_id: keynode_core::NodeId, protocol: keynode_agent::Protocol) -> Result<(), keynode_agent::AgentError> {
    /// use std::time::Duration;
    /// use futures::StreamExt;
    /// use keynode_agent::WithConnOptions;
    ///
    /// let options = WithConnOptions::timeout(Duration::from_secs(60));
    /// let mut datagrams = agent
    ///     .with_conn_g(node_id, options, move |conn| {
    ///         futures::stream::unfold(conn, move |conn| {
    ///             let protocol = protocol.clone();
    ///             async move { Some((conn.read_datagram(&protocol).await, conn)) }
    ///         })
    ///     })
    ///     .await?;
    /// while let Some(datagram) = datagrams.next().await {
    ///     println!("{:?}", datagram??); // outer: the time limit; inner: the read
    /// }
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) -> Result<(), Box<dyn std::error::Error>> {
    /// use keynode_agent::{Protocol, ProtocolOptions};
    ///
    /// let protocol = Protocol::try_from("myapp/echo/1")?;
    /// let listener = agent.accept(protocol, ProtocolOptions::default())?;
    /// // ... serve its streams; dropping `listener` stops accepting them.
    /// # Ok(())
    /// # }
    /// ```
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

    /// What the node and the agent hold for operations under way: to
    /// check that an ended, dropped or timed-out call leaves nothing
    /// behind.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// let left = agent.in_flight();
    /// println!("{} operations, {} leases", left.operations, left.leases);
    /// # }
    /// ```
    pub fn in_flight(&self) -> InFlight {
        let state = self.shared.lock();
        let manager = state.node.manager_ref().in_flight();
        InFlight {
            operations: manager.operations,
            leases: manager.leases,
            waits: manager.waits,
            requests: state.node.requests_in_flight(),
            calls: state.waiting_calls,
        }
    }

    /// The node's admission counters and connection-table sizes (see
    /// [`keynode_core::net::AdmissionStats`]).
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// let stats = agent.admission_stats();
    /// println!("{} handshakes refused", stats.refused_handshakes);
    /// # }
    /// ```
    pub fn admission_stats(&self) -> keynode_core::net::AdmissionStats {
        self.shared.lock().node.admission_stats()
    }

    /// The sizes of the stream tables (the node's and the agent's), to
    /// check that streams leave them when they end.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// let (node, handles) = agent.stream_tables();
    /// println!("{} streams open, {} readers waiting", node.streams, handles.readers);
    /// # }
    /// ```
    pub fn stream_tables(&self) -> (StreamTables, ReadinessTables) {
        let state = self.shared.lock();
        (state.node.stream_tables(), state.ready.tables())
    }

    /// Stops the node: operations end, the store is flushed and closed.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_agent::AgentError;
    ///
    /// agent.stop().await?;
    /// assert!(matches!(agent.status().await, Err(AgentError::Stopped)));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stop(&self) -> Result<(), AgentError> {
        let (tx, rx) = oneshot::channel();
        self.calls.send(Call::Stop(tx))?;
        rx.await.map_err(|_| AgentError::Stopped)
    }
}

/// What an agent holds for operations under way ([`Agent::in_flight`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlight {
    /// Operations in flight in the node, the callers' and internal ones.
    pub operations: usize,
    /// Uses of connections handed out and not released.
    pub leases: usize,
    /// Answers the node awaits (connection attempts, requests, queries,
    /// store batches). One of a cancelled operation stays until its
    /// answer or its own timeout.
    pub waits: usize,
    /// Requests sent on connections and not answered yet.
    pub requests: usize,
    /// Calls of the handles waiting for their result in the loop.
    pub calls: usize,
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
        let _ = self.agent.calls.send(Call::Release(self.lease));
    }
}

impl Connection {
    /// The peer.
    ///
    /// ```no_run
    /// # fn f(conn: keynode_agent::Connection) {
    /// println!("connected to {}", conn.peer());
    /// # }
    /// ```
    pub fn peer(&self) -> NodeId {
        self.0.peer
    }

    /// The connection's id.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, conn: keynode_agent::Connection) -> Result<(), keynode_agent::AgentError> {
    /// let up = agent.connections().await?;
    /// assert!(up.iter().any(|(id, _, _)| *id == conn.id()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn id(&self) -> ConnId {
        self.0.conn
    }

    /// Sends a keynode request on this connection and waits for the response.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, conn: keynode_agent::Connection) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_core::wire::{Request, Response};
    ///
    /// let target = agent.node_id();
    /// match conn.request(Request::ClosestNodes { target }).await? {
    ///     Response::ClosestNodes { active, .. } => println!("{} nodes near", active.len()),
    ///     other => println!("unexpected: {other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(&self, body: Request) -> Result<Response, AgentError> {
        let conn = self.0.conn;
        let call = UserCall::Request { conn, body };
        self.0.agent.op(call, Reply::Response, None).await
    }

    /// Opens a bidirectional stream of `protocol`, waiting while the peer's
    /// limit of open streams is reached. Cancel-safe.
    ///
    /// ```no_run
    /// # async fn f(conn: keynode_agent::Connection, protocol: keynode_agent::Protocol) -> Result<(), Box<dyn std::error::Error>> {
    /// let (mut send, mut recv) = conn.open_bi(&protocol).await?;
    /// send.write_all(b"hello").await?;
    /// send.finish()?;
    /// let reply = recv.read_to_end(64 * 1024).await?;
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # async fn f(conn: keynode_agent::Connection, protocol: keynode_agent::Protocol) -> Result<(), keynode_agent::AgentError> {
    /// let mut send = conn.open_uni(&protocol).await?;
    /// send.write_all(b"a log line\n").await?;
    /// drop(send); // finishes the stream
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # async fn f(conn: keynode_agent::Connection, protocol: keynode_agent::Protocol) -> Result<(), keynode_agent::AgentError> {
    /// conn.send_datagram(&protocol, b"ping")?; // may be lost: nothing is resent
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # async fn f(conn: keynode_agent::Connection, protocol: keynode_agent::Protocol) -> Result<(), keynode_agent::AgentError> {
    /// let payload = vec![0u8; 1500];
    /// match conn.max_datagram_size(&protocol) {
    ///     Some(max) if payload.len() <= max => conn.send_datagram(&protocol, &payload)?,
    ///     // Too big for a datagram (or none taken): a stream carries it.
    ///     _ => conn.open_uni(&protocol).await?.write_all(&payload).await?,
    /// }
    /// # Ok(())
    /// # }
    /// ```
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
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent, conn: keynode_agent::Connection, protocol: keynode_agent::Protocol) -> Result<(), keynode_agent::AgentError> {
    /// use keynode_agent::ProtocolOptions;
    ///
    /// // Datagrams of `protocol` are kept only while it is listened on.
    /// let _listener = agent.accept(protocol.clone(), ProtocolOptions::default())?;
    /// let datagram = conn.read_datagram(&protocol).await?;
    /// println!("{} bytes from {}", datagram.len(), conn.peer());
    /// # Ok(())
    /// # }
    /// ```
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
