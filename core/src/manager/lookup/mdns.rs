//! The mDNS strategy of a lookup: ask the local network for the target,
//! then dial the addresses that answered, one after the other.
//!
//! It races the candidates (the first connection to the target ends the
//! lookup) and holds the lookup open while it is busy. Apart from the
//! candidates because it goes to the target straight, without a list.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use crate::address::NodeAddress;
use crate::contact::ContactMode;
use crate::id::NodeId;
use crate::manager::api::{AttemptId, OpId};

use super::Next;

/// Where the mDNS strategy stands, with the data of that state.
#[derive(Clone, Debug)]
pub(super) enum MdnsRace {
    /// Not used.
    Off,
    /// To be asked at the lookup's first step.
    Wanted,
    /// The query was handed out; its id is not reported yet.
    Asking,
    /// The query (a child operation) collects answers.
    Querying(OpId),
    /// `next` is to be dialled, then `remaining` in turn.
    ToDial {
        next: SocketAddr,
        remaining: VecDeque<SocketAddr>,
    },
    /// A dial was handed out; its attempt is not reported yet.
    Starting { remaining: VecDeque<SocketAddr> },
    /// One of the answers is being connected to.
    Dialing {
        remaining: VecDeque<SocketAddr>,
        attempt: AttemptId,
    },
    /// Over, without success.
    Done,
}

impl MdnsRace {
    /// The race of a lookup that uses mDNS (`on`), or none.
    pub(super) fn new(on: bool) -> Self {
        if on { Self::Wanted } else { Self::Off }
    }

    /// Whether `attempt` is this strategy's dial.
    pub(super) fn dials(&self, attempt: AttemptId) -> bool {
        matches!(self, Self::Dialing { attempt: a, .. } if *a == attempt)
    }

    /// Whether it may still find the target: the lookup is not over.
    pub(super) fn busy(&self) -> bool {
        matches!(
            self,
            Self::Asking
                | Self::Querying(_)
                | Self::ToDial { .. }
                | Self::Starting { .. }
                | Self::Dialing { .. }
        )
    }

    /// Attempt `attempt` failed; `false` if it was not this strategy's.
    pub(super) fn on_failed(&mut self, attempt: AttemptId) -> bool {
        let Self::Dialing {
            remaining,
            attempt: a,
        } = self
        else {
            return false;
        };
        if *a != attempt {
            return false;
        }
        *self = match remaining.pop_front() {
            Some(next) => Self::ToDial {
                next,
                remaining: std::mem::take(remaining),
            },
            None => Self::Done,
        };
        true
    }

    /// The query `query` ended with `addresses`.
    pub(super) fn on_answers(&mut self, query: OpId, addresses: Vec<SocketAddr>) {
        if !matches!(self, Self::Querying(q) if *q == query) {
            return;
        }
        let mut remaining = VecDeque::from(addresses);
        *self = match remaining.pop_front() {
            Some(next) => Self::ToDial { next, remaining },
            None => Self::Done,
        };
    }

    /// What to hand out now for `target`, if anything: the query, or the
    /// next address's dial.
    pub(super) fn next(
        &mut self,
        target: NodeId,
        connect_timeout: Duration,
        mdns_timeout: Duration,
    ) -> Option<Next> {
        if !matches!(self, Self::Wanted | Self::ToDial { .. }) {
            return None;
        }
        match std::mem::replace(self, Self::Done) {
            Self::Wanted => {
                *self = Self::Asking;
                Some(Next::QueryMdns {
                    node_id: target,
                    timeout: mdns_timeout,
                })
            }
            Self::ToDial { next, remaining } => {
                *self = Self::Starting { remaining };
                Some(Next::Dial {
                    node_id: target,
                    address: NodeAddress::from(next),
                    mode: ContactMode::Direct,
                    timeout: connect_timeout,
                })
            }
            other => {
                *self = other;
                None
            }
        }
    }

    /// The query handed out started (`None`: it could not, and the lookup
    /// goes on without mDNS). `false` if no query was handed out.
    pub(super) fn querying(&mut self, query: Option<OpId>) -> bool {
        if !matches!(self, Self::Asking) {
            return false;
        }
        *self = query.map_or(Self::Done, Self::Querying);
        true
    }

    /// The dial handed out is attempt `attempt`. `false` if no dial was
    /// handed out.
    pub(super) fn dialing(&mut self, attempt: AttemptId) -> bool {
        match std::mem::replace(self, Self::Done) {
            Self::Starting { remaining } => {
                *self = Self::Dialing { remaining, attempt };
                true
            }
            other => {
                *self = other;
                false
            }
        }
    }
}
