//! The virtual network: addresses, per-link latency, loss, partitions,
//! hosts going offline, and NAT models. It decides the fate of a packet;
//! it holds no packets itself (the [`crate::Sim`] queue does).
//!
//! Everything here is a function of the simulation's seed and of the order
//! of calls, so the same run gives the same fates.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A host of the simulation, numbered from 0 in the order they were added.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct HostId(pub u32);

impl HostId {
    /// The index into per-host tables.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The port every host listens on (behind a NAT: on its private address).
pub const NODE_PORT: u16 = 1314;
/// The first port a NAT hands out for a mapping.
const FIRST_MAPPED_PORT: u16 = 40_000;
/// The public IP addresses: host `i` has `11.0.0.1 + 256 i`, each host in
/// a /24 of its own, as hosts of an open network are (the routing table
/// limits contacts per /24: `Config::ip_group_limits`).
const IP_BASE: u32 = u32::from_be_bytes([11, 0, 0, 1]);

/// How a host sits behind a NAT, as RFC 4787 classifies it: how the NAT maps
/// its outbound flows (endpoint-independent or not) and which unsolicited
/// inbound packets it lets through.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub enum NatType {
    /// No NAT: the host's address is public and anyone can reach it.
    #[default]
    None,
    /// One mapping for all destinations; once it exists, anyone may send to it.
    FullCone,
    /// One mapping; inbound only from IP addresses the host has sent to.
    RestrictedCone,
    /// One mapping; inbound only from the exact IP and port the host has sent to.
    PortRestricted,
    /// A new mapping (a new public port) per destination; inbound only from
    /// that destination to that port. The address a third node observes is
    /// useless to anyone else, so hole punching fails towards a symmetric
    /// host unless the other side filters by IP only or not at all; there,
    /// and between two symmetric hosts, a relay connects them.
    Symmetric,
}

impl NatType {
    /// Every type, for random choices.
    pub const ALL: [NatType; 5] = [
        NatType::None,
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestricted,
        NatType::Symmetric,
    ];

    /// How a finder behind `finder` reaches a target behind `target` that
    /// it learned of through a public node both joined by (and are still
    /// connected to, and which relays): through signalling and hole
    /// punching where a punch gets through, through the public node as a
    /// relay where it cannot.
    /// A lookup asks the node that can signal a candidate before it sends
    /// the candidate anything (a datagram that reaches a connection-tracking
    /// NAT first spoils the punch), so even a target anyone may send to is
    /// reached by signal. The model both simulation levels are checked
    /// against.
    pub fn reach(finder: NatType, target: NatType) -> Option<keynode_core::ContactMode> {
        use keynode_core::ContactMode;
        Some(match (finder, target) {
            // Anyone may send to these.
            (_, NatType::None | NatType::FullCone) => ContactMode::Signal,
            // The symmetric target punched from a new port.
            (_, NatType::Symmetric) => ContactMode::Relay,
            // The symmetric finder dials from a port the target never saw.
            (NatType::Symmetric, NatType::PortRestricted) => ContactMode::Relay,
            _ => ContactMode::Signal,
        })
    }
}

/// The state of one host's NAT: its mappings and what it has sent to.
#[derive(Clone, Debug, Default)]
struct Nat {
    kind: NatType,
    /// Symmetric: the public port of each destination; cone types use the
    /// key `None` for their one mapping.
    ports: BTreeMap<Option<SocketAddr>, u16>,
    /// The destinations the host has sent to (the filter's memory).
    sent_to: BTreeMap<SocketAddr, ()>,
}

/// A distribution of one-way link latencies. Each pair of hosts draws its
/// latency once (a function of the seed and the pair), so a link is stable.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Latency {
    /// Every link the same.
    Constant(Duration),
    /// Uniform between `min` and `max`.
    Uniform {
        /// Shortest.
        min: Duration,
        /// Longest.
        max: Duration,
    },
    /// Log-normal with this median and shape `sigma`, clamped to `max`:
    /// most links short, a long tail of slow ones.
    LogNormal {
        /// The median latency.
        median: Duration,
        /// The standard deviation of the latency's logarithm.
        sigma: f64,
        /// The longest latency drawn.
        max: Duration,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::LogNormal {
            median: Duration::from_millis(40),
            sigma: 0.5,
            max: Duration::from_millis(400),
        }
    }
}

