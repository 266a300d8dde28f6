//! This node's reservations with relays: a node behind a NAT keeps
//! `Config::relay_reservations` of them, each with a peer it dialled and is
//! connected to that grants it (`Request::Reserve`, answered by the peer's
//! net layer if it relays), renewed at half their lifetime. A reservation
//! holds a use of its connection, so neither side closes it as idle, and
//! tells the relay this node's NAT class, which a relay passes on to a
//! node that opens a pair towards it (the "both symmetric, do not punch"
//! rule needs both classes).
//!
//! Which peers are asked: the connections this node dialled (a peer it
//! reached directly is a candidate relay; one that reached it may be
//! behind a NAT itself), in connection order, skipping one that refused
//! until its time to be asked again: 2 s after its first refusal, doubling
//! with each up to `Config::relay_refusal_memory` (a public node refuses
//! until its own peers have classified it public, which takes seconds).
//!
//! # Upgrades
//!
//! A connection this node dialled through a relay keeps trying to become
//! direct: every `Config::relay_upgrade_interval`, unless punching cannot
//! work (this node's mapping, or the peer's as its relay told, varies by
//! destination), a lookup of the peer by signal through the same relay
//! punches and dials it (`spawn_upgrade`). A punched connection that comes
//! up is the peer's primary connection from then on (`ConnTable::primary`
//! prefers a connection that is not relayed): new uses go there, streams
//! open on the relayed one run to their end, and the relayed one idles out
//! once unused (see `net`'s relay docs for why a path is a connection).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Command, ConnId, LeaseId, NodeManager, RequestId, Timer};
use crate::contact::ContactMode;
use crate::id::NodeId;
use crate::manager::observations::Observation;
use crate::nat::NatClass;
use crate::wire::{Request, Response};

/// How long a relay that refused is not asked again, after its first refusal.
const FIRST_REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// Upgrades started per round at most: each is a punch and a handshake.
const UPGRADES_PER_ROUND: usize = 4;

/// A reservation held.
#[derive(Clone, Copy, Debug)]
struct Held {
    conn: ConnId,
    lease: Option<LeaseId>,
    renew_at: Instant,
}

/// The reservations held, asked for, and refused.
#[derive(Debug, Default)]
pub(crate) struct Reservations {
    held: BTreeMap<NodeId, Held>,
    asking: BTreeMap<RequestId, (NodeId, ConnId)>,
    /// Relays that refused (or failed to answer): until when they are not
    /// asked again, and the wait after their next refusal; at most
    /// `4 × Config::relay_reservations`.
    refused: BTreeMap<NodeId, (Instant, Duration)>,
}

impl Reservations {
    /// The relays this node holds a reservation with.
    pub(crate) fn relays(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.held.keys().copied()
    }
}

/// Whether a node of this class wants reservations: one known to be
/// behind a NAT.
fn behind_nat(class: NatClass) -> bool {
    matches!(class, NatClass::Cone | NatClass::Symmetric)
}

impl NodeManager {
    /// Asks for reservations until enough are held or asked for, renews
    /// those due, and arms the timer for the next renewal. Called when the
    /// NAT class changes, a connection comes up or closes, and on the timer.
    pub(super) fn check_relays(&mut self) {
        let wanted = self.config.relay_reservations;
        let class = self.nat_class();
        let now = self.now.mono;
        if !behind_nat(class) || wanted == 0 {
            // Public (or not known to be behind a NAT): nothing to keep.
            let held: Vec<NodeId> = self.reservations.held.keys().copied().collect();
            for relay in held {
                self.drop_reservation(&relay, false);
            }
            return;
        }
        // Renewals due.
        let due: Vec<(NodeId, ConnId)> = self
            .reservations
            .held
            .iter()
            .filter(|(_, h)| h.renew_at <= now)
            .map(|(n, h)| (*n, h.conn))
            .collect();
        for (relay, conn) in due {
            if let Some(h) = self.reservations.held.get_mut(&relay) {
                // Not again until this one is answered.
                h.renew_at = now + self.config.rpc_timeout;
            }
            self.ask_reservation(relay, conn, class);
        }
        let asking_new = self
            .reservations
            .asking
            .values()
            .filter(|(n, _)| !self.reservations.held.contains_key(n))
            .count();
        let mut missing = wanted.saturating_sub(self.reservations.held.len() + asking_new);
        if missing > 0 {
            // (A refusal is remembered past its time, for its backoff, until
            // the relay grants one.)
            let candidates: Vec<(NodeId, ConnId)> = self
                .conns
                .ids()
                .filter_map(|id| self.conns.get(id).map(|c| (id, c)))
                .filter(|(_, c)| c.dialled && c.mode != ContactMode::Relay)
                .filter(|(_, c)| !crate::net::is_relayed(&c.remote))
                .filter(|(_, c)| {
                    !self.reservations.held.contains_key(&c.peer)
                        && self
                            .reservations
                            .refused
                            .get(&c.peer)
                            .is_none_or(|(until, _)| *until <= now)
                        && !self.reservations.asking.values().any(|(n, _)| *n == c.peer)
                })
                .map(|(id, c)| (c.peer, id))
                .collect();
            let mut seen = std::collections::BTreeSet::new();
            for (relay, conn) in candidates {
                if missing == 0 {
                    break;
                }
                if seen.insert(relay) {
                    self.ask_reservation(relay, conn, class);
                    missing -= 1;
                }
            }
        }
        self.arm_relays_timer();
    }

