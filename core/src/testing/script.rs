//! One manager driven by hand: the test plays the network itself, feeding
//! events and reading back the commands it must answer. Store batches are
//! committed to a [`ModelStore`] at once, or held for the test to answer.

use std::time::Duration;

use super::driver::{self, Connect, Driver, Outgoing};
use super::{ModelStore, seed};
use crate::wire::Response;
use crate::{
    Command, Config, ConnId, ConnectionErrorCode, Event, NodeId, NodeManager, Now, Observation,
    OpError, OpId, OpValue, Output, PeerRequestId, StoreBatch,
};

/// One manager driven by hand. Store batches are committed at once unless
/// `hold_store` is set; outputs are collected; every other command is
/// handed back to the test by [`Script::drain`].
pub struct Script {
    /// The manager.
    pub node: NodeManager,
    /// The virtual time.
    pub now: Now,
    /// The batches committed so far.
    pub store: ModelStore,
    /// Everything the manager told the caller.
    pub outputs: Vec<Output>,
    /// Hold store batches in `held` instead of committing them.
    pub hold_store: bool,
    /// The batches held, for the test to commit or fail.
    pub held: Vec<StoreBatch>,
    /// Every command, in order.
    pub log: Vec<Command>,
    /// Every observation the manager made, in order (what an agent would
    /// turn into events).
    pub observations: Vec<Observation>,
}

impl Script {
    /// A new manager (seed 1), not started.
    pub fn new(now: Now, config: Config, own: NodeId) -> Self {
        let node = NodeManager::new(config, own, now, seed(1)).expect("valid config");
        Self {
            node,
            now,
            store: ModelStore::default(),
            outputs: Vec::new(),
            hold_store: false,
            held: Vec::new(),
            log: Vec::new(),
            observations: Vec::new(),
        }
    }

    /// A started manager with its start batch committed.
    pub fn started(now: Now, config: Config, own: NodeId) -> Self {
        let mut s = Self::new(now, config, own);
        let op = s.node.start(s.now).expect("start");
        s.drain();
        assert_eq!(s.done(op), Some(Ok(OpValue::Unit)));
        s
    }

    /// Drains commands: commits (or holds) store batches, collects outputs,
    /// returns the rest for the test to answer.
    pub fn drain(&mut self) -> Vec<Command> {
        let from = self.log.len();
        driver::drain(self, ());
        self.log[from..]
            .iter()
            .filter(|c| !matches!(c, Command::Store(_) | Command::Output(_)))
            .cloned()
            .collect()
    }

    /// Feeds an event, then drains.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        self.node.handle(self.now, event);
        self.drain()
    }

    /// Lets `by` pass, runs the timers due, then drains.
    pub fn advance(&mut self, by: Duration) -> Vec<Command> {
        self.now = self.now.advanced(by);
        self.node.handle_timeout(self.now);
        self.drain()
    }

    /// How `op` ended, if it did.
    pub fn done(&self, op: OpId) -> Option<Result<OpValue, OpError>> {
        done(&self.outputs, op)
    }

    /// How many times `op` ended (exactly once, if the manager keeps its word).
    pub fn done_count(&self, op: OpId) -> usize {
        self.outputs
            .iter()
            .filter(|o| matches!(o, Output::Done { op: x, .. } if *x == op))
            .count()
    }
}

/// The result of `op` among `outputs`, if it ended.
pub fn done(outputs: &[Output], op: OpId) -> Option<Result<OpValue, OpError>> {
    outputs.iter().find_map(|o| match o {
        Output::Done { op: o, result } if *o == op => Some(result.clone()),
        _ => None,
    })
}

/// The test answers everything but the store and the outputs: the hooks
/// for those commands do nothing here, `drain` hands them back from the log.
impl Driver for Script {
    type Host = ();

    fn manager(&mut self, _: ()) -> Option<&mut NodeManager> {
        Some(&mut self.node)
    }

    fn now(&self) -> Now {
        self.now
    }

    fn observation(&mut self, _: (), observation: Observation) {
        self.observations.push(observation);
    }

    fn observe(&mut self, _: (), command: &Command) {
        self.log.push(command.clone());
    }

    fn output(&mut self, _: (), output: Output) {
        self.outputs.push(output);
    }

    fn store(&mut self, _: (), batch: StoreBatch) {
        if self.hold_store {
            self.held.push(batch);
        } else {
            self.store.apply(&batch.ops);
            driver::commit(self, (), &batch);
        }
    }

    fn connect(&mut self, _: (), _: Connect) {}

    fn send_request(&mut self, _: (), _: Outgoing) {}

    fn send_response(&mut self, _: (), _: ConnId, _: PeerRequestId, _: Response) {}

    fn close(&mut self, _: (), _: ConnId, _: ConnectionErrorCode) {}
}