/// The network's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// One-way latency of each link.
    pub latency: Latency,
    /// Each packet is lost with this probability. Lost connection packets
    /// are retransmitted after `retransmit` (doubling), lost dial packets
    /// after 1 s (doubling), as QUIC does, until the deadline passes.
    pub loss: f64,
    /// The first retransmission delay of a lost packet on a connection.
    pub retransmit: Duration,
    /// How long a connection to a host that vanished stays in its peers'
    /// tables before they notice (QUIC's max idle time).
    pub idle_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency: Latency::default(),
            loss: 0.0,
            retransmit: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a packet did not arrive.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Drop {
    /// No host has that address.
    NoSuchHost,
    /// The destination (or the source) is offline or gone.
    Offline,
    /// The two hosts are on different sides of a partition.
    Partitioned,
    /// The destination's NAT filtered it.
    Filtered,
    /// Lost on the way (every retransmission too).
    Lost,
}

/// The virtual network.
#[derive(Debug)]
pub struct Network {
    config: NetConfig,
    seed: u64,
    online: Vec<bool>,
    /// The partition group of each host; hosts talk only within a group.
    group: Vec<u16>,
    nat: Vec<Option<Box<Nat>>>,
}

impl Network {
    /// An empty network; `seed` draws link latencies.
    pub fn new(config: NetConfig, seed: u64) -> Self {
        Self {
            config,
            seed,
            online: Vec::new(),
            group: Vec::new(),
            nat: Vec::new(),
        }
    }

    /// The parameters.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Changes the share of packets lost from now on (a scenario that
    /// sets a connection up first, then makes the link lossy). The draws
    /// stay the simulation's seeded ones.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Adds a host behind `nat`; it is online.
    pub fn add_host(&mut self, nat: NatType) -> HostId {
        let id = HostId(u32::try_from(self.online.len()).expect("fewer than 2^32 hosts"));
        self.online.push(true);
        self.group.push(0);
        self.nat.push((nat != NatType::None).then(|| {
            Box::new(Nat {
                kind: nat,
                ..Nat::default()
            })
        }));
        id
    }

    /// The number of hosts.
    pub fn len(&self) -> usize {
        self.online.len()
    }

    /// Whether there are no hosts.
    pub fn is_empty(&self) -> bool {
        self.online.is_empty()
    }

    /// The host's NAT type.
    pub fn nat_type(&self, host: HostId) -> NatType {
        self.nat
            .get(host.index())
            .and_then(|n| n.as_ref())
            .map_or(NatType::None, |n| n.kind)
    }

