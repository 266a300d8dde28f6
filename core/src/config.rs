//! [`Config`]: every tunable and every bound of the core.

use std::net::IpAddr;
use std::time::Duration;

use crate::ip_group::IpGroupLimits;

/// The core's configuration: the spec's NodeManager constructor options, with
/// the original's defaults, and a bound for every table and queue the core keeps.
///
/// Spec: the options of `NodeManager.constructor`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Contacts per bucket (Kademlia's k), also the size of a closest-nodes
    /// answer and of the Kademlia termination set. Default 20.
    pub k: usize,
    /// Pending nodes kept per bucket while it is full, waiting for garbage
    /// collection to make room. The oldest pending entry is dropped (and
    /// counted) when the list is full. Default 20.
    pub max_pending_per_bucket: usize,
    /// Spec `connectionConnectTimeoutTime`: how long one connection attempt may
    /// take. Default 15 s.
    pub connection_connect_timeout: Duration,
    /// Spec `refreshBucketDelayTime`: how often each bucket is refreshed.
    /// Zero disables refreshing. Default 1 h.
    pub refresh_bucket_delay: Duration,
    /// Spec `refreshBucketDelayJitter`: a factor, not a time. A refresh is
    /// due after `delay ± delay × jitter / 2`. Default 0.5 (45 to 75 min).
    pub refresh_bucket_delay_jitter: f64,
    /// Spec `retryConnectionsDelayTime`: how often the connection check runs
    /// (refresh bucket 255 and find the own NodeId). Zero disables it. Default 45 s.
    pub retry_connections_delay: Duration,
    /// Spec `nodesConnectionFindLocalTimeoutTime`: how long an mDNS query
    /// collects answers. Default 1.5 s.
    pub nodes_connection_find_local_timeout: Duration,
    /// Spec `mdnsOptions`: `None` turns mDNS off (no announce, no query).
    pub mdns: Option<MdnsConfig>,
    /// How long a request may wait for its response. Default 15 s.
    pub rpc_timeout: Duration,
    /// How long a `find_node` may run when the caller gives no deadline. Default 60 s.
    pub find_node_timeout: Duration,
    /// α: connection attempts in flight per lookup, shared by its
    /// strategies. Default 3.
    pub concurrency_limit: usize,
    /// The most nodes one lookup contacts. Default 20.
    pub find_node_limit: usize,
    /// Candidates one lookup remembers; the farthest are forgotten first. Default 100.
    pub max_lookup_candidates: usize,
    /// Pings in flight during the garbage collection of one bucket. Default 3.
    pub gc_concurrency: usize,
    /// Garbage collection takes a contact that connected less than this long
    /// ago for alive and does not ping it. Zero pings every contact, as the
    /// original does. Default 0.
    ///
    /// Every first connection from a node that belongs in a full bucket
    /// starts a collection, and each ping is a new connection that can start
    /// one at the pinged node: without this bound a large network spends
    /// most of its traffic on pings (the simulator's 1,000-node build made
    /// 8 million of them).
    pub gc_contact_fresh: Duration,
    /// Bucket diversity: a bucket is split into `2^bits` equal sub-ranges
    /// (by the `bits` bits of the distance below the bucket's own). When
    /// garbage collection makes room in a full bucket (only contacts that
    /// failed their ping leave), pending nodes of the least crowded
    /// sub-ranges are admitted first. A live contact is never evicted for
    /// diversity: NodeIds are free to make, so an attacker could otherwise
    /// pick ids in the sparse sub-ranges and flush a bucket of honest,
    /// answering contacts. Zero admits newest first (the original's order).
    /// Default 4.
    ///
    /// The same bits steer bucket refreshes: a refresh lookup turns to a
    /// random NodeId in the emptiest sub-range once the bucket holds its
    /// share (`k / 2^bits`) of the current target's. For a lookup to halve
    /// the distance at each hop, a bucket's contacts must spread over its
    /// range (BENCHMARKS.md).
    pub bucket_diversity_bits: u8,
    /// How many contacts one network (/24 or /48) may hold per bucket and
    /// per table, and how many candidates it may give one lookup; which
    /// addresses are exempt (loopback by default). See [`IpGroupLimits`].
    pub ip_group_limits: IpGroupLimits,
    /// Inbound connections being confirmed by a dial-back at once (see the
    /// manager's module docs: an inbound peer becomes a contact only once
    /// an outbound connection to its address proved it listens there).
    /// Past it, an inbound peer is not dialled back (counted in
    /// `Stats::dial_backs_skipped`). Default 64.
    pub max_dial_backs: usize,
    /// Seed nodes contacted at once by `sync_node_graph`. Default 3.
    pub sync_concurrency: usize,
    /// How long after a failed background `sync_node_graph` (no seed
    /// answered) it runs again; the delay doubles after each failure up to
    /// `sync_retry_max_delay`. Default 1 s.
    pub sync_retry_initial_delay: Duration,
    /// The longest delay between two attempts of a background sync. Default 60 s.
    pub sync_retry_max_delay: Duration,
    /// How many times a failed background sync is retried before the node
    /// gives up (until the next `sync_node_graph` or restart); zero never
    /// retries. Default 100 (with the default delays, the delays alone add up
    /// to about 95 min).
    pub sync_retry_attempts: u32,
    /// Idle time to live of a connection that is not a node's primary one. Default 60 s.
    pub connection_idle_ttl: Duration,
    /// Extra time to live of a primary connection to a node in bucket 0,
    /// scaled down linearly to nothing for bucket 255. Default 2 h.
    pub connection_primary_ttl_bonus: Duration,
    /// Connections open at once; more are closed with `LimitExceeded`. Default 1024.
    pub max_connections: usize,
    /// Operations in flight (user and internal); more are refused. Default 4096.
    pub max_operations: usize,
    /// Commands waiting to be polled; past this, the oldest node events (not
    /// operation results, transmissions or store batches) are dropped and counted. Default 65536.
    pub max_queued_events: usize,
    /// Observations of this node's address kept (one per observer IP, for
    /// the NAT class; see `keynode_core::nat`); past it, a new observer
    /// replaces the oldest. Default 32.
    pub max_observed_addresses: usize,
    /// Relay reservations a node behind a NAT keeps (see `manager::relays`);
    /// 0: none. Default 2, so that one relay lost leaves the node reachable.
    pub relay_reservations: usize,
    /// How long a relay that refused a reservation is not asked again.
    /// Default 10 minutes.
    pub relay_refusal_memory: Duration,
    /// How often a connection this node dialled through a relay tries to
    /// become direct (a punch signalled through the relay), while the NAT
    /// classes allow one. Zero: never. Default 60 s.
    pub relay_upgrade_interval: Duration,
    /// Signal requests a source may make in a burst (token bucket). Default 20.
    pub signal_rate_capacity: u32,
    /// Tokens a source's signal bucket regains per second. Default 10.
    pub signal_rate_refill_per_sec: u32,
    /// Sources whose signal rate is tracked; the least recently seen is forgotten. Default 1024.
    /// The same bound applies to the per-address buckets below.
    pub max_signal_sources: usize,
    /// Signals concerning one IPv4 address or IPv6 /64 (the requester's, when
    /// relaying; the one to punch towards, when signalled) in a burst, whatever
    /// the NodeIds: keys are free, addresses are not. Default 20.
    pub signal_rate_per_ip_capacity: u32,
    /// Tokens an address's signal bucket regains per second. Default 10.
    pub signal_rate_per_ip_refill_per_sec: u32,
    /// Signals relayed or punched for, all sources together, in a burst. Default 100.
    pub signal_rate_total_capacity: u32,
    /// Tokens the total signal bucket regains per second. Default 50.
    pub signal_rate_total_refill_per_sec: u32,
    /// The largest encoded wire message accepted or sent. Default 64 KiB.
    pub max_message_size: usize,
    /// How long a claim exchange may take, from the requester's
    /// `claim_node` (the target, once it has answered, waits
    /// `claim_reply_timeout`). Default 15 s.
    pub claim_timeout: Duration,
    /// How far a new claim's issue time may be from now. Default 5 min.
    pub claim_max_skew: Duration,
    /// Claim ids remembered to refuse replays. Default 1024.
    pub max_recent_claims: usize,
    /// The most claims one chain-data page carries. Default 256.
    pub max_chain_page: usize,
    /// How long the target of a claim exchange waits for the last message
    /// once it has sent its own two. It holds its chain meanwhile (one
    /// exchange at a time builds on it), and a live requester answers at
    /// once: a requester that died mid-exchange holds the chain this long,
    /// not `claim_timeout`. Default 5 s.
    pub claim_reply_timeout: Duration,
    /// Claim exchanges waiting for the chain, this node's and its peers',
    /// at most; more are refused (a peer's with `Abort(Unavailable)`).
    /// Default 64.
    pub max_chain_waiters: usize,
    /// Of those, one peer's at most, so that one peer cannot keep the others
    /// out. Default 2.
    pub max_chain_waiters_per_peer: usize,
}

