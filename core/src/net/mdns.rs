//! Local discovery over mDNS, sans-IO: [`MdnsService`] announces this node and
//! asks the local network for other nodes by [`NodeId`].
//!
//! A node is published as the DNS-SD service instance
//! `<NodeId>._polykey._udp.local` with
//! - an SRV record pointing at the host `<NodeId>.local` and the QUIC port,
//! - A / AAAA records of that host, one per announced address, and
//! - a TXT record `nodeid=<NodeId>`.
//!
//! mDNS names are case-insensitive and `mdns-proto` lowercases every name it
//! builds. The NodeId text form is already lowercase, so the instance name
//! carries it unchanged; the TXT record carries it anyway, because TXT data is
//! case-preserving and it is what an answer is checked against: an answer
//! counts only when its TXT NodeId is the one asked for.
//!
//! The protocol work (announcements, responses to questions with their
//! jitter, query retransmission with backoff, goodbyes) is `mdns-proto`'s
//! `Endpoint`, `Service` and `Query`. This module adapts it to keynode:
//! - keynode's groups (224.0.0.250, ff02::fa17) and port (64023) instead of
//!   the standard 224.0.0.251 / 5353 that `mdns-proto` writes into every
//!   transmit;
//! - eager draining of `mdns-proto`'s transmits into a bounded queue, each
//!   confirmed with `note_transmit_result` as the crate requires;
//! - answer matching: the addresses of a queried node are read from one
//!   response datagram (SRV + TXT of the instance, A / AAAA of the SRV
//!   target), so records of two different responders are never mixed;
//! - self-filtering of our own multicast loopback, which `mdns-proto` leaves
//!   to the driver;
//! - bounds on queries, answers, queued transmits and datagram sizes.
//!
//! Nothing here reads a clock, a socket or an entropy source: time comes in
//! as `now`, datagrams go out through [`MdnsService::poll_transmit`], and
//! `mdns-proto`'s randomness (response jitter, transaction ids) comes from a
//! generator seeded with the NodeId.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use mdns_proto::cache::CacheEntry;
use mdns_proto::config::{EndpointConfig, QuerySpec, ServiceSpec};
use mdns_proto::constants::MDNS_PORT;
use mdns_proto::endpoint::{Endpoint, EndpointEventEntry, ServiceRoute, WithdrawalSend};
use mdns_proto::event::{QueryUpdate, RouteEvent, ServiceUpdate};
use mdns_proto::records::ServiceRecords;
use mdns_proto::slab::Slab;
use mdns_proto::transmit::Transmit;
use mdns_proto::wire::{MessageReader, NameRef, Rdata, ResourceType};
use mdns_proto::{CollectedAnswer, Name, Query, QueryHandle, Service, ServiceHandle};

use crate::{MdnsConfig, NodeId, QueryId};

/// The DNS-SD service type keynode nodes announce (as Polykey does).
pub const SERVICE_TYPE: &str = "_polykey._udp.local";

/// The TXT key whose value is the announcing node's NodeId text.
pub const TXT_NODE_ID_KEY: &str = "nodeid";

/// The most queries in flight at once; [`MdnsService::query`] refuses more.
pub const MAX_QUERIES: usize = 32;

/// The most answers waiting for [`MdnsService::poll_answer`]; later ones are
/// dropped (and counted) until the caller drains the queue.
pub const MAX_PENDING_ANSWERS: usize = 64;

/// The most datagrams waiting for [`MdnsService::poll_transmit`]; later ones
/// are dropped (and counted), which `mdns-proto` treats as a failed send and
/// retries on its own schedule.
pub const MAX_PENDING_TRANSMITS: usize = 64;

/// The largest datagram handled or produced. Larger datagrams are dropped
/// unread: ours are a few hundred bytes, and parsing work grows with size.
pub const MAX_PACKET_LEN: usize = 1500;

/// The most addresses a node announces, and the most one query reports.
pub const MAX_ADDRESSES: usize = 16;

/// The most multicast groups used at once (one per family is the norm).
pub const MAX_GROUPS: usize = 4;

/// The most records of one datagram examined when matching answers.
pub const MAX_RECORDS_PER_PACKET: usize = 64;

