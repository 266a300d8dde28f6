//! Admission of inbound connections, decided when their first Initial
//! arrives, before any TLS work, and the count of every connection by
//! source.
//!
//! The rules (limits in [`super::NetConfig`]):
//! - an Initial from an address not yet validated (no Retry token) is
//!   answered with a stateless Retry once `retry_above_handshakes`
//!   unvalidated handshakes are in progress (0: always), or once its IP has
//!   `max_handshakes_per_ip` of them: a flood of Initials that never
//!   answers a Retry holds no state beyond those few; so is one from a
//!   source at its bound of inbound connections (below);
//! - handshakes in progress are bounded in total (`max_handshakes`) and
//!   per source IP (`max_handshakes_per_ip`), validated and unvalidated
//!   ones apart, so that spoofed Initials in an IP's name cannot keep out a
//!   peer at that IP that answers the Retry;
//! - inbound connections (validated handshakes and connections up) are
//!   bounded per IP (`max_inbound_per_ip`), per /24 (IPv4) or /48 (IPv6)
//!   (`max_inbound_per_prefix`) and in total: `Config::max_connections`
//!   less the `reserved_outbound` slots, which inbound connections can
//!   never take; an unvalidated handshake that comes up past its IP's or
//!   prefix's bound is closed;
//! - where a validated Initial meets a limit it is refused
//!   (CONNECTION_REFUSED, stateless); an unvalidated one gets a Retry;
//! - loopback sources are exempt from the per-IP and per-prefix bounds only
//!   when `exempt_loopback` says so;
//! - a handshake not done in `handshake_timeout` is closed; a connection
//!   leaves every count when quinn has drained it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::node::NetConfig;
use crate::ip_group::{IpGroup, group_of_ip};
use crate::manager::ConnId;

/// What to do with an incoming connection attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Decision {
    /// Take it: its handshake starts.
    Accept {
        /// Whether its address was validated (it came with a Retry token).
        validated: bool,
    },
    /// Answer with a Retry: no state is kept.
    Retry,
    /// Refuse it (CONNECTION_REFUSED): no state is kept.
    Refuse(Refused),
}

/// Which limit refused an attempt.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Refused {
    /// `max_handshakes` or `max_handshakes_per_ip`.
    Handshakes,
    /// `max_inbound_per_ip`.
    PerIp,
    /// `max_inbound_per_prefix`.
    PerPrefix,
    /// Every inbound slot is taken.
    Slots,
}

/// Counters of admission, and the counts now.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub struct AdmissionStats {
    /// Inbound handshakes started.
    pub handshakes_accepted: u64,
    /// Retries sent.
    pub retries_sent: u64,
    /// Attempts refused by a handshake limit.
    pub refused_handshakes: u64,
    /// Attempts refused by `max_inbound_per_ip`.
    pub refused_per_ip: u64,
    /// Attempts refused by `max_inbound_per_prefix`.
    pub refused_per_prefix: u64,
    /// Attempts refused because every inbound slot was taken.
    pub refused_slots: u64,
    /// Attempts dropped without an answer (not a valid first Initial).
    pub ignored: u64,
    /// Inbound handshakes closed at `handshake_timeout`.
    pub handshakes_timed_out: u64,
    /// Inbound connections closed when up because their source was over its
    /// bound (an unvalidated handshake that completed).
    pub closed_over_limit: u64,
    /// Inbound connections closed to make room for an outbound one.
    pub evicted: u64,
    /// Connections moved along by the node's drives, in all: with each
    /// datagram routed to its connection, this grows with the input, not
    /// with the connections held.
    pub connections_driven: u64,
    /// Inbound handshakes in progress now (including those closing without
    /// having come up).
    pub handshaking: usize,
    /// Of those, from addresses not validated.
    pub handshaking_unvalidated: usize,
    /// Inbound connections up now.
    pub inbound_up: usize,
    /// Outbound connections (dialing or up) now.
    pub outbound: usize,
    /// Of those, up.
    pub outbound_up: usize,
    /// Entries in the node's connection table (every state, draining too).
    pub connections: usize,
    /// Connections waiting to be driven.
    pub dirty: usize,
    /// Connection deadlines in the timer table.
    pub deadlines: usize,
    /// Source IPs and prefixes counted.
    pub sources: usize,
}

