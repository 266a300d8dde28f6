//! Control of a running agent over a Unix socket.
//!
//! `keynode agent start` listens on `control.sock` in its data directory
//! (mode 0600: only the owner may connect). The protocol is one JSON
//! [`Request`] per line, answered by one JSON [`Response`] per line, in
//! order; a connection may carry any number of requests. A line longer than
//! [`MAX_REQUEST_SIZE`] bytes, a line that is not a request, or a request
//! that fails gets an error response; the connection stays usable.
//!
//! ```text
//! > {"op":"set_node","node_id":"v...","address":"127.0.0.1:1314"}
//! < {"ok":{"reply":"done"}}
//! > {"op":"find_node","node_id":"v..."}
//! < {"ok":{"reply":"found","node_id":"v...","address":{"address":"127.0.0.1:1314",...}}}
//! > nonsense
//! < {"error":{"kind":"bad_request","message":"expected value at line 1 column 1"}}
//! ```
//!
//! The server side is [`ControlServer`]; [`Client`] is the other end, used
//! by the `keynode nodes ...` and `keynode keys ...` commands.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use keynode_core::claims::{ClaimBody, SignedClaim};
use keynode_core::{
    ContactMode, NodeAddress, NodeAddressScopes, NodeContact, NodeContactAddressData, NodeId,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{Agent, AgentError};

/// The socket's file name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest request line accepted, in bytes (without the newline).
pub const MAX_REQUEST_SIZE: usize = 64 * 1024;

/// The longest response line a [`Client`] accepts, in bytes.
pub const MAX_RESPONSE_SIZE: usize = 64 * 1024 * 1024;

/// Connections served at once; more are answered with [`ErrorKind::Busy`]
/// and closed.
pub const MAX_CLIENTS: usize = 64;

/// The control socket of the agent in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A command for the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The agent's NodeId, address and data directory.
    Status,
    /// Spec `setNode`: adds or updates a contact (mode direct, connected now,
    /// global scope).
    SetNode {
        /// The node.
        node_id: NodeId,
        /// Where it is: `host:port`.
        #[serde(with = "as_text")]
        address: NodeAddress,
        /// Evict the oldest contact of a full bucket without a ping.
        #[serde(default = "yes")]
        force: bool,
        /// Wait for a full bucket's garbage collection.
        #[serde(default)]
        block: bool,
    },
    /// Spec `findNode`.
    FindNode {
        /// The node to find.
        node_id: NodeId,
    },
    /// Spec `pingNode`.
    PingNode {
        /// The node to ping.
        node_id: NodeId,
    },
    /// Every contact of the node graph.
    GetAll,
    /// The connections up.
    Connections,
    /// Spec `claimNode`: links this node and `node_id` (which must allow it).
    ClaimNode {
        /// The node to claim.
        node_id: NodeId,
    },
    /// Allows (or stops allowing) `node_id` to claim this node.
    AllowClaims {
        /// The node.
        node_id: NodeId,
        /// Allow (default) or revoke.
        #[serde(default = "yes")]
        allowed: bool,
    },
    /// Spec `requestChainData` from `node_id`, or the own sigchain when
    /// `node_id` is absent (or is this node).
    Chain {
        /// Whose chain.
        #[serde(default)]
        node_id: Option<NodeId>,
    },
    /// A new key: the agent's NodeId changes.
    RenewKey,
}

fn yes() -> bool {
    true
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// The request succeeded.
    Ok(Reply),
    /// It did not.
    Error(ControlError),
}

