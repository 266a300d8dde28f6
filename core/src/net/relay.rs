//! Relaying: datagrams between two nodes that cannot reach each other
//! (a side behind a NAT that maps each destination to a new port), through a
//! third node both are connected to.
//!
//! # How a relayed path meets quinn-proto
//!
//! quinn-proto cannot move a client connection to a new remote address,
//! and it knows nothing of relays. keynode gives each relayed peer a
//! *mapped address* of its own (an address of the discard-only prefix
//! `100::/64`, RFC 6666, which no real peer has): the end-to-end QUIC
//! connection to the peer is an ordinary quinn-proto connection to that
//! address. What the endpoint sends there leaves the node's socket as a
//! relay frame to the relay ([`TO_PEER`], the peer's NodeId, the QUIC
//! packet); what the relay forwards from the peer ([`FROM_PEER`], its
//! NodeId, the packet) enters the endpoint as if it came from the mapped
//! address. So the QUIC connection stays end to end: the relay sees
//! packets it cannot read, and the peers authenticate each other's NodeIds
//! exactly as on a direct path.
//!
//! A relayed path is a **connection of its own**, not a path a connection
//! switches to and from. The mapped address always goes through its relay;
//! the upgrade to a direct path is a new, direct connection to the peer,
//! which becomes the peer's primary connection; the relayed one then ends
//! once its uses end (streams open on it run to their end; new ones open on
//! the direct connection). Why: a connection whose address sometimes means
//! UDP and sometimes a relay would keep one congestion window and RTT
//! estimate across two paths that share neither, and quinn-proto exposes
//! no way to reset them; a new connection starts both fresh, costs one
//! handshake per upgrade, and leaves every path's state to quinn-proto.
//!
//! # The frames
//!
//! A relay frame is one UDP datagram on the node's QUIC socket: a tag
//! byte, a NodeId (32 bytes) and the QUIC packet. The tags have the QUIC
//! fixed bit (0x40) clear, and keynode's endpoint does not let peers grease
//! that bit (`EndpointConfig::grease_quic_bit(false)`), so no QUIC packet
//! to a keynode node starts with one (the demultiplexing of RFC 7983). The
//! 33 bytes of header ride on top of QUIC's packets: a QUIC Initial (1,200
//! bytes) relayed is 1,233, which every path of 1,280-byte IPv6 or 576-byte
//! fragmenting IPv4 does not carry; keynode's relays are for paths of
//! 1,500-byte Ethernet MTU, the internet's common case.
//!
//! # Who may use a relay
//!
//! A frame is attributed to the node whose up connection comes from the
//! frame's source address (as TURN attributes data to an allocation's
//! 5-tuple, RFC 8656): the relay only forwards between the two sides of a
//! *pair* opened by a request on an authenticated connection
//! (`Request::RelayOpen`), to the address of the other side's connection.
//! A reservation (`Request::Reserve`) is a NAT'd node's standing claim on a
//! relay: its connection is kept, its NAT class known to those who open
//! pairs towards it. Every table is bounded and every byte counted against
//! the pair's and the reservation's token buckets ([`RelayConfig`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::manager::{ConnId, LeaseId};
use crate::nat::NatClass;
use crate::wire::RefusalReason;

/// The first byte of a frame from a node to its relay: forward to the NodeId.
pub(super) const TO_PEER: u8 = 0x01;
/// The first byte of a frame from a relay: forwarded from the NodeId.
pub(super) const FROM_PEER: u8 = 0x02;
/// The tag and the NodeId.
pub const RELAY_HEADER_LEN: usize = 33;

/// Whether a node relays for others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RelayServe {
    /// While the node is classified public (`NatClass::Public`): only a
    /// node others can reach directly is worth reserving at.
    #[default]
    WhenPublic,
    /// Always (a node known to be reachable, before it has been observed).
    Always,
    /// Never.
    Never,
}