/// Where mDNS announces and queries.
///
/// Spec: `mdnsOptions = { groups, port }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdnsConfig {
    /// Multicast groups (the original: 224.0.0.250 and ff02::fa17).
    pub groups: Vec<IpAddr>,
    /// The mDNS port (the original: 64023).
    pub port: u16,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            groups: vec![
                IpAddr::V4(std::net::Ipv4Addr::new(224, 0, 0, 250)),
                IpAddr::V6(std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfa17)),
            ],
            port: 64023,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            k: 20,
            max_pending_per_bucket: 20,
            connection_connect_timeout: Duration::from_secs(15),
            refresh_bucket_delay: Duration::from_secs(3600),
            refresh_bucket_delay_jitter: 0.5,
            retry_connections_delay: Duration::from_secs(45),
            nodes_connection_find_local_timeout: Duration::from_millis(1500),
            mdns: None,
            rpc_timeout: Duration::from_secs(15),
            find_node_timeout: Duration::from_secs(60),
            concurrency_limit: 3,
            find_node_limit: 20,
            max_lookup_candidates: 100,
            gc_concurrency: 3,
            gc_contact_fresh: Duration::ZERO,
            bucket_diversity_bits: 4,
            ip_group_limits: IpGroupLimits::default(),
            max_dial_backs: 64,
            sync_concurrency: 3,
            sync_retry_initial_delay: Duration::from_secs(1),
            sync_retry_max_delay: Duration::from_secs(60),
            sync_retry_attempts: 100,
            connection_idle_ttl: Duration::from_secs(60),
            connection_primary_ttl_bonus: Duration::from_secs(2 * 3600),
            max_connections: 1024,
            max_operations: 4096,
            max_queued_events: 65536,
            max_observed_addresses: 32,
            relay_reservations: 2,
            relay_refusal_memory: Duration::from_secs(600),
            relay_upgrade_interval: Duration::from_secs(60),
            signal_rate_capacity: 20,
            signal_rate_refill_per_sec: 10,
            max_signal_sources: 1024,
            signal_rate_per_ip_capacity: 20,
            signal_rate_per_ip_refill_per_sec: 10,
            signal_rate_total_capacity: 100,
            signal_rate_total_refill_per_sec: 50,
            max_message_size: 64 * 1024,
            claim_timeout: Duration::from_secs(15),
            claim_max_skew: Duration::from_secs(300),
            max_recent_claims: 1024,
            max_chain_page: 256,
            claim_reply_timeout: Duration::from_secs(5),
            max_chain_waiters: 64,
            max_chain_waiters_per_peer: 2,
        }
    }
}

