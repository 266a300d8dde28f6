//! The [`MdnsService`]'s life and its driver-facing surface: building it
//! from the configuration, taking in datagrams and timeouts, stopping, and
//! the polls; after every input it drains what `mdns-proto` has to send or
//! report, so the polls need no clock.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use mdns_proto::config::EndpointConfig;
use mdns_proto::constants::MDNS_PORT;
use mdns_proto::event::{RouteEvent, ServiceEvent};

use super::outbox::Outbox;
use super::responder::{Announced, validate_addresses};
use super::{
    MAX_GROUPS, MAX_PACKET_LEN, MdnsError, MdnsService, MdnsStats, MdnsTransmit, ProtoEndpoint,
    SplitMix64,
};
use crate::{MdnsConfig, NodeId, QueryId};

/// Bounds the routing events taken from one datagram.
const MAX_EVENTS_PER_DATAGRAM: usize = 256;

impl MdnsService {
    /// The mDNS service of node `node_id`, which will announce `addresses`
    /// (its QUIC socket addresses: they must share one port, since one SRV
    /// record carries one port) on `config`'s groups and port. Nothing is
    /// sent until [`Self::announce`] or [`Self::query`].
    ///
    /// `addresses` may be empty for a node that only asks; it cannot
    /// announce. `now` is accepted for symmetry with the core's other
    /// constructors; nothing is scheduled yet.
    pub fn new(
        node_id: NodeId,
        addresses: Vec<SocketAddr>,
        now: Instant,
        config: &MdnsConfig,
    ) -> Result<Self, MdnsError> {
        let _ = now;
        if config.port == 0 {
            return Err(MdnsError::PortZero);
        }
        let mut groups: Vec<SocketAddr> = Vec::new();
        for &group in &config.groups {
            if !group.is_multicast() {
                return Err(MdnsError::NotMulticast { group });
            }
            let destination = SocketAddr::new(group, config.port);
            if !groups.contains(&destination) {
                groups.push(destination);
            }
        }
        if groups.is_empty() {
            return Err(MdnsError::NoGroups);
        }
        if groups.len() > MAX_GROUPS {
            return Err(MdnsError::TooManyGroups {
                found: groups.len(),
                max: MAX_GROUPS,
            });
        }
        let addresses = validate_addresses(addresses)?;
        // No probing: the instance and host names contain the NodeId, which
        // no other node can claim honestly (RFC 6762 §8.1 allows skipping
        // the probe for names known to be unique), and probing would delay
        // every answer by about a second. No cache: answers are matched per
        // datagram here, and `mdns-proto`'s cache has no size bound.
        let endpoint_config = EndpointConfig::new()
            .with_probe_unique_names(false)
            .with_populate_cache(false);
        let endpoint = ProtoEndpoint::try_new(endpoint_config, SplitMix64::from_node_id(&node_id));
        Ok(Self {
            node_id,
            port: config.port,
            addresses,
            endpoint,
            announced: None,
            retired: None,
            queries: BTreeMap::new(),
            answers: VecDeque::new(),
            outbox: Outbox {
                groups,
                queue: VecDeque::new(),
                recent: VecDeque::new(),
                dropped: 0,
            },
            buf: vec![0u8; MAX_PACKET_LEN],
            stats: MdnsStats::default(),
        })
    }

