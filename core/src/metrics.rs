//! The node's metrics: plain counters and fixed-bucket histograms, with
//! fixed enums as labels. No I/O and no clock: the manager and the net
//! layer add to them as things happen, with the times they were given, and
//! the agent exports a copy ([`Metrics`] is `Clone`).
//!
//! The rule: metrics are written, never read, by the core. No decision
//! depends on them, so a node with metrics behaves exactly as one without
//! (the simulator's trace does not move). Every set is a fixed array (one
//! slot per label value, one per bucket): recording costs the same however
//! much traffic there is, and memory never grows.

use core::fmt;
use core::marker::PhantomData;
use std::time::Duration;

use crate::contact::ContactMode;
use crate::nat::NatClass;

/// The most values one label set can take (the length of a [`Counters`]).
pub const MAX_LABEL_VALUES: usize = 8;

/// A label set with a fixed list of values: the index of a [`Counters`]
/// slot.
pub trait LabelSet: Copy + fmt::Debug + 'static {
    /// Every value, in index order; at most [`MAX_LABEL_VALUES`].
    const ALL: &'static [Self];
    /// This value's slot, below `ALL.len()`.
    fn index(self) -> usize;
    /// The (label name, label value) pairs of this value, for export.
    fn labels(self) -> &'static [(&'static str, &'static str)];
}

/// One counter per value of the label set `L`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Counters<L> {
    counts: [u64; MAX_LABEL_VALUES],
    labels: PhantomData<L>,
}

impl<L: LabelSet> Counters<L> {
    /// Adds `n` to the counter of `label`.
    pub fn add(&mut self, label: L, n: u64) {
        if let Some(c) = self.counts.get_mut(label.index()) {
            *c = c.saturating_add(n);
        }
    }

    /// Adds one to the counter of `label`.
    pub fn inc(&mut self, label: L) {
        self.add(label, 1);
    }

    /// The counter of `label`.
    pub fn get(&self, label: L) -> u64 {
        self.counts.get(label.index()).copied().unwrap_or(0)
    }

    /// Every label value with its count, in `L::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::ALL.iter().map(|l| (*l, self.get(*l)))
    }

    /// The sum over every label value.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl<L> Default for Counters<L> {
    fn default() -> Self {
        Self {
            counts: [0; MAX_LABEL_VALUES],
            labels: PhantomData,
        }
    }
}

impl<L: LabelSet> fmt::Debug for Counters<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// The most buckets a [`Histogram`] has (its bounds; one more slot counts
/// what is above the last bound).
pub const MAX_BUCKETS: usize = 16;

/// Bucket bounds of durations, in seconds: 1 ms to 60 s.
pub const DURATION_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds of small counts (a lookup's nodes contacted).
pub const COUNT_BOUNDS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 32.0, 64.0,
];

/// A histogram with fixed bucket bounds, as Prometheus keeps one: a count
/// per bucket (not cumulative), the sum and the count of observations.
#[derive(Clone, Copy, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `counts[i]`: observations in `(bounds[i-1], bounds[i]]`; the slot
    /// after the last bound: above it.
    counts: [u64; MAX_BUCKETS + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (increasing; the first
    /// [`MAX_BUCKETS`] are kept).
    pub const fn new(bounds: &'static [f64]) -> Self {
        let bounds = if bounds.len() > MAX_BUCKETS {
            bounds.split_at(MAX_BUCKETS).0
        } else {
            bounds
        };
        Self {
            bounds,
            counts: [0; MAX_BUCKETS + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: f64) {
        let slot = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(slot) {
            *c = c.saturating_add(1);
        }
        self.sum += value;
        self.count = self.count.saturating_add(1);
    }

    /// Records a duration, in seconds.
    pub fn observe_duration(&mut self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Each bound with the observations in its bucket (not cumulative),
    /// then `f64::INFINITY` with those above the last bound.
    pub fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .copied()
            .chain(core::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// How many observations.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .finish()
    }
}

/// Who opened a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// This node dialled it.
    Outbound,
    /// The peer dialled this node.
    Inbound,
}

impl Direction {
    /// `outbound` or `inbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
        }
    }
}

/// A connection's label set: how it was made and who made it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ConnKind {
    /// Direct, hole-punched (signal) or relayed.
    pub mode: ContactMode,
    /// Who dialled.
    pub direction: Direction,
}

