//! NAT traversal on the datagram level (real QUIC): the `simulate
//! --nat-matrix` and `--nat-mix` reports, and the functions the tests
//! share with them.
//!
//! - [`reach`]: one finder behind one NAT model finds one target behind
//!   another, both joined through one public seed (the target first); how
//!   it connected, and how long it took. [`nat_matrix`] runs it for every
//!   ordered pair of [`NatType`]s; `tests/tests/datagram.rs` checks each
//!   against [`NatType::reach`].
//! - [`run_mix`]: a population of N nodes behind a mix of NAT models
//!   ([`NatMix`]); the public nodes join first and serve as seeds, the
//!   others join through them, then random finders look up random targets.
//!   It reports the lookups' success, how the connections were made, and
//!   what the relays did.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use keynode_core::metrics::{ConnKind, Direction};
use keynode_core::net::RelayStats;
use keynode_core::{Config, ContactMode, FindOptions, NodeId, OpId, OpValue};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::datagram::{DatagramLevel, DatagramSim};
use crate::net::{HostId, Latency, NatType, NetConfig, Network};
use crate::sim::Sim;

/// Virtual time any one join or lookup may take.
pub const OP_LIMIT: Duration = Duration::from_secs(600);

/// The defaults without background work (no bucket refresh, no connection
/// check): [`reach`] decides everything that happens.
pub fn quiet_config() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config.retry_connections_delay = Duration::ZERO;
    config
}

/// A datagram-level network of log-normal latencies (median 40 ms) losing
/// `loss` of the datagrams.
pub fn datagram_network(seed: u64, loss: f64) -> DatagramSim {
    let config = NetConfig {
        latency: Latency::default(),
        loss,
        ..NetConfig::default()
    };
    Sim::new(DatagramLevel::new(seed), Network::new(config, seed), seed)
}

/// Adds one node per NAT type, with `config` and keys drawn from `seed`.
pub fn add_nodes(
    sim: &mut DatagramSim,
    seed: u64,
    config: &Config,
    nats: &[NatType],
) -> Vec<HostId> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973);
    nats.iter()
        .map(|nat| {
            let secret: [u8; 32] = rng.random();
            sim.add_node(config.clone(), secret, *nat)
        })
        .collect()
}

/// Whether `host`'s node has a connection up to `peer`.
pub fn connected(sim: &DatagramSim, host: HostId, peer: HostId) -> bool {
    let peer = sim.level.node_id(peer);
    sim.level
        .manager(host)
        .is_some_and(|m| m.connections().iter().any(|(_, p, _)| *p == peer))
}

/// The name of a NAT model in the reports and in `--nat-mix`.
pub fn nat_name(nat: NatType) -> &'static str {
    match nat {
        NatType::None => "none",
        NatType::FullCone => "full_cone",
        NatType::RestrictedCone => "restricted",
        NatType::PortRestricted => "port_restricted",
        NatType::Symmetric => "symmetric",
    }
}

/// The name of a contact mode in the reports.
pub fn mode_name(mode: ContactMode) -> &'static str {
    match mode {
        ContactMode::Direct => "direct",
        ContactMode::Signal => "signal",
        ContactMode::Relay => "relay",
    }
}

/// How one finder reached one target ([`reach`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PairOutcome {
    /// The finder's NAT.
    pub finder: NatType,
    /// The target's NAT.
    pub target: NatType,
    /// How the lookup of the target reached it; `None` if it did not.
    pub mode: Option<ContactMode>,
    /// Virtual time from the start of the finder's join (whose lookup of
    /// its own NodeId is what first reaches the target) to the finder's
    /// connection to the target being up; `None` if it never was.
    pub connect_time: Option<Duration>,
    /// The lookup reported the target at its public (NAT) address, where
    /// the relay sees it if relayed.
    pub at_target: bool,
    /// Each side has a connection up to the other once the lookup ended.
    pub connected_both_ways: bool,
}

