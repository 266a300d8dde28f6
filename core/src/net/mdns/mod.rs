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
//! - no yielding on conflicts: the names are our NodeId, which no other
//!   responder can hold honestly, so records claiming them with other data
//!   are counted ([`MdnsStats::conflicts_ignored`]) and ignored instead of
//!   renaming the instance (which would hide the node from every querier);
//! - bounds on queries, answers, queued transmits and datagram sizes.
//!
//! Nothing here reads a clock, a socket or an entropy source: time comes in
//! as `now`, datagrams go out through [`MdnsService::poll_transmit`], and
//! `mdns-proto`'s randomness (response jitter, transaction ids) comes from a
//! generator seeded with the NodeId.
//!
//! One concept a file: this one holds the [`MdnsService`] type, its limits
//! and the `mdns-proto` types it is built from; `service` its construction,
//! inputs and polls; `responder` announcing and answering (and the
//! goodbye); `querier` the queries and the matching of answers to them;
//! `packet` reading records and building names; `outbox` the bounded
//! transmit queue and the loopback filter; `rng` the generator behind
//! `mdns-proto`'s jitter; `error` what can go wrong.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mdns_proto::cache::CacheEntry;
use mdns_proto::endpoint::{Endpoint, EndpointEventEntry, ServiceRoute};
use mdns_proto::event::{QueryUpdate, ServiceUpdate};
use mdns_proto::slab::Slab;
use mdns_proto::transmit::Transmit;
use mdns_proto::{CollectedAnswer, Query, Service, ServiceHandle};

use crate::{NodeId, QueryId};

mod error;
mod outbox;
mod packet;
mod querier;
mod responder;
mod rng;
mod service;

pub use error::MdnsError;
pub use outbox::MdnsTransmit;
use outbox::Outbox;
use querier::ActiveQuery;
use responder::Announced;
use rng::SplitMix64;

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

/// Bounds the work of one drain loop, so that no misbehaving state machine
/// can spin the caller.
const MAX_DRAIN_STEPS: usize = 16;

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
    /// Records of another responder claiming our NodeId-named instance or
    /// host name: forgeries, since the names are our NodeId, so ignored
    /// rather than yielded to.
    pub conflicts_ignored: u64,
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
