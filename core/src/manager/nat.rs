//! The manager's side of observed addresses: a peer's observation is
//! recorded against the connection it came on (keyed by that connection's
//! remote IP), dropped when the connection closes, and every change
//! re-evaluates the NAT class (see [`crate::nat`]); a new class is an
//! [`Observation::NatClassChanged`] and is counted.

use std::net::SocketAddr;

use crate::manager::observations::Observation;
use crate::manager::{ConnId, NodeManager};
use crate::nat::{LocalAddresses, NatClass, ObservedAddress};

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
        // Only a connection the manager keeps speaks for its peer; an
        // unspecified address or port 0 is no one's address.
        let Some(c) = self.conns.get(conn) else {
            self.stats.stale_events += 1;
            return;
        };
        if observed.ip().is_unspecified() || observed.port() == 0 {
            self.metrics.observed_addresses_refused += 1;
            return;
        }
        let observer = c.remote.ip();
        if self.observed.insert(observer, observed, conn) {
            self.metrics.observed_addresses_replaced += 1;
        }
        self.reclassify();
    }

    /// A closed connection's observation goes with it.
    pub(super) fn forget_observation(&mut self, conn: ConnId) {
        self.observed.forget_conn(conn);
        self.reclassify();
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
        }
    }
}