/// A finder behind `finder` looks up a target behind `target`: a public
/// seed, the target and the finder join in that order (the finder and the
/// target through the seed), then the finder looks the target up. Joins
/// that fail, or a lookup that does not end within [`OP_LIMIT`], panic:
/// they are bugs, not outcomes.
pub fn reach(finder: NatType, target: NatType, seed: u64) -> PairOutcome {
    let mut sim = datagram_network(seed, 0.0);
    let hosts = add_nodes(
        &mut sim,
        seed,
        &quiet_config(),
        &[NatType::None, target, finder],
    );
    let (public, target_host, finder_host) = (hosts[0], hosts[1], hosts[2]);
    let op = sim.join(target_host, &[public]);
    let joined = sim.run_until_done(target_host, op, OP_LIMIT);
    assert_eq!(joined, Some(Ok(OpValue::Unit)), "the target's join");

    let start = sim.elapsed();
    let op = sim.join(finder_host, &[public]);
    let end = start + OP_LIMIT;
    sim.run_until(end, |s| {
        connected(s, finder_host, target_host) || s.level.outputs.result(finder_host, op).is_some()
    });
    let mut connect_time = connected(&sim, finder_host, target_host).then(|| sim.elapsed() - start);
    let joined = sim.run_until_done(finder_host, op, OP_LIMIT);
    assert_eq!(joined, Some(Ok(OpValue::Unit)), "the finder's join");

    let id = sim.level.node_id(target_host);
    let op = sim.find(finder_host, id, FindOptions::default());
    if connect_time.is_none() {
        sim.run_until(sim.elapsed() + OP_LIMIT, |s| {
            connected(s, finder_host, target_host)
                || s.level.outputs.result(finder_host, op).is_some()
        });
        connect_time = connected(&sim, finder_host, target_host).then(|| sim.elapsed() - start);
    }
    let result = sim
        .run_until_done(finder_host, op, OP_LIMIT)
        .unwrap_or_else(|| panic!("the lookup {finder:?} -> {target:?} did not end"));
    let (mode, at_target) = match result {
        Ok(OpValue::Found(Some((at, data)))) => (
            Some(data.mode),
            at.socket_addr().and_then(|a| sim.net.host_of(a)) == Some(target_host),
        ),
        Ok(OpValue::Found(None)) => (None, false),
        other => panic!("the lookup {finder:?} -> {target:?}: {other:?}"),
    };
    PairOutcome {
        finder,
        target,
        mode,
        connect_time,
        at_target,
        connected_both_ways: connected(&sim, finder_host, target_host)
            && connected(&sim, target_host, finder_host),
    }
}

/// [`reach`] for every ordered pair of NAT models, finder-major.
pub fn nat_matrix(seed: u64) -> Vec<PairOutcome> {
    NatType::ALL
        .iter()
        .flat_map(|finder| NatType::ALL.iter().map(move |target| (*finder, *target)))
        .map(|(finder, target)| reach(finder, target, seed))
        .collect()
}

/// The matrix as one JSON object: `{"seed":S,"pairs":[{"finder":..,
/// "target":..,"connected":bool,"mode":"signal"|null,"connect_ms":x|null,
/// "expected_mode":..},..]}`.
pub fn matrix_json(seed: u64, pairs: &[PairOutcome]) -> String {
    let mut out = format!("{{\"seed\":{seed},\"pairs\":[");
    for (i, p) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"finder\":\"{}\",\"target\":\"{}\",\"connected\":{},\"mode\":{},\"connect_ms\":{},\"expected_mode\":{}}}",
            nat_name(p.finder),
            nat_name(p.target),
            p.mode.is_some() && p.connected_both_ways,
            json_mode(p.mode),
            p.connect_time.map_or("null".to_owned(), |d| format!(
                "{:.1}",
                d.as_secs_f64() * 1e3
            )),
            json_mode(NatType::reach(p.finder, p.target)),
        );
    }
    out.push_str("]}");
    out
}

fn json_mode(mode: Option<ContactMode>) -> String {
    mode.map_or("null".to_owned(), |m| format!("\"{}\"", mode_name(m)))
}

/// The matrix as a table: finders down, targets across; each cell the
/// mode and the virtual milliseconds to connect.
pub fn matrix_text(pairs: &[PairOutcome]) -> String {
    let mut out = String::from("finder \\ target   ");
    for t in NatType::ALL {
        let _ = write!(out, "{:<17}", nat_name(t));
    }
    out.push('\n');
    for f in NatType::ALL {
        let _ = write!(out, "{:<18}", nat_name(f));
        for t in NatType::ALL {
            let cell = pairs
                .iter()
                .find(|p| p.finder == f && p.target == t)
                .map_or("-".to_owned(), |p| match (p.mode, p.connect_time) {
                    (Some(m), Some(d)) => {
                        format!("{} {:.0} ms", mode_name(m), d.as_secs_f64() * 1e3)
                    }
                    (Some(m), None) => mode_name(m).to_owned(),
                    (None, _) => "FAILED".to_owned(),
                });
            let _ = write!(out, "{cell:<17}");
        }
        out.push('\n');
    }
    out.push_str("(mode of the lookup; virtual ms from the finder's join to the connection)\n");
    out
}

