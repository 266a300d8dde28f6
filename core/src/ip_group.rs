//! IP groups: the networks that address-diversity limits count in.
//!
//! NodeIds cost nothing to make, IP addresses do: one attacker with one
//! address can present any number of NodeIds, each landing in whichever
//! bucket or sub-range it likes. So the routing table and each lookup count
//! contacts by network (go-libp2p's peer-diversity filter does the same): an
//! IPv4 address counts in its /24, an IPv6 address in its /48 (an
//! IPv4-mapped IPv6 address as the IPv4 one), and every hostname in one
//! shared group (a name costs even less than a NodeId). [`IpGroupLimits`]
//! bounds how many contacts one group holds in a bucket and in the table,
//! and how many candidates it gives one lookup.
//!
//! Exemptions, each a field of [`IpGroupLimits`]: loopback addresses (on by
//! default: a loopback peer runs on this host, so no remote attacker can be
//! one, and local test networks live there), private and link-local ranges
//! (off by default: on a shared private network, such as a cloud VPC, they
//! are as cheap to an attacker as any other), and addresses whose only
//! scope is `local` (found by mDNS; off by default).

use std::net::IpAddr;

use crate::address::{Host, NodeAddress};
use crate::contact::NodeAddressScopes;

/// The network an address counts in: its /24 (IPv4), its /48 (IPv6), or the
/// one group of all hostnames.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum IpGroup {
    /// The first three bytes of an IPv4 address.
    V4([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6([u8; 6]),
    /// Every address given as a hostname.
    Hostname,
}

/// How many contacts or candidates one [`IpGroup`] may hold, and which
/// addresses are exempt. See the module docs of `ip_group` for why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpGroupLimits {
    /// Contacts of one group in one bucket; also the candidates of one group
    /// that one lookup takes from answers. Set it to `k` (and `per_table`
    /// high) to turn the limits off. Default 2.
    pub per_bucket: usize,
    /// Contacts of one group in the whole table. Default 6.
    pub per_table: usize,
    /// Loopback addresses are not counted. Default `true`: only processes on
    /// this host can connect from one.
    pub exempt_loopback: bool,
    /// Private and link-local addresses (10/8, 172.16/12, 192.168/16,
    /// 169.254/16, fc00::/7, fe80::/10) are not counted. Default `false`.
    pub exempt_private: bool,
    /// Addresses whose only scope is `local` (found by mDNS) are not
    /// counted. Default `false`.
    pub exempt_local_scope: bool,
}

impl Default for IpGroupLimits {
    fn default() -> Self {
        Self {
            per_bucket: 2,
            per_table: 6,
            exempt_loopback: true,
            exempt_private: false,
            exempt_local_scope: false,
        }
    }
}

impl IpGroupLimits {
    /// The group `address` counts in, or `None` if it is exempt. `scopes`
    /// are the address's scopes when known (a contact's), `None` for an
    /// address from a lookup answer (global by construction).
    pub fn group_of(
        &self,
        address: &NodeAddress,
        scopes: Option<NodeAddressScopes>,
    ) -> Option<IpGroup> {
        if self.exempt_local_scope && scopes.is_some_and(|s| s.local && !s.global) {
            return None;
        }
        let ip = match &address.host {
            Host::Name(_) => return Some(IpGroup::Hostname),
            Host::Ip(ip) => ip.to_canonical(),
        };
        if self.exempt_loopback && ip.is_loopback() {
            return None;
        }
        if self.exempt_private && is_private(&ip) {
            return None;
        }
        Some(group_of_ip(&ip))
    }
}

/// The group of an IP address, exemptions aside. `ip` must be canonical
/// (`IpAddr::to_canonical`).
pub(crate) fn group_of_ip(ip: &IpAddr) -> IpGroup {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpGroup::V4([a, b, c])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            IpGroup::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
        }
    }
}

/// Private and link-local ranges of both families.
fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            // fc00::/7 (unique local) and fe80::/10 (link-local).
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Per-group counts of a small set of contacts or candidates, each counted
/// once per group among its addresses.
pub(crate) fn distinct_groups<'a>(
    limits: &IpGroupLimits,
    addresses: impl Iterator<Item = (&'a NodeAddress, Option<NodeAddressScopes>)>,
) -> Vec<IpGroup> {
    let mut groups: Vec<IpGroup> = Vec::new();
    for (address, scopes) in addresses {
        if let Some(g) = limits.group_of(address, scopes)
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn at(ip: IpAddr) -> NodeAddress {
        NodeAddress::new(ip, 1)
    }

    #[test]
    fn groups_are_slash_24_and_slash_48() {
        let limits = IpGroupLimits::default();
        let a = limits.group_of(&at(Ipv4Addr::new(8, 8, 8, 1).into()), None);
        let b = limits.group_of(&at(Ipv4Addr::new(8, 8, 8, 200).into()), None);
        let c = limits.group_of(&at(Ipv4Addr::new(8, 8, 9, 1).into()), None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = Ipv4Addr::new(8, 8, 8, 7).to_ipv6_mapped();
        assert_eq!(limits.group_of(&at(mapped.into()), None), a);
        let v6 = |s: &str| limits.group_of(&at(s.parse::<Ipv6Addr>().unwrap().into()), None);
        assert_eq!(v6("2001:db8:1::1"), v6("2001:db8:1:ffff::2"));
        assert_ne!(v6("2001:db8:1::1"), v6("2001:db8:2::1"));
    }

    #[test]
    fn exemptions_follow_the_config() {
        let mut limits = IpGroupLimits::default();
        let lo = at(Ipv4Addr::LOCALHOST.into());
        let private = at(Ipv4Addr::new(192, 168, 1, 2).into());
        assert_eq!(limits.group_of(&lo, None), None);
        assert!(limits.group_of(&private, None).is_some());
        assert!(
            limits
                .group_of(&private, Some(NodeAddressScopes::LOCAL))
                .is_some()
        );
        limits.exempt_loopback = false;
        limits.exempt_private = true;
        limits.exempt_local_scope = true;
        assert_eq!(limits.group_of(&lo, None), Some(IpGroup::V4([127, 0, 0])));
        assert_eq!(limits.group_of(&private, None), None);
        let public = at(Ipv4Addr::new(8, 8, 8, 8).into());
        assert_eq!(
            limits.group_of(&public, Some(NodeAddressScopes::LOCAL)),
            None
        );
        assert!(
            limits
                .group_of(&public, Some(NodeAddressScopes::GLOBAL))
                .is_some()
        );
    }
}
