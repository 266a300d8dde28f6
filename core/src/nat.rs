//! The node's NAT class, from the addresses its peers observe it at.
//!
//! Every peer tells the node, once per connection, the address it sees the
//! node's datagrams come from (`Frame::Observed`, sent by the net layer when
//! a connection comes up). Those observations are kept per local socket
//! (the node has one QUIC socket, so one table, in the manager), and
//! [`classify`] turns them into a [`NatClass`]: the strategy a node picks
//! to be reached (punch, or go through a relay) follows from it.
//!
//! # When it is told
//!
//! In the connection's first exchange, not in answers: every connection,
//! inbound or outbound, carries one at once, whether or not a request
//! ever goes over it (a node that only accepts connections learns its
//! address too), the requests and responses keep their encodings (no
//! version bump; see `wire`'s "Versioning"), and it costs one small
//! stream per connection instead of bytes in every answer. A path that
//! changes under a live connection (a NAT rebinding) is not told again:
//! the next connection is.
//!
//! # What is believed
//!
//! - An observation is keyed by the observer's IP as this node sees it (the
//!   connection's remote address, not anything the peer claims), so one
//!   host, with however many keys or connections, is one vote.
//! - It holds only for the connection it came on: it leaves the table when
//!   that connection closes (a later connection from the same IP brings its
//!   own). A peer's word about this node's address is evidence of the path
//!   the two share, and of nothing once that path is gone.
//! - The table is bounded (`Config::max_observed_addresses`); a new
//!   observer past the bound replaces the oldest observation, so the table
//!   follows a mapping that changes (a NAT rebooted, a new network).
//!
//! # The rule
//!
//! With `n` observers (distinct IPs), a class needs at least two of them
//! and a strict majority, so that with three a single lying observer is
//! outvoted, and with two a liar makes the class [`NatClass::Unknown`]
//! rather than wrong:
//! - the most observed address has at least two observers and more than
//!   half: [`NatClass::Public`] if it is one of the socket's own addresses
//!   ([`LocalAddresses`]), [`NatClass::Cone`] otherwise (the mapping does
//!   not depend on the destination);
//! - otherwise, the most observed IP has at least two observers and more
//!   than half, but they see it with different ports: [`NatClass::Symmetric`]
//!   (the mapping varies by destination);
//! - otherwise [`NatClass::Unknown`].
//!
//! # A socket bound to the wildcard address
//!
//! A socket bound to `0.0.0.0` or `::` has no single address to compare
//! with: peers see one of the host's interface addresses. The driver tells
//! the core which it knows ([`LocalAddresses::interfaces`]); a loopback
//! address is always the host's own. An observed address that matches none
//! of them is never taken as the node's own, so a public host whose
//! interface address the driver did not give is reported [`NatClass::Cone`]
//! (its mapping is endpoint-independent, which is true), never wrongly
//! [`NatClass::Public`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::ip_group::{IpGroup, group_of_ip};
use crate::manager::ConnId;
use crate::metrics::LabelSet;

/// How this node's address, as its peers see it, relates to its socket.
#[derive(
    Clone, Copy, PartialEq, Eq, Debug, Default, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NatClass {
    /// Not enough agreeing observers (fewer than two, or no majority).
    #[default]
    Unknown,
    /// Peers see the socket's own address: no NAT in between.
    Public,
    /// Peers at different IPs see one address that is not the socket's
    /// own: a NAT whose mapping does not depend on the destination
    /// (endpoint-independent; hole punching works).
    Cone,
    /// Peers see one IP with a different port each: a NAT that maps each
    /// destination to a new port (punching towards it cannot work).
    Symmetric,
}

impl NatClass {
    /// `unknown`, `public`, `cone` or `symmetric`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Cone => "cone",
            Self::Symmetric => "symmetric",
        }
    }
}

impl std::fmt::Display for NatClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl LabelSet for NatClass {
    const ALL: &'static [Self] = &[Self::Unknown, Self::Public, Self::Cone, Self::Symmetric];

    fn index(self) -> usize {
        match self {
            Self::Unknown => 0,
            Self::Public => 1,
            Self::Cone => 2,
            Self::Symmetric => 3,
        }
    }

    fn labels(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Unknown => &[("class", "unknown")],
            Self::Public => &[("class", "public")],
            Self::Cone => &[("class", "cone")],
            Self::Symmetric => &[("class", "symmetric")],
        }
    }
}

