//! What a node knows about how to reach another: [`NodeContact`].

use serde::{Deserialize, Deserializer, Serialize};

use crate::address::NodeAddress;

/// Where an address is valid.
///
/// Spec: `NodeAddressScope = 'local' | 'global'`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum NodeAddressScope {
    /// Reachable on the local network only (found by mDNS).
    Local,
    /// Reachable from anywhere; the only scope shared with other nodes.
    Global,
}

/// A set of [`NodeAddressScope`]s. Two flags, so a peer cannot make it grow.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct NodeAddressScopes {
    /// Contains [`NodeAddressScope::Local`].
    pub local: bool,
    /// Contains [`NodeAddressScope::Global`].
    pub global: bool,
}

impl NodeAddressScopes {
    /// Only local.
    pub const LOCAL: Self = Self {
        local: true,
        global: false,
    };
    /// Only global.
    pub const GLOBAL: Self = Self {
        local: false,
        global: true,
    };

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: NodeAddressScope) -> bool {
        match scope {
            NodeAddressScope::Local => self.local,
            NodeAddressScope::Global => self.global,
        }
    }

    /// The scopes in the set, local first.
    pub fn iter(&self) -> impl Iterator<Item = NodeAddressScope> + '_ {
        [NodeAddressScope::Local, NodeAddressScope::Global]
            .into_iter()
            .filter(|s| self.contains(*s))
    }
}

impl FromIterator<NodeAddressScope> for NodeAddressScopes {
    fn from_iter<T: IntoIterator<Item = NodeAddressScope>>(iter: T) -> Self {
        let mut scopes = Self::default();
        for scope in iter {
            match scope {
                NodeAddressScope::Local => scopes.local = true,
                NodeAddressScope::Global => scopes.global = true,
            }
        }
        scopes
    }
}

/// How a connection to an address was made.
///
/// Spec: `NodeContactAddressData.mode`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum ContactMode {
    /// A direct QUIC connection.
    Direct,
    /// A hole-punched connection, signalled through a third node.
    Signal,
    /// Traffic relayed through a third node.
    Relay,
}

/// Seconds since the Unix epoch (wall-clock), as the original's `connectedTime`.
pub type UnixSeconds = u64;

/// When and how a node was last connected at one address.
///
/// Spec: `NodeContactAddressData = { mode, connectedTime, scopes }`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct NodeContactAddressData {
    /// How the connection was made.
    pub mode: ContactMode,
    /// When the node was last connected at this address (Unix seconds).
    pub connected_time: UnixSeconds,
    /// Where the address is valid.
    pub scopes: NodeAddressScopes,
}

/// The addresses of one node, each with its [`NodeContactAddressData`].
///
/// Spec: `NodeContact`, a record from address to address data. At most
/// [`NodeContact::MAX_ADDRESSES`] addresses, each once; adding one more evicts
/// the address with the oldest `connected_time`. Addresses are kept in the order
/// they were first added, so iteration is deterministic.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct NodeContact {
    addresses: Vec<(NodeAddress, NodeContactAddressData)>,
}

/// Why a [`NodeContact`] from outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeContactError {
    /// More addresses than [`NodeContact::MAX_ADDRESSES`].
    #[error("a contact holds at most {max} addresses, found {found}", max = NodeContact::MAX_ADDRESSES)]
    TooManyAddresses {
        /// How many were given.
        found: usize,
    },
    /// The same address twice.
    #[error("address {address} appears twice in one contact")]
    DuplicateAddress {
        /// The address.
        address: NodeAddress,
    },
}

impl NodeContact {
    /// The most addresses one contact holds.
    pub const MAX_ADDRESSES: usize = 5;

    /// A contact with one address.
    pub fn new(address: NodeAddress, data: NodeContactAddressData) -> Self {
        Self {
            addresses: vec![(address, data)],
        }
    }

    /// A contact from a list of addresses, which must be distinct and at most
    /// [`NodeContact::MAX_ADDRESSES`].
    pub fn from_addresses(
        addresses: Vec<(NodeAddress, NodeContactAddressData)>,
    ) -> Result<Self, NodeContactError> {
        if addresses.len() > Self::MAX_ADDRESSES {
            return Err(NodeContactError::TooManyAddresses {
                found: addresses.len(),
            });
        }
        for (i, (address, _)) in addresses.iter().enumerate() {
            if addresses.iter().take(i).any(|(a, _)| a == address) {
                return Err(NodeContactError::DuplicateAddress {
                    address: address.clone(),
                });
            }
        }
        Ok(Self { addresses })
    }