    /// The host's public IP address (its NAT's, if it has one).
    pub fn ip(host: HostId) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(IP_BASE.wrapping_add(host.0 << 8)))
    }

    /// The address others dial to reach a host without a NAT (and where a
    /// host listens, behind one).
    pub fn listen_address(host: HostId) -> SocketAddr {
        SocketAddr::new(Self::ip(host), NODE_PORT)
    }

    /// The host owning a public IP address.
    pub fn host_of(&self, address: SocketAddr) -> Option<HostId> {
        let IpAddr::V4(ip) = address.ip() else {
            return None;
        };
        let offset = u32::from(ip).checked_sub(IP_BASE)?;
        let n = offset >> 8;
        (offset & 0xff == 0 && (n as usize) < self.online.len()).then_some(HostId(n))
    }

    /// Whether the host is online.
    pub fn is_online(&self, host: HostId) -> bool {
        self.online.get(host.index()).copied().unwrap_or(false)
    }

    /// Takes a host off the network or puts it back.
    pub fn set_online(&mut self, host: HostId, online: bool) {
        if let Some(o) = self.online.get_mut(host.index()) {
            *o = online;
        }
    }

    /// Splits the network: each list is a side; hosts not listed form one
    /// more side together.
    pub fn partition(&mut self, sides: &[&[HostId]]) {
        self.group.iter_mut().for_each(|g| *g = 0);
        for (i, side) in sides.iter().enumerate() {
            let g = u16::try_from(i + 1).expect("fewer than 65535 sides");
            for host in *side {
                if let Some(slot) = self.group.get_mut(host.index()) {
                    *slot = g;
                }
            }
        }
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
    }

    /// Whether `a` and `b` can exchange packets now (both online, same side).
    pub fn can_talk(&self, a: HostId, b: HostId) -> Result<(), Drop> {
        if !self.is_online(a) || !self.is_online(b) {
            return Err(Drop::Offline);
        }
        if self.group.get(a.index()) != self.group.get(b.index()) {
            return Err(Drop::Partitioned);
        }
        Ok(())
    }

    /// The one-way latency of the link between `a` and `b`.
    pub fn latency(&self, a: HostId, b: HostId) -> Duration {
        let (lo, hi) = if a <= b { (a.0, b.0) } else { (b.0, a.0) };
        let h = mix(self.seed ^ mix((u64::from(lo) << 32) | u64::from(hi)));
        let u = unit(h);
        match self.config.latency {
            Latency::Constant(d) => d,
            Latency::Uniform { min, max } => min + (max.saturating_sub(min)).mul_f64(u),
            Latency::LogNormal { median, sigma, max } => {
                // Box-Muller from two uniforms of the pair's hash.
                let u1 = unit(mix(h)).max(f64::MIN_POSITIVE);
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u).cos();
                median.mul_f64((sigma * z).exp()).min(max)
            }
        }
    }

    /// The delay of one message on a connection between `a` and `b`:
    /// latency plus the retransmissions of lost packets, or `Lost` if
    /// those pass `budget`.
    pub fn connection_delay(
        &self,
        rng: &mut ChaCha8Rng,
        a: HostId,
        b: HostId,
        budget: Duration,
    ) -> Result<Duration, Drop> {
        self.can_talk(a, b)?;
        let latency = self.latency(a, b);
        let mut delay = latency;
        let mut backoff = self.config.retransmit.max(latency * 3);
        if self.config.loss > 0.0 {
            while rng.random_bool(self.config.loss.min(1.0)) {
                delay += backoff;
                backoff *= 2;
                if delay > budget {
                    return Err(Drop::Lost);
                }
            }
        }
        Ok(delay)
    }

    /// Whether one packet is lost (the loss rate).
    pub fn lost(&self, rng: &mut ChaCha8Rng) -> bool {
        self.config.loss > 0.0 && rng.random_bool(self.config.loss.min(1.0))
    }

    /// `from` sends a packet to `to`: its NAT creates or reuses a mapping and
    /// remembers the destination. Returns the packet's public source address.
    pub fn outbound(&mut self, from: HostId, to: SocketAddr) -> SocketAddr {
        let ip = Self::ip(from);
        let Some(Some(nat)) = self.nat.get_mut(from.index()) else {
            return SocketAddr::new(ip, NODE_PORT);
        };
        let key = (nat.kind == NatType::Symmetric).then_some(to);
        let next = FIRST_MAPPED_PORT.saturating_add(u16::try_from(nat.ports.len()).unwrap_or(0));
        let port = *nat.ports.entry(key).or_insert(next);
        nat.sent_to.insert(to, ());
        SocketAddr::new(ip, port)
    }

    /// The public source address of `from`'s packets to `to`, without sending.
    pub fn source_address(&self, from: HostId, to: SocketAddr) -> Option<SocketAddr> {
        let ip = Self::ip(from);
        let Some(Some(nat)) = self.nat.get(from.index()) else {
            return Some(SocketAddr::new(ip, NODE_PORT));
        };
        let key = (nat.kind == NatType::Symmetric).then_some(to);
        nat.ports.get(&key).map(|p| SocketAddr::new(ip, *p))
    }

    /// Whether an unsolicited packet from `source` to `destination` (a
    /// public address of `host`) passes `host`'s NAT.
    pub fn accepts(&self, host: HostId, destination: SocketAddr, source: SocketAddr) -> bool {
        let Some(Some(nat)) = self.nat.get(host.index()) else {
            return destination.port() == NODE_PORT;
        };
        let mapped = match nat.kind {
            NatType::Symmetric => nat.ports.get(&Some(source)),
            _ => nat.ports.get(&None),
        };
        if mapped != Some(&destination.port()) {
            return false;
        }
        match nat.kind {
            NatType::None | NatType::FullCone => true,
            NatType::RestrictedCone => nat.sent_to.keys().any(|a| a.ip() == source.ip()),
            NatType::PortRestricted | NatType::Symmetric => nat.sent_to.contains_key(&source),
        }
    }
}