/// The addresses that are the local socket's own.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct LocalAddresses {
    /// The address the socket is bound to (its IP may be the wildcard).
    /// `None`: not told; no observed address is taken as the node's own.
    pub bound: Option<SocketAddr>,
    /// For a socket bound to the wildcard: the host's interface addresses
    /// the driver knows of (with the bound port, each is the socket's).
    pub interfaces: Vec<IpAddr>,
}

impl LocalAddresses {
    /// The addresses of a socket bound to `bound`, on a host with these
    /// interface addresses (used only if `bound` is the wildcard).
    pub fn new(bound: SocketAddr, interfaces: Vec<IpAddr>) -> Self {
        Self {
            bound: Some(bound),
            interfaces,
        }
    }

    /// Whether `address` is the socket's own.
    pub fn is_own(&self, address: SocketAddr) -> bool {
        let Some(bound) = self.bound else {
            return false;
        };
        if !bound.ip().is_unspecified() {
            return address == bound;
        }
        // A wildcard socket receives on every address of its family.
        address.port() == bound.port()
            && address.is_ipv4() == bound.is_ipv4()
            && (address.ip().is_loopback() || self.interfaces.contains(&address.ip()))
    }
}

/// One peer's observation: this node's address as seen from `observer`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Observed {
    /// The observer's IP, as this node sees it.
    pub observer: IpAddr,
    /// The address it sees this node at.
    pub address: SocketAddr,
}

/// An address this node is observed at, and by how many observers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ObservedAddress {
    /// The address.
    pub address: SocketAddr,
    /// Observers (distinct IPs) that see it.
    pub observers: usize,
}

/// Classifies a socket from its observations (a later observation by the
/// same observer IP replaces an earlier one). Pure: see the module docs
/// for the rule.
pub fn classify(observations: &[Observed], local: &LocalAddresses) -> NatClass {
    let by_observer: BTreeMap<IpAddr, SocketAddr> = observations
        .iter()
        .map(|o| (o.observer, o.address))
        .collect();
    let n = by_observer.len();
    if n < 2 {
        return NatClass::Unknown;
    }
    let majority = |count: usize| count >= 2 && 2 * count > n;
    let mut addresses: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut ips: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for address in by_observer.values() {
        *addresses.entry(*address).or_default() += 1;
        *ips.entry(address.ip()).or_default() += 1;
    }
    // A strict majority is unique, so the order of ties does not matter.
    if let Some((&address, _)) = addresses.iter().find(|(_, c)| majority(**c)) {
        return if local.is_own(address) {
            NatClass::Public
        } else {
            NatClass::Cone
        };
    }
    if ips.values().any(|c| majority(*c)) {
        return NatClass::Symmetric;
    }
    NatClass::Unknown
}

/// One entry of the table.
#[derive(Clone, Copy, Debug)]
struct Entry {
    address: SocketAddr,
    conn: ConnId,
}

/// The observations of one local socket: at most `limit`, one per
/// observer IP, each tied to the connection it came on.
#[derive(Debug)]
pub(crate) struct ObservedAddresses {
    local: LocalAddresses,
    by_observer: BTreeMap<IpAddr, Entry>,
    limit: usize,
    class: NatClass,
    /// The connections that have given their observation.
    spoken: std::collections::BTreeSet<ConnId>,
}

/// What [`ObservedAddresses::insert`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Insert {
    /// A new observer's entry.
    Added,
    /// The observer's earlier entry (another connection from its network)
    /// replaced.
    Replaced,
    /// Refused: the table is full.
    Full,
}

/// Whom an observation counts for: the observer's network as the routing
/// table counts it (`ip_group::group_of_ip`: its /24 or /48), since one
/// host can hold many addresses of one network, written as that network's
/// first address; a loopback address stands for itself (processes of this
/// host).
pub(crate) fn observer_key(ip: IpAddr) -> IpAddr {
    let ip = ip.to_canonical();
    if ip.is_loopback() {
        return ip;
    }
    match group_of_ip(&ip) {
        IpGroup::V4([a, b, c]) => IpAddr::from([a, b, c, 0]),
        IpGroup::V6(prefix) => {
            let mut octets = [0u8; 16];
            for (o, p) in octets.iter_mut().zip(prefix) {
                *o = p;
            }
            IpAddr::from(octets)
        }
        // Not the group of an IP address.
        IpGroup::Hostname => ip,
    }
}

