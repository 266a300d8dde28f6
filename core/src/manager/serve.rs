//! Answering peers' requests: closest nodes, and signalling for hole punching.
//!
//! Signalling makes this node send datagrams to an address someone else
//! named, so it is what an attacker would use to reflect traffic at a third
//! party. The rules:
//! - As the relay (`Signal`), the address passed on to the target is always
//!   the requester's as this node observes it (the connection's remote
//!   address), never one the requester names.
//! - As the target (`SignalFinal`), this node punches only for a signaller it
//!   dialled itself: that is how a node behind a NAT reaches its relays, and
//!   anyone can connect *in* with a fresh key and claim to be a relay. The
//!   address must be one a relay could have observed (a unicast address with
//!   a port). Anything else is refused ([`RefusalReason::Unvouched`]) and
//!   counted ([`Stats::signals_unvouched`](super::Stats)).
//! - Both sides rate-limit with token buckets per NodeId
//!   ([`Config::signal_rate_capacity`]), per address concerned
//!   ([`Config::signal_rate_per_ip_capacity`]: the requester's IP when
//!   relaying, the IP to punch towards when signalled; an IPv6 address counts
//!   by its /64) and in total ([`Config::signal_rate_total_capacity`]), since
//!   NodeIds are free. A refusal is [`RefusalReason::RateLimited`], counted
//!   in `Stats::signals_rate_limited`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::{NodeManager, RunState};
use crate::config::Config;
use crate::contact::NodeAddressScope;
use crate::id::NodeId;
use crate::manager::api::{Command, ConnId, PeerRequestId, RequestId};
use crate::wire::{RefusalReason, Request, Response};

/// Token buckets of signal requests, one per key (a source node, an
/// address, or `()` for the total), bounded in number.
#[derive(Clone, Debug)]
pub(crate) struct SignalLimiter<K = NodeId> {
    capacity: f64,
    refill_per_sec: f64,
    max_sources: usize,
    buckets: BTreeMap<K, (f64, Instant)>,
}

impl SignalLimiter<NodeId> {
    /// Buckets per source node.
    pub(crate) fn new(config: &Config) -> Self {
        Self::with_rate(
            config.signal_rate_capacity,
            config.signal_rate_refill_per_sec,
            config.max_signal_sources,
        )
    }
}

impl<K: Ord + Copy> SignalLimiter<K> {
    fn with_rate(capacity: u32, refill_per_sec: u32, max_sources: usize) -> Self {
        Self {
            capacity: f64::from(capacity),
            refill_per_sec: f64::from(refill_per_sec),
            max_sources,
            buckets: BTreeMap::new(),
        }
    }

    /// Forgets `source` if its bucket has refilled: a full bucket is what a
    /// source never seen gets, so nothing is lost, and a node that relayed
    /// for many newcomers does not keep a bucket for each (while one that
    /// reconnects at once keeps its spent one).
    pub(crate) fn forget_if_full(&mut self, source: &K, now: Instant) {
        if let Some((tokens, seen)) = self.buckets.get(source) {
            let elapsed = now.saturating_duration_since(*seen).as_secs_f64();
            if tokens + elapsed * self.refill_per_sec >= self.capacity {
                self.buckets.remove(source);
            }
        }
    }

    /// Takes a token for `source`; `false` if it has none left.
    pub(crate) fn allow(&mut self, source: K, now: Instant) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            // Forget the source seen longest ago (ties: the smallest NodeId).
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(id, (_, seen))| (*seen, **id))
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.buckets.remove(&id);
            }
        }
        let (tokens, seen) = self.buckets.entry(source).or_insert((self.capacity, now));
        let elapsed = now.saturating_duration_since(*seen).as_secs_f64();
        *tokens = (*tokens + elapsed * self.refill_per_sec).min(self.capacity);
        *seen = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The key of an address's signal bucket: the IPv4 address, or the /64 of