/// The shares of NAT models in a population, parsed from
/// `key=fraction,...`. Keys: the model names of [`nat_name`], `public` for
/// `none`, and `cone`, which means `port_restricted`: the NAT of a Linux
/// router (netfilter's masquerade keeps one mapping per socket, so it is a
/// cone, and lets in only the exact addresses a host sent to), most home
/// routers' too. The fractions must add up to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct NatMix {
    shares: Vec<(NatType, f64)>,
}

/// A `--nat-mix` that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NatMixError {
    /// A part is not `key=fraction`.
    #[error("`{0}` is not key=fraction")]
    Malformed(String),
    /// An unknown key.
    #[error(
        "unknown NAT model `{0}` (cone, public, none, full_cone, restricted, port_restricted, symmetric)"
    )]
    UnknownModel(String),
    /// A fraction that is not a number in [0, 1].
    #[error("`{0}` is not a fraction between 0 and 1")]
    BadFraction(String),
    /// The fractions do not add up to 1.
    #[error("the fractions add up to {0}, not 1")]
    NotWhole(f64),
}

impl std::str::FromStr for NatMix {
    type Err = NatMixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut shares: Vec<(NatType, f64)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| NatMixError::Malformed(part.to_owned()))?;
            let nat = match key.trim() {
                "cone" | "port_restricted" => NatType::PortRestricted,
                "public" | "none" => NatType::None,
                "full_cone" => NatType::FullCone,
                "restricted" => NatType::RestrictedCone,
                "symmetric" => NatType::Symmetric,
                other => return Err(NatMixError::UnknownModel(other.to_owned())),
            };
            let fraction: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|f: &f64| (0.0..=1.0).contains(f))
                .ok_or_else(|| NatMixError::BadFraction(value.to_owned()))?;
            match shares.iter_mut().find(|(n, _)| *n == nat) {
                Some((_, f)) => *f += fraction,
                None => shares.push((nat, fraction)),
            }
        }
        let total: f64 = shares.iter().map(|(_, f)| f).sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(NatMixError::NotWhole(total));
        }
        shares.sort_by_key(|(n, _)| *n);
        Ok(Self { shares })
    }
}