/// TTL of the announced records (RFC 6762's recommendation for host and SRV
/// records). `mdns-proto` re-announces at 80 % of it.
pub const RECORD_TTL_SECS: u32 = 120;

/// The longest a query keeps asking when the caller never ends it. The
/// manager ends its queries after its own timeout (1.5 s); this only bounds a
/// forgotten one.
pub const QUERY_LIFETIME: Duration = Duration::from_secs(60);

/// How many of our own recent datagrams are remembered to recognise their
/// multicast loopback.
const RECENT_SENT: usize = 16;

/// Bounds the work of one drain loop, so that no misbehaving state machine
/// can spin the caller.
const MAX_DRAIN_STEPS: usize = 16;

/// Bounds the routing events taken from one datagram.
const MAX_EVENTS_PER_DATAGRAM: usize = 256;

type ProtoQuery = Query<Instant, Slab<CollectedAnswer>, Slab<QueryUpdate>>;
type ProtoEndpoint = Endpoint<
    Instant,
    SplitMix64,
    Slab<CacheEntry<Instant>>,
    Slab<ServiceRoute>,
    Slab<ProtoQuery>,
    Slab<EndpointEventEntry>,
    Slab<CollectedAnswer>,
    Slab<QueryUpdate>,
>;
type ProtoService = Service<Instant, Slab<Transmit>, Slab<ServiceUpdate>>;

/// Why the mDNS service could not be built or could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdnsError {
    /// [`MdnsConfig::groups`] is empty.
    #[error("mDNS needs at least one multicast group")]
    NoGroups,
    /// More groups than [`MAX_GROUPS`].
    #[error("at most {max} mDNS groups are supported, found {found}")]
    TooManyGroups {
        /// The number of distinct groups given.
        found: usize,
        /// [`MAX_GROUPS`].
        max: usize,
    },
    /// A group address that is not multicast.
    #[error("mDNS group {group} is not a multicast address")]
    NotMulticast {
        /// The address.
        group: IpAddr,
    },
    /// [`MdnsConfig::port`] is 0.
    #[error("the mDNS port must not be 0")]
    PortZero,
    /// More addresses than [`MAX_ADDRESSES`].
    #[error("at most {max} addresses can be announced, found {found}")]
    TooManyAddresses {
        /// The number of distinct addresses given.
        found: usize,
        /// [`MAX_ADDRESSES`].
        max: usize,
    },
    /// The addresses have different ports: one SRV record carries one port.
    #[error("announced addresses must share one port (SRV carries one), found {first} and {other}")]
    MixedPorts {
        /// The port of the first address.
        first: u16,
        /// A different port of a later address.
        other: u16,
    },
    /// An address nobody could connect to: unspecified, multicast,
    /// broadcast, or port 0.
    #[error("{address} cannot be announced (unspecified, multicast, broadcast or port 0)")]
    Unannounceable {
        /// The address.
        address: SocketAddr,
    },
    /// [`MdnsService::announce`] on a node that has no address to announce.
    #[error("there is no address to announce")]
    NoAddresses,
    /// [`MAX_QUERIES`] queries are already in flight.
    #[error("{max} mDNS queries are already in flight")]
    TooManyQueries {
        /// [`MAX_QUERIES`].
        max: usize,
    },
    /// `mdns-proto` rejected a name built from a NodeId (cannot happen with
    /// a well-formed NodeId: its text is one 53-character label).
    #[error("invalid DNS name {name:?}")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// `mdns-proto` refused to register the service or start the query.
    #[error("mdns-proto refused: {reason}")]
    Refused {
        /// `mdns-proto`'s error, as text (its types are not part of our API).
        reason: String,
    },
}

/// A datagram for the driver to send from the mDNS socket.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MdnsTransmit {
    /// A multicast group at the mDNS port, or a unicast address (a reply to a
    /// legacy querier that did not ask from the mDNS port).
    pub destination: SocketAddr,
    /// The DNS message.
    pub bytes: Vec<u8>,
}

