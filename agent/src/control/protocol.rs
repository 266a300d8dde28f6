//! The control protocol's types: a [`Request`] per line, a [`Response`]
//! per line, and the readable forms of what the agent returns. Only data
//! and its JSON form live here; nothing here touches a socket or an agent
//! (but [`ControlError`] converts from [`AgentError`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use keynode_core::claims::{ClaimBody, SignedClaim};
use keynode_core::nat::{NatClass, ObservedAddress};
use keynode_core::net::RelayServe;
use keynode_core::{
    ContactMode, NodeAddress, NodeAddressScopes, NodeContact, NodeContactAddressData, NodeId,
};
use serde::{Deserialize, Serialize};

use crate::{AgentError, RegisterError, StreamError};

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
    /// The agent's metrics in the Prometheus text exposition format
    /// ([`Agent::metrics_text`](crate::Agent::metrics_text)).
    Metrics,
    /// Listens on `protocol` and serves its first inbound stream as a pipe:
    /// answered by [`Reply::PipeListening`] at once, by [`Reply::PipeOpen`]
    /// when a peer opens the stream, then the connection is the pipe (the
    /// module docs say how). Only on the socket: [`handle`](super::handle)
    /// refuses it.
    PipeListen {
        /// The protocol's name.
        protocol: String,
    },
    /// Opens a bidirectional stream of `protocol` to `node_id` (found
    /// through the network) as a pipe: answered by [`Reply::PipeOpen`],
    /// then the connection is the pipe.
    PipeConnect {
        /// The node.
        node_id: NodeId,
        /// The protocol's name.
        protocol: String,
    },
}

impl Request {
    /// Whether the request turns its connection into a pipe.
    pub fn is_pipe(&self) -> bool {
        matches!(self, Self::PipeListen { .. } | Self::PipeConnect { .. })
    }
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
        /// Whether a sync reached a seed node.
        #[serde(default)]
        joined: bool,
        /// Contacts in its node graph.
        #[serde(default)]
        contacts: usize,
        /// Connections up.
        #[serde(default)]
        connections: usize,
        /// Background syncs that failed since the last that succeeded.
        #[serde(default)]
        failed_sync_attempts: u32,
        /// Why the last sync failed, if none succeeded since.
        #[serde(default)]
        last_sync_error: Option<String>,
        /// Milliseconds after the last failure the next sync runs, if one is scheduled.
        #[serde(default)]
        sync_retry_in_ms: Option<u64>,
        /// The addresses peers see the agent at, most observers first.
        #[serde(default)]
        observed_addresses: Vec<ObservedAddress>,
        /// The NAT class they give.
        #[serde(default)]
        nat_class: NatClass,
        /// Whether the agent relays, its reservations with relays, and
        /// its relay's counters (boxed: the other replies are small).
        #[serde(default)]
        relay: Box<RelayInfo>,
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
    /// For [`Request::PipeListen`]: the protocol is registered, a peer may
    /// open the stream now.
    PipeListening {
        /// The agent's NodeId, which the peer connects to.
        node_id: NodeId,
        /// The protocol.
        protocol: String,
    },
    /// For [`Request::PipeListen`] and [`Request::PipeConnect`]: the
    /// stream is open, the pipe's bytes follow.
    PipeOpen {
        /// The node at the other end.
        peer: NodeId,
    },
    /// For [`Request::Metrics`].
    Metrics {
        /// The Prometheus text exposition format, ending `# EOF`
        /// ([`METRICS_CONTENT_TYPE`](crate::METRICS_CONTENT_TYPE) is its
        /// content type over HTTP).
        text: String,
    },
    /// The pipe's last line: both directions ended cleanly.
    PipeClosed {
        /// Bytes from this client to the peer.
        sent: u64,
        /// Bytes from the peer to this client.
        received: u64,
    },
}

/// The relay's part of [`Reply::Status`]: this agent as a relay and as a
/// relay's client.
///
/// ```text
/// "relay":{"relaying":true,"serve":"always","reservations":[],"pairs":0,
///   "reservations_served":0,"pairs_opened":0,"reservations_granted":0,
///   "frames_forwarded":0,"bytes_forwarded":0,"paths":0,
///   "dropped":{"no_pair":0,"over_rate":0,"too_large":0,"unexpected":0},
///   "refused":{"not_relaying":0,"full":0,"per_peer":0}}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RelayInfo {
    /// Whether the agent relays for others now.
    pub relaying: bool,
    /// When it relays: `when_public` (while its NAT class is public),
    /// `always` or `never` (`keynode agent start --relay`).
    pub serve: RelayServe,
    /// The relays it holds a reservation with (as a node behind a NAT).
    pub reservations: Vec<NodeId>,
    /// Pairs it relays between now.
    pub pairs: u64,
    /// Reservations it holds for others now.
    pub reservations_served: u64,
    /// Pairs it opened so far.
    pub pairs_opened: u64,
    /// Reservations it granted so far (renewals too).
    pub reservations_granted: u64,
    /// Frames it forwarded.
    pub frames_forwarded: u64,
    /// The QUIC bytes of those frames (headers not counted).
    pub bytes_forwarded: u64,
    /// Relayed paths it keeps as a client now.
    pub paths: u64,
    /// Frames dropped, by reason.
    pub dropped: RelayDrops,
    /// Pair and reservation requests refused, by reason.
    pub refused: RelayRefusals,
}