impl NatMix {
    /// The NAT model of each of `n` nodes: the shares' counts rounded by
    /// largest remainder, public nodes first (they are the seeds), the
    /// others in an order drawn from `rng`. At least one node is public.
    pub fn population(&self, n: usize, rng: &mut ChaCha8Rng) -> Vec<NatType> {
        let mut counts: Vec<(NatType, usize, f64)> = self
            .shares
            .iter()
            .map(|(nat, f)| {
                let exact = f * n as f64;
                (*nat, exact.floor() as usize, exact - exact.floor())
            })
            .collect();
        let mut left = n - counts.iter().map(|c| c.1).sum::<usize>();
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|a, b| counts[*b].2.total_cmp(&counts[*a].2));
        for i in order {
            if left == 0 {
                break;
            }
            counts[i].1 += 1;
            left -= 1;
        }
        let public = counts
            .iter()
            .find(|c| c.0 == NatType::None)
            .map_or(0, |c| c.1)
            .max(1);
        let mut behind: Vec<NatType> = counts
            .iter()
            .filter(|c| c.0 != NatType::None)
            .flat_map(|c| std::iter::repeat_n(c.0, c.1))
            .collect();
        behind.truncate(n.saturating_sub(public));
        behind.shuffle(rng);
        let mut all = vec![NatType::None; public];
        all.extend(behind);
        all
    }

    /// The spec back, normalised (`none=0.3,port_restricted=0.4,...`).
    pub fn spec(&self) -> String {
        self.shares
            .iter()
            .map(|(nat, f)| format!("{}={f}", nat_name(*nat)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// What a `--nat-mix` run does.
#[derive(Clone, Debug, PartialEq)]
pub struct MixOptions {
    /// The population's NAT models.
    pub mix: NatMix,
    /// Nodes in the network.
    pub nodes: usize,
    /// Lookups of random nodes by random nodes.
    pub lookups: usize,
    /// The seed of everything.
    pub seed: u64,
    /// Print where the run is on standard error.
    pub progress: bool,
}

/// Public seeds each node joins through.
pub const MIX_SEEDS_PER_JOIN: usize = 2;
/// Virtual time between the starts of two joins of nodes behind NATs.
pub const MIX_JOIN_INTERVAL: Duration = Duration::from_millis(20);
/// Quiet virtual time between the joins and the lookups: reservations
/// and connection checks settle.
pub const MIX_SETTLE_TIME: Duration = Duration::from_secs(60);
/// Lookups in flight at once.
pub const MIX_CONCURRENT_LOOKUPS: usize = 16;

/// Connections by the way they were made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByMode {
    /// Dialled at a public address.
    pub direct: u64,
    /// Hole-punched after a signal.
    pub signal: u64,
    /// Through a relay.
    pub relay: u64,
}

impl ByMode {
    fn add(&mut self, mode: ContactMode, n: u64) {
        match mode {
            ContactMode::Direct => self.direct += n,
            ContactMode::Signal => self.signal += n,
            ContactMode::Relay => self.relay += n,
        }
    }

    /// The sum.
    pub fn total(&self) -> u64 {
        self.direct + self.signal + self.relay
    }

    /// The share relayed (0 if there is none at all).
    pub fn relayed_fraction(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.relay as f64 / self.total() as f64
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"direct\":{},\"signal\":{},\"relay\":{}}}",
            self.direct, self.signal, self.relay
        )
    }
}

/// What a `--nat-mix` run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct MixReport {
    /// The mix, normalised.
    pub mix: String,
    /// Nodes in the network.
    pub nodes: usize,
    /// Nodes of each NAT model.
    pub population: BTreeMap<NatType, usize>,
    /// Joins that failed.
    pub joins_failed: usize,
    /// Lookups run (every node stays up: every target is live).
    pub lookups: usize,
    /// The fraction of lookups that connected to their target.
    pub success_rate: f64,
    /// Failed lookups by (finder's NAT, target's NAT).
    pub failures: BTreeMap<(NatType, NatType), usize>,
    /// Successful lookups by the mode of the connection they reported.
    pub lookups_by_mode: ByMode,
    /// Connections up at the end, each counted once (at its dialler).
    pub connections_up: ByMode,
    /// Connections that came up during the whole run, each counted once.
    pub connections_opened: ByMode,
    /// The relays' counters summed over every node.
    pub relay: RelayStats,
    /// Nodes that relayed at least one frame.
    pub relays_used: usize,
    /// Virtual time at the end.
    pub virtual_s: f64,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
    /// The hash of the whole event trace.
    pub trace_hash: u64,
}

/// The configuration of every node of a mix: the defaults (the connection
/// check keeps a NAT'd node's connections to its closest nodes, its
/// signallers; relay reservations on), without the hourly bucket refresh,
/// which a run of minutes never reaches anyway.
pub fn mix_config() -> Config {
    let mut config = Config::default();
    config.refresh_bucket_delay = Duration::ZERO;
    config
}

