//! The manager's side of observed addresses: a peer's observation is
//! recorded against the connection it came on, once per connection, keyed
//! by that connection's remote network (its /24 or /48, a loopback address
//! alone: [`observer_key`]), dropped when the connection closes, and every change
//! re-evaluates the NAT class (see [`crate::nat`]); a new class is an
//! [`Observation::NatClassChanged`] and is counted.

use std::net::SocketAddr;

use crate::manager::observations::Observation;
use crate::manager::{ConnId, NodeManager};
use crate::nat::{Insert, LocalAddresses, NatClass, ObservedAddress, observer_key};

impl NodeManager {
    /// The addresses peers observe this node at, most observers first.
    pub fn observed_addresses(&self) -> Vec<ObservedAddress> {
        self.observed.addresses()
    }

    /// The NAT class of this node's socket, from its observed addresses.
    pub fn nat_class(&self) -> NatClass {
        self.observed.class()
    }

    /// Tells the manager its socket's own addresses (the bound address,
    /// and for a wildcard socket the host's interface addresses), against
    /// which observed addresses are compared.
    pub fn set_local_addresses(&mut self, local: LocalAddresses) {
        self.observed.set_local(local);
        self.reclassify();
    }

    pub(super) fn on_address_observed(&mut self, conn: ConnId, observed: SocketAddr) {
        // Only a connection the manager keeps speaks for its peer.
        let Some(c) = self.conns.get(conn) else {
            self.stats.stale_events += 1;
            return;
        };
        let remote = c.remote.ip().to_canonical();
        let ip = observed.ip().to_canonical();
        let refused = self.observed.has_spoken(conn)
            // Over a relay the peer sees the relay's path, not ours.
            || crate::net::is_relayed(&c.remote)
            // An unspecified address, port 0, multicast or broadcast is no
            // one's address.
            || ip.is_unspecified()
            || observed.port() == 0
            || ip.is_multicast()
            || ip == std::net::IpAddr::from([255, 255, 255, 255])
            // Only a process on this host sees this node at a loopback
            // address: a remote peer saying so would make a wildcard
            // socket look public.
            || (ip.is_loopback() && !remote.is_loopback());
        if refused {
            self.metrics.observed_addresses_refused += 1;
            return;
        }
        match self.observed.insert(observer_key(remote), observed, conn) {
            Insert::Added => {}
            Insert::Replaced => self.metrics.observed_addresses_replaced += 1,
            Insert::Full => {
                self.metrics.observed_addresses_refused += 1;
                return;
            }
        }
        self.reclassify();
    }

    /// A closed connection's observation goes with it.
    pub(super) fn forget_observation(&mut self, conn: ConnId) {
        // Most connections' words were replaced or never came: nothing
        // to re-evaluate then.
        if self.observed.forget_conn(conn) {
            self.reclassify();
        }
    }

    fn reclassify(&mut self) {
        if let Some((previous, class)) = self.observed.reclassify() {
            self.metrics.nat_class = class;
            self.metrics.nat_class_changes.inc(class);
            let observed = self.observed.addresses().first().map(|a| a.address);
            self.observe(Observation::NatClassChanged {
                previous,
                class,
                observed,
            });
            self.check_relays();
        }
    }
}
