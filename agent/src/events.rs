//! [`Agent::events`]: what happens in the agent, as a stream.
//!
//! The core queues [`Observation`]s as things happen (bounded, counted when
//! full); the loop moves them, after every drain, into a
//! `tokio::sync::broadcast` channel (its `sync` part only: no runtime) of
//! [`AgentConfig::max_buffered_events`](crate::AgentConfig) slots. Every
//! subscriber has its own cursor into that one buffer: a subscriber that
//! does not read holds nothing back and costs nothing more, and when it
//! reads again it first learns how many events it missed
//! ([`EventsLagged`]), as `broadcast` reports lag.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use keynode_core::Observation;
use tokio::sync::broadcast;

use crate::Agent;
use crate::shared::State;

/// Something that happened in an agent.
#[derive(Clone, PartialEq, Debug)]
#[non_exhaustive]
pub enum AgentEvent {
    /// What the node observed: contacts added, updated, evicted or moved to
    /// pending, connections up and down (with their mode and the peer's
    /// address), claims linked, the key renewed, the NAT class changed
    /// (`Observation::NatClassChanged`), a relay reservation granted
    /// (`Observation::RelayReserved { relay, lifetime_secs }`, renewals
    /// not told) or ended (`Observation::RelayReservationEnded { relay,
    /// lost }`), syncs finished or failed (`OpError::SeedsUnreachable`
    /// names each seed and its error).
    Node(Observation),
    /// The core dropped something since the last event of this kind: the
    /// totals so far (they only grow).
    Dropped(DropCounts),
}

/// What the core has dropped so far, by reason.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[non_exhaustive]
pub struct DropCounts {
    /// Observations not queued because `Config::max_queued_events` were
    /// waiting (the loop drains them, so this means a stalled loop).
    pub observations: u64,
    /// Manager events dropped because their queue was full.
    pub events: u64,
    /// Answers and timers that came for an operation already over.
    pub stale: u64,
}

impl DropCounts {
    fn of(node: &keynode_core::net::Node) -> Self {
        let manager = node.manager_ref();
        let stats = manager.stats();
        Self {
            observations: manager.metrics().observations_dropped,
            events: stats.events_dropped,
            stale: stats.stale_events,
        }
    }
}

/// A subscriber read too slowly: this many events were overwritten before
/// it read them. The stream goes on with the oldest event still held.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("the event subscriber fell behind: {0} events missed")]
pub struct EventsLagged(pub u64);

/// The stream of an agent's events from [`Agent::events`]; it ends when
/// the agent has stopped and every event before the stop was read.
pub struct Events(BoxStream<'static, Result<AgentEvent, EventsLagged>>);

impl Stream for Events {
    type Item = Result<AgentEvent, EventsLagged>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.as_mut().poll_next(cx)
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

/// The sending side, in the shared state.
pub(crate) struct EventHub {
    /// `None` once the agent stopped: the stream then ends.
    sender: Option<broadcast::Sender<AgentEvent>>,
    /// The drop counts last published.
    drops: DropCounts,
}

impl EventHub {
    /// A hub whose buffer holds `capacity` events (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self {
            sender: Some(sender),
            drops: DropCounts::default(),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        match &self.sender {
            Some(sender) => sender.subscribe(),
            // Stopped: a receiver whose sender is gone ends at once.
            None => broadcast::channel(1).1,
        }
    }
}

impl State {
    /// Moves the node's observations to the subscribers, then the drop
    /// counts if they moved. With no subscriber they are dropped here:
    /// events are not kept for a subscriber yet to come.
    pub(crate) fn publish_events(&mut self) {
        let Some(sender) = &self.events.sender else {
            return;
        };
        while let Some(observation) = self.node.poll_observation() {
            let _ = sender.send(AgentEvent::Node(observation));
        }
        let drops = DropCounts::of(&self.node);
        if drops != self.events.drops {
            self.events.drops = drops;
            let _ = sender.send(AgentEvent::Dropped(drops));
        }
    }

    /// The agent stopped: the streams end once read to here.
    pub(crate) fn close_events(&mut self) {
        self.publish_events();
        self.events.sender = None;
    }
}

impl Agent {
    /// The agent's events from now on: contacts, connections, claims, key
    /// renewals, NAT class changes, relay reservations gained and lost,
    /// syncs and the core's drop counts. A subscriber that falls
    /// behind by more than `AgentConfig::max_buffered_events` gets
    /// `Err(EventsLagged(n))`, then the events still held. The stream ends
    /// after the agent stopped.
    ///
    /// ```no_run
    /// # async fn f(agent: keynode_agent::Agent) {
    /// use futures::StreamExt;
    /// let mut events = agent.events();
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Ok(event) => println!("{event:?}"),
    ///         Err(lagged) => eprintln!("{lagged}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> Events {
        let receiver = self.shared.lock().events.subscribe();
        Events(Box::pin(futures::stream::unfold(
            receiver,
            |mut receiver| async move {
                let item = match receiver.recv().await {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(EventsLagged(n)),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((item, receiver))
            },
        )))
    }
}