/// What was dropped or ignored, for the driver's metrics. Every counter only
/// grows (saturating).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct MdnsStats {
    /// Datagrams given to [`MdnsService::handle_datagram`].
    pub datagrams_received: u64,
    /// Of those: too large, unparseable or not an mDNS query / response.
    pub datagrams_dropped: u64,
    /// Of those: our own multicast looped back, ignored.
    pub own_datagrams: u64,
    /// Datagrams not queued because [`MAX_PENDING_TRANSMITS`] were waiting.
    pub transmits_dropped: u64,
    /// Answers not queued because [`MAX_PENDING_ANSWERS`] were waiting.
    pub answers_dropped: u64,
    /// Responses naming a queried instance whose TXT record did not carry
    /// the queried NodeId.
    pub answers_rejected: u64,
}

/// The service this node announces, while it announces.
struct Announced {
    handle: ServiceHandle,
    service: ProtoService,
}

/// A query in flight.
struct ActiveQuery {
    node_id: NodeId,
    handle: QueryHandle,
    /// `<nodeid>._polykey._udp.local`, lowercase, no trailing dot: what
    /// owner names of answer records are compared with.
    instance: String,
    /// Addresses already reported, so that repeated announcements and the
    /// same response arriving on two groups are reported once.
    found: BTreeSet<SocketAddr>,
}

/// The outgoing side: keynode's destinations, the bounded queue, and the
/// memory of what we sent (to recognise its loopback). Kept apart from the
/// state machines so that it can be borrowed while one of them is.
struct Outbox {
    groups: Vec<SocketAddr>,
    queue: VecDeque<MdnsTransmit>,
    recent: VecDeque<Vec<u8>>,
    dropped: u64,
}

/// Which families a datagram went out on.
#[derive(Clone, Copy, Default)]
struct Emitted {
    v4: bool,
    v6: bool,
}

impl Emitted {
    fn any(self) -> bool {
        self.v4 || self.v6
    }
}

impl Outbox {
    fn has_family(&self, v4: bool) -> bool {
        self.groups.iter().any(|group| group.is_ipv4() == v4)
    }