/// What a connection counts as.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Inbound, in its handshake, its address not validated.
    Unvalidated,
    /// Inbound, in its handshake, its address validated.
    Validated,
    /// Inbound, up.
    Inbound,
    /// Outbound, in its handshake.
    Outbound,
    /// Outbound, up.
    OutboundUp,
    /// Closed by the node (to make room, idle, a finished dial-back),
    /// draining: counts nothing.
    Closing,
}

/// Counts of one source IP.
#[derive(Clone, Copy, Default, Debug)]
struct OfIp {
    unvalidated: usize,
    validated: usize,
    inbound: usize,
}

/// The /24 (IPv4) or /48 (IPv6) of an address, the routing table's
/// [`IpGroup`] (one rule for both: what one network may hold).
fn prefix(ip: IpAddr) -> IpGroup {
    group_of_ip(&ip)
}

/// Every connection by source and kind, and the admission counters.
#[derive(Debug, Default)]
pub(super) struct Admission {
    kinds: BTreeMap<ConnId, (IpAddr, Kind)>,
    by_ip: BTreeMap<IpAddr, OfIp>,
    /// Validated handshakes and connections up, per prefix.
    by_prefix: BTreeMap<IpGroup, usize>,
    unvalidated: usize,
    validated: usize,
    inbound: usize,
    outbound: usize,
    outbound_up: usize,
    pub(super) stats: AdmissionStats,
}

impl Admission {
    /// Not bounded per IP or prefix: loopback (if so configured), and a
    /// relayed peer's mapped address. Every mapped address is in one
    /// discard-only /64 (see `relay.rs`), so counted as a network they
    /// would let in `max_inbound_per_prefix` relayed peers in all; what
    /// bounds them instead is the relays' pairs per node and this node's
    /// relayed paths (`RelayConfig::max_paths`), and the slots.
    fn exempt(net: &NetConfig, ip: IpAddr) -> bool {
        (net.exempt_loopback && ip.is_loopback())
            || super::relay::is_relayed(&std::net::SocketAddr::new(ip, 0))
    }

