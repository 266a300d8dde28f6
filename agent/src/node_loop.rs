//! [`AgentLoop`]: everything of the agent's loop that does not touch a
//! socket or a timer. The loop around it (`run.rs`, over a `Runtime`) is:
//!
//! ```text
//! loop {
//!     node_loop.drain(send a datagram, start a resolution).await
//!     if node_loop.stopping() {
//!         let reply = node_loop.finish() (blocking); close the sockets; reply.send(); return
//!     }
//!     wait for the first of: a datagram, an mDNS datagram, inputs.next(),
//!     the deadline node_loop.poll_timeout(); hand it to node_loop
//! }
//! ```
//!
//! Store batches and operation results are carried out here (the store has
//! its own thread, results go to the callers' channels); only what needs a
//! socket or a resolver is left to the driver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures::StreamExt;
use futures::channel::{mpsc, oneshot};
use futures::future::Either;
use keynode_core::net::{DriverEvent, NetCommand, Transmit};
use keynode_core::{Hostname, OpValue, ResolveId, UserCall};

use crate::agent::{now, write_key};
use crate::call::Call;
use crate::error::AgentError;
use crate::pending::Pending;
use crate::shared::Shared;
use crate::store_thread::StoreThread;
use crate::udp::{RecvBuffers, UdpIo};

/// Datagrams a driver reads from its socket, when they are waiting, before
/// it drains the node: enough that quinn-proto answers a burst with one
/// ACK (quinn reads up to 32 per system call, several calls per wake), few
/// enough that calls and timers still get their turn under a flood.
pub const RECEIVE_BATCH: usize = 64;

/// What the driver must do for the node.
#[derive(Debug)]
#[must_use]
pub(crate) enum Io {
    /// Send this datagram from the QUIC socket.
    Transmit(Transmit),
    /// Send this datagram from the mDNS socket (if there is one).
    MdnsTransmit(Transmit),
    /// Resolve `hostname` without blocking the loop, then send
    /// [`resolved`]`(resolve, result)` to [`AgentLoop::events`].
    Resolve {
        /// Which resolution.
        resolve: ResolveId,
        /// The name.
        hostname: Hostname,
    },
}

/// The answer to a resolution the node asked for (the `resolve` callback of [`AgentLoop::drain`]) as the node takes it.
pub fn resolved(
    resolve: ResolveId,
    result: std::io::Result<impl Iterator<Item = SocketAddr>>,
) -> DriverEvent<'static> {
    DriverEvent::Resolved {
        resolve,
        result: result
            .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<IpAddr>>())
            .map_err(|e| {
                tracing::debug!(%resolve, "resolution failed: {e}");
                resolve_error_kind(&e)
            }),
    }
}

/// The kind of a resolver failure. The standard library reports a
/// `getaddrinfo` failure other than a system error (an unknown name, no
/// answer from the DNS) without an OS error and with a kind that stable
/// Rust cannot name; the name was not found, so it is `NotFound`.
fn resolve_error_kind(error: &std::io::Error) -> std::io::ErrorKind {
    match error.raw_os_error() {
        Some(_) => error.kind(),
        None if error.kind() == std::io::ErrorKind::Other
            || error.kind().to_string() == "uncategorized error" =>
        {
            std::io::ErrorKind::NotFound
        }
        None => error.kind(),
    }
}

/// Something for the loop from the agent's handles or its store thread.
pub struct Input(InputKind);

enum InputKind {
    Event(DriverEvent<'static>),
    /// A call from a handle; `None` once every handle is gone.
    Call(Option<Call>),
    /// A stream handle changed the node: it needs draining.
    Streams,
}

/// Where [`Input`]s come from: the handles' calls, the store thread's
/// (and resolutions') events, and the stream handles' changes.
pub struct Inputs {
    events: mpsc::UnboundedReceiver<DriverEvent<'static>>,
    calls: mpsc::UnboundedReceiver<Call>,
    shared: Shared,
}

impl Inputs {
    pub(crate) fn new(
        events: mpsc::UnboundedReceiver<DriverEvent<'static>>,
        calls: mpsc::UnboundedReceiver<Call>,
        shared: Shared,
    ) -> Self {
        Self {
            events,
            calls,
            shared,
        }
    }

