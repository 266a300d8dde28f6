//! The simulation engine: a virtual clock, one queue of scheduled
//! messages, a queue of host wake-ups, and the hash of everything that
//! happened. It knows nothing of what the hosts are: a [`Level`] does.
//!
//! Two levels implement it, sharing the clock, the queue, the [`Network`]
//! and the trace:
//! - the manager level ([`crate::ManagerLevel`]) runs `NodeManager`s and
//!   plays their driver: connections, requests and responses are modelled
//!   message by message (a dial is a packet through the NATs, requests
//!   travel with the link's latency plus resends of lost packets). Fast
//!   enough for the 100,000-node `simulate` runs;
//! - the datagram level ([`crate::DatagramLevel`]) runs full nodes
//!   (`keynode_core::net::Node`: the manager on QUIC) exchanging real QUIC
//!   datagrams. `Msg` is a UDP datagram `{ from, source, destination,
//!   bytes }` (plus the host's own events); every datagram goes through
//!   [`Network::outbound`] at the sender and [`Network::accepts`] at the
//!   receiver, so the NAT models apply to QUIC's packets and to hole-punch
//!   packets alike, and loss drops datagrams (QUIC's own recovery resends
//!   them); `wake` is the node's `handle_timeout` (quinn-proto's timers
//!   among them), `next_wake` its `poll_timeout`. Every handshake is real
//!   TLS, so it suits tens of nodes rather than thousands.
//!
//! Both offer the same helpers on `Sim<Level>`: `add_node`, `join`, `find`,
//! `run_until_done`, `kill`, `set_online`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use keynode_core::Now;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::net::{HostId, Network};
use crate::trace::Trace;

/// The wall-clock time at the start of every simulation (ms since the epoch).
pub const START_UNIX_MS: u64 = 1_700_000_000_000;

/// What a kind of simulated host does with the engine's events.
pub trait Level {
    /// What travels between hosts (and from a host to itself: timeouts).
    type Msg;

    /// A message reaches `to`, which is online and on the sender's side of
    /// any partition (checked at delivery time).
    fn deliver(&mut self, ctx: &mut Ctx<'_, Self::Msg>, to: HostId, msg: Self::Msg);

    /// A message could not be delivered at its time (the host went offline,
    /// a partition started); the level decides what the sender sees.
    fn undeliverable(&mut self, ctx: &mut Ctx<'_, Self::Msg>, to: HostId, msg: Self::Msg);

    /// The host's deadline passed.
    fn wake(&mut self, ctx: &mut Ctx<'_, Self::Msg>, host: HostId);

    /// The host's next deadline.
    fn next_wake(&self, host: HostId) -> Option<Instant>;

    /// A digest of a message for the trace hash (cheap, deterministic).
    fn digest(msg: &Self::Msg) -> u64;

    /// Whether a message needs the network at delivery time (`false`: a
    /// host's message to itself, like its driver's timeouts).
    fn via_network(msg: &Self::Msg) -> Option<HostId>;
}

struct Scheduled<M> {
    at: Duration,
    seq: u64,
    to: HostId,
    msg: M,
}

impl<M> PartialEq for Scheduled<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<M> Eq for Scheduled<M> {}
impl<M> PartialOrd for Scheduled<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for Scheduled<M> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// What a level may touch while it handles an event.
pub struct Ctx<'a, M> {
    /// The current time.
    pub now: Now,
    /// The time since the start.
    pub elapsed: Duration,
    /// The network model.
    pub net: &'a mut Network,
    /// The simulation's random generator (loss draws and the like).
    pub rng: &'a mut ChaCha8Rng,
    /// The trace, for levels that hash extra facts.
    pub trace: &'a mut Trace,
    queue: &'a mut BinaryHeap<Reverse<Scheduled<M>>>,
    seq: &'a mut u64,
    touched: &'a mut Vec<HostId>,
}

impl<M> Ctx<'_, M> {
    /// Delivers `msg` to `to` after `delay`.
    pub fn schedule(&mut self, delay: Duration, to: HostId, msg: M) {
        *self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.elapsed + delay,
            seq: *self.seq,
            to,
            msg,
        }));
    }

    /// Notes that `host`'s deadline may have moved.
    pub fn touch(&mut self, host: HostId) {
        self.touched.push(host);
    }
}

/// A simulation of hosts of one [`Level`].
pub struct Sim<L: Level> {
    /// The hosts' behaviour.
    pub level: L,
    /// The network model.
    pub net: Network,
    start: Instant,
    elapsed: Duration,
    queue: BinaryHeap<Reverse<Scheduled<L::Msg>>>,
    seq: u64,
    /// Wake-ups: (time, host); stale entries are skipped.
    wakes: BinaryHeap<Reverse<(Duration, HostId)>>,
    /// Each host's deadline as last seen (what `wakes` holds for it).
    deadline: Vec<Option<Duration>>,
    rng: ChaCha8Rng,
    trace: Trace,
    touched: Vec<HostId>,
    steps: u64,
    /// Events processed at the current instant, to catch livelocks.
    same_instant: u64,
}

/// Events at one instant of virtual time beyond which the simulation is
/// taken to be in a livelock (a loop of zero-delay messages) and panics
/// instead of hanging.
pub const MAX_EVENTS_PER_INSTANT: u64 = 10_000_000;