    /// Queues `bytes` for `proto_destination`, a destination `mdns-proto`
    /// chose. It writes the standard group and port into every multicast
    /// transmit (IPv4 only), so a multicast destination becomes one datagram
    /// per keynode group; a unicast one (a legacy reply) is kept.
    fn emit(&mut self, proto_destination: SocketAddr, bytes: &[u8]) -> Emitted {
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
    fn is_own(&self, bytes: &[u8]) -> bool {
        self.recent.iter().any(|sent| sent.as_slice() == bytes)
    }
}

/// mDNS for one node: announces it, answers questions for it, and finds other
/// nodes' addresses by NodeId. Sans-IO, in the style of `quinn-proto`:
///
/// ```text
/// socket datagram  → handle_datagram(now, from, bytes)
/// user / manager   → announce(now), query(now, id, node), end_query(id), stop(now)
/// poll_transmit()  → send to destination from the mDNS socket
/// poll_answer()    → Event::MdnsAnswer for the manager
/// poll_timeout()   → sleep until then, then handle_timeout(now)
/// ```
///
/// The driver binds one UDP socket per family to the mDNS port (with
/// `SO_REUSEADDR`/`SO_REUSEPORT`, since every local node uses that port),
/// joins the groups, enables multicast loop (so nodes on one host hear each
/// other), and passes every datagram it receives, including our own looped
/// back: they are recognised and ignored here.
///
/// A datagram handed out by `poll_transmit` counts as sent (UDP gives no
/// delivery report anyway); one that does not fit the bounded queue counts
/// as a failed send, which `mdns-proto` retries later.
pub struct MdnsService {
    node_id: NodeId,
    port: u16,
    /// The announced addresses (deduplicated, in the order given).
    addresses: Vec<SocketAddr>,
    endpoint: ProtoEndpoint,
    announced: Option<Announced>,
    /// A stopped service whose goodbye may still be going out: its route
    /// holds the instance name in `mdns-proto` until then, so announcing
    /// again must release it first.
    retired: Option<ServiceHandle>,
    queries: BTreeMap<QueryId, ActiveQuery>,
    answers: VecDeque<(QueryId, Vec<SocketAddr>)>,
    outbox: Outbox,
    /// Encoding buffer for `mdns-proto`'s transmits.
    buf: Vec<u8>,
    stats: MdnsStats,
}

impl fmt::Debug for MdnsService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdnsService")
            .field("node_id", &self.node_id)
            .field("addresses", &self.addresses)
            .field("groups", &self.outbox.groups)
            .field("announcing", &self.announced.is_some())
            .field("queries", &self.queries.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

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

    /// Starts announcing this node and answering questions for it: the
    /// first announcement is queued at once, the second a second later
    /// (RFC 6762 §8.3), then the records are re-announced before their TTL
    /// runs out. Announcing again while announcing does nothing.
    pub fn announce(&mut self, now: Instant) -> Result<(), MdnsError> {
        if self.announced.is_some() {
            return Ok(());
        }
        if self.addresses.is_empty() {
            return Err(MdnsError::NoAddresses);
        }
        // A goodbye still going out holds the name: drop it, since we are
        // about to announce the same records again.
        if let Some(retired) = self.retired.take() {
            self.endpoint.unregister_service(retired);
        }
        let records = self.records()?;
        let (handle, mut service) = self
            .endpoint
            .try_register_service::<Slab<Transmit>, Slab<ServiceUpdate>>(
                ServiceSpec::new(records),
                now,
            )
            .map_err(|error| MdnsError::Refused {
                reason: error.to_string(),
            })?;
        // The service starts in Announcing(0) with its deadline at `now`:
        // fire it so the first announcement is queued right away.
        let _ = service.handle_timeout(now);
        self.announced = Some(Announced { handle, service });
        self.pump(now);
        Ok(())
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

    /// Asks the local network for the addresses of `node_id`; what is found
    /// comes out of [`Self::poll_answer`] tagged with `query`. The question
    /// goes out at once and is repeated with backoff (1 s, 2 s, 4 s, …) until
    /// [`Self::end_query`], or at most [`QUERY_LIFETIME`]. Unsolicited
    /// announcements of `node_id` answer the query too. Reusing the id of a
    /// query in flight restarts it.
    pub fn query(
        &mut self,
        now: Instant,
        query: QueryId,
        node_id: NodeId,
    ) -> Result<(), MdnsError> {
        self.end_query(query);
        if self.queries.len() >= MAX_QUERIES {
            return Err(MdnsError::TooManyQueries { max: MAX_QUERIES });
        }
        let instance = instance_name(&node_id);
        let name = dns_name(&instance)?;
        // ANY: the responder sends its whole record set whatever the type,
        // and ANY is what other DNS-SD responders answer fully. No answer
        // collection in `mdns-proto` (0): answers are matched per datagram
        // in `match_answers`, which also needs the host's A / AAAA records
        // that an instance-name query would not collect.
        let spec = QuerySpec::new(name, ResourceType::Any)
            .with_max_answers(0)
            .with_timeout(QUERY_LIFETIME);
        let handle =
            self.endpoint
                .try_start_query(spec, now)
                .map_err(|error| MdnsError::Refused {
                    reason: error.to_string(),
                })?;
        self.queries.insert(
            query,
            ActiveQuery {
                node_id,
                handle,
                instance,
                found: BTreeSet::new(),
            },
        );
        self.pump(now);
        Ok(())
    }

    /// Ends a query: no more questions, no more answers (also drops its
    /// answers not yet polled). Unknown ids are ignored.
    pub fn end_query(&mut self, query: QueryId) {
        if let Some(active) = self.queries.remove(&query) {
            // Finished queries stay in mdns-proto's pool until cancelled.
            let _ = self.endpoint.cancel_query(active.handle);
        }
        self.answers.retain(|(id, _)| *id != query);
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
                // `handle`; what is left to deliver is questions (and
                // conflicts) for our service.
                for event in events.take(MAX_EVENTS_PER_DATAGRAM) {
                    if let Ok(RouteEvent::ToService(to_service)) = event
                        && let Some(announced) = announced.as_mut()
                        && to_service.handle() == announced.handle
                    {
                        announced.service.handle_event(to_service.into_event(), now);
                    }
                }
            }
        }
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

    /// The records this node announces.
    fn records(&self) -> Result<ServiceRecords, MdnsError> {
        let text = self.node_id.to_string();
        let instance = dns_name(&instance_name(&self.node_id))?;
        let host = dns_name(&format!("{text}.local"))?;
        let service_type = dns_name(SERVICE_TYPE)?;
        let port = self.addresses.first().map_or(0, SocketAddr::port);
        let mut records = ServiceRecords::new(service_type, instance, host, port, RECORD_TTL_SECS);
        for address in &self.addresses {
            match address {
                SocketAddr::V4(v4) => {
                    records.add_a(*v4.ip());
                }
                SocketAddr::V6(v6) => {
                    records.add_aaaa_scoped(*v6.ip(), v6.scope_id());
                }
            }
        }
        records.add_txt_segment(format!("{TXT_NODE_ID_KEY}={text}").into_bytes());
        Ok(records)
    }

    /// Drains everything `mdns-proto` has to send or report at `now`, after
    /// every input, so that `poll_transmit` and `poll_answer` need no clock.
    fn pump(&mut self, now: Instant) {
        self.pump_service(now);
        self.pump_queries(now);
        self.pump_goodbyes(now);
    }

    fn pump_service(&mut self, now: Instant) {
        let Some(announced) = self.announced.as_mut() else {
            return;
        };
        for _ in 0..MAX_DRAIN_STEPS {
            let Some(update) = announced.service.poll() else {
                break;
            };
            // A conflict (another responder announcing our instance name
            // with other records) can make the service rename itself; the
            // endpoint must hear of it before the next datagram, and the
            // old name gets its goodbye (mdns-proto's contract). Other
            // updates need nothing from us.
            if let ServiceUpdate::Renamed(renamed) = update {
                let _ = self
                    .endpoint
                    .handle_service_renamed(announced.handle, renamed.new_name().clone());
                if let Some(handoff) = announced.service.take_rename_goodbye_handoff() {
                    self.endpoint.enqueue_rename_withdrawal(handoff, now, false);
                }
            }
        }
        for _ in 0..MAX_DRAIN_STEPS {
            match announced.service.poll_transmit(now, &mut self.buf) {
                Ok(Some(transmit)) => {
                    let emitted = match self.buf.get(..transmit.size()) {
                        Some(bytes) => self.outbox.emit(transmit.dst(), bytes),
                        None => Emitted::default(),
                    };
                    // Every produced datagram must be confirmed before the
                    // service produces the next one.
                    announced.service.note_transmit_result(now, emitted.any());
                }
                // Ok(None): nothing due. Err: the message does not fit
                // MAX_PACKET_LEN; the service keeps it and retries on its
                // next deadline, which cannot succeed but cannot spin either.
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn pump_queries(&mut self, now: Instant) {
        let mut finished = Vec::new();
        for (id, active) in &self.queries {
            for _ in 0..MAX_DRAIN_STEPS {
                match self
                    .endpoint
                    .poll_query_transmit(active.handle, now, &mut self.buf)
                {
                    Ok(Some(transmit)) => {
                        let emitted = match self.buf.get(..transmit.size()) {
                            Some(bytes) => self.outbox.emit(transmit.dst(), bytes),
                            None => Emitted::default(),
                        };
                        self.endpoint
                            .note_query_transmit_result(active.handle, now, emitted.any());
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // The terminal update comes once; a finished query would
            // otherwise keep its slot in mdns-proto's pool forever.
            for _ in 0..MAX_DRAIN_STEPS {
                match self.endpoint.poll_query(active.handle) {
                    Some(QueryUpdate::Done | QueryUpdate::Timeout) => finished.push(*id),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        for id in finished {
            self.end_query(id);
        }
    }

    fn pump_goodbyes(&mut self, now: Instant) {
        let has_v4 = self.outbox.has_family(true);
        let has_v6 = self.outbox.has_family(false);
        for _ in 0..MAX_DRAIN_STEPS {
            let Some((destination, size, token)) =
                self.endpoint.poll_withdrawal_transmit(now, &mut self.buf)
            else {
                break;
            };
            let emitted = match self.buf.get(..size) {
                Some(bytes) => self.outbox.emit(destination, bytes),
                None => Emitted::default(),
            };
            // Per family: a family without a group has nobody to say
            // goodbye to; one whose datagram did not fit the queue retries.
            let outcome = |has: bool, sent: bool| match (has, sent) {
                (false, _) => WithdrawalSend::WriteOff,
                (true, true) => WithdrawalSend::Sent,
                (true, false) => WithdrawalSend::Retry,
            };
            self.endpoint.note_withdrawal_result(
                token,
                now,
                outcome(has_v4, emitted.v4),
                outcome(has_v6, emitted.v6),
            );
        }
        let mut completed: Vec<ServiceHandle> = Vec::new();
        self.endpoint
            .drain_completed_withdrawals(now, &mut completed);
        if self
            .retired
            .is_some_and(|retired| completed.contains(&retired))
        {
            self.retired = None;
        }
    }

    /// Reads one response datagram for answers to our queries: for each
    /// query, the SRV and TXT records of its instance name, the TXT NodeId
    /// being the queried one, and the A / AAAA records of the SRV target.
    fn match_answers(&mut self, from: SocketAddr, bytes: &[u8]) {
        let Ok(reader) = MessageReader::try_parse(bytes) else {
            return;
        };
        if !reader.header().flags().is_response() {
            return;
        }
        let records = PacketRecords::read(&reader);
        for (id, active) in self.queries.iter_mut() {
            let mut named = false;
            let mut vouched = false;
            for (owner, node_id) in &records.txt {
                if *owner == active.instance {
                    named = true;
                    vouched |= *node_id == Some(active.node_id);
                }
            }
            if !vouched {
                if named {
                    self.stats.answers_rejected = self.stats.answers_rejected.saturating_add(1);
                }
                continue;
            }
            let mut new = BTreeSet::new();
            for (owner, port, target) in &records.srv {
                if *owner != active.instance || *port == 0 {
                    continue;
                }
                for (host, ip) in &records.addresses {
                    if host != target {
                        continue;
                    }
                    let address = socket_address(*ip, *port, from);
                    if !active.found.contains(&address)
                        && active.found.len().saturating_add(new.len()) < MAX_ADDRESSES
                    {
                        new.insert(address);
                    }
                }
            }
            if new.is_empty() {
                continue;
            }
            if self.answers.len() >= MAX_PENDING_ANSWERS {
                // Not marked found: a later response can still report them.
                self.stats.answers_dropped = self.stats.answers_dropped.saturating_add(1);
                continue;
            }
            active.found.extend(new.iter().copied());
            self.answers.push_back((*id, new.into_iter().collect()));
        }
    }
}

/// The records of one datagram that answers are made of, owner names
/// lowercased without the trailing dot.
#[derive(Default)]
struct PacketRecords {
    /// (owner, port, target host)
    srv: Vec<(String, u16, String)>,
    /// (owner, the NodeId of its `nodeid=` entry if it has a valid one)
    txt: Vec<(String, Option<NodeId>)>,
    /// (owner, address)
    addresses: Vec<(String, IpAddr)>,
}

impl PacketRecords {
    fn read(reader: &MessageReader<'_>) -> Self {
        let mut records = Self::default();
        // Answers and additionals both: DNS-SD responders put the SRV, TXT
        // and addresses in either. A malformed record ends its section.
        let all = reader
            .answers()
            .map_while(Result::ok)
            .chain(reader.additional().map_while(Result::ok))
            .take(MAX_RECORDS_PER_PACKET);
        for record in all {
            // TTL 0 is a goodbye: the record is being withdrawn.
            if record.ttl() == 0 {
                continue;
            }
            let Some(owner) = lowercase_name(record.name()) else {
                continue;
            };
            match record.rdata_view() {
                Ok(Rdata::Srv(srv)) => {
                    if let Some(target) = lowercase_name(srv.target()) {
                        records.srv.push((owner, srv.port(), target));
                    }
                }
                Ok(Rdata::Txt(txt)) => {
                    let node_id = txt.segments().map_while(Result::ok).find_map(txt_node_id);
                    records.txt.push((owner, node_id));
                }
                Ok(Rdata::A(a)) => {
                    let ip = IpAddr::V4(a.addr());
                    if connectable(ip) {
                        records.addresses.push((owner, ip));
                    }
                }
                Ok(Rdata::AAAA(aaaa)) => {
                    let ip = IpAddr::V6(aaaa.addr());
                    if connectable(ip) {
                        records.addresses.push((owner, ip));
                    }
                }
                _ => {}
            }
        }
        records
    }
}

/// The NodeId of a TXT entry `nodeid=<NodeId>` (the key is
/// case-insensitive, RFC 6763 §6.4; the value is the case-sensitive NodeId
/// text).
fn txt_node_id(segment: &[u8]) -> Option<NodeId> {
    let text = std::str::from_utf8(segment).ok()?;
    let (key, value) = text.split_once('=')?;
    if !key.eq_ignore_ascii_case(TXT_NODE_ID_KEY) {
        return None;
    }
    value.parse().ok()
}

/// A DNS name as lowercase dotted text, or `None` if it is malformed or not
/// ASCII (ours are ASCII, so such a name never matches anyway).
fn lowercase_name(name: &NameRef<'_>) -> Option<String> {
    let mut text = String::new();
    for label in name.labels() {
        let label = label.ok()?;
        if !label.is_ascii() {
            return None;
        }
        if !text.is_empty() {
            text.push('.');
        }
        text.extend(
            label
                .iter()
                .map(|byte| char::from(byte.to_ascii_lowercase())),
        );
    }
    Some(text)
}

/// The instance name of a node, lowercase, without the trailing dot.
fn instance_name(node_id: &NodeId) -> String {
    // NodeId text is lowercase already; lowercasing again keeps the
    // comparison right should that ever change.
    format!("{node_id}.{SERVICE_TYPE}").to_ascii_lowercase()
}

fn dns_name(text: &str) -> Result<Name, MdnsError> {
    Name::try_from_str(text).map_err(|_| MdnsError::InvalidName {
        name: text.to_owned(),
    })
}

/// Whether a peer could connect to `ip`.
fn connectable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// The socket address of an answer. An IPv6 link-local address means
/// nothing without its interface; the best guess is the interface the
/// response came in on.
fn socket_address(ip: IpAddr, port: u16, from: SocketAddr) -> SocketAddr {
    match (ip, from) {
        (IpAddr::V6(v6), SocketAddr::V6(from)) if v6.is_unicast_link_local() => {
            SocketAddr::V6(SocketAddrV6::new(v6, port, 0, from.scope_id()))
        }
        _ => SocketAddr::new(ip, port),
    }
}

/// Checks and deduplicates the addresses to announce.
fn validate_addresses(addresses: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, MdnsError> {
    let mut unique: Vec<SocketAddr> = Vec::new();
    for address in addresses {
        // An IPv4 address in IPv6 clothing (from a dual-stack socket) is
        // announced as the A record it is.
        let address = SocketAddr::new(address.ip().to_canonical(), address.port());
        if address.port() == 0 || !connectable(address.ip()) {
            return Err(MdnsError::Unannounceable { address });
        }
        if !unique.contains(&address) {
            unique.push(address);
        }
    }
    if unique.len() > MAX_ADDRESSES {
        return Err(MdnsError::TooManyAddresses {
            found: unique.len(),
            max: MAX_ADDRESSES,
        });
    }
    if let Some(first) = unique.first().map(SocketAddr::port)
        && let Some(other) = unique
            .iter()
            .map(SocketAddr::port)
            .find(|port| *port != first)
    {
        return Err(MdnsError::MixedPorts { first, other });
    }
    Ok(unique)
}

/// SplitMix64 (Steele, Lea, Flood 2014): the generator behind `mdns-proto`'s
/// response jitter and transaction ids. Nothing there needs secrecy, only
/// spread; seeding it from the NodeId keeps the service deterministic and
/// gives different nodes different jitter. `mdns-proto` takes a
/// `rand_core` 0.10 generator, which the core's `rand` 0.9 ones are not.
struct SplitMix64(u64);

impl SplitMix64 {
    fn from_node_id(node_id: &NodeId) -> Self {
        let seed = node_id
            .as_bytes()
            .iter()
            .fold(0u64, |seed, byte| seed.rotate_left(8) ^ u64::from(*byte));
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl rand_core_010::TryRng for SplitMix64 {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            for (byte, random) in chunk.iter_mut().zip(self.next().to_le_bytes()) {
                *byte = random;
            }
        }
        Ok(())
    }
}
