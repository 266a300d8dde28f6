//! [`Readiness`]: who waits on which stream, connection or protocol, and
//! the inbound streams and datagrams not yet taken. Each entry goes when it
//! is woken, taken, or its handle is dropped, so the tables hold only what
//! is waited on now.

use std::collections::{BTreeMap, VecDeque};
use std::task::Waker;

use bytes::Bytes;
use keynode_core::net::{AppEvent, Node, Protocol, StreamDir, StreamHandle};
use keynode_core::{ConnId, NodeId};

/// A stream a peer opened, not yet taken by its listener.
pub(crate) struct Pending {
    pub(crate) stream: StreamHandle,
    pub(crate) peer: NodeId,
}

/// A listener's queue of inbound streams (bounded by its protocol's cap of
/// inbound streams in the core) and its waker.
#[derive(Default)]
pub(crate) struct ListenerQueue {
    pub(crate) pending: VecDeque<Pending>,
    pub(crate) waker: Option<Waker>,
}

/// Datagrams of one protocol on one connection, oldest first.
#[derive(Default)]
pub(crate) struct DatagramQueue {
    pub(crate) queue: VecDeque<Bytes>,
    pub(crate) waker: Option<Waker>,
}

/// Sizes of the tables, to check that nothing stays behind.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct ReadinessTables {
    /// Readers waiting for data.
    pub readers: usize,
    /// Writers waiting for room.
    pub writers: usize,
    /// Openers waiting for the peer to allow more streams.
    pub openers: usize,
    /// Protocols listened on.
    pub listeners: usize,
    /// Inbound streams not yet accepted.
    pub pending_streams: usize,
    /// Datagram queues (one per connection and protocol with datagrams).
    pub datagram_queues: usize,
    /// Datagrams dropped because their queue was full.
    pub datagrams_dropped: u64,
}

/// The wakers and queues.
pub(crate) struct Readiness {
    readers: BTreeMap<StreamHandle, Waker>,
    writers: BTreeMap<StreamHandle, Waker>,
    /// Keyed by a token per waiting open, so that a cancelled open leaves
    /// nothing behind.
    openers: BTreeMap<(ConnId, StreamDir, u64), Waker>,
    next_token: u64,
    pub(crate) listeners: BTreeMap<Protocol, ListenerQueue>,
    datagrams: BTreeMap<(ConnId, Protocol), DatagramQueue>,
    /// Datagrams held per connection and protocol; the oldest go beyond it.
    max_datagrams: usize,
    datagrams_dropped: u64,
}

impl Readiness {
    pub(crate) fn new(max_datagrams: usize) -> Self {
        Self {
            readers: BTreeMap::new(),
            writers: BTreeMap::new(),
            openers: BTreeMap::new(),
            next_token: 0,
            listeners: BTreeMap::new(),
            datagrams: BTreeMap::new(),
            max_datagrams,
            datagrams_dropped: 0,
        }
    }

    pub(crate) fn wait_read(&mut self, stream: StreamHandle, waker: &Waker) {
        set(
            self.readers.entry(stream).or_insert_with(|| waker.clone()),
            waker,
        );
    }

    pub(crate) fn wait_write(&mut self, stream: StreamHandle, waker: &Waker) {
        set(
            self.writers.entry(stream).or_insert_with(|| waker.clone()),
            waker,
        );
    }

    /// A token for an open that may wait.
    pub(crate) fn open_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    pub(crate) fn wait_open(&mut self, conn: ConnId, dir: StreamDir, token: u64, waker: &Waker) {
        self.openers.insert((conn, dir, token), waker.clone());
    }

    /// A stream's sending side is done, or its handle gone.
    pub(crate) fn forget_stream_writer(&mut self, stream: StreamHandle) {
        self.writers.remove(&stream);
    }

    /// A stream's receiving side is done, or its handle gone.
    pub(crate) fn forget_stream_reader(&mut self, stream: StreamHandle) {
        self.readers.remove(&stream);
    }

    /// An open is done waiting (or was cancelled).
    pub(crate) fn forget_opener(&mut self, conn: ConnId, dir: StreamDir, token: u64) {
        self.openers.remove(&(conn, dir, token));
    }