    /// Decides on an attempt from `ip`, `validated` if it carries a Retry
    /// token, `may_retry` if a Retry may be sent; `max_connections` is the
    /// manager's. Counts the refusals and retries (not the acceptance: see
    /// [`Admission::accepted`]).
    pub(super) fn decide(
        &mut self,
        net: &NetConfig,
        max_connections: usize,
        ip: IpAddr,
        validated: bool,
        may_retry: bool,
    ) -> Decision {
        // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6
        // addresses: counted as such, every IPv4 peer would share one /48
        // and none would be loopback.
        let ip = ip.to_canonical();
        let of_ip = self.by_ip.get(&ip).copied().unwrap_or_default();
        let exempt = Self::exempt(net, ip);
        let handshakes = self.unvalidated + self.validated;
        let slots = max_connections.saturating_sub(net.reserved_outbound);
        let of_prefix = self.by_prefix.get(&prefix(ip)).copied().unwrap_or(0);
        let source_full = !exempt
            && (of_ip.validated + of_ip.inbound >= net.max_inbound_per_ip
                || of_prefix >= net.max_inbound_per_prefix);
        let decision = if !validated {
            // A source at its bound gets a Retry too: if its address is
            // real, the validated Initial that follows is refused by name.
            let busy = self.unvalidated >= net.retry_above_handshakes
                || (!exempt && of_ip.unvalidated >= net.max_handshakes_per_ip)
                || source_full;
            let full = handshakes >= net.max_handshakes
                || self.inbound + self.validated + self.unvalidated >= slots;
            if (busy || full) && may_retry {
                Decision::Retry
            } else if busy || full {
                Decision::Refuse(Refused::Handshakes)
            } else {
                Decision::Accept { validated: false }
            }
        } else if handshakes >= net.max_handshakes
            || (!exempt && of_ip.validated >= net.max_handshakes_per_ip)
        {
            Decision::Refuse(Refused::Handshakes)
        } else if !exempt && of_ip.validated + of_ip.inbound >= net.max_inbound_per_ip {
            Decision::Refuse(Refused::PerIp)
        } else if !exempt && of_prefix >= net.max_inbound_per_prefix {
            Decision::Refuse(Refused::PerPrefix)
        } else if self.inbound + self.validated + self.unvalidated >= slots {
            Decision::Refuse(Refused::Slots)
        } else {
            Decision::Accept { validated: true }
        };
        match decision {
            Decision::Retry => self.stats.retries_sent += 1,
            Decision::Refuse(Refused::Handshakes) => self.stats.refused_handshakes += 1,
            Decision::Refuse(Refused::PerIp) => self.stats.refused_per_ip += 1,
            Decision::Refuse(Refused::PerPrefix) => self.stats.refused_per_prefix += 1,
            Decision::Refuse(Refused::Slots) => self.stats.refused_slots += 1,
            Decision::Accept { .. } => {}
        }
        decision
    }

    /// An inbound handshake started.
    pub(super) fn accepted(&mut self, id: ConnId, ip: IpAddr, validated: bool) {
        let ip = ip.to_canonical();
        self.stats.handshakes_accepted += 1;
        let kind = if validated {
            Kind::Validated
        } else {
            Kind::Unvalidated
        };
        self.add(id, ip, kind);
    }

    /// An outbound connection was made.
    pub(super) fn dialed(&mut self, id: ConnId, ip: IpAddr) {
        self.add(id, ip.to_canonical(), Kind::Outbound);
    }

    /// An outbound connection came up.
    pub(super) fn dialed_up(&mut self, id: ConnId) {
        if let Some((_, kind @ Kind::Outbound)) = self.kinds.get_mut(&id) {
            *kind = Kind::OutboundUp;
            self.outbound_up += 1;
        }
    }

    /// An inbound connection was closed to make room: it counts nothing
    /// while it drains.
    pub(super) fn evicted(&mut self, id: ConnId) {
        if let Some((_, Kind::Inbound)) = self.kinds.get(&id) {
            self.stats.evicted += 1;
            self.closing(id);
        }
    }

    /// A connection this node closed: it counts nothing while it drains.
    pub(super) fn closing(&mut self, id: ConnId) {
        if let Some(&(ip, kind)) = self.kinds.get(&id)
            && kind != Kind::Closing
        {
            self.remove(id);
            self.kinds.insert(id, (ip, Kind::Closing));
        }
    }

    /// An inbound handshake completed. False if its source is over its
    /// bound (it must be closed; it stays counted as a handshake until it
    /// is forgotten).
    pub(super) fn came_up(&mut self, net: &NetConfig, id: ConnId) -> bool {
        let Some(&(ip, kind)) = self.kinds.get(&id) else {
            return true;
        };
        if kind != Kind::Unvalidated && kind != Kind::Validated {
            return true;
        }
        if kind == Kind::Unvalidated && !Self::exempt(net, ip) {
            let of_ip = self.by_ip.get(&ip).copied().unwrap_or_default();
            let of_prefix = self.by_prefix.get(&prefix(ip)).copied().unwrap_or(0);
            if of_ip.validated + of_ip.inbound >= net.max_inbound_per_ip
                || of_prefix >= net.max_inbound_per_prefix
            {
                self.stats.closed_over_limit += 1;
                return false;
            }
        }
        self.remove(id);
        self.add(id, ip, Kind::Inbound);
        true
    }