/// an IPv6 one (what one host or subscriber is typically given).
fn address_key(address: SocketAddr) -> IpAddr {
    match address.ip().to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// Whether a relay could have observed `address` as a peer's: a unicast
/// address with a port. A multicast, broadcast or unspecified address, or
/// port 0, can only be a forgery.
fn observable(address: SocketAddr) -> bool {
    let ip = address.ip().to_canonical();
    let unicast = match ip {
        IpAddr::V4(v4) => !v4.is_broadcast() && !v4.is_multicast() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_multicast() && !v6.is_unspecified(),
    };
    address.port() != 0 && unicast
}

/// Both sides of hole punching: who may ask for signals, and the signals
/// relayed to their targets (fire and forget), whose answers are expected
/// and dropped.
#[derive(Clone, Debug)]
pub(crate) struct SignalRelay {
    /// Per source node.
    pub(crate) limiter: SignalLimiter,
    /// Per address concerned (see [`address_key`]).
    by_address: SignalLimiter<IpAddr>,
    /// All signals together.
    total: SignalLimiter<()>,
    /// At most `max_operations`, the oldest forgotten first.
    relayed: BTreeSet<RequestId>,
    max_relayed: usize,
    /// Addresses this node punched towards when signalled, until when: a
    /// connection that comes in from one was punched (mode `Signal`, not
    /// `Direct`). At most `max_relayed`, the soonest to end forgotten first.
    punched: std::collections::BTreeMap<SocketAddr, Instant>,
}

impl SignalRelay {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            limiter: SignalLimiter::new(config),
            by_address: SignalLimiter::with_rate(
                config.signal_rate_per_ip_capacity,
                config.signal_rate_per_ip_refill_per_sec,
                config.max_signal_sources,
            ),
            total: SignalLimiter::with_rate(
                config.signal_rate_total_capacity,
                config.signal_rate_total_refill_per_sec,
                1,
            ),
            relayed: BTreeSet::new(),
            max_relayed: config.max_operations,
            punched: std::collections::BTreeMap::new(),
        }
    }

    /// This node punches towards `address` until `until`.
    fn punching(&mut self, address: SocketAddr, until: Instant) {
        if self.punched.len() >= self.max_relayed && !self.punched.contains_key(&address) {
            let soonest = self
                .punched
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(a, _)| *a);
            if let Some(a) = soonest {
                self.punched.remove(&a);
            }
        }
        self.punched.insert(address, until);
    }

    /// Whether a connection from `address` at `now` came through a punch.
    pub(crate) fn was_punched(&mut self, address: SocketAddr, now: Instant) -> bool {
        match self.punched.get(&address) {
            Some(until) if *until >= now => true,
            Some(_) => {
                self.punched.remove(&address);
                false
            }
            None => false,
        }
    }

    /// Takes a token from `source`'s bucket, then `address`'s, then the
    /// total's; `false` at the first that has none left.
    fn allow(&mut self, source: NodeId, address: SocketAddr, now: Instant) -> bool {
        self.limiter.allow(source, now)
            && self.by_address.allow(address_key(address), now)
            && self.total.allow((), now)
    }

    /// A signal went to its target as request `id`.
    fn relayed(&mut self, id: RequestId) {
        if self.relayed.len() >= self.max_relayed {
            self.relayed.pop_first();
        }
        self.relayed.insert(id);
    }

    /// Whether `id` is a relayed signal's answer (expected once).
    pub(crate) fn take_answer(&mut self, id: RequestId) -> bool {
        self.relayed.remove(&id)
    }

    pub(crate) fn clear_relayed(&mut self) {
        self.relayed.clear();
    }
}

impl NodeManager {
    /// Answers a peer's request on connection `conn`.
    pub(super) fn serve(&mut self, conn: ConnId, request: PeerRequestId, body: Request) {
        self.metrics
            .requests_served
            .inc(crate::metrics::RequestKind::of(&body));
        let response = self.answer(conn, body);
        self.stats.requests_served += 1;
        self.commands.push_back(Command::SendResponse {
            conn,
            request,
            body: response,
        });
    }