/// A [`Config`] value that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value outside its allowed range.
    #[error("config field `{field}` is {value}, allowed {min}..={max}")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// The jitter factor is not a number in 0..=1.
    #[error("refresh_bucket_delay_jitter is {0}, allowed 0.0..=1.0")]
    Jitter(f64),
}

impl Config {
    /// The largest k accepted: larger buckets make every scan linear in a big k.
    pub const MAX_K: usize = 1024;
    /// The largest pending list accepted per bucket.
    pub const MAX_PENDING_PER_BUCKET: usize = 1024;
    /// The most bucket diversity bits: 64 sub-ranges per bucket.
    pub const MAX_DIVERSITY_BITS: u8 = 6;
    /// The largest delay accepted for any timer (about 31 years): deadlines
    /// must not overflow `Instant`.
    pub const MAX_DELAY: Duration = Duration::from_secs(1 << 30);

    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("k", self.k, 1, Self::MAX_K)?;
        check_range(
            "max_pending_per_bucket",
            self.max_pending_per_bucket,
            0,
            Self::MAX_PENDING_PER_BUCKET,
        )?;
        check_range("concurrency_limit", self.concurrency_limit, 1, 256)?;
        check_range("find_node_limit", self.find_node_limit, 1, 100_000)?;
        check_range(
            "max_lookup_candidates",
            self.max_lookup_candidates,
            self.k,
            100_000,
        )?;
        check_range("gc_concurrency", self.gc_concurrency, 1, 256)?;
        check_range("sync_concurrency", self.sync_concurrency, 1, 256)?;
        check_range(
            "sync_retry_attempts",
            self.sync_retry_attempts as usize,
            0,
            1 << 20,
        )?;
        check_range(
            "bucket_diversity_bits",
            usize::from(self.bucket_diversity_bits),
            0,
            usize::from(Self::MAX_DIVERSITY_BITS),
        )?;
        check_range(
            "ip_group_limits.per_bucket",
            self.ip_group_limits.per_bucket,
            1,
            Self::MAX_K,
        )?;
        check_range(
            "ip_group_limits.per_table",
            self.ip_group_limits.per_table,
            1,
            1 << 20,
        )?;
        check_range("max_dial_backs", self.max_dial_backs, 1, 1 << 16)?;
        check_range("max_connections", self.max_connections, 1, 1 << 20)?;
        check_range("max_operations", self.max_operations, 1, 1 << 20)?;
        check_range("max_queued_events", self.max_queued_events, 16, 1 << 24)?;
        check_range(
            "max_observed_addresses",
            self.max_observed_addresses,
            3,
            1 << 12,
        )?;
        check_range("max_signal_sources", self.max_signal_sources, 1, 1 << 20)?;
        check_range("max_message_size", self.max_message_size, 1024, 16 << 20)?;
        check_range("max_recent_claims", self.max_recent_claims, 1, 1 << 20)?;
        check_range("max_chain_page", self.max_chain_page, 1, 1024)?;
        for (field, capacity) in [
            ("signal_rate_capacity", self.signal_rate_capacity),
            (
                "signal_rate_per_ip_capacity",
                self.signal_rate_per_ip_capacity,
            ),
            (
                "signal_rate_total_capacity",
                self.signal_rate_total_capacity,
            ),
        ] {
            check_range(field, capacity as usize, 1, 1 << 20)?;
        }
        check_range("max_chain_waiters", self.max_chain_waiters, 1, 1 << 16)?;
        check_range(
            "max_chain_waiters_per_peer",
            self.max_chain_waiters_per_peer,
            1,
            1 << 16,
        )?;
        for (field, delay) in [
            (
                "connection_connect_timeout",
                self.connection_connect_timeout,
            ),
            ("refresh_bucket_delay", self.refresh_bucket_delay),
            ("retry_connections_delay", self.retry_connections_delay),
            (
                "nodes_connection_find_local_timeout",
                self.nodes_connection_find_local_timeout,
            ),
            ("rpc_timeout", self.rpc_timeout),
            ("claim_timeout", self.claim_timeout),
            ("claim_reply_timeout", self.claim_reply_timeout),
            ("claim_max_skew", self.claim_max_skew),
            ("find_node_timeout", self.find_node_timeout),
            ("connection_idle_ttl", self.connection_idle_ttl),
            (
                "connection_primary_ttl_bonus",
                self.connection_primary_ttl_bonus,
            ),
            ("gc_contact_fresh", self.gc_contact_fresh),
            ("sync_retry_initial_delay", self.sync_retry_initial_delay),
            ("sync_retry_max_delay", self.sync_retry_max_delay),
        ] {
            if delay > Self::MAX_DELAY {
                return Err(ConfigError::OutOfRange {
                    field,
                    value: delay.as_secs(),
                    min: 0,
                    max: Self::MAX_DELAY.as_secs(),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.refresh_bucket_delay_jitter) {
            return Err(ConfigError::Jitter(self.refresh_bucket_delay_jitter));
        }
        Ok(())
    }
}

fn check_range(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value: value as u64,
            min: min as u64,
            max: max as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals_and_valid() {
        let config = Config::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.connection_connect_timeout, Duration::from_secs(15));
        assert_eq!(config.refresh_bucket_delay, Duration::from_secs(3600));
        assert_eq!(config.refresh_bucket_delay_jitter, 0.5);
        assert_eq!(config.retry_connections_delay, Duration::from_secs(45));
        assert_eq!(
            config.nodes_connection_find_local_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(
            (config.k, config.concurrency_limit, config.find_node_limit),
            (20, 3, 20)
        );
        assert_eq!(MdnsConfig::default().port, 64023);
    }

    #[test]
    fn invalid_values_are_named() {
        let config = Config {
            k: 0,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutOfRange { field: "k", .. })
        ));
        let config = Config {
            refresh_bucket_delay_jitter: f64::NAN,
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(ConfigError::Jitter(_))));
        let config = Config {
            rpc_timeout: Duration::MAX,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutOfRange {
                field: "rpc_timeout",
                ..
            })
        ));
    }
}
