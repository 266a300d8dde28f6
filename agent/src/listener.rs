//! [`Listener`]: the inbound streams of one protocol, from
//! [`crate::Agent::accept`]. While it lives the protocol is registered on
//! the node (only registered protocols are accepted); dropping it
//! deregisters the protocol, and streams not yet taken are refused.

use std::pin::Pin;
use std::task::{Context, Poll};

use keynode_core::net::{Protocol, StreamDir};
use keynode_core::{ConnId, NodeId};

use crate::readiness::{Pending, refuse};
use crate::shared::Shared;
use crate::stream::{RecvStream, SendStream};

/// A stream a peer opened.
pub struct IncomingStream {
    /// Who opened it (proven by the connection's handshake).
    pub peer: NodeId,
    /// The connection it came on.
    pub conn: ConnId,
    /// Its protocol.
    pub protocol: Protocol,
    /// The sending side: `None` for a unidirectional stream.
    pub send: Option<SendStream>,
    /// The receiving side.
    pub recv: RecvStream,
}

/// The inbound streams of a protocol; a `futures::Stream` of
/// [`IncomingStream`]s that never ends while the agent runs.
pub struct Listener {
    shared: Shared,
    protocol: Protocol,
}

impl Listener {
    pub(crate) fn new(shared: Shared, protocol: Protocol) -> Self {
        Self { shared, protocol }
    }

    /// The protocol.
    pub fn protocol(&self) -> &Protocol {
        &self.protocol
    }

    /// The next inbound stream, or waits for one.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<IncomingStream> {
        let pending = {
            let mut state = self.shared.lock();
            let Some(l) = state.ready.listeners.get_mut(&self.protocol) else {
                return Poll::Pending;
            };
            match l.pending.pop_front() {
                Some(p) => p,
                None => {
                    l.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        Poll::Ready(self.incoming(pending))
    }

    /// The next inbound stream.
    pub async fn accept(&mut self) -> IncomingStream {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn incoming(&self, p: Pending) -> IncomingStream {
        let send = (p.stream.dir() == StreamDir::Bi)
            .then(|| SendStream::new(self.shared.clone(), p.stream, p.peer));
        IncomingStream {
            peer: p.peer,
            conn: p.stream.conn(),
            protocol: self.protocol.clone(),
            send,
            recv: RecvStream::new(self.shared.clone(), p.stream, p.peer),
        }
    }
}

impl futures::Stream for Listener {
    type Item = IncomingStream;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<IncomingStream>> {
        self.get_mut().poll_accept(cx).map(Some)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.node.deregister_protocol(&self.protocol);
        if let Some(l) = state.ready.listeners.remove(&self.protocol) {
            // No handle was made for these yet: refusing them takes no lock.
            for p in l.pending {
                refuse(&mut state.node, p.stream);
            }
        }
        state.wake_loop();
    }
}