/// The relay's limits, and the client's. keynode's relays carry data (a
/// relayed pair's streams are the application's), unlike libp2p's circuit
/// relay v2 (2 minutes and 128 KiB per circuit, for coordination only): a
/// pair lasts while it is used, at a bounded rate, and the totals bound the
/// relay's memory and its uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayConfig {
    /// When this node relays. Default [`RelayServe::WhenPublic`].
    pub serve: RelayServe,
    /// Reservations held at once. Default 1,024 (a reservation is a few
    /// dozen bytes; the bound is on the connections it keeps).
    pub max_reservations: usize,
    /// Reservations from one IP (NodeIds are free; addresses are not).
    /// Default 4, libp2p's per-peer figure.
    pub max_reservations_per_ip: usize,
    /// How long a reservation lasts unless renewed; the holder renews at
    /// half of it. Default 10 minutes (libp2p: 1 hour; shorter here, so a
    /// relay forgets a node gone without closing).
    pub reservation_lifetime: Duration,
    /// Relayed pairs open at once. Default 1,024.
    pub max_pairs: usize,
    /// Pairs one node is a side of. Default 32.
    pub max_pairs_per_node: usize,
    /// A pair with no frame for this long may be closed to make room.
    /// Default 60 s (twice QUIC's idle timeout: a live connection's
    /// keep-alives keep its pair).
    pub pair_idle_timeout: Duration,
    /// Bytes per second one pair may relay (both directions together),
    /// and its burst. Default 4 MiB/s, 1 MiB: a relay of a few hundred
    /// Mbit/s carries dozens of pairs at their full rate.
    pub pair_bytes_per_second: u64,
    /// A pair's burst, bytes. Default 1 MiB.
    pub pair_burst: u64,
    /// Bytes per second relayed to and from one reserved node over all its
    /// pairs, and its burst. Default 8 MiB/s, 2 MiB.
    pub reservation_bytes_per_second: u64,
    /// A reservation's burst, bytes. Default 2 MiB.
    pub reservation_burst: u64,
    /// The largest frame relayed, header included: a QUIC packet of the
    /// largest size keynode's path MTU discovery tries (1,452) and the
    /// header. Default 1,485.
    pub max_frame: usize,
    /// Relayed paths (mapped addresses) this node keeps as a client.
    /// Default 256.
    pub max_paths: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            serve: RelayServe::WhenPublic,
            max_reservations: 1024,
            max_reservations_per_ip: 4,
            reservation_lifetime: Duration::from_secs(600),
            max_pairs: 1024,
            max_pairs_per_node: 32,
            pair_idle_timeout: Duration::from_secs(60),
            pair_bytes_per_second: 4 << 20,
            pair_burst: 1 << 20,
            reservation_bytes_per_second: 8 << 20,
            reservation_burst: 2 << 20,
            max_frame: 1452 + RELAY_HEADER_LEN,
            max_paths: 256,
        }
    }
}

/// What a relay and its clients counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Frames forwarded, and their bytes.
    pub frames_forwarded: u64,
    /// Bytes forwarded (QUIC packets, headers not counted).
    pub bytes_forwarded: u64,
    /// Frames dropped: no pair from their source to their destination.
    pub dropped_no_pair: u64,
    /// Frames dropped: over their pair's or reservation's byte rate.
    pub dropped_over_rate: u64,
    /// Frames dropped: larger than [`RelayConfig::max_frame`].
    pub dropped_too_large: u64,
    /// Frames from a relay dropped at a client: not from a connected
    /// node, or no room for another path.
    pub dropped_unexpected: u64,
    /// Pairs opened.
    pub pairs_opened: u64,
    /// Pairs refused: the node does not relay.
    pub refused_not_relaying: u64,
    /// Pairs or reservations refused: the total is reached.
    pub refused_full: u64,
    /// Pairs or reservations refused: the node's or the IP's share is reached.
    pub refused_per_peer: u64,
    /// Reservations granted (renewals too).
    pub reservations_granted: u64,
    /// Pairs open now.
    pub pairs: u64,
    /// Reservations held now.
    pub reservations: u64,
    /// Relayed paths this node keeps as a client now.
    pub paths: u64,
}

/// A token bucket of bytes.
#[derive(Clone, Debug)]
struct ByteBucket {
    tokens: u64,
    at: Instant,
}

impl ByteBucket {
    fn full(now: Instant, burst: u64) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    /// Refills the bucket at `rate` per second up to `burst`; whether it
    /// then holds `bytes`.
    fn refill(&mut self, now: Instant, bytes: u64, rate: u64, burst: u64) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        let refill =
            (elapsed.as_micros().min(u128::from(u64::MAX)) as u64).saturating_mul(rate) / 1_000_000;
        if refill > 0 {
            self.tokens = self.tokens.saturating_add(refill).min(burst);
            self.at = now;
        }
        self.tokens >= bytes
    }

    fn spend(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }
}