    /// Tries to upgrade the relayed connections this node dialled (at most
    /// [`UPGRADES_PER_ROUND`] a round), and arms the next round while any
    /// is left.
    pub(super) fn check_upgrades(&mut self) {
        let own = self.nat_class();
        let relayed: Vec<(NodeId, super::dials::RelayedVia)> = self
            .conns
            .relayed_outbound(usize::MAX)
            .into_iter()
            .filter_map(|(_, c)| c.relayed.map(|r| (c.peer, r)))
            .collect();
        let mut started = 0;
        for (peer, via) in &relayed {
            if started >= UPGRADES_PER_ROUND {
                break;
            }
            let direct = self
                .conns
                .primary(peer)
                .is_some_and(|(_, c)| c.mode != ContactMode::Relay);
            let hopeless = own == NatClass::Symmetric || via.class == Some(NatClass::Symmetric);
            if direct || hopeless {
                continue;
            }
            if self.spawn_upgrade(*peer, via).is_ok() {
                self.metrics.relay_upgrades_tried += 1;
                started += 1;
            }
        }
        if !relayed.is_empty() {
            self.arm_upgrades();
        }
    }

    /// Arms the next upgrade round, unless one is armed.
    pub(super) fn arm_upgrades(&mut self) {
        let interval = self.config.relay_upgrade_interval;
        if interval.is_zero() || self.timers.get(Timer::RelayUpgrade).is_some() {
            return;
        }
        self.timers
            .set(Timer::RelayUpgrade, self.now.mono + interval);
    }

    fn ask_reservation(&mut self, relay: NodeId, conn: ConnId, class: NatClass) {
        let request = RequestId(self.fresh_id());
        self.reservations.asking.insert(request, (relay, conn));
        self.stats.requests_sent += 1;
        self.commands.push_back(Command::SendRequest {
            conn,
            request,
            body: Request::Reserve { class },
            timeout: self.config.rpc_timeout,
        });
    }

    /// Arms the timer at the first renewal due or, while reservations are
    /// missing, the first refused relay's time to be asked again.
    fn arm_relays_timer(&mut self) {
        let now = self.now.mono;
        let renewal = self.reservations.held.values().map(|h| h.renew_at).min();
        let missing = self.reservations.held.len() < self.config.relay_reservations;
        let retry = self
            .reservations
            .refused
            .values()
            .map(|(until, _)| *until)
            .filter(|until| missing && *until > now)
            .min();
        match renewal.into_iter().chain(retry).min() {
            Some(at) => self.timers.set(Timer::Relays, at),
            None => self.timers.cancel(Timer::Relays),
        }
    }

    /// Whether `request` was a reservation request; if so its answer is taken.
    pub(super) fn take_reservation_answer(
        &mut self,
        request: RequestId,
        result: &Result<Response, super::RpcFailure>,
    ) -> bool {
        let Some((relay, conn)) = self.reservations.asking.remove(&request) else {
            return false;
        };
        let now = self.now.mono;
        match result {
            Ok(Response::Reserved { lifetime_secs }) if self.conns.get(conn).is_some() => {
                let lifetime = std::time::Duration::from_secs(u64::from(*lifetime_secs));
                let renew_at = now + (lifetime / 2).max(self.config.rpc_timeout);
                let fresh = !self.reservations.held.contains_key(&relay);
                let lease = match self.reservations.held.get(&relay) {
                    Some(h) if h.conn == conn => h.lease,
                    _ => {
                        self.release_reservation_lease(&relay);
                        self.lease_for_streams(conn)
                    }
                };
                self.reservations.held.insert(
                    relay,
                    Held {
                        conn,
                        lease,
                        renew_at,
                    },
                );
                self.metrics.relay_reservations = self.reservations.held.len() as u64;
                if fresh {
                    self.observe(Observation::RelayReserved {
                        relay,
                        lifetime_secs: *lifetime_secs,
                    });
                }
            }
            _ => {
                let bound = 4 * self.config.relay_reservations.max(1);
                if self.reservations.refused.len() >= bound
                    && !self.reservations.refused.contains_key(&relay)
                {
                    self.reservations.refused.pop_first();
                }
                let wait = self
                    .reservations
                    .refused
                    .get(&relay)
                    .map_or(FIRST_REFUSAL_WAIT, |(_, wait)| {
                        (*wait * 2).min(self.config.relay_refusal_memory)
                    });
                self.reservations.refused.insert(relay, (now + wait, wait));
                self.drop_reservation(&relay, true);
            }
        }
        self.check_relays();
        true
    }

    fn release_reservation_lease(&mut self, relay: &NodeId) {
        if let Some(lease) = self
            .reservations
            .held
            .get_mut(relay)
            .and_then(|h| h.lease.take())
        {
            self.on_released(lease);
        }
    }

    /// Forgets the reservation with `relay` (`lost`: it ended without this
    /// node giving it up).
    fn drop_reservation(&mut self, relay: &NodeId, lost: bool) {
        self.release_reservation_lease(relay);
        if self.reservations.held.remove(relay).is_some() {
            self.metrics.relay_reservations = self.reservations.held.len() as u64;
            self.observe(Observation::RelayReservationEnded {
                relay: *relay,
                lost,
            });
        }
    }

    /// A connection closed: a reservation on it is gone.
    pub(super) fn relays_conn_closed(&mut self, conn: ConnId) {
        let gone: Vec<NodeId> = self
            .reservations
            .held
            .iter()
            .filter(|(_, h)| h.conn == conn)
            .map(|(n, _)| *n)
            .collect();
        for relay in gone {
            // Its lease went with the connection.
            if let Some(h) = self.reservations.held.get_mut(&relay) {
                h.lease = None;
            }
            self.drop_reservation(&relay, true);
        }
        if !self.reservations.held.is_empty() || behind_nat(self.nat_class()) {
            self.check_relays();
        }
    }

    /// The relays this node holds reservations with.
    pub fn relay_reservations(&self) -> Vec<NodeId> {
        self.reservations.relays().collect()
    }
}