impl<L: Level> Sim<L> {
    /// A simulation at time zero; `seed` seeds the network's randomness.
    pub fn new(level: L, net: Network, seed: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..16].copy_from_slice(b"network!");
        Self {
            level,
            net,
            #[allow(clippy::disallowed_methods)]
            start: Instant::now(),
            elapsed: Duration::ZERO,
            queue: BinaryHeap::new(),
            seq: 0,
            wakes: BinaryHeap::new(),
            deadline: Vec::new(),
            rng: ChaCha8Rng::from_seed(bytes),
            trace: Trace::default(),
            touched: Vec::new(),
            steps: 0,
            same_instant: 0,
        }
    }

    /// The current time.
    pub fn now(&self) -> Now {
        Now::new(self.start, START_UNIX_MS).advanced(self.elapsed)
    }

    /// The time since the start.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Events processed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The hash of everything that happened so far.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Runs `f` on the level with a context, then refreshes the wake-ups of
    /// the hosts it touched. The way for the outside to call into hosts.
    pub fn with<T>(&mut self, f: impl FnOnce(&mut L, &mut Ctx<'_, L::Msg>) -> T) -> T {
        let now = self.now();
        let mut ctx = Ctx {
            now,
            elapsed: self.elapsed,
            net: &mut self.net,
            rng: &mut self.rng,
            trace: &mut self.trace,
            queue: &mut self.queue,
            seq: &mut self.seq,
            touched: &mut self.touched,
        };
        let out = f(&mut self.level, &mut ctx);
        self.refresh_wakes();
        out
    }

    fn refresh_wakes(&mut self) {
        while let Some(host) = self.touched.pop() {
            let next = self
                .level
                .next_wake(host)
                .map(|t| t.saturating_duration_since(self.start).max(self.elapsed));
            let i = host.index();
            if self.deadline.len() <= i {
                self.deadline.resize(i + 1, None);
            }
            if self.deadline[i] != next {
                self.deadline[i] = next;
                if let Some(at) = next {
                    self.wakes.push(Reverse((at, host)));
                }
            }
        }
        // Moved deadlines leave stale entries behind; far-future ones (a
        // refresh an hour away) would pile up. Rebuild from the live ones.
        if self.wakes.len() > 2 * self.deadline.len() + 4096 {
            self.wakes = self
                .deadline
                .iter()
                .enumerate()
                .filter_map(|(i, at)| at.map(|at| Reverse((at, HostId(i as u32)))))
                .collect();
        }
    }

    /// The time of the next event, if any.
    pub fn next_event(&mut self) -> Option<Duration> {
        self.skip_stale_wakes();
        let message = self.queue.peek().map(|Reverse(s)| s.at);
        let wake = self.wakes.peek().map(|Reverse((at, _))| *at);
        match (message, wake) {
            (Some(m), Some(w)) => Some(m.min(w)),
            (m, w) => m.or(w),
        }
    }

    fn skip_stale_wakes(&mut self) {
        while let Some(Reverse((at, host))) = self.wakes.peek() {
            if self.deadline.get(host.index()).copied().flatten() == Some(*at) {
                break;
            }
            self.wakes.pop();
        }
    }

    /// Processes the next event (a message first when a wake-up is at the
    /// same time). `false` when there is nothing left.
    pub fn step(&mut self) -> bool {
        self.skip_stale_wakes();
        let message = self.queue.peek().map(|Reverse(s)| s.at);
        let wake = self.wakes.peek().map(|Reverse((at, _))| *at);
        let take_message = match (message, wake) {
            (Some(m), Some(w)) => m <= w,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        self.steps += 1;
        let at = match (message, wake) {
            (Some(m), Some(w)) => m.min(w),
            (m, w) => m.or(w).unwrap_or(self.elapsed),
        };
        if at > self.elapsed {
            self.same_instant = 0;
        }
        self.same_instant += 1;
        assert!(
            self.same_instant <= MAX_EVENTS_PER_INSTANT,
            "livelock: {MAX_EVENTS_PER_INSTANT} events at {:?} of virtual time",
            self.elapsed
        );
        if take_message {
            let Some(Reverse(s)) = self.queue.pop() else {
                return false;
            };
            self.elapsed = self.elapsed.max(s.at);
            self.trace.add(&[
                1,
                s.at.as_nanos() as u64,
                s.seq,
                u64::from(s.to.0),
                L::digest(&s.msg),
            ]);
            let reachable = match L::via_network(&s.msg) {
                Some(from) => self.net.can_talk(from, s.to).is_ok(),
                None => true,
            };
            self.with(|level, ctx| {
                ctx.touch(s.to);
                if reachable {
                    level.deliver(ctx, s.to, s.msg);
                } else {
                    level.undeliverable(ctx, s.to, s.msg);
                }
            });
        } else {
            let Some(Reverse((at, host))) = self.wakes.pop() else {
                return false;
            };
            if let Some(d) = self.deadline.get_mut(host.index()) {
                *d = None;
            }
            self.elapsed = self.elapsed.max(at);
            self.trace
                .add(&[2, at.as_nanos() as u64, u64::from(host.0)]);
            self.with(|level, ctx| {
                ctx.touch(host);
                level.wake(ctx, host);
            });
        }
        true
    }

    /// Steps until `until` returns true, nothing is left, or the virtual
    /// time passes `limit`. Returns whether `until` held.
    pub fn run_until(&mut self, limit: Duration, mut until: impl FnMut(&Self) -> bool) -> bool {
        loop {
            if until(self) {
                return true;
            }
            match self.next_event() {
                Some(at) if at <= limit => {
                    self.step();
                }
                _ => return until(self),
            }
        }
    }

    /// Steps through everything due up to `elapsed + by`, then sets the clock there.
    pub fn advance(&mut self, by: Duration) {
        let end = self.elapsed + by;
        while self.next_event().is_some_and(|at| at <= end) {
            self.step();
        }
        self.elapsed = self.elapsed.max(end);
    }
}