    fn wake_openers(&mut self, conn: ConnId, dir: StreamDir) {
        let keys: Vec<_> = self
            .openers
            .range((conn, dir, 0)..=(conn, dir, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            wake(self.openers.remove(&k));
        }
    }

    /// The next datagram of `protocol` on `conn`, or waits for one.
    pub(crate) fn take_datagram(
        &mut self,
        conn: ConnId,
        protocol: &Protocol,
        waker: &Waker,
    ) -> Option<Bytes> {
        let key = (conn, protocol.clone());
        let q = self.datagrams.entry(key.clone()).or_default();
        match q.queue.pop_front() {
            Some(bytes) => {
                if q.queue.is_empty() {
                    self.datagrams.remove(&key);
                }
                Some(bytes)
            }
            None => {
                q.waker = Some(waker.clone());
                None
            }
        }
    }

    /// A datagram reader of `conn` gave up waiting.
    pub(crate) fn forget_datagram_reader(&mut self, conn: ConnId, protocol: &Protocol) {
        let key = (conn, protocol.clone());
        if self.datagrams.get(&key).is_some_and(|q| q.queue.is_empty()) {
            self.datagrams.remove(&key);
        }
    }

    pub(crate) fn tables(&self) -> ReadinessTables {
        ReadinessTables {
            readers: self.readers.len(),
            writers: self.writers.len(),
            openers: self.openers.len(),
            listeners: self.listeners.len(),
            pending_streams: self.listeners.values().map(|l| l.pending.len()).sum(),
            datagram_queues: self.datagrams.len(),
            datagrams_dropped: self.datagrams_dropped,
        }
    }

    /// Wakes whoever an event concerns; an inbound stream goes to its
    /// listener's queue (or, with no listener left, is refused at once).
    pub(crate) fn on_event(&mut self, node: &mut Node, event: AppEvent) {
        match event {
            AppEvent::Readable(stream) => wake(self.readers.remove(&stream)),
            AppEvent::Writable(stream) => wake(self.writers.remove(&stream)),
            AppEvent::StreamsAvailable { conn, dir } => self.wake_openers(conn, dir),
            AppEvent::Incoming {
                stream,
                peer,
                protocol,
            } => match self.listeners.get_mut(&protocol) {
                Some(l) => {
                    l.pending.push_back(Pending { stream, peer });
                    wake(l.waker.take());
                }
                // The listener went after the stream came in.
                None => refuse(node, stream),
            },
            AppEvent::Datagram {
                conn,
                protocol,
                payload,
            } => {
                let q = self.datagrams.entry((conn, protocol)).or_default();
                if q.queue.len() >= self.max_datagrams {
                    q.queue.pop_front();
                    self.datagrams_dropped += 1;
                }
                q.queue.push_back(payload);
                wake(q.waker.take());
            }
            AppEvent::ConnectionLost { conn } => self.connection_lost(conn),
        }
    }

    /// Every waiter on a lost connection wakes (and learns it is lost).
    fn connection_lost(&mut self, conn: ConnId) {
        let first = StreamHandle::first_of(conn);
        let of_conn = |h: &StreamHandle| h.conn() == conn;
        for table in [&mut self.readers, &mut self.writers] {
            let gone: Vec<StreamHandle> = table
                .range(first..)
                .map(|(h, _)| *h)
                .take_while(of_conn)
                .collect();
            for h in gone {
                wake(table.remove(&h));
            }
        }
        for dir in [StreamDir::Bi, StreamDir::Uni] {
            self.wake_openers(conn, dir);
        }
        let queues: Vec<(ConnId, Protocol)> = self
            .datagrams
            .keys()
            .filter(|(c, _)| *c == conn)
            .cloned()
            .collect();
        for key in queues {
            if let Some(q) = self.datagrams.remove(&key) {
                wake(q.waker);
            }
        }
    }
}

/// Refuses an inbound stream nobody will take (its listener is gone).
pub(crate) fn refuse(node: &mut Node, stream: StreamHandle) {
    node.refuse(crate::now(), stream);
}

fn set(slot: &mut Waker, waker: &Waker) {
    if !slot.will_wake(waker) {
        *slot = waker.clone();
    }
}

fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}