/// SplitMix64's finaliser: a good 64-bit mix.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from 53 bits of `h`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net_with(kinds: &[NatType]) -> Network {
        let mut net = Network::new(NetConfig::default(), 1);
        for k in kinds {
            net.add_host(*k);
        }
        net
    }

    /// Can `a` dial `b` at the address a third node `s` observed for `b`,
    /// after `b` punched towards `a`'s address as `s` observed it?
    fn punch_works(a_kind: NatType, b_kind: NatType) -> bool {
        let mut net = net_with(&[a_kind, b_kind, NatType::None]);
        let (a, b, s) = (HostId(0), HostId(1), HostId(2));
        let s_addr = Network::listen_address(s);
        let a_seen = net.outbound(a, s_addr);
        let b_seen = net.outbound(b, s_addr);
        net.outbound(b, a_seen); // the punch
        let a_src = net.outbound(a, b_seen); // the dial
        net.accepts(b, b_seen, a_src)
    }

    #[test]
    fn hole_punching_follows_the_nat_table() {
        use NatType::*;
        for a in NatType::ALL {
            for b in NatType::ALL {
                let expected = match (a, b) {
                    (Symmetric, Symmetric) | (Symmetric, PortRestricted) => false,
                    // The symmetric side punched from a new port: the address
                    // the signaller saw is closed to everyone else.
                    (_, Symmetric) => false,
                    _ => true,
                };
                assert_eq!(punch_works(a, b), expected, "{a:?} dials {b:?}");
            }
        }
    }

    #[test]
    fn unsolicited_dials_reach_only_public_and_full_cone_hosts() {
        for kind in NatType::ALL {
            let mut net = net_with(&[NatType::None, kind, NatType::None]);
            let (a, b, s) = (HostId(0), HostId(1), HostId(2));
            let b_seen = net.outbound(b, Network::listen_address(s));
            let a_src = net.outbound(a, b_seen);
            let open = matches!(kind, NatType::None | NatType::FullCone);
            assert_eq!(net.accepts(b, b_seen, a_src), open, "{kind:?}");
        }
    }

    #[test]
    fn latency_is_per_link_and_symmetric() {
        let net = net_with(&[NatType::None; 50]);
        let l = net.latency(HostId(3), HostId(7));
        assert_eq!(l, net.latency(HostId(7), HostId(3)));
        let distinct: std::collections::BTreeSet<Duration> = (0..49)
            .map(|i| net.latency(HostId(i), HostId(i + 1)))
            .collect();
        assert!(distinct.len() > 40);
        assert!(distinct.iter().all(|d| *d <= Duration::from_millis(400)));
    }

    #[test]
    fn partitions_and_offline_hosts_stop_packets() {
        let mut net = net_with(&[NatType::None; 4]);
        assert_eq!(net.can_talk(HostId(0), HostId(1)), Ok(()));
        net.partition(&[&[HostId(0), HostId(1)]]);
        assert_eq!(net.can_talk(HostId(0), HostId(1)), Ok(()));
        assert_eq!(net.can_talk(HostId(0), HostId(2)), Err(Drop::Partitioned));
        net.heal();
        net.set_online(HostId(2), false);
        assert_eq!(net.can_talk(HostId(0), HostId(2)), Err(Drop::Offline));
    }
}