/// One side of a pair: the node, its connection to the relay and that
/// connection's remote address (where frames to it go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Side {
    pub(super) node: NodeId,
    pub(super) conn: ConnId,
    pub(super) address: SocketAddr,
}

#[derive(Debug)]
struct Pair {
    sides: [Side; 2],
    /// The uses of the two sides' connections the pair holds, so that the
    /// relay's manager does not close them as idle under it.
    leases: Vec<LeaseId>,
    bucket: ByteBucket,
    last_used: Instant,
}

#[derive(Debug)]
struct Reservation {
    conn: ConnId,
    /// The use of the reserved node's connection the reservation holds.
    lease: Option<LeaseId>,
    ip: IpAddr,
    until: Instant,
    class: NatClass,
    bucket: ByteBucket,
}

/// The relay's side: pairs, reservations, and the forwarding of frames.
#[derive(Debug, Default)]
pub(super) struct RelayServer {
    /// By the two NodeIds, smaller first.
    pairs: BTreeMap<(NodeId, NodeId), Pair>,
    /// A frame's (source address, destination) to its pair's key.
    routes: BTreeMap<(SocketAddr, NodeId), (NodeId, NodeId)>,
    /// Pairs each node is a side of.
    pairs_of: BTreeMap<NodeId, usize>,
    reservations: BTreeMap<NodeId, Reservation>,
    reservations_of_ip: BTreeMap<IpAddr, usize>,
    /// Uses of connections given back by closed pairs and reservations,
    /// for the node to hand to its manager.
    pub(super) released: Vec<LeaseId>,
    /// The counters (the gauges are read off the tables: [`Self::stats`]).
    pub(super) stats: RelayStats,
}

/// Where a forwarded frame goes: to `to`, from `source`.
pub(super) struct Forward {
    pub(super) to: SocketAddr,
    pub(super) source: NodeId,
}

fn key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    if a <= b { (a, b) } else { (b, a) }
}

impl RelayServer {
    /// The counters, with the gauges of the tables now.
    pub(super) fn stats(&self) -> RelayStats {
        RelayStats {
            pairs: self.pairs.len() as u64,
            reservations: self.reservations.len() as u64,
            ..self.stats
        }
    }

    /// Opens (or renews) the pair of `a` (the requester) and `b`.
    pub(super) fn open_pair(
        &mut self,
        now: Instant,
        config: &RelayConfig,
        a: Side,
        b: Side,
        lease: &mut dyn FnMut(ConnId) -> Option<LeaseId>,
    ) -> Result<(), RefusalReason> {
        let k = key(a.node, b.node);
        if self.pairs.contains_key(&k) {
            // The same two again: the addresses may be of newer connections.
            self.unroute(k);
            if let Some(pair) = self.pairs.get_mut(&k) {
                if pair.sides.map(|s| s.conn) != [a, b].map(|s| s.conn)
                    && pair.sides.map(|s| s.conn) != [b, a].map(|s| s.conn)
                {
                    self.released.append(&mut pair.leases);
                    pair.leases = [a.conn, b.conn]
                        .into_iter()
                        .filter_map(&mut *lease)
                        .collect();
                }
                pair.sides = [a, b];
                pair.last_used = now;
            }
            self.route(k, a, b);
            return Ok(());
        }
        // Idle pairs leave at the next opening (work bounded by `max_pairs`).
        self.close_idle(now, config);
        if self.pairs.len() >= config.max_pairs {
            self.stats.refused_full += 1;
            return Err(RefusalReason::RelayFull);
        }
        let share = |n: &NodeId| self.pairs_of.get(n).copied().unwrap_or(0);
        if share(&a.node) >= config.max_pairs_per_node
            || share(&b.node) >= config.max_pairs_per_node
        {
            self.stats.refused_per_peer += 1;
            return Err(RefusalReason::RelayPeerLimit);
        }
        self.pairs.insert(
            k,
            Pair {
                sides: [a, b],
                leases: [a.conn, b.conn].into_iter().filter_map(lease).collect(),
                bucket: ByteBucket::full(now, config.pair_burst),
                last_used: now,
            },
        );
        for n in [a.node, b.node] {
            *self.pairs_of.entry(n).or_default() += 1;
        }
        self.route(k, a, b);
        self.stats.pairs_opened += 1;
        Ok(())
    }

