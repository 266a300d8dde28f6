//! The agent's metrics: a snapshot of what the core counts
//! ([`Agent::metrics`]) and its export with `prometheus-client`
//! ([`Agent::register_metrics`], [`Agent::metrics_text`]).
//!
//! Nothing is global: each agent registers a collector that reads its own
//! node at scrape time, so several agents in one process (the demo, the
//! tests) each have their own registry and none sees another's counts.

use keynode_core::Stats;
use keynode_core::metrics::{Counters, Histogram, LabelSet, Metrics};
use keynode_core::nat::NatClass;
use keynode_core::net::AdmissionStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::Agent;
use crate::shared::Shared;

/// The prefix of every metric name in [`Agent::metrics_text`].
pub const METRICS_PREFIX: &str = "keynode";

/// The content type of [`Agent::metrics_text`]'s output (the Prometheus
/// text exposition format).
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything the core counts, read at one moment.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Connections, handshakes, punches, lookups, requests, stream bytes.
    pub core: Metrics,
    /// The manager's drops and refusals.
    pub stats: Stats,
    /// The net layer's admission counters and table sizes.
    pub admission: AdmissionStats,
    /// Contacts in the node graph.
    pub contacts: usize,
    /// The relay: whether it relays now, the reservations held with
    /// relays, and the relay's counters.
    pub relay: crate::RelayStatus,
}

impl MetricsSnapshot {
    fn of(shared: &Shared) -> Self {
        let state = shared.lock();
        let manager = state.node.manager_ref();
        Self {
            core: manager.metrics().clone(),
            stats: manager.stats(),
            admission: state.node.admission_stats(),
            contacts: manager.graph().len(),
            relay: crate::RelayStatus::of(&state.node),
        }
    }