    /// The next input. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Input {
        let shared = &self.shared;
        let streams = std::future::poll_fn(|cx| {
            if shared.lock().take_dirty(cx.waker()) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        let channels = futures::future::select(self.events.next(), self.calls.next());
        match futures::future::select(std::pin::pin!(streams), channels).await {
            Either::Left(((), _)) => Input(InputKind::Streams),
            Either::Right((Either::Left((Some(event), _)), _)) => Input(InputKind::Event(event)),
            // The loop holds an events sender, so this does not happen;
            // if it did, calls still come.
            Either::Right((Either::Left((None, _)), _)) => {
                Input(InputKind::Call(self.calls.next().await))
            }
            Either::Right((Either::Right((call, _)), _)) => Input(InputKind::Call(call)),
        }
    }
}

/// The node, its store and the callers waiting on it: the runtime-free
/// part of an agent's loop. Built by [`crate::Agent::open`].
pub struct AgentLoop {
    shared: Shared,
    store: StoreThread,
    lock: Option<std::fs::File>,
    data_dir: std::path::PathBuf,
    events: mpsc::UnboundedSender<DriverEvent<'static>>,
    pending: Pending,
    /// Set by a stop: `Some(None)` when every handle is gone.
    stopping: Option<Option<oneshot::Sender<()>>>,
    /// The socket's offload, which can be lost at run time: each drain
    /// gives the node the segments a transmit may have now.
    udp: Arc<UdpIo>,
}

impl AgentLoop {
    pub(crate) fn new(
        shared: Shared,
        store: StoreThread,
        lock: std::fs::File,
        data_dir: std::path::PathBuf,
        events: mpsc::UnboundedSender<DriverEvent<'static>>,
        udp: Arc<UdpIo>,
    ) -> Self {
        Self {
            shared,
            store,
            lock: Some(lock),
            data_dir,
            events,
            pending: Pending::default(),
            stopping: None,
            udp,
        }
    }

    /// Where a driver sends the answers to a resolution the node asked for (the `resolve` callback of [`AgentLoop::drain`]).
    pub fn events(&self) -> mpsc::UnboundedSender<DriverEvent<'static>> {
        self.events.clone()
    }

    /// The next thing the driver must do, after carrying out every store
    /// batch and result before it. `None`: the node is drained.
    fn poll_io(&mut self) -> Option<Io> {
        loop {
            let command = {
                let mut state = self.shared.lock();
                let command = state.node.poll()?;
                match command {
                    NetCommand::App(event) => {
                        state.on_app_event(event);
                        continue;
                    }
                    other => other,
                }
            };
            // Results go to their callers outside the lock: a caller's
            // channel may drop handles.
            match command {
                NetCommand::Transmit(t) => return Some(Io::Transmit(t)),
                NetCommand::MdnsTransmit(t) => return Some(Io::MdnsTransmit(t)),
                NetCommand::Resolve { resolve, hostname } => {
                    return Some(Io::Resolve { resolve, hostname });
                }
                NetCommand::Store(batch) => self.store.apply(batch.id, batch.ops),
                NetCommand::Done { op, result } => {
                    if let Some(done) = self.pending.take(op) {
                        // Counted out before the caller hears of it.
                        self.shared.lock().waiting_calls = self.pending.len();
                        // A caller gone (its future dropped) leaves no use behind.
                        if let Some(lease) = done.send(result) {
                            self.release(lease);
                        }
                    }
                }
                NetCommand::Event(event) => crate::joining::log_event(&event),
                NetCommand::App(_) => {}
            }
        }
    }

    /// Carries out everything the node asks until it is drained:
    /// `send(transmit, on_mdns_socket)` sends a datagram from the QUIC
    /// socket or the mDNS one (a failed send is logged and dropped, as UDP
    /// is: QUIC retransmits), `resolve(resolve, hostname, events)` starts a
    /// resolution that must not block the loop (a task of the runtime that
    /// ends by sending [`resolved`] to `events`).
    pub async fn drain<Sent: Future<Output = std::io::Result<usize>>>(
        &mut self,
        mut send: impl FnMut(Transmit, bool) -> Sent,
        mut resolve: impl FnMut(ResolveId, Hostname, mpsc::UnboundedSender<DriverEvent<'static>>),
    ) {
        let max_segments = self.udp.max_segments();
        {
            // The node's time for what it sends now: a drain after a
            // stream handle's wake has no input that carries a time.
            let mut state = self.shared.lock();
            state.node.advance_clock(now());
            state.node.set_max_segments(max_segments);
        }
        while let Some(io) = self.poll_io() {
            match io {
                Io::Transmit(t) => {
                    let to = t.destination;
                    if let Err(e) = send(t, false).await {
                        tracing::debug!("send to {to} failed: {e}");
                    }
                }
                Io::MdnsTransmit(t) => {
                    let to = t.destination;
                    tracing::debug!("mDNS {} bytes to {to}", t.contents.len());
                    if let Err(e) = send(t, true).await {
                        tracing::trace!("mDNS send to {to} failed: {e}");
                    }
                }
                Io::Resolve {
                    resolve: id,
                    hostname,
                } => resolve(id, hostname, self.events()),
            }
        }
        self.shared.lock().publish_events();
    }

    /// When the node next wants [`AgentLoop::handle_timeout`].
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.shared.lock().node.poll_timeout().map(|(at, _)| at)
    }