    fn route(&mut self, k: (NodeId, NodeId), a: Side, b: Side) {
        self.routes.insert((a.address, b.node), k);
        self.routes.insert((b.address, a.node), k);
    }

    fn unroute(&mut self, k: (NodeId, NodeId)) {
        if let Some(pair) = self.pairs.get(&k) {
            let [a, b] = pair.sides;
            self.routes.remove(&(a.address, b.node));
            self.routes.remove(&(b.address, a.node));
        }
    }

    fn remove_pair(&mut self, k: (NodeId, NodeId)) {
        self.unroute(k);
        if let Some(mut pair) = self.pairs.remove(&k) {
            self.released.append(&mut pair.leases);
            for side in pair.sides {
                if let Some(n) = self.pairs_of.get_mut(&side.node) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.pairs_of.remove(&side.node);
                    }
                }
            }
        }
    }

    /// Closes the pairs idle past [`RelayConfig::pair_idle_timeout`]
    /// (work bounded by `max_pairs`, done once per pair opened: a request
    /// on an authenticated connection, not a datagram).
    fn close_idle(&mut self, now: Instant, config: &RelayConfig) {
        let idle: Vec<_> = self
            .pairs
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_used) >= config.pair_idle_timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.remove_pair(k);
        }
    }

    /// Grants (or renews) `side`'s reservation; its lifetime.
    pub(super) fn reserve(
        &mut self,
        now: Instant,
        config: &RelayConfig,
        side: Side,
        class: NatClass,
        lease: &mut dyn FnMut(ConnId) -> Option<LeaseId>,
    ) -> Result<Duration, RefusalReason> {
        let ip = side.address.ip();
        if let Some(r) = self.reservations.get_mut(&side.node) {
            r.until = now + config.reservation_lifetime;
            r.class = class;
            if r.conn != side.conn || r.ip != ip {
                let old_ip = r.ip;
                r.conn = side.conn;
                r.ip = ip;
                if let Some(old) = r.lease.take() {
                    self.released.push(old);
                }
                r.lease = lease(side.conn);
                self.release_ip(old_ip);
                *self.reservations_of_ip.entry(ip).or_default() += 1;
            }
            self.stats.reservations_granted += 1;
            return Ok(config.reservation_lifetime);
        }
        self.expire_reservations(now);
        if self.reservations.len() >= config.max_reservations {
            self.stats.refused_full += 1;
            return Err(RefusalReason::RelayFull);
        }
        if self.reservations_of_ip.get(&ip).copied().unwrap_or(0) >= config.max_reservations_per_ip
        {
            self.stats.refused_per_peer += 1;
            return Err(RefusalReason::RelayPeerLimit);
        }
        self.reservations.insert(
            side.node,
            Reservation {
                conn: side.conn,
                lease: lease(side.conn),
                ip,
                until: now + config.reservation_lifetime,
                class,
                bucket: ByteBucket::full(now, config.reservation_burst),
            },
        );
        *self.reservations_of_ip.entry(ip).or_default() += 1;
        self.stats.reservations_granted += 1;
        Ok(config.reservation_lifetime)
    }

    fn release_ip(&mut self, ip: IpAddr) {
        if let Some(n) = self.reservations_of_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.reservations_of_ip.remove(&ip);
            }
        }
    }

    fn remove_reservation(&mut self, node: &NodeId) {
        if let Some(r) = self.reservations.remove(node) {
            self.release_ip(r.ip);
            self.released.extend(r.lease);
        }
    }

    /// Drops the reservations past their time (bounded by `max_reservations`;
    /// done only when a new one would not fit).
    fn expire_reservations(&mut self, now: Instant) {
        let gone: Vec<NodeId> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.until <= now)
            .map(|(n, _)| *n)
            .collect();
        for node in gone {
            self.remove_reservation(&node);
        }
    }

    /// The NAT class a reserved node told, if it holds a live reservation.
    pub(super) fn reserved_class(&self, now: Instant, node: &NodeId) -> Option<NatClass> {
        self.reservations
            .get(node)
            .filter(|r| r.until > now)
            .map(|r| r.class)
    }

    /// A frame of `len` bytes from `from` for `destination`: where it goes,
    /// or `None` (counted) if it does not.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        config: &RelayConfig,
        from: SocketAddr,
        destination: NodeId,
        len: usize,
    ) -> Option<Forward> {
        if len > config.max_frame {
            self.stats.dropped_too_large += 1;
            return None;
        }
        let Some(k) = self.routes.get(&(from, destination)).copied() else {
            self.stats.dropped_no_pair += 1;
            return None;
        };
        let pair = self.pairs.get_mut(&k)?;
        let [a, b] = pair.sides;
        let (source, to) = if a.address == from { (a, b) } else { (b, a) };
        let bytes = len as u64;
        // Every bucket the frame goes through must hold it; a frame
        // dropped costs none of them anything.
        let mut fits =
            pair.bucket
                .refill(now, bytes, config.pair_bytes_per_second, config.pair_burst);
        for node in [source.node, to.node] {
            if let Some(r) = self.reservations.get_mut(&node) {
                fits &= r.bucket.refill(
                    now,
                    bytes,
                    config.reservation_bytes_per_second,
                    config.reservation_burst,
                );
            }
        }
        if !fits {
            self.stats.dropped_over_rate += 1;
            return None;
        }
        if let Some(pair) = self.pairs.get_mut(&k) {
            pair.bucket.spend(bytes);
            pair.last_used = now;
        }
        for node in [source.node, to.node] {
            if let Some(r) = self.reservations.get_mut(&node) {
                r.bucket.spend(bytes);
            }
        }
        self.stats.frames_forwarded += 1;
        self.stats.bytes_forwarded += bytes.saturating_sub(RELAY_HEADER_LEN as u64);
        Some(Forward {
            to: to.address,
            source: source.node,
        })
    }

    /// Connection `conn` is gone: the pairs and the reservation that used it.
    pub(super) fn forget_conn(&mut self, conn: ConnId) {
        let pairs: Vec<_> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.sides.iter().any(|s| s.conn == conn))
            .map(|(k, _)| *k)
            .collect();
        for k in pairs {
            self.remove_pair(k);
        }
        let reserved: Vec<NodeId> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.conn == conn)
            .map(|(n, _)| *n)
            .collect();
        for node in reserved {
            self.remove_reservation(&node);
        }
    }
}