    /// Records `data` for `address`: replaces the data of a known address, or
    /// adds the address, evicting the one with the oldest `connected_time` when
    /// the contact is full. Returns the evicted address, if any.
    pub fn insert(
        &mut self,
        address: NodeAddress,
        data: NodeContactAddressData,
    ) -> Option<(NodeAddress, NodeContactAddressData)> {
        if let Some(slot) = self.addresses.iter_mut().find(|(a, _)| *a == address) {
            slot.1 = data;
            return None;
        }
        let evicted = if self.addresses.len() >= Self::MAX_ADDRESSES {
            // Ties go to the earliest added, so the result is deterministic.
            let oldest = self
                .addresses
                .iter()
                .enumerate()
                .min_by_key(|(i, (_, d))| (d.connected_time, *i))
                .map(|(i, _)| i);
            oldest.map(|i| self.addresses.remove(i))
        } else {
            None
        };
        self.addresses.push((address, data));
        evicted
    }

    /// Merges every address of `other` into `self`, as [`NodeContact::insert`] does.
    pub fn merge(&mut self, other: &NodeContact) {
        for (address, data) in &other.addresses {
            let _evicted = self.insert(address.clone(), *data);
        }
    }

    /// Removes `address`; returns its data if it was there.
    pub fn remove(&mut self, address: &NodeAddress) -> Option<NodeContactAddressData> {
        let i = self.addresses.iter().position(|(a, _)| a == address)?;
        Some(self.addresses.remove(i).1)
    }

    /// The data recorded for `address`.
    pub fn get(&self, address: &NodeAddress) -> Option<&NodeContactAddressData> {
        self.addresses
            .iter()
            .find(|(a, _)| a == address)
            .map(|(_, d)| d)
    }

    /// The addresses and their data, in the order they were added.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&NodeAddress, &NodeContactAddressData)> {
        self.addresses.iter().map(|(a, d)| (a, d))
    }

    /// The number of addresses.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Whether the contact has no address.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// The most recent `connected_time` over all addresses (0 if none): when the
    /// node was last seen at all.
    pub fn last_connected(&self) -> UnixSeconds {
        self.addresses
            .iter()
            .map(|(_, d)| d.connected_time)
            .max()
            .unwrap_or(0)
    }

    /// The contact with only the addresses of `scope` (what may be shared with
    /// other nodes is the `Global` part).
    pub fn filter_scope(&self, scope: NodeAddressScope) -> NodeContact {
        NodeContact {
            addresses: self
                .addresses
                .iter()
                .filter(|(_, d)| d.scopes.contains(scope))
                .cloned()
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for NodeContact {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            addresses: Vec<(NodeAddress, NodeContactAddressData)>,
        }
        let raw = Raw::deserialize(deserializer)?;
        NodeContact::from_addresses(raw.addresses).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn addr(port: u16) -> NodeAddress {
        NodeAddress::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    }

    fn data(t: u64) -> NodeContactAddressData {
        NodeContactAddressData {
            mode: ContactMode::Direct,
            connected_time: t,
            scopes: NodeAddressScopes::GLOBAL,
        }
    }

    #[test]
    fn sixth_address_evicts_oldest_connected() {
        let mut contact = NodeContact::new(addr(1), data(50));
        for (port, t) in [(2, 10), (3, 30), (4, 40), (5, 60)] {
            assert_eq!(contact.insert(addr(port), data(t)), None);
        }
        assert_eq!(contact.len(), 5);
        assert_eq!(contact.insert(addr(6), data(70)), Some((addr(2), data(10))));
        assert_eq!(contact.len(), 5);
        assert!(contact.get(&addr(2)).is_none());
        assert_eq!(contact.last_connected(), 70);
    }

    #[test]
    fn known_address_is_updated_not_added() {
        let mut contact = NodeContact::new(addr(1), data(1));
        assert_eq!(contact.insert(addr(1), data(9)), None);
        assert_eq!(contact.len(), 1);
        assert_eq!(contact.get(&addr(1)), Some(&data(9)));
    }

    #[test]
    fn decoding_enforces_bounds() {
        let six: Vec<_> = (0..6).map(|p| (addr(p), data(0))).collect();
        let bytes = postcard::to_allocvec(&(six.clone(),)).unwrap();
        assert!(postcard::from_bytes::<NodeContact>(&bytes).is_err());
        let dup = vec![(addr(1), data(0)), (addr(1), data(2))];
        let bytes = postcard::to_allocvec(&(dup,)).unwrap();
        assert!(postcard::from_bytes::<NodeContact>(&bytes).is_err());
        let ok = NodeContact::from_addresses(six[..5].to_vec()).unwrap();
        let bytes = postcard::to_allocvec(&ok).unwrap();
        assert_eq!(postcard::from_bytes::<NodeContact>(&bytes).unwrap(), ok);
    }

    #[test]
    fn global_filter() {
        let mut contact = NodeContact::new(addr(1), data(1));
        let mut local = data(2);
        local.scopes = NodeAddressScopes::LOCAL;
        let _ = contact.insert(addr(2), local);
        let global = contact.filter_scope(NodeAddressScope::Global);
        assert_eq!(global.len(), 1);
        assert!(global.get(&addr(1)).is_some());
    }
}