/// What a successful request returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// For [`Request::Status`].
    Status {
        /// The agent's NodeId.
        node_id: NodeId,
        /// Its UDP address.
        address: SocketAddr,
        /// Its data directory.
        data_dir: PathBuf,
    },
    /// The request was carried out (set, allow, claim).
    Done,
    /// For [`Request::FindNode`] and [`Request::PingNode`]: where the node
    /// was reached, or `None`.
    Found {
        /// The node looked for.
        node_id: NodeId,
        /// Where it was reached.
        address: Option<AddressInfo>,
    },
    /// For [`Request::GetAll`]: the non-empty buckets, closest first.
    Contacts {
        /// The buckets.
        buckets: Vec<BucketInfo>,
    },
    /// For [`Request::Connections`].
    Connections {
        /// The connections.
        connections: Vec<ConnectionInfo>,
    },
    /// For [`Request::Chain`]: the claims (verified, for another node's).
    Chain {
        /// Whose chain.
        node_id: NodeId,
        /// Its claims, in chain order.
        claims: Vec<ClaimInfo>,
    },
    /// For [`Request::RenewKey`].
    KeyRenewed {
        /// The NodeId before.
        old_node_id: NodeId,
        /// The NodeId now.
        node_id: NodeId,
    },
}

/// One address of a contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressInfo {
    /// `host:port`.
    #[serde(with = "as_text")]
    pub address: NodeAddress,
    /// How the connection was made.
    pub mode: ContactMode,
    /// When the node was last connected there, Unix seconds.
    pub connected_time: u64,
    /// Where the address is valid.
    pub scopes: NodeAddressScopes,
}

impl AddressInfo {
    fn new(address: &NodeAddress, data: &NodeContactAddressData) -> Self {
        Self {
            address: address.clone(),
            mode: data.mode,
            connected_time: data.connected_time,
            scopes: data.scopes,
        }
    }
}

/// A contact of the node graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactInfo {
    /// The node.
    pub node_id: NodeId,
    /// Its addresses.
    pub addresses: Vec<AddressInfo>,
}

impl ContactInfo {
    fn new(node_id: NodeId, contact: &NodeContact) -> Self {
        Self {
            node_id,
            addresses: contact
                .iter()
                .map(|(address, data)| AddressInfo::new(address, data))
                .collect(),
        }
    }
}

/// One bucket of the node graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// Its index: 0 the closest, 255 the farthest.
    pub bucket: u8,
    /// Its contacts, oldest first.
    pub contacts: Vec<ContactInfo>,
}

/// A connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// The connection's number.
    pub id: u64,
    /// The peer.
    pub node_id: NodeId,
    /// Its address.
    pub remote: SocketAddr,
}

/// A claim of a sigchain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimInfo {
    /// Its id, hex.
    pub id: String,
    /// Its position in the chain, from 0.
    pub seq: u64,
    /// The id of the claim before it, hex.
    pub prev_claim_id: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// What it asserts.
    pub body: ClaimBodyInfo,
    /// The nodes that signed it.
    pub signed_by: Vec<NodeId>,
}

/// What a claim asserts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClaimBodyInfo {
    /// `issuer` and `subject` are one gestalt.
    LinkNode {
        /// The node whose chain holds the claim.
        issuer: NodeId,
        /// The other node.
        subject: NodeId,
    },
}

impl ClaimInfo {
    /// The readable form of a signed claim.
    pub fn new(signed: &SignedClaim) -> Result<Self, String> {
        let claim = signed.decode().map_err(|e| e.to_string())?;
        let body = match claim.body {
            ClaimBody::LinkNode { iss, sub } => ClaimBodyInfo::LinkNode {
                issuer: iss,
                subject: sub,
            },
        };
        Ok(Self {
            id: claim.id.to_string(),
            seq: claim.seq,
            prev_claim_id: claim.prev_claim_id.map(|id| id.to_string()),
            iat: claim.iat,
            body,
            signed_by: signed.signatures.iter().map(|(id, _)| *id).collect(),
        })
    }
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ControlError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
}

impl ControlError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// The kinds of [`ControlError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line is not a valid request.
    BadRequest,
    /// The line is longer than [`MAX_REQUEST_SIZE`].
    TooLarge,
    /// Too many connections at once.
    Busy,
    /// The node manager refused the call or the operation failed.
    Failed,
    /// The agent is stopping.
    Stopped,
    /// Anything else (a bug).
    Internal,
}

impl From<AgentError> for ControlError {
    fn from(e: AgentError) -> Self {
        let kind = match e {
            AgentError::Stopped => ErrorKind::Stopped,
            AgentError::Unexpected(_) => ErrorKind::Internal,
            _ => ErrorKind::Failed,
        };
        Self::new(kind, e.to_string())
    }
}