    /// Each drop or refusal by reason (the `dropped_total` family).
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// for (reason, count) in agent.metrics().drops() {
    ///     if count > 0 {
    ///         println!("{reason}: {count}");
    ///     }
    /// }
    /// # }
    /// ```
    pub fn drops(&self) -> [(&'static str, u64); 18] {
        let (s, a) = (&self.stats, &self.admission);
        [
            ("observations_queue_full", self.core.observations_dropped),
            ("events_queue_full", s.events_dropped),
            ("stale_event", s.stale_events),
            ("connection_refused", s.connections_refused),
            ("signal_rate_limited", s.signals_rate_limited),
            ("signal_unvouched", s.signals_unvouched),
            ("store_failure", s.store_failures),
            ("claim_busy", s.claims_refused_busy),
            ("ip_group_full", s.ip_group_refused),
            ("dial_back_skipped", s.dial_backs_skipped),
            ("handshake_refused", a.refused_handshakes),
            ("handshake_per_ip", a.refused_per_ip),
            ("handshake_per_prefix", a.refused_per_prefix),
            ("handshake_no_slot", a.refused_slots),
            ("datagram_ignored", a.ignored),
            ("handshake_timed_out", a.handshakes_timed_out),
            ("closed_over_limit", a.closed_over_limit),
            ("evicted_for_dial", a.evicted),
        ]
    }
}

/// Reads one agent's node on every scrape.
struct NodeCollector(Shared);

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

fn counters<L: LabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counters: &Counters<L>,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (label, value) in counters.iter() {
        let labels = label.labels();
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: usize,
) -> std::fmt::Result {
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter family with one label, `reason`.
fn by_reason(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&'static str, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (reason, value) in values {
        family
            .encode_family(&[("reason", *reason)])?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

/// The relay's families: `relay_*`.
fn relay(e: &mut DescriptorEncoder, snap: &MetricsSnapshot) -> std::fmt::Result {
    let r = &snap.relay;
    // The gauge helper takes sizes; the counts are far below usize::MAX.
    let as_size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    gauge(
        e,
        "relay_serving",
        "1 if this node relays for others now, else 0.",
        usize::from(r.relaying),
    )?;
    gauge(
        e,
        "relay_pairs",
        "Relayed pairs this node forwards between now.",
        as_size(r.stats.pairs),
    )?;
    gauge(
        e,
        "relay_reservations_served",
        "Relay reservations this node holds for others now.",
        as_size(r.stats.reservations),
    )?;
    gauge(
        e,
        "relay_reservations_held",
        "Relay reservations this node holds with relays now.",
        as_size(snap.core.relay_reservations),
    )?;
    gauge(
        e,
        "relay_paths",
        "Relayed paths this node keeps as a relay's client now.",
        as_size(r.stats.paths),
    )?;
    counter(
        e,
        "relay_pairs_opened",
        "Relayed pairs this node opened.",
        r.stats.pairs_opened,
    )?;
    counter(
        e,
        "relay_reservations_granted",
        "Relay reservations this node granted (renewals too).",
        r.stats.reservations_granted,
    )?;
    counter(
        e,
        "relay_frames_forwarded",
        "Relay frames this node forwarded.",
        r.stats.frames_forwarded,
    )?;
    counter(
        e,
        "relay_bytes_forwarded",
        "QUIC bytes in the relay frames this node forwarded (headers not counted).",
        r.stats.bytes_forwarded,
    )?;
    by_reason(
        e,
        "relay_dropped",
        "Relay frames dropped, by reason.",
        &r.drops(),
    )?;
    by_reason(
        e,
        "relay_refused",
        "Relay pair and reservation requests refused, by reason.",
        &r.refusals(),
    )
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram,
) -> std::fmt::Result {
    let buckets: Vec<(f64, u64)> = h.buckets().collect();
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum(), h.count(), &buckets, None)
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let snap = MetricsSnapshot::of(&self.0);
        let m = &snap.core;
        let e = &mut e;
        counters(
            e,
            "connections_opened",
            "Connections that came up and were kept, by mode and direction.",
            &m.connections_opened,
        )?;
        counters(
            e,
            "connections_closed",
            "Kept connections that closed, by mode and direction.",
            &m.connections_closed,
        )?;
        gauge(
            e,
            "connections",
            "Connections in the table now.",
            snap.admission.connections,
        )?;
        gauge(e, "contacts", "Contacts in the node graph.", snap.contacts)?;
        counters(
            e,
            "handshakes_failed",
            "Outbound connection attempts that failed, by reason.",
            &m.handshakes_failed,
        )?;
        counter(e, "punches_tried", "Hole punches started.", m.punches_tried)?;
        counter(
            e,
            "punches_succeeded",
            "Outbound hole-punched (signal) connections that came up.",
            m.punches_succeeded,
        )?;
        histogram(
            e,
            "time_to_connect_seconds",
            "From an outbound attempt's start to its connection being up.",
            &m.time_to_connect,
        )?;
        counters(e, "lookups", "Lookups that ended, by outcome.", &m.lookups)?;
        histogram(
            e,
            "lookup_hops",
            "Nodes a lookup contacted before it ended.",
            &m.lookup_hops,
        )?;
        histogram(
            e,
            "lookup_duration_seconds",
            "How long a lookup took.",
            &m.lookup_duration,
        )?;
        counters(
            e,
            "requests_served",
            "Peers' requests answered, by type.",
            &m.requests_served,
        )?;
        counters(
            e,
            "stream_bytes",
            "Bytes on application streams, written or read by this node.",
            &m.stream_bytes,
        )?;
        let mut class = e.encode_descriptor(
            "nat_class",
            "The NAT class the observed addresses give: 1 for the current class.",
            None,
            MetricType::Gauge,
        )?;
        for c in NatClass::ALL {
            let value = i64::from(*c == m.nat_class);
            class.encode_family(&c.labels())?.encode_gauge(&value)?;
        }
        counters(
            e,
            "nat_class_changes",
            "Times the NAT class changed, by the class it changed to.",
            &m.nat_class_changes,
        )?;
        counter(
            e,
            "observed_addresses_replaced",
            "Observed addresses that replaced one of the same observer network.",
            m.observed_addresses_replaced,
        )?;
        counter(
            e,
            "observed_addresses_refused",
            "Observed addresses refused (repeated, table full, or not an address of this node).",
            m.observed_addresses_refused,
        )?;
        by_reason(
            e,
            "dropped",
            "What the node dropped or refused, by reason.",
            &snap.drops(),
        )?;
        relay(e, &snap)
    }
}

impl Agent {
    /// What the core has counted so far: connections, handshakes, punches,
    /// lookups, requests, stream bytes, drops and the relay's counters.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// let m = agent.metrics();
    /// println!("{} lookups, {} contacts", m.core.lookups.total(), m.contacts);
    /// # }
    /// ```
    pub fn metrics(&self) -> MetricsSnapshot {
        MetricsSnapshot::of(&self.shared)
    }

    /// Adds this agent's metrics to `registry`: they are read from the
    /// node at every encode. Give each agent its own registry (or its own
    /// sub-registry) when several share a process.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// let mut registry = prometheus_client::registry::Registry::with_prefix("keynode");
    /// agent.register_metrics(&mut registry);
    /// # }
    /// ```
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(NodeCollector(self.shared.clone())));
    }

    /// The agent's metrics in the Prometheus text exposition format
    /// (names prefixed [`METRICS_PREFIX`], [`METRICS_CONTENT_TYPE`]), from
    /// a registry of this agent's own.
    ///
    /// ```no_run
    /// # fn f(agent: keynode_agent::Agent) {
    /// print!("{}", agent.metrics_text());
    /// # }
    /// ```
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::with_prefix(METRICS_PREFIX);
        self.register_metrics(&mut registry);
        let mut text = String::new();
        // Writing to a String fails only if a collector fails, and ours
        // does not.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
        text
    }
}