macro_rules! conn_kinds {
    ($(($mode:ident, $m:literal, $dir:ident, $d:literal)),* $(,)?) => {
        impl LabelSet for ConnKind {
            const ALL: &'static [Self] = &[$(ConnKind {
                mode: ContactMode::$mode,
                direction: Direction::$dir,
            }),*];
            fn index(self) -> usize {
                let mode = match self.mode {
                    ContactMode::Direct => 0,
                    ContactMode::Signal => 1,
                    ContactMode::Relay => 2,
                };
                mode * 2 + usize::from(self.direction == Direction::Inbound)
            }
            fn labels(self) -> &'static [(&'static str, &'static str)] {
                match (self.mode, self.direction) {
                    $((ContactMode::$mode, Direction::$dir) => &[("mode", $m), ("direction", $d)],)*
                }
            }
        }
    };
}

conn_kinds!(
    (Direct, "direct", Outbound, "outbound"),
    (Direct, "direct", Inbound, "inbound"),
    (Signal, "signal", Outbound, "outbound"),
    (Signal, "signal", Inbound, "inbound"),
    (Relay, "relay", Outbound, "outbound"),
    (Relay, "relay", Inbound, "inbound"),
);

/// A label set that is one enum with one label.
macro_rules! single_label {
    ($ty:ident, $label:literal, $(($variant:ident, $value:literal)),* $(,)?) => {
        impl LabelSet for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),*];
            fn index(self) -> usize {
                self as usize
            }
            fn labels(self) -> &'static [(&'static str, &'static str)] {
                match self {
                    $($ty::$variant => &[($label, $value)],)*
                }
            }
        }
    };
}

/// Why an outbound connection attempt failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HandshakeFailure {
    /// No answer within the timeout.
    Timeout,
    /// The peer's certificate named another NodeId.
    WrongNodeId,
    /// The hostname did not resolve.
    Resolve,
    /// Refused, unreachable, TLS or another transport error.
    Transport,
    /// Up, but closed at once: the connection limit, or our own NodeId.
    Refused,
}

single_label!(
    HandshakeFailure,
    "reason",
    (Timeout, "timeout"),
    (WrongNodeId, "wrong_node_id"),
    (Resolve, "resolve"),
    (Transport, "transport"),
    (Refused, "refused"),
);

/// How a lookup (`find_node`, `ping_node`, a refresh's lookup) ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LookupOutcome {
    /// The node was found and connected to (a success).
    Found,
    /// The lookup ran out of candidates without it.
    NotFound,
    /// The deadline passed first.
    Timeout,
}

single_label!(
    LookupOutcome,
    "outcome",
    (Found, "found"),
    (NotFound, "not_found"),
    (Timeout, "timeout"),
);

/// A peer's request, by type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RequestKind {
    /// `ClosestNodes`.
    ClosestNodes,
    /// `Signal` (we are the signaller).
    Signal,
    /// `SignalFinal` (we are asked to punch).
    SignalFinal,
    /// `ChainData`.
    ChainData,
    /// `RelayOpen` (we are the relay).
    RelayOpen,
    /// `Reserve` (we are the relay).
    Reserve,
}

single_label!(
    RequestKind,
    "type",
    (ClosestNodes, "closest_nodes"),
    (Signal, "signal"),
    (SignalFinal, "signal_final"),
    (ChainData, "chain_data"),
    (RelayOpen, "relay_open"),
    (Reserve, "reserve"),
);

impl RequestKind {
    /// The kind of `request`.
    pub fn of(request: &crate::wire::Request) -> Self {
        use crate::wire::Request;
        match request {
            Request::ClosestNodes { .. } => Self::ClosestNodes,
            Request::Signal { .. } => Self::Signal,
            Request::SignalFinal { .. } => Self::SignalFinal,
            Request::ChainData { .. } => Self::ChainData,
            Request::RelayOpen { .. } => Self::RelayOpen,
            Request::Reserve { .. } => Self::Reserve,
        }
    }
}

/// Which way application bytes went.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flow {
    /// Written by this node's application.
    Sent,
    /// Read by this node's application.
    Received,
}

single_label!(Flow, "flow", (Sent, "sent"), (Received, "received"));