/// Serde through `Display` and `FromStr`.
mod as_text {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Display, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Carries out one request on `agent`.
pub async fn handle(agent: &Agent, request: Request) -> Response {
    match dispatch(agent, request).await {
        Ok(reply) => Response::Ok(reply),
        Err(e) => Response::Error(e),
    }
}

/// Parses one request line and carries it out.
pub async fn handle_line(agent: &Agent, line: &[u8]) -> Response {
    match serde_json::from_slice::<Request>(line) {
        Ok(request) => handle(agent, request).await,
        Err(e) => Response::Error(ControlError::new(ErrorKind::BadRequest, e.to_string())),
    }
}

async fn dispatch(agent: &Agent, request: Request) -> Result<Reply, ControlError> {
    Ok(match request {
        Request::Status => Reply::Status {
            node_id: agent.node_id(),
            address: agent.local_addr(),
            data_dir: agent.data_dir().to_path_buf(),
        },
        Request::SetNode {
            node_id,
            address,
            force,
            block,
        } => {
            let data = NodeContactAddressData {
                mode: ContactMode::Direct,
                connected_time: crate::now().unix_secs(),
                scopes: NodeAddressScopes::GLOBAL,
            };
            agent.set_node(node_id, address, data, block, force).await?;
            Reply::Done
        }
        Request::FindNode { node_id } => Reply::Found {
            node_id,
            address: agent
                .find_node(node_id)
                .await?
                .map(|(address, data)| AddressInfo::new(&address, &data)),
        },
        Request::PingNode { node_id } => Reply::Found {
            node_id,
            address: agent
                .ping_node(node_id)
                .await?
                .map(|(address, data)| AddressInfo::new(&address, &data)),
        },
        Request::GetAll => Reply::Contacts {
            buckets: agent
                .get_all()
                .await?
                .into_iter()
                .filter(|(_, contacts)| !contacts.is_empty())
                .map(|(bucket, contacts)| BucketInfo {
                    bucket: bucket.get(),
                    contacts: contacts
                        .iter()
                        .map(|(id, contact)| ContactInfo::new(*id, contact))
                        .collect(),
                })
                .collect(),
        },
        Request::Connections => Reply::Connections {
            connections: agent
                .connections()
                .await?
                .into_iter()
                .map(|(conn, node_id, remote)| ConnectionInfo {
                    id: conn.0,
                    node_id,
                    remote,
                })
                .collect(),
        },
        Request::ClaimNode { node_id } => {
            agent.claim_node(node_id).await?;
            Reply::Done
        }
        Request::AllowClaims { node_id, allowed } => {
            agent.allow_claims_from(node_id, allowed).await?;
            Reply::Done
        }
        Request::Chain { node_id } => {
            let own = agent.node_id();
            let (node_id, claims) = match node_id {
                Some(id) if id != own => (id, agent.request_chain_data(id, None).await?),
                _ => (own, agent.sigchain().await?),
            };
            let claims = claims
                .iter()
                .map(ClaimInfo::new)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ControlError::new(ErrorKind::Internal, e))?;
            Reply::Chain { node_id, claims }
        }
        Request::RenewKey => {
            let old_node_id = agent.node_id();
            let node_id = agent.renew_key().await?;
            Reply::KeyRenewed {
                old_node_id,
                node_id,
            }
        }
    })
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another agent answers on the socket.
    #[error("an agent is already running in {0} (its control.sock answers)")]
    AlreadyRunning(PathBuf),
    /// The socket could not be made.
    #[error("control socket {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The control socket of an agent: bound, not yet serving.
pub struct ControlSocket {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `control.sock` in `data_dir` (created if missing), mode 0600.
    ///
    /// Fails if an agent already answers there; a socket left by an agent
    /// that died is replaced. The socket is bound under a temporary name,
    /// restricted to the owner, then renamed into place, so `control.sock`
    /// never exists with wider permissions.
    pub fn bind(data_dir: &Path) -> Result<Self, BindError> {
        let path = socket_path(data_dir);
        let io_err = |source| BindError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => return Err(BindError::AlreadyRunning(data_dir.to_path_buf())),
            // Nothing there, or a socket nobody listens on: ours to take.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => return Err(io_err(e)),
        }
        let tmp = data_dir.join(format!("{SOCKET_NAME}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io_err)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .and_then(|()| listener.set_nonblocking(true));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(e));
        }
        Ok(Self { listener, path })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves requests for `agent` until [`ControlServer::shutdown`].
    /// Must be called within a tokio runtime.
    pub fn serve(self, agent: Agent) -> Result<ControlServer, BindError> {
        let ControlSocket { listener, path } = self;
        let listener = match UnixListener::from_std(listener) {
            Ok(listener) => listener,
            Err(source) => {
                let _ = std::fs::remove_file(&path);
                return Err(BindError::Io { path, source });
            }
        };
        let task = tokio::spawn(accept_loop(listener, agent));
        Ok(ControlServer {
            path,
            task: Some(task),
        })
    }

    /// Removes the socket without serving.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A control socket being served.
pub struct ControlServer {
    path: PathBuf,
    task: Option<JoinHandle<()>>,
}

impl ControlServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting connections and removes the socket file. Requests
    /// already running go on until the agent stops.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.close();
    }
}

async fn accept_loop(listener: UnixListener, agent: Agent) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!("control socket: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(stream, &agent).await {
                        tracing::debug!("control connection ended: {e}");
                    }
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let busy = Response::Error(ControlError::new(
                        ErrorKind::Busy,
                        format!("more than {MAX_CLIENTS} control connections at once"),
                    ));
                    let _ = write_response(&mut stream, &busy).await;
                });
            }
        }
    }
}

