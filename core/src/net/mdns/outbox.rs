//! The outgoing side of the mDNS service: keynode's groups in place of the
//! standard ones `mdns-proto` writes, the bounded queue of datagrams for
//! the driver, and the memory of what was sent, to recognise its multicast
//! loopback.

use std::collections::VecDeque;
use std::net::SocketAddr;

use super::MAX_PENDING_TRANSMITS;

/// How many of our own recent datagrams are remembered to recognise their
/// multicast loopback.
const RECENT_SENT: usize = 16;

/// A datagram for the driver to send from the mDNS socket.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MdnsTransmit {
    /// A multicast group at the mDNS port, or a unicast address (a reply to a
    /// legacy querier that did not ask from the mDNS port).
    pub destination: SocketAddr,
    /// The DNS message.
    pub bytes: Vec<u8>,
}

/// The outgoing side: keynode's destinations, the bounded queue, and the
/// memory of what we sent (to recognise its loopback). Kept apart from the
/// state machines so that it can be borrowed while one of them is.
pub(super) struct Outbox {
    pub(super) groups: Vec<SocketAddr>,
    pub(super) queue: VecDeque<MdnsTransmit>,
    pub(super) recent: VecDeque<Vec<u8>>,
    pub(super) dropped: u64,
}

/// Which families a datagram went out on.
#[derive(Clone, Copy, Default)]
pub(super) struct Emitted {
    pub(super) v4: bool,
    pub(super) v6: bool,
}

impl Emitted {
    pub(super) fn any(self) -> bool {
        self.v4 || self.v6
    }
}

impl Outbox {
    pub(super) fn has_family(&self, v4: bool) -> bool {
        self.groups.iter().any(|group| group.is_ipv4() == v4)
    }

    /// Queues `bytes` for `proto_destination`, a destination `mdns-proto`
    /// chose. It writes the standard group and port into every multicast
    /// transmit (IPv4 only), so a multicast destination becomes one datagram
    /// per keynode group; a unicast one (a legacy reply) is kept.
    pub(super) fn emit(&mut self, proto_destination: SocketAddr, bytes: &[u8]) -> Emitted {
        let mut emitted = Emitted::default();
        if proto_destination.ip().is_multicast() {
            for index in 0..self.groups.len() {
                let Some(&group) = self.groups.get(index) else {
                    break;
                };
                if self.push(group, bytes) {
                    if group.is_ipv4() {
                        emitted.v4 = true;
                    } else {
                        emitted.v6 = true;
                    }
                }
            }
        } else if self.push(proto_destination, bytes) {
            if proto_destination.is_ipv4() {
                emitted.v4 = true;
            } else {
                emitted.v6 = true;
            }
        }
        if emitted.any() && !self.recent.iter().any(|sent| sent.as_slice() == bytes) {
            if self.recent.len() >= RECENT_SENT {
                self.recent.pop_front();
            }
            self.recent.push_back(bytes.to_vec());
        }
        emitted
    }

    fn push(&mut self, destination: SocketAddr, bytes: &[u8]) -> bool {
        if self.queue.len() >= MAX_PENDING_TRANSMITS {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.queue.push_back(MdnsTransmit {
            destination,
            bytes: bytes.to_vec(),
        });
        true
    }

    /// Whether `bytes` is a datagram we sent recently: with multicast loop
    /// on, every node hears itself, and `mdns-proto` would otherwise take its
    /// own announcements for a peer's (conflicts) and its own questions for
    /// a peer's (duplicate-question suppression). Exact bytes, not a hash,
    /// so a crafted datagram cannot pass for ours; other nodes' datagrams
    /// differ by their names or transaction ids.
    pub(super) fn is_own(&self, bytes: &[u8]) -> bool {
        self.recent.iter().any(|sent| sent.as_slice() == bytes)
    }
}