/// The first 64 bits of every mapped address: `100::/64`, discard-only
/// (RFC 6666), never a real peer's.
const MAPPED_PREFIX: [u16; 4] = [0x0100, 0, 0, 0];

/// The mapped address of relayed path number `index`.
fn mapped_address(index: u64) -> SocketAddr {
    let [a, b, c, d] = MAPPED_PREFIX;
    let ip = Ipv6Addr::new(
        a,
        b,
        c,
        d,
        (index >> 48) as u16,
        (index >> 32) as u16,
        (index >> 16) as u16,
        index as u16,
    );
    SocketAddr::new(IpAddr::V6(ip), 1)
}

/// Whether `address` is a relayed path's mapped address (see the module
/// docs): a connection to it goes through a relay.
pub fn is_relayed(address: &SocketAddr) -> bool {
    match address.ip() {
        IpAddr::V6(ip) => ip.segments()[..4] == MAPPED_PREFIX,
        IpAddr::V4(_) => false,
    }
}

/// The client's side: each peer reached through a relay, under its
/// mapped address.
#[derive(Debug, Default)]
pub(super) struct RelayPaths {
    /// (the relay's address, the peer) to the path's number.
    by_route: BTreeMap<(SocketAddr, NodeId), u64>,
    by_index: BTreeMap<u64, (SocketAddr, NodeId)>,
    next: u64,
}

impl RelayPaths {
    /// The mapped address of `peer` through the relay at `relay`, made if
    /// new and there is room (`max` paths).
    pub(super) fn mapped(
        &mut self,
        relay: SocketAddr,
        peer: NodeId,
        max: usize,
    ) -> Option<SocketAddr> {
        if let Some(index) = self.by_route.get(&(relay, peer)) {
            return Some(mapped_address(*index));
        }
        if self.by_route.len() >= max {
            return None;
        }
        self.next += 1;
        let index = self.next;
        self.by_route.insert((relay, peer), index);
        self.by_index.insert(index, (relay, peer));
        Some(mapped_address(index))
    }

