//! Hole punching: the packets a [`Node`] sends towards an address so that
//! its own NAT (and, signalled at the same moment, the peer's) lets the
//! peer's datagrams in, and the datagrams to that address it holds back
//! meanwhile. A [`Punch`] goes through three phases ([`Phase`]): the
//! low-TTL packet that opens our mapping without reaching the peer's NAT,
//! the head start it gives the peer, and full packets at a doubling
//! interval until a connection is up or the punch's time is over.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::node::{NetConfig, Node};
use super::timers::NetTimer;

/// Datagrams held back per punched address during its first
/// [`NetConfig::punch_delay`]: a handshake's first flight.
const MAX_HELD_PER_PUNCH: usize = 8;

/// The first interval between full punch packets; it doubles after each.
const FIRST_INTERVAL: Duration = Duration::from_secs(1);

/// Where a punch stands.
#[derive(Debug)]
enum Phase {
    /// The low-TTL packet goes out at the next timer; the full ones from
    /// `full_at` on.
    Opening {
        /// When the full packets start.
        full_at: Instant,
        /// Datagrams of connections not up yet, held back
        /// (at most [`MAX_HELD_PER_PUNCH`]; more are dropped: QUIC resends).
        held: Vec<Vec<u8>>,
    },
    /// The low-TTL packet went out (or none is sent); the full packets
    /// start at the next timer.
    Holding {
        /// As in `Opening`.
        held: Vec<Vec<u8>>,
    },
    /// Full packets; datagrams to the address go out at once.
    Punching,
}

/// One address being punched towards.
#[derive(Debug)]
pub(super) struct Punch {
    /// Until the next full packet.
    interval: Duration,
    /// The punch ends at the first timer after this.
    until: Instant,
    phase: Phase,
}

/// What the punch's timer does.
enum Step {
    /// Send the low-TTL packet; next step at this time.
    Open(Instant),
    /// Send a full packet, then what was held; next step at this time.
    Punch(Instant, Vec<Vec<u8>>),
    /// The punch is over; send what was held.
    End(Vec<Vec<u8>>),
}

impl Punch {
    fn new(now: Instant, timeout: Duration, net: &NetConfig) -> Self {
        let phase = if net.punch_ttl == 0 {
            Phase::Holding { held: Vec::new() }
        } else {
            Phase::Opening {
                full_at: now + net.punch_delay,
                held: Vec::new(),
            }
        };
        Self {
            interval: FIRST_INTERVAL,
            until: now + timeout,
            phase,
        }
    }

    /// A datagram to the punched address: `Some` if it may go now, `None`
    /// if it was held back (or dropped, the hold being full).
    fn hold(&mut self, contents: Vec<u8>) -> Option<Vec<u8>> {
        match &mut self.phase {
            Phase::Opening { held, .. } | Phase::Holding { held } => {
                if held.len() < MAX_HELD_PER_PUNCH {
                    held.push(contents);
                }
                None
            }
            Phase::Punching => Some(contents),
        }
    }

    /// The punch's timer fired at `now`; `connected`: a connection to the
    /// address is up.
    fn step(&mut self, now: Instant, connected: bool) -> Step {
        if let Phase::Opening { full_at, held } = &mut self.phase
            && !connected
        {
            // Our NAT's mapping first, at low TTL; the rest later.
            let next = *full_at;
            self.phase = Phase::Holding {
                held: std::mem::take(held),
            };
            return Step::Open(next);
        }
        let held = match std::mem::replace(&mut self.phase, Phase::Punching) {
            Phase::Opening { held, .. } | Phase::Holding { held } => held,
            Phase::Punching => Vec::new(),
        };
        if connected || now >= self.until {
            return Step::End(held);
        }
        let next = now + self.interval;
        self.interval *= 2;
        Step::Punch(next, held)
    }
}

impl Node {
    /// The manager's `HolePunch`: starts punching towards `address`, or
    /// extends the punch already under way.
    pub(super) fn hole_punch(&mut self, address: SocketAddr, timeout: Duration) {
        let now = self.now.mono;
        if self.connected_to(address) {
            // Nothing to open: the peer is reached already.
        } else if let Some(punch) = self.punches.get_mut(&address) {
            // Concurrent punches to one address share one schedule.
            punch.until = punch.until.max(now + timeout);
        } else if self.punches.len() < self.net.max_punches {
            self.punches
                .insert(address, Punch::new(now, timeout, &self.net));
            self.timers.set(NetTimer::Punch(address), now);
        }
    }

    /// The punch towards `address` takes its next step.
    pub(super) fn on_punch_timer(&mut self, address: SocketAddr) {
        let now = self.now.mono;
        let connected = self.connected_to(address);
        let Some(punch) = self.punches.get_mut(&address) else {
            return;
        };
        let mut packet = vec![0u8; self.net.punch_packet_len];
        match punch.step(now, connected) {
            Step::Open(next) => {
                self.rng.fill_bytes(&mut packet);
                self.send(address, packet, Some(self.net.punch_ttl));
                self.timers.set(NetTimer::Punch(address), next);
            }
            Step::Punch(next, held) => {
                self.rng.fill_bytes(&mut packet);
                self.send(address, packet, None);
                self.timers.set(NetTimer::Punch(address), next);
                for bytes in held {
                    self.send(address, bytes, None);
                }
            }
            Step::End(held) => {
                self.punches.remove(&address);
                for bytes in held {
                    self.send(address, bytes, None);
                }
            }
        }
    }

    /// Sends a datagram (one of a connection not up yet, or the endpoint's
    /// own), unless its address is being punched and the punch's low-TTL
    /// packet has not had its head start yet: then it waits for the punch's
    /// first full packet, and goes out after it.
    pub(super) fn transmit_vec(&mut self, destination: SocketAddr, contents: Vec<u8>) {
        let contents = match self.punches.get_mut(&destination) {
            Some(punch) => punch.hold(contents),
            None => Some(contents),
        };
        if let Some(contents) = contents {
            self.send(destination, contents, None);
        }
    }
}