async fn serve_connection(stream: UnixStream, agent: &Agent) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        let response = match read_line(&mut reader, &mut line, MAX_REQUEST_SIZE).await? {
            Line::End => return Ok(()),
            Line::TooLong => Response::Error(ControlError::new(
                ErrorKind::TooLarge,
                format!("request longer than {MAX_REQUEST_SIZE} bytes"),
            )),
            Line::Complete => handle_line(agent, &line).await,
        };
        write_response(&mut write, &response).await?;
    }
}

async fn write_response<W: AsyncWriteExt + Unpin>(
    write: &mut W,
    response: &Response,
) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.flush().await
}

/// What [`read_line`] read.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (without its newline) is in the buffer. At the end of the
    /// stream, the last bytes count as a line even without a newline.
    Complete,
    /// The line was longer than the limit; it was read and dropped.
    TooLong,
    /// The stream ended.
    End,
}

/// Reads one line into `buf`, holding at most `max` bytes of it.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::End,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (available.get(..i).unwrap_or_default(), i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// Why a [`Client`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket in the data directory.
    #[error("no agent running in {} (control.sock not found)", .0.display())]
    NotRunning(PathBuf),
    /// A socket nobody listens on: the agent died.
    #[error(
        "no agent running in {} (control.sock refuses connections; the agent is gone)",
        .0.display()
    )]
    Stale(PathBuf),
    /// The socket could not be used.
    #[error("control socket {}: {source}", .path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The agent closed the connection before answering.
    #[error("the agent in {} closed the connection without answering", .0.display())]
    Closed(PathBuf),
    /// The answer is not a response.
    #[error("the agent in {} sent an invalid response: {detail}", .dir.display())]
    Protocol {
        /// The data directory.
        dir: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// A connection to the control socket of an agent.
pub struct Client {
    dir: PathBuf,
    path: PathBuf,
    stream: BufReader<UnixStream>,
    line: Vec<u8>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("path", &self.path).finish()
    }
}

impl Client {
    /// Connects to the agent running in `data_dir`.
    pub async fn connect(data_dir: &Path) -> Result<Self, ClientError> {
        let dir = data_dir.to_path_buf();
        let path = socket_path(data_dir);
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ClientError::NotRunning(dir.clone()),
                io::ErrorKind::ConnectionRefused => ClientError::Stale(dir.clone()),
                _ => ClientError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
        Ok(Self {
            dir,
            path,
            stream: BufReader::new(stream),
            line: Vec::new(),
        })
    }