    fn answer(&mut self, conn: ConnId, body: Request) -> Response {
        if self.state != RunState::Running {
            return Response::Refused(RefusalReason::Stopping);
        }
        let Some(requester) = self.conns.get(conn).map(|c| (c.peer, c.remote, c.dialled)) else {
            return Response::Refused(RefusalReason::NotConnected);
        };
        let (requester, requester_address, dialled) = requester;
        match body {
            Request::ClosestNodes { target } => self.closest_nodes(requester, &target),
            Request::ChainData { from, limit } => self.serve_chain_data(from, limit),
            Request::Signal { target } => {
                if crate::net::is_relayed(&requester_address) {
                    // The requester came through a relay: its address here
                    // is a mapped one, nothing the target could punch to.
                    return Response::Refused(RefusalReason::NotConnected);
                }
                if !self
                    .relay
                    .allow(requester, requester_address, self.now.mono)
                {
                    self.stats.signals_rate_limited += 1;
                    return Response::Refused(RefusalReason::RateLimited);
                }
                // Not through a relay: what this node sees of a relayed
                // peer is a mapped address, meaningless to the requester
                // (and the peer's NAT was one no punch crossed).
                let Some((target_conn, target_address)) =
                    self.conns.unrelayed(&target).map(|(id, c)| (id, c.remote))
                else {
                    return Response::Refused(RefusalReason::NotConnected);
                };
                // Fire and forget: the target punches towards the requester.
                let id = RequestId(self.fresh_id());
                self.relay.relayed(id);
                self.commands.push_back(Command::SendRequest {
                    conn: target_conn,
                    request: id,
                    body: Request::SignalFinal {
                        source: requester,
                        source_address: requester_address,
                    },
                    timeout: self.config.rpc_timeout,
                });
                Response::Signal { target_address }
            }
            Request::SignalFinal { source_address, .. } => {
                // The requester here is the signaller: it vouches for the
                // address only if we chose it (dialled it), and the address
                // must be one it could have observed.
                if !dialled || !observable(source_address) {
                    self.stats.signals_unvouched += 1;
                    return Response::Refused(RefusalReason::Unvouched);
                }
                if !self.relay.allow(requester, source_address, self.now.mono) {
                    self.stats.signals_rate_limited += 1;
                    return Response::Refused(RefusalReason::RateLimited);
                }
                self.metrics.punches_tried += 1;
                let timeout = self.config.connection_connect_timeout;
                self.relay.punching(source_address, self.now.mono + timeout);
                self.commands.push_back(Command::HolePunch {
                    address: source_address,
                    timeout,
                });
                Response::Ack
            }
            // The net layer answers these (the relay is its); a manager
            // without one does not relay.
            Request::RelayOpen { .. } | Request::Reserve { .. } => {
                Response::Refused(RefusalReason::NotRelaying)
            }
        }
    }

    /// The nodes this node is connected to and its graph's contacts with
    /// global addresses, closest to `target`, without the requester. The
    /// connected (`active`) are those the requester may ask this node to
    /// signal or relay to: a node connected only through a relay is
    /// neither (no address to give, no relaying over relays).
    fn closest_nodes(&self, requester: NodeId, target: &NodeId) -> Response {
        let k = self.config.k;
        let active: Vec<NodeId> = self
            .conns
            .closest_unrelayed_peers(target, k + 1)
            .into_iter()
            .filter(|p| *p != requester)
            .take(k)
            .collect();
        let contacts = self
            .graph
            .closest_where(target, k, |e| {
                e.node_id != requester
                    && e.contact
                        .iter()
                        .any(|(_, d)| d.scopes.contains(NodeAddressScope::Global))
            })
            .into_iter()
            .map(|e| (e.node_id, e.contact.filter_scope(NodeAddressScope::Global)))
            .collect();
        Response::ClosestNodes { active, contacts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_21st_signal_in_a_burst_is_refused_and_tokens_refill() {
        let mut limiter = SignalLimiter::new(&Config::default());
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let source = NodeId::from_bytes([1; 32]);
        for i in 0..20 {
            assert!(limiter.allow(source, t0), "signal {i}");
        }
        assert!(!limiter.allow(source, t0));
        // 10 per second: after 0.1 s one more.
        assert!(limiter.allow(source, t0 + Duration::from_millis(100)));
        assert!(!limiter.allow(source, t0 + Duration::from_millis(100)));
        // Other sources have their own bucket.
        assert!(limiter.allow(NodeId::from_bytes([2; 32]), t0));
    }

    #[test]
    fn a_source_is_forgotten_once_its_bucket_has_refilled() {
        let mut limiter = SignalLimiter::new(&Config::default());
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let source = NodeId::from_bytes([1; 32]);
        for _ in 0..20 {
            assert!(limiter.allow(source, t0));
        }
        // Spent: kept, so that reconnecting does not refill it.
        limiter.forget_if_full(&source, t0 + Duration::from_millis(500));
        assert!(!limiter.allow(source, t0 + Duration::from_millis(50)));
        assert_eq!(limiter.buckets.len(), 1);
        // 20 tokens at 10 a second: full after 2 s, and forgotten.
        limiter.forget_if_full(&source, t0 + Duration::from_secs(3));
        assert!(limiter.buckets.is_empty());
    }

    #[test]
    fn sources_are_bounded() {
        let config = Config {
            max_signal_sources: 2,
            ..Config::default()
        };
        let mut limiter = SignalLimiter::new(&config);
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        for b in 0..10u8 {
            limiter.allow(
                NodeId::from_bytes([b; 32]),
                t0 + Duration::from_secs(b.into()),
            );
        }
        assert_eq!(limiter.buckets.len(), 2);
    }
}
