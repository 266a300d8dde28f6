//! The messages nodes exchange, and their codec.
//!
//! Every message is a [`Message`]: a version byte and a body, encoded with
//! postcard. Decoding checks the size limit first, rejects unknown versions,
//! rejects trailing bytes, and checks every list against its bound, so a peer
//! can neither crash a node nor make it allocate without limit.
//!
//! # Versioning
//!
//! The version byte says how the body is laid out; a decoder refuses every
//! version but its own, before reading the body. So a change that moves
//! the encoding of an existing message (a field added to a variant, a
//! variant reordered) bumps [`WIRE_VERSION`], and a node of the old version
//! then refuses every message of the new one: such a change needs the two
//! versions spoken side by side until old nodes are gone. A change that
//! only *adds* a variant at the end of an enum keeps the version: every
//! message of the old version encodes, and decodes, to the same bytes as
//! before, and an old node that receives the new variant fails to decode
//! that one frame (`Malformed`, an unknown variant) and resets its stream,
//! nothing more.
//!
//! [`Frame::Observed`] is such an addition (version 1 still): it travels
//! alone on a unidirectional stream a node opens when a connection comes
//! up. An old peer refuses that stream (it took no unidirectional stream
//! of keynode's RPC, and would not decode the variant either) and nothing
//! else: the connection, its requests and its claim exchanges go on as
//! before, and the new node, which expects nothing back, just hears nothing
//! about its address from that peer.
//!
//! The relay's requests ([`Request::RelayOpen`], [`Request::Reserve`]),
//! their answers and refusal reasons are such additions too: an old node
//! asked for them fails to decode the request and resets its stream, which
//! the asker takes as "no relay here".

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::claims::{AbortReason, ClaimId, SignedClaim};
use crate::contact::NodeContact;
use crate::id::NodeId;
use crate::nat::NatClass;

/// The wire version this build speaks.
pub const WIRE_VERSION: u8 = 1;

/// The most NodeIds or contacts a closest-nodes answer may carry.
pub const MAX_CLOSEST: usize = 1024;

/// A versioned message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Message<T> {
    /// [`WIRE_VERSION`] when sent by this build.
    pub version: u8,
    /// The request or response.
    pub body: T,
}

/// A request from one node to another, one per stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Request {
    /// The nodes closest to `target` that the peer knows: the ones it is
    /// connected to, and its graph's contacts with global addresses.
    ///
    /// Spec: the original's `nodesClosestActiveConnectionsGet` and
    /// `nodesClosestLocalNodesGet`, answered in one round trip.
    ClosestNodes {
        /// The NodeId to find.
        target: NodeId,
    },
    /// Asks the peer (the signaller) to tell `target`, which it is connected
    /// to, to punch a hole towards the requester.
    ///
    /// Spec: `nodesConnectionSignalInitial`.
    Signal {
        /// The node to reach.
        target: NodeId,
    },
    /// Up to `limit` claims of the peer's sigchain, from `from` (inclusive)
    /// or the start.
    ///
    /// Spec: what `NodeManager.requestChainData` asks.
    ChainData {
        /// The first claim wanted.
        from: Option<ClaimId>,
        /// The most claims wanted.
        limit: u32,
    },
    /// From a signaller: `source` wants to connect; punch towards its address.
    ///
    /// Spec: `nodesConnectionSignalFinal`.
    SignalFinal {
        /// The node that wants to connect.
        source: NodeId,
        /// Its address as the signaller sees it.
        source_address: SocketAddr,
    },
    /// Asks the peer (a relay) to forward datagrams between the requester
    /// and `target`, which it is connected to (see `net`'s relay docs).
    RelayOpen {
        /// The node to reach through the relay.
        target: NodeId,
    },
    /// Asks the peer (a relay) to hold a reservation for the requester,
    /// which is behind a NAT of class `class`.
    Reserve {
        /// The requester's NAT class, told to those who open pairs to it.
        class: NatClass,
    },
}

