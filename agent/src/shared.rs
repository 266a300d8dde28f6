//! [`Shared`]: the node, reachable from the loop and from the stream
//! handles. The loop feeds it datagrams, timers and calls; a stream handle
//! reads and writes its stream directly (no round trip through the loop),
//! then wakes the loop so that what it wrote goes out. This is quinn's
//! `ConnectionRef` model: one lock over the sans-IO state, short critical
//! sections, wakers for readiness.
//!
//! Nothing is dropped while the lock is held: a handle's `Drop` takes the
//! lock itself, so whatever could hold a handle is moved out first.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use keynode_core::net::{AppEvent, Node};

use crate::events::EventHub;
use crate::readiness::Readiness;

/// The node and the wakers of everything waiting on it.
pub(crate) struct State {
    pub(crate) node: Node,
    pub(crate) ready: Readiness,
    /// The handles' operations waiting for their result in the loop.
    pub(crate) waiting_calls: usize,
    /// Set once the agent was stopped: reads say so.
    pub(crate) stopped: bool,
    /// Where the node's observations go to [`crate::Agent::events`].
    pub(crate) events: EventHub,
    /// Set by a handle that changed the node: the loop must drain it.
    dirty: bool,
    loop_waker: Option<Waker>,
}

/// The shared state, cheap to clone.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Mutex<State>>);

impl Shared {
    pub(crate) fn new(node: Node, ready: Readiness, events: EventHub) -> Self {
        Self(Arc::new(Mutex::new(State {
            node,
            ready,
            waiting_calls: 0,
            stopped: false,
            events,
            dirty: false,
            loop_waker: None,
        })))
    }

    /// Locks the state. A panic while it was held (a bug) does not make
    /// every later call panic too: the state is used as it was left.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl State {
    /// The loop must drain the node: a handle wrote, read, opened or
    /// closed something.
    pub(crate) fn wake_loop(&mut self) {
        self.dirty = true;
        if let Some(waker) = self.loop_waker.take() {
            waker.wake();
        }
    }

    /// True (and cleared) if a handle changed the node since the last
    /// call; otherwise the loop's waker is kept for the next change.
    pub(crate) fn take_dirty(&mut self, waker: &Waker) -> bool {
        if std::mem::take(&mut self.dirty) {
            return true;
        }
        match &mut self.loop_waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        false
    }

    /// An application event from the node: wakes whoever waits on it.
    pub(crate) fn on_app_event(&mut self, event: AppEvent) {
        let State { node, ready, .. } = self;
        ready.on_event(node, event);
    }
}