    /// This node's NodeId.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The addresses announced (deduplicated).
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Whether the node is announcing (between [`Self::announce`] and
    /// [`Self::stop`]).
    pub fn is_announcing(&self) -> bool {
        self.announced.is_some()
    }

    /// The number of queries in flight.
    pub fn queries_in_flight(&self) -> usize {
        self.queries.len()
    }

    /// Counters of what was dropped or ignored.
    pub fn stats(&self) -> MdnsStats {
        MdnsStats {
            transmits_dropped: self.outbox.dropped,
            ..self.stats
        }
    }

    /// Stops announcing and answering, with a goodbye (the records again
    /// with TTL 0, sent three times over half a second) if anything was
    /// announced, and ends every query: the manager's `MdnsStop` is "stop
    /// announcing and querying".
    pub fn stop(&mut self, now: Instant) {
        let ended: Vec<QueryId> = self.queries.keys().copied().collect();
        for query in ended {
            self.end_query(query);
        }
        if let Some(Announced {
            handle,
            mut service,
        }) = self.announced.take()
        {
            let snapshot = service.withdrawal_snapshot();
            self.endpoint.begin_withdrawal(handle, snapshot, now);
            self.retired = Some(handle);
            self.pump(now);
        }
    }

    /// Takes in one datagram received on the mDNS socket from `from`. Any
    /// bytes are accepted: malformed ones are counted and dropped, never
    /// panicked on, and the work done is bounded by [`MAX_PACKET_LEN`].
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_received = self.stats.datagrams_received.saturating_add(1);
        if bytes.len() > MAX_PACKET_LEN {
            self.stats.datagrams_dropped = self.stats.datagrams_dropped.saturating_add(1);
            return;
        }
        if self.outbox.is_own(bytes) {
            self.stats.own_datagrams = self.stats.own_datagrams.saturating_add(1);
            return;
        }
        // mdns-proto trusts a response only from port 5353 (RFC 6762 §11's
        // rule for the standard port) and treats a question from any other
        // port as a legacy one-shot query to answer by unicast. Our mDNS
        // port plays 5353's part, so it is presented as 5353 (and 5353
        // itself stays trusted, as mdns-proto would have it).
        let from_mdns_port = from.port() == self.port || from.port() == MDNS_PORT;
        let proto_from = if from_mdns_port {
            SocketAddr::new(from.ip(), MDNS_PORT)
        } else {
            from
        };
        // The receiving interface is not known here; mdns-proto only uses it
        // for a self-detection mode we do not enable (`is_own` does it).
        let local_ip = match from {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let mut conflicts_ignored = 0u64;
        let Self {
            endpoint,
            announced,
            ..
        } = self;
        match endpoint.handle(now, proto_from, local_ip, 0, bytes, false) {
            Err(_) => {
                self.stats.datagrams_dropped = self.stats.datagrams_dropped.saturating_add(1);
                return;
            }
            Ok(events) => {
                // Answers to our queries were applied eagerly inside
                // `handle`; what is left to deliver is questions for our
                // service. Conflicts are not delivered: our instance and
                // host names are our NodeId, which no other node can hold
                // honestly, so a "conflict" is a forgery, and yielding to it
                // (mdns-proto renames the instance to `<NodeId>-1`) would
                // hide us from every querier for good.
                for event in events.take(MAX_EVENTS_PER_DATAGRAM) {
                    if let Ok(RouteEvent::ToService(to_service)) = event
                        && let Some(announced) = announced.as_mut()
                        && to_service.handle() == announced.handle
                    {
                        let event = to_service.into_event();
                        if matches!(
                            event,
                            ServiceEvent::ProbeConflict(_) | ServiceEvent::HostConflict(_)
                        ) {
                            conflicts_ignored = conflicts_ignored.saturating_add(1);
                            continue;
                        }
                        announced.service.handle_event(event, now);
                    }
                }
            }
        }
        self.stats.conflicts_ignored = self
            .stats
            .conflicts_ignored
            .saturating_add(conflicts_ignored);
        if from_mdns_port && !self.queries.is_empty() {
            self.match_answers(from, bytes);
        }
        self.pump(now);
    }

    /// The next addresses found for a query: only addresses not reported
    /// before for that query, from a response whose TXT NodeId is the one
    /// queried. IPv6 link-local addresses get the scope of the datagram
    /// they came in.
    pub fn poll_answer(&mut self) -> Option<(QueryId, Vec<SocketAddr>)> {
        self.answers.pop_front()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<MdnsTransmit> {
        self.outbox.queue.pop_front()
    }

    /// When [`Self::handle_timeout`] is next due, if anything is scheduled.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let service = self
            .announced
            .as_ref()
            .and_then(|announced| announced.service.poll_timeout());
        let queries = self
            .queries
            .values()
            .filter_map(|active| self.endpoint.poll_query_timeout(active.handle));
        // The endpoint's own deadline covers goodbyes still going out.
        service
            .into_iter()
            .chain(queries)
            .chain(self.endpoint.poll_timeout())
            .min()
    }

    /// Runs what is due at `now`: announcements, responses, query
    /// retransmissions, goodbyes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.endpoint.handle_timeout(now);
        if let Some(announced) = self.announced.as_mut() {
            let _ = announced.service.handle_timeout(now);
        }
        for active in self.queries.values() {
            let _ = self.endpoint.handle_query_timeout(active.handle, now);
        }
        self.pump(now);
    }

    /// Drains everything `mdns-proto` has to send or report at `now`, after
    /// every input, so that `poll_transmit` and `poll_answer` need no clock.
    pub(super) fn pump(&mut self, now: Instant) {
        self.pump_service(now);
        self.pump_queries(now);
        self.pump_goodbyes(now);
    }
}