    /// A connection is forgotten: it leaves every count.
    pub(super) fn remove(&mut self, id: ConnId) {
        let Some((ip, kind)) = self.kinds.remove(&id) else {
            return;
        };
        let counted_in_prefix = matches!(kind, Kind::Validated | Kind::Inbound);
        if let Some(of_ip) = self.by_ip.get_mut(&ip) {
            match kind {
                Kind::Unvalidated => of_ip.unvalidated = of_ip.unvalidated.saturating_sub(1),
                Kind::Validated => of_ip.validated = of_ip.validated.saturating_sub(1),
                Kind::Inbound => of_ip.inbound = of_ip.inbound.saturating_sub(1),
                Kind::Outbound | Kind::OutboundUp | Kind::Closing => {}
            }
            if of_ip.unvalidated + of_ip.validated + of_ip.inbound == 0 {
                self.by_ip.remove(&ip);
            }
        }
        if counted_in_prefix {
            let p = prefix(ip);
            if let Some(n) = self.by_prefix.get_mut(&p) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_prefix.remove(&p);
                }
            }
        }
        match kind {
            Kind::Unvalidated => self.unvalidated = self.unvalidated.saturating_sub(1),
            Kind::Validated => self.validated = self.validated.saturating_sub(1),
            Kind::Inbound => self.inbound = self.inbound.saturating_sub(1),
            Kind::Outbound => self.outbound = self.outbound.saturating_sub(1),
            Kind::OutboundUp => {
                self.outbound = self.outbound.saturating_sub(1);
                self.outbound_up = self.outbound_up.saturating_sub(1);
            }
            Kind::Closing => {}
        }
    }

    fn add(&mut self, id: ConnId, ip: IpAddr, kind: Kind) {
        self.kinds.insert(id, (ip, kind));
        let of_ip = match kind {
            Kind::Outbound | Kind::OutboundUp | Kind::Closing => None,
            _ => Some(self.by_ip.entry(ip).or_default()),
        };
        if let Some(of_ip) = of_ip {
            match kind {
                Kind::Unvalidated => of_ip.unvalidated += 1,
                Kind::Validated => of_ip.validated += 1,
                _ => of_ip.inbound += 1,
            }
        }
        if matches!(kind, Kind::Validated | Kind::Inbound) {
            *self.by_prefix.entry(prefix(ip)).or_default() += 1;
        }
        match kind {
            Kind::Unvalidated => self.unvalidated += 1,
            Kind::Validated => self.validated += 1,
            Kind::Inbound => self.inbound += 1,
            Kind::Outbound => self.outbound += 1,
            Kind::OutboundUp => {
                self.outbound += 1;
                self.outbound_up += 1;
            }
            Kind::Closing => {}
        }
    }

    /// Whether a connection is inbound and up.
    pub(super) fn is_inbound_up(&self, id: ConnId) -> bool {
        matches!(self.kinds.get(&id), Some((_, Kind::Inbound)))
    }

    /// The counters and the counts now.
    pub(super) fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            handshaking: self.unvalidated + self.validated,
            handshaking_unvalidated: self.unvalidated,
            inbound_up: self.inbound,
            outbound: self.outbound,
            outbound_up: self.outbound_up,
            sources: self.by_ip.len() + self.by_prefix.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn unvalidated_initials_get_a_retry_past_their_share() {
        let net = NetConfig::default();
        let mut a = Admission::default();
        for n in 0..net.max_handshakes_per_ip {
            assert_eq!(
                a.decide(&net, 1024, ip(1), false, true),
                Decision::Accept { validated: false }
            );
            a.accepted(ConnId(n as u64), ip(1), false);
        }
        assert_eq!(a.decide(&net, 1024, ip(1), false, true), Decision::Retry);
        // Spoofed Initials in its name do not keep out a peer there that
        // answers the Retry.
        assert_eq!(
            a.decide(&net, 1024, ip(1), true, false),
            Decision::Accept { validated: true }
        );
    }

    #[test]
    fn inbound_is_bounded_per_ip_per_prefix_and_leaves_the_reserved_slots() {
        let net = NetConfig {
            max_handshakes_per_ip: 100,
            max_handshakes: 1000,
            ..NetConfig::default()
        };
        let mut a = Admission::default();
        let mut id = 0;
        let mut take = |a: &mut Admission, ip: IpAddr, max| {
            let d = a.decide(&net, max, ip, true, false);
            if d == (Decision::Accept { validated: true }) {
                id += 1;
                a.accepted(ConnId(id), ip, true);
                assert!(a.came_up(&net, ConnId(id)));
            }
            d
        };
        for _ in 0..net.max_inbound_per_ip {
            assert_eq!(
                take(&mut a, ip(1), 1024),
                Decision::Accept { validated: true }
            );
        }
        assert_eq!(take(&mut a, ip(1), 1024), Decision::Refuse(Refused::PerIp));
        for n in 2..=4 {
            for _ in 0..net.max_inbound_per_ip {
                take(&mut a, ip(n), 1024);
            }
        }
        assert_eq!(
            take(&mut a, ip(5), 1024),
            Decision::Refuse(Refused::PerPrefix)
        );
        // Another prefix, but every inbound slot of 32 + reserved is taken.
        let other = IpAddr::from([203, 0, 113, 1]);
        assert_eq!(
            take(&mut a, other, 32 + net.reserved_outbound),
            Decision::Refuse(Refused::Slots)
        );
        assert_eq!(
            take(&mut a, other, 33 + net.reserved_outbound),
            Decision::Accept { validated: true }
        );
        for n in 1..=id {
            a.remove(ConnId(n));
        }
        assert_eq!(a.stats().sources, 0);
        assert_eq!(a.stats().inbound_up, 0);
    }

    /// A dual-stack socket names IPv4 peers by IPv4-mapped IPv6 addresses.
    #[test]
    fn ipv4_mapped_sources_count_in_their_own_ipv4_network() {
        let mapped = |a: [u8; 4]| IpAddr::from(std::net::Ipv4Addr::from(a).to_ipv6_mapped());
        let net = NetConfig {
            max_handshakes_per_ip: 100,
            max_handshakes: 1000,
            ..NetConfig::default()
        };
        let mut a = Admission::default();
        let mut id = 0;
        for n in 1..=4 {
            for _ in 0..net.max_inbound_per_ip {
                let source = mapped([198, 51, 100, n]);
                assert_eq!(
                    a.decide(&net, 1024, source, true, false),
                    Decision::Accept { validated: true }
                );
                id += 1;
                a.accepted(ConnId(id), source, true);
                assert!(a.came_up(&net, ConnId(id)));
            }
        }
        // 198.51.100/24 is full, 203.0.113/24 is another network.
        assert_eq!(
            a.decide(&net, 1024, mapped([198, 51, 100, 5]), true, false),
            Decision::Refuse(Refused::PerPrefix)
        );
        assert_eq!(
            a.decide(&net, 1024, mapped([203, 0, 113, 1]), true, false),
            Decision::Accept { validated: true }
        );
        // And mapped loopback is loopback.
        let exempt = NetConfig {
            exempt_loopback: true,
            ..net.clone()
        };
        for n in 0..=net.max_inbound_per_prefix {
            let source = mapped([127, 0, 0, 1]);
            assert_eq!(
                a.decide(&exempt, 4096, source, true, false),
                Decision::Accept { validated: true }
            );
            a.accepted(ConnId(10_000 + n as u64), source, true);
            assert!(a.came_up(&exempt, ConnId(10_000 + n as u64)));
        }
    }
}
