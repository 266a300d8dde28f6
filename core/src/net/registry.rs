//! The protocols registered on a node: only their streams and datagrams are
//! accepted, each with a cap on its inbound streams open at once.

use std::collections::BTreeMap;

use super::protocol::Protocol;

/// How a registered protocol is served.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct ProtocolOptions {
    /// Inbound streams of this protocol open at once, over every peer;
    /// more are refused ([`super::Refusal::InboundLimit`]). Default 256.
    pub max_inbound_streams: usize,
}

impl Default for ProtocolOptions {
    fn default() -> Self {
        Self {
            max_inbound_streams: 256,
        }
    }
}

impl ProtocolOptions {
    /// Options with a cap on inbound streams open at once.
    pub fn with_max_inbound_streams(max_inbound_streams: usize) -> Self {
        Self {
            max_inbound_streams,
        }
    }
}

/// Why a protocol could not be registered.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum RegisterError {
    /// It is registered already.
    #[error("protocol {0} is registered already")]
    AlreadyRegistered(Protocol),
    /// `NetConfig::max_protocols` are registered.
    #[error("{limit} protocols are registered already")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// keynode keeps the name for itself.
    #[error("protocol {0} is keynode's own")]
    Reserved(Protocol),
}

#[derive(Debug)]
struct Registered {
    options: ProtocolOptions,
    /// Its inbound streams open now.
    inbound: usize,
}

/// The registered protocols.
#[derive(Debug, Default)]
pub(super) struct Registry {
    protocols: BTreeMap<Protocol, Registered>,
}

/// Whether an inbound stream of a protocol may be taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Admission {
    Accepted,
    NotRegistered,
    AtLimit,
}

impl Registry {
    pub(super) fn register(
        &mut self,
        protocol: Protocol,
        options: ProtocolOptions,
        limit: usize,
    ) -> Result<(), RegisterError> {
        if protocol.is_reserved() {
            return Err(RegisterError::Reserved(protocol));
        }
        if self.protocols.contains_key(&protocol) {
            return Err(RegisterError::AlreadyRegistered(protocol));
        }
        if self.protocols.len() >= limit {
            return Err(RegisterError::TooMany { limit });
        }
        self.protocols.insert(
            protocol,
            Registered {
                options,
                inbound: 0,
            },
        );
        Ok(())
    }

    /// Forgets a protocol; its streams open now stay open (and are no
    /// longer counted). True if it was registered.
    pub(super) fn deregister(&mut self, protocol: &Protocol) -> bool {
        self.protocols.remove(protocol).is_some()
    }

    pub(super) fn is_registered(&self, protocol: &Protocol) -> bool {
        self.protocols.contains_key(protocol)
    }

    /// Takes an inbound stream of `protocol` if it is registered and below
    /// its cap.
    pub(super) fn admit(&mut self, protocol: &Protocol) -> Admission {
        match self.protocols.get_mut(protocol) {
            None => Admission::NotRegistered,
            Some(r) if r.inbound >= r.options.max_inbound_streams => Admission::AtLimit,
            Some(r) => {
                r.inbound += 1;
                Admission::Accepted
            }
        }
    }

    /// An inbound stream of `protocol` ended.
    pub(super) fn inbound_ended(&mut self, protocol: &Protocol) {
        if let Some(r) = self.protocols.get_mut(protocol) {
            r.inbound = r.inbound.saturating_sub(1);
        }
    }

    /// Inbound streams of `protocol` open now.
    pub(super) fn inbound(&self, protocol: &Protocol) -> usize {
        self.protocols.get(protocol).map_or(0, |r| r.inbound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_frees_on_end() {
        let mut r = Registry::default();
        let p = Protocol::try_from("a/1").expect("name");
        assert_eq!(r.admit(&p), Admission::NotRegistered);
        r.register(p.clone(), ProtocolOptions::with_max_inbound_streams(2), 8)
            .expect("registered");
        assert_eq!(
            r.register(p.clone(), ProtocolOptions::default(), 8),
            Err(RegisterError::AlreadyRegistered(p.clone()))
        );
        assert_eq!(r.admit(&p), Admission::Accepted);
        assert_eq!(r.admit(&p), Admission::Accepted);
        assert_eq!(r.admit(&p), Admission::AtLimit);
        r.inbound_ended(&p);
        assert_eq!(r.admit(&p), Admission::Accepted);
        assert!(r.deregister(&p));
        assert_eq!(r.admit(&p), Admission::NotRegistered);
    }

    #[test]
    fn the_count_of_protocols_is_bounded() {
        let mut r = Registry::default();
        for n in 0..2 {
            r.register(
                Protocol::new(format!("p/{n}")).expect("name"),
                ProtocolOptions::default(),
                2,
            )
            .expect("room");
        }
        assert_eq!(
            r.register(
                Protocol::try_from("p/x").expect("name"),
                ProtocolOptions::default(),
                2
            ),
            Err(RegisterError::TooMany { limit: 2 })
        );
    }
}
