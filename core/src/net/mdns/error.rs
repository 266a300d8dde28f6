//! [`MdnsError`]: why the mDNS service could not be built (groups, port,
//! addresses) or could not do what was asked (announce, query).

use std::net::{IpAddr, SocketAddr};

#[cfg(doc)]
use super::MdnsService;
#[cfg(doc)]
use super::{MAX_ADDRESSES, MAX_GROUPS, MAX_QUERIES};
#[cfg(doc)]
use crate::MdnsConfig;

/// Why the mDNS service could not be built or could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MdnsError {
    /// [`MdnsConfig::groups`] is empty.
    #[error("mDNS needs at least one multicast group")]
    NoGroups,
    /// More groups than [`MAX_GROUPS`].
    #[error("at most {max} mDNS groups are supported, found {found}")]
    TooManyGroups {
        /// The number of distinct groups given.
        found: usize,
        /// [`MAX_GROUPS`].
        max: usize,
    },
    /// A group address that is not multicast.
    #[error("mDNS group {group} is not a multicast address")]
    NotMulticast {
        /// The address.
        group: IpAddr,
    },
    /// [`MdnsConfig::port`] is 0.
    #[error("the mDNS port must not be 0")]
    PortZero,
    /// More addresses than [`MAX_ADDRESSES`].
    #[error("at most {max} addresses can be announced, found {found}")]
    TooManyAddresses {
        /// The number of distinct addresses given.
        found: usize,
        /// [`MAX_ADDRESSES`].
        max: usize,
    },
    /// The addresses have different ports: one SRV record carries one port.
    #[error("announced addresses must share one port (SRV carries one), found {first} and {other}")]
    MixedPorts {
        /// The port of the first address.
        first: u16,
        /// A different port of a later address.
        other: u16,
    },
    /// An address nobody could connect to: unspecified, multicast,
    /// broadcast, or port 0.
    #[error("{address} cannot be announced (unspecified, multicast, broadcast or port 0)")]
    Unannounceable {
        /// The address.
        address: SocketAddr,
    },
    /// [`MdnsService::announce`] on a node that has no address to announce.
    #[error("there is no address to announce")]
    NoAddresses,
    /// [`MAX_QUERIES`] queries are already in flight.
    #[error("{max} mDNS queries are already in flight")]
    TooManyQueries {
        /// [`MAX_QUERIES`].
        max: usize,
    },
    /// `mdns-proto` rejected a name built from a NodeId (cannot happen with
    /// a well-formed NodeId: its text is one 53-character label).
    #[error("invalid DNS name {name:?}")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// `mdns-proto` refused to register the service or start the query.
    #[error("mdns-proto refused: {reason}")]
    Refused {
        /// `mdns-proto`'s error, as text (its types are not part of our API).
        reason: String,
    },
}