    /// Where datagrams to the mapped address `address` go: the relay's
    /// address and the peer.
    pub(super) fn route(&self, address: &SocketAddr) -> Option<(SocketAddr, NodeId)> {
        if !is_relayed(address) {
            return None;
        }
        let IpAddr::V6(ip) = address.ip() else {
            return None;
        };
        let s = ip.segments();
        let index = (u64::from(s[4]) << 48)
            | (u64::from(s[5]) << 32)
            | (u64::from(s[6]) << 16)
            | u64::from(s[7]);
        self.by_index.get(&index).copied()
    }

    /// The relay at `relay` is gone: its paths with it.
    pub(super) fn forget_relay(&mut self, relay: SocketAddr) {
        let gone: Vec<_> = self
            .by_route
            .range((relay, NodeId::from_bytes([0; 32]))..=(relay, NodeId::from_bytes([0xff; 32])))
            .map(|(k, i)| (*k, *i))
            .collect();
        for (k, i) in gone {
            self.by_route.remove(&k);
            self.by_index.remove(&i);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_route.len()
    }
}

/// A relay frame: its tag, the NodeId it names, the QUIC packet.
pub(super) fn encode(tag: u8, node: &NodeId, packet: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(RELAY_HEADER_LEN + packet.len());
    frame.push(tag);
    frame.extend_from_slice(node.as_bytes());
    frame.extend_from_slice(packet);
    frame
}

/// The tag and NodeId of a relay frame, if `bytes` is one.
pub(super) fn decode(bytes: &[u8]) -> Option<(u8, NodeId)> {
    let tag = *bytes.first()?;
    if tag != TO_PEER && tag != FROM_PEER {
        return None;
    }
    let id: [u8; 32] = bytes.get(1..RELAY_HEADER_LEN)?.try_into().ok()?;
    Some((tag, NodeId::from_bytes(id)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use super::*;

    fn side(n: u8, port: u16) -> Side {
        Side {
            node: NodeId::from_bytes([n; 32]),
            conn: ConnId(u64::from(n)),
            address: SocketAddr::from(([10, 0, 0, n], port)),
        }
    }

    #[test]
    fn a_pair_forwards_both_ways_and_nothing_else() {
        let now = Instant::now();
        let config = RelayConfig::default();
        let mut relay = RelayServer::default();
        let (a, b, c) = (side(1, 1000), side(2, 2000), side(3, 3000));
        relay.open_pair(now, &config, a, b, &mut |_| None).unwrap();
        let f = relay
            .forward(now, &config, a.address, b.node, 1200)
            .unwrap();
        assert_eq!((f.to, f.source), (b.address, a.node));
        let f = relay
            .forward(now, &config, b.address, a.node, 1200)
            .unwrap();
        assert_eq!((f.to, f.source), (a.address, b.node));
        // c has no pair with either; a spoofed address gets nowhere.
        assert!(
            relay
                .forward(now, &config, c.address, a.node, 100)
                .is_none()
        );
        assert!(
            relay
                .forward(now, &config, a.address, c.node, 100)
                .is_none()
        );
        assert_eq!(relay.stats.dropped_no_pair, 2);
        relay.forget_conn(b.conn);
        assert!(
            relay
                .forward(now, &config, a.address, b.node, 100)
                .is_none()
        );
        assert_eq!(relay.stats().pairs, 0);
    }

    #[test]
    fn limits_refuse_with_their_reason() {
        let now = Instant::now();
        let config = RelayConfig {
            max_pairs: 2,
            max_pairs_per_node: 1,
            max_reservations_per_ip: 1,
            ..RelayConfig::default()
        };
        let mut relay = RelayServer::default();
        relay
            .open_pair(now, &config, side(1, 1), side(2, 2), &mut |_| None)
            .unwrap();
        assert_eq!(
            relay.open_pair(now, &config, side(1, 1), side(3, 3), &mut |_| None),
            Err(RefusalReason::RelayPeerLimit)
        );
        relay
            .open_pair(now, &config, side(4, 4), side(5, 5), &mut |_| None)
            .unwrap();
        assert_eq!(
            relay.open_pair(now, &config, side(6, 6), side(7, 7), &mut |_| None),
            Err(RefusalReason::RelayFull)
        );
        // Idle pairs make room once their time is over.
        let later = now + config.pair_idle_timeout;
        relay
            .open_pair(later, &config, side(6, 6), side(7, 7), &mut |_| None)
            .unwrap();
        // One reservation per IP here: a second NodeId at the same address is refused.
        let mut other = side(8, 8);
        relay
            .reserve(now, &config, side(8, 8), NatClass::Symmetric, &mut |_| None)
            .unwrap();
        other.node = NodeId::from_bytes([9; 32]);
        assert_eq!(
            relay.reserve(now, &config, other, NatClass::Cone, &mut |_| None),
            Err(RefusalReason::RelayPeerLimit)
        );
        assert_eq!(
            relay.reserved_class(now, &NodeId::from_bytes([8; 32])),
            Some(NatClass::Symmetric)
        );
    }

    #[test]
    fn a_pair_over_its_rate_drops_and_recovers() {
        let now = Instant::now();
        let config = RelayConfig {
            pair_bytes_per_second: 10_000,
            pair_burst: 3_000,
            ..RelayConfig::default()
        };
        let mut relay = RelayServer::default();
        let (a, b) = (side(1, 1), side(2, 2));
        relay.open_pair(now, &config, a, b, &mut |_| None).unwrap();
        assert!(
            relay
                .forward(now, &config, a.address, b.node, 1400)
                .is_some()
        );
        assert!(
            relay
                .forward(now, &config, a.address, b.node, 1400)
                .is_some()
        );
        assert!(
            relay
                .forward(now, &config, a.address, b.node, 1400)
                .is_none()
        );
        assert_eq!(relay.stats.dropped_over_rate, 1);
        let later = now + Duration::from_millis(200);
        assert!(
            relay
                .forward(later, &config, b.address, a.node, 1400)
                .is_some()
        );
    }

    #[test]
    fn a_frame_one_bucket_refuses_costs_the_others_nothing() {
        let now = Instant::now();
        let config = RelayConfig {
            pair_bytes_per_second: 1,
            pair_burst: 10_000,
            reservation_bytes_per_second: 1,
            reservation_burst: 1_000,
            ..RelayConfig::default()
        };
        let mut relay = RelayServer::default();
        let (a, b) = (side(1, 1), side(2, 2));
        relay
            .reserve(now, &config, b, NatClass::Symmetric, &mut |_| None)
            .unwrap();
        relay.open_pair(now, &config, a, b, &mut |_| None).unwrap();
        // b's reservation holds 1,000 bytes: a 1,400-byte frame is
        // refused, and the pair's 10,000 stay whole.
        for _ in 0..5 {
            assert!(
                relay
                    .forward(now, &config, a.address, b.node, 1400)
                    .is_none()
            );
        }
        assert_eq!(relay.stats.dropped_over_rate, 5);
        for _ in 0..10 {
            assert!(
                relay
                    .forward(now, &config, a.address, b.node, 100)
                    .is_some()
            );
        }
        // 1,000 of the pair's 10,000 spent: frames b's reservation does
        // not see (none here) would still have 9,000.
        let pair = relay.pairs.values().next().unwrap();
        assert_eq!(pair.bucket.tokens, 9_000);
    }

    #[test]
    fn mapped_addresses_route_back_and_are_never_real() {
        let mut paths = RelayPaths::default();
        let relay = SocketAddr::from(([10, 0, 1, 2], 4000));
        let peer = NodeId::from_bytes([7; 32]);
        let m = paths.mapped(relay, peer, 4).unwrap();
        assert!(is_relayed(&m));
        assert_eq!(paths.mapped(relay, peer, 4), Some(m));
        assert_eq!(paths.route(&m), Some((relay, peer)));
        assert!(!is_relayed(&relay));
        assert!(!is_relayed(&"[2001:db8::1]:5".parse().unwrap()));
        paths.forget_relay(relay);
        assert_eq!(paths.route(&m), None);
        assert_eq!(paths.len(), 0);
    }

    #[test]
    fn frames_decode_what_encode_wrote() {
        let id = NodeId::from_bytes([5; 32]);
        let frame = encode(TO_PEER, &id, b"packet");
        assert_eq!(decode(&frame), Some((TO_PEER, id)));
        assert_eq!(&frame[RELAY_HEADER_LEN..], b"packet");
        assert_eq!(decode(&frame[..10]), None);
        // A QUIC packet (fixed bit set) is never a frame.
        assert_eq!(decode(&[0x40; 40]), None);
        assert_eq!(decode(&[0xc0; 40]), None);
    }
}