    /// Sends `request` and waits for its response.
    pub async fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let io_err = |source| ClientError::Io {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec(request).map_err(|e| io_err(io::Error::other(e)))?;
        bytes.push(b'\n');
        let stream = self.stream.get_mut();
        stream.write_all(&bytes).await.map_err(io_err)?;
        stream.flush().await.map_err(io_err)?;
        match read_line(&mut self.stream, &mut self.line, MAX_RESPONSE_SIZE)
            .await
            .map_err(io_err)?
        {
            Line::End => Err(ClientError::Closed(self.dir.clone())),
            Line::TooLong => Err(ClientError::Protocol {
                dir: self.dir.clone(),
                detail: format!("response longer than {MAX_RESPONSE_SIZE} bytes"),
            }),
            Line::Complete => {
                serde_json::from_slice(&self.line).map_err(|e| ClientError::Protocol {
                    dir: self.dir.clone(),
                    detail: e.to_string(),
                })
            }
        }
    }
}

impl FromStr for Request {
    type Err = serde_json::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "v0000000000000000000000000000000000000000000000000000";

    #[test]
    fn requests_round_trip_through_their_json_form() {
        let id: NodeId = ID.parse().unwrap();
        let requests = [
            Request::Status,
            Request::SetNode {
                node_id: id,
                address: "127.0.0.1:1314".parse().unwrap(),
                force: true,
                block: false,
            },
            Request::FindNode { node_id: id },
            Request::PingNode { node_id: id },
            Request::GetAll,
            Request::Connections,
            Request::ClaimNode { node_id: id },
            Request::AllowClaims {
                node_id: id,
                allowed: false,
            },
            Request::Chain { node_id: None },
            Request::Chain { node_id: Some(id) },
            Request::RenewKey,
        ];
        for request in requests {
            let text = serde_json::to_string(&request).unwrap();
            assert!(!text.contains('\n'));
            assert_eq!(text.parse::<Request>().unwrap(), request, "{text}");
        }
    }

    #[test]
    fn the_documented_forms_parse() {
        let set: Request =
            format!(r#"{{"op":"set_node","node_id":"{ID}","address":"node.example:1314"}}"#)
                .parse()
                .unwrap();
        assert_eq!(
            set,
            Request::SetNode {
                node_id: ID.parse().unwrap(),
                address: "node.example:1314".parse().unwrap(),
                force: true,
                block: false,
            }
        );
        assert_eq!(
            r#"{"op":"chain"}"#.parse::<Request>().unwrap(),
            Request::Chain { node_id: None }
        );
        let done = serde_json::to_string(&Response::Ok(Reply::Done)).unwrap();
        assert_eq!(done, r#"{"ok":{"reply":"done"}}"#);
    }

    #[test]
    fn malformed_requests_are_refused() {
        for text in [
            "",
            "nonsense",
            "{}",
            r#"{"op":"launch"}"#,
            r#"{"op":"find_node"}"#,
            r#"{"op":"find_node","node_id":"nope"}"#,
            &format!(r#"{{"op":"allow_claims","node_id":"{ID}","allowd":false}}"#),
            &format!(r#"{{"op":"set_node","node_id":"{ID}","address":"no port"}}"#),
        ] {
            assert!(text.parse::<Request>().is_err(), "{text:?} parsed");
        }
    }

    #[tokio::test]
    async fn lines_are_bounded_and_a_long_one_is_skipped() {
        let input: &[u8] = b"short\n0123456789abc\nnext\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            match read_line(&mut reader, &mut buf, 10).await.unwrap() {
                Line::End => break,
                Line::TooLong => lines.push("<too long>".to_owned()),
                Line::Complete => lines.push(String::from_utf8(buf.clone()).unwrap()),
            }
        }
        assert_eq!(lines, ["short", "<too long>", "next", "last"]);
    }
}