/// An answer to a [`Request`].
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::ClosestNodes`].
    ClosestNodes {
        /// Nodes the responder is connected to, closest to the target first.
        active: Vec<NodeId>,
        /// Contacts of the responder's graph, global addresses only, closest first.
        contacts: Vec<(NodeId, NodeContact)>,
    },
    /// Answer to [`Request::Signal`]: the target's address as the signaller sees it.
    Signal {
        /// Where to punch and connect.
        target_address: SocketAddr,
    },
    /// Answer to [`Request::SignalFinal`].
    Ack,
    /// Answer to [`Request::ChainData`]: signed claims in seq order.
    ChainData {
        /// The claims.
        claims: Vec<SignedClaim>,
    },
    /// The request was refused.
    Refused(RefusalReason),
    /// Answer to [`Request::RelayOpen`]: the pair is open.
    RelayOpened {
        /// The target's address as the relay sees it.
        target_address: SocketAddr,
        /// The NAT class the target told with its reservation, if it holds one.
        target_class: Option<NatClass>,
    },
    /// Answer to [`Request::Reserve`]: reserved for this long.
    Reserved {
        /// Seconds until the reservation ends unless renewed.
        lifetime_secs: u32,
    },
}

/// Why a request was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The signaller is not connected to the target.
    NotConnected,
    /// The requester exceeded its rate limit.
    RateLimited,
    /// The node is stopping.
    Stopping,
    /// A `SignalFinal` from a node the target did not dial, or naming an
    /// address no relay could have observed: nothing is punched.
    Unvouched,
    /// The node does not relay (it is not public, or relaying is off).
    NotRelaying,
    /// The relay's pairs or reservations are all taken.
    RelayFull,
    /// The requester's or the target's share of the relay is taken (pairs
    /// per node, reservations per IP).
    RelayPeerLimit,
}

/// The messages of the claim exchange, all on one stream opened by the requester.
///
/// 1. requester → target: `Request`, its claim {iss requester, sub target}, signed by it;
/// 2. target → requester: `Countersigned`, the same claim signed by both;
/// 3. target → requester: `Reverse`, the target's claim {iss target, sub requester}, signed by it;
/// 4. requester → target: `ReverseCountersigned`, that claim signed by both.
///
/// Either side may send `Abort` instead of its next message.
///
/// Spec: the messages of `NodeManager.claimNode` and `NodeManager.handleClaimNode`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ClaimMessage {
    /// Message 1.
    Request(SignedClaim),
    /// Message 2.
    Countersigned(SignedClaim),
    /// Message 3.
    Reverse(SignedClaim),
    /// Message 4.
    ReverseCountersigned(SignedClaim),
    /// The exchange is over: the sender gives up, for this reason.
    Abort(AbortReason),
}

impl ClaimMessage {
    /// The message's name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            ClaimMessage::Request(_) => "Request",
            ClaimMessage::Countersigned(_) => "Countersigned",
            ClaimMessage::Reverse(_) => "Reverse",
            ClaimMessage::ReverseCountersigned(_) => "ReverseCountersigned",
            ClaimMessage::Abort(_) => "Abort",
        }
    }
}

/// What travels on a QUIC stream: each frame a length-prefixed [`Message`].
/// A request stream carries one `Request` and one `Response`; a claim stream
/// carries `Claim` messages.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Frame {
    /// A request (the first frame of a request stream).
    Request(Request),
    /// The response to the stream's request.
    Response(Response),
    /// A message of the claim exchange.
    Claim(ClaimMessage),
    /// The address the sender sees the receiver at: the remote address of
    /// the connection it came on. Each side sends one when a connection
    /// comes up, alone on a unidirectional stream (see "Versioning").
    Observed {
        /// The receiver's address, as the sender sees it.
        address: SocketAddr,
    },
}

/// Decodes a [`Frame`], checking its lists against their bounds.
pub fn decode_frame(bytes: &[u8], limit: usize) -> Result<Frame, DecodeError> {
    let frame: Frame = decode("frame", bytes, limit)?;
    if let Frame::Response(response) = &frame {
        check_response_bounds(response)?;
    }
    Ok(frame)
}

fn check_response_bounds(response: &Response) -> Result<(), DecodeError> {
    let found = match response {
        Response::ClosestNodes { active, contacts } => active.len().max(contacts.len()),
        Response::ChainData { claims } => claims.len(),
        _ => 0,
    };
    if found > MAX_CLOSEST {
        return Err(DecodeError::TooManyEntries {
            found,
            limit: MAX_CLOSEST,
        });
    }
    Ok(())
}

/// Decodes a [`ClaimMessage`].
pub fn decode_claim_message(bytes: &[u8], limit: usize) -> Result<ClaimMessage, DecodeError> {
    decode("claim message", bytes, limit)
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Larger than the configured limit; not even looked at.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A version this build does not speak.
    #[error("message version {found} is not supported (this build speaks {WIRE_VERSION})")]
    UnsupportedVersion {
        /// The version in the message.
        found: u8,
    },
    /// No bytes at all (not even the version).
    #[error("empty message: no version byte")]
    Empty,
    /// Not a valid postcard encoding of the message expected.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// What was being decoded (`"request"`, `"frame"`, ...).
        what: &'static str,
        /// Why postcard refused it.
        source: postcard::Error,
    },
    /// Bytes after the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A list longer than its bound.
    #[error("message lists {found} entries, the limit is {limit}")]
    TooManyEntries {
        /// How many.
        found: usize,
        /// The bound.
        limit: usize,
    },
    /// Bytes that decode differently from how they would be encoded.
    #[error("message is not in canonical encoding")]
    NotCanonical,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Larger than the limit once encoded.
    #[error("encoded message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Postcard failed (a bug: messages are plain data).
    #[error("cannot encode message: {0}")]
    Postcard(postcard::Error),
}

/// Encodes `body` as a [`Message`] of the current version.
pub fn encode<T: Serialize>(body: &T, limit: usize) -> Result<Vec<u8>, EncodeError> {
    let bytes = postcard::to_allocvec(&Message {
        version: WIRE_VERSION,
        body,
    })
    .map_err(EncodeError::Postcard)?;
    if bytes.len() > limit {
        return Err(EncodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Decodes a [`Request`].
pub fn decode_request(bytes: &[u8], limit: usize) -> Result<Request, DecodeError> {
    decode("request", bytes, limit)
}

/// Decodes a [`Response`], checking its lists against [`MAX_CLOSEST`].
pub fn decode_response(bytes: &[u8], limit: usize) -> Result<Response, DecodeError> {
    let response: Response = decode("response", bytes, limit)?;
    check_response_bounds(&response)?;
    Ok(response)
}

fn decode<T: Serialize + for<'de> Deserialize<'de>>(
    what: &'static str,
    bytes: &[u8],
    limit: usize,
) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    // The version is the first byte (a u8 is one byte in postcard): check it
    // before the body, whose layout may differ in other versions.
    match bytes.first() {
        Some(&WIRE_VERSION) => {}
        Some(&found) => return Err(DecodeError::UnsupportedVersion { found }),
        None => return Err(DecodeError::Empty),
    }
    let malformed = |source| DecodeError::Malformed { what, source };
    let (message, rest): (Message<T>, _) = postcard::take_from_bytes(bytes).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    // Postcard accepts some non-minimal varints; a message must re-encode to
    // the same bytes, so that what is signed is what is meant.
    let again = postcard::to_allocvec(&message).map_err(malformed)?;
    if again != bytes {
        return Err(DecodeError::NotCanonical);
    }
    Ok(message.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::NodeAddress;
    use crate::contact::{ContactMode, NodeAddressScopes, NodeContactAddressData};

    const LIMIT: usize = 64 * 1024;

    fn contact() -> NodeContact {
        NodeContact::new(
            NodeAddress::new(std::net::IpAddr::from([10, 0, 0, 1]), 7),
            NodeContactAddressData {
                mode: ContactMode::Direct,
                connected_time: 5,
                scopes: NodeAddressScopes::GLOBAL,
            },
        )
    }

    #[test]
    fn round_trips() {
        let request = Request::ClosestNodes {
            target: NodeId::from_bytes([1; 32]),
        };
        let bytes = encode(&request, LIMIT).unwrap();
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode_request(&bytes, LIMIT), Ok(request));
        let response = Response::ClosestNodes {
            active: vec![NodeId::from_bytes([2; 32])],
            contacts: vec![(NodeId::from_bytes([3; 32]), contact())],
        };
        let bytes = encode(&response, LIMIT).unwrap();
        assert_eq!(decode_response(&bytes, LIMIT), Ok(response));
    }

    #[test]
    fn an_observed_address_is_an_addition_to_version_1() {
        let frame = Frame::Observed {
            address: "198.51.100.7:40000".parse().unwrap(),
        };
        let bytes = encode(&frame, LIMIT).unwrap();
        // The version stays, and the new variant's tag comes after the
        // three older ones, whose encodings do not move.
        assert_eq!(bytes[..2], [WIRE_VERSION, 3]);
        assert_eq!(decode_frame(&bytes, LIMIT), Ok(frame));
        let request = Frame::Request(Request::Signal {
            target: NodeId::from_bytes([1; 32]),
        });
        assert_eq!(encode(&request, LIMIT).unwrap()[..3], [1, 0, 1]);
    }

    #[test]
    fn rejects_bad_input() {
        let request = Request::Signal {
            target: NodeId::from_bytes([1; 32]),
        };
        let mut bytes = encode(&request, LIMIT).unwrap();
        assert!(matches!(
            decode_request(&bytes, 10),
            Err(DecodeError::TooLarge { .. })
        ));
        bytes.push(0);
        assert_eq!(
            decode_request(&bytes, LIMIT),
            Err(DecodeError::TrailingBytes(1))
        );
        bytes.pop();
        bytes[0] = 9;
        assert_eq!(
            decode_request(&bytes, LIMIT),
            Err(DecodeError::UnsupportedVersion { found: 9 })
        );
        assert!(matches!(
            decode_request(&[], LIMIT),
            Err(DecodeError::Empty)
        ));
        assert!(matches!(
            decode_request(&[WIRE_VERSION, 200], LIMIT),
            Err(DecodeError::Malformed {
                what: "request",
                ..
            })
        ));
        // A non-minimal varint for the enum tag (1 written as 0x81 0x00).
        let canonical = encode(&request, LIMIT).unwrap();
        let mut padded = vec![canonical[0], 0x81, 0x00];
        padded.extend_from_slice(&canonical[2..]);
        assert_eq!(
            decode_request(&padded, LIMIT),
            Err(DecodeError::NotCanonical)
        );
    }

    #[test]
    fn a_garbage_response_says_it_was_a_response_and_why() {
        // An enum tag no Response has.
        let error = decode_response(&[WIRE_VERSION, 100], LIMIT).unwrap_err();
        assert_eq!(
            error,
            DecodeError::Malformed {
                what: "response",
                // serde's derive reports an unknown variant as a custom error.
                source: postcard::Error::SerdeDeCustom,
            }
        );
        assert!(
            error.to_string().starts_with("malformed response: "),
            "{error}"
        );
        // Cut short inside a NodeId.
        let bytes = encode(
            &Response::ClosestNodes {
                active: vec![NodeId::from_bytes([2; 32])],
                contacts: Vec::new(),
            },
            LIMIT,
        )
        .unwrap();
        assert_eq!(
            decode_response(&bytes[..10], LIMIT),
            Err(DecodeError::Malformed {
                what: "response",
                source: postcard::Error::DeserializeUnexpectedEnd,
            })
        );
    }

    #[test]
    fn oversized_lists_are_refused() {
        let response = Response::ClosestNodes {
            active: vec![NodeId::from_bytes([2; 32]); MAX_CLOSEST + 1],
            contacts: Vec::new(),
        };
        let bytes = encode(&response, 1 << 20).unwrap();
        assert!(matches!(
            decode_response(&bytes, 1 << 20),
            Err(DecodeError::TooManyEntries { .. })
        ));
        assert!(matches!(
            encode(&response, 16 * 1024),
            Err(EncodeError::TooLarge { .. })
        ));
    }
}
