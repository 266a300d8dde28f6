//! [`SeedNodes`]: the nodes a new node bootstraps from.

use std::fmt;
use std::str::FromStr;

use crate::address::{NodeAddress, NodeAddressParseError};
use crate::id::{NodeId, NodeIdParseError};

/// The nodes used to join the network, each with one address, in the order given.
///
/// Spec: `SeedNodes`. Text form: `nodeid@host:port;nodeid@host:port`
/// (whitespace around entries and a trailing `;` are allowed).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct SeedNodes(Vec<(NodeId, NodeAddress)>);

/// Why a seed-node list did not parse. Each variant names the entry (its
/// position from 0 and its text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeedNodesParseError {
    /// An entry without `@`.
    #[error("seed node {index} ({entry:?}) must be nodeid@host:port")]
    MissingAt {
        /// Position of the entry.
        index: usize,
        /// The entry.
        entry: String,
    },
    /// The NodeId part is invalid.
    #[error("seed node {index} ({entry:?}) has an invalid NodeId: {source}")]
    BadNodeId {
        /// Position of the entry.
        index: usize,
        /// The entry.
        entry: String,
        /// What is wrong with it.
        source: NodeIdParseError,
    },
    /// The address part is invalid.
    #[error("seed node {index} ({entry:?}) has an invalid address: {source}")]
    BadAddress {
        /// Position of the entry.
        index: usize,
        /// The entry.
        entry: String,
        /// What is wrong with it.
        source: NodeAddressParseError,
    },
    /// A NodeId listed twice.
    #[error("seed node {index} ({entry:?}) repeats NodeId {node_id}")]
    Duplicate {
        /// Position of the second entry.
        index: usize,
        /// The entry.
        entry: String,
        /// The NodeId.
        node_id: NodeId,
    },
}

impl SeedNodes {
    /// Seed nodes from a list; a NodeId listed twice keeps its last address.
    pub fn new(seeds: impl IntoIterator<Item = (NodeId, NodeAddress)>) -> Self {
        let mut list: Vec<(NodeId, NodeAddress)> = Vec::new();
        for (id, address) in seeds {
            match list.iter_mut().find(|(known, _)| *known == id) {
                Some(slot) => slot.1 = address,
                None => list.push((id, address)),
            }
        }
        Self(list)
    }

    /// The seeds in the order given.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &(NodeId, NodeAddress)> {
        self.0.iter()
    }

    /// The number of seeds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no seed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for SeedNodes {
    type Err = SeedNodesParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut list: Vec<(NodeId, NodeAddress)> = Vec::new();
        let entries = text.split(';').map(str::trim).filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let owned = || entry.to_owned();
            let (id, address) =
                entry
                    .split_once('@')
                    .ok_or_else(|| SeedNodesParseError::MissingAt {
                        index,
                        entry: owned(),
                    })?;
            let node_id: NodeId =
                id.trim()
                    .parse()
                    .map_err(|source| SeedNodesParseError::BadNodeId {
                        index,
                        entry: owned(),
                        source,
                    })?;
            let address =
                address
                    .trim()
                    .parse()
                    .map_err(|source| SeedNodesParseError::BadAddress {
                        index,
                        entry: owned(),
                        source,
                    })?;
            if list.iter().any(|(known, _)| *known == node_id) {
                return Err(SeedNodesParseError::Duplicate {
                    index,
                    entry: owned(),
                    node_id,
                });
            }
            list.push((node_id, address));
        }
        Ok(Self(list))
    }
}

impl fmt::Display for SeedNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (id, address)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{id}@{address}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_bytes([b; 32])
    }

    #[test]
    fn parses_and_prints() {
        let text = format!("{}@127.0.0.1:1314; {}@seed.example:55 ;", id(1), id(2));
        let seeds: SeedNodes = text.parse().unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!(
            seeds.to_string(),
            format!("{}@127.0.0.1:1314;{}@seed.example:55", id(1), id(2))
        );
        assert_eq!(seeds.to_string().parse::<SeedNodes>().unwrap(), seeds);
        assert!("".parse::<SeedNodes>().unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_entry() {
        let text = format!("{}@127.0.0.1:1;{}@nope", id(1), id(2));
        let err = text.parse::<SeedNodes>().unwrap_err();
        assert!(matches!(
            err,
            SeedNodesParseError::BadAddress { index: 1, .. }
        ));
        assert!(err.to_string().contains("nope"), "{err}");

        let err = "vabc@1.2.3.4:5".parse::<SeedNodes>().unwrap_err();
        assert!(matches!(
            err,
            SeedNodesParseError::BadNodeId { index: 0, .. }
        ));

        let err = "1.2.3.4:5".parse::<SeedNodes>().unwrap_err();
        assert!(matches!(
            err,
            SeedNodesParseError::MissingAt { index: 0, .. }
        ));

        let text = format!("{}@1.2.3.4:5;{}@1.2.3.4:6", id(3), id(3));
        let err = text.parse::<SeedNodes>().unwrap_err();
        assert!(matches!(
            err,
            SeedNodesParseError::Duplicate { index: 1, .. }
        ));
    }
}