impl ObservedAddresses {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            local: LocalAddresses::default(),
            by_observer: BTreeMap::new(),
            limit: limit.max(1),
            class: NatClass::Unknown,
            spoken: std::collections::BTreeSet::new(),
        }
    }

    /// The class as last evaluated.
    pub(crate) fn class(&self) -> NatClass {
        self.class
    }

    /// Sets the socket's own addresses.
    pub(crate) fn set_local(&mut self, local: LocalAddresses) {
        self.local = local;
    }

    /// Whether `conn` has already given its observation: a connection
    /// speaks once (a peer that could repeat itself could flap the class
    /// and flood the event queue with its changes).
    pub(crate) fn has_spoken(&self, conn: ConnId) -> bool {
        self.spoken.contains(&conn)
    }

    /// Records `observer`'s observation, made on `conn` (see [`Insert`]).
    /// A full table refuses a new observer rather than pushing out an
    /// older one: the oldest entries are the long-lived connections
    /// (seeds), which a newcomer with many addresses must not displace.
    pub(crate) fn insert(&mut self, observer: IpAddr, address: SocketAddr, conn: ConnId) -> Insert {
        let known = self.by_observer.contains_key(&observer);
        if !known && self.by_observer.len() >= self.limit {
            return Insert::Full;
        }
        self.spoken.insert(conn);
        self.by_observer.insert(observer, Entry { address, conn });
        if known {
            Insert::Replaced
        } else {
            Insert::Added
        }
    }

    /// Forgets what came on `conn` (it closed); whether an entry went.
    pub(crate) fn forget_conn(&mut self, conn: ConnId) -> bool {
        self.spoken.remove(&conn);
        let before = self.by_observer.len();
        self.by_observer.retain(|_, e| e.conn != conn);
        self.by_observer.len() != before
    }

    /// Re-evaluates the class: `Some((previous, new))` if it changed.
    pub(crate) fn reclassify(&mut self) -> Option<(NatClass, NatClass)> {
        let observations: Vec<Observed> = self
            .by_observer
            .iter()
            .map(|(observer, e)| Observed {
                observer: *observer,
                address: e.address,
            })
            .collect();
        let class = classify(&observations, &self.local);
        let previous = std::mem::replace(&mut self.class, class);
        (previous != class).then_some((previous, class))
    }

    /// The addresses observed, most observers first (then by address).
    pub(crate) fn addresses(&self) -> Vec<ObservedAddress> {
        let mut counts: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for e in self.by_observer.values() {
            *counts.entry(e.address).or_default() += 1;
        }
        let mut out: Vec<ObservedAddress> = counts
            .into_iter()
            .map(|(address, observers)| ObservedAddress { address, observers })
            .collect();
        // Stable: equal counts stay in address order.
        out.sort_by_key(|a| std::cmp::Reverse(a.observers));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(observer: [u8; 4], address: &str) -> Observed {
        Observed {
            observer: IpAddr::from(observer),
            address: address.parse().unwrap(),
        }
    }

    fn bound(address: &str) -> LocalAddresses {
        LocalAddresses::new(address.parse().unwrap(), Vec::new())
    }

    #[test]
    fn two_observers_seeing_the_bound_address_make_it_public() {
        let local = bound("198.51.100.7:1314");
        let seen = [
            obs([203, 0, 113, 1], "198.51.100.7:1314"),
            obs([203, 0, 113, 2], "198.51.100.7:1314"),
        ];
        assert_eq!(classify(&seen, &local), NatClass::Public);
    }

    #[test]
    fn a_wildcard_socket_is_public_only_at_an_interface_address() {
        let seen = [
            obs([203, 0, 113, 1], "198.51.100.7:1314"),
            obs([203, 0, 113, 2], "198.51.100.7:1314"),
        ];
        let unknown_interfaces = bound("0.0.0.0:1314");
        assert_eq!(classify(&seen, &unknown_interfaces), NatClass::Cone);
        let known = LocalAddresses::new(
            "0.0.0.0:1314".parse().unwrap(),
            vec![IpAddr::from([198, 51, 100, 7])],
        );
        assert_eq!(classify(&seen, &known), NatClass::Public);
        // Loopback is always the host's own.
        let on_loopback = [
            obs([127, 0, 0, 2], "127.0.0.1:1314"),
            obs([127, 0, 0, 3], "127.0.0.1:1314"),
        ];
        assert_eq!(
            classify(&on_loopback, &unknown_interfaces),
            NatClass::Public
        );
        // Another port is not this socket.
        assert_eq!(classify(&seen, &bound("0.0.0.0:9")), NatClass::Cone);
    }

    #[test]
    fn one_address_from_different_observers_is_a_cone() {
        let local = bound("192.168.1.10:1314");
        let seen = [
            obs([203, 0, 113, 1], "198.51.100.7:40000"),
            obs([203, 0, 113, 2], "198.51.100.7:40000"),
        ];
        assert_eq!(classify(&seen, &local), NatClass::Cone);
    }

    #[test]
    fn a_port_per_destination_is_symmetric() {
        let local = bound("192.168.1.10:1314");
        let two = [
            obs([203, 0, 113, 1], "198.51.100.7:40000"),
            obs([203, 0, 113, 2], "198.51.100.7:40001"),
        ];
        assert_eq!(classify(&two, &local), NatClass::Symmetric);
        let three = [
            obs([203, 0, 113, 1], "198.51.100.7:40000"),
            obs([203, 0, 113, 2], "198.51.100.7:40001"),
            obs([203, 0, 113, 3], "198.51.100.7:40002"),
        ];
        assert_eq!(classify(&three, &local), NatClass::Symmetric);
    }

    #[test]
    fn one_lying_observer_is_outvoted_by_two() {
        let local = bound("198.51.100.7:1314");
        let liar = obs([203, 0, 113, 66], "192.0.2.1:9999");
        let honest = [
            obs([203, 0, 113, 1], "198.51.100.7:1314"),
            obs([203, 0, 113, 2], "198.51.100.7:1314"),
        ];
        let all = [honest[0], liar, honest[1]];
        assert_eq!(classify(&all, &local), NatClass::Public);
        // Against one honest observer, the liar makes it unknown, not wrong.
        assert_eq!(classify(&[honest[0], liar], &local), NatClass::Unknown);
        // A liar cannot turn a cone into a symmetric NAT either.
        let cone = [
            obs([203, 0, 113, 1], "198.51.100.9:40000"),
            obs([203, 0, 113, 2], "198.51.100.9:40000"),
            obs([203, 0, 113, 66], "198.51.100.9:40001"),
        ];
        assert_eq!(classify(&cone, &local), NatClass::Cone);
    }

    #[test]
    fn one_observer_is_not_enough() {
        let local = bound("198.51.100.7:1314");
        assert_eq!(classify(&[], &local), NatClass::Unknown);
        let one = [obs([203, 0, 113, 1], "198.51.100.7:1314")];
        assert_eq!(classify(&one, &local), NatClass::Unknown);
        // One host with two observations is still one observer.
        let same_host = [
            obs([203, 0, 113, 1], "198.51.100.7:1314"),
            obs([203, 0, 113, 1], "198.51.100.7:1314"),
        ];
        assert_eq!(classify(&same_host, &local), NatClass::Unknown);
    }

    #[test]
    fn an_observer_counts_for_its_network_and_loopback_for_itself() {
        let key = |s: &str| observer_key(s.parse().unwrap());
        assert_eq!(key("203.0.113.1"), key("203.0.113.200"));
        assert_ne!(key("203.0.113.1"), key("203.0.114.1"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:ffff::9"));
        assert_ne!(key("2001:db8:1::1"), key("2001:db8:2::1"));
        assert_eq!(key("::ffff:203.0.113.5"), key("203.0.113.1"));
        assert_ne!(key("127.0.0.2"), key("127.0.0.3"));
    }

    #[test]
    fn the_table_is_bounded_per_observer_and_tied_to_connections() {
        let mut table = ObservedAddresses::new(2);
        let at: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let ip = |n| IpAddr::from([203, 0, 113, n]);
        // One observer, however often it speaks, holds one entry.
        assert_eq!(table.insert(ip(1), at, ConnId(1)), Insert::Added);
        for _ in 0..4 {
            assert_eq!(table.insert(ip(1), at, ConnId(1)), Insert::Replaced);
        }
        assert!(table.has_spoken(ConnId(1)));
        assert_eq!(table.insert(ip(2), at, ConnId(2)), Insert::Added);
        assert_eq!(
            table.reclassify(),
            Some((NatClass::Unknown, NatClass::Cone))
        );
        assert_eq!(
            table.addresses(),
            vec![ObservedAddress {
                address: at,
                observers: 2
            }]
        );
        // A third observer finds the table full: refused, the older
        // observers stay.
        assert_eq!(table.insert(ip(3), at, ConnId(3)), Insert::Full);
        assert_eq!(table.by_observer.len(), 2);
        assert!(table.by_observer.contains_key(&ip(1)));
        assert!(!table.has_spoken(ConnId(3)));
        // A connection closed: its observation goes.
        table.forget_conn(ConnId(2));
        assert!(!table.has_spoken(ConnId(2)));
        assert_eq!(
            table.reclassify(),
            Some((NatClass::Cone, NatClass::Unknown))
        );
        assert_eq!(table.reclassify(), None);
    }
}