/// Relay frames dropped, by reason (see [`RelayInfo`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RelayDrops {
    /// No pair from the frame's source to its destination.
    pub no_pair: u64,
    /// Over the pair's or the reservation's byte rate.
    pub over_rate: u64,
    /// Larger than the largest frame relayed.
    pub too_large: u64,
    /// From a relay, at this agent as a client: not from a connected node,
    /// or no room for another relayed path.
    pub unexpected: u64,
}

/// Relay requests refused, by reason (see [`RelayInfo`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RelayRefusals {
    /// The agent does not relay now.
    pub not_relaying: u64,
    /// Its pairs or reservations are all taken.
    pub full: u64,
    /// The requester's (or the target's) share of pairs, or the IP's share
    /// of reservations, is taken.
    pub per_peer: u64,
}

impl RelayInfo {
    /// The readable form of a relay status.
    pub fn new(status: &crate::RelayStatus) -> Self {
        let s = &status.stats;
        Self {
            relaying: status.relaying,
            serve: status.serve,
            reservations: status.reservations.clone(),
            pairs: s.pairs,
            reservations_served: s.reservations,
            pairs_opened: s.pairs_opened,
            reservations_granted: s.reservations_granted,
            frames_forwarded: s.frames_forwarded,
            bytes_forwarded: s.bytes_forwarded,
            paths: s.paths,
            dropped: RelayDrops {
                no_pair: s.dropped_no_pair,
                over_rate: s.dropped_over_rate,
                too_large: s.dropped_too_large,
                unexpected: s.dropped_unexpected,
            },
            refused: RelayRefusals {
                not_relaying: s.refused_not_relaying,
                full: s.refused_full,
                per_peer: s.refused_per_peer,
            },
        }
    }
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
    pub(super) fn new(address: &NodeAddress, data: &NodeContactAddressData) -> Self {
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
    pub(super) fn new(node_id: NodeId, contact: &NodeContact) -> Self {
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
    /// Its address (a relayed connection's is a mapped one, `100::/64`).
    pub remote: SocketAddr,
    /// How it was made; `None` from an agent that did not say.
    #[serde(default)]
    pub mode: Option<ContactMode>,
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
    /// The line is longer than [`MAX_REQUEST_SIZE`](super::MAX_REQUEST_SIZE).
    TooLarge,
    /// Too many connections at once, or the agent's call queue is full.
    Busy,
    /// No complete request came within the request timeout
    /// ([`ControlLimits::request_timeout`](super::ControlLimits)); the
    /// connection is closed after this answer.
    Timeout,
    /// The node manager refused the call or the operation failed.
    Failed,
    /// The agent is stopping.
    Stopped,
    /// Something else uses the resource (a protocol listened on already).
    InUse,
    /// The peer refused the stream (it does not serve the protocol, or
    /// serves as many streams of it as it takes).
    Refused,
    /// A stream broke: reset or stopped by the peer, or its connection lost.
    StreamFailed,
    /// Anything else (a bug).
    Internal,
}

impl From<AgentError> for ControlError {
    fn from(e: AgentError) -> Self {
        let kind = match e {
            AgentError::Stopped => ErrorKind::Stopped,
            AgentError::WrongResult { .. } => ErrorKind::Internal,
            AgentError::Busy { .. } => ErrorKind::Busy,
            AgentError::Register(RegisterError::AlreadyRegistered(_)) => ErrorKind::InUse,
            AgentError::Stream(e) => return e.into(),
            _ => ErrorKind::Failed,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<StreamError> for ControlError {
    fn from(e: StreamError) -> Self {
        let kind = match e {
            StreamError::Refused(_) => ErrorKind::Refused,
            _ => ErrorKind::StreamFailed,
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
            Request::PipeListen {
                protocol: "demo/pipe/1".to_owned(),
            },
            Request::PipeConnect {
                node_id: id,
                protocol: "demo/pipe/1".to_owned(),
            },
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
}
