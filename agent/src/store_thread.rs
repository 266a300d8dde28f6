//! The store on its own thread: heed's write transactions are not `Send`,
//! so one thread owns the LMDB environment and applies batches in order.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

use futures::channel::mpsc::UnboundedSender;
use keynode_core::net::DriverEvent;
use keynode_core::{BatchId, Snapshot, StoreOp};
use keynode_store::{Store, StoreError, StoreOptions};

enum Job {
    Apply(BatchId, Vec<StoreOp>),
    /// Other blocking file work of the agent, in order with the batches.
    Run(Box<dyn FnOnce() + Send>),
    Close(std::sync::mpsc::Sender<()>),
}

/// Commits `group` in one transaction (each batch alone if the group fails)
/// and reports each batch, in order, only once its data is durable.
fn commit_group(
    store: &mut Store,
    group: &[(BatchId, Vec<StoreOp>)],
    events: &UnboundedSender<DriverEvent<'static>>,
) {
    let batches: Vec<&[StoreOp]> = group.iter().map(|(_, ops)| ops.as_slice()).collect();
    let results = store.apply_batches(&batches);
    for ((batch, ops), result) in group.iter().zip(results) {
        let event = match result {
            Ok(()) => DriverEvent::StoreCommitted(*batch),
            Err(e) => {
                // The manager undoes the batch's graph changes in memory
                // when it hears of it.
                tracing::warn!(
                    ?batch,
                    ops = ops.len(),
                    "store batch failed, nothing of it written: {e}"
                );
                DriverEvent::StoreFailed {
                    batch: *batch,
                    error: e.kind(),
                }
            }
        };
        let _ = events.unbounded_send(event);
    }
}

/// A handle to the store thread.
pub(crate) struct StoreThread {
    jobs: mpsc::Sender<Job>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StoreThread {
    /// Opens the store at `path` on a new thread and loads the snapshot.
    /// Each applied batch is reported to `events` as committed or failed.
    pub(crate) fn open(
        path: PathBuf,
        options: StoreOptions,
        max_group: usize,
        events: UnboundedSender<DriverEvent<'static>>,
    ) -> Result<(Self, Snapshot), StoreError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Snapshot, StoreError>>();
        let thread = thread::Builder::new()
            .name("keynode-store".to_owned())
            .spawn(move || {
                let mut store = match Store::open(&path, &options).and_then(|s| {
                    let snapshot = s.load()?;
                    Ok((s, snapshot))
                }) {
                    Ok((store, snapshot)) => {
                        let _ = ready_tx.send(Ok(snapshot));
                        store
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut next = rx.recv().ok();
                while let Some(job) = next.take() {
                    match job {
                        Job::Apply(batch, ops) => {
                            // Group commit: every batch already queued
                            // behind this one (up to `max_group`,
                            // `AgentConfig::max_store_group`) goes into the
                            // same write transaction, so under load one
                            // commit's sync is shared by the group; a job of
                            // another kind ends the group and runs after it.
                            let mut group = vec![(batch, ops)];
                            while group.len() < max_group {
                                match rx.try_recv() {
                                    Ok(Job::Apply(batch, ops)) => group.push((batch, ops)),
                                    Ok(other) => {
                                        next = Some(other);
                                        break;
                                    }
                                    Err(_) => break,
                                }
                            }
                            commit_group(&mut store, &group, &events);
                        }
                        Job::Run(work) => work(),
                        Job::Close(done) => {
                            store.close();
                            let _ = done.send(());
                            return;
                        }
                    }
                    if next.is_none() {
                        next = rx.recv().ok();
                    }
                }
                store.close();
            })
            .map_err(|e| StoreError::CreateDir {
                path: PathBuf::from("<store thread>"),
                source: e,
            })?;
        let snapshot = ready_rx.recv().map_err(|_| StoreError::CreateDir {
            path: PathBuf::from("<store thread>"),
            source: std::io::Error::other("store thread ended"),
        })??;
        Ok((
            Self {
                jobs,
                thread: Some(thread),
            },
            snapshot,
        ))
    }

    pub(crate) fn apply(&self, batch: BatchId, ops: Vec<StoreOp>) {
        let _ = self.jobs.send(Job::Apply(batch, ops));
    }

    /// Runs `work` on the store's thread after what is queued. Dropped
    /// unrun if the thread has ended.
    pub(crate) fn run(&self, work: impl FnOnce() + Send + 'static) {
        let _ = self.jobs.send(Job::Run(Box::new(work)));
    }

    /// Applies what is queued, closes the environment and waits for the thread.
    pub(crate) fn close(&mut self) {
        let (tx, rx) = mpsc::channel();
        if self.jobs.send(Job::Close(tx)).is_ok() {
            let _ = rx.recv();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StoreThread {
    fn drop(&mut self) {
        self.close();
    }
}