    /// What one [`UdpIo::recv`] into `buffers` received: one lock and one
    /// clock read for all of it, and one copy per buffer (not per
    /// datagram: GRO's datagrams share it).
    pub fn handle_received(&mut self, buffers: &RecvBuffers) {
        let at = now();
        let mut state = self.shared.lock();
        for (from, bytes, stride) in buffers.segments() {
            state
                .node
                .handle_segments(at, from, BytesMut::from(bytes), stride);
        }
    }

    /// A datagram arrived on the mDNS socket.
    pub fn handle_mdns_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        tracing::debug!("mDNS {} bytes from {from}", bytes.len());
        self.shared
            .lock()
            .node
            .handle(now(), DriverEvent::MdnsDatagram { from, bytes });
    }

    /// The deadline from [`AgentLoop::poll_timeout`] passed.
    pub fn handle_timeout(&mut self) {
        self.shared.lock().node.handle_timeout(now());
    }

    /// An input from [`Inputs::next`].
    pub fn handle_input(&mut self, input: Input) {
        match input.0 {
            InputKind::Event(event) => self.shared.lock().node.handle(now(), event),
            InputKind::Call(Some(call)) => self.handle_call(call),
            InputKind::Call(None) => self.stop(None),
            // The drain that follows every input sends what changed.
            InputKind::Streams => {}
        }
    }

    fn handle_call(&mut self, call: Call) {
        match call {
            Call::Op { id, call, reply } => {
                let started = self.shared.lock().node.call(now(), call);
                match started {
                    Ok(Some(op)) => self.pending.started(id, op, reply),
                    // A call that ends at once.
                    // A call that ends at once has no use to hand out.
                    Ok(None) => {
                        let _ = reply.send(Ok(OpValue::Unit));
                    }
                    Err(e) => reply.fail(AgentError::Api(e)),
                }
                self.shared.lock().waiting_calls = self.pending.len();
            }
            Call::Cancel(id) => {
                if let Some(op) = self.pending.cancel(id) {
                    // It ends with `Cancelled` (its caller is gone); one
                    // that ended meanwhile is no longer known: nothing to do.
                    let _ = self.shared.lock().node.call(now(), UserCall::Cancel { op });
                }
            }
            Call::Release(lease) => self.release(lease),
            Call::Renew(secret, reply) => match self.shared.lock().node.renew_key(now(), &secret) {
                // The new key is kept once the node uses it; writing and
                // syncing the file blocks, so the store's thread does it.
                Ok(node_id) => {
                    let dir = self.data_dir.clone();
                    self.store.run(move || {
                        let _ = reply.send(write_key(&dir, &secret).map(|()| node_id));
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Call::Stop(done) => self.stop(Some(done)),
        }
    }

    fn release(&mut self, lease: keynode_core::LeaseId) {
        self.shared
            .lock()
            .node
            .handle(now(), DriverEvent::ConnectionReleased { lease });
    }

    fn stop(&mut self, done: Option<oneshot::Sender<()>>) {
        // The loop ends as soon as the node is drained after the first
        // stop, so a second one (its sender dropped) learns `Stopped`.
        if self.stopping.is_none() {
            let mut state = self.shared.lock();
            state.stopped = true;
            let _ = state.node.call(now(), UserCall::Stop);
            self.stopping = Some(done);
        }
    }

    /// True once the agent was stopped (or every handle dropped): after the
    /// driver has sent what [`AgentLoop::drain`] gave, it calls
    /// [`AgentLoop::finish`] and ends its loop.
    pub fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// Flushes and closes the store (blocking until its thread has
    /// written everything), frees the data directory and fails the calls
    /// still waiting. The driver then closes its sockets and only then
    /// sends the returned [`StopReply`], so that whoever awaited the stop
    /// finds the port free (a restart on a fixed port binds it again).
    pub fn finish(mut self) -> StopReply {
        self.store.close();
        self.shared.lock().close_events();
        drop(self.lock.take());
        self.pending.fail_all();
        StopReply(self.stopping.take().flatten())
    }
}

/// The answer to [`crate::Agent::stop`], from [`AgentLoop::finish`].
#[must_use = "the stop's caller waits for it"]
pub struct StopReply(Option<oneshot::Sender<()>>);

impl StopReply {
    /// Tells the caller of `stop` that the agent has stopped.
    pub fn send(self) {
        if let Some(done) = self.0 {
            let _ = done.send(());
        }
    }
}