/// Everything the core counts beyond [`crate::Stats`] and
/// [`crate::net::AdmissionStats`] (which hold the drops by reason).
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Connections that came up and were kept.
    pub connections_opened: Counters<ConnKind>,
    /// Kept connections that closed (idled out, closed by the peer or lost).
    pub connections_closed: Counters<ConnKind>,
    /// Outbound attempts that failed, by reason.
    pub handshakes_failed: Counters<HandshakeFailure>,
    /// Hole punches this node started (for its lookup or at a signal).
    pub punches_tried: u64,
    /// Outbound signal-mode connections that came up.
    pub punches_succeeded: u64,
    /// From an outbound attempt's start to its connection being up, seconds.
    pub time_to_connect: Histogram,
    /// Lookups that ended, by outcome.
    pub lookups: Counters<LookupOutcome>,
    /// Nodes a lookup contacted before it ended.
    pub lookup_hops: Histogram,
    /// How long a lookup took, seconds.
    pub lookup_duration: Histogram,
    /// Peers' requests answered, by type.
    pub requests_served: Counters<RequestKind>,
    /// Bytes of application streams (`Node::open_stream` and incoming),
    /// written or read by this node's application.
    pub stream_bytes: Counters<Flow>,
    /// Observations (agent events) dropped because the queue held
    /// `max_queued_events` (no one drained it).
    pub observations_dropped: u64,
    /// The NAT class now (a gauge: the last class the observed addresses
    /// gave).
    pub nat_class: NatClass,
    /// Times the NAT class changed, by the class it changed to.
    pub nat_class_changes: Counters<NatClass>,
    /// Relay reservations this node holds now (a gauge).
    pub relay_reservations: u64,
    /// Upgrades of relayed connections tried (punches through the relay).
    pub relay_upgrades_tried: u64,
    /// Relayed connections that a direct (punched) one took over from.
    pub relay_upgrades_succeeded: u64,
    /// Observed addresses that replaced an earlier one of the same
    /// observer network (a newer connection from it).
    pub observed_addresses_replaced: u64,
    /// Observed addresses refused: a second one on a connection, a full
    /// table, an unspecified, multicast or broadcast address or port 0, a
    /// loopback address from a remote peer.
    pub observed_addresses_refused: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections_opened: Counters::default(),
            connections_closed: Counters::default(),
            handshakes_failed: Counters::default(),
            punches_tried: 0,
            punches_succeeded: 0,
            time_to_connect: Histogram::new(DURATION_BOUNDS),
            lookups: Counters::default(),
            lookup_hops: Histogram::new(COUNT_BOUNDS),
            lookup_duration: Histogram::new(DURATION_BOUNDS),
            requests_served: Counters::default(),
            stream_bytes: Counters::default(),
            observations_dropped: 0,
            nat_class: NatClass::Unknown,
            nat_class_changes: Counters::default(),
            relay_reservations: 0,
            relay_upgrades_tried: 0,
            relay_upgrades_succeeded: 0,
            observed_addresses_replaced: 0,
            observed_addresses_refused: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_indices_are_distinct_and_in_range() {
        fn check<L: LabelSet>() {
            assert!(L::ALL.len() <= MAX_LABEL_VALUES);
            for (i, l) in L::ALL.iter().enumerate() {
                assert_eq!(l.index(), i, "{l:?}");
            }
        }
        check::<ConnKind>();
        check::<HandshakeFailure>();
        check::<LookupOutcome>();
        check::<RequestKind>();
        check::<Flow>();
        check::<NatClass>();
    }

    #[test]
    fn histogram_buckets_hold_what_falls_in_them() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 4.0] {
            h.observe(v);
        }
        let buckets: Vec<_> = h.buckets().collect();
        assert_eq!(buckets, vec![(1.0, 2), (2.0, 1), (f64::INFINITY, 2)]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum(), 10.0);
    }

    #[test]
    fn counters_count_per_label() {
        let mut c = Counters::<ConnKind>::default();
        let k = ConnKind {
            mode: ContactMode::Signal,
            direction: Direction::Inbound,
        };
        c.inc(k);
        c.add(k, 2);
        assert_eq!(c.get(k), 3);
        assert_eq!(c.total(), 3);
    }
}