/// Runs a population of nodes behind the mix's NATs on the datagram level:
/// 1. the first [`MIX_SEEDS_PER_JOIN`] + 1 public nodes join one after
///    another, through those before them;
/// 2. every other node starts joining [`MIX_JOIN_INTERVAL`] after the one
///    before it, the public nodes first, each through
///    [`MIX_SEEDS_PER_JOIN`] random public nodes that started before it,
///    and all joins end;
/// 3. [`MIX_SETTLE_TIME`] passes;
/// 4. `lookups` lookups, [`MIX_CONCURRENT_LOOKUPS`] at a time: a random
///    finder looks up a random other node (`find_node`, default options).
pub fn run_mix(options: &MixOptions) -> MixReport {
    #[allow(clippy::disallowed_methods)]
    let wall = Instant::now();
    let n = options.nodes.max(2);
    let seed = options.seed;
    let note = |sim: &DatagramSim, what: &str| {
        if options.progress {
            eprintln!(
                "simulate: {what}: virtual {:.0} s, {} events, wall {:.1} s",
                sim.elapsed().as_secs_f64(),
                sim.steps(),
                wall.elapsed().as_secs_f64()
            );
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e61_746d_6978);
    let nats = options.mix.population(n, &mut rng);
    let mut sim = datagram_network(seed, 0.0);
    let hosts = add_nodes(&mut sim, seed, &mix_config(), &nats);
    let public: Vec<HostId> = hosts
        .iter()
        .copied()
        .filter(|h| nats[h.index()] == NatType::None)
        .collect();
    let mut population = BTreeMap::new();
    for nat in &nats {
        *population.entry(*nat).or_insert(0) += 1;
    }

    // The first few public nodes join one by one, so that the next ones
    // find a network; everyone else starts joining every interval, public
    // nodes first, each through public nodes that started before it.
    let mut joins_failed = 0;
    let first = public.len().min(MIX_SEEDS_PER_JOIN + 1);
    for (i, host) in public.iter().enumerate().take(first).skip(1) {
        let op = sim.join(*host, &public[..i]);
        if !matches!(sim.run_until_done(*host, op, OP_LIMIT), Some(Ok(_))) {
            joins_failed += 1;
        }
    }
    let mut joins: Vec<(HostId, OpId)> = Vec::new();
    for (i, host) in hosts.iter().enumerate().skip(first) {
        let before = &public[..i.min(public.len())];
        let seeds: Vec<HostId> = before
            .choose_multiple(&mut rng, MIX_SEEDS_PER_JOIN)
            .copied()
            .collect();
        joins.push((*host, sim.join(*host, &seeds)));
        sim.advance(MIX_JOIN_INTERVAL);
        if i + 1 == public.len() {
            note(&sim, "public nodes joining");
        }
    }
    let end = sim.elapsed() + OP_LIMIT;
    sim.run_until(end, |s| {
        joins
            .iter()
            .all(|(h, op)| s.level.outputs.result(*h, *op).is_some())
    });
    for (host, op) in joins {
        if !matches!(sim.level.outputs.take_result(host, op), Some(Ok(_))) {
            joins_failed += 1;
        }
    }
    note(&sim, "every node joined");
    sim.advance(MIX_SETTLE_TIME);
    note(&sim, "settled");

    let mut lookups_by_mode = ByMode::default();
    let mut failures: BTreeMap<(NatType, NatType), usize> = BTreeMap::new();
    let mut outstanding: Vec<(HostId, OpId, HostId)> = Vec::new();
    let (mut started, mut ended) = (0, 0);
    while ended < options.lookups {
        while outstanding.len() < MIX_CONCURRENT_LOOKUPS && started < options.lookups {
            let finder = hosts[rng.random_range(0..n)];
            let target = loop {
                let t = hosts[rng.random_range(0..n)];
                if t != finder {
                    break t;
                }
            };
            let id: NodeId = sim.level.node_id(target);
            let op = sim.find(finder, id, FindOptions::default());
            outstanding.push((finder, op, target));
            started += 1;
        }
        let end = sim.elapsed() + OP_LIMIT;
        let any = sim.run_until(end, |s| {
            outstanding
                .iter()
                .any(|(h, op, _)| s.level.outputs.result(*h, *op).is_some())
        });
        assert!(any, "a lookup did not end within {OP_LIMIT:?}");
        outstanding.retain(|(finder, op, target)| {
            let Some(result) = sim.level.outputs.take_result(*finder, *op) else {
                return true;
            };
            ended += 1;
            match result {
                Ok(OpValue::Found(Some((_, data)))) => lookups_by_mode.add(data.mode, 1),
                other => {
                    if options.progress {
                        eprintln!(
                            "simulate: lookup failed ({other:?}): {}",
                            describe_failure(&sim, &nats, *finder, *target)
                        );
                    }
                    *failures
                        .entry((nats[finder.index()], nats[target.index()]))
                        .or_insert(0) += 1;
                }
            }
            false
        });
    }
    note(&sim, "lookups done");

    let mut connections_up = ByMode::default();
    let mut connections_opened = ByMode::default();
    let mut relay = RelayStats::default();
    let mut relays_used = 0;
    for host in &hosts {
        let Some(node) = sim.level.node(*host) else {
            continue;
        };
        let metrics = node.manager_ref().metrics();
        for mode in [ContactMode::Direct, ContactMode::Signal, ContactMode::Relay] {
            let kind = ConnKind {
                mode,
                direction: Direction::Outbound,
            };
            let opened = metrics.connections_opened.get(kind);
            let closed = metrics.connections_closed.get(kind);
            connections_opened.add(mode, opened);
            connections_up.add(mode, opened.saturating_sub(closed));
        }
        let s = node.relay_stats();
        relays_used += usize::from(s.frames_forwarded > 0);
        add_relay_stats(&mut relay, &s);
    }
    let failed: usize = failures.values().sum();
    MixReport {
        mix: options.mix.spec(),
        nodes: n,
        population,
        joins_failed,
        lookups: ended,
        success_rate: if ended == 0 {
            1.0
        } else {
            (ended - failed) as f64 / ended as f64
        },
        failures,
        lookups_by_mode,
        connections_up,
        connections_opened,
        relay,
        relays_used,
        virtual_s: sim.elapsed().as_secs_f64(),
        #[allow(clippy::disallowed_methods)]
        wall_s: wall.elapsed().as_secs_f64(),
        trace_hash: sim.trace_hash(),
    }
}

/// Who a failed lookup's finder and target are, and how the target can be
/// reached: its connections and its relays, with their NAT models and
/// classes (for `--progress`).
fn describe_failure(sim: &DatagramSim, nats: &[NatType], finder: HostId, target: HostId) -> String {
    let who = |h: HostId| {
        let class = sim
            .level
            .manager(h)
            .map_or("gone", |m| m.nat_class().as_str());
        format!("{h:?} {} ({class})", nat_name(nats[h.index()]))
    };
    let Some(manager) = sim.level.manager(target) else {
        return format!("{} -> {} gone", who(finder), who(target));
    };
    let peers: Vec<String> = manager
        .connections()
        .iter()
        .filter_map(|(_, peer, _)| sim.level.host_of(peer))
        .map(who)
        .collect();
    let relays: Vec<String> = manager
        .relay_reservations()
        .iter()
        .filter_map(|relay| sim.level.host_of(relay))
        .map(who)
        .collect();
    let finder_to_relays: Vec<bool> = manager
        .relay_reservations()
        .iter()
        .filter_map(|relay| sim.level.host_of(relay))
        .map(|r| connected(sim, finder, r))
        .collect();
    format!(
        "{} -> {}; the target is connected to [{}]; its relays [{}], the finder connected to them: {finder_to_relays:?}",
        who(finder),
        who(target),
        peers.join(", "),
        relays.join(", ")
    )
}

fn add_relay_stats(sum: &mut RelayStats, s: &RelayStats) {
    sum.frames_forwarded += s.frames_forwarded;
    sum.bytes_forwarded += s.bytes_forwarded;
    sum.dropped_no_pair += s.dropped_no_pair;
    sum.dropped_over_rate += s.dropped_over_rate;
    sum.dropped_too_large += s.dropped_too_large;
    sum.dropped_unexpected += s.dropped_unexpected;
    sum.pairs_opened += s.pairs_opened;
    sum.refused_not_relaying += s.refused_not_relaying;
    sum.refused_full += s.refused_full;
    sum.refused_per_peer += s.refused_per_peer;
    sum.reservations_granted += s.reservations_granted;
    sum.pairs += s.pairs;
    sum.reservations += s.reservations;
    sum.paths += s.paths;
}

impl MixReport {
    fn relay_json(&self) -> String {
        let r = &self.relay;
        format!(
            "{{\"frames_forwarded\":{},\"bytes_forwarded\":{},\"pairs_opened\":{},\"pairs_open\":{},\"refused_not_relaying\":{},\"refused_full\":{},\"refused_per_peer\":{},\"dropped_no_pair\":{},\"dropped_over_rate\":{},\"dropped_too_large\":{},\"dropped_unexpected\":{},\"reservations_granted\":{},\"reservations_held\":{},\"relays_used\":{}}}",
            r.frames_forwarded,
            r.bytes_forwarded,
            r.pairs_opened,
            r.pairs,
            r.refused_not_relaying,
            r.refused_full,
            r.refused_per_peer,
            r.dropped_no_pair,
            r.dropped_over_rate,
            r.dropped_too_large,
            r.dropped_unexpected,
            r.reservations_granted,
            r.reservations,
            self.relays_used,
        )
    }

    /// The report as one JSON object.
    pub fn json(&self) -> String {
        let population = self
            .population
            .iter()
            .map(|(nat, c)| format!("\"{}\":{c}", nat_name(*nat)))
            .collect::<Vec<_>>()
            .join(",");
        let failures = self
            .failures
            .iter()
            .map(|((f, t), c)| format!("\"{}->{}\":{c}", nat_name(*f), nat_name(*t)))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"mix\":\"{}\",\"nodes\":{},\"population\":{{{population}}},\"joins_failed\":{},\"lookups\":{},\"success_rate\":{},\"failures\":{{{failures}}},\"lookups_by_mode\":{},\"lookups_relayed_fraction\":{},\"connections_up\":{},\"connections_relayed_fraction\":{},\"connections_opened\":{},\"relay\":{},\"virtual_s\":{:.1},\"wall_s\":{:.2},\"trace_hash\":\"{:016x}\"}}",
            self.mix,
            self.nodes,
            self.joins_failed,
            self.lookups,
            self.success_rate,
            self.lookups_by_mode.json(),
            self.lookups_by_mode.relayed_fraction(),
            self.connections_up.json(),
            self.connections_up.relayed_fraction(),
            self.connections_opened.json(),
            self.relay_json(),
            self.virtual_s,
            self.wall_s,
            self.trace_hash,
        )
    }

    /// The report as text, one figure a line.
    pub fn text(&self) -> String {
        let population = self
            .population
            .iter()
            .map(|(nat, c)| format!("{} {c}", nat_name(*nat)))
            .collect::<Vec<_>>()
            .join(", ");
        let failures = if self.failures.is_empty() {
            "none".to_owned()
        } else {
            self.failures
                .iter()
                .map(|((f, t), c)| format!("{} -> {} {c}", nat_name(*f), nat_name(*t)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let modes = |m: &ByMode| {
            format!(
                "direct {}, signal {}, relay {} (relayed {:.3})",
                m.direct,
                m.signal,
                m.relay,
                m.relayed_fraction()
            )
        };
        let r = &self.relay;
        format!(
            "mode              NAT mix on the datagram level (QUIC)\n\
             mix               {}\n\
             nodes             {} ({population})\n\
             joins failed      {}\n\
             lookups           {}\n\
             success rate      {:.4}\n\
             failed lookups    {failures}\n\
             lookups by mode   {}\n\
             connections up    {}\n\
             connections made  {}\n\
             relay             {} frames, {} bytes forwarded by {} nodes; {} pairs opened\n\
             relay refusals    not relaying {}, full {}, per peer {}; dropped: no pair {}, over rate {}\n\
             reservations      {} granted, {} held\n\
             virtual time      {:.1} s\n\
             wall time         {:.2} s\n\
             trace hash        {:016x}\n",
            self.mix,
            self.nodes,
            self.joins_failed,
            self.lookups,
            self.success_rate,
            modes(&self.lookups_by_mode),
            modes(&self.connections_up),
            modes(&self.connections_opened),
            r.frames_forwarded,
            r.bytes_forwarded,
            self.relays_used,
            r.pairs_opened,
            r.refused_not_relaying,
            r.refused_full,
            r.refused_per_peer,
            r.dropped_no_pair,
            r.dropped_over_rate,
            r.reservations_granted,
            r.reservations,
            self.virtual_s,
            self.wall_s,
            self.trace_hash,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_rounds_to_the_population() {
        let mix: NatMix = "cone=0.4,symmetric=0.3,public=0.3".parse().expect("a mix");
        assert_eq!(mix.spec(), "none=0.3,port_restricted=0.4,symmetric=0.3");
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let nats = mix.population(11, &mut rng);
        assert_eq!(nats.len(), 11);
        let count = |k| nats.iter().filter(|n| **n == k).count();
        assert_eq!(count(NatType::PortRestricted), 5);
        assert_eq!(count(NatType::None) + count(NatType::Symmetric), 6);
        assert!(
            nats[..count(NatType::None)]
                .iter()
                .all(|n| *n == NatType::None)
        );
    }

    #[test]
    fn a_bad_mix_says_why() {
        assert_eq!(
            "cone=0.5".parse::<NatMix>(),
            Err(NatMixError::NotWhole(0.5))
        );
        assert!(matches!(
            "carrier=1".parse::<NatMix>(),
            Err(NatMixError::UnknownModel(_))
        ));
        assert!(matches!(
            "cone".parse::<NatMix>(),
            Err(NatMixError::Malformed(_))
        ));
        assert!(matches!(
            "cone=x".parse::<NatMix>(),
            Err(NatMixError::BadFraction(_))
        ));
    }
}
